"""RENE rank search: learnable rank selection over decomposition candidates (the paper's Algorithm 1).

Per searched layer i (Conv / Linear; method from ``decompose.choose.resolve_method``):

- candidate ranks ``R_i`` (:mod:`.search_ladder`), one factorized candidate per
  rank initialized from the weights (TT: nested HOSVD, r1 = r2; SVD: truncated
  SVD; CP: CP-ALS) -- :mod:`.search_banks`; logits ``alpha_i`` (zeros at each
  stage), ``p_i = softmax(alpha_i)``; the layer computes with the mixture
  ``W_mix = sum_r p_r W_r``. A grouped conv is searched per group (one
  decomposition per group's weight block, one rank ``r`` shared by the groups:
  :class:`.search_banks.GroupedFrame`); a depthwise conv stays dense.
- rank loss (Eq. 5) ``L_r = gamma * sum_i (sum_r p_r r / max R_i)^beta``.
- decomposition loss (Eq. 6) ``L_d = sum_i ||W_i - W_mix_i||^2 / ||W_i||^2``:
  each layer's term is normalized by its own ``||W_i||^2`` so that layers with
  big weights do not dominate.
- weight step: SGD (Nesterov, momentum 0.9) on ``L_d * L_r`` w.r.t. the
  candidates' factors; alpha step: SGD (Nesterov) on ``L_val * L_r`` w.r.t.
  the logits (Eq. 7), ``L_val`` = cross-entropy of the mixture model on a
  held-out calibration split (mode ``validation-ce``) or ``L_d`` itself (mode
  ``data-free``). The alpha step descends ``n * log(L_val * L_r)`` (n = number
  of searched layers): the same minimizers as ``L_val * L_r``, with steps that
  depend neither on the losses' scale nor on the depth, so ``alpha_lr`` (much
  larger than the weights' ``lr``) means the same on a 4-layer test net and on
  ResNet-18 and the logits really move (recorded: ``LayerSearch.p_moved``).
  Note that in this product form gamma only scales the weight step; the alpha
  step's minimizer depends on beta, not on gamma.
- each stage starts with ``warmup_steps`` weight-only steps, then ``steps``
  alternations. Data-free, both steps minimize the same ``L_d * L_r``, so one
  backward pass gives both gradients (a simultaneous rather than sequential
  update). TT / SVD candidates are trained in the exact one-value-per-shell
  form of :mod:`.search_banks` (the same SGD trajectory as training full
  cores), so a data-free step costs O(sum of candidate ranks) and runs no
  forward pass and no reconstruction. With data, the weight step needs no data
  and the alpha step runs ONE forward / backward of the model per step with
  the mixed weights (one dense weight per layer, not one conv per candidate)
  on a small cached calibration batch (at most ``max_calib_batches`` batches of
  ``calib_batch_size`` samples, cycled).
- after a stage, ``rbar = argmax p``; the window is refined to
  ``rbar +- ceil(s/2)`` CLAMPED to the layer's original ``[lb, ub]``,
  ``s <- s // f``; candidates and alpha are re-initialized; a layer stops when
  one candidate is left. Only the current stage's candidates are held.
  Candidates never exceed the layer's break-even rank; a layer with a single
  rank that saves parameters is not searched (it stays dense unless a budget
  wants it).

Final choice: without a budget, each layer's last-stage ``argmax p`` (the
paper). With ``target_params`` / ``target_macs`` (fraction of the ORIGINAL
model's parameters / MACs to keep, whole model: layers left dense and
non-layer parameters count), :func:`.search_budget.allocate` picks the ranks:
over every layer's admissible ranks (its original window, or dense) it
minimizes the sum of the layers' normalized truncation errors (the same
decompositions' error curves), each weighted by the importance the searched
rank implies for that layer, under the budget, by Lagrangian bisection plus a
greedy fill; the plan lands within ``tolerance`` (2%) of the target (a note
says so otherwise). gamma is not calibrated: in the product form it cannot
move the ranks.

``method="auto"``: each layer is searched with auto's first candidate for it
(:func:`~rene_onnx.decompose.choose.auto_methods`); where several registered
methods are candidates, the final choice decomposes the layer with each at
no more than the chosen ranks' cost and keeps the least weight error
(:func:`~rene_onnx.decompose.choose.pick_by_error`, ties to the earlier
method); the layer's reason lists the errors.

Activation-aware SVD (``whiten``): with the input second moment ``C = E[x x^T]``
of every searched svd layer (:func:`.calibrate.input_moments` on the
calibration inputs, or ``moments`` passed in), the frames decompose ``W L``
(``L L^T = C + damping``, :class:`~rene_onnx.decompose.svd.WhitenedSVDTruncations`),
so candidates, ``L_d`` and the budget's error curves measure each layer's
relative OUTPUT error instead of its weight error; ``SearchResult.factors``
holds the whitened factors at the chosen ranks (``factorize_(model,
result.plan, result.factors)``; :func:`.calibrate.whitened_factors`).

Unlabeled calibration data (``objective="distill"``), L_val and the measured
importance of each layer (``importance="measured"``): :mod:`.search_data`. Data-free with a budget
(or ``whiten``), ``sensitivity="synthetic"`` measures that importance (and the moments) on synthetic
inputs, ZeroQ-style from the BatchNorm statistics (:mod:`.sensitivity`; recorded in ``sensitivity``).

Robustness: gradients are clipped (``grad_clip``, per step group); a
non-finite loss or gradient restores the last good state and multiplies both
learning rates by ``backoff`` (at most ``max_backoffs`` times, then
:class:`SearchError`): a plan never comes from NaN logits. A fixed ``seed``
gives the same plan twice. ``checkpoint_dir`` receives a plan after every
stage (``stage<k>.json``) and the final ``plan.json``; a later call with the
same folder, model and config resumes after the last finished stage
(:mod:`.search_state`).

The model is not modified: the search reads its weights, runs it in eval
mode with substituted (detached) parameters and restores its training flags.
While it runs, denormal floats are flushed (torch.set_flush_denormal), which
is switched off again afterwards.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..config import SearchConfig  # noqa: F401 (re-exported: its home is rene_onnx.config)
from ..decompose import ranks as R
from ..decompose.choose import resolve_method
from ..decompose.ranks import LayerShape
from ..plan import Factors, LayerPlan, RankPlan
from ..progress import emit
from .batches import model_device, n_samples
from .calibrate import input_moments, moment_supported, whitened_factors
from . import registry as engine_methods
from .profile import layer_shapes
from .search_banks import GroupedFrame, LayerFrame, make_frame
from .search_choice import Budget, LayerSearch, check_budget, final_choice
from .search_data import cached_batches, calib_batches, measured_importance, val_loss
from .search_ladder import Window, initial_window
from .sensitivity import describe, probe_curves, synthetic_probe
from .search_state import Guard, SearchError, State, checkpoint, model_fingerprint, resume

_Guard = Guard  # the name the tests know


MODES = ("data-free", "validation-ce", "validation-distill")


@dataclass
class SearchResult:
    plan: RankPlan
    layers: dict[str, LayerSearch]
    mode: str  # data-free | validation-ce | validation-distill
    seconds: float
    stages: list[dict] = field(default_factory=list)  # per stage: seconds, steps, losses, per-layer p / rbar
    params: tuple[int, int] = (0, 0)  # (original, planned) whole model
    macs: tuple[int, int] = (0, 0)
    backoffs: int = 0
    calib_samples: int = 0  # distinct calibration samples used (with data)
    notes: list[str] = field(default_factory=list)
    # whitened SVD factors at the chosen ranks (``whiten``): ``factorize_(model, result.plan, result.factors)``
    factors: Factors | None = None
    importance: dict[str, float] = field(default_factory=dict)  # per-layer weights of the budgeted choice
    sensitivity: dict = field(default_factory=dict)  # what the importance was measured on (data-free: synthetic)

    @property
    def params_fraction(self) -> float:
        return self.params[1] / max(self.params[0], 1)

    @property
    def macs_fraction(self) -> float:
        return self.macs[1] / max(self.macs[0], 1)


# --------------------------------------------------------------------------------------------- helpers


def blas_threads(n: int | None):
    """Limit numpy's BLAS / LAPACK threads inside the block (threadpoolctl, a scikit-learn dependency)."""
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(n), user_api="blas")


