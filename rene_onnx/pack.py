"""Weight-stripped model packs: ship ONNX graphs without their weights, refill them at random where they are timed.

Latency does not depend on the weights' values, so a pack of graphs (dims and dtypes kept, float data
dropped) is enough to time a model on another machine (a GPU host): :func:`strip_weights` before
shipping, :func:`refill_weights` there. Torch-free.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

STRIPPED = "rene:stripped"  # the doc_string that marks an emptied initializer
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


def strip_weights(model: onnx.ModelProto, min_size: int = 1024) -> onnx.ModelProto:
    """A copy without the data of float initializers of >= ``min_size`` elements (name, dims and dtype kept)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.data_type in _FLOATS and int(np.prod(t.dims)) >= min_size:
            dims, dt, name = list(t.dims), t.data_type, t.name
            t.Clear()
            t.name, t.data_type = name, dt
            t.dims.extend(dims)
            t.doc_string = STRIPPED
    return m


def refill_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Fill the initializers :func:`strip_weights` emptied with seeded N(0, 1/fan_in) values, in place; returns it."""
    rng = np.random.default_rng(seed)
    for t in model.graph.initializer:
        if t.doc_string == STRIPPED:
            dims = tuple(t.dims)
            fan_in = int(np.prod(dims[1:])) if len(dims) > 1 else 1
            dt = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
            a = (rng.standard_normal(dims) / np.sqrt(fan_in)).astype(dt)
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    return model


__all__ = ["STRIPPED", "refill_weights", "strip_weights"]
