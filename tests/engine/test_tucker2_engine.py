"""The torch side of Tucker-2: its module (full rank == the conv, geometry, grouped, round trip, counts) and the
RENE search choosing it (``method="tucker2"``) or weighing it (``method="auto"``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rene_onnx.decompose import decompose
from rene_onnx.decompose import ranks as R
from rene_onnx.engine import registry
from rene_onnx.engine.layers import (
    FactorizedModule,
    collect_factors,
    dense_module,
    factorize_,
    factorize_module,
    module_from_arrays,
)
from rene_onnx.engine.profile import count, layer_shapes
from rene_onnx.engine.search import SearchConfig, search
from rene_onnx.engine.tucker2 import Tucker2Conv
from rene_onnx.plan import LayerPlan, RankPlan

CONVS = [
    pytest.param(lambda: nn.Conv2d(6, 10, 3), (2, 6, 9, 9), id="conv2d"),
    pytest.param(lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), (2, 6, 9, 9), id="stride-pad"),
    pytest.param(lambda: nn.Conv2d(6, 10, (3, 5), padding=(2, 1), dilation=2, bias=False), (2, 6, 11, 12),
                 id="dil-nobias"),
    pytest.param(lambda: nn.Conv2d(6, 10, 3, padding=1, padding_mode="reflect"), (2, 6, 7, 7), id="reflect"),
    pytest.param(lambda: nn.Conv1d(6, 10, 5, stride=2, padding=2), (2, 6, 20), id="conv1d"),
    pytest.param(lambda: nn.Conv2d(8, 12, 3, padding=1, groups=4), (2, 8, 7, 7), id="grouped"),
]


@pytest.mark.parametrize("make,xshape", CONVS)
def test_full_rank_tucker2_conv_reproduces_the_conv(make, xshape):
    torch.manual_seed(0)
    conv = make()
    g = conv.groups
    full = (conv.out_channels // g, conv.in_channels // g)
    m = factorize_module(conv, "tucker2", full)
    assert isinstance(m, Tucker2Conv) and isinstance(m, FactorizedModule) and m.method == "tucker2"
    assert m.ranks == full and m.groups == g
    assert [type(c) for c in m.children()] == [type(conv)] * 3
    assert m.core.stride == conv.stride and m.core.padding == conv.padding and m.core.dilation == conv.dilation
    assert m.core.padding_mode == conv.padding_mode and m.first.stride == (1,) * len(conv.stride)
    assert m.first.bias is None and m.core.bias is None and (m.last.bias is None) == (conv.bias is None)
    x = torch.randn(xshape)
    with torch.no_grad():
        torch.testing.assert_close(m(x), conv(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(m.reconstruct_weight(), conv.weight, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(dense_module(m)(x), conv(x), atol=1e-4, rtol=1e-4)


def test_low_rank_module_is_the_hosvd_and_round_trips():
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
    m = factorize_module(conv, "tucker2", (5, 3))
    assert m.first.weight.shape == (3, 8, 1, 1) and m.core.weight.shape == (5, 3, 3, 3)
    assert m.last.weight.shape == (12, 5, 1, 1)
    lf = m.to_factors("c")
    want = decompose("tucker2", conv.weight.detach().numpy(), (5, 3))
    for k, a in want.items():
        np.testing.assert_allclose(lf.arrays[k], a, atol=1e-6)
    assert lf.method == "tucker2" and lf.ranks == (5, 3) and lf.bias.shape == (12,)
    again = module_from_arrays(conv, "tucker2", lf.arrays)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(again(x), m(x))
        ref = nn.functional.conv2d(x, m.reconstruct_weight(), conv.bias, stride=2, padding=1)
        torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-4)
    err = ((m.reconstruct_weight() - conv.weight) ** 2).sum()
    assert err.item() > 1e-3
    err.backward()  # differentiable: fine-tuning distills through it
    assert all(p.grad is not None for p in (m.first.weight, m.core.weight, m.last.weight))
    with pytest.raises(ValueError, match="do not fit"):
        module_from_arrays(conv, "tucker2", dict(lf.arrays, core=np.zeros((5, 4, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="tucker2 factors miss"):
        module_from_arrays(conv, "tucker2", {"first": lf.arrays["first"]})
    with pytest.raises(ValueError, match="Linear layer is factorized by svd, not 'tucker2'"):
        factorize_module(nn.Linear(8, 4), "tucker2", 2)
    assert registry.get("tucker2").conv is Tucker2Conv and registry.get("tucker2").linear is None


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=2)
        self.pw = nn.Conv2d(32, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        for m in (self.stem, self.conv, self.grouped, self.pw):
            x = torch.relu(m(x))
        return self.fc(x.mean((2, 3)))


def test_torch_counts_agree_with_the_numpy_rules():
    torch.manual_seed(2)
    model, x = Net(), torch.randn(1, 3, 16, 16)
    shapes = layer_shapes(model, x)
    plan = RankPlan()
    for name, ranks in (("conv", (6, 4)), ("grouped", (5, 3)), ("stem", (8, 3))):
        plan.add(LayerPlan(name, "tucker2", ranks))
    plan.add(LayerPlan("pw", "svd", (6,)))
    params0, macs0 = count(model, x)
    factorize_(model, plan)
    params1, macs1 = count(model, x)
    saved_p = sum(R.dense_params(shapes[n]) - R.factorized_params(lp.method, shapes[n], lp.ranks)
                  for n, lp in plan.layers.items())
    saved_m = sum(R.dense_macs(shapes[n]) - R.factorized_macs(lp.method, shapes[n], lp.ranks)
                  for n, lp in plan.layers.items())
    assert params0 - params1 == saved_p and macs0 - macs1 == saved_m
    assert collect_factors(model).layers["grouped"].arrays["core"].shape == (10, 3, 3, 3)


def _planted_net():
    """Net() with its 16->32 conv at multilinear rank (5, 3) and its 1x1 at matrix rank 4."""
    g = np.random.default_rng(0)
    m = Net()
    with torch.no_grad():
        w = np.einsum("oa,abk,ib->oik", g.standard_normal((32, 5)), g.standard_normal((5, 3, 9)),
                      g.standard_normal((16, 3)))
        m.conv.weight.copy_(torch.from_numpy(w.reshape(32, 16, 3, 3).astype(np.float32)))
        m.pw.weight.copy_(torch.from_numpy((g.standard_normal((24, 4)) @ g.standard_normal((4, 32)))
                                           .reshape(24, 32, 1, 1).astype(np.float32)))
    return m


def test_search_tucker2_searches_kxk_convs_and_svd_for_the_rest():
    torch.set_num_threads(1)
    res = search(_planted_net(), torch.zeros(1, 3, 16, 16), SearchConfig(method="tucker2", steps=40, warmup_steps=5))
    plan = res.plan.layers
    assert plan["conv"].method == "tucker2" and res.layers["conv"].method == "tucker2"
    assert 3 <= res.layers["conv"].rbar <= 6 and res.layers["conv"].error < 1e-3
    assert plan["pw"].method == "svd" and abs(res.layers["pw"].rbar - 4) <= 1
    assert plan["grouped"].method in ("tucker2", "dense") and plan["fc"].method in ("svd", "dense")
    # the plan builds: the searched layers become Tucker2Conv, initialized by HOSVD
    model = _planted_net()
    factorize_(model, res.plan)
    assert isinstance(model.conv, Tucker2Conv)


def test_search_auto_weighs_tucker2_and_keeps_tt_at_equal_cost():
    torch.set_num_threads(1)
    cfg = SearchConfig(method="auto", steps=30, warmup_steps=5, target_params=0.6)
    res = search(_planted_net(), torch.zeros(1, 3, 16, 16), cfg)
    kxk = [n for n in ("stem", "conv", "grouped") if res.plan.layers[n].method != "dense"]
    assert kxk
    for n in kxk:
        lp = res.plan.layers[n]
        assert lp.method == "tt" and "auto by error at equal cost: tt" in lp.reason and "tucker2" in lp.reason
    # the same search with tt finds the same ranks (the candidates are the same HOSVD truncations)
    same = search(_planted_net(), torch.zeros(1, 3, 16, 16), SearchConfig(method="tt", steps=30, warmup_steps=5,
                                                                          target_params=0.6))
    assert {n: lp.ranks for n, lp in same.plan.layers.items()} == {n: lp.ranks for n, lp in res.plan.layers.items()}
