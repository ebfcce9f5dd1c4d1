"""Conv (1-D / 2-D, groups=1) -> TT chain.

``first`` (r2, Cin, 1..) 1x1 -> ``core`` (r1, r2, k..) with the original
geometry -> ``last`` (Cout, r1, 1..) 1x1 with the bias. Nodes
``<node>/tt_first``, ``<node>/tt_core``, ``<node>/tt_last``.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from . import conv_common as cc
from .base import Pass, check_rank_match, dim, factor

METHOD = "tt"
check = cc.check


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer = cc.layer_of(node)
    w = layer.weight_array
    cout, cin, kernel = int(w.shape[0]), int(w.shape[1]), tuple(int(k) for k in w.shape[2:])
    ones = (1,) * len(kernel)
    r1, r2 = dim(node, lf, "last", 1), dim(node, lf, "first", 0)
    check_rank_match(node, lf, (r1, r2))
    first = factor(node, lf, "first", (r2, cin, *ones), w.dtype)
    core = factor(node, lf, "core", (r1, r2, *kernel), w.dtype)
    last = factor(node, lf, "last", (cout, r1, *ones), w.dtype)
    bias = cc.bias_input(graph, node, lf, layer)
    n1 = cc.conv(graph, f"{node.name}/tt_first", node.inputs[0], first)
    n2 = cc.conv(graph, f"{node.name}/tt_core", n1.outputs[0], core, geom=cc.geometry(node))
    n3 = cc.conv(graph, f"{node.name}/tt_last", n2.outputs[0], last, out=node.outputs[0], bias=bias)
    return [n1, n2, n3]


PASS = Pass("conv_tt", "Conv", METHOD, check, rewrite, __doc__)