def _grad_norm(params: list[torch.Tensor], clip: float) -> torch.Tensor:
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, clip)


@dataclass
class SearchLayer:
    """One searched layer: its method, shape, candidate windows (current / first), frame and outcome."""

    name: str
    method: str
    shape: LayerShape
    window: Window
    first: Window
    frame: LayerFrame | GroupedFrame | None = None
    rbar: int = 0
    candidates: tuple[int, ...] = ()
    p: tuple[float, ...] = (1.0,)
    p_moved: float = 0.0

    @property
    def active(self) -> bool:
        return len(self.window.candidates) > 1


def _rank_loss(ps: list[torch.Tensor], rel: list[torch.Tensor], cfg: SearchConfig) -> torch.Tensor:
    return cfg.gamma * sum((p @ r) ** cfg.beta for p, r in zip(ps, rel))


# --------------------------------------------------------------------------------------------- the search


def search(
    model: nn.Module,
    example_input: Any,
    config: SearchConfig | None = None,
    calib_loader: Iterable | None = None,
    moments: dict[str, np.ndarray] | None = None,
    totals: tuple[int, int] | None = None,
) -> SearchResult:
    """Search per-layer ranks for ``model`` by RENE; returns a :class:`SearchResult` (the model is not modified).

    ``example_input``: a batch-1 input (tensor, tuple or dict) used to find the
    layers and their geometry. ``calib_loader``: an iterable of
    ``(inputs, labels)`` batches from a held-out calibration split (never the
    test split) for the validation cross-entropy, or unlabeled batches with
    ``config.objective="distill"``; without it (or with
    ``config.data_free=True``) the search is data-free. ``moments``: input
    second moments per layer (:func:`rene_onnx.engine.calibrate.input_moments`)
    for ``config.whiten``; by default they are collected from the calibration
    batches. ``totals``: ``(params, MACs)`` of the whole deployed model that
    ``target_params`` / ``target_macs`` are fractions of (default: the torch
    model's parameters and its layers' MACs; a model imported from ONNX passes
    the graph's counts, which also hold e.g. embedding tables that the import
    keeps as buffers). Progress goes out as ``search`` events
    (:func:`rene_onnx.progress.emit`) every ``config.progress_every`` steps (stage 0: the decompositions).
    """
    cfg = config or SearchConfig()
    t0 = time.perf_counter()
    data_free = cfg.data_free if cfg.data_free is not None else calib_loader is None
    if not data_free and calib_loader is None:
        raise ValueError("data_free=False needs a calib_loader (a held-out calibration split)")
    mode = "data-free" if data_free else ("validation-distill" if cfg.objective == "distill" else "validation-ce")
    if data_free and cfg.importance == "measured":
        raise ValueError("importance='measured' needs calibration data (it measures L_val)")
    budgeted = cfg.target_params is not None or cfg.target_macs is not None
    if data_free and cfg.whiten and moments is None:
        raise ValueError("whiten needs calibration inputs or precomputed input moments (data-free stays plain SVD)")

    def report(stage: int, step: int, total: int, info: dict) -> None:
        emit("search", step=step, total=total, message=f"stage {stage}", **info)

    shapes = layer_shapes(model, example_input)
    if not shapes:
        raise ValueError("the model has no Conv1d / Conv2d / Linear layer that runs on the example input")
    named = dict(model.named_modules())
    unknown = [n for n in list(cfg.layers or []) + cfg.exclude if n not in shapes]
    if unknown:
        raise ValueError(f"layer(s) not among the model's Conv / Linear layers: {', '.join(map(repr, unknown))}")

    device = model_device(model)
    plan, layers = search_layers(cfg, shapes, mode)
    if totals is None:
        totals = (sum(p.numel() for p in model.parameters()), sum(R.dense_macs(s) for s in shapes.values()))
    budget = layer_budget(cfg, layers, totals)
    total = budget.total
    check_budget(cfg, layers, budget)

    batches = [] if data_free else cached_batches(model, calib_batches(calib_loader, cfg, device), cfg)
    synthetic = data_free and budgeted and cfg.sensitivity == "synthetic"
    probe, sens = synthetic_probe(model, example_input, cfg) if synthetic else ([], {"method": "none"})
    if not data_free:
        sens = {"method": "calibration data" if cfg.importance == "measured" else "none"}
    if data_free and budgeted:
        sens["estimate"] = describe(sens)
    notes: list[str] = [sens["estimate"]] if data_free and budgeted else []
    if cfg.whiten:
        whitened = [l.name for l in layers
                    if engine_methods.get(l.method).whitens and moment_supported(named[l.name]) is None]
        if moments is None:
            moments = input_moments(model, [(x,) for x, _, _ in batches], whitened)
        skipped = [n for n in whitened if n not in moments]
        if skipped:
            notes.append(f"no input moment for {len(skipped)} svd layer(s) ({', '.join(skipped[:3])}...): plain SVD there")
    # one decomposition per layer serves every stage
    with blas_threads(cfg.decompose_threads):
        for i, l in enumerate(layers):
            w = named[l.name].weight.detach().cpu().numpy()
            mom = moments.get(l.name) if cfg.whiten and engine_methods.get(l.method).whitens else None
            l.frame = make_frame(l.name, l.method, l.shape, w, l.window.ub, dense_mix=not data_free or bool(probe),
                                 cp_iters=cfg.cp_iters, seed=cfg.seed, device=device, moment=mom,
                                 whiten_eps=cfg.whiten_eps)
            report(0, i + 1, len(layers), {"phase": "decompose", "layer": l.name})
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir is not None else None
    fp = {"config": cfg.fingerprint(), "model": model_fingerprint(shapes, layers)}
    state = State()
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            state = resume(ckpt, fp, layers)

    params = {n: p.detach() for n, p in model.named_parameters()}
    flags = {m: m.training for m in model.modules()}
    # tiny mixture weights (p ~ 1e-30) make denormal floats, ~100x slower on CPUs; torch's default (off) is restored
    flushed = torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    try:
        if cfg.threads is not None:
            torch.set_num_threads(int(cfg.threads))
        model.eval()
        while any(l.active for l in layers):
            stage = len(state.stages) + 1
            state.stages.append(_run_stage(stage, layers, cfg, model, params, batches, state, report))
            if ckpt is not None:
                checkpoint(ckpt / f"stage{stage}.json", layers, state, fp, plan)
    finally:
        if flushed:
            torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
        for m, flag in flags.items():
            m.training = flag

    for l in layers:  # layers that never had more than one candidate
        if not l.candidates:
            l.rbar = l.window.candidates[0]
            l.candidates, l.p = (l.rbar,), (1.0,)

    importance = measured_importance(model, params, layers, batches, cfg) if cfg.importance == "measured" else None
    curves = None
    if probe:  # data-free: each layer's measured output-error curve on the synthetic inputs
        curves, record = probe_curves(model, params, layers, probe)
        sens.update(record)
    result_layers, weights, choice_notes = final_choice(cfg, layers, plan, budget, importance,
                                                        lambda n: named[n].weight.detach().cpu().numpy(), curves)
    notes += choice_notes
    plan.layers = {n: plan.layers[n] for n in shapes}  # model order
    planned_params, planned_macs = planned_totals(plan, shapes, result_layers, budget)
    still = [l.name for l in layers if len(l.candidates) > 1 and l.p_moved < 0.05]
    if still:
        notes.append(f"p barely moved (< 0.05 from uniform) in {len(still)} layer(s): {', '.join(still[:5])}"
                     f"{'...' if len(still) > 5 else ''}; consider a larger alpha_lr or more steps")
    low = [l.name for l in layers if len(l.first.candidates) > 2 and l.rbar == l.first.lb]
    if not budgeted and len(low) > len(layers) // 2:
        notes.append(f"{len(low)} of {len(layers)} layers ended at their smallest rank: the rank loss outweighed "
                     "the decomposition / validation loss (fragile model?); consider target_params or a smaller beta")
    plan.meta["search"].update({
        "stages": len(state.stages), "params": [total["params"], planned_params], "macs": [total["macs"], planned_macs],
        "target_params": cfg.target_params, "target_macs": cfg.target_macs, "fingerprint": fp, "sensitivity": sens,
    })
    result = SearchResult(
        plan, result_layers, mode, time.perf_counter() - t0, state.stages, (total["params"], planned_params),
        (total["macs"], planned_macs), state.backoffs, sum(n_samples(b[0]) for b in batches), notes,
        importance=weights, sensitivity=sens,
    )
    if cfg.whiten:
        result.factors = whitened_factors(model, plan, {l.name: moments[l.name] for l in layers
                                                        if l.frame.whitened}, cfg.whiten_eps)
        plan.meta["search"]["whitened"] = sorted(result.factors.layers)
    if ckpt is not None:
        plan.save(ckpt / "plan.json")
    return result


