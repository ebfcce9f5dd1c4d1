"""rene_onnx.validate.latency_aware: per-layer dense vs factorized times, the slow layers, the re-rewrite.

Timings are only compared within one run and with gaps of 10x or more in
MACs, so a noisy machine cannot flip them. The asserted time ratios are far
smaller than the MAC ratios: at this size per-node overhead dominates the
small chains (CI measured the 23x-fewer-MACs chain only 2.4x faster).
"""
from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from rene_onnx.decompose import reconstruct
from rene_onnx.plan import LayerFactors
from rene_onnx.validate import run_onnx
from rene_onnx.pipeline.rewrite import dense_from_factors, latency_aware_rewrite
from rene_onnx.validate.latency_aware import (
    layer_latency,
    layer_nodes_from_records,
    reorder_neighbours,
    slower_layers,
)

RNG = np.random.default_rng(0)
C, HW = 64, 32


def _f32(*shape, scale=0.1):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _factors():
    """big: 3x3 conv 64->64 whose weight is exactly TT rank 8 (the chain has ~23x fewer MACs);
    tiny: 1x1 conv 64->16 whose weight is U @ V with an absurd rank 512 (the chain has ~40x more MACs)."""
    big = LayerFactors("big", "tt", (8, 8), {"first": _f32(8, C, 1, 1), "core": _f32(8, 8, 3, 3),
                                            "last": _f32(C, 8, 1, 1), "bias": _f32(C)})
    tiny = LayerFactors("tiny", "svd", (512,), {"U": _f32(16, 512, scale=0.05), "V": _f32(512, C, scale=0.05),
                                                "bias": _f32(16)})
    return {"big": big, "tiny": tiny}


def _model(factors):
    """x -> big (3x3, pad 1) -> relu -> tiny (1x1) -> y, with dense weights equal to what the factors represent."""
    wb = reconstruct("tt", factors["big"].arrays, (C, C, 3, 3)).astype(np.float32)
    wt = reconstruct("svd", factors["tiny"].arrays, (16, C, 1, 1)).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "Wb", "Bb"], ["b"], name="big", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        h.make_node("Relu", ["b"], ["r"], name="relu"),
        h.make_node("Conv", ["r", "Wt", "Bt"], ["y"], name="tiny", kernel_shape=[1, 1]),
    ]
    inits = [nh.from_array(wb, "Wb"), nh.from_array(factors["big"].arrays["bias"], "Bb"),
             nh.from_array(wt, "Wt"), nh.from_array(factors["tiny"].arrays["bias"], "Bt")]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, C, HW, HW])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 16, HW, HW])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    m.ir_version = 10
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    factors = _factors()
    model = _model(factors)
    feeds = {"x": RNG.standard_normal((1, C, HW, HW)).astype(np.float32)}
    res = latency_aware_rewrite(model, factors, feeds=feeds, repeats=15, warmup=3)
    return model, factors, feeds, res


# ------------------------------------------------------------------ slower_layers (pure)


def test_slower_layers_margin_order_and_missing_times():
    times = {"a": (100.0, 40.0), "b": (50.0, 80.0), "c": (60.0, 60.0), "d": (None, 10.0), "e": (90.0, None),
             "f": (100.0, 90.0)}
    assert slower_layers(times) == ["b", "c"]  # equal time is "not faster"
    assert slower_layers(times, margin=1.2) == ["b", "c", "f"]  # f is only 1.11x faster
    assert slower_layers(times, margin=0.5) == []  # tolerate chains up to 2x slower
    assert slower_layers({}) == []


@pytest.mark.parametrize("margin", [0, -1, float("nan"), float("inf")])
def test_slower_layers_rejects_bad_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        slower_layers({"a": (1.0, 2.0)}, margin)


def test_slower_layers_rejects_malformed_times():
    with pytest.raises(ValueError, match="us_dense, us_factorized"):
        slower_layers({"a": 3.0})


# ------------------------------------------------------------------ records, reorders


def test_layer_nodes_from_records_keeps_factorized_and_renames():
    from rene_onnx.passes import PassRecord

    recs = [PassRecord("n1", "Conv", "tt", "factorized", "", ["n1/tt_first", "n1/tt_core", "n1/tt_last"]),
            PassRecord("n2", "Conv", "tt", "skipped", "grouped", [])]
    assert layer_nodes_from_records(recs) == {"n1": ("n1", ["n1/tt_first", "n1/tt_core", "n1/tt_last"])}
    assert layer_nodes_from_records(recs, {"n1": "layer1.conv"}) == {"layer1.conv": ("n1", recs[0].new_nodes)}


