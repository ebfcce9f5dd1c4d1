"""Latency-aware factorization, the measuring half: per-layer times of the dense node vs its factorized chain.

No torch here, and no rewriting: the rewrite stage (:func:`rene_onnx.pipeline.rewrite.latency_aware_rewrite`)
rewrites every planned layer, asks :func:`layer_latency` to profile the original and the rewritten model
with onnxruntime (:func:`rene_onnx.validate.latency.profile_nodes`, torch-free worker) and compare each
layer's dense node with its chain, and rewrites again without the layers :func:`slower_layers` names.

Layout conversions. On CPU, onnxruntime runs convs in the blocked NCHWc
layout where it can and inserts ``ReorderInput`` / ``ReorderOutput`` nodes
where a tensor changes layout. A conv whose channel counts do not suit the
NCHWc kernels (a rank that is not a multiple of 4 here) stays in NCHW and
costs a reorder on each side. Those nodes have no counterpart in the graph
we wrote, so :func:`layer_latency` charges each one to the layer next to it
(``attribute_reorders``): to the conv on its NCHW side when that conv belongs
to a layer (the conv that could not run blocked caused it), else to the conv
on its NCHWc side. The neighbours are read from onnxruntime's optimized
graph, which is built again here (same optimization level as the profiler's
session; optimization does not depend on thread count).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Callable

import numpy as np
import onnx

from rene_onnx.graph import model_path
from .latency import name_mapper, profile_nodes
from .numerics import providers_for

#: onnxruntime's layout-conversion ops (domain com.microsoft) that :func:`layer_latency` attributes to layers
REORDER_OPS = ("ReorderInput", "ReorderOutput")

LayerNodes = Mapping[str, "tuple[str, Sequence[str]]"]
LayerTimes = dict[str, "tuple[float | None, float | None]"]


# ------------------------------------------------------------------------------------------------ mapping


def layer_nodes_from_records(records: Iterable, layer_of_node: Mapping[str, str] | None = None) -> dict[str, tuple[str, list[str]]]:
    """``{layer: (original node, [new nodes])}`` from :class:`rene_onnx.passes.PassRecord` s.

    Only records with status ``factorized`` are used. ``layer_of_node`` maps an
    ONNX node name to the layer name to key the result by (default: the node
    name itself).
    """
    out: dict[str, tuple[str, list[str]]] = {}
    for r in records:
        if r.status != "factorized":
            continue
        layer = (layer_of_node or {}).get(r.node, r.node)
        out[layer] = (r.node, list(r.new_nodes))
    return out


def _check_layer_nodes(layer_nodes: LayerNodes) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for layer, entry in layer_nodes.items():
        try:
            orig, new = entry
        except (TypeError, ValueError):
            raise ValueError(f"layer_nodes[{layer!r}] must be (original node, [new nodes]), got {entry!r}") from None
        if isinstance(new, str):
            raise ValueError(f"layer_nodes[{layer!r}]: the new nodes must be a list of names, got the string {new!r}")
        new = [str(n) for n in new]
        if not new:
            raise ValueError(f"layer_nodes[{layer!r}] lists no new nodes")
        out[str(layer)] = (str(orig), new)
    return out


# ------------------------------------------------------------------------------------------------ times


def layer_latency(
    original_path: str | os.PathLike,
    compressed_path: str | os.PathLike,
    layer_nodes: LayerNodes,
    feeds_npz: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    provider: str = "cpu",
    repeats: int = 20,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    warmup: int = 3,
    threads: int | None = None,
    rounds: int = 2,
    attribute_reorders: bool = True,
    isolated: bool | None = None,
    timeout_s: float | None = None,
) -> LayerTimes:
    """``{layer: (us_dense, us_factorized)}``: median kernel time of the dense node and of its chain.

    ``isolated`` (default: on for every provider but the CPU) times each
    dense node and each chain as a model of its own instead
    (:func:`rene_onnx.validate.isolate.isolated_layer_latency`): onnxruntime's
    profiler times a GPU node's launch, not its kernel. What follows is the
    profile method.

    ``layer_nodes``: ``{layer: (original node name, [new node names])}`` (see
    :func:`layer_nodes_from_records`). Both models are profiled with
    :func:`profile_nodes` (``repeats`` runs after ``warmup``, ``threads``
    intra-op threads; inputs from ``feeds_npz`` or random from
    ``input_shapes``), alternating for ``rounds`` rounds; each node keeps its
    fastest round (a burst of load on a shared machine inflates a whole
    round, and profiles of two models cannot be interleaved run by run).
    A layer's time is the sum over its profiled nodes plus, with
    ``attribute_reorders``, the layout conversions charged to it (module
    docstring); ``None`` where none of its nodes was profiled.
    """
    nodes = _check_layer_nodes(layer_nodes)
    if repeats < 1 or rounds < 1:
        raise ValueError(f"repeats and rounds must be >= 1, got repeats={repeats} rounds={rounds}")
    original_path, compressed_path = model_path(original_path), model_path(compressed_path)
    if provider != "cpu" if isolated is None else isolated:
        from .isolate import isolated_layer_latency

        return isolated_layer_latency(original_path, compressed_path, nodes, feeds_npz, provider, repeats,
                                      input_shapes=input_shapes, warmup=warmup, threads=threads, timeout_s=timeout_s)
    kw = dict(provider=provider, repeats=repeats, input_shapes=input_shapes, warmup=warmup, threads=threads,
              timeout_s=timeout_s)
    runs: tuple[list, list] = ([], [])
    for _ in range(rounds):
        runs[0].append(profile_nodes(original_path, feeds_npz, **kw))
        runs[1].append(profile_nodes(compressed_path, feeds_npz, **kw))
    t_orig, t_comp = fastest(runs[0]), fastest(runs[1])
    dense = _per_layer(t_orig, {layer: [orig] for layer, (orig, _) in nodes.items()},
                       original_path if attribute_reorders else None, provider)
    fact = _per_layer(t_comp, {layer: new for layer, (_, new) in nodes.items()},
                      compressed_path if attribute_reorders else None, provider)
    return {layer: (dense[layer], fact[layer]) for layer in nodes}


def fastest(profiles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per node, the smallest time over several :func:`profile_nodes` results (nodes in any of them)."""
    out: dict[str, float] = {}
    for prof in profiles:
        for name, us in prof.items():
            out[name] = min(float(us), out.get(name, float("inf")))
    return out


