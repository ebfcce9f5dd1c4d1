"""Conv (1-D / 2-D, grouped or not, any kernel incl. 1x1) -> SVD chain ``<node>/svd_first``, ``/svd_last``.

``V`` (g*r, Cin/g*k) reshaped to a (g*r, Cin/g, k..) conv with the original
geometry (a 1x1 keeps its stride) -> ``U`` (Cout, r) reshaped to a
(Cout, r, 1..) 1x1 with the bias; both carry ``group`` = g (g = 1: the plain
SVD layout of :mod:`rene_onnx.plan`). Conv-shaped ``V`` / ``U`` are accepted too.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from . import conv_common as cc
from .base import Pass, check_rank_match, factor, prod

check = cc.check


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer, cout, cin, kernel, g = cc.unpack(node)
    dt = layer.weight_array.dtype
    r = cc.per_group_rank(node, lf, "V", 0, g)
    check_rank_match(node, lf, (r,))
    v = factor(node, lf, "V", (g * r, cin, *kernel), dt, alt_shapes=((g * r, cin * prod(kernel)),))
    u = factor(node, lf, "U", (cout, r, *((1,) * len(kernel))), dt)
    return cc.chain(graph, node, lf, layer, [("svd_first", v, True, g), ("svd_last", u, False, g)])


PASS = Pass("conv_svd", "Conv", "svd", check, rewrite, __doc__)
