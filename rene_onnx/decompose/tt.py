"""Tensor-train (TT-SVD) and Tucker-2 truncations of a conv weight (Cout, Cin, k..); the ``tt`` method (:class:`TT`).

Numpy only. Factor shapes follow the ``tt`` contract in :mod:`rene_onnx.plan`:

- ``first``: (r2, Cin, 1..)  -- 1x1 conv Cin -> r2
- ``core``:  (r1, r2, k..)   -- k x k conv r2 -> r1 (carries stride / padding / dilation)
- ``last``:  (Cout, r1, 1..) -- 1x1 conv r1 -> Cout

so that ``W[o, i, k] = sum_{a, b} last[o, a] core[a, b, k] first[b, i]``.

:func:`tt_svd` is the sequential TT-SVD. :class:`TTTruncations` serves the
rank search: two mode SVDs computed once, then every ``(r1, r2)`` candidate
is a slice of one projected core (a Tucker-2 / HOSVD truncation; nested in
the ranks, exact for weights of mode ranks <= (r1, r2)) with its error in
O(1).
"""
from __future__ import annotations

import math

import numpy as np

from .registry import Decomposition, FactorStep, np_einsum
from .svd import check_weight, left_singular


def _as_conv_weight(w: np.ndarray) -> np.ndarray:
    return check_weight(w, (3, 4), "TT")


def _split_ranks(ranks, r2=None) -> tuple[int, int]:
    if r2 is not None:
        return int(ranks), int(r2)
    if isinstance(ranks, (int, np.integer)):
        return int(ranks), int(ranks)
    ranks = tuple(int(r) for r in ranks)
    if len(ranks) == 1:
        return ranks[0], ranks[0]
    if len(ranks) != 2:
        raise ValueError(f"TT takes ranks (r1, r2), got {list(ranks)}")
    return ranks


def _unit_kernel(n_spatial: int) -> tuple[int, ...]:
    return (1,) * n_spatial


def _pack(first2d, core3d, last2d, weight_shape, dtype) -> dict[str, np.ndarray]:
    """(r2, Cin), (r1, r2, K), (Cout, r1) -> the contract's conv-shaped arrays in ``dtype``."""
    kernel = tuple(weight_shape[2:])
    ones = _unit_kernel(len(kernel))
    return {
        "first": np.ascontiguousarray(first2d.reshape(first2d.shape + ones), dtype=dtype),
        "core": np.ascontiguousarray(core3d.reshape(core3d.shape[:2] + kernel), dtype=dtype),
        "last": np.ascontiguousarray(last2d.reshape(last2d.shape + ones), dtype=dtype),
    }


def tt_svd(w: np.ndarray, ranks=(1, 1)) -> dict[str, np.ndarray]:
    """Sequential TT-SVD of a conv weight at ranks ``(r1, r2)`` (one int means r1 = r2).

    First SVD: W unfolded (Cout, Cin*K) truncated to r1 -> ``last``; the
    remainder (r1, Cin, K) rearranged to (r1*K, Cin) truncated to r2 ->
    ``core`` (carries the singular values) and ``first``. Exact for weights
    of TT rank <= (r1, r2).
    """
    w = _as_conv_weight(w)
    r1, r2 = _split_ranks(ranks)
    cout, cin = w.shape[:2]
    k = math.prod(w.shape[2:])
    if not 0 < r1 <= min(cout, cin * k):
        raise ValueError(f"TT rank r1={r1} must lie in 1..{min(cout, cin * k)} for weight {w.shape}")
    if not 0 < r2 <= min(cin, r1 * k):
        raise ValueError(f"TT rank r2={r2} must lie in 1..{min(cin, r1 * k)} for weight {w.shape} and r1={r1}")
    w64 = w.astype(np.float64, copy=False)
    u, s, vt = np.linalg.svd(w64.reshape(cout, cin * k), full_matrices=False)
    last = u[:, :r1]
    rest = (s[:r1, None] * vt[:r1]).reshape(r1, cin, k)  # (r1, Cin, K)
    m = rest.transpose(0, 2, 1).reshape(r1 * k, cin)  # (r1*K, Cin)
    a, s2, bt = np.linalg.svd(m, full_matrices=False)
    first = bt[:r2]  # (r2, Cin)
    core = (a[:, :r2] * s2[None, :r2]).reshape(r1, k, r2).transpose(0, 2, 1)  # (r1, r2, K)
    return _pack(first, core, last, w.shape, w.dtype)


