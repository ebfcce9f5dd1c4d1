"""Factorized torch layers, model surgery (factorize_ / collect_factors) and torch-side counting."""
import numpy as np
import pytest
import torch
from torch import nn

from rene_onnx.decompose import ranks as R
from rene_onnx.engine.layers import (
    FactorizedModule,
    LowRankConv,
    SVDConv,
    SVDLinear,
    collect_factors,
    factorize_,
    factorize_module,
    module_from_arrays,
)
from rene_onnx.engine.profile import count, layer_shapes
from rene_onnx.plan import Factors, LayerPlan, RankPlan

torch.manual_seed(0)

CONVS = [
    pytest.param(lambda: nn.Conv2d(6, 10, 3), (2, 6, 9, 9), id="conv2d"),
    pytest.param(lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), (2, 6, 9, 9), id="stride-pad"),
    pytest.param(lambda: nn.Conv2d(6, 10, (3, 5), padding=(2, 1), dilation=2, bias=False), (2, 6, 11, 12), id="dil-nobias"),
    pytest.param(lambda: nn.Conv2d(6, 10, 3, padding=1, padding_mode="reflect"), (2, 6, 7, 7), id="reflect"),
    pytest.param(lambda: nn.Conv1d(6, 10, 5, stride=2, padding=2), (2, 6, 20), id="conv1d"),
    pytest.param(lambda: nn.Conv1d(6, 10, 3, bias=False), (6, 20), id="conv1d-unbatched"),
]


def _full_ranks(method, conv):
    cout, cin = conv.out_channels, conv.in_channels
    k = int(np.prod(conv.kernel_size))
    return {"tt": (cout, cin), "svd": (min(cout, cin * k),), "cp": (cout * cin,)}[method]


@pytest.mark.parametrize("method", ["tt", "svd", "cp"])
@pytest.mark.parametrize("make,xshape", CONVS)
def test_full_rank_factorized_conv_reproduces_the_conv(make, xshape, method):
    torch.manual_seed(1)
    conv = make()
    x = torch.randn(xshape)
    if method == "cp":  # CP at a rank that is exact (>= Cout*Cin is always enough; keep ALS short)
        conv = nn.Conv2d(3, 4, 3, padding=1) if isinstance(conv, nn.Conv2d) else nn.Conv1d(3, 4, 3, padding=1)
        x = torch.randn((2, 3, 8, 8) if isinstance(conv, nn.Conv2d) else (2, 3, 10))
    m = factorize_module(conv, method, _full_ranks(method, conv))
    assert isinstance(m, FactorizedModule) and m.method == method
    leaves = [c for c in m.children()]
    assert all(type(c) is type(conv) for c in leaves) and len(leaves) == (2 if method == "svd" else 3)
    with torch.no_grad():
        ref, out = conv(x), m(x)
        assert out.shape == ref.shape and out.dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(m.reconstruct_weight(), conv.weight, atol=1e-5, rtol=1e-4)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert (m.last.bias is None) == (conv.bias is None)


def test_layer_geometry():
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, dilation=1)
    tt = LowRankConv.from_conv(conv, "tt", (5, 4))
    assert tt.ranks == (5, 4)
    assert tt.first.kernel_size == (1, 1) and tt.first.stride == (1, 1) and tt.first.bias is None
    assert tt.core.weight.shape == (5, 4, 3, 3) and tt.core.stride == (2, 2) and tt.core.padding == (1, 1)
    assert tt.last.weight.shape == (12, 5, 1, 1) and tt.last.bias is not None
    cp = LowRankConv.from_conv(conv, "cp", 6)
    assert cp.core.groups == 6 and cp.core.weight.shape == (6, 1, 3, 3)
    svd = SVDConv.from_conv(conv, "svd", 7)
    assert svd.first.weight.shape == (7, 8, 3, 3) and svd.first.stride == (2, 2)
    assert svd.last.weight.shape == (12, 7, 1, 1)
    with pytest.raises(ValueError, match="depthwise conv \\(groups=8\\).*nothing to factor"):
        LowRankConv.from_conv(nn.Conv2d(8, 8, 3, groups=8), "tt", 2)
    with pytest.raises(ValueError, match="does not apply"):
        factorize_module(nn.Conv2d(8, 8, 1), "tt", 2)


