"""Stage 5 of the pipeline: the rewritten model measured against the original and the student.

Counts (ONNX and torch), numerics (onnxruntime vs the torch student: the rewrite is exact up to float
error; vs the original: the approximation), latency, and top-1 on a labeled test split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from rene_onnx.config import ValidateConfig
from rene_onnx.errors import LoadError
from rene_onnx.load import ModelHandle
from rene_onnx.progress import emit

from .inputs import static_batch


@dataclass
class Validation:
    counts_before: Any
    counts_after: Any
    torch_counts: dict[str, tuple[int, int]] | None  # None: no torch model
    numerics: dict[str, Any]
    latency: dict[str, Any] | None
    accuracy: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None  # the INT8 baseline's meta (``--compare-int8``)


def validate(handle: ModelHandle, student: nn.Module | None, compressed: onnx.ModelProto, cfg: ValidateConfig,
             test_data: tuple[np.ndarray, np.ndarray] | None = None,
             calib: tuple[torch.Tensor, ...] | None = None, calib_label: str = "calib-heldout",
             baseline: tuple[onnx.ModelProto, dict] | None = None) -> Validation:
    """Counts (ONNX and torch), ORT numerics vs the torch student, latency, and top-1 when data is given.

    Numerics run on the example inputs (``cfg.seed``; ``inputs: "random"``, no top-1); with ``calib`` (the
    held-out ``calib`` inputs, named ``calib_label``) the original and compressed ONNX models are also
    compared on up to :data:`HELDOUT_COMPARE` of them (``numerics["calib"]``). Each entry is a dict with
    ``inputs`` and ``n`` (:func:`rene_onnx.validate.fidelity.labelled`). Without a ``student`` (a graph with
    no torch model) there are no torch counts and no ``vs_torch`` numerics.
    """
    from rene_onnx.validate.fidelity import labelled
    from rene_onnx.engine.profile import count as torch_count
    from rene_onnx.validate.counts import count_onnx
    from rene_onnx.validate.numerics import compare, run_onnx
    from rene_onnx.validate.pair import measure_pair, onnx_top1

    shapes = handle.input_shapes
    before, after = count_onnx(handle.onnx_model, shapes), count_onnx(compressed, shapes)
    x = handle.example_input(cfg.seed)
    args = (x,) if isinstance(x, torch.Tensor) else x
    torch_counts = None
    if student is not None:
        teacher, student = handle.deployable(handle.torch_model), handle.deployable(student)
        torch_counts = {"before": torch_count(teacher, x), "after": torch_count(student, x)}

    emit("validate", message="numerics")
    feeds = handle.feeds(x)
    out_orig = run_onnx(handle.onnx_model, feeds, cfg.provider)
    out_new = run_onnx(compressed, feeds, cfg.provider)
    n_random = int(len(next(iter(feeds.values()))))
    numerics = {}
    if student is not None:
        with torch.no_grad():
            ref_student = [student(*args).numpy()]
        numerics["vs_torch"] = labelled(compare(ref_student, out_new), "random", n_random)  # exact up to float error
    numerics["vs_original"] = labelled(compare(out_orig, out_new), "random", n_random)  # the approximation error
    if calib is not None:
        res = calib_numerics(handle, compressed, calib, cfg.provider, limit=HELDOUT_COMPARE)
        numerics["calib"] = None if res is None else labelled(res, calib_label, min(len(calib[0]), HELDOUT_COMPARE))

    latency = None
    if cfg.latency:
        emit("validate", message="latency")
        latency = measure_pair(handle.onnx_model, compressed, feeds, cfg.provider, cfg.warmup, cfg.repeats,
                               cfg.device_io, extra={"int8": baseline[0]} if baseline is not None else None)
    base = None
    if baseline is not None:
        from .int8_baseline import baseline_meta

        fid = None
        if calib is not None:
            res = calib_numerics(handle, baseline[0], calib, cfg.provider, limit=HELDOUT_COMPARE)
            fid = None if res is None else labelled(res, calib_label, min(len(calib[0]), HELDOUT_COMPARE))
        base = baseline_meta(baseline[0], baseline[1], handle.onnx_model, compressed, latency, fid)
        if latency is not None:
            latency.pop("int8_ms", None)

    accuracy = None
    if test_data is not None:
        emit("validate", message="accuracy")
        X, y = test_data
        accuracy = {
            "metric": "top1", "inputs": "data-test", "n": int(len(y)),
            "samples": int(len(y)),
            "before": onnx_top1(handle.onnx_model, X, y, cfg.provider),
            "after": onnx_top1(compressed, X, y, cfg.provider),
        }
    return Validation(before, after, torch_counts, numerics, latency, accuracy, base)


#: how many ``calib`` samples the original and compressed ONNX models are compared on
CALIB_COMPARE = 1024
#: how many held-out ``calib`` samples they are compared on in a compress run
HELDOUT_COMPARE = 1024


def calib_numerics(handle: ModelHandle, compressed: onnx.ModelProto, calib: tuple[torch.Tensor, ...],
                   provider: str, limit: int = CALIB_COMPARE):
    """Original vs compressed ONNX outputs on the first ``limit`` calibration samples."""
    from rene_onnx.validate.numerics import compare_on_inputs

    arrays = {s.name: t.numpy() for s, t in zip(handle.specs, calib)}
    return compare_on_inputs(handle.onnx_model, compressed, arrays, provider, limit=limit,
                             batch_size=static_batch(handle))


# ------------------------------------------------------------------------------------------------ two models


@dataclass
class PairValidation:
    """``rene_onnx.validate``: any two ONNX models with the same inputs, side by side."""

    report: Any  # rene_onnx.report.Report


def validate_models(original: str | os.PathLike, compressed: str | os.PathLike, *, input_shapes=None,
                    data: str | None = None, calib: str | os.PathLike | None = None, provider: str = "cpu",
                    latency: bool = True, repeats: int = 50, device_io: bool = False,
                    runtime: str = "onnxruntime") -> PairValidation:
    """Counts, numerics (random inputs, and ``calib`` inputs), latency and top-1 on ``data``'s test split."""
    from rene_onnx.load import read_onnx
    from rene_onnx.report.environment import environment_meta
    from rene_onnx.report.report import Report
    from rene_onnx.validate.numerics import input_feeds
    from rene_onnx.validate.fidelity import labelled
    from rene_onnx.validate.pair import compare_pair

    from .inputs import test_split_arrays

    emit("load", message="models")
    a, b = read_onnx(original), read_onnx(compressed)
    shapes = _named_shapes(a, input_shapes)
    try:
        feeds = input_feeds(a, shapes)
    except ValueError as e:  # dynamic dims without a shape
        raise LoadError(f"{Path(original).name}: {getattr(e, 'message', e)} (give the dynamic dims, by name)",
                        option="input_shape") from None
    test_data = None
    if data:
        emit("load", message="data", data=str(data))
        test_data = test_split_arrays(data)
    pair_calib = None
    if calib:
        emit("validate", message="calib")
        pair_calib = _pair_calib_numerics(a, b, Path(original).name, shapes, calib, provider, runtime)
    emit("validate", message="numerics and latency")
    res = compare_pair(a, b, feeds, shapes, provider, latency, repeats=repeats, test_data=test_data,
                       device_io=device_io, runtime=runtime)
    ca, cb = res.counts
    report = Report(
        params={"before": ca.params, "after": cb.params}, macs={"before": ca.macs, "after": cb.macs},
        latency_ms=res.latency, layers=[], search=None, accuracy=res.accuracy,
        numerics={**labelled(res.numerics, "random", len(next(iter(feeds.values())))),
                  **({"calib": pair_calib} if calib else {})},
        meta={"original": str(original), "compressed": str(compressed), "runtime": runtime, **environment_meta()},
    )
    return PairValidation(report)


