"""Conv (1-D / 2-D, groups=1, any kernel incl. 1x1) -> SVD chain.

``V`` (r, Cin*k) reshaped to a (r, Cin, k..) conv with the original geometry
(stride kept for a 1x1) -> ``U`` (Cout, r) reshaped to a (Cout, r, 1..) 1x1
with the bias. Nodes ``<node>/svd_first``, ``<node>/svd_last``.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from rene_onnx.plan import LayerFactors

from . import conv_common as cc
from .base import Pass, check_rank_match, dim, factor, prod

METHOD = "svd"
check = cc.check


def rewrite(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    layer = cc.layer_of(node)
    w = layer.weight_array
    cout, cin, kernel = int(w.shape[0]), int(w.shape[1]), tuple(int(k) for k in w.shape[2:])
    r = dim(node, lf, "V", 0)
    check_rank_match(node, lf, (r,))
    v = factor(node, lf, "V", (r, cin, *kernel), w.dtype, alt_shapes=((r, cin * prod(kernel)),))
    u = factor(node, lf, "U", (cout, r, *((1,) * len(kernel))), w.dtype)
    bias = cc.bias_input(graph, node, lf, layer)
    n1 = cc.conv(graph, f"{node.name}/svd_first", node.inputs[0], v, geom=cc.geometry(node))
    n2 = cc.conv(graph, f"{node.name}/svd_last", n1.outputs[0], u, out=node.outputs[0], bias=bias)
    return [n1, n2]


PASS = Pass("conv_svd", "Conv", METHOD, check, rewrite, __doc__)
