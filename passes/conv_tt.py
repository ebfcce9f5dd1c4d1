"""Conv (1-D / 2-D, groups=1) -> TT chain ``<node>/tt_first``, ``/tt_core``, ``/tt_last``.

``first`` (r2, Cin, 1..) 1x1 -> ``core`` (r1, r2, k..) with the original
geometry -> ``last`` (Cout, r1, 1..) 1x1 with the bias.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from . import conv_common as cc
from .base import Pass, check_rank_match, dim, factor

check = cc.check


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer, cout, cin, kernel = cc.unpack(node)
    ones, dt = (1,) * len(kernel), layer.weight_array.dtype
    r1, r2 = dim(node, lf, "last", 1), dim(node, lf, "first", 0)
    check_rank_match(node, lf, (r1, r2))
    return cc.chain(graph, node, lf, layer, [
        ("tt_first", factor(node, lf, "first", (r2, cin, *ones), dt), False, 1),
        ("tt_core", factor(node, lf, "core", (r1, r2, *kernel), dt), True, 1),
        ("tt_last", factor(node, lf, "last", (cout, r1, *ones), dt), False, 1)])


PASS = Pass("conv_tt", "Conv", "tt", check, rewrite, __doc__)
