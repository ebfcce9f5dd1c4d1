"""Stage 4 of the pipeline: the ORIGINAL ONNX graph rewritten from the student's factors.

The one place of the rewrite: the student's factors and updated dense weights
(:func:`rene_onnx.engine.layers.collect_factors`) are keyed by ONNX node (the handle's layer map),
dense updates are mapped to ONNX tensor names (:func:`onnx_dense_updates`), the passes
(:mod:`rene_onnx.passes`) rewrite the graph, and -- latency-aware -- a layer whose chain is not
faster on the provider is written back dense with the weight its factors represent
(:func:`latency_aware_rewrite`; the timing itself is :mod:`rene_onnx.validate.latency_aware`'s).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from torch import nn

from rene_onnx.config import ValidateConfig
from rene_onnx.errors import RewriteError
from rene_onnx.graph import Constants, load_model
from rene_onnx.load import ModelHandle
from rene_onnx.plan import Factors
from rene_onnx.validate.latency_aware import LayerTimes, layer_latency, layer_nodes_from_records, slower_layers


@dataclass
class Rewritten:
    model: onnx.ModelProto
    records: list  # passes.PassRecord per requested node
    factors: Factors
    layer_times: dict[str, tuple] = field(default_factory=dict)  # layer -> (us dense, us factorized), if profiled
    kept_dense: dict[str, str] = field(default_factory=dict)  # layer -> why its factors were not used (latency)


def rewrite(handle: ModelHandle, student: nn.Module, latency_aware: ValidateConfig | None = None) -> Rewritten:
    """Rewrite the ORIGINAL ONNX graph from the student's factors and updated dense weights.

    With ``latency_aware`` (a ValidateConfig: provider, repeats), every layer's dense node and
    factorized chain are profiled on onnxruntime, and a layer whose chain is not faster is kept
    dense -- with the weight its factors represent, and ``student`` is changed the same way
    (``densify_``) so torch and ONNX still compute the same function.
    """
    from rene_onnx.engine.layers import collect_factors, densify_

    out = rewrite_factors(handle, collect_factors(handle.deployable(student), buffers=True), latency_aware)
    if out.kept_dense:
        densify_(student, list(out.kept_dense))
    return out


def rewrite_factors(handle: ModelHandle, factors: Factors, latency_aware: ValidateConfig | None = None) -> Rewritten:
    """Rewrite the ORIGINAL ONNX graph from ``factors`` (keyed by layer name; ``dense``: torch parameter names).

    Latency-aware as :func:`rewrite`; a layer kept dense for speed is dropped from ``factors.layers`` and
    named in ``kept_dense``.
    """
    from rene_onnx import passes

    by_node, layer_of = {}, {}
    for name, lf in factors.layers.items():
        ref = handle.layer_map.get(name)
        if ref is None:
            raise RewriteError(f"layer {name} is not in the ONNX graph: {handle.unmapped.get(name, 'unmapped')}")
        by_node[ref.node] = lf
        layer_of[ref.node] = name
    dense = onnx_dense_updates(handle, factors.dense)
    times: dict[str, tuple] = {}
    kept: dict[str, str] = {}
    if latency_aware is not None and by_node:
        res = latency_aware_rewrite(handle.onnx_model, by_node, dense, handle.feeds(handle.example_input()),
                                    latency_aware.provider, repeats=latency_aware.profile_repeats)
        model, records = res.model, res.records
        times = {layer_of[n]: t for n, t in res.times.items() if n in layer_of}
        for node in res.kept_dense:
            us_dense, us_fact = res.times[node]
            kept[layer_of[node]] = (f"kept dense: the factorized chain is not faster on {latency_aware.provider} "
                                    f"({us_fact:.0f} us vs {us_dense:.0f} us dense)")
        for name in kept:
            factors.layers.pop(name)
    else:
        model, records = passes.apply_factors(handle.onnx_model, by_node, dense)
    failed = [r for r in records if r.status != "factorized"]
    if failed:
        r = failed[0]
        raise RewriteError(f"could not rewrite {r.node} ({r.op_type}): {r.reason}")
    return Rewritten(model, records, factors, times, kept)


def onnx_dense_updates(handle: ModelHandle, dense: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``Factors.dense`` (torch names) -> ``apply_factors``' dense updates (ONNX tensor names).

    ``param_map`` entries, plus the weight of every dense layer whose ONNX
    weight is the torch weight transposed (``OnnxRef.transposed``: MatMul,
    Gemm with transB=0), which ``param_map`` cannot express: written back
    transposed, unless that ONNX tensor is shared with another layer.
    """
    out = {handle.param_map[k]: np.asarray(v) for k, v in dense.items() if k in handle.param_map}
    consts = Constants(handle.onnx_model)
    roots = {name: consts.root(ref.weight) for name, ref in handle.layer_map.items() if ref.weight}
    uses = Counter(roots.values())
    for name, ref in handle.layer_map.items():
        value = dense.get(f"{name}.weight")
        root = roots.get(name)
        if ref.transposed and value is not None and root and uses[root] == 1 and root not in out:
            value = np.asarray(value)
            if value.ndim == 2:
                out[root] = np.ascontiguousarray(value.T)
    return out


