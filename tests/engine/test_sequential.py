"""Sequential, error-corrected activation-aware SVD (rene_onnx.engine.sequential)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from rene_onnx.engine.calibrate import input_moments, whitened_factors
from rene_onnx.engine.layers import SVDLinear, factorize_
from rene_onnx.engine.sequential import PairedMoments, corrected_svd, input_stages, sequential_factorize_
from rene_onnx.plan import LayerPlan, RankPlan
from rene_onnx.progress import listen


def _moments(x: np.ndarray, xp: np.ndarray) -> PairedMoments:
    m = PairedMoments(x.shape[1])
    m.add(torch.from_numpy(x), torch.from_numpy(xp))
    return m


def test_corrected_svd_recovers_a_low_rank_weight_and_its_bias_when_the_inputs_are_unchanged():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((12, 3)) @ rng.standard_normal((3, 10))).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    x = rng.standard_normal((400, 10)) + 2.0  # non-zero mean
    for center in (True, False):
        u, v, nb = corrected_svd(w, b, _moments(x, x), 3, eps=1e-2, center=center)
        assert u.shape == (12, 3) and v.shape == (3, 10) and u.dtype == np.float32
        np.testing.assert_allclose(u.astype(np.float64) @ v, w, atol=1e-4)
        np.testing.assert_allclose(nb, b, atol=1e-4)


def test_corrected_svd_undoes_a_known_input_distortion():
    # x' = x M (an invertible mixing done by an earlier, compressed layer): W' = W M^-T reproduces W x exactly
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 8))
    mix = np.eye(8) + 0.3 * rng.standard_normal((8, 8))
    x = rng.standard_normal((2000, 8))
    xp = x @ mix
    u, v, nb = corrected_svd(w, np.zeros(6), _moments(x, xp), 6, eps=1e-8)
    err = np.linalg.norm(x @ w.T - (xp @ (u @ v).T + nb)) / np.linalg.norm(x @ w.T)
    plain = np.linalg.norm(x @ w.T - xp @ w.T) / np.linalg.norm(x @ w.T)
    assert err < 1e-5 and plain > 0.3, (err, plain)
    with pytest.raises(ValueError, match="do not match"):
        corrected_svd(np.ones((6, 5)), None, _moments(x, xp), 2)
    with pytest.raises(ValueError, match="no paired inputs"):
        PairedMoments(3).stats()


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        return self.a(x)


class _QKV(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.out = nn.Linear(6, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.q(x)) * self.k(x) + self.v(x))


def test_input_stages_group_layers_that_read_the_same_tensor():
    m = _QKV()
    assert input_stages(m, torch.randn(2, 6), ["out", "q", "k", "v"]) == [["q", "k", "v"], ["out"]]
    with pytest.raises(ValueError, match="not in the model"):
        input_stages(m, torch.randn(2, 6), ["q", "nope"])
    with pytest.raises(ValueError, match="never called"):
        input_stages(_Skip(), torch.randn(2, 6), ["a", "b"])


def _toy(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 8)).eval()


def _inputs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g) @ torch.randn(4, 16, generator=g) + 0.1 * torch.randn(n, 16, generator=g)


def test_sequential_beats_plain_whitening_on_a_toy_net():
    teacher = _toy()
    plan = RankPlan({n: LayerPlan(n, "svd", (r,)) for n, r in (("0", 2), ("2", 20), ("4", 8))})
    calib = [_inputs(256, s) for s in range(4)]
    held = _inputs(1024, 99)
    ref = teacher(held).detach()

    plain = copy.deepcopy(teacher)
    factorize_(plain, plan, whitened_factors(teacher, plan, input_moments(teacher, calib, list(plan.layers))))
    seq = copy.deepcopy(teacher)
    events = []
    with listen(events.append):
        f = sequential_factorize_(teacher, seq, plan, calib)
    stages = [(e.step, e.total, e.info["layers"]) for e in events if e.stage == "sequential"]
    assert sorted(f.layers) == ["0", "2", "4"] and stages == [(1, 3, ["0"]), (2, 3, ["2"]), (3, 3, ["4"])]
    assert all(isinstance(seq.get_submodule(n), SVDLinear) for n in plan.layers) and not seq.training

    def err(m):
        return float(((m(held).detach() - ref) ** 2).sum() / (ref ** 2).sum())

    e_plain, e_seq = err(plain), err(seq)
    assert e_seq < 0.9 * e_plain, (e_seq, e_plain)
    # rebuilding from the returned factors gives the same model
    again = copy.deepcopy(teacher)
    factorize_(again, plan, f)
    torch.testing.assert_close(again(held), seq(held))
    with pytest.raises(ValueError, match="already factorized"):
        sequential_factorize_(teacher, seq, plan, calib)


def test_row_mask_drops_rows_and_plan_layers_stay_dense_otherwise():
    teacher = _toy(1)
    plan = RankPlan({"0": LayerPlan("0", "svd", (3,)), "2": LayerPlan("2", "dense")})
    x = _inputs(64, 3)
    seen = []

    def mask(inp):
        seen.append(inp.shape[0])
        return torch.arange(inp.shape[0]) % 2 == 0

    student = copy.deepcopy(teacher)
    f = sequential_factorize_(teacher, student, plan, [x], row_mask=mask)
    assert list(f.layers) == ["0"] and seen == [64] and isinstance(student[2], nn.Linear)
    # only the kept (even) rows count: the same as fitting on them alone
    other = copy.deepcopy(teacher)
    g = sequential_factorize_(teacher, other, plan, [x[::2]])
    np.testing.assert_allclose(f.layers["0"].arrays["U"] @ f.layers["0"].arrays["V"],
                               g.layers["0"].arrays["U"] @ g.layers["0"].arrays["V"], atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        sequential_factorize_(teacher, copy.deepcopy(teacher), plan, [])
