"""The spine: load -> ranks (given or searched) -> factorize -> fine-tune -> rewrite -> validate -> report.

:func:`compress` chains the stages of this package on a :class:`~rene_onnx.config.CompressConfig` and
returns the compressed model in memory; it writes ``cfg.output`` / ``cfg.report`` / ``cfg.plots`` only
when they are set, after every stage has succeeded, and refuses (before any work) a write that would
land on one of its reads (:func:`compress_io`, :func:`rene_onnx.files.check_io`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from rene_onnx.config import CompressConfig
from rene_onnx.errors import UserError
from rene_onnx.files import check_io, existing, model_reads, onnx_outputs, save_onnx
from rene_onnx.plan import Factors, RankPlan
from rene_onnx.progress import emit

from .edge import check_export, export_compressed, export_writes
from .factorize import factorize, init_factors, torch_top1
from .finetune import Tuned, finetune_student, with_distill_data
from .heldout import Heldout, hold_out
from .inputs import calib_inputs, layer_shapes, load_data, load_model, static_batch, test_arrays
from .ranks import parse_ranks, plan_ranks, search_ranks
from .report import build_report, finetune_meta
from .rewrite import rewrite
from .validate import validate


@dataclass
class CompressResult:
    """A compress run: the report, the compressed ONNX model (in memory), the plan, and what was written."""

    report: Any  # rene_onnx.report.Report
    model: onnx.ModelProto
    plan: RankPlan
    notes: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)  # output / report / plots written (empty: none)
    export: Any = None  # rene_onnx.export.ExportResult of --export (None: no export)

    @property
    def output(self) -> Path | None:
        return self.paths.get("output")


def compress(cfg: CompressConfig) -> CompressResult:
    """Load -> ranks (given or searched) -> factorize -> fine-tune -> rewrite -> validate -> report.

    Writes ``cfg.output`` (and ``cfg.report``, ``cfg.plots``) when set; nothing is written when a stage fails.
    """
    t0 = time.perf_counter()
    check_io(*compress_io(cfg))
    if cfg.rewrite.ranks is not None:
        parse_ranks(cfg.rewrite.ranks)  # fail fast on bad ranks, before loading anything

    emit("load", message=str(cfg.model))
    handle = load_model(cfg)
    splits = load_data(cfg, handle)
    calib = calib_inputs(cfg, handle) if splits is None else None
    held = None
    if calib is not None and cfg.holdout > 0:  # the held-out part only ever reaches validate()
        held = hold_out(calib, cfg.calib, cfg.holdout, cfg.search.seed if cfg.search else 0)
        calib = held.used
    if calib is not None and cfg.distill_data is not None:  # a bad --distill-data fails before the search
        with_distill_data(cfg, handle, list(calib))
    if cfg.export:
        check_export(cfg, handle, has_inputs=splits is not None or calib is not None)
    if handle.torch_model is None:  # onnx2torch cannot import the graph: data-free on its weights
        from .graph_only import compress_graph_only

        report, model, plan, notes = compress_graph_only(cfg, handle, t0)
    elif cfg.min_fidelity is not None:
        from .floor import compress_to_floor

        if held is None:
            raise UserError("needs held-out real inputs to measure on: give --calib (and --holdout > 0)",
                            option="min_fidelity")
        memo: dict = {}  # what the tries share (the latency target's tables)
        report, model, plan, notes = compress_to_floor(
            cfg, lambda c: compress_once(c, handle, splits, calib, held, t0, memo), held)
    else:
        report, model, plan, notes = compress_once(cfg, handle, splits, calib, held, t0)
    exported = None
    if cfg.export:  # built and validated (files published) before the model is written: a failure writes nothing
        emit("export", message=",".join(cfg.export))
        exported, how = export_compressed(cfg, handle, model, splits, calib, held)
        report.meta["export"] = {"targets": list(cfg.export), "inputs": how,
                                 "files": {k: str(p) for k, p in exported.paths.items()}}
    paths = write_outputs(cfg, model, report, handle.external_data)
    if exported is not None:
        paths.update({f"export {k}": p for k, p in exported.paths.items()})
    return CompressResult(report, model, plan, notes, paths, exported)


def compress_once(cfg: CompressConfig, handle, splits, calib, held: Heldout | None, t0: float,
                  memo: dict | None = None):
    """One run on a loaded model: ranks -> factorize -> fine-tune -> rewrite -> validate -> report (nothing written).

    ``calib``: the used part of the ``calib`` inputs (search, initialization, fine-tuning); ``held``: the
    held-out part, only measured on; ``memo``: what repeated runs on the same model may share. Returns
    ``(report, model, plan, notes)``.
    """
    shapes = layer_shapes(handle)
    searched = latency_plan = None
    if cfg.target_latency is not None:
        from .latency_target import plan_for_latency

        latency_plan = plan_for_latency(handle, cfg, shapes, calib, memo)
        plan = latency_plan.plan
    elif cfg.rewrite.ranks is not None:
        emit("plan", message="ranks given")
        plan = plan_ranks(shapes, cfg.rewrite)
    else:
        emit("search", message="RENE search")
        searched = search_ranks(handle, cfg, splits, calib)
        plan = searched.plan
    emit("factorize", message=f"{len(plan.factorized())} layers")
    init = init_factors(handle, plan, calib, searched=searched.factors if searched is not None else None,
                        was_searched=searched is not None, data_free=cfg.data_free)
    student = factorize(handle, plan, init)
    test_data = test_arrays(splits)
    acc_decomposed = torch_top1(student, test_data, static_batch(handle))
    tuned = finetune_student(handle, student, cfg, splits, calib)
    emit("rewrite", message="ONNX graph")
    v = cfg.validate
    rewritten = rewrite(handle, student, v if v.latency_aware_on() else None)
    baseline, baseline_notes = int8_baseline(handle, cfg, calib, {} if memo is None else memo)
    emit("validate", message="start")
    val = validate(handle, student, rewritten.model, cfg.validate, test_data,
                   held.held if held is not None else calib, "calib-heldout" if held is not None else "calib",
                   baseline=baseline)
    if val.accuracy is not None:
        val.accuracy["after_decomposition"] = acc_decomposed
        if tuned is not None:
            val.accuracy["after_finetune"] = val.accuracy.pop("after")
        else:
            val.accuracy.pop("after")

    report = build_report(cfg, handle, shapes, plan, rewritten, val, seconds=time.perf_counter() - t0)
    report.search = _search_section(searched)
    _add_meta(report, cfg, tuned, init, splits, calib)
    if held is not None:
        report.meta["calib"]["samples"] += len(held.held_idx)
        report.meta["holdout"] = held.meta(cfg.holdout, cfg.search.seed if cfg.search else 0)
    notes = handle.notes + (searched.notes if searched else []) + baseline_notes
    if latency_plan is not None:
        report.meta["target_latency"] = latency_plan.meta()
        notes += latency_plan.notes
    return report, rewritten.model, plan, notes


def int8_baseline(handle, cfg: CompressConfig, calib, memo: dict) -> tuple[tuple | None, list[str]]:
    """``((INT8 model, settings) or None, notes)``: the ``--compare-int8`` baseline, quantized once per run (the
    ``--min-fidelity`` tries share it through ``memo``). A failed quantization is a note, not a failed run."""
    from rene_onnx.errors import StageError

    from .int8_baseline import quantize_original, wanted

    if calib is None or not wanted(cfg.validate, handle.onnx_model):
        return None, []
    if "int8_baseline" not in memo:
        try:
            memo["int8_baseline"] = (quantize_original(handle, calib), [])
        except StageError as e:
            memo["int8_baseline"] = (None, [f"--compare-int8: no INT8 baseline ({e})"])
    return memo["int8_baseline"]


def _search_section(searched) -> dict | None:
    from rene_onnx.report.search import search_section

    return search_section(searched)


def _add_meta(report, cfg: CompressConfig, tuned: Tuned | None, init: Factors | None, splits, calib) -> None:
    if tuned is not None:
        report.meta["finetune"] = finetune_meta(tuned)
    if init is not None and init.meta.get("sequential"):
        report.meta["init"] = {"sequential": init.meta["sequential"]}  # Linear layers fitted error-corrected
    if splits is not None:
        report.meta["data"] = {"name": splits.name, "sizes": splits.sizes()}
    elif calib is not None:
        report.meta["calib"] = {"path": str(cfg.calib), "samples": int(len(calib[0]))}


def write_outputs(cfg: CompressConfig, model: onnx.ModelProto, report, external_data: bool) -> dict[str, Path]:
    """Write what ``cfg`` names (model, report, plots); returns ``{kind: path}`` of the files written."""
    paths: dict[str, Path] = {}
    if cfg.output is not None:
        paths["output"] = save_onnx(model, cfg.output, external_data)
    if cfg.report is not None:
        report.save_json(cfg.report)
        paths["report"] = Path(cfg.report)
    if cfg.plots is not None:
        from rene_onnx.report.figures import write_plots

        for p in write_plots(report, cfg.plots):
            paths[f"plot:{p.name}"] = p
    return paths


def compress_io(cfg: CompressConfig) -> tuple[dict, dict]:
    """(reads, writes) of a compress run, by option name, for :func:`rene_onnx.files.check_io`."""
    from rene_onnx.report.figures import plot_paths

    ranks = cfg.rewrite.ranks
    ckpt = cfg.search.checkpoint_dir if cfg.search is not None and ranks is None else None
    reads = {"model": model_reads(cfg.model), "weights": cfg.weights, "calib": cfg.calib, "data": existing(cfg.data),
             "distill_data": cfg.distill_data,
             "ranks": existing(ranks) if isinstance(ranks, (str, Path)) else None, "checkpoint_dir": existing(ckpt)}
    writes: dict[str, Any] = {"report": cfg.report}
    if cfg.output is not None:
        writes.update(onnx_outputs(cfg.output, external_data=len(reads["model"]) > 1))
    if cfg.plots is not None:
        writes["plots"] = plot_paths(cfg.plots)
    if cfg.export:
        writes["export"] = export_writes(cfg)
    return reads, writes
