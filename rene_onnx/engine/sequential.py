"""Sequential, error-corrected activation-aware SVD: decompose layer by layer on the COMPRESSED model's inputs.

Plain activation-aware SVD (:mod:`.calibrate`) truncates each layer on the
ORIGINAL model's inputs ``x``. Once earlier layers are compressed, a layer sees
``x'`` instead, and its errors add up. :func:`sequential_factorize_` compresses
the layers in forward order; for each one it runs the original (teacher) and the
partly compressed model (student) on the same calibration batches and fits
the rank-r ``W'`` (and bias ``b'``) that minimizes

    E || (W x + b) - (W' x' + b') ||^2

i.e. it also corrects the error that the earlier layers left in ``x'``. With
centred statistics ``A = E[(x - mu)(x' - mu')^T]``, ``B = E[(x' - mu')(x' - mu')^T]``
(damped: ``B + eps * mean(diag B) I``), the unconstrained optimum is
``W* = W A B^-1`` (damped toward ``W``: ``(W A + d W) B^-1``), the error splits into ``E||W x~ - W* x'~||^2 + ||(W* - W') L||_F^2``
(``L L^T = B``), so ``W'`` is ``W*`` truncated in the whitened space of ``x'``
(:class:`~rene_onnx.decompose.svd.WhitenedSVDTruncations`) and
``b' = b + W mu - W' mu'``. With ``x' = x`` and a rank-r ``W`` this gives ``W`` back.

Layers that take the very same input tensor (e.g. an attention block's query,
key and value) form one *stage* and are fitted together from one pass; each
pass stops as soon as the stage's layers have seen their inputs.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..decompose.svd import WhitenedSVDTruncations
from ..plan import Factors, LayerFactors, RankPlan
from ..progress import emit
from .batches import forward, model_device, split_batch, to_device
from .calibrate import input_rows

RowMask = Callable[[Any], "torch.Tensor | None"]


class PairedMoments:
    """Running sums of paired layer inputs: ``x`` (original model) and ``x'`` (compressed model), float64."""

    def __init__(self, dim: int):
        self.n = 0
        self.sum_x = torch.zeros(dim, dtype=torch.float64)
        self.sum_p = torch.zeros(dim, dtype=torch.float64)
        self.xp = torch.zeros(dim, dim, dtype=torch.float64)  # sum x x'^T
        self.pp = torch.zeros(dim, dim, dtype=torch.float64)  # sum x' x'^T

    def add(self, x: torch.Tensor, xp: torch.Tensor) -> None:
        """Add rows ``x`` and ``xp`` (``(n, dim)`` each, row i of one paired with row i of the other)."""
        if x.shape != xp.shape or x.dim() != 2 or x.shape[1] != self.sum_x.shape[0]:
            raise ValueError(f"paired inputs must be two (n, {self.sum_x.shape[0]}) arrays, got {tuple(x.shape)} "
                             f"and {tuple(xp.shape)}")
        x, xp = x.detach().double().cpu(), xp.detach().double().cpu()
        self.n += int(x.shape[0])
        self.sum_x += x.sum(0)
        self.sum_p += xp.sum(0)
        self.xp += x.T @ xp
        self.pp += xp.T @ xp

    def stats(self, center: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(A, B, mu, mu')``: cross moment ``E[x x'^T]`` and moment ``E[x' x'^T]`` (centred if ``center``)."""
        if self.n == 0:
            raise ValueError("no paired inputs were collected")
        mu, mup = (self.sum_x / self.n).numpy(), (self.sum_p / self.n).numpy()
        a, b = (self.xp / self.n).numpy(), (self.pp / self.n).numpy()
        if center:
            a, b = a - np.outer(mu, mup), b - np.outer(mup, mup)
        return a, b, mu, mup


def corrected_svd(
    w: np.ndarray,
    bias: np.ndarray | None,
    moments: PairedMoments,
    rank: int,
    eps: float = 1e-2,
    center: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(U, V, bias')``: the rank-``rank`` ``W' = U V`` (and bias) closest in output to ``W x + b`` given ``x'``.

    ``w``: ``(out, in)``; ``moments``: the paired inputs. ``center``: fit the
    bias too (centred statistics, ``b' = b + W mu - W' mu'``; a layer without
    bias gets one when the means differ); without it, uncentred moments and the
    bias is kept. See the module docstring.
    """
    w64 = np.asarray(w, dtype=np.float64)
    a, b, mu, mup = moments.stats(center)
    if a.shape != (w64.shape[1], w64.shape[1]):
        raise ValueError(f"paired moments of size {a.shape[0]} do not match the weight's {w64.shape[1]} inputs")
    b = 0.5 * (b + b.T)
    damp = eps * max(float(np.mean(np.diag(b))), 1e-12)
    bd = b + damp * np.eye(b.shape[0])
    # W* = argmin E||W x - W* x'||^2 + damp ||W* - W||^2 = (W A + damp W) Bd^-1: the damping pulls toward W,
    # not 0, so x' = x gives W* = W exactly (Bd symmetric: solve Bd Z = (A^T + damp) W^T, W* = Z^T)
    w_star = np.linalg.solve(bd, a.T @ w64.T + damp * w64.T).T
    tr = WhitenedSVDTruncations(w_star, b, eps)
    u, v = tr.factors(rank)
    new_bias = None if bias is None else np.asarray(bias, dtype=np.float64)
    if center:
        shift = w64 @ mu - u.astype(np.float64) @ (v.astype(np.float64) @ mup)
        new_bias = shift if new_bias is None else new_bias + shift
    dtype = np.asarray(w).dtype
    return u.astype(dtype), v.astype(dtype), None if new_bias is None else new_bias.astype(dtype)


class _Stop(Exception):
    pass


def input_stages(model: nn.Module, example: Any, layers: Sequence[str]) -> list[list[str]]:
    """``layers`` in the order ``model`` calls them on ``example``, grouped: consecutive calls on the same input
    tensor object (e.g. query / key / value) form one stage. A layer never called raises ``ValueError``."""
    named = dict(model.named_modules())
    unknown = [n for n in layers if n not in named]
    if unknown:
        raise ValueError(f"layer(s) not in the model: {', '.join(unknown[:5])}")
    calls: list[tuple[str, torch.Tensor]] = []

    def hook(name: str):
        def fn(module, args):
            if not any(n == name for n, _ in calls):
                calls.append((name, args[0]))

        return fn

    handles = [named[n].register_forward_pre_hook(hook(n)) for n in layers]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            forward(model, to_device(example, model_device(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    missing = [n for n in layers if not any(n == c for c, _ in calls)]
    if missing:
        raise ValueError(f"layer(s) never called on the example: {', '.join(missing[:5])}")
    stages: list[list[str]] = []
    prev = None
    for name, x in calls:
        if stages and x is prev:
            stages[-1].append(name)
        else:
            stages.append([name])
        prev = x
    return stages


def _collect(model: nn.Module, x: Any, names: list[str], row_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Each layer's input rows on inputs ``x`` (masked), stopping the forward once every layer has been reached."""
    named = dict(model.named_modules())
    got: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(module, args):
            rows = input_rows(module, args[0].detach())
            if row_mask is not None:
                rows = rows[row_mask]
            got[name] = rows
            if len(got) == len(names):
                raise _Stop

        return fn

    handles = [named[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        forward(model, x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in got]
    if missing:
        raise ValueError(f"no calibration input reached layer(s) {', '.join(missing[:5])}")
    return got


@torch.no_grad()
def sequential_factorize_(
    teacher: nn.Module,
    student: nn.Module,
    plan: RankPlan,
    batches: Iterable,
    *,
    eps: float = 1e-2,
    center: bool = True,
    row_mask: RowMask | None = None,
    stages: Sequence[Sequence[str]] | None = None,
) -> Factors:
    """Factorize the plan's ``svd`` Linear layers of ``student`` (in place) stage by stage, error-corrected.

    ``student`` must have the teacher's structure (e.g. a deep copy) with those
    layers still dense; other plan layers are left alone (``factorize_`` them
    afterwards). ``batches``: calibration batches (inputs only are used; a list,
    since it is iterated once per stage). ``row_mask(inputs)``: optional bool
    tensor selecting the rows that count (e.g. the attention mask of a
    ``(batch, seq)`` input; padding tokens never reach the output), ``None``: all.
    ``stages``: layer groups in forward order (default: :func:`input_stages`).
    Returns the factors (``U``, ``V``, ``bias``) of the layers it replaced.
    """
    from .layers import module_from_arrays, set_submodule

    batches = list(batches)
    if not batches:
        raise ValueError("sequential_factorize_: the calibration batches are empty")
    t_named = dict(teacher.named_modules())
    names = [lp.name for lp in plan.layers.values()
             if lp.method == "svd" and isinstance(t_named.get(lp.name), nn.Linear)]
    out = Factors(meta={"init": "sequential-corrected-svd", "eps": eps, "center": center})
    if not names:
        return out
    s_named = dict(student.named_modules())
    for n in names:
        if not isinstance(s_named.get(n), nn.Linear):
            raise ValueError(f"student layer {n!r} is not a dense Linear (already factorized?)")
    device = model_device(teacher)
    if stages is None:
        first, _ = split_batch(batches[0], use_labels=False)
        stages = input_stages(teacher, first, names)
    stages = [list(s) for s in stages]
    flags = {m: m.training for m in list(teacher.modules()) + list(student.modules())}
    teacher.eval()
    student.eval()
    try:
        for i, stage in enumerate(stages):
            acc = {n: PairedMoments(t_named[n].in_features) for n in stage}
            for batch in batches:
                x, _ = split_batch(batch, use_labels=False)
                x = to_device(x, device)
                mask = None if row_mask is None else row_mask(x).reshape(-1).bool()
                xt = _collect(teacher, x, stage, mask)
                xs = _collect(student, x, stage, mask)
                for n in stage:
                    acc[n].add(xt[n], xs[n])
            for n in stage:
                lin = t_named[n]
                bias = None if lin.bias is None else lin.bias.detach().cpu().numpy()
                u, v, b = corrected_svd(lin.weight.detach().cpu().numpy(), bias, acc[n], plan.layers[n].ranks[0],
                                        eps, center)
                arrays: dict[str, Any] = {"U": u, "V": v}
                if b is not None:
                    arrays["bias"] = b
                template = s_named[n]
                if b is not None and template.bias is None:
                    template = nn.Linear(template.in_features, template.out_features, bias=True,
                                         device=template.weight.device, dtype=template.weight.dtype)
                new = module_from_arrays(template, "svd", arrays)
                new.train(flags[student])
                set_submodule(student, n, new)
                out.add(LayerFactors(n, "svd", plan.layers[n].ranks, arrays))
            emit("sequential", step=i + 1, total=len(stages), layers=list(stage))
    finally:
        for m, flag in flags.items():
            m.training = flag
    return out


__all__ = ["PairedMoments", "corrected_svd", "input_stages", "sequential_factorize_"]
