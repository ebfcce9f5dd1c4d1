"""FP16: onnxconverter-common's ``float16.convert_float_to_float16``.

Graph inputs and outputs keep their float32 type by default (``keep_io_types``: Cast nodes at the
edges), so the FP16 model is a drop-in replacement; ``keep_io_types=False`` makes them float16.
Weights are stored in float16 (half the size); values beyond float16's range are clamped by the
converter. On the CPU onnxruntime runs most float16 ops by casting back to float32, so the FP16
file is for size and for GPUs / NPUs; its numerics are checked here on the CPU.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import onnx

from rene_onnx.errors import MissingDependencyError, StageError


def convert(model: onnx.ModelProto, keep_io_types: bool = True) -> onnx.ModelProto:
    """``model`` in float16 (a new proto; ``model`` is not modified)."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingDependencyError("fp16 needs onnxconverter-common: pip install onnxconverter-common",
                                     option="to") from None
    src = onnx.ModelProto()
    src.CopyFrom(model)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return float16.convert_float_to_float16(src, keep_io_types=keep_io_types)
    except Exception as e:
        raise StageError(f"fp16: onnxconverter-common could not convert the model: {e}") from e
