"""RENE rank search: ladders and clamping, the exact shell form, planted ranks, budgets, guards, resume."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from rene_onnx.decompose import ranks as R
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.engine.search import SearchConfig, SearchError, _Guard, search
from rene_onnx.engine.search_banks import LayerFrame
from rene_onnx.engine.search_budget import LayerOptions, allocate
from rene_onnx.engine.search_ladder import initial_window, ladder
from rene_onnx.models.planted import PLANTED, planted_model, teacher
from rene_onnx.progress import listen

X1 = torch.zeros(1, 16, 8, 8)
FAST = dict(steps=40, warmup_steps=5)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is as fast and does not stall when other jobs share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data_free_result():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return search(planted_model(), X1, SearchConfig(**FAST))
    finally:
        torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------ ladder


def test_paper_ladder_refines_and_stops():
    w = initial_window("paper-cifar", 1000)
    assert w.candidates == list(range(10, 101, 10))
    w2 = w.refine(50)
    assert (w2.lo, w2.hi, w2.step) == (45, 55, 1) and len(w2.candidates) == 11
    assert w2.refine(52) is None  # s // f == 0: one candidate left
    imagenet = initial_window("paper-imagenet", 10_000)
    assert imagenet.candidates[0] == 50 and imagenet.candidates[-1] == 850
    assert imagenet.refine(450).candidates == list(range(400, 501, 10))


def test_refined_window_is_clamped_to_the_original_bounds():
    w = initial_window("paper-cifar", 1000)
    low = w.refine(10)
    assert low.lo == 10 and min(low.candidates) == 10  # not 5: clamped to Lb
    high = w.refine(100)
    assert high.hi == 100 and max(high.candidates) == 100
    capped = initial_window("paper-cifar", 57)  # break-even 57 caps the preset's 100
    assert capped.candidates[-1] == 57 and capped.refine(57).hi == 57


def test_auto_ladder_spans_one_to_break_even_and_never_beyond():
    for be in (3, 28, 57, 458):
        w = initial_window("auto", be)
        c = w.candidates
        assert c[0] == 1 and c[-1] == be and 2 <= len(c) <= 11
        assert all(b > a for a, b in zip(c, c[1:]))
    w = initial_window("auto", 458, rank_multiple=8)
    assert all(r % 8 == 0 for r in w.candidates) and w.candidates[-1] <= 458
    assert initial_window("auto", 0) is None
    assert ladder(3, 10, 4) == [3, 7, 10]
    with pytest.raises(ValueError, match="preset"):
        initial_window("paper-mnist", 10)


def test_auto_stages_end_at_step_one():
    w, steps = initial_window("auto", 458), []
    while w is not None:
        steps.append(w.step)
        w = w.refine(w.candidates[len(w.candidates) // 2])
    assert steps[0] > steps[-1] == 1 and steps == sorted(steps, reverse=True)


# ------------------------------------------------------------------------------------------------ banks


def test_shell_form_follows_full_core_sgd_exactly():
    """One value per shell per candidate gives the same SGD + momentum + clipping trajectory as full TT cores."""
    w = torch.randn(12, 10, 3, 3, generator=torch.Generator().manual_seed(0)).numpy()
    ranks = [2, 5, 8, 10]
    frame = LayerFrame("l", "tt", LayerShape(12, 10, (3, 3)), w, 10, dense_mix=True)
    bank = frame.bank(ranks)
    g = frame.g.double()
    cores = [g[:r, :r].clone().requires_grad_(True) for r in ranks]
    a_ref = torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64, requires_grad=True)
    a_sh = a_ref.detach().clone().requires_grad_(True)

    def full_mixture(p):
        return sum(nn.functional.pad(pk * c, (0, 0, 0, 10 - c.shape[0], 0, 10 - c.shape[0])) for pk, c in zip(p, cores))

    def full_loss():
        return float(frame.errors[10]) + ((g - full_mixture(torch.softmax(a_ref, 0))) ** 2).sum()

    def shell_loss():
        return bank.dist(bank.mix(torch.softmax(a_sh, 0)))

    assert full_loss().item() == pytest.approx(shell_loss().item(), rel=1e-6)
    opts = [torch.optim.SGD(cores + [a_ref], lr=0.05, momentum=0.9, nesterov=True),
            torch.optim.SGD(bank.params + [a_sh], lr=0.05, momentum=0.9, nesterov=True)]
    for _ in range(25):
        for opt, loss in zip(opts, (full_loss, shell_loss)):
            opt.zero_grad()
            (3.0 * loss()).backward()
            torch.nn.utils.clip_grad_norm_([t for grp in opt.param_groups for t in grp["params"]], 0.5)
            opt.step()
    assert shell_loss().item() == pytest.approx(full_loss().item(), rel=1e-6)
    assert torch.allclose(a_ref, a_sh, atol=1e-7)
    # the mixed dense weight is the full cores' mixture too
    p = torch.softmax(a_sh, 0).detach()
    ref = torch.einsum("oa,abx,ib->oix", frame.u, full_mixture(p).float(), frame.v).reshape(w.shape) * frame.scale
    assert torch.allclose(bank.weight(bank.mix(p)), ref, atol=1e-5)
    # and the truncation error of a candidate is the frame's error curve
    assert frame.error(5) == pytest.approx(
        float(((g[5:, :] ** 2).sum() + (g[:5, 5:] ** 2).sum()) + frame.errors[10]), rel=1e-5)


def test_svd_frame_errors_match_the_singular_values():
    w = torch.randn(20, 30, generator=torch.Generator().manual_seed(0)).numpy()
    frame = LayerFrame("fc", "svd", LayerShape(20, 30), w, 12)
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    expect = (s[5:] ** 2).sum() / (s ** 2).sum()
    assert frame.error(5) == pytest.approx(expect, rel=1e-9)
    assert np.allclose(frame.shell.numpy() ** 2, s[:12] ** 2 / (s ** 2).sum())


def test_frame_rejects_non_finite_weights():
    w = np.ones((4, 4, 3, 3))
    w[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LayerFrame("bad", "tt", LayerShape(4, 4, (3, 3)), w, 3)


# ------------------------------------------------------------------------------------------------ the search


def test_data_free_search_finds_planted_ranks(data_free_result):
    res = data_free_result
    assert res.mode == "data-free"
    for name, planted in PLANTED.items():
        layer = res.layers[name]
        assert abs(layer.rbar - planted) <= 1, (name, layer)  # the final step is 1
        assert res.plan.layers[name].ranks[0] == layer.chosen[0]
        assert abs(sum(layer.p) - 1) < 1e-6 and len(layer.p) == len(layer.candidates)
        assert layer.p_moved > 0.3  # the logits really moved
        assert layer.error < 1e-4  # at (or above) the planted rank only the noise is left
    assert res.plan.layers["c1"].method == "tt" and res.plan.layers["fc"].method == "svd"
    assert len(res.stages) >= 2 and res.seconds > 0


def test_every_stage_stays_inside_the_original_window(data_free_result):
    for st in data_free_result.stages:
        for name, rec in st["layers"].items():
            lb, ub = data_free_result.layers[name].window
            assert lb <= min(rec["candidates"]) and max(rec["candidates"]) <= ub
            assert rec["rbar"] in rec["candidates"]
    for name, layer in data_free_result.layers.items():
        shape = LayerShape(*{"c1": (32, 16, (3, 3)), "c2": (32, 32, (3, 3)), "c3": (64, 32, (3, 3)),
                             "fc": (48, 64, ())}[name])
        assert layer.window[1] <= R.break_even_rank(layer.method, shape)


def test_paper_preset_never_goes_below_its_lower_bound():
    res = search(planted_model(), X1, SearchConfig(preset="paper-cifar", **FAST))
    for name, layer in res.layers.items():
        assert layer.chosen[0] >= 10, name  # planted ranks 6 and 8 lie below Lb = 10: clamped, not rank 1
        assert layer.window[0] == 10
    first = res.stages[0]["layers"]
    assert first["c1"]["rbar"] == 10 and first["fc"]["rbar"] == 10  # the lower bound itself is picked...
    assert min(res.stages[1]["layers"]["c1"]["candidates"]) == 10  # ...and the next window starts there


def test_same_seed_same_plan(data_free_result):
    again = search(planted_model(), X1, SearchConfig(**FAST))
    assert again.plan.to_dict()["layers"] == data_free_result.plan.to_dict()["layers"]
    assert [l.p for l in again.layers.values()] == [l.p for l in data_free_result.layers.values()]


def test_validation_ce_search_finds_planted_ranks_and_leaves_the_model_alone():
    m, x, y = teacher()
    m.train()
    before = copy.deepcopy(m.state_dict())
    loader = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    cfg = SearchConfig(calib_batch_size=32, **FAST)
    events = []
    with listen(events.append):
        res = search(m, x[:1], cfg, calib_loader=loader)
    calls = [(int(e.message.split()[1]), e.step, e.total, dict(e.info)) for e in events if e.stage == "search"]
    assert res.mode == "validation-ce" and res.calib_samples == 4 * 32
    for name, planted in PLANTED.items():
        assert abs(res.layers[name].rbar - planted) <= 1, (name, res.layers[name])
    assert m.training and all(p.grad is None for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    stages = {c[0] for c in calls}
    assert 0 in stages and 1 in stages and all(c[1] <= c[2] for c in calls)
    assert any(c[3].get("phase") == "search" and "L_val" in c[3] for c in calls)
    again = search(m, x[:1], cfg, calib_loader=loader)
    assert again.plan.to_dict()["layers"] == res.plan.to_dict()["layers"]


@pytest.mark.parametrize("target", [0.25, 0.6])
def test_target_params_lands_within_two_percent(target):
    res = search(planted_model(), X1, SearchConfig(target_params=target, **FAST))
    total = sum(p.numel() for p in planted_model().parameters())
    kept = total - sum(R.dense_params(s) for s in _shapes().values()) + sum(
        R.factorized_params(lp.method, _shapes()[n], lp.ranks) for n, lp in res.plan.layers.items())
    assert res.params[0] == total and res.params[1] == kept
    assert abs(kept / total / target - 1) <= 0.02, kept / total
    assert not res.notes or "outside" not in " ".join(res.notes)


def test_budget_equal_to_the_searched_cost_returns_the_searched_plan(data_free_result):
    own = data_free_result.params_fraction
    res = search(planted_model(), X1, SearchConfig(target_params=own, sensitivity="none", **FAST))
    assert {n: l.chosen for n, l in res.layers.items()} == {n: l.chosen for n, l in data_free_result.layers.items()}


def test_target_macs_lands_within_two_percent():
    res = search(planted_model(), X1, SearchConfig(target_macs=0.3, **FAST))
    assert abs(res.macs_fraction / 0.3 - 1) <= 0.02
    assert res.macs[1] < res.macs[0]


class Tokens(nn.Module):
    """A Conv1d and two Linears on (B, T, C) tokens: few, coarse rank steps."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(16, 24, 5, padding=2)
        self.l = nn.Linear(24, 32)
        self.h = nn.Linear(32, 5)

    def forward(self, x):
        return self.h(torch.relu(self.l(self.c(x).transpose(1, 2)))).mean(1)