def tt_reconstruct(first: np.ndarray, core: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Dense conv weight (Cout, Cin, k..) from TT factors (shapes as in the module docstring)."""
    first, core, last = (np.asarray(a) for a in (first, core, last))
    r1, r2 = core.shape[:2]
    if first.shape[0] != r2 or last.shape[1] != r1:
        raise ValueError(
            f"TT factor shapes do not chain: first {first.shape}, core {core.shape}, last {last.shape}"
        )
    cout, cin = last.shape[0], first.shape[1]
    kernel = core.shape[2:]
    f = first.reshape(r2, cin)
    c = core.reshape(r1, r2, -1)
    lst = last.reshape(cout, r1)
    w = np.einsum("oa,abk->obk", lst, c, optimize=True)
    w = np.einsum("obk,bi->oik", w, f, optimize=True)
    return w.reshape((cout, cin) + tuple(kernel))


class TTTruncations:
    """Two mode SVDs of a conv weight, computed once; TT factors at any ``(r1, r2)`` by slicing.

    ``last`` = top-r1 left singular vectors of the Cout-mode unfolding
    (Cout, Cin*K), ``first`` = top-r2 of the Cin-mode unfolding (Cin, Cout*K),
    ``core`` = W projected onto both (a Tucker-2 / HOSVD truncation). The
    full projected core is stored, so ``factors(r1, r2)`` is a slice and
    ``error(r1, r2) = ||W||^2 - ||core||^2`` (orthogonal projections) is a
    table look-up. Exact for weights whose mode ranks are <= (r1, r2).
    """

    def __init__(self, w: np.ndarray):
        w = _as_conv_weight(w)
        self.dtype = w.dtype
        self.shape = tuple(w.shape)
        cout, cin = w.shape[:2]
        k = math.prod(w.shape[2:])
        w3 = w.astype(np.float64, copy=False).reshape(cout, cin, k)
        u_out, s_out = left_singular(w3.reshape(cout, cin * k))
        u_in, s_in = left_singular(w3.transpose(1, 0, 2).reshape(cin, cout * k))
        p, q = u_out.shape[1], u_in.shape[1]
        g = (u_out.T @ w3.reshape(cout, cin * k)).reshape(p, cin, k)  # (p, Cin, K)
        g = np.tensordot(g, u_in, axes=([1], [0])).transpose(0, 2, 1)  # (p, q, K)
        self._u_out, self._u_in, self._g = u_out, u_in, g
        self.singular_values = (s_out, s_in)
        self.norm2 = float(np.sum(w3 * w3))
        energy = np.einsum("pqk,pqk->pq", g, g)
        cum = np.zeros((p + 1, q + 1))
        cum[1:, 1:] = energy.cumsum(0).cumsum(1)
        self._captured = cum  # captured[r1, r2] = ||core(r1, r2)||^2

    @property
    def max_ranks(self) -> tuple[int, int]:
        """Largest (r1, r2) this weight admits: (min(Cout, Cin*K), min(Cin, Cout*K))."""
        return self._g.shape[0], self._g.shape[1]

    def _check(self, r1: int, r2: int, allow_zero: bool = False) -> None:
        lo = 0 if allow_zero else 1
        m1, m2 = self.max_ranks
        if not (lo <= r1 <= m1 and lo <= r2 <= m2):
            raise ValueError(f"TT ranks ({r1}, {r2}) must lie in {lo}..{m1} x {lo}..{m2} for weight {self.shape}")

    def error(self, r1, r2=None):
        """``||W - W_hat(r1, r2)||_F^2``; ``r2`` defaults to ``r1``. Ints or int arrays (broadcast)."""
        r1 = np.asarray(r1)
        r2 = r1 if r2 is None else np.asarray(r2)
        m1, m2 = self.max_ranks
        if np.any(r1 < 0) or np.any(r1 > m1) or np.any(r2 < 0) or np.any(r2 > m2):
            raise ValueError(f"TT ranks must lie in 0..{m1} x 0..{m2} for weight {self.shape}")
        out = np.maximum(self.norm2 - self._captured[r1, r2], 0.0)
        return float(out) if out.ndim == 0 else out

    def factors(self, r1, r2=None) -> dict[str, np.ndarray]:
        """TT factors ``{first, core, last}`` at ranks (r1, r2) in the weight's dtype (``r2`` defaults to r1)."""
        r1, r2 = _split_ranks(r1, r2)
        self._check(r1, r2)
        last = self._u_out[:, :r1]
        first = self._u_in[:, :r2].T
        core = self._g[:r1, :r2]
        return _pack(first, core, last, self.shape, self.dtype)


class TT(Decomposition):
    """TT of a k x k conv (groups=1, or per group): 1x1 Cin -> r2 | k x k r2 -> r1 | 1x1 r1 -> Cout + bias.

    Ranks ``(r1, r2)`` (one rank means r1 = r2, the paper's default); initialized by the
    sequential :func:`tt_svd`. Per group (g groups, per-group ranks): ``first`` (g*r2, Cin/g, 1..),
    ``core`` (g*r1, r2, k..), ``last`` (Cout, r1, 1..), all convs grouped by g.
    """

    name = "tt"
    n_ranks = 2
    factor_keys = ("first", "core", "last")
    rank_axes = (("last", 1, False), ("first", 0, True))

    def applies(self, shape) -> bool:
        return not shape.is_matrix

    def auto_candidate(self, shape) -> bool:
        # a depthwise conv with a channel multiplier (one input channel per group): the first factor is a scale
        return not shape.is_depthwise

    def rank_caps(self, shape) -> tuple[int, int]:
        return min(shape.group_out, shape.group_in * shape.kernel_size), shape.group_in

    def cap(self, shape, ranks) -> tuple[int, int]:
        r1, r2 = ranks
        r1 = min(r1, shape.group_out, shape.group_in * shape.kernel_size)
        return r1, min(r2, shape.group_in, r1 * shape.kernel_size)

    def layout(self, weight_shape, ranks, groups=1) -> list[FactorStep]:
        r1, r2 = ranks
        g, cout, cin_g, kernel = int(groups), weight_shape[0], weight_shape[1], tuple(weight_shape[2:])
        ones = (1,) * len(kernel)
        return [FactorStep("first", "first", (g * r2, cin_g, *ones), g),
                FactorStep("core", "core", (g * r1, r2, *kernel), g, geometry=True),
                FactorStep("last", "last", (cout, r1, *ones), g)]

    def decompose(self, weight, ranks, **options) -> dict[str, np.ndarray]:
        return tt_svd(weight, ranks)

    def reconstruct(self, arrays, weight_shape, groups, einsum=np_einsum):
        core, g = arrays["core"], int(groups)
        co, cin_g = weight_shape[0] // g, weight_shape[1]
        r1, r2 = int(core.shape[0]) // g, int(core.shape[1])
        return einsum("goa,gabk,gbi->goik", arrays["last"].reshape(g, co, r1), core.reshape(g, r1, r2, -1),
                      arrays["first"].reshape(g, r2, cin_g))

    def infer_groups(self, arrays) -> int:
        first, core, last = arrays["first"], arrays["core"], arrays["last"]
        r1, r2 = int(last.shape[1]), int(core.shape[1])
        rows_core, rows_first = int(core.shape[0]), int(first.shape[0])
        if r1 == 0 or r2 == 0 or rows_core % r1 or rows_first % r2 or rows_core // r1 != rows_first // r2:
            raise ValueError(f"{self.name} factor shapes do not chain: first {first.shape}, core {core.shape}, "
                             f"last {last.shape}")
        return rows_first // r2


METHOD = TT()
