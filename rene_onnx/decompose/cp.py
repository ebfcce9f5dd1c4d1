"""CP (CANDECOMP/PARAFAC) decomposition of a conv weight via tensorly's CP-ALS; the ``cp`` method.

Numpy only. The weight (Cout, Cin, k..) is viewed as the 3-way tensor
(Cout, Cin, K) with K = prod(k) and decomposed as a sum of R rank-one terms.
Factor shapes follow the ``cp`` contract in :mod:`rene_onnx.plan`:

- ``first``: (R, Cin, 1..) -- 1x1 conv Cin -> R (rows have unit norm)
- ``core``:  (R, 1, k..)   -- depthwise k x k conv, groups=R (rows have unit norm)
- ``last``:  (Cout, R, 1..) -- 1x1 conv R -> Cout, carries the CP weights

so that ``W[o, i, k] = sum_r last[o, r] core[r, k] first[r, i]``. Components
come out sorted strongest first.

Memory: ALS never forms a (Cout, K, Cin, R) tensor; its largest temporary
is one Khatri-Rao product, at most (Cout*Cin, R) float64.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .registry import Decomposition, FactorStep, np_einsum
from .svd import check_weight


def _as_conv_weight(w: np.ndarray) -> np.ndarray:
    return check_weight(w, (3, 4), "CP")


def _matrices_from(init, shape3: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A (Cout, R), B (Cin, R), C (K, R)) from contract arrays or a (A, B, C) tuple."""
    cout, cin, k = shape3
    if isinstance(init, dict):
        try:
            first, core, last = (np.asarray(init[n], dtype=np.float64) for n in ("first", "core", "last"))
        except KeyError as e:
            raise ValueError(f"CP warm start needs arrays first/core/last, missing {e}") from None
        r = first.shape[0]
        a, b, c = last.reshape(cout, -1), first.reshape(r, cin).T, core.reshape(core.shape[0], k).T
    else:
        try:
            a, b, c = (np.asarray(m, dtype=np.float64) for m in init)
        except (TypeError, ValueError):
            raise ValueError("CP warm start must be a dict(first, core, last) or a tuple (A, B, C)") from None
    if a.shape[0] != cout or b.shape[0] != cin or c.shape[0] != k or not a.shape[1] == b.shape[1] == c.shape[1]:
        raise ValueError(
            f"CP warm start shapes {a.shape}, {b.shape}, {c.shape} do not fit the tensor {shape3}"
        )
    return a, b, c


def _strength(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0) * np.linalg.norm(c, axis=0)