def _pair_calib_numerics(a, b, name, shapes, calib, provider, runtime="onnxruntime"):
    """Both models compared on up to :data:`CALIB_COMPARE` samples of the ``calib`` inputs (a dict, or None)."""
    from rene_onnx.data.arrays import unlabeled_input_arrays
    from rene_onnx.load import input_specs
    from rene_onnx.validate.fidelity import labelled
    from rene_onnx.validate.numerics import compare, compare_on_inputs
    from rene_onnx.validate.pair import run_on

    specs, _ = input_specs(a, shapes or {}, name)
    try:
        tensors = unlabeled_input_arrays(calib, specs)
    except LoadError as e:
        raise LoadError(e.message, option="calib") from None
    arrays = {s.name: t.numpy() for s, t in zip(specs, tensors)}
    n = min(len(tensors[0]), CALIB_COMPARE)
    if runtime != "onnxruntime":  # both models on the other runtime, in the graphs' batch (fixed or 1 .. all)
        first = a.graph.input[0].type.tensor_type.shape.dim
        fixed = first[0].dim_value if first and first[0].HasField("dim_value") else None
        return labelled(compare(run_on(runtime, a, arrays, fixed, CALIB_COMPARE),
                                run_on(runtime, b, arrays, fixed, CALIB_COMPARE)), "calib", n)
    res = compare_on_inputs(a, b, arrays, provider, limit=CALIB_COMPARE)
    return None if res is None else labelled(res, "calib", n)


def _named_shapes(model: onnx.ModelProto, given):
    """``input_shape`` (a plain shape or {name: shape}) -> {graph input name: shape} (None when not given)."""
    from rene_onnx.graph import graph_inputs

    if given is None or isinstance(given, dict):
        return given
    names = [i.name for i in graph_inputs(model)]
    if len(names) != 1:
        raise LoadError(f"the model has {len(names)} inputs ({', '.join(names)}): give NAME:DIMS for each input "
                        f"with dynamic dims", option="input_shape")
    return {names[0]: given}
