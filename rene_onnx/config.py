"""Typed configs for the pipeline's stages (no torch, no onnx imported here).

``SearchConfig`` and ``FinetuneConfig`` live next to their engines
(``rene_onnx.engine.search`` / ``rene_onnx.engine.finetune``) and are
re-exported from ``rene_onnx``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROVIDERS = ("cpu", "cuda", "tensorrt")


@dataclass
class RewriteConfig:
    """How layers are factorized when the ranks are given (not searched).

    ``ranks``: a fraction of each layer's parameters to keep (``0.25``), a path to a
    JSON rank plan (``rene-onnx search`` writes one), or a mapping
    ``{layer_name: rank | [r1, r2]}``.
    """

    method: str = "auto"  # tt | cp | svd | auto (tt for k x k convs, svd for 1x1 / Linear)
    ranks: float | str | Path | dict[str, Any] | None = None
    rank_multiple: int = 1


@dataclass
class ValidateConfig:
    provider: str = "cpu"
    latency: bool = True
    warmup: int = 10
    repeats: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, got {self.provider!r}")


@dataclass
class CompressConfig:
    """Everything ``rene_onnx.compress`` needs; the CLI fills it from its options."""

    model: str = "digits_resnet"
    weights: str | Path | None = None
    input_shape: tuple[int, ...] | None = None
    output: str | Path = "compressed.onnx"
    report: str | Path | None = None
    data: str | None = None  # dataset name or path, for accuracy (and search / fine-tuning)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    command: str = ""  # the command line, recorded in the report
