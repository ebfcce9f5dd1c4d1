"""Truncated SVD of a matrix (Linear / Gemm / MatMul weight, or a conv unfolded to (Cout, Cin*k)); the ``svd`` method.

Numpy only. Factors follow the ``svd`` contract in :mod:`rene_onnx.plan`:
``U`` (out, r), ``V`` (r, in) with ``W ~= U @ V``; the singular values are
split as ``sqrt(s)`` to both sides so the two factors have balanced scales.
Arrays come back in the input's dtype; the SVD itself runs in float64.
"""
from __future__ import annotations

import math

import numpy as np

from .registry import Decomposition, FactorStep, np_einsum


def check_weight(w: np.ndarray, ndims: tuple[int, ...], what: str) -> np.ndarray:
    """``w`` as an array, checked: ``ndims`` dimensions, non-empty, floating point (else ValueError)."""
    w = np.asarray(w)
    if w.ndim not in ndims:
        layout = "a 2-D weight (out, in)" if ndims == (2,) else "a conv weight (Cout, Cin, k) or (Cout, Cin, kh, kw)"
        raise ValueError(f"{what} needs {layout}, got shape {w.shape}")
    if w.size == 0:
        raise ValueError(f"{what} needs a non-empty weight, got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"{what} needs a floating-point weight, got dtype {w.dtype}")
    return w


def left_singular(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _as_matrix(w2d: np.ndarray) -> np.ndarray:
    return check_weight(w2d, (2,), "SVD")


def _check_rank(rank: int, cap: int) -> int:
    r = int(rank)
    if r <= 0:
        raise ValueError(f"SVD rank must be positive, got {rank}")
    if r > cap:
        raise ValueError(f"SVD rank {r} exceeds the matrix rank bound {cap}")
    return r


class SVDTruncations:
    """One SVD of ``w2d``; factors and errors for every truncation rank, cheaply.

    ``factors(r)`` slices the stored SVD (no recomputation); ``error(r)`` is
    ``||W - W_r||_F^2`` (the tail sum of squared singular values), and
    ``errors`` holds it for every r = 0..max_rank.
    """

    def __init__(self, w2d: np.ndarray):
        w2d = _as_matrix(w2d)
        self.dtype = w2d.dtype
        self.shape = w2d.shape
        u, s, vt = np.linalg.svd(w2d.astype(np.float64, copy=False), full_matrices=False)
        self._u, self._s, self._vt = u, s, vt
        sq = s**2
        # errors[r] = sum_{i >= r} s_i^2, for r = 0..len(s)
        tail = np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])
        self.errors: np.ndarray = np.maximum(tail, 0.0)

    @property
    def max_rank(self) -> int:
        return int(self._s.shape[0])

    @property
    def singular_values(self) -> np.ndarray:
        return self._s.copy()

    def error(self, r):
        """``||W - W_r||_F^2`` for rank ``r`` (an int, or an array of ints -> array)."""
        r_arr = np.asarray(r)
        if np.any(r_arr < 0) or np.any(r_arr > self.max_rank):
            raise ValueError(f"rank must lie in 0..{self.max_rank}, got {r}")
        out = self.errors[r_arr]
        return float(out) if out.ndim == 0 else out

    def factors(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """``(U (out, r), V (r, in))`` in the input dtype, ``U @ V`` the best rank-r approximation."""
        r = _check_rank(r, self.max_rank)
        root = np.sqrt(self._s[:r])
        u = self._u[:, :r] * root[None, :]
        v = root[:, None] * self._vt[:r]
        return u.astype(self.dtype), v.astype(self.dtype)


def svd_factors(w2d: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Truncated SVD: ``(U (out, rank), V (rank, in))`` with ``W ~= U @ V``, sqrt(s) on both sides."""
    w2d = _as_matrix(w2d)
    _check_rank(rank, min(w2d.shape))
    return SVDTruncations(w2d).factors(rank)


def whitening_factor(moment: np.ndarray, eps: float = 1e-2) -> np.ndarray:
    """Lower Cholesky factor ``L`` of ``C + eps * mean(diag C) * I`` (float64), ``C`` the input second moment.

    ``C = E[x x^T]`` of a layer's inputs (``in`` x ``in``, symmetric PSD). The
    damping ``eps`` (relative to the mean input energy) keeps ``L`` invertible
    when the inputs span fewer than ``in`` directions, and bounds how much an
    unseen direction may be sacrificed.
    """
    c = np.asarray(moment, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise ValueError(f"an input moment must be a square (in, in) matrix, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("the input moment holds NaN or inf values")
    if not eps > 0:
        raise ValueError(f"whitening eps must be positive, got {eps}")
    c = 0.5 * (c + c.T)
    scale = float(np.mean(np.diag(c)))
    if not scale > 0:
        raise ValueError("the input moment is zero (no calibration inputs reached the layer?)")
    damp = eps * scale
    for _ in range(6):  # a PSD matrix estimated in float32 can be slightly indefinite: raise the damping
        try:
            return np.linalg.cholesky(c + damp * np.eye(c.shape[0]))
        except np.linalg.LinAlgError:
            damp *= 10.0
    raise ValueError("the input moment is not positive semi-definite")


class WhitenedSVDTruncations(SVDTruncations):
    """Activation-aware truncated SVD (SVD-LLM / ASVD style): truncation minimizes the OUTPUT error.

    With ``L`` the Cholesky factor of the (damped) input second moment
    ``C = E[x x^T]`` (:func:`whitening_factor`), ``W L = U S V^T`` is truncated
    and mapped back: ``W_r = U_r S_r V_r^T L^{-1}``. Since
    ``E||(W - W') x||^2 = ||(W - W') L||_F^2`` (for the damped ``C``), ``W_r``
    is the rank-r weight with the least expected output error, and

    - ``errors[r]`` = ``||(W - W_r) L||_F^2`` (tail of the whitened spectrum),
      ``errors[0] = ||W L||_F^2`` (so ``errors / errors[0]`` is the relative
      output error);
    - ``factors(r)`` = ``(U_r sqrt(S_r), sqrt(S_r) V_r^T L^{-1})``; at full rank
      ``U @ V`` equals ``W`` (up to rounding).
    """

    def __init__(self, w2d: np.ndarray, moment: np.ndarray, eps: float = 1e-2):
        w2d = _as_matrix(w2d)
        lower = whitening_factor(moment, eps)
        if lower.shape[0] != w2d.shape[1]:
            raise ValueError(f"input moment of size {lower.shape[0]} does not match the weight's {w2d.shape[1]} inputs")
        super().__init__(w2d.astype(np.float64, copy=False) @ lower)
        self.dtype = w2d.dtype
        # V^T L^{-1} = (L^{-T} V)^T: a solve, no explicit inverse
        self._vt = np.linalg.solve(lower.T, self._vt.T).T
        self.whitened = True


class SVD(Decomposition):
    """Truncated SVD of any layer: a Linear / Gemm / MatMul weight, or a conv unfolded to (Cout, Cin*k).

    One rank ``r``. ``V`` (r, Cin*k) runs as a (r, Cin, k..) conv carrying the kernel and the
    geometry, ``U`` (Cout, r) as a 1x1 conv with the bias (a Linear: two matmuls). Per group:
    ``V`` (g*r, Cin/g*k) and ``U`` (Cout, r), both convs grouped by g.
    """

    name = "svd"
    factor_keys = ("U", "V")
    rank_axes = (("V", 0, True),)

    def applies(self, shape) -> bool:
        return True

    def auto_candidate(self, shape) -> bool:
        # matrix layers; and a depthwise conv with a channel multiplier, where TT's first factor is a mere scale
        return shape.is_matrix or shape.is_depthwise

    def rank_caps(self, shape) -> tuple[int]:
        return (shape.max_matrix_rank,)

    def layout(self, weight_shape, ranks, groups=1) -> list[FactorStep]:
        (r,) = ranks
        g, out, cin_g, kernel = int(groups), weight_shape[0], weight_shape[1], tuple(weight_shape[2:])
        k = math.prod(kernel)
        return [FactorStep("first", "V", (g * r, cin_g, *kernel), g, geometry=True, array_shape=(g * r, cin_g * k)),
                FactorStep("last", "U", (out, r, *((1,) * len(kernel))), g, array_shape=(out, r))]

    def decompose(self, weight, ranks, **options) -> dict[str, np.ndarray]:
        u, v = svd_factors(weight.reshape(weight.shape[0], -1), ranks[0])
        return {"U": u, "V": v}

    def reconstruct(self, arrays, weight_shape, groups, einsum=np_einsum):
        g = int(groups)
        v = arrays["V"]
        r = int(v.shape[0]) // g
        return einsum("gor,gri->goi", arrays["U"].reshape(g, weight_shape[0] // g, r), v.reshape(g, r, -1))

    def infer_groups(self, arrays) -> int:
        u, v = arrays["U"], arrays["V"]
        r = math.prod(u.shape[1:]) if u.ndim >= 2 else 0
        if r == 0 or int(v.shape[0]) % r:
            names = {k: tuple(np.shape(a)) for k, a in arrays.items() if k != "bias"}
            raise ValueError(f"{self.name} factor shapes {names} do not chain")
        return int(v.shape[0]) // r


METHOD = SVD()
