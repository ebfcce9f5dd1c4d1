"""Grouped convs factorized per group (numpy only; no torch, no onnx).

A conv with g groups has a weight (Cout, Cin/g, k..) whose output block j
(rows j*Cout/g ..) sees only input block j. Each group's sub-weight
(Cout/g, Cin/g, k..) is decomposed by the method's ungrouped decomposition
(``registry.get(method).decompose``: TT-SVD, CP-ALS, SVD..) at the same
per-group ranks, and the factors are stacked along their output axis so that every factor runs as a conv grouped by g and the
rewrite stays two or three Conv nodes:

``tt`` ranks (r1, r2) per group:
    ``first`` (g*r2, Cin/g, 1..) group=g -> ``core`` (g*r1, r2, k..) group=g
    (stride / padding / dilation) -> ``last`` (Cout, r1, 1..) group=g + bias
``cp`` rank R per group:
    ``first`` (g*R, Cin/g, 1..) group=g -> ``core`` (g*R, 1, k..) depthwise,
    group=g*R -> ``last`` (Cout, R, 1..) group=g + bias
``svd`` rank r per group (1x1 grouped convs, or k x k by SVD):
    ``V`` (g*r, Cin/g*k) as the conv (g*r, Cin/g, k..) group=g with the geometry
    -> ``U`` (Cout, r) as the 1x1 conv (Cout, r, 1..) group=g + bias

At g = 1 these are exactly the :mod:`rene_onnx.plan` layouts; every method's
``Decomposition.layout`` states its own. The group count of a set of arrays
is implied by their shapes (:func:`infer_groups`).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import registry
from .registry import np_einsum

__all__ = ["split_groups", "decompose_grouped", "infer_groups", "chain_weight"]


def split_groups(weight: np.ndarray, groups: int) -> list[np.ndarray]:
    """The per-group sub-weights (Cout/g, Cin/g, k..) of a grouped conv weight (Cout, Cin/g, k..)."""
    weight = np.asarray(weight)
    groups = int(groups)
    if groups < 1 or weight.ndim < 2 or weight.shape[0] % groups:
        raise ValueError(f"a weight of shape {weight.shape} cannot be split into {groups} groups "
                         f"(Cout must be a multiple of groups)")
    return list(np.split(weight, groups, axis=0))


def decompose_grouped(weight: np.ndarray, groups: int, one_group: Callable[[np.ndarray], dict]) -> dict[str, np.ndarray]:
    """``one_group(sub_weight) -> arrays`` on every group, arrays stacked along their first axis.

    Every array of the per-group layouts stacks on axis 0 into the grouped
    layout (see the module docstring), ``U`` and ``V`` included.
    """
    per_group = [one_group(w) for w in split_groups(weight, groups)]
    return {k: np.ascontiguousarray(np.concatenate([f[k] for f in per_group], axis=0)) for k in per_group[0]}


def infer_groups(method: str, arrays: dict) -> int:
    """The group count the factor arrays imply (1 for ungrouped factors); ``ValueError`` if they disagree."""
    return registry.get(method).infer_groups(arrays)


def chain_weight(method: str, arrays: dict, weight_shape, groups: int, einsum=np_einsum):
    """The dense (grouped) weight ``weight_shape`` (Cout, Cin/g, k..) that factor arrays represent.

    Works on numpy arrays (the default ``einsum``) and on torch tensors
    (``einsum=torch.einsum``, differentiable): the methods' ``reconstruct``
    use only ``.reshape`` and ``einsum``.
    """
    weight_shape = tuple(int(d) for d in weight_shape)
    g = int(groups)
    cout = weight_shape[0]
    if g < 1 or cout % g:
        raise ValueError(f"weight shape {weight_shape} does not split into {g} groups")
    w = registry.get(method).reconstruct(arrays, weight_shape, g, einsum)
    if math.prod(w.shape) != math.prod(weight_shape):
        raise ValueError(f"{method} factors reconstruct {tuple(w.shape)}, which does not fit weight shape {weight_shape}")
    return w.reshape(weight_shape)