def _per_layer(times: Mapping[str, float], owned: dict[str, list[str]], path: str | None,
               provider: str) -> dict[str, float | None]:
    node_layer = {n: layer for layer, ns in owned.items() for n in ns}
    out: dict[str, float | None] = {layer: None for layer in owned}
    for name, us in times.items():
        layer = node_layer.get(name)
        if layer is not None:
            out[layer] = (out[layer] or 0.0) + float(us)
    if path is not None:
        unmatched = {n: us for n, us in times.items() if n not in node_layer}
        if any(n.startswith(REORDER_OPS) for n in unmatched):
            for name, layer in attribute_layout_nodes(path, unmatched, node_layer, provider).items():
                if out[layer] is not None:  # a reorder alone does not make a layer "profiled"
                    out[layer] += float(unmatched[name])
    return out


def attribute_layout_nodes(
    model: str | os.PathLike,
    profiled: Iterable[str],
    node_layer: Mapping[str, str],
    provider: str = "cpu",
) -> dict[str, str]:
    """``{profiled reorder node: layer}`` for the layout conversions onnxruntime inserted into ``model``.

    ``node_layer`` maps original node names to layers. A reorder is charged to
    the layer of its NCHW-side neighbour when that is a layer's node, else to
    its NCHWc-side neighbour's layer; unmatched ones are left out.
    """
    wanted = {n for n in profiled if n.startswith(REORDER_OPS)}
    if not wanted:
        return {}
    graph = optimized_graph(model, provider)
    sides = reorder_neighbours(graph, name_mapper(model))
    out = {}
    for name in wanted:
        nchw, nchwc = sides.get(name, ((), ()))
        owner = next((node_layer[n] for n in [*nchw, *nchwc] if n in node_layer), None)
        if owner is not None:
            out[name] = owner
    return out


