"""Conv (1-D / 2-D, groups=1) -> CP chain.

``first`` (R, Cin, 1..) 1x1 -> ``core`` (R, 1, k..) depthwise (group=R) with
the original geometry -> ``last`` (Cout, R, 1..) 1x1 with the bias. Nodes
``<node>/cp_first``, ``<node>/cp_core``, ``<node>/cp_last``.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from . import conv_common as cc
from .base import Pass, check_rank_match, dim, factor

METHOD = "cp"
check = cc.check


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer = cc.layer_of(node)
    w = layer.weight_array
    cout, cin, kernel = int(w.shape[0]), int(w.shape[1]), tuple(int(k) for k in w.shape[2:])
    ones = (1,) * len(kernel)
    r = dim(node, lf, "first", 0)
    check_rank_match(node, lf, (r,))
    first = factor(node, lf, "first", (r, cin, *ones), w.dtype)
    core = factor(node, lf, "core", (r, 1, *kernel), w.dtype, alt_shapes=((r, *kernel),))
    last = factor(node, lf, "last", (cout, r, *ones), w.dtype)
    bias = cc.bias_input(graph, node, lf, layer)
    n1 = cc.conv(graph, f"{node.name}/cp_first", node.inputs[0], first)
    n2 = cc.conv(graph, f"{node.name}/cp_core", n1.outputs[0], core, geom=cc.geometry(node), group=r)
    n3 = cc.conv(graph, f"{node.name}/cp_last", n2.outputs[0], last, out=node.outputs[0], bias=bias)
    return [n1, n2, n3]


PASS = Pass("conv_cp", "Conv", METHOD, check, rewrite, __doc__)