@dataclass
class LatencyAwareRewrite:
    """The model rewritten without its slow layers, and why."""

    model: onnx.ModelProto  # the final model (slow layers left dense)
    records: list  # passes.PassRecord of the final rewrite
    times: LayerTimes  # {node: (us_dense, us_factorized)} of the full rewrite
    kept_dense: list[str] = field(default_factory=list)  # nodes whose chain was not faster
    first_model: onnx.ModelProto | None = None  # the full rewrite (every layer factorized)


def latency_aware_rewrite(
    original: onnx.ModelProto | str | os.PathLike,
    layers: Mapping[str, object],
    dense_updates: Mapping[str, np.ndarray] | None = None,
    feeds: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    provider: str = "cpu",
    repeats: int = 20,
    *,
    margin: float = 1.0,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    threads: int | None = None,
    warmup: int = 3,
    rounds: int = 2,
    timeout_s: float | None = None,
) -> LatencyAwareRewrite:
    """Rewrite ``layers`` (``{ONNX node: LayerFactors}``), profile, and rewrite again without the slow ones.

    Uses :func:`rene_onnx.passes.apply_factors` twice (the second time only
    when some layer is slower); ``kept_dense`` lists the nodes left dense.
    ``original`` is not modified.
    """
    from rene_onnx import passes

    original = load_model(original)
    first, records = passes.apply_factors(original, dict(layers), dict(dense_updates or {}))
    nodes = layer_nodes_from_records(records)
    if not nodes:
        return LatencyAwareRewrite(first, records, {}, [], first)
    with tempfile.TemporaryDirectory(prefix="rene-la-") as tmp:
        p_orig, p_comp = os.path.join(tmp, "original.onnx"), os.path.join(tmp, "compressed.onnx")
        onnx.save(original, p_orig)
        onnx.save(first, p_comp)
        times = layer_latency(p_orig, p_comp, nodes, feeds, provider, repeats, input_shapes=input_shapes,
                              warmup=warmup, threads=threads, rounds=rounds, timeout_s=timeout_s)
    slow = slower_layers(times, margin)
    if not slow:
        return LatencyAwareRewrite(first, records, times, [], first)
    keep = {k: v for k, v in layers.items() if k not in set(slow)}
    updates = {**dict(dense_updates or {}), **dense_from_factors(original, {k: layers[k] for k in slow})}
    final, final_records = passes.apply_factors(original, keep, updates)
    return LatencyAwareRewrite(final, final_records, times, slow, first)


def dense_from_factors(original: onnx.ModelProto, layers: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Dense updates ``{initializer: value}`` that give nodes the weight (and bias) their factors represent.

    A layer kept dense for speed should still compute what the (possibly
    fine-tuned) factors compute, not the weight it had before compression.
    The weight is rebuilt in torch layout (:func:`rene_onnx.decompose.reconstruct`)
    and stored in the node's ONNX layout (transposed for ``x @ W`` and Gemm
    without ``transB``).
    """
    from rene_onnx import passes
    from rene_onnx.decompose import reconstruct

    found = {layer.name: layer for layer in passes.find_layers(original)}
    stored = {t.name: tuple(t.dims) for t in original.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for key, lf in layers.items():
        layer = found.get(key)
        if layer is None or layer.weight_array is None:
            raise ValueError(f"node {key!r}: no layer with a constant weight of that name in the graph")
        w = reconstruct(lf.method, lf.arrays, layer.torch_weight().shape)
        out[layer.weight] = _onnx_layout(layer, w).astype(layer.weight_array.dtype)
        bias = lf.arrays.get("bias")
        if bias is not None and layer.bias in stored:
            out[layer.bias] = np.asarray(bias).reshape(stored[layer.bias]).astype(layer.weight_array.dtype)
    return out


def _onnx_layout(layer, w: np.ndarray) -> np.ndarray:
    """A torch-layout weight in the layout ``layer`` stores: ``OnnxLayer.torch_weight`` is its own inverse
    (a transpose or nothing, chosen by op, side and trans flags), so apply it to ``w``."""
    return dataclasses.replace(layer, weight_array=w).torch_weight()
