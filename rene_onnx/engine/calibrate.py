"""Calibration statistics for activation-aware decomposition: layer input second moments and whitened SVD factors.

``input_moments`` runs the model on calibration batches (inputs only, no labels
needed) and accumulates, for each Linear (and Conv with ``groups=1``, over its
unfolded input patches), ``C = E[x x^T]`` of the layer's inputs, in float64.
With it, :class:`rene_onnx.decompose.svd.WhitenedSVDTruncations` truncates
``W L`` (``L L^T = C + damping``) instead of ``W``, i.e. minimizes the layer's
expected OUTPUT error ``E||(W - W') x||^2`` (SVD-LLM / ASVD): the search uses
it for its SVD candidates and error curves (``SearchConfig.whiten``), and
:func:`whitened_factors` initializes a plan's SVD layers the same way.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..decompose.svd import WhitenedSVDTruncations
from ..plan import Factors, LayerFactors, RankPlan
from ..progress import emit
from .batches import forward, model_device, split_batch, to_device

_CONVS = (nn.Conv1d, nn.Conv2d)


def moment_supported(module: nn.Module) -> str | None:
    """``None`` if :func:`input_moments` can collect this module's input moment, else the reason it cannot."""
    if isinstance(module, nn.Linear):
        return None
    if isinstance(module, _CONVS):
        if module.groups != 1:
            return "grouped conv"
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            return "string padding / non-zero padding mode"
        return None
    return f"{type(module).__name__} is not a Linear / Conv1d / Conv2d"


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's inputs as rows ``(n, in)`` in the layout of its weight reshaped to ``(out, in)``."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-2)
        k, s, p, d = (1, module.kernel_size[0]), (1, module.stride[0]), (0, module.padding[0]), (1, module.dilation[0])
    else:
        k, s, p, d = module.kernel_size, module.stride, module.padding, module.dilation
    cols = F.unfold(x, k, dilation=d, padding=p, stride=s)  # (N, Cin*k, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


@torch.no_grad()
def input_moments(
    model: nn.Module,
    batches: Iterable,
    layers: Iterable[str] | None = None,
    *,
    max_batches: int | None = None,
) -> dict[str, np.ndarray]:
    """``{layer: C}`` with ``C = E[x x^T]`` (float64, ``(in, in)``) of each layer's inputs over ``batches``.

    ``batches``: any batches :func:`~rene_onnx.engine.batches.split_batch`
    understands (labels are ignored). ``layers``: module names (default: every
    supported Linear / Conv); an unsupported one raises ``ValueError``. Runs in
    eval mode on the model's device and restores the training flags.
    A ``moments`` event goes out after each batch.
    """
    named = dict(model.named_modules())
    if layers is None:
        names = [n for n, m in named.items() if n and moment_supported(m) is None]
    else:
        names = list(layers)
        for n in names:
            if n not in named:
                raise ValueError(f"layer {n!r} is not a module of the model")
            why = moment_supported(named[n])
            if why is not None:
                raise ValueError(f"layer {n!r}: no input moment ({why})")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {n: 0 for n in names}

    def hook(name: str):
        def fn(module, args):
            rows = input_rows(module, args[0].detach()).double()
            sums[name] = sums[name] + rows.T @ rows if name in sums else rows.T @ rows
            counts[name] += int(rows.shape[0])

        return fn

    device = model_device(model)
    flags = {m: m.training for m in model.modules()}
    handles = [named[n].register_forward_pre_hook(hook(n)) for n in names]
    model.eval()
    try:
        seen = 0
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x, _ = split_batch(batch, use_labels=False)
            forward(model, to_device(x, device))
            seen += 1
            emit("moments", step=i + 1, total=max_batches)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    if seen == 0:
        raise ValueError("input_moments: the calibration batches are empty")
    missing = [n for n in names if counts[n] == 0]
    if missing:
        raise ValueError(f"no calibration input reached layer(s) {', '.join(missing[:5])}")
    return {n: (sums[n] / counts[n]).cpu().numpy() for n in names}


def whitened_factors(
    model: nn.Module,
    plan: RankPlan,
    moments: dict[str, np.ndarray],
    eps: float = 1e-2,
) -> Factors:
    """Activation-aware SVD factors for the plan's ``svd`` layers that have a moment (others: not included).

    ``factorize_(model, plan, whitened_factors(model, plan, moments))`` builds
    those layers from these factors and decomposes the rest as usual.
    """
    named = dict(model.named_modules())
    out = Factors(meta={"init": "whitened-svd", "eps": eps})
    for name, lp in plan.layers.items():
        if lp.method != "svd" or name not in moments:
            continue
        mod = named.get(name)
        if mod is None or not isinstance(getattr(mod, "weight", None), torch.Tensor):
            raise ValueError(f"plan layer {name!r} is not a module with a weight in the model")
        w = mod.weight.detach().cpu().numpy()
        u, v = WhitenedSVDTruncations(w.reshape(w.shape[0], -1), moments[name], eps).factors(lp.ranks[0])
        arrays: dict[str, Any] = {"U": u, "V": v}
        if getattr(mod, "bias", None) is not None:
            arrays["bias"] = mod.bias.detach().cpu().numpy()
        out.add(LayerFactors(name, "svd", lp.ranks, arrays))
    return out


__all__ = ["input_moments", "moment_supported", "whitened_factors"]
