"""Low-rank decompositions of layer weights (numpy only; no torch, no onnx).

``decompose(method, weight, ranks)`` returns the factor arrays of the
:mod:`rene_onnx.plan` contract; ``reconstruct(method, arrays, weight_shape)``
multiplies them back. Rank validation and all counting live in
:mod:`rene_onnx.decompose.ranks`.
"""
from __future__ import annotations

import numpy as np

from . import ranks as _ranks
from .cp import CPTruncations, cp_als, cp_reconstruct
from .ranks import LayerShape
from .svd import SVDTruncations, svd_factors
from .tt import TTTruncations, tt_reconstruct, tt_svd

__all__ = [
    "decompose",
    "reconstruct",
    "shape_of_weight",
    "svd_factors",
    "SVDTruncations",
    "tt_svd",
    "tt_reconstruct",
    "TTTruncations",
    "cp_als",
    "cp_reconstruct",
    "CPTruncations",
]

_CP_KW = {"init", "n_iter_max", "tol", "seed"}


def shape_of_weight(weight_shape, bias: bool = False) -> LayerShape:
    """LayerShape of a dense weight: (out, in) for a Linear, (Cout, Cin, k..) for a conv (groups=1)."""
    weight_shape = tuple(int(d) for d in weight_shape)
    if len(weight_shape) < 2:
        raise ValueError(f"a layer weight has at least 2 dims (out, in, k..), got shape {weight_shape}")
    return LayerShape(weight_shape[0], weight_shape[1], weight_shape[2:], bias=bias)


def decompose(method: str, weight: np.ndarray, ranks, **kw) -> dict[str, np.ndarray]:
    """Factor arrays of ``weight`` by ``method`` (tt | cp | svd) at ``ranks``, in ``weight.dtype``.

    Ranks are validated (and capped at what the unfolding admits) by
    :func:`ranks.check_ranks`; TT takes one rank (r1 = r2) or two. SVD of a
    conv factors the weight reshaped to (Cout, Cin*k): ``V`` (r, Cin*k)
    reshapes to a (r, Cin, k..) conv carrying the geometry, ``U`` (Cout, r)
    to a 1x1 conv. ``kw`` goes to :func:`cp_als` for CP (``init``,
    ``n_iter_max``, ``tol``, ``seed``).
    """
    weight = np.asarray(weight)
    if not np.issubdtype(weight.dtype, np.floating):
        raise ValueError(f"decompose needs a floating-point weight, got dtype {weight.dtype}")
    shape = shape_of_weight(weight.shape)
    ranks = _ranks.check_ranks(method, shape, ranks)
    allowed = _CP_KW if method == "cp" else set()
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise ValueError(f"decompose({method!r}) got unexpected options {unknown}")
    if method == "svd":
        u, v = svd_factors(weight.reshape(shape.out_features, -1), ranks[0])
        return {"U": u, "V": v}
    if method == "tt":
        return tt_svd(weight, ranks)
    return cp_als(weight, ranks[0], **kw)


def reconstruct(method: str, arrays: dict[str, np.ndarray], weight_shape) -> np.ndarray:
    """The dense weight of shape ``weight_shape`` that ``arrays`` (one layer's factors) represent."""
    weight_shape = tuple(int(d) for d in weight_shape)
    if method == "svd":
        u, v = np.asarray(arrays["U"]), np.asarray(arrays["V"])
        r = v.shape[0]  # V is (r, in) or conv-shaped (r, Cin, k..); U is (out, r) or (out, r, 1..)
        w = u.reshape(weight_shape[0], r) @ v.reshape(r, -1)
    elif method == "tt":
        w = tt_reconstruct(arrays["first"], arrays["core"], arrays["last"])
    elif method == "cp":
        w = cp_reconstruct(arrays["first"], arrays["core"], arrays["last"])
    else:
        raise ValueError(f"unknown method {method!r} (expected tt, cp or svd)")
    if w.size != int(np.prod(weight_shape)):
        raise ValueError(f"{method} factors reconstruct {w.shape}, which does not fit weight shape {weight_shape}")
    return w.reshape(weight_shape)