def test_truncated_tt_matches_decomposition_and_distills():
    torch.manual_seed(2)
    conv = nn.Conv2d(8, 12, 3, padding=1)
    m = factorize_module(conv, "tt", (4, 3))
    err = ((m.reconstruct_weight() - conv.weight) ** 2).sum()
    assert err.item() > 1e-3  # truncated, not exact
    err.backward()  # differentiable: fine-tuning distills ||W - W_hat||^2 through it
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (m.first.weight, m.core.weight, m.last.weight))
    # the module equals the dense conv with the reconstructed weight
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        ref = nn.functional.conv2d(x, m.reconstruct_weight(), conv.bias, padding=1)
        torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_svd_linear(bias):
    torch.manual_seed(3)
    lin = nn.Linear(12, 7, bias=bias)
    m = SVDLinear.from_linear(lin, 7)
    x = torch.randn(4, 5, 12)  # (B, T, C)
    with torch.no_grad():
        torch.testing.assert_close(m(x), lin(x), atol=1e-5, rtol=1e-4)
    assert m.first.bias is None and (m.last.bias is not None) == bias
    low = SVDLinear.from_linear(lin, 3)
    assert low.first.weight.shape == (3, 12) and low.last.weight.shape == (7, 3)
    s = torch.linalg.svdvals(lin.weight.detach())
    torch.testing.assert_close(((low.reconstruct_weight() - lin.weight) ** 2).sum(), (s[3:] ** 2).sum(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="svd"):
        factorize_module(lin, "tt", 3)


@pytest.mark.parametrize("method,ranks", [("tt", (5, 4)), ("cp", (6,)), ("svd", (5,))])
def test_to_factors_from_arrays_roundtrip(method, ranks):
    torch.manual_seed(4)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    m = factorize_module(conv, method, ranks)
    lf = m.to_factors("layer")
    assert lf.method == method and lf.ranks == m.ranks and lf.bias.shape == (10,)
    assert all(a.dtype == np.float32 for a in lf.arrays.values())
    if method == "svd":  # the plan contract: U (out, r), V (r, in*k)
        assert lf.arrays["U"].shape == (10, 5) and lf.arrays["V"].shape == (5, 54)
    else:
        assert lf.arrays["first"].shape == (ranks[-1], 6, 1, 1)
    again = module_from_arrays(conv, method, lf.arrays)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(again(x), m(x))
    with pytest.raises(ValueError, match="shape|fit"):
        bad = dict(lf.arrays)
        key = "V" if method == "svd" else "core"
        bad[key] = np.zeros((3, 3))
        module_from_arrays(conv, method, bad)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Sequential(
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(),
            nn.Conv2d(16, 24, 1),
        )
        self.seq = nn.Conv1d(24, 12, 3, padding=1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.body(torch.relu(self.bn(self.stem(x))))  # (B, 24, 8, 8)
        x = self.seq(x.flatten(2))  # (B, 12, 64)
        return self.fc(x.transpose(1, 2))  # Linear on (B, T=64, C)


def _plan():
    plan = RankPlan()
    plan.add(LayerPlan("stem", "dense", reason="3 input channels"))
    plan.add(LayerPlan("body.0", "tt", (6, 4)))
    plan.add(LayerPlan("body.4", "svd", (8,)))
    plan.add(LayerPlan("seq", "cp", (10,)))
    plan.add(LayerPlan("fc", "svd", (3,)))
    return plan


def test_layer_shapes_and_count_of_a_small_cnn():
    model = SmallCNN()
    x = torch.randn(2, 3, 16, 16)
    shapes = layer_shapes(model, x)
    assert list(shapes) == ["stem", "body.0", "body.2", "body.4", "seq", "fc"]
    assert shapes["stem"] == R.LayerShape(8, 3, (3, 3), 1, True, 256, 256)
    assert shapes["body.0"] == R.LayerShape(16, 8, (3, 3), 1, False, 256, 64)
    assert shapes["body.2"].groups == 4
    assert shapes["seq"] == R.LayerShape(12, 24, (3,), 1, True, 64, 64)
    assert shapes["fc"] == R.LayerShape(5, 12, (), 1, True, 64, 64)
    params, macs = count(model, x)
    assert params == sum(p.numel() for p in model.parameters())
    by_hand = (8 * 3 * 9 * 256 + 16 * 8 * 9 * 64 + 16 * 4 * 9 * 64 + 24 * 16 * 64 + 12 * 24 * 3 * 64 + 5 * 12 * 64)
    assert macs == by_hand == sum(R.dense_macs(s) for s in shapes.values())
    # counting does not touch BatchNorm statistics nor the training flag
    model.train()
    before = model.bn.running_mean.clone()
    count(model, x)
    assert model.training and torch.equal(model.bn.running_mean, before)


def test_factorize_count_collect_and_rebuild():
    torch.manual_seed(5)
    model = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    shapes = layer_shapes(model, x)
    dense_params, dense_macs = count(model, x)
    plan = _plan()
    status = factorize_(model, plan)
    assert status["stem"] == "dense: 3 input channels"
    assert status["body.0"].startswith("tt ranks [6, 4]") and status["fc"].startswith("svd ranks [3]")
    assert isinstance(model.body[0], LowRankConv) and isinstance(model.fc, SVDLinear)
    assert isinstance(model.body[4], SVDConv) and isinstance(model.stem, nn.Conv2d)

    # torch counts of the factorized model == ranks.py formulas per layer
    params, macs = count(model, x)
    exp_params, exp_macs = dense_params, dense_macs
    for lp in plan.factorized():
        s = shapes[lp.name]
        exp_params += R.factorized_params(lp.method, s, lp.ranks) - R.dense_params(s)
        exp_macs += R.factorized_macs(lp.method, s, lp.ranks) - R.dense_macs(s)
    assert (params, macs) == (exp_params, exp_macs)
    assert params < dense_params and macs < dense_macs
    # hooks see the ordinary leaves of the factorized chains
    assert {"body.0.first", "body.0.core", "body.0.last", "fc.first", "fc.last"} <= set(layer_shapes(model, x))

    # collect_factors: factorized layers + every other parameter by torch name
    with torch.no_grad():
        model.stem.bias.add_(0.5)  # a "fine-tuned" dense parameter
    factors = collect_factors(model)
    assert set(factors.layers) == {"body.0", "body.4", "seq", "fc"}
    assert factors.layers["seq"].arrays["core"].shape == (10, 1, 3)
    assert {"stem.weight", "stem.bias", "bn.weight", "bn.bias", "body.2.weight", "body.2.bias"} == set(factors.dense)
    assert "bn.running_mean" in collect_factors(model, buffers=True).dense

    # a fresh model rebuilt from (plan, factors) computes the same function
    fresh = SmallCNN().eval()
    fresh.bn.load_state_dict(model.bn.state_dict())  # buffers are not parameters
    status = factorize_(fresh, factors.plan(), factors)
    assert all("from factors" in s for s in status.values())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_factors_survive_save_load(tmp_path):
    torch.manual_seed(6)
    model = SmallCNN().eval()
    factorize_(model, _plan())
    path = tmp_path / "f.json"
    collect_factors(model).save(path)
    loaded = Factors.load(path)
    fresh = SmallCNN().eval()
    fresh.bn.load_state_dict(model.bn.state_dict())
    factorize_(fresh, loaded.plan(), loaded)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def test_factorize_rejects_bad_plans_without_touching_the_model():
    model = SmallCNN()
    for name, msg in [("bn", "BatchNorm2d"), ("nope", "'nope'"), ("body", "Sequential")]:
        plan = _plan()
        plan.add(LayerPlan(name, "svd", (2,)))
        with pytest.raises(ValueError, match=msg):
            factorize_(model, plan)
        assert isinstance(model.body[0], nn.Conv2d)  # untouched
    plan = RankPlan()
    plan.add(LayerPlan("body.2", "tt", (2, 2)))
    plan.add(LayerPlan("body.4", "svd", (99, 1)))  # a bad layer after a good grouped one: nothing swapped
    with pytest.raises(ValueError, match="'body.4'"):
        factorize_(model, plan)
    assert isinstance(model.body[2], nn.Conv2d)
    plan = RankPlan()
    plan.add(LayerPlan("fc", "tt", (2, 2)))
    with pytest.raises(ValueError, match="'fc'"):
        factorize_(model, plan)
    done = SmallCNN()
    factorize_(done, _plan())
    with pytest.raises(ValueError, match="LowRankConv"):
        factorize_(done, _plan())  # already factorized
    f = collect_factors(done)
    with pytest.raises(ValueError, match="plan says svd"):
        bad = _plan()
        bad.layers["body.0"] = LayerPlan("body.0", "svd", (4,))
        factorize_(SmallCNN(), bad, f)
    f.dense["ghost.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="ghost.weight"):
        factorize_(SmallCNN(), f.plan(), f)


def test_float64_model_keeps_its_dtype():
    conv = nn.Conv2d(4, 6, 3).double()
    m = factorize_module(conv, "tt", (6, 4))
    assert all(p.dtype == torch.float64 for p in m.parameters())
    assert m.to_factors("c").arrays["core"].dtype == np.float64
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), conv(x), atol=1e-10, rtol=1e-10)


def test_factorized_model_exports_to_onnx_as_plain_convs():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(7)
    model = SmallCNN().eval()
    factorize_(model, _plan())
    x = torch.randn(1, 3, 16, 16)
    proto = torch.onnx.export(model, (x,), dynamo=True, external_data=False, opset_version=18).model_proto
    onnx.checker.check_model(proto, full_check=True)
    names = {i.name for i in proto.graph.initializer}
    assert {"body.0.first.weight", "body.0.core.weight", "body.0.last.weight", "seq.core.weight"} <= names
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, model(x).numpy(), atol=1e-5, rtol=1e-4)


def test_densify_gives_back_the_same_function():
    import torch
    from torch import nn

    from rene_onnx.engine.layers import densify_, factorize_module, factorized_modules

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, dilation=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=2, dilation=2, bias=False), nn.Flatten(), nn.Linear(16 * 16, 5))
    model[0] = factorize_module(model[0], "tt", (4, 4))
    model[2] = factorize_module(model[2], "svd", (5,))
    model[4] = factorize_module(model[4], "svd", (3,))
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        ref = model(x)
        densify_(model, ["0", "2", "4"])
        got = model(x)
    assert not factorized_modules(model)
    assert isinstance(model[0], nn.Conv2d) and model[0].stride == (2, 2) and model[2].bias is None
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
