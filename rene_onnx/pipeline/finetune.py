"""Stage 3b of the pipeline: fine-tune the student with cross-entropy plus distillation from the original."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rene_onnx.config import CompressConfig, FinetuneConfig
from rene_onnx.errors import UserError
from rene_onnx.load import ModelHandle

from .inputs import calib_inputs


@dataclass(frozen=True)
class Tuned:
    """A fine-tuning run: the engine's result and the settings it actually ran with."""

    result: Any  # rene_onnx.engine.finetune.FinetuneResult
    config: FinetuneConfig
    train_samples: int | None = None  # samples trained on (with --distill-data's)


def calib_split(n: int, seed: int, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, select)`` of ``n`` unlabeled samples: a seeded random ``fraction`` (>= 1) selects the epoch."""
    order = np.random.default_rng(seed).permutation(n)
    n_sel = max(1, int(n * fraction))
    return np.sort(order[n_sel:]), np.sort(order[:n_sel])


def finetune_student(handle: ModelHandle, student: nn.Module, cfg: CompressConfig, splits,
                     calib: tuple[torch.Tensor, ...] | None = None) -> Tuned | None:
    """Fine-tune with CE + lambda * distillation (labeled data), or distill only (unlabeled ``calib`` inputs).

    ``calib``: the ``calib`` inputs (:func:`calib_inputs`; read here when not given). A seeded random
    tenth (at least one sample) selects the epoch, the rest is trained on (:func:`calib_split`); batches
    are ``(x,)`` with ``x`` a tuple in graph input order for multi-input models. ``cfg`` is not changed:
    the settings the run needed (unlabeled batches, a fixed batch size, cosine matching for a model
    that is not an image classifier) are in the returned :class:`Tuned`.
    """
    from rene_onnx.data import unlabeled_dataset
    from rene_onnx.engine.finetune import finetune

    ft = cfg.finetune
    if ft is None or ft.epochs <= 0:
        return None
    teacher = handle.torch_model
    changes: dict[str, Any] = {}
    if splits is not None:
        train, val = splits.train, splits.calib
    elif cfg.calib is not None:
        xs = calib if calib is not None else calib_inputs(cfg, handle)
        if len(xs[0]) < 2:
            raise UserError(f"{cfg.calib}: needs at least 2 samples (training and selection parts)", option="calib")
        tr, sel = calib_split(len(xs[0]), ft.seed)
        train = unlabeled_dataset(with_distill_data(cfg, handle, [t[torch.from_numpy(tr)] for t in xs]))
        val = unlabeled_dataset([t[torch.from_numpy(sel)] for t in xs])
        changes["use_labels"] = False
        if handle.multi_input or handle.specs[0].dtype != "float32":
            # not an image classifier (e.g. a sentence encoder): match and select on the outputs' cosine to the
            # original's, not on logits (KL / top-1 agreement), unless set otherwise
            if ft.output_loss == "kd" and ft.select_metric == "top1":
                changes.update(output_loss="cosine", select_metric="cosine")
    else:
        return None
    batch = handle.torch_batch
    if batch is not None and ft.batch_size != batch:
        changes["batch_size"] = batch  # the graph (and so its torch import) only runs this batch size
    ft = dataclasses.replace(ft, **changes)
    frozen = set(handle.frozen)
    for name, p in student.named_parameters():
        if name in frozen:  # a change could not be written into the ONNX graph: torch and ONNX would disagree
            p.requires_grad_(False)
    student.train()
    result = finetune(student, teacher, train, val, ft)
    student.eval().cpu()  # fine-tuning may have moved both to a GPU; the rewrite and validation work on CPU
    teacher.cpu()
    samples = getattr(train, "dataset", train)
    return Tuned(result, ft, len(samples) if hasattr(samples, "__len__") else None)


# ---------------------------------------------------------------- --distill-data: more inputs to train on (issue 13)


def with_distill_data(cfg: CompressConfig, handle: ModelHandle, train: list[torch.Tensor]) -> list[torch.Tensor]:
    """``train`` (one tensor per graph input) followed by the ``distill_data`` inputs, when given.

    They are only trained on: the search, the initialization and the epoch selection never see them.
    """
    if cfg.distill_data is None:
        return train
    from rene_onnx.data import unlabeled_input_arrays

    try:
        extra = unlabeled_input_arrays(cfg.distill_data, handle.specs)
    except UserError as e:  # the loader's message, under the option that named the file
        raise type(e)(e.message, option="distill_data", refs=e.refs) from None
    if len(extra) != len(train):
        raise UserError(f"{cfg.distill_data}: {len(extra)} inputs, the model takes {len(train)}", option="distill_data")
    try:
        return [torch.cat([a, b.to(a.dtype)]) for a, b in zip(train, extra)]
    except RuntimeError as e:  # another sample shape than --calib's
        raise UserError(f"{cfg.distill_data}: samples do not match --calib's ({e})", option="distill_data") from e

