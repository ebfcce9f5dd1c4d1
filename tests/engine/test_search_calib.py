"""The RENE search with unlabeled calibration data: distillation objective, whitened SVD, measured importance."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rene_onnx.engine.calibrate import input_moments
from rene_onnx.engine.layers import factorize_
from rene_onnx.engine.search import SearchConfig, search

FAST = dict(steps=6, warmup_steps=2, n_candidates=4, progress_every=100)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(24, 48)
        self.fc2 = nn.Linear(48, 48)
        self.fc3 = nn.Linear(48, 6)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = MLP().eval()
    basis = torch.randn(24, 5)  # inputs live near a 5-dim subspace

    def batch(n, s):
        g = torch.Generator().manual_seed(s)
        return torch.randn(n, 5, generator=g) @ basis.T + 0.01 * torch.randn(n, 24, generator=g)

    calib = [batch(32, 100 + i) for i in range(3)]  # unlabeled batches
    held = batch(256, 999)
    return model, calib, held


def _distill_error(model, student, x):
    with torch.no_grad():
        t, s = model(x), student(x)
    return float(((s - t) ** 2).sum() / (t ** 2).sum())


def test_unlabeled_distill_search_whitened_beats_plain_at_the_same_budget():
    model, calib, held = _setup()
    base = dict(method="svd", target_params=0.5, objective="distill", **FAST)
    plain = search(model, calib[0][:1], SearchConfig(**base), calib)
    white = search(model, calib[0][:1], SearchConfig(whiten=True, **base), calib)
    assert plain.mode == white.mode == "validation-distill" and plain.calib_samples == 24  # 3 batches of 8
    assert plain.factors is None and set(white.factors.layers) == {n for n, lp in white.plan.layers.items()
                                                                   if lp.method == "svd"}
    for res in (plain, white):
        assert abs(res.params_fraction / 0.5 - 1) <= 0.02
    s_plain, s_white = copy.deepcopy(model), copy.deepcopy(model)
    factorize_(s_plain, plain.plan)
    factorize_(s_white, white.plan, white.factors)
    e_plain, e_white = _distill_error(model, s_plain, held), _distill_error(model, s_white, held)
    assert e_white < 0.5 * e_plain, (e_white, e_plain)
    # the layers' recorded errors are relative output errors: near zero above the inputs' 5 directions for fc1
    if white.plan.layers["fc1"].method == "svd" and white.plan.layers["fc1"].ranks[0] >= 5:
        assert white.layers["fc1"].error < 1e-2


def test_measured_importance_weights_the_budget_by_sensitivity():
    model, calib, held = _setup()
    res = search(model, calib[0][:1], SearchConfig(method="svd", target_params=0.5, objective="distill", whiten=True,
                                                   importance="measured", **FAST), calib)
    assert set(res.importance) == {"fc1", "fc2", "fc3"} and all(w > 0 for w in res.importance.values())
    assert abs(res.params_fraction / 0.5 - 1) <= 0.02
    implied = search(model, calib[0][:1], SearchConfig(method="svd", target_params=0.5, objective="distill",
                                                       whiten=True, **FAST), calib)
    s_m, s_i = copy.deepcopy(model), copy.deepcopy(model)
    factorize_(s_m, res.plan, res.factors)
    factorize_(s_i, implied.plan, implied.factors)
    # to first order the measured weights minimize the output error: not worse than the implied weights
    assert _distill_error(model, s_m, held) <= 1.1 * _distill_error(model, s_i, held)


def test_precomputed_moments_and_bad_options():
    model, calib, _ = _setup()
    mom = input_moments(model, calib)
    res = search(model, calib[0][:1], SearchConfig(method="svd", data_free=True, whiten=True, **FAST), moments=mom)
    assert res.mode == "data-free" and res.factors is not None
    with pytest.raises(ValueError, match="whiten needs"):
        search(model, calib[0][:1], SearchConfig(method="svd", whiten=True, **FAST))
    with pytest.raises(ValueError, match="measured"):
        search(model, calib[0][:1], SearchConfig(method="svd", importance="measured", **FAST))
    with pytest.raises(ValueError, match="objective='distill'"):
        search(model, calib[0][:1], SearchConfig(method="svd", **FAST), calib)  # ce needs labels
    for bad in (dict(objective="kl"), dict(importance="x"), dict(whiten_eps=0.0)):
        with pytest.raises(ValueError):
            SearchConfig(**bad)
