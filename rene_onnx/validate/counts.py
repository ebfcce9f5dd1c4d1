"""Parameters and MACs of an ONNX graph, counted the paper's way.

MACs (multiply-accumulates) are counted for Conv, ConvTranspose, Gemm and
MatMul only, with bias adds excluded, at the shapes that shape inference
gives once the graph inputs are static (a symbolic batch dim becomes 1; other
symbolic dims come from ``input_shapes``). Inference runs on a copy whose
graph inputs carry the static dims and whose stored ``value_info`` / output
shapes are dropped (exporters store symbolic ones, which inference would
keep). Where inference still loses a dim that a MAC count needs (a dynamic
transformer export: the batch dim is lost inside the embeddings' Slice /
Expand of a position-id table), the graph is run once in onnxruntime at
those static input shapes with the needed tensors as extra outputs
(``numerics.input_feeds`` data: integer inputs get valid indices), and their
real shapes are used:

- Conv: ``prod(Y) * Cin/group * prod(kernel)`` = N * Cout * prod(out spatial) * Cin/group * prod(kernel)
- ConvTranspose: ``prod(X) * Cout/group * prod(kernel)`` (every input element meets a kernel)
- Gemm: ``M * N * K``
- MatMul: ``prod(batch) * M * N * K`` = ``prod(Y) * K``, whether the weight is a constant or not

Parameters are the element counts of all floating-point initializers plus
floating-point ``Constant`` node tensors (int64 shape constants and the like
are not parameters), plus integer initializers that a ``DequantizeLinear``
reads as its data (the quantized weights and biases of an INT8 QDQ model). A node's own ``params`` are those of its constant inputs.
Nodes inside control-flow subgraphs (If / Loop / Scan) are not visited.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import onnx
from onnx import TensorProto

from rene_onnx.graph import load_model, resolve_input_shapes, with_static_inputs

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

FLOAT_TYPES = frozenset(
    getattr(TensorProto, n)
    for n in (
        "FLOAT", "FLOAT16", "DOUBLE", "BFLOAT16",
        "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT4E2M1", "FLOAT8E8M0",
    )
    if hasattr(TensorProto, n)
)


@dataclass
class NodeCount:
    op_type: str
    params: int
    macs: int


@dataclass
class OnnxCounts:
    params: int
    macs: int
    per_node: dict[str, NodeCount] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def count_onnx(
    model: onnx.ModelProto | str | os.PathLike,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> OnnxCounts:
    """Count parameters and MACs of ``model`` (see the module docstring for the convention).

    ``per_node`` holds every node that has MACs or constant float inputs,
    keyed by node name (an unnamed node is keyed ``"<op_type>_<index>"``).
    Raises ``ValueError`` when a dim that a MAC count needs stays symbolic.
    """
    model = load_model(model)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    shapes = resolve_input_shapes(model, input_shapes, strict=False)
    model = _without_stored_shapes(with_static_inputs(model, shapes))
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:
        raise ValueError(f"ONNX shape inference failed: {e}") from e
    graph = inferred.graph
    dims = _shape_table(graph)
    unknown = [t for t in _mac_tensors(graph) if not _is_static(dims.get(t))]
    if unknown and all(_is_static(d) for d in shapes.values()):
        dims.update(_run_shapes(model, inferred, unknown, shapes))

    const_numel: dict[str, int] = {}  # float constant tensor name -> element count
    total_params = 0
    dequantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input}
    for t in graph.initializer:
        if t.data_type in FLOAT_TYPES or t.name in dequantized:
            const_numel[t.name] = math.prod(t.dims)
            total_params += const_numel[t.name]
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            n = _constant_float_numel(node)
            if n:
                const_numel[node.output[0]] = n
                total_params += n

    per_node: dict[str, NodeCount] = {}
    total_macs = 0
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        name = node.name or f"{node.op_type}_{i}"
        params = sum(const_numel.get(x, 0) for x in node.input if x)
        macs = _node_macs(node, name, dims) if node.domain in ("", "ai.onnx") and node.op_type in MAC_OPS else 0
        total_macs += macs
        if macs or params or node.op_type in MAC_OPS:
            per_node[name] = NodeCount(node.op_type, params, macs)
    return OnnxCounts(total_params, total_macs, per_node)


def _without_stored_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (a copy already) without intermediate ``value_info`` and without output shapes (types kept)."""
    del model.graph.value_info[:]
    for vi in model.graph.output:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    return model