def test_reorder_neighbours_nchw_side_first():
    ms = "com.microsoft"
    g = h.make_graph([
        h.make_node("ReorderInput", ["x"], ["x_c"], name="ReorderInput", domain=ms),
        h.make_node("NchwcConv", ["x_c", "w"], ["a_nchwc"], name="a_nchwc", domain=ms),
        h.make_node("ReorderOutput", ["a_nchwc"], ["a"], name="ReorderOutput_token_3", domain=ms),
        h.make_node("Conv", ["a", "w2"], ["b"], name="b/tt_core"),
        h.make_node("ReorderInput", ["b"], ["b_c"], name="ReorderInput_token_4", domain=ms),
        h.make_node("NchwcConv", ["b_c", "w3"], ["y"], name="c_nchwc", domain=ms),
    ], "g", [], [])
    sides = reorder_neighbours(g, lambda s: s.removesuffix("_nchwc"))
    assert sides["ReorderInput"] == ([], ["a"])  # graph input on the NCHW side
    assert sides["ReorderOutput_token_3"] == (["b/tt_core"], ["a"])
    assert sides["ReorderInput_token_4"] == (["b/tt_core"], ["c"])


# ------------------------------------------------------------------ real profiles


def test_layer_latency_finds_the_slow_chain(case):
    model, factors, feeds, res = case
    t = res.times
    assert set(t) == {"big", "tiny"}
    assert all(v is not None and v > 0 for pair in t.values() for v in pair)
    big_dense, big_fact = t["big"]
    tiny_dense, tiny_fact = t["tiny"]
    assert big_fact < big_dense / 1.5  # ~23x fewer MACs
    assert tiny_fact > tiny_dense * 1.5  # ~40x more MACs
    assert res.kept_dense == ["tiny"]
    assert slower_layers(t) == ["tiny"]


def test_latency_aware_model_keeps_slow_layer_dense_and_same_outputs(case):
    model, factors, feeds, res = case
    onnx.checker.check_model(res.model, full_check=True)
    ops = {n.name: n.op_type for n in res.model.graph.node}
    assert {"big/tt_first", "big/tt_core", "big/tt_last", "tiny"} <= set(ops)
    assert not any(n.startswith("tiny/") for n in ops)
    assert [r.node for r in res.records if r.status == "factorized"] == ["big"]
    assert res.first_model is not None and any(n.name == "tiny/svd_first" for n in res.first_model.graph.node)
    # every factorization here is exact, so all three models compute the same function
    ref = run_onnx(model, feeds)[0]
    for m in (res.first_model, res.model):
        np.testing.assert_allclose(run_onnx(m, feeds)[0], ref, rtol=1e-3, atol=1e-3)


def test_layer_latency_direct_with_paths_and_threads(case, tmp_path):
    model, factors, feeds, res = case
    po, pc, npz = tmp_path / "o.onnx", tmp_path / "c.onnx", tmp_path / "feeds.npz"
    onnx.save(model, po)
    onnx.save(res.first_model, pc)
    np.savez(npz, **feeds)
    nodes = layer_nodes_from_records(res.records)  # the final rewrite factorized only big
    t = layer_latency(po, pc, nodes, npz, repeats=5, warmup=1, threads=1, rounds=1)
    assert list(t) == ["big"] and t["big"][1] < t["big"][0]
    with pytest.raises(ValueError, match="rounds"):
        layer_latency(po, pc, nodes, npz, rounds=0)
    with pytest.raises(ValueError, match="new nodes"):
        layer_latency(po, pc, {"big": ("big", "big/tt_first")}, npz)
    with pytest.raises(ValueError, match="not found"):
        layer_latency(tmp_path / "missing.onnx", pc, nodes, npz)


def test_dense_from_factors_rebuilds_weight_and_bias_in_onnx_layout():
    factors = _factors()
    model = _model(factors)
    # change the stored dense weights: the update must restore what the factors represent
    for t in model.graph.initializer:
        if t.name in ("Wt", "Bt"):
            t.CopyFrom(nh.from_array(np.zeros(tuple(t.dims), np.float32), t.name))
    up = dense_from_factors(model, {"tiny": factors["tiny"]})
    assert set(up) == {"Wt", "Bt"}
    want = factors["tiny"].arrays["U"] @ factors["tiny"].arrays["V"]
    np.testing.assert_allclose(up["Wt"].reshape(16, C), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(up["Bt"], factors["tiny"].arrays["bias"])
    assert up["Wt"].shape == (16, C, 1, 1) and up["Wt"].dtype == np.float32
    with pytest.raises(ValueError, match="no layer"):
        dense_from_factors(model, {"relu": factors["tiny"]})


def test_dense_from_factors_transposes_for_matmul():
    u, v = _f32(6, 3), _f32(3, 5)  # torch layout W (out=6, in=5)
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [2, 5])], [h.make_tensor_value_info("y", T.FLOAT, [2, 6])],
                     [nh.from_array(np.zeros((5, 6), np.float32), "W")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)])
    up = dense_from_factors(m, {"mm": LayerFactors("mm", "svd", (3,), {"U": u, "V": v})})
    np.testing.assert_allclose(up["W"], (u @ v).T, rtol=1e-6)


