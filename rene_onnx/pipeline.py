"""The spine: load -> plan ranks -> factorize -> rewrite the ONNX graph -> validate -> report.

Each stage is a function with typed inputs and outputs; ``compress`` chains
them. Only this module, the loaders and the CLI see both torch and onnx.

Models with several graph inputs (e.g. ``input_ids`` + ``attention_mask``)
work throughout: the torch model is called ``model(*x)`` with ``x`` in graph
input order, ONNX feeds come from ``ModelHandle.feeds`` (graph dtypes), and
unlabeled ``--calib`` data is an ``.npz`` with one array per input name; it is
used to distill and to compare the original and compressed ONNX models.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import nn

from rene_onnx.config import CompressConfig, RewriteConfig, ValidateConfig
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.load import LoadError, ModelHandle, load_torch
from rene_onnx.errors import UserError, first_line
from rene_onnx.files import check_io, existing, save_onnx
from rene_onnx.plan import Factors, RankPlan

Progress = Callable[[str, dict], None]


from rene_onnx.errors import RewriteError as PipelineError  # noqa: E402  (a stage failed on valid input)


@dataclass
class Rewritten:
    model: onnx.ModelProto
    records: list  # passes.PassRecord per requested node
    factors: Factors
    layer_times: dict[str, tuple] = field(default_factory=dict)  # layer -> (us dense, us factorized), if profiled
    kept_dense: dict[str, str] = field(default_factory=dict)  # layer -> why its factors were not used (latency)


@dataclass
class Validation:
    counts_before: Any
    counts_after: Any
    torch_counts: dict[str, tuple[int, int]]
    numerics: dict[str, Any]
    latency: dict[str, Any] | None
    accuracy: dict[str, Any] | None = None


@dataclass
class CompressResult:
    report: Any  # rene_onnx.report.Report
    output: Path
    plan: RankPlan
    notes: list[str] = field(default_factory=list)


def _noop(stage: str, info: dict) -> None:  # default progress callback
    pass


def _numpy_blas_one_thread():
    """numpy's OpenBLAS competing with torch's OpenMP threads made SVDs 2-10x slower here; one thread is steady.

    (Only numpy's BLAS is limited; torch keeps its own threads.)
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# ----------------------------------------------------------------------------- stages

def load_model(cfg: CompressConfig) -> ModelHandle:
    """A zoo name or ``package.module:callable`` (+ weights), or an ``.onnx`` file -> ModelHandle."""
    if str(cfg.model).endswith(".onnx"):
        from rene_onnx.load_onnx import load_onnx

        if cfg.weights is not None:
            raise LoadError("does not apply to an ONNX model (its weights are in the file)", option="weights")
        return load_onnx(cfg.model, cfg.input_shape)
    return load_torch(cfg.model, cfg.weights, cfg.input_shape)


def calib_inputs(cfg: CompressConfig, handle: ModelHandle) -> tuple[torch.Tensor, ...] | None:
    """``--calib`` inputs, one tensor per graph input in graph order (None without ``--calib``)."""
    if cfg.calib is None:
        return None
    from rene_onnx.data import unlabeled_input_arrays

    return unlabeled_input_arrays(cfg.calib, handle.specs)


def layer_shapes(handle: ModelHandle) -> dict[str, LayerShape]:
    from rene_onnx.engine.profile import layer_shapes as _shapes

    shapes = _shapes(handle.torch_model, handle.example_input())
    return {n: s for n, s in shapes.items() if n in handle.layer_map}


def parse_ranks(ranks: float | str | Path | dict | RankPlan | None) -> float | dict | RankPlan:
    """Check ``--ranks`` before any heavy work: a fraction in (0, 1], a JSON plan file, or a mapping."""
    if ranks is None:
        raise UserError("no ranks given: a fraction of each layer to keep, or a JSON rank plan", option="ranks")
    if isinstance(ranks, (dict, RankPlan)):
        return ranks
    if isinstance(ranks, (int, float)) or (isinstance(ranks, str) and _is_number(ranks)):
        frac = float(ranks)
        if not 0 < frac <= 1:
            raise UserError(f"a fraction must be in (0, 1], got {frac}", option="ranks")
        return frac
    path = Path(ranks)
    if not path.is_file():
        raise LoadError(f"rank plan not found: {path}", option="ranks")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"rank plan {path} is not valid JSON: {first_line(e)}", option="ranks") from None
    if isinstance(data, dict) and str(data.get("format", "")).startswith("rene-onnx/rank-plan"):
        try:
            return RankPlan.from_dict(data)
        except UserError as e:
            raise LoadError(f"rank plan {path}: {e.message}", option="ranks") from None
    if not isinstance(data, dict):
        raise LoadError(f"rank plan {path} must be a JSON object {{layer: rank or [r1, r2]}}", option="ranks")
    return data


