"""ONNX graph surgery (onnx-graphsurgeon): rewrite Conv / Gemm / MatMul nodes into factorized chains.

>>> from rene_onnx import passes
>>> layers = passes.find_layers(model)                 # every Conv / ConvTranspose / Gemm / MatMul
>>> new_model, records = passes.apply_factors(model, {"node_conv2d": lf}, {"fc.bias": b})

Each pass (``conv_tt``, ``conv_cp``, ``conv_svd``, ``gemm_svd``, ``matmul_svd`` ..)
lives in its own module with ``check(graph, node, lf) -> str | None`` and
``rewrite(graph, node, lf) -> list[gs.Node]``; :mod:`.registry` keys them by
method name and :data:`REGISTRY` lists them.
No torch here.
"""
from __future__ import annotations

from .apply import apply_factors
from .base import Pass, PassRecord
from .layers import LAYER_OPS, OnnxLayer, analyze, find_layers, node_keys
from .registry import PASSES, REGISTRY, find_pass, methods_for
from .revert import revert_layers

__all__ = ["apply_factors", "find_layers", "find_pass", "methods_for", "revert_layers", "analyze", "node_keys", "OnnxLayer",
           "Pass", "PassRecord", "PASSES", "REGISTRY", "LAYER_OPS"]
