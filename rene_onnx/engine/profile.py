"""Torch-side layer geometry and counting (parameters, MACs at batch 1).

:func:`layer_shapes` runs one forward pass with hooks on every Conv1d /
Conv2d / Linear and returns their :class:`LayerShape` (positions taken from
the actual tensors); :func:`count` sums MACs through ``ranks.dense_macs``
(bias adds excluded), so a factorized model counts exactly as
``ranks.factorized_macs`` says.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..decompose import ranks as R
from ..decompose.ranks import LayerShape

_LEAVES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _positions(module: nn.Module, t: torch.Tensor) -> int:
    """Positions (spatial sites or tokens) per sample of a layer's input or output tensor."""
    if isinstance(module, nn.Linear):
        # (C,) or (B, C): one position; (B, T.., C): prod(T..)
        return math.prod(t.shape[1:-1]) if t.dim() >= 3 else 1
    n_spatial = 2 if isinstance(module, nn.Conv2d) else 1
    batched = t.dim() == n_spatial + 2
    return math.prod(t.shape[2:] if batched else t.shape[1:])


def _run(model: nn.Module, example_input: Any) -> None:
    if isinstance(example_input, dict):
        model(**example_input)
    elif isinstance(example_input, (tuple, list)):
        model(*example_input)
    else:
        model(example_input)


def layer_shapes(model: nn.Module, example_input: Any) -> dict[str, LayerShape]:
    """LayerShape of every Conv1d / Conv2d / Linear that runs on ``example_input``, in call order.

    ``example_input`` is a tensor, a tuple of positional inputs, or a dict of
    keyword inputs; any batch size (positions are per sample). The forward
    runs in eval mode under ``no_grad`` (BatchNorm statistics are not
    touched); training flags are restored. A module called several times
    gets the sum of its positions over the calls. Layers that never run are
    left out.
    """
    found: dict[str, list[int]] = {}
    mods: dict[str, nn.Module] = {}
    handles = []

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0]
            rec = found.setdefault(name, [0, 0])
            rec[0] += _positions(module, x)
            rec[1] += _positions(module, output)
            mods[name] = module

        return fn

    for name, m in model.named_modules():
        if isinstance(m, _LEAVES):
            handles.append(m.register_forward_hook(hook(name)))
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            _run(model, example_input)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    out: dict[str, LayerShape] = {}
    for name, (pin, pout) in found.items():
        m = mods[name]
        if isinstance(m, nn.Linear):
            shape = LayerShape(m.out_features, m.in_features, (), 1, m.bias is not None, pin, pout)
        else:
            shape = LayerShape(
                m.out_channels, m.in_channels, tuple(m.kernel_size), m.groups, m.bias is not None, pin, pout
            )
        out[name] = shape
    return out


def count(model: nn.Module, example_input: Any) -> tuple[int, int]:
    """``(params, macs)``: all parameters of ``model``; MACs of its Conv / Linear leaves at batch 1."""
    params = sum(p.numel() for p in model.parameters())
    macs = sum(R.dense_macs(s) for s in layer_shapes(model, example_input).values())
    return params, macs
