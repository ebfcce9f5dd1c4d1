"""Grouped convs factorized per group, through every layer of the stack: counting and rank caps,
decompose / reconstruct, the planner, the torch layers, the ONNX passes (onnxruntime vs the original at full
rank and vs the factorized torch layer at low rank; torch counts == ONNX counts) and the CLI end to end."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from onnx_cases import make_model, rel_err, rewrite, run, vi
from torch import nn
from torch.nn import functional as F

from rene_onnx import passes
from rene_onnx.decompose import decompose, ranks as R, reconstruct
from rene_onnx.decompose.choose import plan_from_fraction, plan_from_mapping, resolve_method
from rene_onnx.decompose.grouped import infer_groups, split_groups
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.engine.layers import (
    LowRankConv,
    SVDConv,
    collect_factors,
    dense_module,
    densify_,
    factorize_,
    factorize_module,
    module_from_arrays,
)
from rene_onnx.engine.profile import count, layer_shapes
from rene_onnx.plan import LayerFactors
from rene_onnx.validate.counts import count_onnx


def full_ranks(method, shape):
    if method == "tt":
        r1 = min(shape.group_out, shape.group_in * shape.kernel_size)
        return (r1, min(shape.group_in, r1 * shape.kernel_size))
    return (shape.max_matrix_rank,)


def shape_of(conv: nn.Module) -> LayerShape:
    return LayerShape(conv.out_channels, conv.in_channels, tuple(conv.kernel_size), conv.groups, conv.bias is not None)


# ------------------------------------------------------------------------------------------ counting


def test_counts_and_caps_are_per_group():
    s = LayerShape(32, 16, (3, 3), groups=4, bias=True, in_positions=100, out_positions=25)
    assert (s.group_out, s.group_in) == (8, 4)
    assert R.dense_params(s) == 32 * 4 * 9 + 32 and R.dense_macs(s) == 32 * 4 * 9 * 25
    assert R.factorized_params("tt", s, (3, 2)) == 2 * 16 + 4 * 3 * 2 * 9 + 32 * 3 + 32
    assert R.factorized_params("cp", s, (5,)) == 5 * 16 + 4 * 5 * 9 + 32 * 5 + 32
    assert R.factorized_params("svd", s, (3,)) == 3 * (16 * 9 + 32) + 32
    assert R.factorized_macs("tt", s, (3, 2)) == 2 * 16 * 100 + (4 * 3 * 2 * 9 + 32 * 3) * 25
    assert R.factorized_macs("cp", s, (5,)) == 5 * 16 * 100 + (4 * 5 * 9 + 32 * 5) * 25
    # caps use Cout/g = 8 and Cin/g = 4
    assert R.check_ranks("tt", s, 100) == (8, 4) and R.check_ranks("svd", s, 100) == (8,)
    assert R.check_ranks("cp", s, 10**6) == (8 * 4 * 9,)
    assert R.max_rank("tt", s) == 4 and R.max_rank("svd", s) == 8
    assert 0 < R.break_even_rank("tt", s) <= 4
    assert R.supported_methods(LayerShape(16, 16, (1, 1), groups=4)) == ("svd",)
    dw = LayerShape(16, 16, (3, 3), groups=16)
    assert R.supported_methods(dw) == () and "nothing to factor" in R.unsupported_reason(dw)
    with pytest.raises(ValueError, match="depthwise"):
        R.check_ranks("tt", dw, 1)
    with pytest.raises(ValueError, match="groups=3 must"):
        LayerShape(16, 16, (3, 3), groups=3)


# ---------------------------------------------------------------------------------- decompose / planner


@pytest.mark.parametrize("method", ["tt", "svd", "cp"])
def test_decompose_per_group(method):
    g = np.random.default_rng(0)
    w = g.standard_normal((12, 3, 3, 3)).astype(np.float32)  # Conv2d(9, 12, 3, groups=3)
    ranks = {"tt": (2, 2), "svd": (2,), "cp": (3,)}[method]
    arrays = decompose(method, w, ranks, groups=3, **({"seed": 0} if method == "cp" else {}))
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert infer_groups(method, arrays) == 3
    # every group's block of the stacked factors is that group's own decomposition
    for j, wj in enumerate(split_groups(w, 3)):
        own = decompose(method, wj, ranks, **({"seed": 0} if method == "cp" else {}))
        for k, a in own.items():
            n = a.shape[0]
            np.testing.assert_allclose(arrays[k][j * n:(j + 1) * n], a, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(reconstruct(method, arrays, w.shape)[j * 4:(j + 1) * 4],
                                   reconstruct(method, own, wj.shape), rtol=1e-5, atol=1e-6)
    if method != "cp":  # full per-group rank is exact
        shape = LayerShape(12, 9, (3, 3), groups=3)
        full = decompose(method, w, full_ranks(method, shape), groups=3)
        assert rel_err(reconstruct(method, full, w.shape, groups=3), w) < 1e-5
    with pytest.raises(ValueError, match="imply 3 group"):
        reconstruct(method, arrays, w.shape, groups=2)


def test_planner_factorizes_grouped_layers_and_keeps_the_rest_dense_with_reasons():
    shapes = {
        "grouped": LayerShape(64, 64, (3, 3), groups=4, in_positions=64, out_positions=64),
        "grouped_pw": LayerShape(64, 64, (1, 1), groups=4),
        "dw": LayerShape(32, 32, (3, 3), groups=32),
        "dw_mult": LayerShape(72, 8, (3, 3), groups=8),  # 9 outputs per input channel
        "tiny": LayerShape(16, 16, (1, 1), groups=8),  # per group 2x2: svd rank 1 saves nothing
        "stem": LayerShape(32, 1, (3, 3)),  # one input channel but not grouped: auto stays tt
    }
    plan = plan_from_fraction(shapes, "auto", 0.5)
    lp = plan.layers["grouped"]
    assert lp.method == "tt" and "per group (4 groups" in lp.reason
    fact = R.factorized_params("tt", shapes["grouped"], lp.ranks)
    assert abs(fact - 0.5 * R.dense_params(shapes["grouped"])) < 0.1 * R.dense_params(shapes["grouped"])
    assert plan.layers["grouped_pw"].method == "svd"
    assert plan.layers["dw"].method == "dense" and "depthwise" in plan.layers["dw"].reason
    assert plan.layers["dw_mult"].method == "svd"  # one input channel per group: svd, not tt
    assert plan.layers["stem"].method == "tt"
    tiny = plan.layers["tiny"]
    assert tiny.method == "dense" and "nothing saved" in tiny.reason and "groups=8" in tiny.reason
    mapped = plan_from_mapping(shapes, "cp", {"grouped": 5, "dw": 2, "grouped_pw": 100})
    assert mapped.layers["grouped"].method == "cp" and mapped.layers["grouped"].ranks == (5,)
    pw = mapped.layers["grouped_pw"]  # capped at Cout/g = Cin/g = 16, where nothing is saved
    assert pw.method == "dense" and "svd at ranks [16]" in pw.reason and "nothing saved" in pw.reason
    assert mapped.layers["dw"].method == "dense"
    tt = plan_from_mapping(shapes, "tt", {"grouped": [11, 30]}, rank_multiple=8)
    assert tt.layers["grouped"].ranks == (8, 16)  # r2 capped at Cin/g = 16 (not 64), then rounded
    # asked without per_group, grouped layers stay dense, with the reason
    m, why = resolve_method("auto", shapes["grouped"])
    assert m == "dense" and "per group" in why and "groups=4" in why


# -------------------------------------------------------------------------------------- torch layers


CONVS = [
    ("tt", lambda: nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4)),
    ("tt", lambda: nn.Conv1d(6, 9, 3, padding=2, dilation=2, groups=3, bias=False)),
    ("cp", lambda: nn.Conv2d(8, 12, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    ("svd", lambda: nn.Conv2d(8, 12, 3, padding=1, groups=4, bias=False)),
    ("svd", lambda: nn.Conv2d(8, 12, 1, stride=2, groups=4)),
]


@pytest.mark.parametrize("method, make", CONVS)
def test_torch_layers(method, make):
    torch.manual_seed(0)
    conv = make()
    shape = shape_of(conv)
    x = torch.randn(2, conv.in_channels, *([9] * (conv.weight.dim() - 2)))
    ranks = (3,) if method == "cp" else full_ranks(method, shape)
    m = factorize_module(conv, method, ranks)
    g = conv.groups
    assert m.groups == g and m.first.groups == g and m.last.groups == g
    if method != "svd":
        assert m.core.groups == (g * ranks[0] if method == "cp" else g)
        assert m.core.stride == conv.stride and m.core.padding == conv.padding and m.core.dilation == conv.dilation
    else:
        assert m.first.stride == conv.stride and m.first.padding == conv.padding
    assert sum(p.numel() for p in m.parameters()) == R.factorized_params(method, shape, m.ranks)
    with torch.no_grad():
        if method != "cp":  # full per-group rank: the chain is the grouped conv
            assert rel_err(m(x), conv(x)) < 1e-5
        torch.testing.assert_close(m(x), F.conv1d(x, m.reconstruct_weight(), m.bias, conv.stride, conv.padding,
                                                  conv.dilation, g) if conv.weight.dim() == 3 else
                                   F.conv2d(x, m.reconstruct_weight(), m.bias, conv.stride, conv.padding,
                                            conv.dilation, g), atol=1e-5, rtol=1e-4)
        d = dense_module(m)
        assert d.groups == g and d.weight.shape == conv.weight.shape
        torch.testing.assert_close(d(x), m(x), atol=1e-5, rtol=1e-4)
    lf = m.to_factors("c")
    assert lf.ranks == m.ranks
    back = module_from_arrays(conv, method, lf.arrays)
    with torch.no_grad():
        torch.testing.assert_close(back(x), m(x))
    np.testing.assert_allclose(reconstruct(method, lf.arrays, conv.weight.shape),
                               m.reconstruct_weight().detach().numpy(), atol=1e-6)
    # gradients flow through reconstruct_weight (the distillation loss uses it)
    m.reconstruct_weight().sum().backward()
    assert m.first.weight.grad is not None


def test_factor_arrays_that_do_not_split_into_groups_are_refused():
    conv = nn.Conv2d(8, 12, 3, groups=4)
    arrays = LowRankConv.from_conv(conv, "tt", (2, 2)).to_factors("c").arrays
    bad = dict(arrays, core=np.zeros((7, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="does not split into 4 groups"):
        module_from_arrays(conv, "tt", bad)
    svd = SVDConv.from_conv(conv, "svd", 2).to_factors("c").arrays
    with pytest.raises(ValueError, match="do not fit"):
        module_from_arrays(conv, "svd", dict(svd, V=np.zeros((7, 18), np.float32)))


class ResNeXtBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.reduce = nn.Conv2d(16, 16, 1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.expand = nn.Conv2d(16, 16, 1, groups=2)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)

    def forward(self, x):
        y = self.expand(torch.relu(self.grouped(torch.relu(self.reduce(x)))))
        return self.dw(torch.relu(x + y))


def test_factorize_count_collect_and_densify_a_grouped_model():
    torch.manual_seed(1)
    model = ResNeXtBlock().eval()
    x = torch.randn(1, 16, 6, 6)
    shapes = layer_shapes(model, x)
    plan = plan_from_fraction(shapes, "auto", 0.5)
    assert [n for n, lp in plan.layers.items() if lp.method != "dense"] == ["reduce", "grouped", "expand"]
    ref = model(x)
    status = factorize_(model, plan)
    assert status["grouped"].startswith("tt ranks") and status["dw"].startswith("dense: depthwise")
    params, macs = count(model, x)
    planned = [(lp.method, shapes[n], lp.ranks) for n, lp in plan.layers.items()]
    assert params == sum(R.factorized_params(*p) if p[0] != "dense" else R.dense_params(p[1]) for p in planned)
    assert macs == sum(R.factorized_macs(*p) if p[0] != "dense" else R.dense_macs(p[1]) for p in planned)
    assert rel_err(model(x).detach(), ref.detach()) < 0.9  # low rank: close-ish, not equal
    factors = collect_factors(model)
    assert factors.layers["grouped"].arrays["first"].shape[0] == 4 * plan.layers["grouped"].ranks[1]
    out = model(x)
    densify_(model, ["grouped", "expand"])
    assert isinstance(model.grouped, nn.Conv2d) and model.grouped.groups == 4 and model.expand.groups == 2
    torch.testing.assert_close(model(x), out, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------- ONNX passes


# (method, Cin, Cout, kernel, group, bias, attrs, x spatial)
ONNX_CASES = {
    "tt_2d_stride_asym_pads_dil_bias": ("tt", 8, 12, (3, 3), 4, True,
                                        dict(strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2]), (9, 10)),
    "tt_2d_same_upper_nobias": ("tt", 8, 12, (3, 3), 2, False, dict(auto_pad="SAME_UPPER", strides=[2, 2]), (9, 8)),
    "cp_2d_sym_pads_bias": ("cp", 8, 12, (3, 3), 4, True, dict(pads=[1, 1, 1, 1], strides=[2, 2]), (8, 8)),
    "svd_2d_kxk_nobias": ("svd", 6, 9, (3, 3), 3, False, dict(pads=[0, 1, 0, 1], dilations=[2, 1]), (8, 7)),
    "svd_1x1_stride_bias": ("svd", 8, 16, (1, 1), 4, True, dict(strides=[2, 2]), (6, 6)),
    "tt_1d_bias": ("tt", 6, 9, (3,), 3, True, dict(pads=[2, 1], dilations=[2]), (11,)),
    "cp_1d_nobias": ("cp", 6, 9, (3,), 3, False, dict(strides=[2]), (10,)),
}


def _case(key, seed=0):
    method, cin, cout, kernel, group, bias, attrs, spatial = ONNX_CASES[key]
    g = np.random.default_rng(seed)
    w = g.standard_normal((cout, cin // group, *kernel)).astype(np.float32)
    b = g.standard_normal(cout).astype(np.float32) if bias else None
    x = g.standard_normal((2, cin, *spatial)).astype(np.float32)
    ins = ["x", "w"] + (["b"] if bias else [])
    node = helper.make_node("Conv", ins, ["y"], name="conv", group=group, **attrs)
    model = make_model([node], [vi("x", ["N", *x.shape[1:]])], [vi("y", None)], {"w": w} | ({"b": b} if bias else {}))
    return method, w, b, x, model


def _torch_reference(model, lf, x):
    """The factorized torch layer (built from the same arrays) on the input padded as the ONNX node pads it."""
    (node,) = model.graph.node
    a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
    w = next(t for t in model.graph.initializer if t.name == "w")
    n = len(w.dims) - 2
    cls = nn.Conv2d if n == 2 else nn.Conv1d
    stride, dil = a.get("strides", [1] * n), a.get("dilations", [1] * n)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    pads = a.get("pads", [0] * 2 * n)
    template = cls(w.dims[1] * a["group"], w.dims[0], tuple(w.dims[2:]), stride=tuple(stride), dilation=tuple(dil),
                   groups=a["group"], bias=len(node.input) > 2)
    layer = module_from_arrays(template, lf.method, lf.arrays).eval()
    torch_pad = [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])]  # F.pad: last dim first
    with torch.no_grad():
        return layer(F.pad(torch.from_numpy(x), torch_pad)).numpy(), layer


@pytest.mark.parametrize("key", list(ONNX_CASES))
def test_onnx_grouped_rewrite(key):
    method, w, b, x, model = _case(key)
    group = ONNX_CASES[key][4]
    (layer,) = passes.find_layers(model)
    shape = layer.shape
    assert shape.groups == group and layer.skip_reason is None and method in layer.methods
    y0 = run(model, {"x": x})[0]
    # full rank (CP: factors that represent the weight exactly) -> the original's outputs
    if method == "cp":
        r = 4
        rg = np.random.default_rng(5)
        arrays = {"first": rg.standard_normal((group * r, w.shape[1], *([1] * (w.ndim - 2)))),
                  "core": rg.standard_normal((group * r, 1, *w.shape[2:])),
                  "last": rg.standard_normal((w.shape[0], r, *([1] * (w.ndim - 2))))}
        arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
        w = reconstruct("cp", arrays, w.shape).astype(np.float32)
        model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "w"))
        y0, full = run(model, {"x": x})[0], LayerFactors("conv", "cp", (r,), arrays)
    else:
        full = LayerFactors("conv", method, full_ranks(method, shape),
                            decompose(method, w, full_ranks(method, shape), groups=group))
    out, (rec,) = rewrite(model, {"conv": full})
    assert rec.status == "factorized", rec.reason
    n_nodes = 2 if method == "svd" else 3
    assert [n.op_type for n in out.graph.node] == ["Conv"] * n_nodes
    groups = [helper.get_attribute_value(next(a for a in n.attribute if a.name == "group")) for n in out.graph.node]
    r0 = full.ranks[0]
    assert groups == {"tt": [group] * 3, "cp": [group, group * r0, group], "svd": [group] * 2}[method]
    assert rel_err(run(out, {"x": x})[0], y0) <= 1e-4
    # low rank: equal to the factorized torch layer built from the same arrays
    low_ranks = {"tt": (2, 1), "cp": (2,), "svd": (1,)}[method]
    arrays = decompose(method, w, low_ranks, groups=group, **({"n_iter_max": 20} if method == "cp" else {}))
    if b is not None:
        arrays["bias"] = b * 0.5  # the factors' own (e.g. fine-tuned) bias replaces the node's
    lf = LayerFactors("conv", method, low_ranks, arrays)
    low, (rec,) = rewrite(model, {"conv": lf})
    y_low = run(low, {"x": x})[0]
    assert rel_err(y_low, y0) > 1e-3  # really low rank
    ref = _torch_reference(model, lf, x)
    if ref is None:  # auto_pad: the same weight as a dense grouped conv in onnxruntime
        dense = onnx.ModelProto()
        dense.CopyFrom(model)
        dense.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(reconstruct(method, arrays, w.shape), "w"))
        assert rel_err(y_low, run(dense, {"x": x})[0]) <= 1e-4
    else:
        y_torch, torch_layer = ref
        assert rel_err(y_low, y_torch) <= 1e-4
        # counts: torch (profile.count) == ONNX (count_onnx) == ranks.py, when torch pads the same way
        if not any(next((helper.get_attribute_value(a) for a in model.graph.node[0].attribute
                         if a.name == "pads"), [0])):
            t_params, t_macs = count(torch_layer, torch.from_numpy(x[:1]))
            c = count_onnx(low, {"x": (1, *x.shape[1:])})
            assert (c.params, c.macs) == (t_params, t_macs)
            s = dataclass_replace_positions(shape, x, y_low)
            assert (c.params, c.macs) == (R.factorized_params(method, s, lf.ranks), R.factorized_macs(method, s, lf.ranks))


def dataclass_replace_positions(shape, x, y):
    import dataclasses

    return dataclasses.replace(shape, in_positions=math.prod(x.shape[2:]), out_positions=math.prod(y.shape[2:]))


def test_onnx_depthwise_stays_dense_and_bad_grouped_factors_fail():
    g = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "wd"], ["a"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "wg"], ["y"], name="grouped", group=4)]
    model = make_model(nodes, [vi("x", [1, 8, 5, 5])], [vi("y", None)],
                       {"wd": g.standard_normal((8, 1, 3, 3)).astype(np.float32),
                        "wg": g.standard_normal((8, 2, 3, 3)).astype(np.float32)})
    found = {ol.name: ol for ol in passes.find_layers(model)}
    assert found["dw"].methods == () and found["grouped"].methods == ("tt", "cp", "svd", "tucker2")
    lf = LayerFactors("dw", "tt", (1, 1), {"first": np.ones((8, 1, 1, 1)), "core": np.ones((8, 1, 3, 3)),
                                          "last": np.ones((8, 1, 1, 1))})
    out, records = rewrite(model, {"dw": lf})
    assert records[0].status == "skipped" and "depthwise conv (groups=8)" in records[0].reason
    assert [n.name for n in out.graph.node] == ["dw", "grouped"]
    good = decompose("tt", onnx.numpy_helper.to_array(model.graph.initializer[1]), (2, 2), groups=4)
    bad = dict(good, first=np.ones((7, 2, 1, 1), np.float32))
    with pytest.raises(ValueError, match="not a multiple of the conv's group=4"):
        passes.apply_factors(model, {"grouped": LayerFactors("grouped", "tt", (2, 2), bad)})
    ungrouped = decompose("tt", np.ones((8, 8, 3, 3), np.float32), (4, 4))  # factors of a groups=1 weight
    with pytest.raises(ValueError, match=r"factor 'first' has shape \[4, 8, 1, 1\], expected \[4, 2, 1, 1\]"):
        passes.apply_factors(model, {"grouped": LayerFactors("grouped", "tt", (4, 1), ungrouped)})


def test_latency_aware_dense_weights_from_grouped_factors():
    from rene_onnx.pipeline.rewrite import dense_from_factors

    method, w, b, x, model = _case("svd_2d_kxk_nobias")
    arrays = decompose("svd", w, (2,), groups=3)
    dense = dense_from_factors(model, {"conv": LayerFactors("conv", "svd", (2,), arrays)})
    np.testing.assert_allclose(dense["w"], reconstruct("svd", arrays, w.shape), atol=1e-6)
    assert dense["w"].shape == w.shape


# ------------------------------------------------------------------------------------------------- CLI


BLOCK_SRC = '''import torch
from torch import nn


class ResNeXtNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.reduce = nn.Conv2d(32, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.expand = nn.Conv2d(32, 32, 1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = torch.relu(self.grouped(torch.relu(self.reduce(x))))
        x = torch.relu(self.dw(x + self.expand(y)))
        return self.fc(x.mean((2, 3)))


def build_model():
    torch.manual_seed(0)
    return ResNeXtNet()
'''


def _cli(tmp_path, *args):
    from click.testing import CliRunner

    from rene_onnx.cli.main import cli

    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def _check_grouped_report(report_path, out_path, grouped, dw):
    report = json.loads(report_path.read_text())
    rows = {row["name"]: row for row in report["layers"]}
    row = rows[grouped]
    assert row["status"] == "factorized" and row["method"] == "tt" and row["params_after"] < row["params_before"]
    assert row["reason"] == "ranks per group (4 groups)"
    assert rows[dw]["status"] == "dense" and "depthwise" in rows[dw]["reason"]
    assert report["params"]["after"] == report["params"]["torch_after"] < report["params"]["before"]
    assert report["macs"]["after"] == report["macs"]["torch_after"]
    assert report["numerics"]["max_abs_diff"] < 1e-4
    m = onnx.load(out_path)
    onnx.checker.check_model(m, full_check=True)
    groups = [helper.get_attribute_value(a) for n in m.graph.node if n.op_type == "Conv"
              for a in n.attribute if a.name == "group"]
    assert groups.count(4) == 3 and 32 in groups  # the grouped TT chain, and the depthwise conv untouched
    return report


def test_cli_compresses_a_resnext_block_module_and_its_onnx_export(tmp_path, monkeypatch):
    (tmp_path / "gnet.py").write_text(BLOCK_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _cli(tmp_path, "compress", "gnet:build_model", "--input-shape", "1,3,8,8", "--ranks", "0.5", "-o", "a.onnx",
         "--report", "a.json", "--no-latency")
    _check_grouped_report(tmp_path / "a.json", tmp_path / "a.onnx", "grouped", "dw")
    # the same model as an ONNX file
    sys.modules.pop("gnet", None)
    import gnet

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(gnet.build_model().eval(), (torch.randn(1, 3, 8, 8),), str(tmp_path / "in.onnx"),
                          dynamo=True, external_data=False, opset_version=18, input_names=["x"], output_names=["y"])
    _cli(tmp_path, "compress", "in.onnx", "--ranks", "0.5", "-o", "b.onnx", "--report", "b.json", "--no-latency")
    src = onnx.load(tmp_path / "in.onnx")
    names = [n.name for n in src.graph.node if n.op_type == "Conv"]
    attrs = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in src.graph.node}
    grouped = next(n for n in names if attrs[n].get("group") == 4)
    dw = next(n for n in names if attrs[n].get("group") == 32)
    _check_grouped_report(tmp_path / "b.json", tmp_path / "b.onnx", grouped, dw)


# -------------------------------------------------------------------------------------------- rank search


def _planted_grouped(cout, cin, groups, r, kernel=3, seed=0):
    """A grouped conv weight whose every group's block is exactly TT (kernel 3) / SVD (kernel 1) rank r."""
    g = np.random.default_rng(seed)
    og, ig, k = cout // groups, cin // groups, kernel * kernel
    blocks = [np.einsum("oa,abx,bi->oix", g.standard_normal((og, r)), g.standard_normal((r, r, k)),
                        g.standard_normal((r, ig))) for _ in range(groups)]
    return np.concatenate(blocks, 0).reshape(cout, ig, kernel, kernel).astype(np.float32)


