"""Tensor-train (TT-SVD) and Tucker-2 truncations of a conv weight (Cout, Cin, k..).

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

from .svd import check_weight


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


def _left_singular(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and singular values of ``a`` (float64), largest first.

    For a wide matrix this goes through ``eigh`` of the small Gram matrix
    ``a @ a.T``: several times faster than a full SVD of a (512, 4608)
    unfolding and far less sensitive to a busy CPU. The vectors are
    orthonormal, so the projections built on them stay exact; only
    directions with singular values below ~1e-8 * s_max are ill-determined,
    and they carry no energy.
    """
    rows, cols = a.shape
    if rows > cols:
        u, s, _ = np.linalg.svd(a, full_matrices=False)
        return u, s
    ev, u = np.linalg.eigh(a @ a.T)
    order = np.argsort(ev)[::-1]
    return u[:, order], np.sqrt(np.maximum(ev[order], 0.0))


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
        u_out, s_out = _left_singular(w3.reshape(cout, cin * k))
        u_in, s_in = _left_singular(w3.transpose(1, 0, 2).reshape(cin, cout * k))
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
