"""Tucker-2 decomposition of a k x k conv weight by HOSVD (Kim et al. 2016, as used by MUSCO); the ``tucker2`` method.

Numpy only. The weight (Cout, Cin, k..) is viewed as (Cout, Cin, K), K = prod(k), and truncated in
its two channel modes: ``W ~= G x_0 U_out x_1 U_in`` with ``U_out`` (Cout, r_out), ``U_in``
(Cin, r_in) and the core ``G`` (r_out, r_in, K). It runs as three convs:

- ``first``: (r_in, Cin, 1..)   -- 1x1 conv Cin -> r_in (``U_in`` transposed)
- ``core``:  (r_out, r_in, k..) -- k x k conv r_in -> r_out (carries stride / padding / dilation)
- ``last``:  (Cout, r_out, 1..) -- 1x1 conv r_out -> Cout (``U_out``), carries the bias

Ranks ``(r_out, r_in)``, two independent ranks (one given rank means both). Initialized by
HOSVD, never randomly: ``U_out`` / ``U_in`` are the leading left singular vectors of the mode-0
unfolding (Cout, Cin*K) and of the mode-1 unfolding (Cin, Cout*K), the core is W projected onto
both. A grouped conv is decomposed per group, like TT: ``first`` (g*r_in, Cin/g, 1..), ``core``
(g*r_out, r_in, k..), ``last`` (Cout, r_out, 1..), all grouped by g.

How it differs from ``tt`` (:mod:`.tt`) -- honestly, little:

- The format is the same. This project's TT layout orders the modes (Cout, K, Cin) with the
  kernel in the middle core, and a 3-core TT of that tensor IS a Tucker-2 in the two channel
  modes (the middle core is the Tucker core). At ``(r_out, r_in) = (r1, r2)`` the two chains have
  the same convs, shapes, parameters and MACs; the layout, reconstruction and rank read-back are
  TT's (this class subclasses :class:`~.tt.TT`), and the ONNX pass and torch module differ only in
  name.
- The initialization differs. TT-SVD (:func:`~.tt.tt_svd`) is sequential: its ``last`` is the
  same ``U_out``, but its input basis comes from the SVD of the already projected
  ``U_out^T W``, while HOSVD takes ``U_in`` from W's own mode-1 unfolding (two independent
  truncations). Given ``U_out``, TT-SVD's input basis is the optimal one, so at equal ranks
  ``||W - TT-SVD||_F <= ||W - HOSVD||_F`` always (TT-SVD here is the sequentially truncated
  HOSVD); both are exact at full rank and for weights of multilinear rank <= the ranks.
- The caps are symmetric: ``r_out <= min(Cout, Cin*K, r_in*K)``, ``r_in <= min(Cin, Cout*K,
  r_out*K)`` (TT caps r1 first, then r2 <= r1*K, the sequential order).
- TT's rank search already measures Tucker-2: its candidates (``TTTruncations``) are HOSVD
  truncations, so searching ``tucker2`` or ``tt`` gives the same ranks, and the layers then start
  from HOSVD or from TT-SVD respectively.
- ``auto`` (:mod:`.choose`): Tucker-2 is an auto candidate for k x k convs like TT, registered
  after it. The search's final choice decomposes each such layer both ways at equal cost and keeps
  the smaller error, so by the inequality above it keeps TT (a tie at full rank, or when r_in = Cin,
  goes to TT as the earlier method): auto's plans are unchanged by this method, which is what the
  weights say, not a rule that excludes it.
"""
from __future__ import annotations

import math

import numpy as np

from .svd import check_weight, left_singular
from .tt import TT

__all__ = ["hosvd", "Tucker2"]


def hosvd(w: np.ndarray, ranks=(1, 1)) -> dict[str, np.ndarray]:
    """Tucker-2 factors ``{first, core, last}`` of a conv weight at ranks ``(r_out, r_in)`` by HOSVD.

    ``last`` = the top ``r_out`` left singular vectors of the mode-0 unfolding (Cout, Cin*K),
    ``first`` = the top ``r_in`` of the mode-1 unfolding (Cin, Cout*K), transposed, ``core`` = W
    projected onto both (r_out, r_in, K). Computed in float64, returned in the weight's dtype.
    Exact for weights whose mode ranks are <= (r_out, r_in).
    """
    w = check_weight(w, (3, 4), "Tucker-2")
    ranks = [int(r) for r in np.atleast_1d(ranks)]
    if len(ranks) not in (1, 2):
        raise ValueError(f"Tucker-2 takes ranks (r_out, r_in), got {ranks}")
    r_out, r_in = ranks if len(ranks) == 2 else ranks * 2
    cout, cin = w.shape[:2]
    kernel = tuple(w.shape[2:])
    k = math.prod(kernel)
    if not 0 < r_out <= min(cout, cin * k):
        raise ValueError(f"Tucker-2 rank r_out={r_out} must lie in 1..{min(cout, cin * k)} for weight {w.shape}")
    if not 0 < r_in <= min(cin, cout * k):
        raise ValueError(f"Tucker-2 rank r_in={r_in} must lie in 1..{min(cin, cout * k)} for weight {w.shape}")
    w3 = w.astype(np.float64, copy=False).reshape(cout, cin, k)
    u_out = left_singular(w3.reshape(cout, cin * k))[0][:, :r_out]  # (Cout, r_out)
    u_in = left_singular(w3.transpose(1, 0, 2).reshape(cin, cout * k))[0][:, :r_in]  # (Cin, r_in)
    core = np.einsum("oa,oik,ib->abk", u_out, w3, u_in, optimize=True)  # (r_out, r_in, K)
    ones = (1,) * len(kernel)
    return {
        "first": np.ascontiguousarray(u_in.T.reshape((r_in, cin) + ones), dtype=w.dtype),
        "core": np.ascontiguousarray(core.reshape((r_out, r_in) + kernel), dtype=w.dtype),
        "last": np.ascontiguousarray(u_out.reshape((cout, r_out) + ones), dtype=w.dtype),
    }


class Tucker2(TT):
    """Tucker-2 of a k x k conv (groups=1, or per group), ranks ``(r_out, r_in)``, by HOSVD.

    The chain, its layout and counts are TT's (see the module docstring); the decomposition and
    the caps are Tucker-2's.
    """

    name = "tucker2"

    def rank_caps(self, shape) -> tuple[int, int]:
        k = shape.kernel_size
        return min(shape.group_out, shape.group_in * k), min(shape.group_in, shape.group_out * k)

    def cap(self, shape, ranks) -> tuple[int, int]:
        k = shape.kernel_size
        r_out, r_in = (min(r, c) for r, c in zip(ranks, self.rank_caps(shape)))
        r_in = min(r_in, r_out * k)  # the core's mode-1 rank is at most r_out * K (and vice versa)
        return min(r_out, r_in * k), r_in

    def decompose(self, weight, ranks, **options) -> dict[str, np.ndarray]:
        return hosvd(weight, ranks)


METHOD = Tucker2()
