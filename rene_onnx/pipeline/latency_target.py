"""``--target-latency FRACTION``: ranks chosen by measured latency, then verified end to end and corrected.

1. Candidates: every layer the method can factorize (not grouped) at up to :data:`N_CANDIDATES` ranks, multiples
   of the rank multiple below the parameter break-even rank, decomposed from its weights. Each candidate's
   cost in accuracy is its measured output effect (:func:`rene_onnx.engine.sensitivity.candidate_divergence`:
   the model's output divergence from the original's with that layer alone truncated), on
   :data:`PROBE_SAMPLES` inputs: the first of ``calib``'s used part (never its held-out part) when there is
   one, else synthetic inputs (ZeroQ-style from the BatchNorm statistics, Gaussian without them; not with
   ``sensitivity="none"``). Without any, the normalized truncation error ``||W - W_r||^2 / ||W||^2`` (equal
   error counts as equal harm across layers, which cuts a classifier first). ``meta.sensitivity`` says which.
2. Latency tables (:func:`rene_onnx.validate.latency_tables.latency_tables`): the dense node and each candidate
   chain, isolated, timed on the provider in one torch-free worker run.
3. Choice (:func:`rene_onnx.engine.search_budget.allocate` with the chain's time as the cost, "stay dense" being
   one of each layer's options): the least total error whose summed layer time fits a budget.
4. Verification: the original and the rewritten model timed interleaved in one torch-free worker run, as
   ``rene-onnx validate`` does. Isolated times do not add up to the whole model's (fusions, caches, layout
   changes), so the saving the tables predict is re-scaled by the saving measured, and the ranks chosen again,
   until the measured ratio is within +-:data:`TOLERANCE` of the target or :data:`MAX_ROUNDS` are spent; the
   round closest to the target is kept and a miss is said in the notes.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from rene_onnx.config import CompressConfig
from rene_onnx.decompose import decompose, reconstruct
from rene_onnx.decompose import ranks as R
from rene_onnx.decompose.choose import plan_from_mapping, resolve_method
from rene_onnx.engine.search_budget import LayerOptions, allocate
from rene_onnx.load import ModelHandle
from rene_onnx.plan import LayerFactors, RankPlan
from rene_onnx.progress import emit

N_CANDIDATES = 10
#: inputs on which each candidate's output effect is measured, and their batch size
PROBE_SAMPLES = 32
PROBE_BATCH = 16
TOLERANCE = 0.05
MAX_ROUNDS = 4


@dataclass
class LatencyPlan:
    plan: RankPlan
    target: float
    ratio: float  # measured latency ratio (compressed / original) of the kept round
    rounds: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sensitivity: dict = field(default_factory=dict)  # what each candidate's cost in accuracy was measured on

    @property
    def met(self) -> bool:
        return abs(self.ratio / self.target - 1.0) <= TOLERANCE

    def meta(self) -> dict:
        return {"target": self.target, "planned_ratio": round(self.ratio, 4), "met": self.met,
                "tolerance": TOLERANCE, "rounds": self.rounds, "notes": self.notes,
                "sensitivity": self.sensitivity}


@dataclass
class _Layer:
    name: str  # torch module name
    node: str  # ONNX node
    method: str
    factors: list[LayerFactors]  # ascending ranks
    err: np.ndarray
    params: np.ndarray
    dense_params: int


def candidate_ranks(method: str, shape, multiple: int, n: int = N_CANDIDATES) -> list[int]:
    """Up to ``n`` single ranks, multiples of ``multiple``, spread over [multiple, break-even) (below it: saves)."""
    top = R.break_even_rank(method, shape)
    multiple = R.layer_multiple(method, shape, multiple)
    steps = np.arange(multiple, top + 1, multiple)
    steps = steps[[R.saves(method, shape, R.expand_rank(method, int(r))) for r in steps]] if steps.size else steps
    if steps.size == 0:
        return []
    pick = np.unique(np.round(np.linspace(0, steps.size - 1, min(n, steps.size))).astype(int))
    return [int(steps[i]) for i in pick]


def candidates(handle: ModelHandle, shapes: dict, method: str, multiple: int) -> list[_Layer]:
    modules = dict(handle.torch_model.named_modules())
    out = []
    for name, shape in shapes.items():
        ref = handle.layer_map.get(name)
        m, _ = resolve_method(method, shape, per_group=True)
        if ref is None or m == "dense" or shape.groups != 1:
            continue
        rs = candidate_ranks(m, shape, multiple)
        if not rs:
            continue
        mod = modules[name]
        w = mod.weight.detach().cpu().numpy().astype(np.float32)
        bias = None if getattr(mod, "bias", None) is None else mod.bias.detach().cpu().numpy().astype(np.float32)
        norm2 = float(np.sum(w.astype(np.float64) ** 2)) or 1.0
        facs, errs = [], []
        for r in rs:
            ranks = R.expand_rank(m, r)
            arrays = decompose(m, w, ranks)
            errs.append(float(np.sum((w - reconstruct(m, arrays, w.shape)) ** 2)) / norm2)
            facs.append(LayerFactors(ref.node, m, tuple(ranks), {**arrays, **({"bias": bias} if bias is not None
                                                                              else {})}))
        params = np.array([R.factorized_params(m, shape, f.ranks) for f in facs], dtype=np.float64)
        out.append(_Layer(name, ref.node, m, facs, np.maximum.accumulate(np.array(errs)[::-1])[::-1], params,
                          R.dense_params(shape)))
    return out


def probe_inputs(handle: ModelHandle, cfg: CompressConfig, calib) -> tuple[list, dict]:
    """Batches to measure the candidates' output effect on, and a record of what they are (module doc, step 1)."""
    from rene_onnx.engine.batches import model_device
    from rene_onnx.engine.sensitivity import SYNTHETIC_STEPS, runnable_batch_size, synthetic_inputs

    model, example = handle.torch_model, handle.example_input()
    if calib is not None:
        n = min(PROBE_SAMPLES, int(calib[0].shape[0]))
        bs = runnable_batch_size(model, example, PROBE_BATCH) if isinstance(example, torch.Tensor) else PROBE_BATCH
        dev = model_device(model)
        batches = [tuple(t[s:s + bs].to(dev) for t in calib) for s in range(0, n, bs)]
        batches = [b[0] if len(b) == 1 else b for b in batches]
        return batches, {"method": "calibration data", "inputs": "calib (used part)", "n": n}
    search = cfg.search
    if search is not None and search.sensitivity != "synthetic":
        return [], {"method": "none", "why": f"sensitivity={search.sensitivity!r}"}
    try:
        syn = synthetic_inputs(model, example, PROBE_SAMPLES, SYNTHETIC_STEPS, search.seed if search else 0,
                               PROBE_BATCH)
    except ValueError as e:
        return [], {"method": "none", "why": str(e)}
    return syn.inputs, {**syn.info, "inputs": "synthetic", "n": PROBE_SAMPLES}


