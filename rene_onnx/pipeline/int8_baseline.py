"""What a user would pick instead, measured in the same compress run (``--compare-int8``, on by default with
``--calib`` for a model with convs).

onnxruntime's static INT8 quantization of the *original* model (``quant_pre_process`` + ``quantize_static``,
QDQ, per-channel int8 weights, uint8 activations, MinMax ranges: :mod:`rene_onnx.export.int8`'s defaults),
calibrated on the used part of ``--calib`` -- the inputs the compression itself learned from, never the
held-out part. The validation stage then times it interleaved with the original and the compressed model and
compares it with the original on the same held-out inputs, so the report can say when INT8 alone is the
better deal.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import onnx
import torch

from rene_onnx.config import ValidateConfig
from rene_onnx.load import ModelHandle
from rene_onnx.progress import emit

from .inputs import static_batch


def wanted(cfg: ValidateConfig, original: onnx.ModelProto) -> bool:
    """``cfg.compare_int8``; by default (None) on for a model with convs when latency is measured (static INT8 is
    what a user of a conv net on a CPU picks; a transformer's user would quantize dynamically)."""
    from rene_onnx.export.int8 import is_conv_model

    if cfg.compare_int8 is not None:
        return cfg.compare_int8
    return cfg.latency and is_conv_model(original)


def quantize_original(handle: ModelHandle, calib: tuple[torch.Tensor, ...]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """``(INT8 model, its quantization settings)`` of ``handle``'s original ONNX graph, calibrated on ``calib``."""
    from rene_onnx.export.int8 import Int8Options, preprocess, quantize

    emit("int8 baseline", message="quantizing the original")
    arrays = {s.name: t.numpy() for s, t in zip(handle.specs, calib)}
    with tempfile.TemporaryDirectory(prefix="rene-int8-") as tmp:
        src, pre, dst = (os.path.join(tmp, f"{n}.onnx") for n in ("original", "pre", "int8"))
        onnx.save(handle.onnx_model, src)
        notes = preprocess(src, pre)
        res = quantize(pre, dst, "static", Int8Options(), arrays, static_batch(handle))
        model = onnx.load(dst)
    return model, {**res.settings, **({"notes": notes} if notes else {})}


def baseline_meta(model: onnx.ModelProto, settings: dict, original: onnx.ModelProto, compressed: onnx.ModelProto,
                  latency: dict | None, fidelity: dict | None) -> dict[str, Any]:
    """``report.meta["int8_baseline"]``: what it is, sizes (serialized bytes), latency and fidelity."""
    sizes = {"original": original.ByteSize(), "compressed": compressed.ByteSize(), "int8": model.ByteSize()}
    out: dict[str, Any] = {"what": "onnxruntime static INT8 of the original (quantize_static, QDQ, per-channel), "
                                   "calibrated on the used part of --calib",
                           "settings": settings, "size_bytes": sizes, "smaller": sizes["original"] / sizes["int8"],
                           "fidelity": fidelity}
    if latency is not None and latency.get("int8_ms") is not None:
        out["latency_ms"] = latency["int8_ms"]
        out["speedup"] = latency["before"] / latency["int8_ms"] if latency["int8_ms"] else None
    return out
