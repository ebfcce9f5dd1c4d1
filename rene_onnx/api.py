"""The library's entry points: what ``rene-onnx compress | search | validate | export`` run.

Each takes the command's options as keyword arguments -- the CLI's long option names in snake_case,
with the same defaults (:mod:`rene_onnx.options`) -- and returns a result object. Nothing is written
unless an output path is given::

    import rene_onnx

    result = rene_onnx.compress("resnet20", weights="r20.pt", target_params=0.25, epochs=3)
    result.model          # the compressed onnx.ModelProto
    result.report         # its Report (.to_dict(), .save_json(path))
    plan = rene_onnx.search("resnet20", weights="r20.pt", data_free=True, target_macs=0.5).plan
    rene_onnx.validate("original.onnx", "compressed.onnx", calib="test.npz").report

Errors are :mod:`rene_onnx.errors` types: ``UserError`` (bad input), ``StageError`` (a stage failed).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rene_onnx.options import (DEMO_MODEL, DEMO_TARGET_PARAMS, CompressOptions, InputsOptions,
                               SearchCommandOptions, ValidateOptions, make)


def _call(name: str, model: Any, options: dict[str, Any]) -> str:
    """How a Python call is recorded in a report's ``meta.command``."""
    args = [repr(os.fspath(model))] if model is not None else []
    args += [f"{k}={v!r}" for k, v in options.items()]
    return f"rene_onnx.{name}({', '.join(args)})"


def compress_options(model: str | os.PathLike | None, options: dict[str, Any]) -> tuple[str, CompressOptions]:
    """``(model, CompressOptions)``; no model is the built-in demo (digits, ``target_params`` 0.3 unless told).

    The demo keeps its factorized layers even though they are not faster (``latency_aware`` off unless
    told): its 8x8 digits are too small for a factorized chain to beat a dense conv on a CPU, and the
    demo is there to show the method. Its summary then says the model is slower.
    """
    if model is None:
        model = DEMO_MODEL
        if options.get("ranks") is None and options.get("target_params") is None \
                and options.get("target_macs") is None:
            options = {**options, "target_params": DEMO_TARGET_PARAMS}
        options = {"latency_aware": False, **options}
    return os.fspath(model), make(CompressOptions, options, command="compress")


def compress(model: str | os.PathLike | None = None, *, command: str | None = None, **options: Any):
    """Compress ``model`` (a zoo name, ``package.module:callable``, or an ``.onnx`` file) -> ``CompressResult``.

    ``options``: the fields of :class:`~rene_onnx.options.CompressOptions`. Without a model, the demo.
    ``command``: what the report records as the command (default: this call).
    """
    from rene_onnx.pipeline import compress as run

    name, opts = compress_options(model, options)
    return run(opts.compress_config(name, command or _call("compress", model, options)))