def test_grouped_frame_errors_and_weights_are_the_groups_together():
    from rene_onnx.engine.search_banks import GroupedFrame, LayerFrame, make_frame

    shape = LayerShape(32, 16, (3, 3), groups=4)
    w = _planted_grouped(32, 16, 4, 3) + 0.01 * np.random.default_rng(1).standard_normal((32, 4, 3, 3)).astype(np.float32)
    frame = make_frame("g", "tt", shape, w, 4, dense_mix=True)
    assert isinstance(frame, GroupedFrame) and len(frame.frames) == 4 and not frame.whitened
    sub = LayerShape(8, 4, (3, 3))
    for r in (1, 2, 3, 4):  # each group's block truncated by an ungrouped frame of its own, stacked
        want = np.concatenate([LayerFrame("b", "tt", sub, b, 4, dense_mix=True).truncated_weight(r).numpy()
                               for b in split_groups(w, 4)], 0)
        got = frame.truncated_weight(r).numpy()
        assert got.shape == w.shape and rel_err(got, want) < 1e-4
        assert frame.error(r) == pytest.approx(float(((w - want) ** 2).sum() / (w ** 2).sum()), rel=1e-3, abs=1e-6)
    assert frame.error(3) < 1e-3 < frame.error(2)  # rank 3 was planted in every group
    curve = frame.error_curve(np.array([1, 2, 3]))
    assert list(curve) == pytest.approx([frame.error(r) for r in (1, 2, 3)])
    # the bank's mixture at p = one-hot is that candidate; dist is the relative error of the stacked weight
    bank = frame.bank([2, 3])
    ms = bank.mix(torch.tensor([0.0, 1.0]), train=False)
    assert rel_err(bank.weight(ms).detach().numpy(), frame.truncated_weight(3).numpy()) < 1e-5
    assert float(bank.dist(bank.mix(torch.tensor([1.0, 0.0]), train=False))) == pytest.approx(frame.error(2), rel=1e-4)
    assert len(bank.params) == 4 * 2
    with pytest.raises(ValueError, match="groups >= 2"):
        GroupedFrame("x", "tt", LayerShape(8, 8, (3, 3)), np.ones((8, 8, 3, 3), np.float32), 2)


