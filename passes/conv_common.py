"""What the conv passes share: the check, the geometry, the 1x1 / core Conv nodes, the bias, and the rewrite.

:func:`rewrite_chain` rewrites a conv into the chain of convs its method's numpy rules lay out
(``Decomposition.layout`` in :mod:`rene_onnx.decompose.registry`): nodes ``<node>/<method>_<leaf>``,
the kernel factor carrying the geometry, the last one the bias. A conv pass is that, named.

A grouped conv (``group`` = g) is rewritten per group: its factors are
stacked over the groups (:mod:`rene_onnx.decompose.grouped`) and every factor
conv carries ``group`` = g (the CP core g*R).

Geometry (strides, pads, auto_pad, dilations) always comes from the original
node and goes on the one factor that carries the kernel; the 1x1 factors run
with stride 1 and no padding. A 1x1 conv in front of the kernel factor keeps
the spatial size, so the kernel factor sees the original input size and
``auto_pad`` SAME_UPPER / SAME_LOWER pads exactly as the original did.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from rene_onnx.decompose import registry
from rene_onnx.decompose.ranks import supported_methods, unsupported_reason
from rene_onnx.plan import LayerFactors

from .base import Pass, bias_vector, check_rank_match, factor, float_dtype, new_const, new_node, new_var
from .layers import OnnxLayer, analyze

GEOMETRY = ("auto_pad", "pads", "strides", "dilations")


def check(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> str | None:
    layer = analyze(node)
    if layer.skip_reason:
        return layer.skip_reason
    methods = supported_methods(layer.shape)
    if not methods:
        return unsupported_reason(layer.shape)
    if lf.method not in methods:
        kernel = "x".join(str(k) for k in layer.shape.kernel)
        return f"{lf.method} does not apply to a conv with a {kernel} kernel (use {' / '.join(methods)})"
    return None


def unpack(node: gs.Node) -> tuple[OnnxLayer, int, int, tuple[int, ...], int]:
    """The layer, Cout, Cin per group, kernel and group count of a conv node a pass may rewrite.

    ``ValueError`` if no pass may rewrite it.
    """
    layer = analyze(node)
    if layer.skip_reason:  # the driver calls check first; this guards direct callers
        raise ValueError(f"node {node.name!r}: {layer.skip_reason}")
    w = layer.weight_array
    float_dtype(w.dtype, node)
    return layer, int(w.shape[0]), int(w.shape[1]), tuple(int(k) for k in w.shape[2:]), layer.shape.groups


def rewrite_chain(graph: gs.Graph, node: gs.Node, lf: LayerFactors) -> list[gs.Node]:
    """Conv -> the chain of ``lf.method``'s layout, its ranks read from the arrays (and checked against ``lf.ranks``)."""
    layer, cout, cin, kernel, g = unpack(node)
    method = registry.get(lf.method)
    try:
        ranks = method.ranks_of(lf.arrays, g)
    except ValueError as e:
        raise ValueError(f"node {node.name!r}: {e}") from None
    check_rank_match(node, lf, ranks)
    dt = layer.weight_array.dtype
    return chain(graph, node, lf, layer, [
        (f"{lf.method}_{s.leaf}", factor(node, lf, s.key, s.weight_shape, dt, alt_shapes=(s.layout, *s.alt_shapes)),
         s.geometry, s.group)
        for s in method.layout((cout, cin, *kernel), ranks, g)])


def chain_pass(name: str, method: str, doc: str = "") -> Pass:
    """The Conv pass of a method whose rewrite is its layout's chain (:func:`check`, :func:`rewrite_chain`)."""
    return Pass(name, "Conv", method, check, rewrite_chain, doc)


def chain(graph: gs.Graph, node: gs.Node, lf: LayerFactors, layer: OnnxLayer,
          steps: list[tuple[str, np.ndarray, bool, int]]) -> list[gs.Node]:
    """Convs ``<node>/<suffix>`` in sequence from the node's input to its output tensor.

    ``steps``: ``(suffix, weight, carries_geometry, group)`` per conv; the last
    one gets the bias (:func:`bias_input`).
    """
    bias = bias_input(graph, node, lf, layer)
    x, nodes = node.inputs[0], []
    for i, (suffix, weight, geom, group) in enumerate(steps):
        last = i == len(steps) - 1
        n = conv(graph, f"{node.name}/{suffix}", x, weight, out=node.outputs[0] if last else None,
                 bias=bias if last else None, geom=geometry(node) if geom else None, group=group)
        nodes.append(n)
        x = n.outputs[0]
    return nodes


def geometry(node: gs.Node) -> dict:
    return {k: node.attrs[k] for k in GEOMETRY if k in node.attrs}


def conv(graph: gs.Graph, name: str, x: gs.Tensor, weight: np.ndarray, out: gs.Tensor | None = None,
         bias: gs.Tensor | None = None, geom: dict | None = None, group: int = 1) -> gs.Node:
    """A Conv node ``name`` with weight initializer ``<name>.weight``; a fresh output tensor unless ``out``."""
    attrs = {"kernel_shape": [int(k) for k in weight.shape[2:]], **(geom or {})}
    if group != 1:
        attrs["group"] = int(group)
    w = new_const(graph, f"{name}.weight", weight)
    y = out if out is not None else new_var(graph, f"{name}.out")
    return new_node(graph, "Conv", name, [x, w] + ([bias] if bias is not None else []), [y], attrs)


def bias_input(graph: gs.Graph, node: gs.Node, lf: LayerFactors, layer: OnnxLayer) -> gs.Tensor | None:
    """The bias of the last factor: the factors' own bias if they carry one, else the original bias tensor."""
    b = bias_vector(node, lf, layer.shape.out_features, layer.weight_array.dtype)
    if b is not None:
        return new_const(graph, f"{node.name}.bias", b)
    return node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