@dataclass
class SearchOutcome:
    """A search run: the rank plan, a report of the plan (per-layer rows, the search section), what was written."""

    plan: Any  # rene_onnx.plan.RankPlan
    report: Any  # rene_onnx.report.Report
    notes: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def search(model: str | os.PathLike = DEMO_MODEL, *, command: str | None = None, **options: Any) -> SearchOutcome:
    """Run the RENE search on ``model`` -> :class:`SearchOutcome` (its ``plan`` is what ``compress(ranks=...)``
    takes). ``options``: the fields of :class:`~rene_onnx.options.SearchCommandOptions`.

    The plan file holds no timings: the same model, options and seed write the same bytes.
    """
    from rene_onnx.files import check_io, existing, model_reads
    from rene_onnx.pipeline import calib_inputs, layer_shapes, load_data, load_model, search_ranks
    from rene_onnx.progress import emit
    from rene_onnx.report.figures import plot_paths, write_plots
    from rene_onnx.report.search import search_report

    opts = make(SearchCommandOptions, options, command="search")
    cfg = opts.compress_config(model, command or _call("search", model, options))
    check_io({"model": model_reads(cfg.model), "weights": cfg.weights, "calib": cfg.calib, "data": existing(cfg.data),
              "checkpoint_dir": existing(cfg.search.checkpoint_dir)},
             {"output": opts.output, "plots": plot_paths(opts.plots) if opts.plots is not None else None})
    t0 = time.perf_counter()
    emit("load", message=str(model))
    handle = load_model(cfg)
    if handle.torch_model is None:  # onnx2torch cannot import the graph: ranks from its weights alone
        from rene_onnx.pipeline.graph_only import graph_search, graph_weights

        shapes, weights = graph_weights(handle)
        result = graph_search(cfg, handle, shapes, weights)
    else:
        splits = load_data(cfg, handle)
        result = search_ranks(handle, cfg, splits, calib_inputs(cfg, handle) if splits is None else None)
        shapes = layer_shapes(handle)
    plan = result.plan
    plan.meta["search"] = {**plan.meta.get("search", {}), "params_fraction": result.params_fraction,
                           "macs_fraction": result.macs_fraction}
    report = search_report(result, shapes, {n: r.op_type for n, r in handle.layer_map.items()},
                           {"model": str(model), "command": cfg.command})
    paths: dict[str, Path] = {}
    if opts.output is not None:
        plan.save(opts.output)
        paths["output"] = Path(opts.output)
    if opts.plots is not None:
        for p in write_plots(report, opts.plots):
            paths[f"plot:{p.name}"] = p
    return SearchOutcome(plan, report, handle.notes + result.notes, paths, time.perf_counter() - t0)


def validate(original: str | os.PathLike, compressed: str | os.PathLike, *, command: str | None = None,
             **options: Any):
    """Compare two ONNX models with the same inputs -> ``PairValidation`` (its ``report``).

    ``options``: the fields of :class:`~rene_onnx.options.ValidateOptions`.
    """
    from rene_onnx.files import check_io, existing, model_reads
    from rene_onnx.pipeline import validate_models
    from rene_onnx.validate.runtimes import check_runtime

    opts = make(ValidateOptions, options, command="validate")
    check_io({"original": model_reads(original) or [original], "compressed": model_reads(compressed) or [compressed],
              "data": existing(opts.data), "calib": opts.calib}, {"report": opts.report})
    check_runtime(opts.runtime, opts.provider or "cpu")
    res = validate_models(original, compressed, input_shapes=opts.input_shapes(), data=opts.data, calib=opts.calib,
                          provider=opts.provider or "cpu", latency=opts.latency, repeats=opts.repeats,
                          device_io=opts.device_io, runtime=opts.runtime)
    res.report.meta["command"] = command or _call("validate", original, {"compressed": compressed, **options})
    if opts.report is not None:
        res.report.save_json(opts.report)
    return res


def inputs(model: str | os.PathLike, **options: Any):
    """Real inputs for an ONNX ``model`` from offline photos or sentences -> ``OfflineInputs`` (its ``arrays``,
    ``groups``, ``source``); written as an ``.npz`` for ``calib`` when ``output`` is given.

    ``options``: the fields of :class:`~rene_onnx.options.InputsOptions`.
    """
    from rene_onnx.data.offline_inputs import offline_inputs
    from rene_onnx.files import check_io, model_reads
    from rene_onnx.load import read_onnx

    opts = make(InputsOptions, options, command="inputs")
    check_io({"model": model_reads(model) or [model], "photos": opts.photos, "tokenizer": opts.tokenizer,
              "exclude": opts.exclude}, {"output": opts.output})
    made = offline_inputs(read_onnx(model), **opts.source_options())
    if opts.output is not None:
        made.save(opts.output)
    return made


def export(model: Any, **options: Any):
    """Export an ONNX model for edge runtimes -> ``ExportResult`` (:func:`rene_onnx.export.export_model`)."""
    from rene_onnx.export import export_model

    return export_model(model, **options)
