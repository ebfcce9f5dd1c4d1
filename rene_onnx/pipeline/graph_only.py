"""Compress an ONNX graph with no torch model (onnx2torch cannot import it): data-free, from its weights.

The handle comes from :func:`rene_onnx.load.load_onnx_graph` (``torch_model`` is None). The stages are the
pipeline's without a student: ranks given (:func:`.ranks.plan_ranks`) or chosen under a target from the
layers' weight error curves (:func:`rene_onnx.engine.search_weights.weights_search`), factors decomposed from
the numpy weights, the ORIGINAL graph rewritten (:func:`.rewrite.rewrite_factors`, latency-aware on request),
validated ONNX original vs ONNX compressed (:func:`.validate.validate`) and reported. Fine-tuning, the RENE
alpha search and real inputs need the torch import: :func:`.inputs.load_model` refuses them before this runs.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from rene_onnx.config import CompressConfig, SearchConfig
from rene_onnx.load import ModelHandle
from rene_onnx.plan import Factors, LayerFactors, RankPlan
from rene_onnx.progress import emit

from .ranks import plan_ranks
from .report import build_report
from .rewrite import rewrite_factors
from .validate import validate


def graph_weights(handle: ModelHandle) -> tuple[dict, dict[str, np.ndarray]]:
    """``(shapes, weights)`` of the handle's layers, by layer name: LayerShape and the torch-layout weight."""
    from rene_onnx.load.onnx_graph import graph_layers

    found = dict(graph_layers(handle.onnx_model, handle.input_shapes))
    names = [n for n in handle.layer_map if n in found]
    return {n: found[n].shape for n in names}, {n: found[n].torch_weight() for n in names}


def graph_factors(plan: RankPlan, weights: dict[str, np.ndarray], shapes: dict) -> Factors:
    """The plan's factorized layers decomposed from their weights (the bias stays the graph's own)."""
    from rene_onnx.decompose import decompose

    from .factorize import numpy_blas_one_thread

    out = Factors()
    with numpy_blas_one_thread():
        for name, lp in plan.layers.items():
            if lp.method != "dense":
                arrays = decompose(lp.method, weights[name], lp.ranks, groups=shapes[name].groups)
                out.add(LayerFactors(name, lp.method, lp.ranks, arrays))
    return out


def graph_search(cfg: CompressConfig, handle: ModelHandle, shapes: dict, weights: dict[str, np.ndarray]):
    """The ranks under ``cfg``'s target from the layers' weight error curves -> a data-free SearchResult.

    The targets are fractions of the whole ONNX model's parameters / MACs."""
    from rene_onnx.engine.search_weights import weights_search
    from rene_onnx.validate.counts import count_onnx

    emit("search", message="weights only")
    c = count_onnx(handle.onnx_model, handle.input_shapes)
    scfg = dataclasses.replace(cfg.search or SearchConfig(), method=cfg.rewrite.method,
                               rank_multiple=cfg.rewrite.rank_multiple, data_free=True)
    return weights_search(weights, shapes, scfg, (c.params, c.macs))


def compress_graph_only(cfg: CompressConfig, handle: ModelHandle, t0: float):
    """ranks -> factors -> rewrite -> validate -> report on the graph's weights; ``(report, model, plan, notes)``."""
    from rene_onnx.report.search import search_section

    shapes, weights = graph_weights(handle)
    searched = None
    if cfg.rewrite.ranks is not None:
        emit("plan", message="ranks given")
        plan = plan_ranks(shapes, cfg.rewrite)
    else:
        searched = graph_search(cfg, handle, shapes, weights)
        plan = searched.plan
    emit("factorize", message=f"{len(plan.factorized())} layers")
    factors = graph_factors(plan, weights, shapes)
    emit("rewrite", message="ONNX graph")
    v = cfg.validate
    rewritten = rewrite_factors(handle, factors, v if v.latency_aware_on() else None)
    emit("validate", message="start")
    val = validate(handle, None, rewritten.model, v)
    report = build_report(cfg, handle, shapes, plan, rewritten, val, seconds=time.perf_counter() - t0)
    report.search = search_section(searched)
    report.meta["torch_import"] = {"error": handle.import_error,
                                   "compressed": "data-free from the ONNX graph's weights (no torch model)"}
    return report, rewritten.model, plan, handle.notes + (searched.notes if searched else [])