def search_layers(cfg: SearchConfig, shapes: dict[str, LayerShape], mode: str) -> tuple[RankPlan, list[SearchLayer]]:
    """The layers to search (method, first window) and a plan holding the others as dense, with the reason."""
    budgeted = cfg.target_params is not None or cfg.target_macs is not None
    plan = RankPlan(meta={"search": {"mode": mode, "method": cfg.method, "preset": cfg.preset, "seed": cfg.seed}})
    layers: list[SearchLayer] = []
    for name, shape in shapes.items():
        if (cfg.layers is not None and name not in cfg.layers) or name in cfg.exclude:
            plan.add(LayerPlan(name, "dense", (), "not searched (excluded)"))
            continue
        method, note = resolve_method(cfg.method, shape, per_group=True)
        if method == "dense":
            plan.add(LayerPlan(name, "dense", (), note))
            continue
        be = R.break_even_rank(method, shape)
        win = initial_window(cfg.preset, be, n_candidates=cfg.n_candidates, factor=cfg.factor,
                             rank_multiple=R.layer_multiple(method, shape, cfg.rank_multiple), bounds=cfg.bounds)
        if win is None:
            plan.add(LayerPlan(name, "dense", (), f"no {method} rank has fewer parameters than dense"))
            continue
        if len(win.candidates) == 1 and not budgeted:
            plan.add(LayerPlan(name, "dense", (), f"only {method} rank {win.lb} saves parameters "
                               f"(break-even rank {be}): nothing to search, kept dense"))
            continue
        layers.append(SearchLayer(name, method, shape, win, win))
    if not layers:
        raise ValueError("no layer has two or more ranks that save parameters: nothing to search")

    return plan, layers