class _GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)  # per group 8x8x3x3, TT break-even 7
        self.pw = nn.Conv2d(32, 64, 1, groups=2)  # per group a 32x16 matrix
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.pw(torch.relu(self.grouped(x))))
        return self.fc(torch.relu(self.dw(x)).mean((2, 3)))


def _planted_net():
    m = _GroupedNet()
    with torch.no_grad():
        m.grouped.weight.copy_(torch.from_numpy(_planted_grouped(32, 32, 4, 3)))
        pw = np.concatenate([np.random.default_rng(j).standard_normal((32, 2)) @
                             np.random.default_rng(10 + j).standard_normal((2, 16)) for j in range(2)], 0)
        m.pw.weight.copy_(torch.from_numpy(pw.reshape(64, 16, 1, 1).astype(np.float32)))
    return m


def test_rank_search_finds_planted_per_group_ranks():
    from rene_onnx.engine.search import SearchConfig, search

    torch.set_num_threads(1)
    res = search(_planted_net(), torch.zeros(1, 32, 6, 6), SearchConfig(steps=40, warmup_steps=5, exclude=["fc"]))
    plan = res.plan.layers
    assert plan["grouped"].method == "tt" and abs(res.layers["grouped"].rbar - 3) <= 1
    assert plan["pw"].method == "svd" and abs(res.layers["pw"].rbar - 2) <= 1
    assert res.layers["grouped"].error < 1e-4 and res.layers["pw"].error < 1e-4
    assert plan["dw"].method == "dense" and "depthwise" in plan["dw"].reason
    # the counts of the plan are per group: a grouped TT at rank r costs r*Cin + g*r*r*k + Cout*r
    r = plan["grouped"].ranks
    assert R.factorized_params("tt", shape_of(_GroupedNet().grouped), r) < R.dense_params(shape_of(_GroupedNet().grouped))


