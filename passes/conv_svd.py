"""Conv (1-D / 2-D, groups=1, any kernel incl. 1x1) -> SVD chain ``<node>/svd_first``, ``/svd_last``.

``V`` (r, Cin*k) reshaped to a (r, Cin, k..) conv with the original geometry
(a 1x1 keeps its stride) -> ``U`` (Cout, r) reshaped to a (Cout, r, 1..) 1x1
with the bias. Conv-shaped ``V`` / ``U`` are accepted too.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from . import conv_common as cc
from .base import Pass, check_rank_match, dim, factor, prod

check = cc.check


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer, cout, cin, kernel = cc.unpack(node)
    dt = layer.weight_array.dtype
    r = dim(node, lf, "V", 0)
    check_rank_match(node, lf, (r,))
    v = factor(node, lf, "V", (r, cin, *kernel), dt, alt_shapes=((r, cin * prod(kernel)),))
    u = factor(node, lf, "U", (cout, r, *((1,) * len(kernel))), dt)
    return cc.chain(graph, node, lf, layer, [("svd_first", v, True, 1), ("svd_last", u, False, 1)])


PASS = Pass("conv_svd", "Conv", "svd", check, rewrite, __doc__)
