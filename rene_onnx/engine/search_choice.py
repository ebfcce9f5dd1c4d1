"""The RENE search's final rank choice: the budget (whole-model totals and targets) and the per-layer choice.

Without a budget each layer keeps its searched rank (``argmax p``, the paper). With one,
:func:`.search_budget.allocate` picks ranks over every layer's admissible options minimizing
``sum_i w_i e_i(r_i)``; the per-layer term is either the weighted error curve (``importance``:
implied by the search, or measured with data) or, with ``curves`` (the data-free sensitivity:
:func:`.search_data.measured_curves` on synthetic inputs), the measured output-error increase
interpolated over the layer's error curve (:func:`curve_errors`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..config import SearchConfig
from ..decompose import ranks as R
from ..decompose.choose import auto_methods, pick_by_error
from ..decompose.ranks import LayerShape
from ..errors import ConfigError
from ..plan import LayerPlan, RankPlan
from .search_budget import LayerOptions, allocate

#: relative squared weight errors below this are rounding noise (float32 weights hold ~7 digits)
NOISE = 1e-12

@dataclass
class LayerSearch:
    """One searched layer's outcome. ``candidates`` / ``p`` are the last stage's."""

    name: str
    method: str
    candidates: tuple[int, ...]
    p: tuple[float, ...]
    chosen: tuple[int, ...]  # final ranks (after the budget, if any); () when the layer stays dense
    rbar: int  # the search's own pick (argmax p of the last stage)
    p_moved: float  # total-variation distance of the last stage's p from uniform (0: never moved)
    error: float  # ||W - W_r||^2 / ||W||^2 of the truncation at ``chosen`` (0 when dense)
    window: tuple[int, int]  # the original [lb, ub] every stage stayed inside


@dataclass
class Budget:
    """Whole-model totals, the part outside the searched layers, and the targets (fractions)."""

    total: dict[str, int]
    fixed: dict[str, int]
    target: dict[str, float | None]

    @property
    def active(self) -> bool:
        return any(v is not None for v in self.target.values())


def costs(method: str, shape: LayerShape, r: int) -> tuple[int, int]:
    ranks = R.check_ranks(method, shape, int(r))
    return R.factorized_params(method, shape, ranks), R.factorized_macs(method, shape, ranks)



def check_budget(cfg: SearchConfig, layers: list, budget: Budget) -> None:
    """Fail early if even the smallest admissible ranks cannot meet a target."""
    for i, key in enumerate(("params", "macs")):
        target = budget.target[key]
        if target is None:
            continue
        dense = R.dense_params if key == "params" else R.dense_macs
        low = budget.fixed[key] + sum(min(costs(l.method, l.shape, l.window.lb)[i], dense(l.shape)) for l in layers)
        if low > target * budget.total[key] * (1 + cfg.tolerance):
            raise ConfigError(
                f"{target} cannot be met: with every searched layer at its smallest rank the model keeps "
                f"{low / budget.total[key]:.3f} of its {key} ({budget.fixed[key] / budget.total[key]:.3f} is in "
                f"layers / parameters that are not searched); ask for at least {low / budget.total[key]:.2f}",
                option=f"target_{key}")


def curve_errors(errors: np.ndarray, measured: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A layer's measured output-error increase at relative (weight) errors ``errors``.

    ``measured = (e_k, D_k)``: the increases measured at a few ranks. Piecewise linear in ``e``
    through ``(0, 0)`` (dense) and the measured points (made non-decreasing: the measurement is
    noisy), continued beyond the largest measured error along the secant from the origin.
    """
    e = np.asarray(errors, dtype=np.float64)
    order = np.argsort(measured[0])
    xs = np.concatenate([[0.0], np.asarray(measured[0], dtype=np.float64)[order]])
    ys = np.maximum.accumulate(np.concatenate([[0.0], np.maximum(np.asarray(measured[1])[order], 0.0)]))
    out = np.interp(e, xs, ys)
    if xs[-1] > 0:
        tail = e > xs[-1]
        out[tail] = ys[-1] * e[tail] / xs[-1]
    return out


