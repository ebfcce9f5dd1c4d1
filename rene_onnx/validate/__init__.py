"""Validation of an ONNX model: parameter / MAC counts, numerics vs a reference, latency on onnxruntime.

Nothing here imports torch (the latency worker must run without it).

Calling this package is calling the library entry point: ``rene_onnx.validate(original, compressed, **options)`` (:mod:`rene_onnx.api`).
"""
from .counts import NodeCount, OnnxCounts, count_onnx
from .latency import Latency, measure_latency, profile_nodes
from .numerics import Numerics, ProviderUnavailable, compare, input_feeds, make_session, run_onnx

__all__ = [
    "NodeCount", "OnnxCounts", "count_onnx",
    "Numerics", "ProviderUnavailable", "compare", "input_feeds", "make_session", "run_onnx",
    "Latency", "measure_latency", "profile_nodes",
]

from rene_onnx.callable_module import make_callable  # noqa: E402

make_callable(__name__)