def output_costs(handle: ModelHandle, layers: list[_Layer], probe: list, record: dict) -> None:
    """Replace each layer's weight-error curve by its measured output effect on ``probe`` (in place; the
    record gets the measure and the curves)."""
    from rene_onnx.engine.sensitivity import candidate_divergence

    modules = dict(handle.torch_model.named_modules())

    def weights(l: _Layer):
        shape = tuple(modules[l.name].weight.shape)
        for f in l.factors:
            yield reconstruct(l.method, {k: v for k, v in f.arrays.items() if k != "bias"}, shape)

    emit("sensitivity", message=f"{len(layers)} layers x their candidate ranks on {record['n']} {record['inputs']} inputs")
    costs, kind = candidate_divergence(handle.torch_model, {l.name: weights(l) for l in layers}, probe)
    record["measure"] = kind
    record["curves"] = {}
    for l in layers:
        c = np.asarray(costs[l.name], dtype=np.float64)
        l.err = np.maximum.accumulate(c[::-1])[::-1]  # a higher rank never costs more
        record["curves"][l.name] = [float(f"{e:.4g}") for e in l.err]


def layer_options(handle: ModelHandle, cfg: CompressConfig, shapes: dict, calib=None):
    """``(layers, options, sensitivity record)``: the candidates with their accuracy cost and latency tables
    (module doc, steps 1-2); ``([], [], {})`` when no layer can be factorized."""
    from rene_onnx.validate.latency_tables import latency_tables

    v = cfg.validate
    layers = candidates(handle, shapes, cfg.rewrite.method, cfg.rewrite.rank_multiple)
    if not layers:
        return [], [], {}
    probe, sensitivity = probe_inputs(handle, cfg, calib)
    if probe:
        output_costs(handle, layers, probe, sensitivity)
    else:
        sensitivity["measure"] = "weight error (||W - W_r||^2 / ||W||^2): no inputs to measure output effects on"
    feeds = handle.feeds(handle.example_input())
    emit("latency tables", message=f"{len(layers)} layers x {N_CANDIDATES} ranks on {v.provider}")
    tables = latency_tables(handle.onnx_model, {l.node: l.factors for l in layers}, feeds, v.provider,
                            repeats=v.profile_repeats)
    options = [LayerOptions(l.node, np.array([f.ranks[0] for f in l.factors]), l.err, l.params,
                            np.array([tables[l.node][tuple(f.ranks)] for f in l.factors]), l.dense_params,
                            tables[l.node]["dense"], l.factors[-1].ranks[0]) for l in layers]
    return layers, options, sensitivity


