"""Data-free sensitivity (issue 10 item 3): synthetic inputs matched to BatchNorm statistics, measured
per-layer output sensitivity, and its use in the data-free budget and the report."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rene_onnx.config import SearchConfig
from rene_onnx.engine.search import search
from rene_onnx.engine.sensitivity import bn_synthetic_inputs, synthetic_inputs
from rene_onnx.report.search import search_section

FAST = dict(steps=20, warmup_steps=2, calib_batch_size=8, max_calib_batches=2)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ConvBN(nn.Module):
    """Two conv + BatchNorm blocks whose running statistics come from "data" far from Gaussian noise
    (per-channel shifted and scaled, spatially smooth)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None)
        self.fc = nn.Linear(8, 5)
        shift, scale = torch.tensor([2.0, -1.5, 0.5]), torch.tensor([3.0, 0.5, 1.5])
        self.train()
        with torch.no_grad():
            for _ in range(8):
                base = torch.randn(64, 3, 4, 4, generator=g)
                smooth = nn.functional.interpolate(base, size=(8, 8), mode="bilinear", align_corners=False)
                self(smooth * scale[:, None, None] + shift[:, None, None])
        self.eval()

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)))
        return self.fc(h.mean((2, 3)))


def bn_inputs_stats(model: ConvBN, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer: the per-channel mean and std of its input on ``x``."""
    with torch.no_grad():
        a = model.c1(x)
        b = model.c2(torch.relu(model.b1(a)))
    return [(t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False).sqrt()) for t in (a, b)]


def mismatch(model: ConvBN, x: torch.Tensor) -> float:
    out = 0.0
    for (mean, std), bn in zip(bn_inputs_stats(model, x), (model.b1, model.b2)):
        rs = (bn.running_var + bn.eps).sqrt()
        out += float((mean - bn.running_mean).abs().max()) + float((std / rs - 1).abs().max())
    return out


def test_synthetic_inputs_match_the_batchnorm_statistics():
    model = ConvBN().eval()
    noise = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    syn = bn_synthetic_inputs(model, torch.zeros(1, 3, 8, 8), samples=16, steps=80, seed=0)
    x = torch.cat(syn.inputs)
    before, after = mismatch(model, noise), mismatch(model, x)
    assert before > 0.5  # Gaussian noise is far from the running statistics ...
    assert after < 0.1 * before  # ... the synthetic inputs close to them, in every channel of both layers
    assert syn.info["method"] == "zeroq-bn" and syn.info["bn_mismatch"][1] < syn.info["bn_mismatch"][0]
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())  # the model is untouched


def test_without_batchnorm_the_inputs_are_gaussian_and_token_ids_are_refused():
    syn = synthetic_inputs(nn.Sequential(nn.Linear(6, 4)), torch.zeros(1, 6), samples=8)
    assert syn.info["method"] == "gaussian" and "BatchNorm" in syn.info["why"]
    with pytest.raises(ValueError, match="token ids"):
        synthetic_inputs(nn.Sequential(nn.Linear(6, 4)), torch.zeros(1, 6, dtype=torch.long))


def spectrum_weight(n: int, seed: int) -> torch.Tensor:
    """A square weight with a slowly decaying spectrum (every truncation costs some weight error)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    return u @ torch.diag(torch.linspace(1.0, 0.2, n)) @ v.T


class LoudQuiet(nn.Module):
    """Two parallel Linear layers with the SAME weight: the weight-only objective cannot tell them apart,
    but the output hears ``loud`` 40x more than ``quiet``."""

    def __init__(self, n: int = 24):
        super().__init__()
        self.loud, self.quiet = nn.Linear(n, n, bias=False), nn.Linear(n, n, bias=False)
        with torch.no_grad():
            w = spectrum_weight(n, 0) * 3.0
            self.loud.weight.copy_(w)
            self.quiet.weight.copy_(w)

    def forward(self, x):
        return self.loud(x) + 0.025 * self.quiet(x)


@pytest.fixture(scope="module")
def budgeted():
    torch.set_num_threads(1)
    model, x = LoudQuiet(), torch.zeros(1, 24)
    with_sens = search(model, x, SearchConfig(target_params=0.6, **FAST))
    without = search(model, x, SearchConfig(target_params=0.6, sensitivity="none", **FAST))
    return with_sens, without


def test_the_layer_the_output_hears_more_gets_the_larger_measured_sensitivity(budgeted):
    res, _ = budgeted
    curves = res.sensitivity["curves"]
    errs_l, d_l = curves["loud"]
    errs_q, d_q = curves["quiet"]
    assert errs_l == errs_q  # equal weight error at equal ranks ...
    assert all(a > 10 * b for a, b in zip(d_l, d_q))  # ... but truncating loud moves the output far more
    assert res.sensitivity["method"] == "gaussian"


def test_data_free_budget_with_sensitivity_cuts_the_insensitive_layer(budgeted):
    res, without = budgeted
    assert res.params_fraction <= 0.6 * 1.02  # within the budget (one rank step here is 4 % of the model)
    loud, quiet = res.layers["loud"], res.layers["quiet"]
    r_loud = loud.chosen[0] if loud.chosen else 24
    assert quiet.chosen and quiet.chosen[0] < r_loud  # quiet is cut deeper
    assert quiet.error > 2 * loud.error
    # without the sensitivity the two identical layers are indistinguishable: errors within a rank step
    a, b = without.layers["loud"], without.layers["quiet"]
    assert abs((a.chosen or (24,))[0] - (b.chosen or (24,))[0]) <= 2
    assert without.sensitivity["method"] == "none"


def test_the_report_records_the_estimate(budgeted):
    res, without = budgeted
    sec = search_section(res)["sensitivity"]
    assert sec["method"] == "gaussian" and "Gaussian" in sec["estimate"]
    assert any("Gaussian random inputs" in n for n in res.notes)
    assert "weight error only" in search_section(without)["sensitivity"]["estimate"]


def test_bn_model_reports_the_zeroq_estimate():
    res = search(ConvBN(), torch.zeros(1, 3, 8, 8), SearchConfig(target_params=0.6, **FAST))
    sec = search_section(res)["sensitivity"]
    assert sec["method"] == "zeroq-bn" and sec["bn_layers"] == 2
    assert sec["bn_mismatch"][1] < sec["bn_mismatch"][0]
    assert "BatchNorm statistics" in sec["estimate"] and "accuracy is unknown" in sec["estimate"]
    assert any("ZeroQ" in n for n in res.notes)
    assert set(sec["curves"]) == set(res.layers)


def test_candidate_divergence_measures_each_layer_alone_and_restores_the_weights():
    """A layer whose truncation the output hears (the classifier) costs more than one of equal relative
    weight error that a later layer scales down; the exact weights give 0; the model is left unchanged."""
    from rene_onnx.engine.sensitivity import candidate_divergence

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10))
    with torch.no_grad():
        model[2].weight.mul_(0.01)  # the middle layer barely reaches the output ...
        model[2].bias.fill_(1.0)  # ... whose ReLU stays open on its bias
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = [torch.randn(8, 16), torch.randn(8, 16)]

    def halved(w):  # the same relative weight error in every layer: half the weight
        return (w.detach() * 0.5).numpy()

    cands = {"0": [model[0].weight.detach().numpy().copy(), halved(model[0].weight)],
             "2": [halved(model[2].weight)], "4": [halved(model[4].weight)]}
    costs, kind = candidate_divergence(model, cands, x)
    assert kind == "kl"  # (N, classes) logits
    assert costs["0"][0] == pytest.approx(0.0, abs=1e-9)
    assert costs["4"][0] > 10 * costs["2"][0] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