def test_module_imports_no_torch():
    import subprocess

    code = "import sys, rene_onnx.validate.latency_aware, rene_onnx.passes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_nchwc_block_size_from_cpu_flags():
    from rene_onnx.validate.latency_aware import nchwc_block_size

    assert nchwc_block_size(["fpu", "avx", "avx2", "avx512f"]) == 16
    assert nchwc_block_size(["fpu", "avx", "avx2"]) == 8
    assert nchwc_block_size(["fpu", "sse4_2"]) == 1
    assert nchwc_block_size() in (1, 8, 16)  # this machine's /proc/cpuinfo


def test_fastest_keeps_each_nodes_best_round():
    from rene_onnx.validate.latency_aware import fastest

    got = fastest([{"a": 10.0, "b": 5.0}, {"a": 7.0, "c": 1.0}, {"a": 9.0, "b": 6.0}])
    assert got == {"a": 7.0, "b": 5.0, "c": 1.0}
    assert fastest([]) == {}


# ------------------------------------------------------------------ isolated sub-models (the GPU method)


def test_submodels_compute_what_the_layers_compute(case):
    from rene_onnx.validate.isolate import layer_inputs, submodel

    model, factors, feeds, res = case
    acts = layer_inputs(model, ["big", "tiny"], feeds)
    assert set(acts) == {"x", "r"} and acts["r"].shape == (1, C, HW, HW)  # r: an inner tensor, from a CPU run
    ref_b = run_onnx(_part(model, ["big"]), {"x": feeds["x"]})[0]
    for names in (["big"], ["big/tt_first", "big/tt_core", "big/tt_last"]):
        src = model if names == ["big"] else res.first_model
        sub = submodel(src, names, acts)
        onnx.checker.check_model(sub, full_check=True)
        assert [i.name for i in sub.graph.input] == ["x"] and [o.name for o in sub.graph.output] == ["b"]
        assert len(sub.graph.initializer) == (2 if names == ["big"] else 4)  # only what the nodes read
        np.testing.assert_allclose(run_onnx(sub, {"x": feeds["x"]})[0], ref_b, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="not in graph"):
        submodel(model, ["nope"], acts)
    with pytest.raises(ValueError, match="no activation"):
        submodel(model, ["tiny"], {"x": feeds["x"]})


def _part(model, names):
    """The original graph cut after ``names``' outputs (reference for the sub-models)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [n for n in m.graph.node if n.name in names]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    del m.graph.output[:]
    m.graph.output.extend(h.make_empty_tensor_value_info(o) for n in keep for o in n.output)
    return m


def test_isolated_layer_latency_finds_the_slow_chain(case, tmp_path):
    from rene_onnx.validate.isolate import isolated_layer_latency

    model, factors, feeds, res = case
    nodes = {"big": ("big", ["big/tt_first", "big/tt_core", "big/tt_last"]),
             "tiny": ("tiny", ["tiny/svd_first", "tiny/svd_last"])}
    assert {n.name for n in res.first_model.graph.node} >= {v for _, new in nodes.values() for v in new}
    t = isolated_layer_latency(model, res.first_model, nodes, feeds, repeats=9, warmup=2, threads=1)
    assert list(t) == ["big", "tiny"]
    assert t["big"][1] < t["big"][0] / 1.5 and t["tiny"][1] > t["tiny"][0] * 1.5
    assert slower_layers(t) == ["tiny"]
    # layer_latency(isolated=True) takes the same route; GPU providers take it by default
    po, pc = tmp_path / "o.onnx", tmp_path / "c.onnx"
    onnx.save(model, po)
    onnx.save(res.first_model, pc)
    t2 = layer_latency(po, pc, nodes, feeds, repeats=5, warmup=1, threads=1, isolated=True)
    assert slower_layers(t2) == ["tiny"]
    from rene_onnx.validate import ProviderUnavailable

    with pytest.raises(ProviderUnavailable):  # no GPU here: the isolated route still refuses a fake provider
        layer_latency(po, pc, nodes, feeds, provider="cuda", repeats=1, warmup=0)