def plan_for_latency(handle: ModelHandle, cfg: CompressConfig, shapes: dict, calib=None,
                     memo: dict | None = None) -> LatencyPlan:
    """The ranks whose rewritten model runs at ``cfg.target_latency`` of the original's latency (see module doc).

    ``calib``: the used part of the ``calib`` inputs (tensors, one per graph input) or None. ``memo``: a dict
    kept across calls on the same model and inputs (the ``min_fidelity`` tries): the candidates, their costs
    and latency tables, which do not depend on the target, are measured once."""
    target, v = float(cfg.target_latency), cfg.validate
    key = (cfg.rewrite.method, cfg.rewrite.rank_multiple, v.provider, v.profile_repeats)
    if memo is not None and key in memo:
        layers, options, sensitivity = memo[key]
    else:
        layers, options, sensitivity = layer_options(handle, cfg, shapes, calib)
        if memo is not None:
            memo[key] = (layers, options, sensitivity)
    if not layers:
        return LatencyPlan(plan_from_mapping(shapes, cfg.rewrite.method, {}), target, 1.0,
                           notes=["no layer can be factorized at these rank multiples: nothing to speed up"])
    feeds = handle.feeds(handle.example_input())
    dense_us = sum(o.dense_macs for o in options)
    floor_us = sum(min(float(o.macs.min()), o.dense_macs) for o in options)
    ones = np.ones(len(options))
    rounds: list[dict] = []
    best: tuple[float, dict] | None = None
    want = None  # the saving (us, in table time) to ask of the tables
    fit: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="rene-target-") as tmp:
        p_orig = os.path.join(tmp, "original.onnx")
        onnx.save(handle.onnx_model, p_orig)
        npz = os.path.join(tmp, "feeds.npz")
        np.savez(npz, **feeds)
        for k in range(MAX_ROUNDS):
            if want is None:
                want = (1.0 - target) * _measure(p_orig, p_orig, npz, v)[2]  # the original's own time, us
            budget = max(dense_us - want, floor_us)
            choice = allocate(options, None, budget, weights=ones).choice
            chosen = {l.node: next(f for f in l.factors if f.ranks[0] == choice[l.node])
                      for l in layers if choice[l.node] is not None}
            planned = sum(o.dense_macs if choice[o.name] is None else float(o.macs[list(o.ranks).index(choice[o.name])])
                          for o in options)
            ratio, t_orig = _rewritten_ratio(handle, chosen, p_orig, npz, tmp, v)
            rec = {"round": k + 1, "budget_us": round(budget, 1), "table_saving_us": round(dense_us - planned, 1),
                   "measured_ratio": round(ratio, 4), "layers_factorized": len(chosen)}
            rounds.append(rec)
            emit("latency target", k + 1, MAX_ROUNDS, f"{ratio:.3f} of the original (target {target})")
            if best is None or abs(ratio - target) < abs(best[0] - target):
                best = (ratio, {l.name: list(chosen[l.node].ranks) for l in layers if l.node in chosen})
            if abs(ratio / target - 1.0) <= TOLERANCE or budget <= floor_us and ratio > target:
                break
            fit.append((dense_us - planned, (1.0 - ratio) * t_orig, t_orig))  # (table saving, measured saving)
            want = _next_saving(fit, target, want)
    ratio, mapping = best
    plan = plan_from_mapping(shapes, cfg.rewrite.method, mapping)
    timed = {l.name for l in layers}
    for lp in plan.layers.values():
        if lp.method == "dense" and lp.name not in mapping:
            lp.reason = "the latency target keeps it dense" if lp.name in timed else _untimed(
                cfg.rewrite.method, shapes[lp.name], cfg.rewrite.rank_multiple)
    out = LatencyPlan(plan, target, ratio, rounds, sensitivity=sensitivity)
    out.notes.append(_how(sensitivity))
    if not out.met:
        out.notes.append(f"--target-latency {target}: the closest plan measured {ratio:.3f} of the original's "
                         f"latency ({(ratio / target - 1) * 100:+.1f}% off the target, outside +-{TOLERANCE:.0%})")
    return out


