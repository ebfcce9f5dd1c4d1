"""The compress pipeline, one module per stage, in the order the data flows::

    inputs      the model (ModelHandle: torch module, original ONNX graph, layer map) and its real inputs
    ranks       the rank plan: given (a fraction, a JSON plan) or found by the RENE search
    factorize   the student: the plan's layers factorized (activation-aware / error-corrected with real inputs)
    finetune    cross-entropy + distillation from the original
    rewrite     the ORIGINAL ONNX graph rewritten from the student's factors (latency-aware on request)
    validate    counts, numerics, latency, top-1: the rewritten model against the original and the student
    report      the Report of the run
    compress    the spine chaining them (:func:`compress`)

Only this package, the loaders and the CLI see both torch and onnx. The public entry points with the
CLI's options are :func:`rene_onnx.compress`, :func:`rene_onnx.search` and :func:`rene_onnx.validate`.
"""
from .compress import CompressResult, compress, compress_io, write_outputs
from .factorize import (calib_moments, factorize, init_factors, numpy_blas_one_thread, sequential_init,
                        torch_top1, whitened_init, with_sequential)
from .finetune import Tuned, calib_split, finetune_student
from .inputs import (calib_inputs, calib_loader, layer_shapes, load_data, load_model, static_batch, test_arrays,
                     test_split_arrays)
from .ranks import parse_ranks, plan_ranks, search_ranks
from .report import build_report, finetune_meta
from .rewrite import LatencyAwareRewrite, Rewritten, dense_from_factors, latency_aware_rewrite, onnx_dense_updates, rewrite
from .validate import CALIB_COMPARE, PairValidation, Validation, calib_numerics, validate, validate_models

__all__ = [
    "CALIB_COMPARE", "CompressResult", "LatencyAwareRewrite", "PairValidation", "Rewritten", "Tuned", "Validation",
    "build_report", "calib_inputs", "calib_loader", "calib_moments", "calib_numerics", "calib_split", "compress",
    "compress_io", "dense_from_factors", "factorize", "finetune_meta", "finetune_student", "init_factors",
    "latency_aware_rewrite", "layer_shapes", "load_data", "load_model", "numpy_blas_one_thread",
    "onnx_dense_updates", "parse_ranks", "plan_ranks", "rewrite", "search_ranks", "sequential_init",
    "static_batch", "test_arrays", "test_split_arrays", "torch_top1", "validate", "validate_models",
    "whitened_init", "with_sequential", "write_outputs",
]
