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
    #: keep a layer dense when its factorized chain is not faster (per-node onnxruntime profile);
    #: None: on when latency is measured
    latency_aware: bool | None = None
    profile_repeats: int = 20

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}, got {self.provider!r}")


@dataclass
class CompressConfig:
    """Everything ``rene_onnx.compress`` needs; the CLI fills it from its options."""

    model: str = "digits_resnet"
    weights: str | Path | None = None
    #: one shape (batch included) for a single-input model, or {graph input name: shape} for several inputs
    input_shape: tuple[int, ...] | dict[str, tuple[int, ...]] | None = None
    output: str | Path = "compressed.onnx"
    report: str | Path | None = None
    data: str | None = None  # dataset name or path, for accuracy (and search / fine-tuning)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    #: rene_onnx.engine.search.SearchConfig; used when ``rewrite.ranks`` is None (ranks are searched)
    search: Any = None
    #: rene_onnx.engine.finetune.FinetuneConfig; None or epochs=0: no fine-tuning
    finetune: Any = None
    data_free: bool = False  # search on the weights only, even when data is available
    calib: str | Path | None = None  # unlabeled inputs (.npy/.npz; one array per input name) for distillation
    command: str = ""  # the command line, recorded in the report

    def __post_init__(self) -> None:
        for key in ("target_params", "target_macs"):
            value = getattr(self.search, key, None)
            if value is not None and not 0 < value < 1:
                raise ValueError(f"--{key.replace('_', '-')} must be in (0, 1), got {value}")
        if self.rewrite.ranks is not None and self.search is not None and (
                getattr(self.search, "target_params", None) is not None
                or getattr(self.search, "target_macs", None) is not None):
            raise ValueError("--ranks and --target-params/--target-macs conflict: give one of them")
