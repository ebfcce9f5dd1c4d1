"""The Tucker-2 conv pass in onnxruntime: full rank == the original conv (every geometry), low rank == the torch
Tucker-2 module and the conv of the reconstructed weight, grouped convs, and counts that agree three ways."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx_cases import CONV_CASES, conv_model, conv_setup, inits, ops, rel_err, rewrite, run
from torch import nn

from rene_onnx import passes
from rene_onnx.decompose import decompose, reconstruct
from rene_onnx.decompose import ranks as R
from rene_onnx.engine.layers import factorize_module
from rene_onnx.engine.profile import count as torch_count
from rene_onnx.engine.profile import layer_shapes
from rene_onnx.plan import LayerFactors
from rene_onnx.validate.counts import count_onnx


def lf(arrays, ranks, name="conv"):
    return LayerFactors(name, "tucker2", ranks, dict(arrays))


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_full_rank_equals_original(case):
    w, b, x, attrs = conv_setup(case)
    full = (w.shape[0], w.shape[1])
    m = conv_model(w, b, x.shape, **attrs)
    out, (rec,) = rewrite(m, {"conv": lf(decompose("tucker2", w, full), full)})  # checker full_check inside
    assert rec.status == "factorized" and rec.method == "tucker2"
    assert rec.new_nodes == ["conv/tucker2_first", "conv/tucker2_core", "conv/tucker2_last"]
    assert ops(out) == ["Conv"] * 3 and "w" not in inits(out)
    nodes = {n.name: n for n in out.graph.node}
    core_attrs = {a.name for a in nodes["conv/tucker2_core"].attribute}
    assert {a.name for a in nodes["conv/tucker2_first"].attribute} == {"kernel_shape"}  # 1x1, no geometry
    assert core_attrs >= set(attrs) - {"kernel_shape"}
    assert len(nodes["conv/tucker2_last"].input) == (3 if b is not None else 2)  # the bias on the last conv
    (ref,), (got,) = run(m, {"x": x}), run(out, {"x": x})
    assert rel_err(got, ref) <= 1e-4


@pytest.mark.parametrize("case", ["sym_pads", "asym_pads_stride2", "same_upper_stride2", "dilation_no_bias",
                                  "rect_kernel"])
def test_low_rank_equals_the_torch_module_and_the_reconstructed_conv(case):
    w, b, x, attrs = conv_setup(case, seed=1)
    m = conv_model(w, b, x.shape, **attrs)
    ranks = (3, 2)
    arrays = decompose("tucker2", w, ranks)
    out, (rec,) = rewrite(m, {"conv": lf(arrays, ranks)})
    w_lr = reconstruct("tucker2", arrays, w.shape).astype(np.float32)
    assert rel_err(w_lr, w) > 0.05  # really low rank
    (got,), (ref,) = run(out, {"x": x}), run(conv_model(w_lr, b, x.shape, **attrs), {"x": x})
    assert rel_err(got, ref) <= 1e-4
    (orig,) = run(m, {"x": x})
    assert rel_err(got, orig) > 1e-2
    if "auto_pad" not in attrs:  # the same numbers as the torch module (symmetric torch padding only)
        pads = attrs.get("pads", [0, 0, 0, 0])
        if pads[:2] == pads[2:]:
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=attrs.get("strides", 1), padding=pads[:2],
                             dilation=attrs.get("dilations", 1), bias=b is not None)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w))
                if b is not None:
                    conv.bias.copy_(torch.from_numpy(b))
                mod = factorize_module(conv, "tucker2", ranks)
                want = mod(torch.from_numpy(x)).numpy()
            assert rel_err(got, want) <= 1e-4


def test_grouped_conv_and_rank_checks():
    g = np.random.default_rng(3)
    w = g.standard_normal((12, 2, 3, 3)).astype(np.float32)  # Conv(8 -> 12, group=4)
    b = g.standard_normal(12).astype(np.float32)
    x = g.standard_normal((1, 8, 7, 7)).astype(np.float32)
    m = conv_model(w, b, x.shape, pads=[1, 1, 1, 1], group=4)
    full = decompose("tucker2", w, (3, 2), groups=4)  # per group (3, 2) is full rank
    out, (rec,) = rewrite(m, {"conv": lf(full, (3, 2))})
    assert [a.i for n in out.graph.node for a in n.attribute if a.name == "group"] == [4, 4, 4]
    (ref,), (got,) = run(m, {"x": x}), run(out, {"x": x})
    assert rel_err(got, ref) <= 1e-4
    low = decompose("tucker2", w, (2, 1), groups=4)
    out, _ = rewrite(m, {"conv": lf(low, (2, 1))})
    (got,), (want,) = run(out, {"x": x}), run(conv_model(reconstruct("tucker2", low, w.shape).astype(np.float32), b,
                                                                  x.shape, pads=[1, 1, 1, 1], group=4), {"x": x})
    assert rel_err(got, want) <= 1e-4
    with pytest.raises(ValueError, match="ranks"):
        passes.apply_factors(m, {"conv": lf(low, (2, 2))})
    with pytest.raises(ValueError, match="not a multiple of the conv's group=4"):
        passes.apply_factors(m, {"conv": lf(dict(low, first=np.ones((7, 2, 1, 1), np.float32)), (2, 1))})
    one_by_one = conv_model(g.standard_normal((6, 4, 1, 1)).astype(np.float32), None, (1, 4, 5, 5))
    k3 = decompose("tucker2", g.standard_normal((6, 4, 3, 3)).astype(np.float32), 2)
    _, (rec,) = rewrite(one_by_one, {"conv": lf(k3, (2, 2))})
    assert rec.status == "skipped" and "tucker2 does not apply" in rec.reason


def test_counts_agree_numpy_onnx_torch():
    """params / MACs of the rewrite: decompose's rules == the ONNX counter == the torch counter."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    x = torch.randn(1, 8, 12, 12)
    shape = layer_shapes(conv, x)[""]
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    m = conv_model(w, b, tuple(x.shape), pads=[1, 1, 1, 1], strides=[2, 2])
    for ranks in ((5, 3), (16, 8)):
        out, _ = rewrite(m, {"conv": lf(decompose("tucker2", w, ranks), ranks)})
        onnx_counts = count_onnx(out)
        tparams, tmacs = torch_count(factorize_module(conv, "tucker2", ranks), x)
        assert onnx_counts.params == tparams == R.factorized_params("tucker2", shape, ranks)
        assert onnx_counts.macs == tmacs == R.factorized_macs("tucker2", shape, ranks)
    dense = count_onnx(m)
    assert dense.params == R.dense_params(shape) and dense.macs == R.dense_macs(shape)
