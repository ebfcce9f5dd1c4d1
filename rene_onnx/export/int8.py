"""INT8: onnxruntime's post-training quantization (``quant_pre_process``, then ``quantize_static``).

Static (the default with calibration inputs): QDQ format, weights per channel (int8, symmetric),
activations uint8 (x86 CPUs' fast path; ``activation_type="int8"`` for ARM), ranges calibrated on
the calibration inputs only (MinMax, Entropy or Percentile). Dynamic (``quantize_dynamic``):
weights int8 ahead of time, activations quantized at run time -- for MatMul-heavy models
(transformers) with no calibration data, or on request. A conv model with no calibration data is
refused: dynamic quantization would turn its convs into slow ``ConvInteger`` nodes.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from rene_onnx.errors import StageError, UserError
from rene_onnx.progress import emit

from .inputs import batches

METHODS = ("minmax", "entropy", "percentile")
MODES = ("auto", "static", "dynamic")
CONV_OPS = ("Conv", "ConvTranspose")


@dataclass
class Int8Options:
    quantization: str = "auto"  # auto | static | dynamic
    calibration_method: str = "minmax"
    calib_samples: int = 128
    per_channel: bool = True
    activation_type: str = "uint8"  # uint8 | int8
    reduce_range: bool = False
    percentile: float = 99.999
    nodes_to_exclude: Sequence[str] = ()

    def check(self) -> None:
        if self.quantization not in MODES:
            raise UserError(f"unknown quantization {self.quantization!r} (expected one of {', '.join(MODES)})",
                            option="quantization")
        if self.calibration_method not in METHODS:
            raise UserError(f"unknown calibration method {self.calibration_method!r} "
                            f"(expected one of {', '.join(METHODS)})", option="calibration_method")
        if self.activation_type not in ("uint8", "int8"):
            raise UserError(f"must be uint8 or int8, got {self.activation_type!r}", option="activation_type")
        if self.calib_samples < 1:
            raise UserError(f"must be >= 1, got {self.calib_samples}", option="calib_samples")


@dataclass
class Int8Result:
    path: Path
    mode: str  # static | dynamic
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def is_conv_model(model: onnx.ModelProto) -> bool:
    return any(n.op_type in CONV_OPS for n in model.graph.node)


def choose_mode(model: onnx.ModelProto, opts: Int8Options, has_calib: bool) -> str:
    """static | dynamic for this model and these inputs; ``UserError`` when static has nothing to calibrate on."""
    opts.check()
    mode = opts.quantization
    if mode == "auto":
        mode = "static" if has_calib or is_conv_model(model) else "dynamic"
    if mode == "static" and not has_calib:
        what = "a conv model" if is_conv_model(model) else "static quantization"
        raise UserError(f"int8 of {what} needs calibration inputs (real samples: an .npz with one array per graph "
                        f"input); without them, set quantization to dynamic (weights-only INT8, no calibration; "
                        f"convs then run as slower ConvInteger)", option="calib")
    return mode


def preprocess(src: Path, dst: Path) -> list[str]:
    """``quant_pre_process`` (shape inference + basic optimizations); falls back to shapes only."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    try:
        with _quiet():
            quant_pre_process(str(src), str(dst))
    except Exception as e:  # symbolic shape inference fails on some graphs: retry without it
        notes.append(f"quant_pre_process: full pre-processing failed ({str(e).splitlines()[0][:120]}); "
                     f"ran it without symbolic shape inference and optimization")
        with _quiet():
            quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=True)
    return notes


class _Reader:
    """An onnxruntime ``CalibrationDataReader`` over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds, self.i = feeds, 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def __len__(self) -> int:
        return len(self.feeds)

    def rewind(self) -> None:
        self.i = 0

    def __iter__(self):
        return iter(self.feeds)


def calibration_reader(calib: dict[str, np.ndarray], batch: int | None, limit: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    feeds = batches(calib, batch or 1, limit)
    if not feeds:
        raise UserError(f"no full batch of {batch} in the calibration inputs", option="calib")
    return Reader(feeds)


def static_kwargs(opts: Int8Options) -> dict:
    """The ``quantize_static`` settings (one place: the artifact and the per-layer probes use the same)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[opts.calibration_method]
    extra = {"CalibPercentile": opts.percentile} if opts.calibration_method == "percentile" else {}
    return dict(quant_format=QuantFormat.QDQ, per_channel=opts.per_channel, reduce_range=opts.reduce_range,
                activation_type=QuantType.QUInt8 if opts.activation_type == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8, calibrate_method=method, extra_options=extra)


def quantize(pre: Path, dst: Path, mode: str, opts: Int8Options, calib: dict[str, np.ndarray] | None,
             batch: int | None, cache: Path | None = None, nodes_to_quantize: Sequence[str] | None = None,
             nodes_to_exclude: Sequence[str] | None = None) -> Int8Result:
    """Quantize the pre-processed model ``pre`` into ``dst`` (static: calibration ranges cached in ``cache``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static

    exclude = list(nodes_to_exclude if nodes_to_exclude is not None else opts.nodes_to_exclude)
    try:
        if mode == "dynamic":
            with _quiet():
                quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=opts.per_channel,
                                 reduce_range=opts.reduce_range, nodes_to_quantize=list(nodes_to_quantize or []),
                                 nodes_to_exclude=exclude)
            settings = {"mode": "dynamic", "weights": "int8", "per_channel": opts.per_channel}
            return Int8Result(dst, "dynamic", settings)
        kwargs = static_kwargs(opts)
        reader = None
        if cache is None or not cache.is_file():
            emit("export", message="calibrating", method=opts.calibration_method,
                 samples=min(opts.calib_samples, min(len(v) for v in calib.values())))
            reader = calibration_reader(calib, batch, opts.calib_samples)
        with _quiet():
            quantize_static(str(pre), str(dst), reader, nodes_to_quantize=list(nodes_to_quantize or []),
                            nodes_to_exclude=exclude, calibration_cache_path=None if cache is None else str(cache),
                            **kwargs)
    except UserError:
        raise
    except Exception as e:
        raise StageError(f"int8: onnxruntime quantization failed: {str(e).splitlines()[0] if str(e) else e!r}") from e
    settings = {"mode": "static", "format": "QDQ", "per_channel": opts.per_channel,
                "activations": opts.activation_type, "weights": "int8", "reduce_range": opts.reduce_range,
                "calibration_method": opts.calibration_method,
                "calibration_samples": min(opts.calib_samples, min(len(v) for v in calib.values())) if calib else None}
    if opts.calibration_method == "percentile":
        settings["percentile"] = opts.percentile
    if exclude:
        settings["kept_float"] = sorted(exclude)
    return Int8Result(dst, "static", settings)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantization tools print and log warnings; library code stays silent."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def node_names(path: str | os.PathLike) -> list[str]:
    return [n.name for n in onnx.load(os.fspath(path), load_external_data=False).graph.node]
