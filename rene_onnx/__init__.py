"""rene-onnx: compress pretrained networks by low-rank decomposition (RENE) and ship them as ONNX.

The library is the product; the ``rene-onnx`` CLI is a shell over these functions, with the same
option names (snake_case here) and defaults::

    import rene_onnx

    result = rene_onnx.compress("resnet20", weights="r20.pt", target_params=0.25, output="r20.onnx")
    plan = rene_onnx.search("resnet20", weights="r20.pt", data_free=True, target_macs=0.5).plan
    report = rene_onnx.validate("original.onnx", "r20.onnx", calib="test.npz").report
    edge = rene_onnx.export("r20.onnx", to="int8,ort", calib="calib.npz", output_dir="edge/")
    real = rene_onnx.inputs("model.onnx", output="calib.npz")  # offline photos / sentences for calib

Everything is imported lazily, so ``import rene_onnx`` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "compress": "rene_onnx.api",
    "search": "rene_onnx.api",
    "inputs": "rene_onnx.api",
    "CompressOptions": "rene_onnx.options",
    "SearchCommandOptions": "rene_onnx.options",
    "ValidateOptions": "rene_onnx.options",
    "InputsOptions": "rene_onnx.options",
    "CompressConfig": "rene_onnx.config",
    "RewriteConfig": "rene_onnx.config",
    "ValidateConfig": "rene_onnx.config",
    "SearchConfig": "rene_onnx.config",
    "FinetuneConfig": "rene_onnx.config",
    "RankPlan": "rene_onnx.plan",
    "LayerPlan": "rene_onnx.plan",
    "Factors": "rene_onnx.plan",
    "Report": "rene_onnx.report.report",
    "ReneError": "rene_onnx.errors",
    "UserError": "rene_onnx.errors",
    "StageError": "rene_onnx.errors",
}
#: packages that are also entry points (calling the package calls rene_onnx.api's function)
_CALLABLE_PACKAGES = ("validate", "export")

__all__ = ["__version__", *_LAZY, *_CALLABLE_PACKAGES]


def __getattr__(name: str):
    if name in _CALLABLE_PACKAGES:
        return importlib.import_module(f"rene_onnx.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rene_onnx' has no attribute {name!r}")
