"""Find the layers a pass could rewrite: every Conv / ConvTranspose / Gemm / MatMul node.

:func:`analyze` is the single place that reads a node's weight, bias, geometry
and says why no pass can rewrite it (the structural ``skip_reason``); the
passes' ``check`` functions and :func:`find_layers` both call it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from rene_onnx.decompose.ranks import LayerShape, supported_methods

from .base import DEFAULT_DOMAINS, constant_value, prod

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class OnnxLayer:
    """One Conv / ConvTranspose / Gemm / MatMul node of an ONNX graph.

    ``weight_array`` is the weight as stored in the graph (ONNX layout: a
    MatMul ``x @ W`` weight is ``(in, out)``); :meth:`torch_weight` gives the
    torch layout ``(out, in[, k..])`` that the factors refer to.
    ``weight_side`` says which input holds the weight: ``"right"`` (Conv W,
    Gemm B, ``x @ W``) or ``"left"`` (Gemm A, ``W @ x``).
    """

    name: str  # the node key: its ONNX name (``<op>#<index>`` if it has none or shares it)
    op_type: str
    weight: str | None  # weight tensor name
    bias: str | None  # bias tensor name (Conv B, Gemm C, or the constant of an Add right after a MatMul)
    weight_array: np.ndarray | None = field(repr=False)
    weight_is_constant: bool
    skip_reason: str | None  # why no pass can rewrite this node; None if some pass can
    weight_side: str = "right"
    attrs: dict[str, Any] = field(default_factory=dict)
    shape: LayerShape | None = None  # for counting (positions from shape inference when known, else 1)
    index: int = -1  # position in graph.node

    @property
    def methods(self) -> tuple[str, ...]:
        """Decomposition methods a pass can apply to this node."""
        if self.skip_reason or self.shape is None:
            return ()
        return supported_methods(self.shape)

    def torch_weight(self) -> np.ndarray | None:
        """The weight in torch layout: ``(out, in, k..)`` for a conv, ``(out, in)`` for a matrix layer."""
        w = self.weight_array
        if w is None or self.op_type in ("Conv", "ConvTranspose") or w.ndim != 2:
            return w
        if self.op_type == "Gemm":
            flag = self.attrs.get("transB", 0) if self.weight_side == "right" else self.attrs.get("transA", 0)
            # right: B' = B^T if transB (torch layout is B' transposed); left: A' = A^T if transA
            if self.weight_side == "right":
                return w if flag else w.T
            return w.T if flag else w
        return w.T if self.weight_side == "right" else w  # MatMul


def node_keys(nodes: list[gs.Node]) -> list[str]:
    """The key of each node: its name when non-empty and unique, else ``<name or op>#<index>``."""
    counts = Counter(n.name for n in nodes)
    return [n.name if n.name and counts[n.name] == 1 else f"{n.name or n.op}#{i}" for i, n in enumerate(nodes)]


def analyze(node: gs.Node, shapes: dict[str, list] | None = None) -> OnnxLayer:
    """Weight, bias, layer shape and the structural skip reason of one layer node."""
    if node.op not in LAYER_OPS or node.domain not in DEFAULT_DOMAINS:
        raise ValueError(f"node {node.name!r} ({node.op}) is not a Conv / ConvTranspose / Gemm / MatMul")
    if node.op in ("Conv", "ConvTranspose"):
        return _analyze_conv(node, shapes or {})
    if node.op == "Gemm":
        return _analyze_gemm(node)
    return _analyze_matmul(node, shapes or {})


def find_layers(model: onnx.ModelProto) -> list[OnnxLayer]:
    """Every Conv / ConvTranspose / Gemm / MatMul node of the main graph, in graph order.

    ``model`` is not modified. Spatial sizes for :attr:`OnnxLayer.shape` come
    from ONNX shape inference (a copy of the model) where it succeeds.
    """
    if not isinstance(model, onnx.ModelProto):
        raise ValueError(f"find_layers expects an onnx.ModelProto, got {type(model).__name__}")
    graph = gs.import_onnx(model)
    shapes = _inferred_shapes(model)
    out = []
    for i, (key, node) in enumerate(zip(node_keys(graph.nodes), graph.nodes)):
        if node.op in LAYER_OPS and node.domain in DEFAULT_DOMAINS:
            layer = analyze(node, shapes)
            layer.name, layer.index = key, i
            out.append(layer)
    return out


# --------------------------------------------------------------------------------------------- per op


def _input(node: gs.Node, i: int) -> gs.Tensor | None:
    if len(node.inputs) > i and node.inputs[i].name:
        return node.inputs[i]
    return None


def _runtime(t: gs.Tensor) -> str:
    return f"weight {t.name!r} is computed at run time (not an initializer or Constant)"


def _analyze_conv(node: gs.Node, shapes: dict[str, list]) -> OnnxLayer:
    w_t, b_t = _input(node, 1), _input(node, 2)
    w = constant_value(w_t)
    group = int(node.attrs.get("group", 1))
    reason = None
    shape = None
    if node.op == "ConvTranspose":
        reason = "ConvTranspose is not rewritten by any pass"
    elif w_t is None:
        reason = "Conv has no weight input"
    elif w is None:
        reason = _runtime(w_t)
    elif w.ndim == 5:
        reason = "Conv 3-D is not supported (only 1-D and 2-D convs are rewritten)"
    elif w.ndim not in (3, 4):
        reason = f"Conv with a {w.ndim}-D weight is not supported (only 1-D and 2-D convs are rewritten)"
    elif group < 1 or w.shape[0] % group:
        reason = f"Conv group={group} does not divide its {w.shape[0]} output channels"
    if w is not None and w.ndim >= 3 and node.op == "Conv" and group >= 1 and w.shape[0] % group == 0:
        pin, pout = _spatial(shapes, _input(node, 0)), _spatial(shapes, node.outputs[0] if node.outputs else None)
        shape = LayerShape(int(w.shape[0]), int(w.shape[1]) * group, tuple(int(k) for k in w.shape[2:]), group,
                           b_t is not None, pin, pout)
    return OnnxLayer("", node.op, w_t.name if w_t is not None else None, b_t.name if b_t is not None else None,
                     w, w is not None, reason, "right", dict(node.attrs), shape)