def plan_ranks(shapes: dict[str, LayerShape], cfg: RewriteConfig) -> RankPlan:
    """User-given ranks -> RankPlan (a fraction, a JSON plan file, or a mapping)."""
    from rene_onnx.decompose.choose import plan_from_fraction, plan_from_mapping

    ranks = parse_ranks(cfg.ranks)
    if isinstance(ranks, float):
        return plan_from_fraction(shapes, cfg.method, ranks, rank_multiple=cfg.rank_multiple)
    try:  # the plan rules validate the user's mapping / plan: their ValueErrors are about it
        if isinstance(ranks, RankPlan):
            return _checked_plan(ranks, shapes, cfg)
        return plan_from_mapping(shapes, cfg.method, ranks, rank_multiple=cfg.rank_multiple)
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"the rank plan does not fit the model: {first_line(e)}", option="ranks") from None


def _checked_plan(plan: RankPlan, shapes: dict[str, LayerShape], cfg: RewriteConfig) -> RankPlan:
    """A saved RankPlan (from ``rene-onnx search``): re-validate it against this model."""
    from rene_onnx.decompose.choose import plan_from_mapping

    unknown = [n for n in plan.layers if n not in shapes]
    if unknown:
        raise UserError(f"the rank plan names layer(s) not in the model: {', '.join(unknown[:3])}", option="ranks")
    out = RankPlan(meta=dict(plan.meta))
    for name, lp in plan.layers.items():
        if lp.method == "dense":
            out.add(lp)
        else:
            sub = plan_from_mapping({name: shapes[name]}, lp.method, {name: list(lp.ranks)},
                                    rank_multiple=cfg.rank_multiple)
            out.add(sub.layers[name])
    return out


def factorize(handle: ModelHandle, plan: RankPlan, factors: Factors | None = None) -> nn.Module:
    """A copy of the torch model with the plan's layers swapped for factorized modules.

    ``factors`` (e.g. a search's activation-aware SVD factors) initialize the layers they name;
    the others are decomposed from their weights.
    """
    from rene_onnx.engine.layers import factorize_

    student = copy.deepcopy(handle.torch_model).eval()
    with _numpy_blas_one_thread():
        factorize_(student, plan, factors)
    return student


def whitened_init(handle: ModelHandle, plan: RankPlan, calib: tuple[torch.Tensor, ...],
                  max_samples: int = 1024, batch_size: int = 32) -> Factors | None:
    """Activation-aware SVD factors for the plan's ``svd`` layers from unlabeled ``--calib`` inputs.

    Each layer's input second moment is collected on (at most ``max_samples``) calibration samples
    and the truncation minimizes the layer's output error on them rather than ``||W - W'||``
    (:mod:`rene_onnx.engine.calibrate`). ``None`` when the plan has no svd layer whose moment can
    be collected.
    """
    from rene_onnx.engine.calibrate import whitened_factors

    moments = calib_moments(handle, calib, [n for n, lp in plan.layers.items() if lp.method == "svd"],
                            max_samples, batch_size)
    if not moments:
        return None
    with _numpy_blas_one_thread():
        return whitened_factors(handle.torch_model, plan, moments)