def layer_budget(cfg: SearchConfig, layers: list[SearchLayer], totals: tuple[int, int]) -> Budget:
    """The budget of a search: whole-model ``totals`` (params, MACs), the part outside ``layers``, the targets."""
    total = {"params": int(totals[0]), "macs": int(totals[1])}
    if min(total.values()) <= 0:
        raise ValueError(f"totals must be positive (params, MACs), got {totals}")
    return Budget(
        total,
        {"params": total["params"] - sum(R.dense_params(l.shape) for l in layers),
         "macs": total["macs"] - sum(R.dense_macs(l.shape) for l in layers)},
        {"params": cfg.target_params, "macs": cfg.target_macs},
    )


def planned_totals(plan: RankPlan, shapes: dict[str, LayerShape], searched: Iterable[str],
                   budget: Budget) -> tuple[int, int]:
    """(params, MACs) of the whole model with the ``searched`` layers at the plan's ranks."""
    rows = [(plan.layers[n], shapes[n]) for n in searched]
    return (budget.fixed["params"] + sum(R.factorized_params(lp.method, s, lp.ranks) for lp, s in rows),
            budget.fixed["macs"] + sum(R.factorized_macs(lp.method, s, lp.ranks) for lp, s in rows))


def _run_stage(stage, layers, cfg, model, params, batches, state, report) -> dict:
    """One stage of Algorithm 1 on the active layers; refines their windows and returns the stage record."""
    t0 = time.perf_counter()
    active = [l for l in layers if l.active]
    banks = [l.frame.bank(l.window.candidates) for l in active]
    alphas = [torch.zeros(len(b.ranks), requires_grad=True) for b in banks]
    rel = [torch.tensor(b.ranks, dtype=torch.float32) / max(b.ranks) for b in banks]
    weights = [t for b in banks for t in b.params]
    n = len(active)
    opt_w = torch.optim.SGD(weights, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    opt_a = torch.optim.SGD(alphas, lr=cfg.alpha_lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    for o in (opt_w, opt_a):  # earlier back-offs carry over to later stages
        for g in o.param_groups:
            g["lr"] *= cfg.backoff ** state.backoffs
    guard = Guard(weights + alphas, [opt_w, opt_a], cfg.max_backoffs, cfg.backoff, cfg.snapshot_every,
                   state.backoffs)
    # with data, layers that are done run with their chosen candidate (not with the dense weight)
    fixed = {}
    if batches:
        with torch.no_grad():
            for l in layers:
                if not l.active:
                    key = f"{l.name}.weight"
                    fixed[key] = l.frame.truncated_weight(l.rbar or l.window.candidates[0]).to(params[key].dtype)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + stage)
    order = torch.randperm(len(batches), generator=gen).tolist() if batches else []
    total = cfg.warmup_steps + cfg.steps
    losses: dict[str, float] = {}

    def mixture(train_w: bool, train_a: bool):
        ps = [torch.softmax(a if train_a else a.detach(), 0) for a in alphas]
        mixes = [b.mix(p, train=train_w) for b, p in zip(banks, ps)]
        return ps, mixes, sum(b.dist(m) for b, m in zip(banks, mixes))

    for step in range(1, total + 1):
        warm = step <= cfg.warmup_steps
        opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        if batches and not warm:
            # weight step (no data): L_d * L_r w.r.t. the candidates
            ps, _, ld = mixture(True, False)
            lr_ = _rank_loss(ps, rel, cfg)
            (ld * lr_).backward()
            gw = _grad_norm(weights, cfg.grad_clip)
            if not guard.check(ld, gw):
                continue
            opt_w.step()
            # alpha step: n * log(L_val * L_r) of the mixture model on one calibration batch
            batch = batches[order[(step - 1) % len(order)]]
            ps = [torch.softmax(a, 0) for a in alphas]
            sub = {**params, **fixed}
            for l, b, p in zip(active, banks, ps):
                key = f"{l.name}.weight"
                sub[key] = b.weight(b.mix(p, train=False)).to(params[key].dtype)
            ce = val_loss(model, sub, batch, cfg)
            lr_ = _rank_loss(ps, rel, cfg)
            (n * (torch.log(ce) + torch.log(lr_))).backward()
            ga = _grad_norm(alphas, cfg.grad_clip)
            if not guard.check(ce, ga):
                continue
            opt_a.step()
            losses = {"L_val": ce.item(), "L_d": ld.item(), "L_r": lr_.item()}
        else:
            ps, _, ld = mixture(True, not warm)
            lr_ = _rank_loss(ps, rel, cfg)
            if warm:
                (ld * lr_).backward()
            else:
                # one backward of log(L_d * L_r): the alpha gradient, and (rescaled) the weight gradient
                (torch.log(ld) + torch.log(lr_)).backward()
                scale = (ld * lr_).item()
                for w in weights:
                    if w.grad is not None:
                        w.grad.mul_(scale)
                for a in alphas:
                    a.grad.mul_(n)
            gw = _grad_norm(weights, cfg.grad_clip)
            ga = _grad_norm(alphas, cfg.grad_clip) if not warm else torch.zeros(())
            if not guard.check(ld, lr_, gw, ga):
                continue
            opt_w.step()
            if not warm:
                opt_a.step()
            losses = {"L_d": ld.item(), "L_r": lr_.item()}
        if step % cfg.progress_every == 0 or step == total:
            report(stage, step, total, {"phase": "warmup" if warm else "search", "layers": n, **losses,
                                        "backoffs": guard.backoffs})
    state.backoffs = guard.backoffs

    with torch.no_grad():
        final_p = [torch.softmax(a, 0) for a in alphas]
    if not all(bool(torch.isfinite(p).all()) for p in final_p):
        raise SearchError(f"stage {stage}: the rank logits are not finite")
    layer_rec = {}
    for l, b, p in zip(active, banks, final_p):
        pv = p.tolist()
        l.rbar = b.ranks[int(np.argmax(pv))]
        l.candidates, l.p = tuple(b.ranks), tuple(pv)
        l.p_moved = 0.5 * float(sum(abs(x - 1.0 / len(pv)) for x in pv))
        layer_rec[l.name] = {"candidates": list(b.ranks), "p": [round(x, 6) for x in pv], "rbar": l.rbar,
                             "p_moved": round(l.p_moved, 6), "window": [l.window.lo, l.window.hi, l.window.step]}
        nxt = l.window.refine(l.rbar)
        l.window = nxt or Window(l.window.lb, l.window.ub, l.rbar, l.rbar, 1, l.window.factor, l.window.final_step)
    info = {"phase": "done", "layers": n, **losses, "backoffs": guard.backoffs}
    report(stage, total, total, info)
    return {"stage": stage, "seconds": time.perf_counter() - t0, "steps": total, "losses": losses,
            "backoffs": guard.backoffs, "layers": layer_rec}