def _analyze_gemm(node: gs.Node) -> OnnxLayer:
    a_t, b_t, c_t = _input(node, 0), _input(node, 1), _input(node, 2)
    av, bv = constant_value(a_t), constant_value(b_t)
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    side, w_t, w, reason, shape = "right", b_t, bv, None, None
    if bv is None and av is not None:
        side, w_t, w = "left", a_t, av
    if w is None:
        reason = _runtime(b_t) if b_t is not None else "Gemm has no weight input"
    elif w.ndim != 2:
        reason = f"Gemm weight must be 2-D, got shape {list(w.shape)}"
    else:
        if side == "right":
            out, inp = (w.shape[0], w.shape[1]) if tb else (w.shape[1], w.shape[0])
        else:
            out, inp = (w.shape[1], w.shape[0]) if ta else (w.shape[0], w.shape[1])
        shape = LayerShape(int(out), int(inp), (), 1, c_t is not None, 1, 1)
    return OnnxLayer("", node.op, w_t.name if w_t is not None else None, c_t.name if c_t is not None else None,
                     w, w is not None, reason, side, dict(node.attrs), shape)


def _analyze_matmul(node: gs.Node, shapes: dict[str, list]) -> OnnxLayer:
    a_t, b_t = _input(node, 0), _input(node, 1)
    av, bv = constant_value(a_t), constant_value(b_t)
    reason, shape, bias = None, None, None
    if bv is not None and bv.ndim == 2:
        side, w_t, w, x_t = "right", b_t, bv, a_t
    elif av is not None and av.ndim == 2:
        side, w_t, w, x_t = "left", a_t, av, b_t
    elif bv is not None or av is not None:
        side, w_t, w, x_t = ("right", b_t, bv, a_t) if bv is not None else ("left", a_t, av, b_t)
        reason = f"MatMul constant weight must be 2-D, got shape {list(w.shape)}"
    else:
        side, w_t, w, x_t = "right", b_t, None, a_t
        reason = _runtime(b_t) if b_t is not None else "MatMul has no weight input"
    if reason is None:
        out, inp = (w.shape[1], w.shape[0]) if side == "right" else (w.shape[0], w.shape[1])
        bias = _bias_add(node, side, int(out))
        pos = _matmul_positions(shapes.get(x_t.name) if x_t is not None else None, side)
        shape = LayerShape(int(out), int(inp), (), 1, bias is not None, pos, pos)
    return OnnxLayer("", node.op, w_t.name if w_t is not None else None, bias.name if bias is not None else None,
                     w, w is not None, reason, side, dict(node.attrs), shape)


def bias_add(node: gs.Node, layer: OnnxLayer) -> tuple[gs.Node, int] | None:
    """The ``Add`` right after a MatMul that adds the layer's bias, and which of its inputs is the bias."""
    if node.op != "MatMul" or layer.shape is None:
        return None
    t = _bias_add(node, layer.weight_side, layer.shape.out_features)
    if t is None:
        return None
    add = node.outputs[0].outputs[0]
    return add, next(i for i, x in enumerate(add.inputs) if x is t)


def _bias_add(node: gs.Node, side: str, out: int) -> gs.Tensor | None:
    if len(node.outputs) != 1 or len(node.outputs[0].outputs) != 1:
        return None
    y = node.outputs[0]
    add = y.outputs[0]
    if add.op != "Add" or add.domain not in DEFAULT_DOMAINS or len(add.inputs) != 2:
        return None
    other = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
    v = constant_value(other)
    if v is None or v.size != out or v.ndim == 0:
        return None
    dims = list(v.shape)
    if side == "right":
        ok = dims[-1] == out  # (out,), (1, out), (1, 1, out)...
    else:
        ok = v.ndim >= 2 and dims[-2] == out and dims[-1] == 1  # (out, 1), (1, out, 1)...
    return other if ok else None


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is only a nicety here (positions for counting)
        return {}
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


def _spatial(shapes: dict[str, list], t: gs.Tensor | None) -> int:
    dims = shapes.get(t.name) if t is not None else None
    if dims is None and t is not None and t.shape is not None:
        dims = [d if isinstance(d, int) else None for d in t.shape]
    if not dims or len(dims) < 3 or any(d is None for d in dims[2:]):
        return 1
    return prod(dims[2:])


def _matmul_positions(dims: list | None, side: str) -> int:
    """Tokens per sample: ``x @ W`` on (B, .., T, K) -> prod of the middle dims; ``W @ x`` on (.., K, N) -> N * ..."""
    if not dims:
        return 1
    if side == "right":
        mid = dims[1:-1] if len(dims) >= 3 else []  # (B, .., K): dim 0 is the batch
    elif len(dims) == 1:
        mid = []
    else:
        mid = (dims[1:-2] if len(dims) >= 3 else []) + dims[-1:]  # (B, .., K, N) or (K, N)
    if any(d is None for d in mid):
        return 1
    return prod(mid) if mid else 1
