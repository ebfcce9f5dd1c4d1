"""``min_fidelity``: a fidelity floor on the held-out ``calib`` inputs, measured after fine-tuning.

With ``target_params`` / ``target_macs`` the floor is a constraint on that target: one run, which meets it
or fails. Without a target the tool looks for the most compressed model that meets it: a bisection over
the kept parameter fraction (:data:`TRIES` runs, each = search + fine-tune + measure), starting at
:data:`START`; a try that meets the floor moves the budget down, one that misses moves it up.

With ``target_latency`` T the tool looks for the fastest model, no faster than T, that meets it: the same
bisection over the latency fraction in [T, 1), starting at T (a first try that meets the floor is the
answer; one that misses moves the budget towards the original's speed).

Every try is recorded in the report (``meta.min_fidelity``). When none meets the floor: FidelityError
(exit 1) saying by how much the best one missed.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from rene_onnx.config import CompressConfig
from rene_onnx.errors import FidelityError
from rene_onnx.progress import emit
from rene_onnx.validate.fidelity import fidelity

#: runs of the budget search without a target
TRIES = 4
#: the kept parameter fraction of its first try
START = 0.5

_NAMES = {"top1_agreement": "top-1 agreement", "mean_sample_cosine": "mean per-sample cosine"}


def compress_to_floor(cfg: CompressConfig, run_once: Callable[[CompressConfig], tuple], held):
    """``(report, model, plan, notes)`` of the most compressed run whose held-out fidelity is >= ``min_fidelity``.

    ``run_once(cfg)``: one compress run with these settings (search, fine-tune, rewrite, validate on ``held``).
    """
    floor = cfg.min_fidelity
    search = cfg.search
    fixed = {k: getattr(search, k) for k in ("target_params", "target_macs")
             if search is not None and getattr(search, k) is not None}
    knob = "target_latency" if cfg.target_latency is not None else "target_params"
    budgets = [None] if fixed else [cfg.target_latency if knob == "target_latency" else START]
    # the budget (kept fraction of params or of latency): lo misses (or is untried), hi meets (the original does)
    lo, hi = (float(cfg.target_latency), 1.0) if knob == "target_latency" else (0.0, 1.0)
    tries, best_ok, best_any = [], None, None
    total = 1 if fixed else TRIES
    for i in range(total):
        f = budgets[-1]
        run_cfg = cfg if f is None else _with_budget(cfg, knob, f)
        emit("min_fidelity", i + 1, total, f"try {i + 1}/{total}: " + (_target(fixed) if f is None else _say(knob, f)))
        try:
            run = run_once(run_cfg)
        except ValueError as e:  # a budget below the smallest ranks: go up
            if f is None or "cannot be met" not in str(e):
                raise
            tries.append({"target_params": f, "unreachable": str(e).split(":")[0], "met": False})
            emit("min_fidelity", i + 1, total, f"keeping {f:.3g} of params is not reachable")
            lo = f
            budgets.append(round((lo + hi) / 2, 4))
            continue
        metric, value = _measured(run[0])
        params = run[0].params
        kept = params["after"] / params["before"] if params.get("before") else None
        tries.append({knob: f, **({} if f is not None else fixed), "params_kept": kept,
                      **_latency(run[0]), "fidelity": value, "met": value >= floor})
        emit("min_fidelity", i + 1, total, f"{_NAMES[metric]} {value:.4f} ({'meets' if value >= floor else 'misses'} {floor:g})")
        if best_any is None or value > best_any[1]:
            best_any = (f, value)
        if value >= floor:  # a later success keeps less: hi only goes down
            best_ok = (run, tries[-1])
            hi = f if f is not None else hi
        else:
            lo = f if f is not None else lo
        if f is None or i + 1 == total or hi <= lo:  # met at the latency target itself: nothing faster is asked
            break
        budgets.append(round((lo + hi) / 2, 4))
    n = int(held.held_idx.size)
    if best_any is None:
        raise FidelityError(f"none of the {len(tries)} budgets tried could be reached", option="min_fidelity")
    if best_ok is None:
        f, value = best_any
        where = _target(fixed) if f is None else f"the best of {len(tries)} budgets ({_say(knob, f)})"
        raise FidelityError(f"{_NAMES[metric]} {value:.4f} on {n} held-out --calib samples at {where} misses "
                            f"--min-fidelity {floor:g} by {floor - value:.4f}"
                            + ("; loosen the target or lower the floor" if fixed else "; lower the floor"),
                            option="min_fidelity", best=value, required=floor)
    run, chosen = best_ok
    run[0].meta["min_fidelity"] = {"floor": floor, "metric": metric, "inputs": "calib-heldout",
                                   "n": int(run[0].numerics["calib"]["n"]), "tries": tries, "chosen": chosen}
    return run


def _with_budget(cfg: CompressConfig, knob: str, f: float) -> CompressConfig:
    if knob == "target_latency":
        return dataclasses.replace(cfg, target_latency=f)
    return dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, target_params=f, checkpoint_dir=None))


def _say(knob: str, f: float) -> str:
    return f"{f:.3g} of the original's latency" if knob == "target_latency" else f"keep {f:.3g} of params"


def _latency(report) -> dict:
    """The latency ratio a ``target_latency`` try's rank choice measured (empty without one)."""
    tl = report.meta.get("target_latency")
    return {} if not tl else {"latency_ratio": tl.get("planned_ratio")}


def _measured(report) -> tuple[str, float]:
    got = fidelity(report.numerics.get("calib"))
    if got is None:
        raise FidelityError("no fidelity could be measured on the held-out --calib inputs", option="min_fidelity")
    return got


def _target(fixed: dict) -> str:
    return ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in fixed.items())
