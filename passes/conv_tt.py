"""Conv (1-D / 2-D, grouped or not) -> TT chain ``<node>/tt_first``, ``/tt_core``, ``/tt_last``.

``first`` (g*r2, Cin/g, 1..) 1x1 -> ``core`` (g*r1, r2, k..) with the original
geometry -> ``last`` (Cout, r1, 1..) 1x1 with the bias; all three carry
``group`` = g (g = 1: the plain TT layout of :mod:`rene_onnx.plan`).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from . import conv_common as cc
from .base import Pass, check_rank_match, dim, factor

check = cc.check


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer, cout, cin, kernel, g = cc.unpack(node)
    ones, dt = (1,) * len(kernel), layer.weight_array.dtype
    r1, r2 = dim(node, lf, "last", 1), cc.per_group_rank(node, lf, "first", 0, g)
    check_rank_match(node, lf, (r1, r2))
    return cc.chain(graph, node, lf, layer, [
        ("tt_first", factor(node, lf, "first", (g * r2, cin, *ones), dt), False, g),
        ("tt_core", factor(node, lf, "core", (g * r1, r2, *kernel), dt), True, g),
        ("tt_last", factor(node, lf, "last", (cout, r1, *ones), dt), False, g)])


PASS = Pass("conv_tt", "Conv", "tt", check, rewrite, __doc__)
