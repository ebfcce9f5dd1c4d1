"""Conv (1-D / 2-D, groups=1) -> CP chain ``<node>/cp_first``, ``/cp_core``, ``/cp_last``.

``first`` (R, Cin, 1..) 1x1 -> ``core`` (R, 1, k..) depthwise (group=R) with
the original geometry -> ``last`` (Cout, R, 1..) 1x1 with the bias. A core
given as (R, k..) is accepted.
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
    r = dim(node, lf, "first", 0)
    check_rank_match(node, lf, (r,))
    core = factor(node, lf, "core", (r, 1, *kernel), dt, alt_shapes=((r, *kernel),))
    return cc.chain(graph, node, lf, layer, [
        ("cp_first", factor(node, lf, "first", (r, cin, *ones), dt), False, 1),
        ("cp_core", core, True, r),
        ("cp_last", factor(node, lf, "last", (cout, r, *ones), dt), False, 1)])


PASS = Pass("conv_cp", "Conv", "cp", check, rewrite, __doc__)
