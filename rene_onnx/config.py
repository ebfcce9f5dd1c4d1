"""Typed configs for the pipeline's stages (no torch, no onnx imported here).

``SearchConfig`` (the RENE rank search) and ``FinetuneConfig`` (fine-tuning
with distillation) live here with the pipeline's own configs; their engines
(``rene_onnx.engine.search`` / ``rene_onnx.engine.finetune``) re-export them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rene_onnx.errors import ConfigError

PROVIDERS = ("cpu", "cuda", "tensorrt")
OBJECTIVES = ("ce", "distill")  # the search's L_val with data: cross-entropy, or output error to the original
IMPORTANCE = ("implied", "measured")  # how the budgeted final choice weighs each layer's error curve
SENSITIVITY = ("none", "synthetic")  # data-free: what the budgeted choice weighs each layer's error curve with


def _check_choices(cfg: Any, choices: dict[str, Any], show=str) -> None:
    """ValueError naming the first field of ``cfg`` whose value is not among its ``choices[field]``."""
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {show(allowed)}, got {value!r}")


@dataclass(frozen=True)
class RewriteConfig:
    """How layers are factorized when the ranks are given (not searched).

    ``ranks``: a fraction of each layer's parameters to keep (``0.25``), a path to a
    JSON rank plan (``rene-onnx search`` writes one), or a mapping
    ``{layer_name: rank | [r1, r2]}``.
    """

    method: str = "auto"  # tt | cp | svd | auto (tt for k x k convs, svd for 1x1 / Linear)
    ranks: float | str | Path | dict[str, Any] | None = None
    rank_multiple: int = 1
    rank_multiple_why: str = ""  # how the rank multiple was chosen (recorded in the report)


@dataclass(frozen=True)
class ValidateConfig:
    provider: str = "cpu"
    latency: bool = True
    warmup: int = 10
    repeats: int = 50
    seed: int = 0
    #: keep a layer dense when its factorized chain is not faster (per-node onnxruntime profile on the CPU,
    #: isolated sub-models on a GPU); None: on when latency is measured
    latency_aware: bool | None = None
    profile_repeats: int = 20
    #: time with inputs / outputs on the provider's device (I/O binding): no host <-> GPU copies
    device_io: bool = False
    #: also measure onnxruntime static INT8 of the original (the alternative a user would pick instead);
    #: None: on with calibration inputs for a model with convs, when latency is measured
    compare_int8: bool | None = None

    def __post_init__(self) -> None:
        _check_choices(self, {"provider": PROVIDERS})

    def latency_aware_on(self) -> bool:
        """Whether the rewrite keeps slower chains dense: ``latency_aware``, else on when latency is measured."""
        return self.latency if self.latency_aware is None else self.latency_aware


@dataclass(frozen=True)
class SearchConfig:
    """Options of :func:`rene_onnx.engine.search.search` (its module docstring explains the method)."""

    method: str = "auto"  # tt | cp | svd | auto (tt for k x k convs, svd for 1x1 convs / Linear)
    preset: str = "auto"  # auto | paper-cifar | paper-imagenet
    n_candidates: int = 10  # auto preset: candidates per layer in the first stage
    factor: int = 10  # f: the step is divided by f after each stage (auto preset / custom bounds)
    bounds: tuple[int, int, int] | None = None  # (lower, upper, step): overrides the preset
    gamma: float = 0.4
    beta: float = 0.8
    target_params: float | None = None  # fraction of the original model's parameters to keep
    target_macs: float | None = None  # fraction of the original model's MACs to keep
    tolerance: float = 0.02  # relative: the plan lands within target * (1 +- tolerance)
    steps: int = 60  # alternating (weight, alpha) steps per stage
    warmup_steps: int = 10  # weights-only steps at the start of each stage
    lr: float = 1e-3  # weight step (candidate factors)
    alpha_lr: float = 0.5  # alpha step (logits), per layer (see the module docstring)
    momentum: float = 0.9
    grad_clip: float = 10.0
    calib_batch_size: int = 8  # with data: samples per alpha step
    max_calib_batches: int = 4  # with data: distinct calibration batches, cycled
    # with data, L_val of the alpha step: "ce" = cross-entropy against the calibration labels (validation-ce),
    # "distill" = relative squared error of the model output to the original model's, no labels (validation-distill)
    objective: str = "ce"
    # activation-aware SVD: svd layers (Linear, groups=1 convs) are decomposed in the metric of their inputs'
    # second moment (from the calibration inputs, or ``moments`` given to search); needs data or moments
    whiten: bool = False
    whiten_eps: float = 1e-2  # damping of the input moment, relative to its mean diagonal
    # budgeted final choice: per-layer weights of the error curves; "implied" by the searched ranks, or
    # "measured" = the increase of L_val when that layer alone is truncated, per unit of its error (needs data)
    importance: str = "implied"
    # data-free with a budget: "synthetic" = the measured importance on synthetic inputs (ZeroQ-style, matched to
    # the BatchNorm statistics; Gaussian without them: rene_onnx.engine.sensitivity), "none" = implied weights
    sensitivity: str = "synthetic"
    seed: int = 0
    data_free: bool | None = None  # None: data-free iff no calib_loader is given
    rank_multiple: int = 1
    layers: list[str] | None = None  # search only these layers (default: every Conv / Linear)
    exclude: list[str] = field(default_factory=list)  # layers kept dense
    checkpoint_dir: str | Path | None = None
    resume: bool = True
    max_backoffs: int = 3
    backoff: float = 0.5  # lr multiplier after a non-finite step
    snapshot_every: int = 10  # steps between last-good-state snapshots (NaN guard)
    progress_every: int = 10
    cp_iters: int = 100  # CP-ALS sweeps for the largest CP candidate
    # BLAS threads for the decompositions (numpy eigh / SVD of small matrices): multithreaded LAPACK was up
    # to 100x slower here whenever other jobs shared the cores, one thread barely slower when they did not;
    # None leaves numpy's default
    decompose_threads: int | None = 1
    # torch threads while the stages run (restored afterwards); None leaves torch's setting. With data the
    # search is one small-batch forward / backward per step: on cores shared with other jobs one thread was
    # 2.3x faster than two for ResNet-18 (benchmarks/search_speed.py), on idle cores two are faster
    threads: int | None = None

    def __post_init__(self) -> None:
        from rene_onnx.decompose.choose import method_choices  # lazily: this module stays light
        from rene_onnx.engine.search_ladder import PRESETS

        _check_choices(self, {"method": method_choices(), "preset": PRESETS}, ", ".join)
        for name in ("target_params", "target_macs"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise ConfigError(f"{name} is a fraction of the original model to keep, in (0, 1], got {v}")
        positive = ("gamma", "beta", "lr", "alpha_lr", "grad_clip", "tolerance")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not 0.0 < self.backoff < 1.0:
            raise ConfigError(f"backoff must lie in (0, 1), got {self.backoff}")
        for name in ("steps", "calib_batch_size", "max_calib_batches", "rank_multiple", "snapshot_every",
                     "progress_every", "cp_iters"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "max_backoffs"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("decompose_threads", "threads"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        _check_choices(self, {"objective": OBJECTIVES, "importance": IMPORTANCE, "sensitivity": SENSITIVITY}, ", ".join)
        if not self.whiten_eps > 0:
            raise ConfigError(f"whiten_eps must be positive, got {self.whiten_eps}")
        if self.n_candidates < 2:
            raise ConfigError(f"n_candidates must be >= 2, got {self.n_candidates}")
        if self.factor < 2:
            raise ConfigError(f"factor must be >= 2, got {self.factor}")
        if self.bounds is not None:
            object.__setattr__(self, "bounds", tuple(int(b) for b in self.bounds))
            if len(self.bounds) != 3:
                raise ConfigError(f"bounds must be (lower, upper, step), got {self.bounds}")
        object.__setattr__(self, "exclude", list(self.exclude))

    def fingerprint(self) -> str:
        """Hash of everything that changes the search's stages (not the budget, checkpointing or progress).

        A finished checkpoint can thus be resumed with another budget: only the final choice runs again.
        """
        d = asdict(self)
        for k in ("checkpoint_dir", "resume", "progress_every", "tolerance", "target_params", "target_macs", "threads",
                  "decompose_threads", "importance", "sensitivity"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


DISS_NORMS = ("mse", "relative", "sum")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")
SELECT_ON = ("calib", "last")
OUTPUT_LOSSES = ("kd", "mse", "cosine")
SELECT_METRICS = ("top1", "cosine", "mse")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :func:`rene_onnx.engine.finetune.finetune`.

    ``select_on="calib"`` keeps the epoch with the best accuracy on
    ``val_loader`` (a validation / calibration split, never the test split; an
    unlabeled ``val_loader`` scores agreement with the teacher's top-1);
    ``"last"`` keeps the last epoch. Without a ``val_loader`` the last epoch is kept.
    ``batch_size`` is used when ``train_loader`` is a ``Dataset`` (and by the DDP
    entry); it is per process under DDP.
    """

    epochs: int = 10
    lr: float = 0.01
    optimizer: str = "sgd"  # "sgd" (momentum, Nesterov) | "adam" | "adamw"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    batch_size: int = 128
    schedule: str = "cosine"  # over the planned steps | "constant"
    lambda_diss: float = 0.5
    weight_term: bool = True  # include sum_i ||W_i - What_i||^2
    output_term: bool = True  # include sum_i ||O_i(x) - D_i(x)||^2
    diss_norm: str = "relative"  # "relative" | "mse" | "sum" (see the module docstring)
    logit_kd: float = 0.0  # weight of the logit distillation term (1.0 is used on unlabeled batches when 0)
    temperature: float = 1.0  # T of L_kd; T=4 with lr 0.02 diverged on unlabeled digits (T^2 scaling)
    distill_layers: tuple[str, ...] | None = None  # None: every factorized layer of the student
    use_labels: bool = True  # False: treat every batch as unlabeled (data-free distillation)
    max_steps: int | None = None  # cap on optimizer steps over all epochs
    grad_clip: float | None = None  # max global grad norm
    seed: int = 0
    device: str | None = None  # None: "cuda" if available else "cpu" (under DDP: cuda:LOCAL_RANK)
    select_on: str = "calib"  # "calib" | "last"
    eval_initial: bool = True  # score the student before training (it can win the selection)
    log_every: int = 10  # progress callback every this many steps
    find_unused_parameters: bool = False  # passed to DistributedDataParallel
    amp: bool = False  # bfloat16 autocast for the forward passes (losses are computed in float32)
    # the output-matching term L_kd (weight logit_kd; 1.0 on unlabeled batches when 0): "kd" = T^2 KL of the
    # softmaxes (classifiers), "mse" = mean squared error, "cosine" = mean (1 - cos) per sample (embeddings)
    output_loss: str = "kd"
    # what select_on="calib" maximizes on val_loader: "top1" (labels, or agreement with the teacher's top-1),
    # "cosine" (mean cosine of the outputs to the teacher's, per sample), "mse" (minus the outputs' mean
    # squared error to the teacher's)
    select_metric: str = "top1"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        _check_choices(self, {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "diss_norm": DISS_NORMS,
                              "select_on": SELECT_ON, "output_loss": OUTPUT_LOSSES, "select_metric": SELECT_METRICS})
        if self.lambda_diss < 0 or self.logit_kd < 0 or self.weight_decay < 0:
            raise ConfigError("lambda_diss, logit_kd and weight_decay must be >= 0")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"grad_clip must be positive or None, got {self.grad_clip}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {self.log_every}")
        if self.distill_layers is not None:
            object.__setattr__(self, "distill_layers", tuple(self.distill_layers))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["distill_layers"] is not None:
            d["distill_layers"] = list(d["distill_layers"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FinetuneConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown FinetuneConfig field(s): {unknown}")
        return cls(**d)


@dataclass(frozen=True)
class CompressConfig:
    """Everything the compress pipeline needs (:func:`rene_onnx.pipeline.compress`), built from the user's options
    (:meth:`rene_onnx.options.CompressOptions.compress_config`). A value: nothing changes it."""

    model: str = "digits_resnet"
    weights: str | Path | None = None
    #: one shape (batch included) for a single-input model, or {graph input name: shape} for several inputs
    input_shape: tuple[int, ...] | dict[str, tuple[int, ...]] | None = None
    output: str | Path | None = None  # the compressed model is written here (nothing written when None)
    report: str | Path | None = None
    plots: str | Path | None = None  # ranks.png, layers.png, search.png are written into this folder
    data: str | None = None  # dataset name or path, for accuracy (and search / fine-tuning)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    #: used when ``rewrite.ranks`` is None (ranks are searched); None: the defaults
    search: SearchConfig | None = None
    #: None or epochs=0: no fine-tuning
    finetune: FinetuneConfig | None = None
    data_free: bool = False  # search on the weights only, even when data is available
    calib: str | Path | None = None  # unlabeled inputs (.npy/.npz; one array per input name) for distillation
    #: ranks chosen to run at this fraction of the original's latency (pipeline/latency_target.py)
    target_latency: float | None = None
    distill_data: str | Path | None = None  # more unlabeled inputs, only trained on by fine-tuning
    command: str = ""  # the command line, recorded in the report
    #: the share of ``calib`` held out for fidelity (never searched, initialized, distilled or selected on); 0: none
    holdout: float = 0.2
    #: the fidelity floor on the held-out inputs after fine-tuning (rene_onnx.pipeline.floor); None: none
    min_fidelity: float | None = None
    #: edge artifacts of the compressed model, written next to ``output`` (rene_onnx.pipeline.edge); (): none
    export: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("target_params", "target_macs"):
            value = getattr(self.search, key, None)
            if value is not None and not 0 < value < 1:
                raise ConfigError(f"must be in (0, 1), got {value}", option=key)
        if self.rewrite.ranks is not None and self.search is not None and (
                getattr(self.search, "target_params", None) is not None
                or getattr(self.search, "target_macs", None) is not None):
            raise ConfigError("conflicts with target_params / target_macs: give one of them", option="ranks")
        if self.distill_data is not None and (self.calib is None or self.data is not None):
            raise ConfigError("distills next to --calib's inputs: give --calib (and no --data)", option="distill_data")