@pytest.mark.parametrize("key, target", [("target_macs", 0.5), ("target_macs", 0.3), ("target_params", 0.5)])
def test_budget_lands_in_band_on_a_coarse_model(key, target):
    """Single rank steps overshoot here: the allocator moves one layer down and another up to land in the band."""
    torch.manual_seed(0)
    res = search(Tokens(), torch.randn(1, 16, 12), SearchConfig(steps=20, warmup_steps=2, **{key: target}))
    got = res.macs_fraction if key == "target_macs" else res.params_fraction
    assert abs(got / target - 1) <= 0.02 and "outside" not in " ".join(res.notes)
    assert res.plan.layers["c"].method == "tt"


def test_threads_option_is_restored():
    before = torch.get_num_threads()
    search(Tokens(), torch.randn(1, 16, 12), SearchConfig(steps=5, warmup_steps=1, threads=before + 1))
    assert torch.get_num_threads() == before


def test_unreachable_budget_fails_before_searching():
    with pytest.raises(ValueError, match="cannot be met"):
        search(planted_model(), X1, SearchConfig(target_params=0.001, **FAST))


def test_nan_guard_raises_after_back_offs():
    with pytest.raises(SearchError, match="non-finite"):
        search(planted_model(), X1, SearchConfig(lr=1e200, grad_clip=1e300, max_backoffs=2, **FAST))


