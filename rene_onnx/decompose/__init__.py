"""Low-rank decompositions of layer weights (numpy only; no torch, no onnx).

``decompose(method, weight, ranks)`` returns the factor arrays of the
:mod:`rene_onnx.plan` contract; ``reconstruct(method, arrays, weight_shape)``
multiplies them back. Every method is a :class:`~.registry.Decomposition`
in a module of its own, registered below (the one list of methods);
:mod:`.registry` says what a method provides. Rank validation and all
counting live in :mod:`rene_onnx.decompose.ranks`. Grouped convs
(``groups`` > 1) are decomposed per group (:mod:`rene_onnx.decompose.grouped`).
"""
from __future__ import annotations

import importlib

import numpy as np

from . import ranks as _ranks
from . import registry
from .cp import CPTruncations, cp_als, cp_reconstruct
from .grouped import chain_weight, decompose_grouped, infer_groups
from .ranks import LayerShape
from .svd import SVDTruncations, svd_factors
from .tt import TTTruncations, tt_reconstruct, tt_svd

#: the decomposition methods: modules of this package, each with a ``METHOD`` (a registry.Decomposition).
#: The order is the preference among equals (auto's tie-break, see choose.py). A new method is a new
#: module and its name here.
METHOD_MODULES = ("tt", "cp", "svd", "tucker2")
for _name in METHOD_MODULES:
    registry.register(importlib.import_module(f"{__name__}.{_name}").METHOD)

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


def shape_of_weight(weight_shape, bias: bool = False, groups: int = 1) -> LayerShape:
    """LayerShape of a dense weight: (out, in) for a Linear, (Cout, Cin/groups, k..) for a conv."""
    weight_shape = tuple(int(d) for d in weight_shape)
    if len(weight_shape) < 2:
        raise ValueError(f"a layer weight has at least 2 dims (out, in, k..), got shape {weight_shape}")
    groups = int(groups)
    if groups != 1 and len(weight_shape) < 3:
        raise ValueError(f"groups={groups} needs a conv weight (Cout, Cin/groups, k..), got shape {weight_shape}")
    return LayerShape(weight_shape[0], weight_shape[1] * groups, weight_shape[2:], groups=groups, bias=bias)


def decompose(method: str, weight: np.ndarray, ranks, *, groups: int = 1, **kw) -> dict[str, np.ndarray]:
    """Factor arrays of ``weight`` by a registered ``method`` (tt | cp | svd ..) at ``ranks``, in ``weight.dtype``.

    Ranks are validated (and capped at what the unfolding admits) by
    :func:`ranks.check_ranks`; a method with two ranks (TT) takes one rank
    (both equal) or two. SVD of a conv factors the weight reshaped to (Cout, Cin*k): ``V`` (r,
    Cin*k) reshapes to a (r, Cin, k..) conv carrying the geometry, ``U`` (Cout,
    r) to a 1x1 conv. ``kw`` are the method's options (CP: ``init``,
    ``n_iter_max``, ``tol``, ``seed`` for :func:`cp_als`). A grouped conv
    weight (Cout, Cin/g, k..) with ``groups`` = g is decomposed per group at
    the same (per-group) ranks, in the grouped layouts of
    :mod:`rene_onnx.decompose.grouped`.
    """
    weight = np.asarray(weight)
    if not np.issubdtype(weight.dtype, np.floating):
        raise ValueError(f"decompose needs a floating-point weight, got dtype {weight.dtype}")
    shape = shape_of_weight(weight.shape, groups=groups)
    ranks = _ranks.check_ranks(method, shape, ranks)
    m = registry.get(method)
    unknown = sorted(set(kw) - m.options)
    if unknown:
        raise ValueError(f"decompose({method!r}) got unexpected options {unknown}")

    def one_group(w: np.ndarray) -> dict[str, np.ndarray]:
        return m.decompose(w, ranks, **kw)

    return one_group(weight) if shape.groups == 1 else decompose_grouped(weight, shape.groups, one_group)


def reconstruct(method: str, arrays: dict[str, np.ndarray], weight_shape, groups: int | None = None) -> np.ndarray:
    """The dense weight of shape ``weight_shape`` that ``arrays`` (one layer's factors) represent.

    ``groups`` (for a grouped conv, ``weight_shape`` = (Cout, Cin/g, k..)) is
    implied by the arrays' shapes; when given it must agree.
    """
    weight_shape = tuple(int(d) for d in weight_shape)
    m = registry.get(method)
    arrays = {k: np.asarray(a) for k, a in arrays.items() if k != "bias"}
    implied = infer_groups(method, arrays)
    if groups is not None and int(groups) != implied:
        raise ValueError(f"{method} factors imply {implied} group(s), expected groups={groups}")
    if len(weight_shape) < 3 and not m.applies(shape_of_weight(weight_shape)):
        raise ValueError(f"{method} factors need a conv weight shape (Cout, Cin, k..), got {weight_shape}")
    return chain_weight(method, arrays, weight_shape, implied)