def final_choice(cfg: SearchConfig, layers: list, plan: RankPlan, budget: Budget,
                 importance: dict[str, float] | None = None, weight_of: Callable[[str], np.ndarray] | None = None,
                 curves: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, how: str | None = None):
    """The final ranks (the module docstring) -> ``(LayerSearch per layer, weights used, notes)``.

    ``how``: what a factorized layer's reason says chose its ranks (default: the search's rbar and p)."""
    notes: list[str] = []
    weights: dict[str, float] = {}
    choice: dict[str, int | None] = {l.name: l.rbar for l in layers}
    if budget.active:
        options = []
        for l in layers:
            m = R.layer_multiple(l.method, l.shape, cfg.rank_multiple)
            ranks = np.arange(l.first.lb, l.first.ub + 1)
            ranks = ranks[(ranks % m == 0) | (ranks == l.first.lb) | (ranks == l.first.ub)]
            cost = np.array([costs(l.method, l.shape, int(r)) for r in ranks], dtype=np.float64).reshape(-1, 2)
            keep = cost[:, 0] < R.dense_params(l.shape)
            if cfg.target_macs is not None:
                keep &= cost[:, 1] < R.dense_macs(l.shape)
            if not keep.any():
                keep[:] = True
            ranks, cost = ranks[keep], cost[keep]
            # below NOISE a relative squared error is rounding (float32 weights, LAPACK): exactly 0, so equal
            # errors tie exactly and the choice does not follow last-bit noise from run to run
            err = l.frame.error_curve(ranks)
            err = np.where(err < NOISE, 0.0, err)
            if curves is not None:
                err = curve_errors(err, curves[l.name])
            options.append(LayerOptions(l.name, ranks, err, cost[:, 0], cost[:, 1],
                                        R.dense_params(l.shape), R.dense_macs(l.shape), l.rbar))
        room = {k: None if t is None else t * budget.total[k] - budget.fixed[k] for k, t in budget.target.items()}
        slack = tuple(0.0 if budget.target[k] is None else cfg.tolerance * budget.target[k] * budget.total[k]
                      for k in ("params", "macs"))
        w = np.ones(len(options)) if curves is not None else None
        if importance is not None and curves is None:
            w = np.array([importance[o.name] for o in options], dtype=np.float64)
            pos = w[w > 0]
            floor = float(np.median(pos)) / 100.0 if pos.size else 1.0
            w = np.maximum(w, floor)  # a layer whose truncation did not move L_val still counts a little
            w = w / float(np.median(w))
        alloc = allocate(options, room["params"], room["macs"], weights=w, slack=slack)
        if importance is not None and curves is None:
            weights = {o.name: round(float(x), 6) for o, x in zip(options, w)}
        choice = alloc.choice
        for key, got in (("params", alloc.params), ("macs", alloc.macs)):
            target = budget.target[key]
            if target is None:
                continue
            frac = (budget.fixed[key] + got) / budget.total[key]
            if abs(frac / target - 1) > cfg.tolerance:
                notes.append(f"the plan keeps {frac:.4f} of the {key}, outside target {target} +- "
                             f"{cfg.tolerance:.0%} (a rank step is too coarse here, or the other budget binds)")
    out: dict[str, LayerSearch] = {}
    for l in layers:
        r = choice[l.name]
        if r is None:
            plan.add(LayerPlan(l.name, "dense", (), "the budget keeps this layer dense"))
            ranks, err = (), 0.0
        else:
            ranks = R.check_ranks(l.method, l.shape, int(r))
            err = l.frame.error(int(r))
            method, auto = auto_pick(cfg, l, ranks, weight_of)
            if method != l.method:
                method, ranks, err = method, auto[0], auto[1][method]
            dense, fact = R.dense_params(l.shape), R.factorized_params(method, l.shape, ranks)
            note = "; auto by error at equal cost: " + ", ".join(f"{m} {e:.4g}" for m, e in auto[1].items()) \
                if auto else ""
            plan.add(LayerPlan(l.name, method, ranks,
                               f"{how or f'searched: rbar={l.rbar} p={max(l.p):.2f} over {list(l.candidates)}'}; "
                               f"params {dense} -> {fact} ({100.0 * fact / dense:.1f}%){note}"))
        out[l.name] = LayerSearch(l.name, plan.layers[l.name].method if r is not None else l.method, l.candidates,
                                  l.p, ranks, l.rbar, l.p_moved, err, (l.first.lb, l.first.ub))
    return out, weights, notes


def auto_pick(cfg: SearchConfig, l, ranks: tuple[int, ...], weight_of) -> tuple[str, tuple]:
    """``method="auto"`` with several candidates for the layer: the one with the least error at equal cost
    (:func:`~rene_onnx.decompose.choose.pick_by_error`) -> ``(method, (its ranks, errors))``; else ``(l.method, ())``."""
    candidates = auto_methods(l.shape) if cfg.method == "auto" and weight_of is not None else ()
    if len(candidates) < 2 or l.method not in candidates:
        return l.method, ()
    method, picked, errors = pick_by_error(l.shape, weight_of(l.name), l.method, ranks, candidates)
    return method, (picked, errors)
