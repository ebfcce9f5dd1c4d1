"""rene-onnx: compress pretrained networks by low-rank decomposition (RENE) and ship them as ONNX.

Public API (imported lazily, so ``import rene_onnx`` stays cheap)::

    from rene_onnx import compress, CompressConfig, RewriteConfig
    result = compress(CompressConfig(model="resnet20", rewrite=RewriteConfig(method="tt", ranks=0.25)))
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "compress": "rene_onnx.pipeline",
    "CompressConfig": "rene_onnx.config",
    "RewriteConfig": "rene_onnx.config",
    "ValidateConfig": "rene_onnx.config",
    "SearchConfig": "rene_onnx.config",
    "FinetuneConfig": "rene_onnx.config",
    "search": "rene_onnx.engine.search",
    "finetune": "rene_onnx.engine.finetune",
    "factorize_": "rene_onnx.engine.layers",
    "RankPlan": "rene_onnx.plan",
    "LayerPlan": "rene_onnx.plan",
    "Factors": "rene_onnx.plan",
    "Report": "rene_onnx.report.report",
    "export_model": "rene_onnx.export",
    "ExportConfig": "rene_onnx.export",
    "ExportReport": "rene_onnx.report.edge",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rene_onnx' has no attribute {name!r}")
