"""Batches with any inputs, layer input moments and whitened factors (engine.batches / engine.calibrate)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from rene_onnx.engine import batches as B
from rene_onnx.engine.calibrate import input_moments, whitened_factors
from rene_onnx.engine.layers import factorize_
from rene_onnx.plan import LayerPlan, RankPlan


class TwoInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x, mask):
        return self.b(torch.relu(self.a(x)) * mask)


def test_batch_helpers_handle_tensors_tuples_and_dicts():
    x, m = torch.randn(5, 6), torch.ones(5, 1)
    model = TwoInput()
    ref = model(x, m)
    torch.testing.assert_close(B.forward(model, (x, m)), ref)
    torch.testing.assert_close(B.forward(model, {"x": x, "mask": m}), ref)
    params = {k: v.detach() for k, v in model.named_parameters()}
    torch.testing.assert_close(B.functional_forward(model, params, [x, m]), ref)
    assert B.split_batch({"input_ids": x, "mask": m, "labels": torch.zeros(5)})[0].keys() == {"input_ids", "mask"}
    xs, y = B.split_batch(((x, m), torch.zeros(5)))
    assert isinstance(xs, tuple) and y.shape == (5,)
    assert B.split_batch((x, torch.zeros(5)), use_labels=False)[1] is None
    assert B.n_samples({"a": (x[:3], m[:3])}) == 3 and B.n_samples(B.take((x, m), 2)) == 2
    assert B.output_tensor((ref, None)) is ref
    with pytest.raises(ValueError, match="no inputs"):
        B.split_batch({"labels": torch.zeros(2)})
    with pytest.raises(ValueError, match="unsupported"):
        B.split_batch(3)


def test_input_moments_match_a_direct_computation_for_linear_and_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, stride=2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
    xs = [torch.randn(3, 2, 6, 6) for _ in range(2)]
    mom = input_moments(model, [(x, torch.zeros(3)) for x in xs])
    assert set(mom) == {"0", "2"}
    cols = torch.cat([nn.functional.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18) for x in xs])
    np.testing.assert_allclose(mom["0"], (cols.double().T @ cols.double() / len(cols)).numpy(), rtol=1e-6, atol=1e-9)
    h = torch.cat([model[1](model[0](x)) for x in xs]).detach().double()
    np.testing.assert_allclose(mom["2"], (h.T @ h / len(h)).numpy(), rtol=1e-6, atol=1e-9)
    assert model.training  # flags restored
    with pytest.raises(ValueError, match="not a Linear"):
        input_moments(model, [xs[0]], ["1"])
    with pytest.raises(ValueError, match="empty"):
        input_moments(model, [])


def test_whitened_factors_initialize_a_plan_with_lower_output_error():
    torch.manual_seed(0)
    model = TwoInput()
    basis = torch.randn(6, 2)
    xs = [(torch.randn(64, 2) @ basis.T, torch.ones(64, 1)) for _ in range(2)]
    mom = input_moments(model, [(x,) for x in xs], ["a"])  # a batch of two-input samples: ((x, mask),)
    plan = RankPlan({"a": LayerPlan("a", "svd", (2,)), "b": LayerPlan("b", "dense")})
    fac = whitened_factors(model, plan, mom, eps=1e-6)
    assert list(fac.layers) == ["a"] and fac.layers["a"].arrays["U"].dtype == np.float32
    white, plain = copy.deepcopy(model), copy.deepcopy(model)
    factorize_(white, plan, fac)
    factorize_(plain, plan)
    x, m = xs[0]
    ref = model.a(x)
    err_w = (white.a(x) - ref).pow(2).sum() / ref.pow(2).sum()
    err_p = (plain.a(x) - ref).pow(2).sum() / ref.pow(2).sum()
    assert err_w < 1e-6 and err_p > 1e-3, (err_w, err_p)