def sequential_init(handle: ModelHandle, plan: RankPlan, calib: tuple[torch.Tensor, ...],
                    max_samples: int = 1024, batch_size: int = 32) -> Factors | None:
    """Error-corrected activation-aware SVD factors for the plan's ``svd`` Linear layers (``--calib``, not data-free).

    The layers are fitted in forward order on the partly compressed model's own inputs to the original
    layers' outputs (:func:`rene_onnx.engine.sequential.sequential_factorize_`), so each truncation also
    corrects the error the earlier ones left. On all-MiniLM-L6-v2 at -30 % of the Linear parameters this
    lifted the held-out cosine before distillation from 0.925 (plain whitening, same plan) to 0.933
    (``benchmarks/results/minilm.json``). A model with an integer input named like ``*mask*`` (a transformer's
    attention mask) counts only its unmasked tokens. ``None`` when the plan has no such layer.
    """
    from rene_onnx.engine.sequential import sequential_factorize_

    named = dict(handle.torch_model.named_modules())
    if not any(lp.method == "svd" and isinstance(named.get(n), nn.Linear) for n, lp in plan.layers.items()):
        return None
    masks = [i for i, s in enumerate(handle.specs) if "mask" in s.name.lower() and s.dtype != "float32"]
    row_mask = None
    if handle.multi_input and masks:
        row_mask = lambda x, i=masks[0]: x[i]  # noqa: E731  (B, T) of 0 / 1 for the (B, T, C) Linear inputs
    student = copy.deepcopy(handle.torch_model).eval()
    with _numpy_blas_one_thread():
        factors = sequential_factorize_(handle.torch_model, student, plan, list(_calib_loader(calib, max_samples,
                                        batch_size)), row_mask=row_mask)
    return factors if factors.layers else None


