"""Conv (1-D / 2-D, grouped or not) -> CP chain ``<node>/cp_first``, ``/cp_core``, ``/cp_last``.

``first`` (g*R, Cin/g, 1..) 1x1 group=g -> ``core`` (g*R, 1, k..) depthwise
(group=g*R) with the original geometry -> ``last`` (Cout, R, 1..) 1x1 group=g
with the bias (g = 1: the plain CP layout of :mod:`rene_onnx.plan`). A core
given as (g*R, k..) is accepted.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from . import conv_common as cc
from .base import Pass, check_rank_match, factor

check = cc.check


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer, cout, cin, kernel, g = cc.unpack(node)
    ones, dt = (1,) * len(kernel), layer.weight_array.dtype
    r = cc.per_group_rank(node, lf, "first", 0, g)
    check_rank_match(node, lf, (r,))
    core = factor(node, lf, "core", (g * r, 1, *kernel), dt, alt_shapes=((g * r, *kernel),))
    return cc.chain(graph, node, lf, layer, [
        ("cp_first", factor(node, lf, "first", (g * r, cin, *ones), dt), False, g),
        ("cp_core", core, True, g * r),
        ("cp_last", factor(node, lf, "last", (cout, r, *ones), dt), False, g)])


PASS = Pass("conv_cp", "Conv", "cp", check, rewrite, __doc__)
