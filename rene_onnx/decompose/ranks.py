"""Rank validation and parameter / MAC counting for every decomposition.

The one place that knows how big a factorized layer is. Everything else
(fraction -> rank, break-even ranks, "does it save anything", the report's
per-layer numbers, the search's rank loss bounds) calls into here; here,
every method-specific rule (caps, layout, counts) is asked of the method's
registered :class:`~rene_onnx.decompose.registry.Decomposition`.

Counting convention (the paper's): MACs are multiply-accumulates of the
Conv / Gemm / MatMul ops at batch 1; bias adds are not MACs. Parameters
include the bias. A 1x1 conv and a Linear are both "matrix" layers.

Grouped convs (``groups`` = g > 1) are factorized per group: every group's
(Cout/g, Cin/g, k..) weight is decomposed at the same ranks and the factors
run as convs grouped by g (see :mod:`rene_onnx.decompose.grouped`). Ranks are
per group; the caps below use the per-group sizes Cout/g and Cin/g, and the
counts reduce to the ungrouped ones at g = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import registry
from .registry import round_rank  # noqa: F401 (public here since before the registry)


@dataclass(frozen=True)
class LayerShape:
    """Geometry of one Conv / Linear layer, enough to count and to validate ranks.

    ``kernel`` is ``()`` for a Linear / Gemm / MatMul. ``in_positions`` and
    ``out_positions`` are the number of spatial positions (or tokens) per
    sample at the layer's input and output: H_in*W_in and H_out*W_out for a
    2-D conv, the sequence length for a Linear on (B, T, C) input, 1 for a
    Linear on (B, C).
    """

    out_features: int
    in_features: int
    kernel: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True
    in_positions: int = 1
    out_positions: int = 1

    def __post_init__(self) -> None:
        g = self.groups
        if g < 1 or self.in_features % g or self.out_features % g:
            raise ValueError(f"groups={g} must be >= 1 and divide both in_features={self.in_features} "
                             f"and out_features={self.out_features}")

    @property
    def kernel_size(self) -> int:
        return math.prod(self.kernel) if self.kernel else 1

    @property
    def group_out(self) -> int:
        """Output channels per group (Cout / groups)."""
        return self.out_features // self.groups

    @property
    def group_in(self) -> int:
        """Input channels per group (Cin / groups)."""
        return self.in_features // self.groups

    @property
    def is_depthwise(self) -> bool:
        """A grouped conv with one input channel per group."""
        return self.groups > 1 and self.group_in == 1

    @property
    def is_matrix(self) -> bool:
        """Linear, or a conv whose kernel is all ones (1x1, 1-D k=1); grouped 1x1 convs are per-group matrices."""
        return self.kernel_size == 1

    @property
    def max_matrix_rank(self) -> int:
        """Rank cap of the (per-group) unfolding (Cout/g, Cin/g * k)."""
        return min(self.group_out, self.group_in * self.kernel_size)


def supported_methods(shape: LayerShape) -> tuple[str, ...]:
    """Registered methods that can factorize this layer (before asking whether it saves anything).

    A conv with one input and one output channel per group (plain depthwise)
    has nothing to factor: none.
    """
    return registry.applicable(shape)


def unsupported_reason(shape: LayerShape) -> str | None:
    """Why no method can factorize ``shape`` (one line), or ``None`` when some method can."""
    if supported_methods(shape):
        return None
    if shape.groups != 1 and shape.group_in == 1 and shape.group_out == 1:
        return f"depthwise conv (groups={shape.groups}): one input and one output channel per group, nothing to factor"
    return f"no registered method applies to a layer with kernel {shape.kernel} groups={shape.groups}"


def n_ranks(method: str) -> int:
    return registry.get(method).n_ranks


def check_ranks(method: str, shape: LayerShape, ranks: tuple[int, ...] | list[int] | int) -> tuple[int, ...]:
    """Validate and normalize ranks for ``method`` on ``shape``; raise ``ValueError`` with a clear message.

    One rank stands for all of a method's ranks (TT: r1 = r2, as in the
    paper). Ranks are capped at what the unfolding admits (each method's
    ``Decomposition.cap``): TT r2 <= Cin, r1 <= Cout, SVD r <= min(out, in*k),
    CP (no algebraic cap) at Cout*Cin*k (more never helps). For a grouped
    conv the ranks are per group and Cout, Cin are per group.
    """
    if isinstance(ranks, (int, np.integer)):
        ranks = (int(ranks),)
    ranks = tuple(int(r) for r in ranks)
    m = registry.get(method)
    if not supported_methods(shape):
        raise ValueError(unsupported_reason(shape))
    if method not in supported_methods(shape):
        raise ValueError(f"method {method!r} does not apply to a layer with kernel {shape.kernel} groups={shape.groups}")
    if len(ranks) == 1 and m.n_ranks > 1:
        ranks = m.expand(ranks[0])
    if len(ranks) != m.n_ranks:
        raise ValueError(f"{method} takes {m.n_ranks} rank(s), got {list(ranks)}")
    if any(r <= 0 for r in ranks):
        raise ValueError(f"ranks must be positive, got {list(ranks)}")
    return tuple(int(r) for r in m.cap(shape, ranks))


def dense_params(shape: LayerShape) -> int:
    w = shape.out_features * (shape.in_features // shape.groups) * shape.kernel_size
    return w + (shape.out_features if shape.bias else 0)


def dense_macs(shape: LayerShape) -> int:
    return shape.out_features * (shape.in_features // shape.groups) * shape.kernel_size * shape.out_positions


def factorized_params(method: str, shape: LayerShape, ranks: tuple[int, ...]) -> int:
    """Parameters of the factorized layer (weights of all factors + the bias).

    The factors' sizes from the method's layout. Per-group ranks on g groups:
    TT ``r2*Cin + g*r1*r2*k + Cout*r1``, CP ``R*Cin + g*R*k + Cout*R``, SVD
    ``r*(Cin*k + Cout)`` (each 1x1 factor is grouped too, so only the core
    grows with g).
    """
    if method == "dense":
        return dense_params(shape)
    b = shape.out_features if shape.bias else 0
    return registry.get(method).params(shape, tuple(ranks)) + b


def factorized_macs(method: str, shape: LayerShape, ranks: tuple[int, ...]) -> int:
    """MACs of the factorized chain at batch 1.

    The counts follow from the method's layout: TT / CP: the first 1x1 runs
    at the input resolution (it precedes the strided core), the core and the
    last 1x1 at the output resolution. SVD of a conv: the first factor carries the kernel and
    stride, so both run at the output resolution.
    """
    if method == "dense":
        return dense_macs(shape)
    return registry.get(method).macs(shape, tuple(ranks))


def max_rank(method: str, shape: LayerShape) -> int:
    """The algebraic cap of a single rank (one rank standing for all, e.g. TT r1 = r2; per group)."""
    return registry.get(method).max_rank(shape)


def break_even_rank(method: str, shape: LayerShape) -> int:
    """Largest single rank (r1 = r2 for TT) whose factorized form has fewer parameters than dense; 0 if none."""
    dense = dense_params(shape)
    lo, hi = 0, max_rank(method, shape)
    # parameter count is monotone in r: binary search the last r with params < dense
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if factorized_params(method, shape, expand_rank(method, mid)) < dense:
            lo = mid
        else:
            hi = mid - 1
    return lo


def rank_for_fraction(method: str, shape: LayerShape, fraction: float) -> tuple[int, ...]:
    """Ranks whose factorized parameter count is closest to ``fraction`` of dense (at least rank 1)."""
    if not 0 < fraction:
        raise ValueError(f"rank fraction must be positive, got {fraction}")
    target = fraction * dense_params(shape)
    best, best_err = 1, math.inf
    for r in range(1, max_rank(method, shape) + 1):
        err = abs(factorized_params(method, shape, expand_rank(method, r)) - target)
        if err < best_err:
            best, best_err = r, err
        elif factorized_params(method, shape, expand_rank(method, r)) > target:
            break
    return check_ranks(method, shape, expand_rank(method, best))


def layer_multiple(method: str, shape: LayerShape, multiple: int) -> int:
    """The rank multiple a layer is rounded to: ``multiple``, or 1 for a layer too narrow for it.

    A layer whose break-even rank is below ``2 * multiple`` has at most one
    multiple that saves parameters; rounding it would keep it dense (and make
    a small model's budget unreachable), so the search does not round its
    ranks. Ranks given by the user (:func:`round_ranks`) are rounded as asked.
    """
    multiple = int(multiple)
    if multiple <= 1 or break_even_rank(method, shape) < 2 * multiple:
        return 1
    return multiple


def round_ranks(method: str, shape: LayerShape, ranks: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """``ranks`` rounded to multiples of ``multiple`` within the method's caps (unchanged for ``multiple`` 1)."""
    if multiple <= 1:
        return tuple(ranks)
    return registry.get(method).round(shape, tuple(ranks), multiple)


def saves(method: str, shape: LayerShape, ranks: tuple[int, ...]) -> bool:
    return factorized_params(method, shape, ranks) < dense_params(shape)


def expand_rank(method: str, r: int) -> tuple[int, ...]:
    """The ranks one rank ``r`` stands for (TT: ``(r, r)``)."""
    return registry.get(method).expand(int(r))