def reorder_neighbours(graph: onnx.GraphProto, rename: Callable[[str], str] = lambda s: s
                       ) -> dict[str, tuple[list[str], list[str]]]:
    """``{reorder node: (NCHW-side neighbours, NCHWc-side neighbours)}`` in an optimized graph, renamed.

    ``ReorderInput`` reads NCHW (its producer) and feeds NCHWc (its consumers);
    ``ReorderOutput`` the other way round. ``rename`` maps optimized node
    names back to the original graph's (:func:`latency.name_mapper`).
    """
    producer = {o: n for n in graph.node for o in n.output if o}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                consumers.setdefault(i, []).append(n)
    out = {}
    for n in graph.node:
        if n.op_type not in REORDER_OPS:
            continue
        before = [rename(producer[i].name) for i in n.input if i in producer]
        after = [rename(c.name) for o in n.output for c in consumers.get(o, ())]
        out[n.name] = (before, after) if n.op_type == "ReorderInput" else (after, before)
    return out


def optimized_graph(model: str | os.PathLike, provider: str = "cpu") -> onnx.GraphProto:
    """The graph onnxruntime runs after ``ORT_ENABLE_ALL`` optimization (NCHWc layout, fusions) on ``provider``."""
    import onnxruntime as ort

    path = model_path(model)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # the "optimized model is hardware specific" warning is expected here
    with tempfile.TemporaryDirectory(prefix="rene-opt-") as tmp:
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(path, so, providers=providers_for(provider))
        return onnx.load(so.optimized_model_filepath, load_external_data=False).graph


# ------------------------------------------------------------------------------------------------ choice


def nchwc_block_size(flags: Iterable[str] | None = None) -> int:
    """Channel block of onnxruntime's x86 NCHWc conv kernels (MLAS): 16 with AVX-512F, 8 with AVX2, else 1.

    Conv channel counts (ranks) that are multiples of it run in the blocked
    layout at full speed; others are padded up to it, or (not a multiple of
    4) fall back to NCHW with a reorder on each side. ``flags`` defaults to the ``flags`` line of ``/proc/cpuinfo`` (1 where it cannot be read).
    Use it as ``rank_multiple`` (``plan_from_fraction(..., rank_multiple=...)``).
    """
    flags = set(cpu_flags(None) if flags is None else flags)
    if "avx512f" in flags:
        return 16
    if "avx2" in flags:
        return 8
    return 1


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The ``flags`` of the first CPU in ``cpuinfo`` (the text of ``/proc/cpuinfo``; read when None, [] when it
    cannot be read, e.g. not Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return []
    line = next((ln for ln in cpuinfo.splitlines() if ln.split(":")[0].strip() == "flags"), "")
    return line.partition(":")[2].split()


def default_rank_multiple(cpuinfo: str | None = None) -> tuple[int, str]:
    """``(rank multiple, why)`` for onnxruntime's CPU conv kernels: :func:`nchwc_block_size` of this CPU's flags."""
    flags = set(cpu_flags(cpuinfo))
    m = nchwc_block_size(flags)
    found = "avx512f" if m == 16 else "avx2" if m == 8 else None
    if found:
        return m, f"CPU has {found}: onnxruntime's NCHWc conv kernels block channels by {m}"
    return 1, "no AVX2 / AVX-512F in the CPU flags" if flags else "CPU flags unknown (no /proc/cpuinfo)"


def slower_layers(times: Mapping[str, tuple[float | None, float | None]], margin: float = 1.0) -> list[str]:
    """Layers whose factorized chain is not faster than the dense node, in the order of ``times``.

    A layer is listed when ``us_dense <= margin * us_factorized``: with
    ``margin=1`` the chain must be strictly faster to stay; ``margin=1.2``
    asks for a 1.2x speed-up. Layers with a missing time (``None``) are not
    listed (nothing to judge by).
    """
    margin = float(margin)
    if not margin > 0 or not np.isfinite(margin):
        raise ValueError(f"margin must be a positive number, got {margin}")
    out = []
    for layer, pair in times.items():
        try:
            dense, fact = pair
        except (TypeError, ValueError):
            raise ValueError(f"times[{layer!r}] must be (us_dense, us_factorized), got {pair!r}") from None
        if dense is None or fact is None:
            continue
        if dense <= margin * fact:
            out.append(layer)
    return out


__all__ = [
    "REORDER_OPS", "attribute_layout_nodes", "cpu_flags", "default_rank_multiple", "fastest", "layer_latency", "layer_nodes_from_records",
    "nchwc_block_size", "optimized_graph", "reorder_neighbours", "slower_layers",
]
