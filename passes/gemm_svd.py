"""Gemm with a constant weight -> two Gemms from the SVD factors.

``Y = alpha * A' @ B' + beta * C`` (A' = A^T if transA, B' = B^T if transB).
The factors refer to the torch-layout weight W (out, in) ~= U @ V:

- weight B (``x @ W^T``, e.g. a torch Linear): W = B'^T, so
  ``Y = (alpha * A' @ V^T) @ U^T + beta * C``;
- weight A (``W @ x``): W = A', so ``Y = U @ (alpha * V @ B') + beta * C``.

The factor initializers keep the original node's trans flag for the weight
side (transB=1 stores V (r, in) and U (out, r), as torch does). ``alpha`` goes
on the first Gemm, ``C`` and ``beta`` on the second, so C broadcasts exactly as
before. Bias factors replace ``beta * C`` (written as C with beta = 1). Nodes
``<node>/svd_first``, ``<node>/svd_last``.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from .base import Pass, matrix_factors, new_const, new_node, new_var
from .layers import analyze

def check(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> str | None:
    return analyze(node).skip_reason


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer = analyze(node)
    if layer.skip_reason:
        raise ValueError(f"node {node.name!r}: {layer.skip_reason}")
    out = layer.shape.out_features
    u, v, b = matrix_factors(node, lf, out, layer.shape.in_features, layer.weight_array.dtype)
    a = node.attrs
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
    c = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if b is not None:  # the factors' bias is the effective bias beta * C
        c, beta = new_const(graph, f"{node.name}.bias", b if layer.weight_side == "right" else b.reshape(out, 1)), 1.0
    name1, name2 = f"{node.name}/svd_first", f"{node.name}/svd_last"
    h = new_var(graph, f"{name1}.out")
    y = node.outputs[0]
    tail = [c] if c is not None else []
    if layer.weight_side == "right":
        wv = new_const(graph, f"{name1}.weight", v if tb else v.T)
        wu = new_const(graph, f"{name2}.weight", u if tb else u.T)
        n1 = new_node(graph, "Gemm", name1, [node.inputs[0], wv], [h],
                      {"alpha": alpha, "beta": 1.0, "transA": ta, "transB": tb})
        n2 = new_node(graph, "Gemm", name2, [h, wu, *tail], [y],
                      {"alpha": 1.0, "beta": beta, "transA": 0, "transB": tb})
    else:
        wv = new_const(graph, f"{name1}.weight", v.T if ta else v)
        wu = new_const(graph, f"{name2}.weight", u.T if ta else u)
        n1 = new_node(graph, "Gemm", name1, [wv, node.inputs[1]], [h],
                      {"alpha": alpha, "beta": 1.0, "transA": ta, "transB": tb})
        n2 = new_node(graph, "Gemm", name2, [wu, h, *tail], [y],
                      {"alpha": 1.0, "beta": beta, "transA": ta, "transB": 0})
    return [n1, n2]


PASS = Pass("gemm_svd", "Gemm", "svd", check, rewrite, __doc__)
