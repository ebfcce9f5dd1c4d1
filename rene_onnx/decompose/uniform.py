"""The uniform baseline: one TT rank fraction for every layer, sized to remove a given number of parameters.

What a RENE search is compared with at equal size (the paper's uniform rows): :func:`uniform_plan`.
"""
from __future__ import annotations

from collections.abc import Mapping

from rene_onnx.errors import ConfigError
from rene_onnx.plan import LayerPlan, RankPlan

from . import ranks as R
from .choose import plan_from_fraction
from .ranks import LayerShape


def uniform_plan(shapes: Mapping[str, LayerShape], removed_target: int,
                 keep_dense: tuple[str, ...] = ()) -> tuple[RankPlan, float, int]:
    """One TT / SVD rank fraction for every layer (but ``keep_dense``) that removes about ``removed_target``
    parameters; returns ``(plan, fraction, removed)``.

    The fraction is bisected. Layers of the same shape change rank together, so one fraction can step
    over the target by several percent (five 64x64 convs of ResNet-20: ~3k parameters); the layers
    whose rank differs on the two sides of that step then take the lower or the upper side's rank one
    by one (model order) while that brings the count closer: every rank stays within one step of the
    fraction's.
    """
    free = {n: s for n, s in shapes.items() if n not in keep_dense}

    def removed(layers) -> int:
        return sum(R.dense_params(free[lp.name]) - R.factorized_params(lp.method, free[lp.name], lp.ranks)
                   for lp in layers.values() if lp.method != "dense")

    lo, hi = 1e-4, 1.0  # removed(f) falls as f grows: lo removes at least the target, hi less
    lo_plan, hi_plan = plan_from_fraction(free, "tt", lo), plan_from_fraction(free, "tt", hi)
    if removed(lo_plan.layers) < removed_target:
        raise ConfigError(f"no rank fraction removes {removed_target} parameters (at most {removed(lo_plan.layers)})")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        sub = plan_from_fraction(free, "tt", mid)
        if removed(sub.layers) >= removed_target:
            lo, lo_plan = mid, sub
        else:
            hi, hi_plan = mid, sub
    layers = dict(hi_plan.layers)
    best = abs(removed(layers) - removed_target)
    adjusted = []
    for n in free:
        if lo_plan.layers[n] != hi_plan.layers[n]:
            trial = {**layers, n: lo_plan.layers[n]}
            err = abs(removed(trial) - removed_target)
            if err < best:
                layers, best = trial, err
                adjusted.append(n)
    if abs(removed(lo_plan.layers) - removed_target) < best:
        layers, adjusted = dict(lo_plan.layers), []
    frac = 0.5 * (lo + hi)
    plan = RankPlan(meta={**hi_plan.meta, "fraction": frac,
                          "uniform": {"fraction": frac, "keep_dense": list(keep_dense), "one_step_lower": adjusted}})
    for n in shapes:
        plan.add(layers[n] if n in layers else
                 LayerPlan(n, "dense", (), "kept dense by the uniform baseline (1 input channel: TT rank <= 1)"))
    return plan, frac, removed(layers)


__all__ = ["uniform_plan"]