def calib_moments(handle: ModelHandle, calib: tuple[torch.Tensor, ...], layers: list[str],
                  max_samples: int = 1024, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Input second moments ``E[x x^T]`` of ``layers`` (those whose moment can be collected) on at most
    ``max_samples`` calibration samples -- many more than the search's few calibration batches, which
    would leave a wide layer's moment rank-deficient and the whitening fitted to them."""
    from rene_onnx.engine.calibrate import input_moments, moment_supported

    named = dict(handle.torch_model.named_modules())
    layers = [n for n in layers if n in named and moment_supported(named[n]) is None]
    if not layers:
        return {}
    return input_moments(handle.torch_model, _calib_loader(calib, max_samples, batch_size), layers)


def _calib_loader(calib: tuple[torch.Tensor, ...], max_samples: int, batch_size: int) -> torch.utils.data.DataLoader:
    """The first ``max_samples`` ``--calib`` samples in order, as unlabeled batches."""
    from rene_onnx.data import unlabeled_dataset

    return torch.utils.data.DataLoader(unlabeled_dataset([t[:max_samples] for t in calib]), batch_size=batch_size)


def with_sequential(handle: ModelHandle, plan: RankPlan, calib: tuple[torch.Tensor, ...],
                    init: Factors | None) -> Factors | None:
    """``init`` with its Linear layers replaced by :func:`sequential_init`'s (``meta["sequential"]`` lists them)."""
    seq = sequential_init(handle, plan, calib)
    if seq is None:
        return init
    base = init or Factors()
    return Factors(layers={**base.layers, **seq.layers}, dense=dict(base.dense),
                   meta={**base.meta, "sequential": sorted(seq.layers)})


def rewrite(handle: ModelHandle, student: nn.Module, latency_aware: ValidateConfig | None = None) -> Rewritten:
    """Rewrite the ORIGINAL ONNX graph from the student's factors and updated dense weights.

    With ``latency_aware`` (a ValidateConfig: provider, repeats), every layer's dense node and
    factorized chain are profiled on onnxruntime, and a layer whose chain is not faster is kept
    dense -- with the weight its factors represent, and ``student`` is changed the same way
    (``densify_``) so torch and ONNX still compute the same function.
    """
    from rene_onnx import passes
    from rene_onnx.engine.layers import collect_factors, densify_
    from rene_onnx.load_onnx import onnx_dense_updates

    factors = collect_factors(handle.deployable(student), buffers=True)
    by_node, layer_of = {}, {}
    for name, lf in factors.layers.items():
        ref = handle.layer_map.get(name)
        if ref is None:
            raise PipelineError(f"layer {name} is not in the ONNX graph: {handle.unmapped.get(name, 'unmapped')}")
        by_node[ref.node] = lf
        layer_of[ref.node] = name
    dense = onnx_dense_updates(handle, factors.dense)
    times: dict[str, tuple] = {}
    kept: dict[str, str] = {}
    if latency_aware is not None and by_node:
        from rene_onnx.validate.latency_aware import latency_aware_rewrite

        res = latency_aware_rewrite(handle.onnx_model, by_node, dense, handle.feeds(handle.example_input()),
                                    latency_aware.provider, repeats=latency_aware.profile_repeats)
        model, records = res.model, res.records
        times = {layer_of[n]: t for n, t in res.times.items() if n in layer_of}
        for node in res.kept_dense:
            us_dense, us_fact = res.times[node]
            kept[layer_of[node]] = (f"kept dense: the factorized chain is not faster on {latency_aware.provider} "
                                    f"({us_fact:.0f} us vs {us_dense:.0f} us dense)")
        if kept:
            densify_(student, list(kept))
            for name in kept:
                factors.layers.pop(name)
    else:
        model, records = passes.apply_factors(handle.onnx_model, by_node, dense)
    failed = [r for r in records if r.status != "factorized"]
    if failed:
        r = failed[0]
        raise PipelineError(f"could not rewrite {r.node} ({r.op_type}): {r.reason}")
    return Rewritten(model, records, factors, times, kept)


def validate(handle: ModelHandle, student: nn.Module, compressed: onnx.ModelProto, cfg: ValidateConfig,
             test_data: tuple[np.ndarray, np.ndarray] | None = None, progress: Progress = _noop,
             calib: tuple[torch.Tensor, ...] | None = None) -> Validation:
    """Counts (ONNX and torch), ORT numerics vs the torch student, latency, and top-1 when data is given.

    Numerics run on the example inputs (``cfg.seed``); with ``calib`` (``--calib``
    inputs) the original and compressed ONNX models are also compared on up to
    :data:`CALIB_COMPARE` of them (``numerics["calib"]``).
    """
    from rene_onnx.engine.profile import count as torch_count
    from rene_onnx.validate.counts import count_onnx
    from rene_onnx.validate.numerics import compare, run_onnx
    from rene_onnx.validate.pair import measure_pair, onnx_top1

    shapes = handle.input_shapes
    before, after = count_onnx(handle.onnx_model, shapes), count_onnx(compressed, shapes)
    x = handle.example_input(cfg.seed)
    args = (x,) if isinstance(x, torch.Tensor) else x
    teacher, student = handle.deployable(handle.torch_model), handle.deployable(student)
    torch_counts = {"before": torch_count(teacher, x), "after": torch_count(student, x)}

    progress("numerics", {})
    feeds = handle.feeds(x)
    with torch.no_grad():
        ref_student = [student(*args).numpy()]
    out_orig = run_onnx(handle.onnx_model, feeds, cfg.provider)
    out_new = run_onnx(compressed, feeds, cfg.provider)
    numerics = {
        "vs_torch": compare(ref_student, out_new),  # the rewrite is exact up to float error
        "vs_original": compare(out_orig, out_new),  # the approximation error of the compression
    }
    if calib is not None:
        numerics["calib"] = _calib_numerics(handle, compressed, calib, cfg.provider)

    latency = None
    if cfg.latency:
        progress("latency", {})
        latency = measure_pair(handle.onnx_model, compressed, feeds, cfg.provider, cfg.warmup, cfg.repeats,
                               cfg.device_io)

    accuracy = None
    if test_data is not None:
        progress("accuracy", {})
        X, y = test_data
        accuracy = {
            "metric": "top1",
            "samples": int(len(y)),
            "before": onnx_top1(handle.onnx_model, X, y, cfg.provider),
            "after": onnx_top1(compressed, X, y, cfg.provider),
        }
    return Validation(before, after, torch_counts, numerics, latency, accuracy)


#: how many ``--calib`` samples the original and compressed ONNX models are compared on
CALIB_COMPARE = 64


def _calib_numerics(handle: ModelHandle, compressed: onnx.ModelProto, calib: tuple[torch.Tensor, ...],
                    provider: str):
    """Original vs compressed ONNX outputs on the first ``CALIB_COMPARE`` calibration samples."""
    from rene_onnx.validate.numerics import compare_on_inputs

    arrays = {s.name: t.numpy() for s, t in zip(handle.specs, calib)}
    return compare_on_inputs(handle.onnx_model, compressed, arrays, provider, limit=CALIB_COMPARE,
                             batch_size=static_batch(handle))


def test_split_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The held-out test split of dataset ``name`` as numpy arrays (inputs, labels)."""
    from rene_onnx.data import load_dataset

    return _test_arrays(load_dataset(name))


def load_data(cfg: CompressConfig, handle: ModelHandle):
    """The labeled dataset for search / fine-tuning / accuracy, checked against the model; None if there is none."""
    from rene_onnx import models as zoo
    from rene_onnx.data import load_dataset

    name = cfg.data
    if name is None and cfg.model in zoo.list_models() and cfg.weights is None:
        name = zoo.default_dataset(cfg.model)
    if name is None:
        return None
    if handle.multi_input or handle.specs[0].dtype != "float32":
        raise UserError(f"{name}: labeled datasets are float images; this model takes "
                        f"{', '.join(f'{k} ({v})' for k, v in handle.input_dtypes.items())}: give unlabeled inputs "
                        f"with {{calib}} (an .npz with one array per input name)", option="data",
                        refs={"calib": "FILE.npz"})
    splits = load_dataset(name)
    if min(len(splits.train), len(splits.test)) == 0:
        raise UserError(f"dataset {name} is empty: {splits.sizes()}", option="data")
    want = tuple(handle.input_shape[1:])
    if tuple(splits.input_shape) != want:
        raise UserError(f"dataset {name} has inputs {tuple(splits.input_shape)} but the model expects {want}", option="data")
    with torch.no_grad():
        classes = handle.torch_model(handle.example_input()).shape[-1]
    if classes != splits.num_classes:
        raise UserError(f"dataset {name} has {splits.num_classes} classes but the model outputs {classes}", option="data")
    return splits


def search_ranks(handle: ModelHandle, cfg: CompressConfig, splits, progress: Progress = _noop,
                 calib: tuple[torch.Tensor, ...] | None = None):
    """RENE search on the torch model -> SearchResult (its ``plan`` is the RankPlan).

    Labeled data: L_val is the cross-entropy on its calibration split. Unlabeled ``--calib``
    inputs (``calib``, without ``--data-free``): L_val is the output error to the original model
    (``objective="distill"``), the SVD layers are decomposed activation-aware (``whiten``: the
    truncation minimizes each layer's output error on these inputs) and the budget weighs the
    layers by their measured importance. Otherwise the search is data-free.
    """
    from rene_onnx.data import unlabeled_dataset
    from rene_onnx.engine.search import SearchConfig, search

    base = cfg.search or SearchConfig()
    unlabeled = splits is None and calib is not None and not cfg.data_free
    use_data = (splits is not None or unlabeled) and not cfg.data_free
    extra = {"objective": "distill", "whiten": True, "importance": "measured"} if unlabeled else {}
    # dataclasses.replace re-runs SearchConfig's checks on the combined settings
    scfg = dataclasses.replace(base, method=cfg.rewrite.method,
                               rank_multiple=cfg.rewrite.rank_multiple, data_free=not use_data,
                               layers=[n for n in handle.layer_map if n in layer_shapes(handle)], **extra)
    loader = None
    if use_data:
        loader = torch.utils.data.DataLoader(unlabeled_dataset(calib) if unlabeled else splits.calib,
                                             batch_size=scfg.calib_batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(scfg.seed))

    def report(stage: int, step: int, total: int, info: dict) -> None:
        progress("search", {"stage": stage, "step": f"{step}/{total}"})

    totals = None
    if str(cfg.model).endswith(".onnx"):
        # budgets are fractions of the ONNX model, whose count also holds what the torch import keeps as
        # buffers (e.g. a transformer's embedding tables) and the MACs of run-time MatMuls (attention)
        from rene_onnx.validate.counts import count_onnx

        c = count_onnx(handle.onnx_model, handle.input_shapes)
        totals = (c.params, c.macs)
    moments = None
    if unlabeled:  # the SVD layers (Linear, 1x1 convs) are whitened with moments from all the calibration inputs
        svd_like = [n for n, s in layer_shapes(handle).items() if s.kernel_size == 1 and s.groups == 1]
        moments = calib_moments(handle, calib, svd_like)
    return search(handle.torch_model, handle.example_input(), scfg, loader, report,  # decompose_threads=1 inside
                  moments=moments, totals=totals)


def finetune_student(handle: ModelHandle, student: nn.Module, cfg: CompressConfig, splits,
                     progress: Progress = _noop, calib: tuple[torch.Tensor, ...] | None = None):
    """Fine-tune with CE + lambda * distillation (labeled data), or distill only (``--calib`` inputs).

    ``calib``: the ``--calib`` inputs (:func:`calib_inputs`; read here when not given). The first
    tenth (at least one sample) is the validation part, the rest is trained on; batches are
    ``(x,)`` with ``x`` a tuple in graph input order for multi-input models.
    """
    from rene_onnx.data import unlabeled_dataset
    from rene_onnx.engine.finetune import finetune

    ft = cfg.finetune
    if ft is None or ft.epochs <= 0:
        return None
    teacher = handle.torch_model
    if splits is not None:
        train, val = splits.train, splits.calib
    elif cfg.calib is not None:
        xs = calib if calib is not None else calib_inputs(cfg, handle)
        if len(xs[0]) < 2:
            raise UserError(f"{cfg.calib}: needs at least 2 samples (training and validation parts)", option="calib")
        n_val = max(1, len(xs[0]) // 10)
        train = unlabeled_dataset([t[n_val:] for t in xs])
        val = unlabeled_dataset([t[:n_val] for t in xs])
        ft.use_labels = False
        if handle.multi_input or handle.specs[0].dtype != "float32":
            # not an image classifier (e.g. a sentence encoder): match and select on the outputs' cosine to the
            # original's, not on logits (KL / top-1 agreement), unless set otherwise
            if getattr(ft, "output_loss", None) == "kd" and getattr(ft, "select_metric", None) == "top1":
                ft.output_loss, ft.select_metric = "cosine", "cosine"
    else:
        return None

    def report(epoch: int, step: int, total: int, info: dict) -> None:
        progress("finetune", {"epoch": f"{epoch}/{ft.epochs}", "step": f"{step}/{total}"})

    batch = static_batch(handle)
    if batch is not None and ft.batch_size != batch:
        ft.batch_size = batch  # the graph (and so its torch import) only runs this batch size
    frozen = set(handle.frozen)
    for name, p in student.named_parameters():
        if name in frozen:  # a change could not be written into the ONNX graph: torch and ONNX would disagree
            p.requires_grad_(False)
    student.train()
    result = finetune(student, teacher, train, val, ft, report)
    student.eval().cpu()  # fine-tuning may have moved both to a GPU; the rewrite and validation work on CPU
    teacher.cpu()
    return result


# ----------------------------------------------------------------------------- the whole job

def compress(cfg: CompressConfig, progress: Progress = _noop) -> CompressResult:
    """Load -> ranks (given or searched) -> factorize -> fine-tune -> rewrite -> validate -> report.

    Writes ``cfg.output`` (and ``cfg.report``); nothing is written when a stage fails.
    """
    t0 = time.perf_counter()
    out_path = Path(cfg.output)
    check_io(*compress_io(cfg))
    if cfg.rewrite.ranks is not None:
        parse_ranks(cfg.rewrite.ranks)  # fail fast on bad ranks, before loading anything

    progress("load", {"model": cfg.model})
    handle = load_model(cfg)
    splits = load_data(cfg, handle)
    calib = calib_inputs(cfg, handle) if splits is None else None
    shapes = layer_shapes(handle)
    searched = None
    if cfg.rewrite.ranks is not None:
        progress("plan", {})
        plan = plan_ranks(shapes, cfg.rewrite)
    else:
        progress("search", {})
        searched = search_ranks(handle, cfg, splits, progress, calib)
        plan = searched.plan
    progress("factorize", {"layers": len(plan.factorized())})
    init = searched.factors if searched is not None else None
    if calib is not None and not cfg.data_free:  # activation-aware SVD, then the Linear layers fitted in order
        base = init if searched is not None else whitened_init(handle, plan, calib)
        init = with_sequential(handle, plan, calib, base)
    student = factorize(handle, plan, init)
    test_data = _test_arrays(splits)
    acc_decomposed = _torch_top1(student, test_data, static_batch(handle))
    tuned = finetune_student(handle, student, cfg, splits, progress, calib)
    progress("rewrite", {})
    v = cfg.validate
    rewritten = rewrite(handle, student, v if (v.latency_aware if v.latency_aware is not None else v.latency) else None)
    progress("validate", {})
    val = validate(handle, student, rewritten.model, cfg.validate, test_data, progress, calib)
    if val.accuracy is not None:
        val.accuracy["after_decomposition"] = acc_decomposed
        if tuned is not None:
            val.accuracy["after_finetune"] = val.accuracy.pop("after")
        else:
            val.accuracy.pop("after")
    save_onnx(rewritten.model, out_path, handle.external_data)

    report = build_report(cfg, handle, shapes, plan, rewritten, val, seconds=time.perf_counter() - t0)
    report.search = _search_section(searched)
    if tuned is not None:
        report.meta["finetune"] = {"epochs_run": tuned.epochs_run, "best_epoch": tuned.best_epoch,
                                   "seconds": round(tuned.seconds, 2), "selected_on": tuned.selected_on,
                                   "best_val_top1": tuned.best_val_top1, "stopped": tuned.stopped,
                                   "batch_size": cfg.finetune.batch_size, "optimizer": cfg.finetune.optimizer,
                                   "lr": cfg.finetune.lr, "steps": int(tuned.history[-1]["steps"]) if tuned.history else 0,
                                   "output_loss": getattr(cfg.finetune, "output_loss", None),
                                   "select_metric": getattr(cfg.finetune, "select_metric", None)}
    if init is not None and init.meta.get("sequential"):
        report.meta["init"] = {"sequential": init.meta["sequential"]}  # Linear layers fitted error-corrected
    if splits is not None:
        report.meta["data"] = {"name": splits.name, "sizes": splits.sizes()}
    elif calib is not None:
        report.meta["calib"] = {"path": str(cfg.calib), "samples": int(len(calib[0]))}
    if cfg.report is not None:
        report.save_json(cfg.report)
    return CompressResult(report, out_path, plan, handle.notes + (searched.notes if searched else []))


def compress_io(cfg: CompressConfig) -> tuple[dict, dict]:
    """(reads, writes) of a compress run, by option name, for :func:`rene_onnx.files.check_io`."""
    from rene_onnx.files import model_reads, onnx_outputs

    ranks = cfg.rewrite.ranks
    ckpt = cfg.search.checkpoint_dir if cfg.search is not None and ranks is None else None
    reads = {"model": model_reads(cfg.model), "weights": cfg.weights, "calib": cfg.calib, "data": existing(cfg.data),
             "ranks": existing(ranks) if isinstance(ranks, (str, Path)) else None, "checkpoint_dir": existing(ckpt)}
    writes = {**onnx_outputs(cfg.output, external_data=len(reads["model"]) > 1), "report": cfg.report}
    return reads, writes


def _test_arrays(splits) -> tuple[np.ndarray, np.ndarray] | None:
    if splits is None:
        return None
    x, y = splits.test.tensors()
    return x.numpy().astype(np.float32), y.numpy().astype(np.int64)


def static_batch(handle: ModelHandle) -> int | None:
    """The batch size an ONNX graph was exported with when it is fixed (None: dynamic)."""
    vi = next(i for i in handle.onnx_model.graph.input if i.name == handle.input_name)
    dims = vi.type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None


def _torch_top1(model: nn.Module, test_data, batch: int | None = None) -> float | None:
    if test_data is None:
        return None
    X, y = test_data
    bs = batch or 512
    usable = len(X) - len(X) % bs if batch else len(X)  # a fixed batch size cannot take a short last batch
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(X[i:i + bs])).argmax(-1) for i in range(0, usable, bs)])
    return 100.0 * float((pred.numpy() == y[:usable]).mean())


def _search_section(searched) -> dict | None:
    from rene_onnx.report.search import search_section

    return search_section(searched)


def build_report(cfg: CompressConfig, handle: ModelHandle, shapes: dict[str, LayerShape], plan: RankPlan,
                 rewritten: Rewritten, val: Validation, seconds: float):
    from rene_onnx.report.report import LayerRow, Report, environment_meta

    records = {r.node: r for r in rewritten.records}
    rows = []
    for name, shape in shapes.items():
        lp = plan.layers.get(name)
        ref = handle.layer_map[name]
        rec = records.get(ref.node)
        if lp and lp.method != "dense" and rec is not None and rec.status == "factorized":
            row = LayerRow.from_shape(name, ref.op_type, shape, lp.method, rewritten.factors.layers[name].ranks,
                                      reason=f"ranks per group ({shape.groups} groups)" if shape.groups > 1 else "")
        else:
            reason = (rewritten.kept_dense.get(name) or (rec.reason if rec is not None else "")
                      or (lp.reason if lp else "") or "not in the rank plan")
            row = LayerRow.from_shape(name, ref.op_type, shape, reason=reason)
        if name in rewritten.layer_times:
            row.latency_us_before, row.latency_us_after = rewritten.layer_times[name]
        rows.append(row)
    for name, why in handle.unmapped.items():
        rows.append(LayerRow(name=name, op="?", method="dense", rank=None, params_before=0, params_after=0,
                             macs_before=0, macs_after=0, status="dense", reason=why))
    tb, ta = val.torch_counts["before"], val.torch_counts["after"]
    return Report(
        params={"before": val.counts_before.params, "after": val.counts_after.params,
                "torch_before": tb[0], "torch_after": ta[0]},
        macs={"before": val.counts_before.macs, "after": val.counts_after.macs,
              "torch_before": tb[1], "torch_after": ta[1]},
        latency_ms=val.latency,
        numerics={"max_abs_diff": val.numerics["vs_torch"].max_abs_diff,
                  "max_rel_diff": val.numerics["vs_torch"].max_rel_diff,
                  "vs_original": vars(val.numerics["vs_original"]),
                  **({"calib": vars(val.numerics["calib"]) if val.numerics["calib"] is not None else None}
                     if "calib" in val.numerics else {})},
        layers=rows,
        search=None,
        accuracy=val.accuracy,
        meta={"model": cfg.model, "weights": str(cfg.weights) if cfg.weights else None,
              "input_shape": list(handle.input_shape),
              "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in handle.specs],
              "output": str(cfg.output), "command": cfg.command,
              "method": cfg.rewrite.method, "ranks": str(cfg.rewrite.ranks), "notes": handle.notes,
              "seconds": round(seconds, 2), **environment_meta()},
    )


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
