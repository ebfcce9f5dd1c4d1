"""The driver: apply the factor passes to a model and write dense updates.

The input model is never modified: the work happens on a copy. Nodes that no
pass touched are written back as their original protos (attributes, doc
strings, subgraphs unchanged); model and graph fields (ir_version, opsets,
metadata, graph inputs / outputs) are kept, except that a removed weight
that was also listed as a graph input (old exporters' overridable
initializers) leaves the inputs with it; value_info is kept for tensors
that still exist; initializers are kept unless a rewrite left them unread
(initializers that were already unread before stay too).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from rene_onnx.plan import LayerFactors

from .base import PassRecord, remove_node, remove_orphans
from .layers import LAYER_OPS, analyze, node_keys
from .registry import find_pass, methods_for

Progress = Callable[[PassRecord], None]


def apply_factors(model: onnx.ModelProto, layers: dict[str, LayerFactors],
                  dense_updates: dict[str, np.ndarray] | None = None,
                  progress: Progress | None = None) -> tuple[onnx.ModelProto, list[PassRecord]]:
    """Rewrite the nodes named in ``layers`` (keyed by ONNX node name) from their factors.

    ``dense_updates`` maps initializer (or ``Constant`` output) names to new
    values of the same shape, cast to the stored dtype; updates to tensors a
    rewrite removed are dropped. Returns a new model and one
    :class:`PassRecord` per requested node, in the order of ``layers``.
    Raises ``ValueError`` for an unknown node name, a node that is not a
    layer, factor arrays that do not fit the node, or a bad dense update.
    """
    if not isinstance(model, onnx.ModelProto):
        raise ValueError(f"apply_factors expects an onnx.ModelProto, got {type(model).__name__}")
    for key, lf in layers.items():
        if not isinstance(lf, LayerFactors):
            raise ValueError(f"layers[{key!r}] must be a LayerFactors, got {type(lf).__name__}")
    updates = _checked_updates(model, dense_updates or {})
    work = onnx.ModelProto()
    work.CopyFrom(model)
    graph = gs.import_onnx(work)
    origin = {id(n): (n, p) for n, p in zip(graph.nodes, work.graph.node)}
    by_key = dict(zip(node_keys(graph.nodes), graph.nodes))
    missing = [k for k in layers if k not in by_key]
    if missing:
        raise ValueError(f"no node named {', '.join(map(repr, missing[:5]))} in the graph "
                         f"(layers are keyed by ONNX node name; see find_layers)")
    not_layers = [f"{k!r} ({by_key[k].op})" for k in layers if by_key[k].op not in LAYER_OPS]
    if not_layers:
        raise ValueError(f"not a Conv / ConvTranspose / Gemm / MatMul node: {', '.join(not_layers[:5])}")
    records = []
    for key, lf in layers.items():
        rec = _apply_one(graph, by_key[key], key, lf)
        records.append(rec)
        if progress is not None:
            progress(rec)
    out = _export(graph, work, origin)
    _write_updates(out, updates)
    return out, records


def _apply_one(graph: gs.Graph, node: gs.Node, key: str, lf: LayerFactors) -> PassRecord:
    def skipped(reason: str) -> PassRecord:
        return PassRecord(key, node.op, lf.method, "skipped", reason, [])

    if lf.method == "dense":
        return skipped("the plan keeps this layer dense")
    reason = analyze(node).skip_reason
    if reason:
        return skipped(reason)
    p = find_pass(node.op, lf.method)
    if p is None:
        return skipped(f"no pass rewrites {node.op} with {lf.method} (available: {', '.join(methods_for(node.op))})")
    reason = p.check(graph, node, lf)
    if reason:
        return skipped(reason)
    node.name = key  # new names derive from it; unique even when the original name was empty or shared
    old_inputs = list(node.inputs)
    new_nodes = p.rewrite(graph, node, lf)
    idx = remove_node(graph, node)
    graph.nodes[idx:idx] = new_nodes  # the old node's place keeps the graph topologically sorted
    remove_orphans(graph, old_inputs)
    return PassRecord(key, node.op, lf.method, "factorized", "", [n.name for n in new_nodes])


# ------------------------------------------------------------------------------------------------ export


def _export(graph: gs.Graph, original: onnx.ModelProto, origin: dict) -> onnx.ModelProto:
    nodes = []
    for n in graph.nodes:
        entry = origin.get(id(n))
        if entry is not None and entry[0] is n:
            proto = onnx.NodeProto()
            proto.CopyFrom(entry[1])
            for field, tensors in ((proto.input, n.inputs), (proto.output, n.outputs)):
                names = [t.name for t in tensors]
                if list(field) != names:
                    del field[:]
                    field.extend(names)
            nodes.append(proto)
        else:
            nodes.append(OnnxExporter.export_node(n))
    og = original.graph
    outputs = {o.name for o in og.output}
    used_before = _referenced(og.node) | outputs
    used_after = _referenced(nodes) | outputs
    produced = {o for n in nodes for o in n.output} | {i.name for i in og.input}
    keep = lambda name: name in used_after or name not in used_before  # noqa: E731
    orig_inits = {t.name for t in og.initializer} | {t.values.name for t in og.sparse_initializer}
    new_inits, seen = [], set()
    for n in graph.nodes:
        for t in n.inputs:
            if isinstance(t, gs.Constant) and t.name not in orig_inits and t.name not in seen:
                seen.add(t.name)
                new_inits.append(numpy_helper.from_array(np.asarray(t.values), t.name))

    out = onnx.ModelProto()
    out.CopyFrom(original)
    g = out.graph
    del g.node[:]
    g.node.extend(nodes)
    inits = [t for t in og.initializer if keep(t.name)] + new_inits
    dropped = {t.name for t in og.initializer} - {t.name for t in inits}
    del g.initializer[:]
    g.initializer.extend(inits)
    if any(i.name in dropped for i in g.input):  # IR < 4 style: the initializer was also listed as an input
        kept_inputs = [i for i in og.input if i.name not in dropped]
        del g.input[:]
        g.input.extend(kept_inputs)
    sparse = [t for t in og.sparse_initializer if keep(t.values.name)]
    del g.sparse_initializer[:]
    g.sparse_initializer.extend(sparse)
    vi = [v for v in og.value_info if v.name in produced or v.name in used_after]
    del g.value_info[:]
    g.value_info.extend(vi)
    qa = [q for q in og.quantization_annotation if q.tensor_name in used_after or q.tensor_name in produced]
    del g.quantization_annotation[:]
    g.quantization_annotation.extend(qa)
    return out


def _referenced(nodes) -> set[str]:
    """Every tensor name a node (or a subgraph of it, outer-scope references included) reads."""
    names: set[str] = set()
    for n in nodes:
        names.update(i for i in n.input if i)
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                        a.graphs if a.type == onnx.AttributeProto.GRAPHS else []):
                names |= _referenced(sub.node) | {o.name for o in sub.output}
    return names


# ---------------------------------------------------------------------------------------------- dense


def _dense_targets(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    targets = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1:
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    targets.setdefault(n.output[0], a.t)
    return targets


def _checked_updates(model: onnx.ModelProto, updates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate every update against the stored tensor (shape, dtype kind, finite); cast to its dtype."""
    targets = _dense_targets(model)
    out = {}
    for name, value in updates.items():
        t = targets.get(name)
        if t is None:
            raise ValueError(f"dense update {name!r}: no initializer or Constant of that name in the graph")
        value = np.asarray(value)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        if tuple(value.shape) != tuple(t.dims):
            raise ValueError(f"dense update {name!r}: shape {list(value.shape)} does not match the stored "
                             f"shape {list(t.dims)}")
        if not np.can_cast(value.dtype, dtype, casting="same_kind"):
            raise ValueError(f"dense update {name!r}: dtype {value.dtype} cannot be written into {dtype}")
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise ValueError(f"dense update {name!r}: holds NaN or Inf")
        out[name] = value.astype(dtype)
    return out


def _write_updates(model: onnx.ModelProto, updates: dict[str, np.ndarray]) -> None:
    if not updates:
        return
    for t in model.graph.initializer:
        if t.name in updates:
            t.CopyFrom(numpy_helper.from_array(updates[t.name], t.name))
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] in updates:
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    a.t.CopyFrom(numpy_helper.from_array(updates[n.output[0]], a.t.name))