def _is_static(d) -> bool:
    return d is not None and all(isinstance(x, int) and x > 0 for x in d)


def _mac_tensors(graph: onnx.GraphProto) -> list[str]:
    """The tensors whose shapes the MAC formulas read, in node order, without repeats."""
    want = {"Conv": lambda n: (n.output[0], n.input[1]), "ConvTranspose": lambda n: (n.input[0], n.input[1]),
            "Gemm": lambda n: (n.input[0], n.input[1]), "MatMul": lambda n: (n.input[0], n.output[0])}
    out: dict[str, None] = {}
    for node in graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in want and len(node.input) > 1:
            out.update(dict.fromkeys(want[node.op_type](node)))
    return list(out)


def _run_shapes(model: onnx.ModelProto, inferred: onnx.ModelProto, names: list[str],
                shapes: Mapping[str, list]) -> dict[str, list[int]]:
    """Shapes of ``names`` from one onnxruntime run at the static input ``shapes`` ({} if it cannot run)."""
    import numpy as np
    import onnxruntime as ort

    from .numerics import input_feeds

    types = {vi.name: vi.type for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {vi.name for vi in m.graph.output}
    for name in names:
        if name not in have:
            vi = m.graph.output.add()
            vi.name = name
            if name in types and types[name].tensor_type.elem_type:
                vi.type.tensor_type.elem_type = types[name].tensor_type.elem_type
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feeds = input_feeds(m, {k: tuple(v) for k, v in shapes.items()})
        values = sess.run(names, feeds)
    except Exception:  # the counting error below names the tensor whose shape stayed unknown
        return {}
    return {n: list(np.shape(v)) for n, v in zip(names, values)}


def _constant_float_numel(node: onnx.NodeProto) -> int:
    for a in node.attribute:
        if a.name == "value" and a.t.data_type in FLOAT_TYPES:
            return math.prod(a.t.dims)
        if a.name == "sparse_value" and a.sparse_tensor.values.data_type in FLOAT_TYPES:
            return math.prod(a.sparse_tensor.values.dims)
        if a.name == "value_float":
            return 1
        if a.name == "value_floats":
            return len(a.floats)
    return 0


def _shape_table(graph: onnx.GraphProto) -> dict[str, list[int | str | None]]:
    table: dict[str, list[int | str | None]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            table[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    for t in graph.initializer:
        table[t.name] = list(t.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    table[node.output[0]] = list(a.t.dims)
    return table


def _static(dims: Mapping[str, list], name: str, tensor: str, op: str) -> list[int]:
    d = dims.get(tensor)
    if d is None:
        raise ValueError(
            f"node {name!r} ({op}): shape of {tensor!r} is unknown after shape inference; "
            f"pass input_shapes with static shapes for the graph inputs"
        )
    if not all(isinstance(x, int) and x > 0 for x in d):
        shown = ", ".join("?" if x is None else str(x) for x in d)
        raise ValueError(
            f"node {name!r} ({op}): {tensor!r} has symbolic shape [{shown}]; "
            f"pass input_shapes with static shapes for the graph inputs"
        )
    return d


def _node_macs(node: onnx.NodeProto, name: str, dims: Mapping[str, list]) -> int:
    op = node.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if op == "Conv":
        y = _static(dims, name, node.output[0], op)
        w = _static(dims, name, node.input[1], op)
        return math.prod(y) * math.prod(w[1:])
    if op == "ConvTranspose":
        x = _static(dims, name, node.input[0], op)
        w = _static(dims, name, node.input[1], op)
        return math.prod(x) * math.prod(w[1:])
    if op == "Gemm":
        a = _static(dims, name, node.input[0], op)
        b = _static(dims, name, node.input[1], op)
        m, k = (a[1], a[0]) if attrs.get("transA", 0) else (a[0], a[1])
        n = b[0] if attrs.get("transB", 0) else b[1]
        return m * n * k
    # MatMul: every output element is a K-long dot product
    a = _static(dims, name, node.input[0], op)
    y = _static(dims, name, node.output[0], op)
    return math.prod(y) * a[-1]