def test_rank_search_with_data_and_a_budget_on_a_grouped_net():
    from rene_onnx.engine.search import SearchConfig, search

    torch.set_num_threads(1)
    m = _planted_net()
    x = torch.randn(64, 32, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = m(x).argmax(1)
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    cfg = SearchConfig(steps=20, warmup_steps=2, calib_batch_size=16, target_params=0.6, exclude=["fc"])
    res = search(m, x[:1], cfg, calib_loader=loader)
    assert res.mode == "validation-ce" and res.plan.layers["grouped"].method in ("tt", "dense")
    assert abs(res.params_fraction / 0.6 - 1) <= 0.05, res.params_fraction


def test_cli_searches_ranks_for_a_grouped_conv(tmp_path, monkeypatch):
    (tmp_path / "gnet.py").write_text(BLOCK_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("gnet", None)
    _cli(tmp_path, "compress", "gnet:build_model", "--input-shape", "1,3,8,8", "--data-free", "--target-params", "0.5",
         "--epochs", "0", "-o", "s.onnx", "--report", "s.json", "--no-latency")
    report = _check_grouped_report(tmp_path / "s.json", tmp_path / "s.onnx", "grouped", "dw")
    assert report["search"]["layers"]["grouped"]["method"] == "tt"  # searched, not planned from a fraction
    assert abs(report["params"]["after"] / report["params"]["before"] - 0.5) < 0.03
