"""MatMul with a constant 2-D weight -> two MatMuls from the SVD factors.

The factors refer to the torch-layout weight W (out, in) ~= U @ V:

- ``x @ Wm`` with Wm (in, out) constant: W = Wm^T, ``x @ V^T @ U^T``;
- ``Wm @ x`` with Wm (out, in) constant: W = Wm, ``U @ (V @ x)``.

Any activation rank works (2-D, 3-D, 4-D: MatMul broadcasts the batch dims).
A bias in the factors is written into the ``Add`` that follows the MatMul
(as a new initializer, so a bias tensor shared with other nodes is left
alone); a MatMul without such an Add is skipped when the factors carry a
bias. Nodes ``<node>/svd_first``, ``<node>/svd_last``.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from .base import Pass, constant_value, matrix_factors, new_const, new_node, new_var, remove_orphans
from .layers import analyze, bias_add

def check(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> str | None:
    layer = analyze(node)
    if layer.skip_reason:
        return layer.skip_reason
    if lf.bias is not None and bias_add(node, layer) is None:
        return "the factors carry a bias but no bias Add follows this MatMul"
    return None


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    reason = check(graph, node, lf)
    if reason:
        raise ValueError(f"node {node.name!r}: {reason}")
    layer = analyze(node)
    shape = layer.shape
    u, v, b = matrix_factors(node, lf, shape.out_features, shape.in_features, layer.weight_array.dtype)
    badd = bias_add(node, layer) if b is not None else None
    name1, name2 = f"{node.name}/svd_first", f"{node.name}/svd_last"
    h = new_var(graph, f"{name1}.out")
    y = node.outputs[0]
    if layer.weight_side == "right":
        x = node.inputs[0]
        n1 = new_node(graph, "MatMul", name1, [x, new_const(graph, f"{name1}.weight", v.T)], [h])
        n2 = new_node(graph, "MatMul", name2, [h, new_const(graph, f"{name2}.weight", u.T)], [y])
    else:
        x = node.inputs[1]
        n1 = new_node(graph, "MatMul", name1, [new_const(graph, f"{name1}.weight", v), x], [h])
        n2 = new_node(graph, "MatMul", name2, [new_const(graph, f"{name2}.weight", u), h], [y])
    if badd is not None:
        add, i = badd
        old_t = add.inputs[i]
        old = constant_value(old_t)
        add.inputs[i] = new_const(graph, f"{node.name}.bias", b.reshape(old.shape).astype(old.dtype))
        remove_orphans(graph, [old_t])
    return [n1, n2]


PASS = Pass("matmul_svd", "MatMul", "svd", check, rewrite, __doc__)
