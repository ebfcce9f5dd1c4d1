"""Batches with any inputs: split, move, count, slice, and run a model on them (search, fine-tuning, calibration).

A batch's *inputs* ``x`` may be a tensor (``model(x)``), a tuple / list of
tensors (``model(*x)``, e.g. ``(input_ids, attention_mask)``) or a dict
(``model(**x)``). A *batch* is ``x`` alone, ``(x,)``, ``(x, y, ...)`` or a
dict (see :func:`split_batch`). A model's *output* may be a tensor, a tuple
whose first element is one, or an object with ``.logits``
(:func:`output_tensor`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: dict keys taken as the inputs / the labels of a dict batch
INPUT_KEYS = ("x", "input", "inputs", "image", "pixel_values")
LABEL_KEYS = ("y", "label", "labels", "target")


def split_batch(batch: Any, use_labels: bool = True) -> tuple[Any, torch.Tensor | None]:
    """``(inputs, labels or None)`` of a batch.

    A tensor is inputs only; a sequence is ``(x,)`` or ``(x, y, ...)``; a dict
    gives ``x`` from one of :data:`INPUT_KEYS` or, when it has none of them,
    every non-label entry as keyword inputs (``{"input_ids": ..,
    "attention_mask": .., "labels": ..}``), and ``y`` from :data:`LABEL_KEYS`.
    """
    if isinstance(batch, torch.Tensor):
        x, y = batch, None
    elif isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("empty batch")
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
    elif isinstance(batch, dict):
        x = next((batch[k] for k in INPUT_KEYS if k in batch), None)
        if x is None:
            x = {k: v for k, v in batch.items() if k not in LABEL_KEYS}
            if not x:
                raise ValueError(f"dict batch has no inputs, got keys {sorted(batch)}")
        y = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    else:
        raise ValueError(f"unsupported batch type {type(batch).__name__} (expected tensor, tuple/list or dict)")
    if not use_labels:
        y = None
    return x, y


def to_device(x: Any, device: torch.device | str) -> Any:
    """``x`` (a tensor, or tuples / lists / dicts of them, nested) moved to ``device``; other values unchanged."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def take(x: Any, n: int) -> Any:
    """The first ``n`` samples of a batch's inputs (a tensor, a tuple / list or a dict of them)."""
    if isinstance(x, torch.Tensor):
        return x[:n]
    if isinstance(x, (tuple, list)):
        return type(x)(take(v, n) for v in x)
    if isinstance(x, dict):
        return {k: take(v, n) for k, v in x.items()}
    return x


def n_samples(x: Any) -> int:
    """The batch size of inputs ``x`` (the first tensor's first dimension; 0 if there is none)."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0])
    if isinstance(x, (tuple, list, dict)):
        first = next(iter(x.values() if isinstance(x, dict) else x), None)
        return 0 if first is None else n_samples(first)
    return 0


def output_tensor(out: Any) -> torch.Tensor:
    """The output tensor (logits / embedding) of a model output: a tensor, a tuple's first element, or ``.logits``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "logits"):
        return out.logits
    raise ValueError(f"cannot find logits in a model output of type {type(out).__name__}")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def forward(model: nn.Module, x: Any) -> torch.Tensor:
    """``model`` on inputs ``x`` (``model(x)``, ``model(*x)`` or ``model(**x)``) -> its output tensor."""
    if isinstance(x, dict):
        return output_tensor(model(**x))
    if isinstance(x, (tuple, list)):
        return output_tensor(model(*x))
    return output_tensor(model(x))


def functional_forward(model: nn.Module, params: dict[str, torch.Tensor], x: Any) -> torch.Tensor:
    """:func:`forward` with the parameters / buffers in ``params`` substituted (``torch.func.functional_call``)."""
    if isinstance(x, dict):
        return output_tensor(torch.func.functional_call(model, params, (), x))
    args = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    return output_tensor(torch.func.functional_call(model, params, args))


__all__ = ["INPUT_KEYS", "LABEL_KEYS", "forward", "functional_forward", "model_device", "n_samples", "output_tensor",
           "split_batch", "take", "to_device"]
