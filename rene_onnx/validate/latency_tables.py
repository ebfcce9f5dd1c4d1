"""Per-layer latency tables: each layer's dense node and its factorized chain at candidate ranks, timed isolated.

For ``--target-latency`` (:mod:`rene_onnx.pipeline.latency_target`). Every candidate is cut out into a model
of its own (:func:`rene_onnx.validate.isolate.submodel`: the dense node, fed the layer's real input activation
from one CPU run of the original) and rewritten with that candidate's factors alone; all sub-models are then
timed interleaved in one torch-free worker run (:func:`rene_onnx.validate.latency.measure_latency`: warm-up,
then the fastest of many runs), so the noise of a shared machine hits every entry of a table alike.

No torch here.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from rene_onnx.graph import load_model
from rene_onnx.plan import LayerFactors
from .isolate import layer_inputs, submodel
from .latency import measure_latency

#: ``{node: {"dense": us, ranks: us}}`` (ranks: the candidate's rank tuple)
Tables = dict[str, dict]


def latency_tables(
    original: onnx.ModelProto | str | os.PathLike,
    candidates: Mapping[str, Sequence[LayerFactors]],
    feeds: Mapping[str, np.ndarray],
    provider: str = "cpu",
    repeats: int = 20,
    *,
    warmup: int = 3,
    threads: int | None = None,
    timeout_s: float | None = None,
) -> Tables:
    """``{node: {"dense": us, ranks: us, ...}}``: fastest time of each node and of its chain at each candidate.

    ``candidates``: ``{ONNX node: [LayerFactors at each candidate rank]}`` (only their shapes matter for the
    time). A candidate the rewrite cannot apply raises ``ValueError`` naming it.
    """
    from rene_onnx import passes

    original = load_model(original)
    if not candidates:
        return {}
    acts = layer_inputs(original, list(candidates), dict(feeds))
    keys: list[tuple[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="rene-tables-") as tmp:
        paths = []
        for i, (node, cands) in enumerate(candidates.items()):
            dense = submodel(original, [node], acts)
            paths.append(_save(dense, tmp, f"l{i}_dense.onnx"))
            keys.append((node, "dense"))
            for j, lf in enumerate(cands):
                chain, records = passes.apply_factors(dense, {node: lf}, {})
                if not records or records[0].status != "factorized":
                    why = records[0].reason if records else "no record"
                    raise ValueError(f"layer {node!r} at ranks {list(lf.ranks)}: cannot rewrite ({why})")
                paths.append(_save(chain, tmp, f"l{i}_r{j}.onnx"))
                keys.append((node, tuple(int(r) for r in lf.ranks)))
        npz = os.path.join(tmp, "acts.npz")
        np.savez(npz, **acts)
        lat = measure_latency(paths, npz, provider=provider, warmup=warmup, repeats=repeats, threads=threads,
                              device_io=provider != "cpu", timeout_s=timeout_s)
    out: Tables = {}
    for (node, key), t in zip(keys, lat):
        out.setdefault(node, {})[key] = t.min_ms * 1000.0  # the fastest run: a busy machine only adds time
    return out


def _save(model: onnx.ModelProto, folder: str, name: str) -> str:
    path = os.path.join(folder, name)
    onnx.save(model, path)
    return path


__all__ = ["Tables", "latency_tables"]