def test_guard_restores_the_last_good_state_and_backs_off():
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = torch.optim.SGD([t], lr=0.1, momentum=0.9)
    guard = _Guard([t], [opt], max_backoffs=1, factor=0.5, every=1)
    assert guard.check(torch.tensor(1.0))
    with torch.no_grad():
        t.add_(100.0)
    assert not guard.check(torch.tensor(float("nan")))
    assert torch.equal(t.detach(), torch.tensor([1.0, 2.0])) and opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert guard.backoffs == 1
    with pytest.raises(SearchError):
        guard.check(torch.tensor(float("inf")))


def test_checkpoint_resume_gives_the_same_plan(tmp_path, data_free_result):
    cfg = SearchConfig(checkpoint_dir=tmp_path, **FAST)
    full = search(planted_model(), X1, cfg)
    assert full.plan.to_dict()["layers"] == data_free_result.plan.to_dict()["layers"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "plan.json" in files and "stage1.json" in files
    for p in tmp_path.glob("stage*.json"):  # pretend the run stopped after stage 1
        if p.name != "stage1.json":
            p.unlink()
    (tmp_path / "plan.json").unlink()
    resumed = search(planted_model(), X1, cfg)
    assert resumed.plan.to_dict()["layers"] == full.plan.to_dict()["layers"]
    assert len(resumed.stages) == len(full.stages)
    assert json.loads((tmp_path / "plan.json").read_text())["format"] == "rene-onnx/rank-plan/v1"
    # a finished checkpoint re-runs only the final choice under a new budget
    budget = search(planted_model(), X1, SearchConfig(checkpoint_dir=tmp_path, target_params=0.5, **FAST))
    assert abs(budget.params_fraction / 0.5 - 1) <= 0.02
    with pytest.raises(ValueError, match="another model or config"):
        search(planted_model(), X1, SearchConfig(checkpoint_dir=tmp_path, beta=0.5, **FAST))


def test_cp_search_runs_on_a_small_conv():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(6, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    m = Tiny()
    res = search(m, torch.zeros(1, 6, 5, 5), SearchConfig(method="cp", steps=20, warmup_steps=2, cp_iters=30))
    layer = res.layers["conv"]
    be = R.break_even_rank("cp", LayerShape(8, 6, (3, 3)))
    assert layer.method == "cp" and 1 <= layer.chosen[0] <= be and 0 <= layer.error <= 1


def test_dense_layers_and_excludes():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 8, 3, padding=1)  # TT break-even 1: nothing to search
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.conv = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.conv(self.dw(self.stem(x)))
            return self.fc(x.mean((2, 3)))

    res = search(Mixed(), torch.zeros(1, 1, 6, 6), SearchConfig(exclude=["fc"], **FAST))
    plan = res.plan.layers
    assert list(plan) == ["stem", "dw", "conv", "fc"]
    assert plan["dw"].method == "dense" and "depthwise" in plan["dw"].reason
    assert plan["stem"].method == "dense" and "nothing to search" in plan["stem"].reason
    assert plan["fc"].method == "dense" and "excluded" in plan["fc"].reason
    assert set(res.layers) == {"conv"}
    with pytest.raises(ValueError, match="not among"):
        search(Mixed(), torch.zeros(1, 1, 6, 6), SearchConfig(exclude=["nope"]))


@pytest.mark.parametrize("kw, match", [
    (dict(method="tucker"), "method"), (dict(preset="big"), "preset"), (dict(target_params=1.5), "target_params"),
    (dict(alpha_lr=0), "alpha_lr"), (dict(steps=0), "steps"), (dict(momentum=1.0), "momentum"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        SearchConfig(**kw)


def test_data_mode_needs_a_loader():
    with pytest.raises(ValueError, match="calib_loader"):
        search(planted_model(), X1, SearchConfig(data_free=False))


# ------------------------------------------------------------------------------------------------ budget


def _shapes():
    return {"c1": LayerShape(32, 16, (3, 3), 1, True, 64, 64), "c2": LayerShape(32, 32, (3, 3), 1, True, 64, 64),
            "c3": LayerShape(64, 32, (3, 3), 1, True, 64, 16), "fc": LayerShape(48, 64, (), 1, True, 1, 1)}


def test_allocate_prefers_the_layer_whose_error_drops_fastest():
    ranks = np.arange(1, 21)
    cost = ranks * 100.0
    steep = np.exp(-ranks / 2.0)  # error gone by rank ~10
    flat = 1.0 - ranks / 21.0
    opts = [LayerOptions("steep", ranks, steep, cost, cost, 2100, 2100, 10),
            LayerOptions("flat", ranks, flat, cost, cost, 2100, 2100, 10)]
    a = allocate(opts, 2000.0, None, weights=np.ones(2))
    assert a.params <= 2000.0 and a.params >= 1900.0
    assert a.choice["flat"] > a.choice["steep"]
    with pytest.raises(ValueError, match="cannot be met"):
        allocate(opts, 150.0, None)
    roomy = allocate(opts, 10_000.0, None, weights=np.ones(2))
    assert roomy.choice == {"steep": None, "flat": None}  # everything fits dense
