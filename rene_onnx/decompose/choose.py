"""Rank-plan rules: from a parameter fraction or an explicit rank mapping to a RankPlan.

Pure functions on :class:`LayerShape` (no torch, no onnx). The rules:

- ``method`` is any registered method (:mod:`.registry`: tt | cp | svd ..)
  or ``auto``. A method asked for a layer it does not apply to (TT or CP on
  a 1x1 conv / Linear) falls back to auto's choice for that layer (SVD),
  with a note.
- ``auto`` considers, per layer, every registered method that applies to it
  and declares itself an auto candidate for it
  (``Decomposition.auto_candidate``; built in: TT for k x k convs, SVD for
  1x1 convs, Linear layers and depthwise convs with a channel multiplier;
  CP never, its ALS is slow and seed-dependent). Without the weights (these
  planners see shapes only) auto takes the first candidate in registration
  order. Where the weights are at hand -- the RENE search's final choice --
  :func:`pick_by_error` decomposes the layer with every candidate at equal
  (or lower) parameter and MAC cost and keeps the one with the least weight
  error; ties go to the earlier-registered method. So a method registered
  later takes a layer from TT only by being more accurate there at the same
  cost, and auto's choice never gets worse by a registration.
- A grouped conv is factorized per group (ranks per group, the factors
  grouped too) by :func:`plan_from_fraction` / :func:`plan_from_mapping`; a
  depthwise conv with one output channel per group has nothing to factor.
  :func:`resolve_method` keeps grouped convs dense unless asked with
  ``per_group=True``, as the planners and the RENE search (``engine/search.py``,
  one frame per group) do.
- A layer whose factorized form would not have fewer parameters than the
  dense one stays ``dense`` with a one-line reason.
- Ranks are checked (and capped) by :func:`ranks.check_ranks`; counting is
  done by :mod:`ranks` only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..plan import LayerPlan, RankPlan, parse_rank
from . import ranks as R
from . import registry
from .ranks import LayerShape


def method_choices() -> tuple[str, ...]:
    """The values ``method`` takes: every registered method, then ``auto``."""
    return registry.names() + ("auto",)


def __getattr__(name: str):
    if name == "METHOD_CHOICES":  # read at each use, so a method registered later is a choice too
        return method_choices()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_method(method: str) -> None:
    if method not in method_choices():
        raise ValueError(f"unknown method {method!r} (expected one of {', '.join(method_choices())})")


def _check_multiple(rank_multiple: int) -> int:
    m = int(rank_multiple)
    if m < 1:
        raise ValueError(f"rank_multiple must be >= 1, got {rank_multiple}")
    return m


def _describe(shape: LayerShape) -> str:
    if not shape.kernel:
        return "Linear"
    return f"{'x'.join(map(str, shape.kernel))} conv"


def resolve_method(method: str, shape: LayerShape, *, per_group: bool = False) -> tuple[str, str]:
    """The method that applies to ``shape`` for a requested one: (method or "dense", note).

    A grouped conv resolves like an ungrouped one of its per-group shape when
    ``per_group`` is true (the factors are then grouped convs too); otherwise,
    and always for a depthwise conv with one output channel per group, it is
    "dense" with the reason.
    """
    _check_method(method)
    if shape.groups != 1:
        kind = "depthwise" if shape.is_depthwise else "grouped"
        if not R.supported_methods(shape):
            return "dense", R.unsupported_reason(shape)
        if not per_group:
            return "dense", f"{kind} conv (groups={shape.groups}) is only factorized per group (per_group=True)"
    m, note = _resolve(method, shape)
    if shape.groups != 1:
        note = "; ".join(x for x in (f"per group ({shape.groups} groups, ranks per group)", note) if x)
    return m, note


def _resolve(method: str, shape: LayerShape) -> tuple[str, str]:
    if method == "auto":
        return auto_methods(shape)[0], ""
    if method in R.supported_methods(shape):
        return method, ""
    fallback, _ = _resolve("auto", shape)
    return fallback, f"{method} does not apply to a {_describe(shape)}: {fallback} instead"


def auto_methods(shape: LayerShape) -> tuple[str, ...]:
    """The methods ``auto`` weighs for ``shape`` (registration order; the first is its choice without weights)."""
    return registry.auto_candidates(shape) or R.supported_methods(shape)[:1]


def _within(method: str, shape: LayerShape, ranks: tuple[int, ...], budget: tuple[int, int]) -> tuple[int, ...] | None:
    """``method``'s ranks costing at most ``budget`` (params, MACs): ``ranks`` themselves if they fit, else the
    largest single rank that does; ``None`` if not even rank 1 does."""
    def fits(r: tuple[int, ...]) -> bool:
        return R.factorized_params(method, shape, r) <= budget[0] and R.factorized_macs(method, shape, r) <= budget[1]

    if len(ranks) == R.n_ranks(method):
        own = R.check_ranks(method, shape, ranks)
        if fits(own):
            return own
    lo, hi = 0, R.max_rank(method, shape)
    while lo < hi:  # the counts grow with the rank
        mid = (lo + hi + 1) // 2
        if fits(R.check_ranks(method, shape, mid)):
            lo = mid
        else:
            hi = mid - 1
    return R.check_ranks(method, shape, lo) if lo else None


def pick_by_error(shape: LayerShape, weight: np.ndarray, method: str, ranks: tuple[int, ...],
                  candidates: tuple[str, ...]) -> tuple[str, tuple[int, ...], dict[str, float]]:
    """Auto's per-layer choice by error at equal cost: ``(method, ranks, {candidate: error})``.

    Every candidate decomposes ``weight`` (grouped per ``shape.groups``) at the ranks that
    cost no more parameters and MACs than ``method`` at ``ranks`` (the same ranks where they
    fit), and the one with the least relative error ``||W - W'||^2 / ||W||^2`` wins; a
    candidate wins only by more than a 1e-6 relative margin, so ties go to the earlier one
    (registration order). Candidates that cannot fit the cost are left out.
    """
    from rene_onnx.decompose import decompose, reconstruct  # the package's dispatchers (it imports no planner)

    ranks = R.check_ranks(method, shape, ranks)
    budget = (R.factorized_params(method, shape, ranks), R.factorized_macs(method, shape, ranks))
    w = np.asarray(weight)
    w64 = w.astype(np.float64)
    norm2 = max(float(np.sum(w64 * w64)), 1e-300)
    best, errors = (method, ranks, np.inf), {}
    for m in dict.fromkeys(candidates):
        r = ranks if m == method else _within(m, shape, ranks, budget)
        if r is None:
            continue
        d = w64 - reconstruct(m, decompose(m, w, r, groups=shape.groups), w.shape).astype(np.float64)
        errors[m] = float(np.sum(d * d)) / norm2
        if errors[m] < best[2] * (1 - 1e-6) - 1e-12:
            best = (m, r, errors[m])
    return best[0], best[1], errors


def _decide(name: str, shape: LayerShape, method: str, ranks: tuple[int, ...], note: str) -> LayerPlan:
    """LayerPlan for validated ranks: factorized if it saves parameters, else dense with the reason."""
    dense = R.dense_params(shape)
    fact = R.factorized_params(method, shape, ranks)
    if fact >= dense:
        per = f"grouped conv (groups={shape.groups}): " if shape.groups != 1 else ""
        return LayerPlan(
            name, "dense", (),
            f"{per}{method} at ranks {list(ranks)} has {fact} params >= dense {dense}: nothing saved",
        )
    why = f"params {dense} -> {fact} ({100.0 * fact / dense:.1f}%)"
    return LayerPlan(name, method, ranks, f"{note}; {why}" if note else why)


def plan_from_fraction(
    shapes: Mapping[str, LayerShape], method: str, fraction: float, *, rank_multiple: int = 1
) -> RankPlan:
    """Ranks that keep about ``fraction`` of each layer's parameters (ranks.rank_for_fraction).

    Ranks are then rounded to ``rank_multiple`` (ranks.round_ranks), except in
    layers too narrow for it (ranks.layer_multiple); a layer that would not
    save parameters at those ranks stays dense.
    """
    _check_method(method)
    multiple = _check_multiple(rank_multiple)
    if not fraction > 0:
        raise ValueError(f"rank fraction must be positive, got {fraction}")
    plan = RankPlan(meta={"method": method, "fraction": float(fraction), "rank_multiple": multiple})
    for name, shape in shapes.items():
        m, note = resolve_method(method, shape, per_group=True)
        if m == "dense":
            plan.add(LayerPlan(name, "dense", (), note))
            continue
        ranks = R.rank_for_fraction(m, shape, fraction)
        ranks = R.check_ranks(m, shape, R.round_ranks(m, shape, ranks, R.layer_multiple(m, shape, multiple)))
        plan.add(_decide(name, shape, m, ranks, note))
    return plan


def _mapping_ranks(name: str, value) -> tuple[int, ...]:
    ranks = tuple(parse_rank(v, name) for v in (value if isinstance(value, (list, tuple)) else [value]))
    if not 1 <= len(ranks) <= max(R.n_ranks(m) for m in registry.names()):
        raise ValueError(f"layer {name!r}: rank must be an int or [r1, r2], got {value!r}")
    if any(r <= 0 for r in ranks):
        raise ValueError(f"layer {name!r}: ranks must be positive, got {list(ranks)}")
    return ranks


def plan_from_mapping(
    shapes: Mapping[str, LayerShape],
    method: str,
    mapping: Mapping[str, int | list[int] | tuple[int, int]],
    *,
    rank_multiple: int = 1,
) -> RankPlan:
    """Explicit ranks per layer: ``{name: r}`` or ``{name: [r1, r2]}`` (TT). Unnamed layers stay dense.

    A name not in ``shapes`` or a rank <= 0 raises ``ValueError`` naming the
    layer; two ranks for a layer that ends up SVD / CP raise too. Ranks above
    the algebraic cap are capped (ranks.check_ranks).
    """
    _check_method(method)
    multiple = _check_multiple(rank_multiple)
    unknown = [n for n in mapping if n not in shapes]
    if unknown:
        raise ValueError(f"rank mapping names layer(s) not in the model: {', '.join(map(repr, unknown))}")
    given = {n: _mapping_ranks(n, v) for n, v in mapping.items()}
    plan = RankPlan(meta={"method": method, "rank_multiple": multiple, "mapping": {n: list(r) for n, r in given.items()}})
    for name, shape in shapes.items():
        if name not in given:
            plan.add(LayerPlan(name, "dense", (), "no rank given"))
            continue
        m, note = resolve_method(method, shape, per_group=True)
        if m == "dense":
            plan.add(LayerPlan(name, "dense", (), note))
            continue
        try:
            ranks = R.check_ranks(m, shape, given[name])
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
        ranks = R.check_ranks(m, shape, R.round_ranks(m, shape, ranks, multiple))
        plan.add(_decide(name, shape, m, ranks, note))
    return plan