def _how(record: dict) -> str:
    """One honest sentence on what the latency target's per-layer accuracy cost was measured on."""
    from rene_onnx.engine.sensitivity import describe

    if record.get("method") == "calibration data":
        return (f"--target-latency: each candidate rank's accuracy cost is the output "
                f"{'KL divergence' if record['measure'] == 'kl' else 'relative squared error'} measured "
                f"with that layer alone truncated, on {record['n']} --calib inputs (the used part)")
    return describe(record, "--target-latency")


def _untimed(method: str, shape, multiple: int) -> str:
    m, note = resolve_method(method, shape, per_group=True)
    if m == "dense":
        return note
    if shape.groups != 1:
        return f"grouped conv (groups={shape.groups}): not a --target-latency candidate"
    return f"no rank that is a multiple of {multiple} saves parameters"


def _next_saving(fit: list[tuple[float, float, float]], target: float, last: float) -> float:
    """The table saving to ask for next: measured saving = k * table saving, k fitted (least squares through 0)
    over every round so far, so one noisy round moves it little; the step is bounded to [1/2, 2] x the last."""
    asked = np.array([f[0] for f in fit])
    saved = np.array([f[1] for f in fit])
    t_orig = float(np.median([f[2] for f in fit]))
    k = float(asked @ saved) / float(asked @ asked) if float(asked @ asked) > 0 else 0.0
    if k <= 0:
        return last * 1.5
    return float(np.clip((1.0 - target) * t_orig / k, last / 2, last * 2))


def _rewritten_ratio(handle: ModelHandle, chosen: dict, p_orig: str, npz: str, tmp: str, v) -> tuple[float, float]:
    from rene_onnx import passes

    model, _ = passes.apply_factors(handle.onnx_model, chosen, {})
    p_new = os.path.join(tmp, "candidate.onnx")
    onnx.save(model, p_new)
    ratio, t_orig, _ = _measure(p_orig, p_new, npz, v)
    return ratio, t_orig


def _measure(p_orig: str, p_new: str, npz: str, v) -> tuple[float, float, float]:
    """(new / original, original us, new us), interleaved in one worker run like ``rene-onnx validate``.

    By the fastest run of each, not the median: the noise of a shared machine only ever adds time, and the
    medians of a busy 2-core box swung the ratio by 2x between runs while the minima held."""
    from rene_onnx.validate.latency import measure_latency

    a, b = measure_latency([p_orig, p_new], npz, provider=v.provider, warmup=v.warmup, repeats=v.repeats,
                           device_io=v.device_io)
    return b.min_ms / a.min_ms, a.min_ms * 1000.0, b.min_ms * 1000.0
