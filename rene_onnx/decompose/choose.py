"""Rank-plan rules: from a parameter fraction or an explicit rank mapping to a RankPlan.

Pure functions on :class:`LayerShape` (no torch, no onnx). The rules:

- ``method`` is tt | cp | svd | auto. ``auto`` picks TT for k x k convs and
  SVD for 1x1 convs, Linear layers and depthwise convs with a channel
  multiplier; TT or CP asked for a matrix layer (1x1 conv, Linear) falls
  back to SVD.
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

from ..plan import LayerPlan, RankPlan, parse_rank
from . import ranks as R
from .ranks import LayerShape

METHOD_CHOICES = ("tt", "cp", "svd", "auto")


def _check_method(method: str) -> None:
    if method not in METHOD_CHOICES:
        raise ValueError(f"unknown method {method!r} (expected one of {', '.join(METHOD_CHOICES)})")


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
    if shape.is_matrix:
        if method in ("tt", "cp"):
            return "svd", f"{method} does not apply to a {_describe(shape)}: svd instead"
        return "svd", ""
    if method == "auto":  # depthwise with a multiplier (one input channel per group): TT's first factor is a scale
        return ("svd" if shape.is_depthwise else "tt"), ""
    return method, ""


def _round(method: str, shape: LayerShape, ranks: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    if multiple <= 1:
        return ranks
    if method == "tt":
        r1, r2 = ranks
        return (
            R.round_rank(r1, multiple, min(shape.group_out, shape.group_in * shape.kernel_size)),
            R.round_rank(r2, multiple, shape.group_in),
        )
    return (R.round_rank(ranks[0], multiple, R.max_rank(method, shape)),)


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

    Ranks are then rounded to ``rank_multiple`` (ranks.round_rank); a layer
    that would not save parameters at those ranks stays dense.
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
        ranks = R.check_ranks(m, shape, _round(m, shape, ranks, multiple))
        plan.add(_decide(name, shape, m, ranks, note))
    return plan


def _mapping_ranks(name: str, value) -> tuple[int, ...]:
    ranks = tuple(parse_rank(v, name) for v in (value if isinstance(value, (list, tuple)) else [value]))
    if not 1 <= len(ranks) <= 2:
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
        ranks = R.check_ranks(m, shape, _round(m, shape, ranks, multiple))
        plan.add(_decide(name, shape, m, ranks, note))
    return plan
