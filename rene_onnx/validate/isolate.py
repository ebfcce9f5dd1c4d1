"""Per-layer latency from isolated sub-models: each dense node and each factorized chain timed on its own.

Why: onnxruntime's profiler times a node on the host. On the CPU provider
that is the node's work; on CUDA (and TensorRT) a kernel is only *launched*
there and runs later on the GPU, so per-node profiles say little about which
chain is faster. Here every layer of the original graph (its dense node) and
of the rewritten graph (its chain of factor nodes) is cut out into a model of
its own, fed the layer's real input activation (from one CPU run of the
original on the given feeds), and all of them are timed interleaved in one
torch-free worker run (:func:`rene_onnx.validate.latency.measure_latency`),
on GPUs with inputs and outputs kept on the device (I/O binding). The time of
a sub-model includes its own launches, which a layer pays inside the whole
model too.

No torch here.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from rene_onnx.graph import load_model
from .latency import measure_latency
from .numerics import feeds_from, make_session


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def _with_constants(graph: onnx.GraphProto, names: Sequence[str]) -> list[onnx.NodeProto]:
    """The named nodes, preceded by the ``Constant`` nodes they read (weights may be ``Constant`` nodes)."""
    by_name = {n.name: n for n in graph.node}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"nodes {missing} are not in graph {graph.name!r}")
    producer = _producers(graph)
    picked = [by_name[n] for n in names]
    seen = {id(n) for n in picked}
    consts: list[onnx.NodeProto] = []
    for n in picked:
        for i in n.input:
            p = producer.get(i)
            if p is not None and p.op_type == "Constant" and id(p) not in seen:
                seen.add(id(p))
                consts.append(p)
    return consts + picked


def _boundary(nodes: Sequence[onnx.NodeProto], initializers: set[str]) -> tuple[list[str], list[str]]:
    """(external inputs, outputs) of a node set: read but not made inside, and made but not read inside."""
    made = [o for n in nodes for o in n.output if o]
    read = [i for n in nodes for i in n.input if i]
    made_set, read_set = set(made), set(read)
    inputs = list(dict.fromkeys(i for i in read if i not in made_set and i not in initializers))
    outputs = [o for o in made if o not in read_set]
    return inputs, outputs


def submodel(model: onnx.ModelProto, node_names: Sequence[str], activations: Mapping[str, np.ndarray]
             ) -> onnx.ModelProto:
    """A model of the named nodes alone (plus the ``Constant`` nodes and initializers they read).

    Its inputs are the tensors the nodes read from outside, typed and shaped
    by ``activations`` (which must hold each of them); its outputs are the
    tensors they make that none of them reads, typed like the first input.
    Opsets and IR version are the source model's.
    """
    graph = model.graph
    nodes = _with_constants(graph, node_names)
    inits = {t.name: t for t in graph.initializer}
    inputs, outputs = _boundary(nodes, set(inits))
    lacking = [i for i in inputs if i not in activations]
    if lacking:
        raise ValueError(f"no activation given for the sub-model inputs {lacking}")
    used = {i for n in nodes for i in n.input}
    in_vi = [helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(activations[i].dtype),
                                           list(activations[i].shape)) for i in inputs]
    # Conv / Gemm / MatMul (and their factor chains) give the dtype they read
    out_vi = [helper.make_tensor_value_info(o, in_vi[0].type.tensor_type.elem_type, None) for o in outputs]
    g = helper.make_graph(nodes, f"{graph.name}_part", in_vi, out_vi, [t for k, t in inits.items() if k in used])
    sub = helper.make_model(g, opset_imports=list(model.opset_import), producer_name="rene-onnx isolate")
    sub.ir_version = model.ir_version
    try:  # output shapes, where shape inference knows them (the checker's full_check wants them)
        inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(sub).graph.output}
    except Exception:  # an op the inference does not know: outputs stay typed but unshaped
        inferred = {}
    for vi in sub.graph.output:
        known = inferred.get(vi.name)
        if known is not None and known.type.tensor_type.HasField("shape"):
            vi.CopyFrom(known)
    return sub


def layer_inputs(model: onnx.ModelProto, node_names: Sequence[str], feeds: Mapping[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
    """``{tensor: array}`` for every tensor the named nodes read from outside, from one CPU run on ``feeds``.

    The intermediate tensors become extra graph outputs of a copy of ``model``;
    graph inputs are taken from ``feeds`` directly.
    """
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    wanted: list[str] = []
    for name in node_names:
        nodes = _with_constants(graph, [name])
        wanted += _boundary(nodes, inits)[0]
    wanted = list(dict.fromkeys(wanted))
    out = {k: np.asarray(feeds[k]) for k in wanted if k in feeds}
    inner = [k for k in wanted if k not in out]
    if inner:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        probe.graph.output.extend(helper.make_empty_tensor_value_info(k) for k in inner)
        sess = make_session(probe, "cpu")
        names = [i.name for i in sess.get_inputs()]
        arrays = sess.run(inner, {k: feeds[k] for k in names})
        out.update(zip(inner, arrays))
    return out


def isolated_layer_latency(
    original: onnx.ModelProto | str | os.PathLike,
    compressed: onnx.ModelProto | str | os.PathLike,
    layer_nodes: Mapping[str, "tuple[str, Sequence[str]]"],
    feeds: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    provider: str = "cpu",
    repeats: int = 20,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    warmup: int = 3,
    threads: int | None = None,
    device_io: bool | None = None,
    timeout_s: float | None = None,
) -> dict[str, tuple[float, float]]:
    """``{layer: (us_dense, us_factorized)}``: median time of each layer's dense node and of its chain, isolated.

    ``layer_nodes``: ``{layer: (original node, [new nodes])}``. ``feeds``: the
    original's inputs (dict or ``.npz``; random from ``input_shapes`` when
    ``None``). ``device_io`` (default: on for GPU providers) keeps sub-model
    inputs and outputs on the device.
    """
    original, compressed = load_model(original), load_model(compressed)
    feeds = feeds_from(feeds, original, input_shapes)
    layers = {str(k): (str(o), [str(n) for n in new]) for k, (o, new) in layer_nodes.items()}
    if not layers:
        return {}
    acts = layer_inputs(original, [o for o, _ in layers.values()], feeds)
    with tempfile.TemporaryDirectory(prefix="rene-isolate-") as tmp:
        paths = []
        for i, (orig, new) in enumerate(layers.values()):
            for side, (model, names) in enumerate(((original, [orig]), (compressed, new))):
                p = os.path.join(tmp, f"layer{i}_{side}.onnx")
                onnx.save(submodel(model, names, acts), p)
                paths.append(p)
        npz = os.path.join(tmp, "acts.npz")
        np.savez(npz, **acts)
        lat = measure_latency(paths, npz, provider=provider, warmup=warmup, repeats=repeats, threads=threads,
                              device_io=provider != "cpu" if device_io is None else device_io, timeout_s=timeout_s)
    us = [t.median_ms * 1000.0 for t in lat]
    return {layer: (us[2 * i], us[2 * i + 1]) for i, layer in enumerate(layers)}
