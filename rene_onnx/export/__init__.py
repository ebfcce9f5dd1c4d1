"""Export for edge runtimes: INT8 (onnxruntime QDQ), FP16, ORT format, older opsets, fixed shapes.

Each artifact is validated against the original (numerics on held-out real inputs where there are
any, latency on each runtime asked for) and described in an :class:`~rene_onnx.report.edge.ExportReport`.
One module per artifact kind (``int8``, ``fp16``, ``ort_format``, ``opset``, ``fixed_shape``), the
per-layer INT8 error (``layer_error``), the inputs (``inputs``), the validation (``measure``) and the
orchestrator. Imports onnx and onnxruntime, never torch.

Calling this package is calling the library entry point: ``rene_onnx.export(model, **options)`` (:mod:`rene_onnx.api`).
"""
from .orchestrator import TARGETS, ExportConfig, ExportResult, export_model

__all__ = ["TARGETS", "ExportConfig", "ExportResult", "export_model"]

from rene_onnx.callable_module import make_callable  # noqa: E402

make_callable(__name__)