def _normalized(a, b, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-norm columns for B and C, their scale folded into A; strongest component first."""
    nb = np.linalg.norm(b, axis=0)
    nc = np.linalg.norm(c, axis=0)
    nb = np.where(nb > 0, nb, 1.0)
    nc = np.where(nc > 0, nc, 1.0)
    a, b, c = a * (nb * nc)[None, :], b / nb[None, :], c / nc[None, :]
    order = np.argsort(-np.linalg.norm(a, axis=0), kind="stable")
    return a[:, order], b[:, order], c[:, order]


def _pack(a, b, c, weight_shape, dtype) -> dict[str, np.ndarray]:
    kernel = tuple(weight_shape[2:])
    ones = (1,) * len(kernel)
    r = a.shape[1]
    return {
        "first": np.ascontiguousarray(b.T.reshape((r, weight_shape[1]) + ones), dtype=dtype),
        "core": np.ascontiguousarray(c.T.reshape((r, 1) + kernel), dtype=dtype),
        "last": np.ascontiguousarray(a.reshape((weight_shape[0], r) + ones), dtype=dtype),
    }


def _parafac(t3: np.ndarray, rank: int, init, n_iter_max: int, tol: float, seed: int):
    import tensorly as tl
    from tensorly.cp_tensor import CPTensor
    from tensorly.decomposition import parafac

    if init is not None:
        init = CPTensor((np.ones(rank), list(init)))
    with tl.backend_context("numpy"), warnings.catch_warnings():
        # svd init warns when rank exceeds a mode size (it pads with random columns from ``seed``)
        warnings.simplefilter("ignore", UserWarning)
        cp = parafac(
            t3,
            rank,
            n_iter_max=n_iter_max,
            init="svd" if init is None else init,
            tol=tol,
            random_state=seed,
            normalize_factors=False,
        )
    weights, (a, b, c) = cp
    if weights is not None:
        a = a * np.asarray(weights)[None, :]
    return a, b, c


def cp_als(
    w: np.ndarray,
    rank: int,
    *,
    init=None,
    n_iter_max: int = 100,
    tol: float = 1e-7,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """CP-ALS of a conv weight at ``rank``; returns ``{first, core, last}`` in the weight's dtype.

    ``init`` None: SVD-based initialization (tensorly ``init='svd'``; modes
    smaller than the rank are padded with random columns drawn from
    ``seed``). Otherwise a warm start: CP factors as a dict
    ``{first, core, last}`` (contract shapes) or a tuple of matrices
    ``(A (Cout, R'), B (Cin, R'), C (K, R'))`` with R' >= rank; the ``rank``
    strongest components are used. ALS stops after ``n_iter_max`` sweeps or
    when the relative error changes by less than ``tol``.
    """
    w = _as_conv_weight(w)
    rank = int(rank)
    if rank <= 0:
        raise ValueError(f"CP rank must be positive, got {rank}")
    if n_iter_max < 1:
        raise ValueError(f"n_iter_max must be >= 1, got {n_iter_max}")
    cout, cin = w.shape[:2]
    k = math.prod(w.shape[2:])
    t3 = w.astype(np.float64, copy=False).reshape(cout, cin, k)
    start = None
    if init is not None:
        a, b, c = _matrices_from(init, (cout, cin, k))
        if a.shape[1] < rank:
            raise ValueError(f"CP warm start has {a.shape[1]} components, fewer than rank {rank}")
        top = np.argsort(-_strength(a, b, c), kind="stable")[:rank]
        start = (a[:, top], b[:, top], c[:, top])
    a, b, c = _parafac(t3, rank, start, n_iter_max, tol, seed)
    return _pack(*_normalized(a, b, c), w.shape, w.dtype)


def cp_reconstruct(first: np.ndarray, core: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Dense conv weight (Cout, Cin, k..) from CP factors (shapes as in the module docstring)."""
    first, core, last = (np.asarray(x) for x in (first, core, last))
    r = first.shape[0]
    if core.shape[0] != r or core.shape[1] != 1 or last.shape[1] != r:
        raise ValueError(f"CP factor shapes do not chain: first {first.shape}, core {core.shape}, last {last.shape}")
    cout, cin, kernel = last.shape[0], first.shape[1], core.shape[2:]
    w = np.einsum("or,rk,ri->oik", last.reshape(cout, r), core.reshape(r, -1), first.reshape(r, cin), optimize=True)
    return w.reshape((cout, cin) + tuple(kernel))


class CPTruncations:
    """CP candidates at several ranks for the rank search: ALS once at ``max_rank``, then warm starts.

    ``factors(r)`` for ``r < max_rank`` starts ALS from the ``r`` strongest
    components of the ``max_rank`` solution and runs ``refine_iter`` sweeps
    (results cached). ``error(r)`` is ``||W - W_hat(r)||_F^2``.
    """

    def __init__(
        self,
        w: np.ndarray,
        max_rank: int,
        *,
        n_iter_max: int = 100,
        tol: float = 1e-7,
        seed: int = 0,
        refine_iter: int = 10,
    ):
        w = _as_conv_weight(w)
        self._w = w
        self.max_rank = int(max_rank)
        self.refine_iter = int(refine_iter)
        self.tol, self.seed = tol, seed
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._errors: dict[int, float] = {}
        self._cache[self.max_rank] = cp_als(w, self.max_rank, n_iter_max=n_iter_max, tol=tol, seed=seed)

    def factors(self, r: int) -> dict[str, np.ndarray]:
        r = int(r)
        if not 0 < r <= self.max_rank:
            raise ValueError(f"CP rank must lie in 1..{self.max_rank}, got {r}")
        if r not in self._cache:
            self._cache[r] = cp_als(
                self._w, r, init=self._cache[self.max_rank], n_iter_max=self.refine_iter, tol=self.tol, seed=self.seed
            )
        return {k: v.copy() for k, v in self._cache[r].items()}

    def error(self, r: int) -> float:
        r = int(r)
        if r not in self._errors:
            f = self.factors(r)
            diff = self._w.astype(np.float64) - cp_reconstruct(*(f[k].astype(np.float64) for k in ("first", "core", "last")))
            self._errors[r] = float(np.sum(diff * diff))
        return self._errors[r]


class CP(Decomposition):
    """CP of a k x k conv (groups=1, or per group): 1x1 Cin -> R | depthwise k x k (groups=R) | 1x1 R -> Cout + bias.

    One rank ``R``; initialized by :func:`cp_als` (options ``init``, ``n_iter_max``, ``tol``,
    ``seed``). No algebraic cap: capped at Cout*Cin*k (more never helps). Per group: ``first``
    (g*R, Cin/g, 1..) group=g, ``core`` (g*R, 1, k..) group=g*R, ``last`` (Cout, R, 1..) group=g.
    """

    name = "cp"
    factor_keys = ("first", "core", "last")
    rank_axes = (("first", 0, True),)
    options = frozenset({"init", "n_iter_max", "tol", "seed"})

    def applies(self, shape) -> bool:
        return not shape.is_matrix

    def rank_caps(self, shape) -> tuple[int]:
        return (shape.group_out * shape.group_in * shape.kernel_size,)

    def layout(self, weight_shape, ranks, groups=1) -> list[FactorStep]:
        (r,) = ranks
        g, cout, cin_g, kernel = int(groups), weight_shape[0], weight_shape[1], tuple(weight_shape[2:])
        ones = (1,) * len(kernel)
        return [FactorStep("first", "first", (g * r, cin_g, *ones), g),
                FactorStep("core", "core", (g * r, 1, *kernel), g * r, geometry=True, alt_shapes=((g * r, *kernel),)),
                FactorStep("last", "last", (cout, r, *ones), g)]

    def decompose(self, weight, ranks, **options) -> dict[str, np.ndarray]:
        return cp_als(weight, ranks[0], **options)

    def reconstruct(self, arrays, weight_shape, groups, einsum=np_einsum):
        core, g = arrays["core"], int(groups)
        co, cin_g = weight_shape[0] // g, weight_shape[1]
        r = int(core.shape[0]) // g
        return einsum("gor,grk,gri->goik", arrays["last"].reshape(g, co, r), core.reshape(g, r, -1),
                      arrays["first"].reshape(g, r, cin_g))

    def infer_groups(self, arrays) -> int:
        first, core, last = arrays["first"], arrays["core"], arrays["last"]
        r = int(last.shape[1])
        if int(core.shape[0]) != int(first.shape[0]) or r == 0 or int(first.shape[0]) % r:
            raise ValueError(f"{self.name} factor shapes do not chain: first {first.shape}, core {core.shape}, "
                             f"last {last.shape}")
        return int(first.shape[0]) // r


METHOD = CP()
