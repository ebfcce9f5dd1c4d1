"""INT8 export: static QDQ per-channel with each calibration method, dynamic for MatMul models, per-layer errors."""
from __future__ import annotations

import onnx
import pytest
from edge_models import conv_net, images, mlp, tt_twin

from rene_onnx.errors import UserError
from rene_onnx.export import export_model
from rene_onnx.export import layer_error

FAST = dict(latency=False, layer_errors=False)


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_per_channel_qdq(method):
    res = export_model(conv_net(), to="int8", calib=images(48, groups=6), calibration_method=method, **FAST)
    q = res.models["int8"]
    onnx.checker.check_model(q, full_check=True)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(q)
    per_channel = [n for n in q.graph.node if n.op_type == "DequantizeLinear"
                   and any(a.name == "axis" for a in n.attribute)]
    assert per_channel, "weights should be dequantized per channel (an axis attribute)"
    row = res.report.artifact("int8")
    assert row.details["quantization"]["calibration_method"] == method
    assert row.details["quantization"]["mode"] == "static"
    assert row.numerics["cosine"] > 0.98 and row.numerics["samples"] == 16  # 2 of 6 groups x 8 crops held out
    assert row.size_bytes < res.report.artifact("source").size_bytes


def test_calibration_never_sees_held_out_groups():
    data = images(60, groups=10)
    res = export_model(conv_net(), to="int8", calib=data, held_out_fraction=0.3, **FAST)
    cal, held = res.report.inputs["calibration"], res.report.inputs["held_out"]
    assert cal["groups"] + held["groups"] == 10 and cal["samples"] + held["samples"] == 60
    assert "held-out" in res.report.inputs["fidelity_on"]


def test_explicit_held_out_keeps_all_calibration():
    res = export_model(conv_net(), to="int8", calib=images(20), held_out=images(8, seed=9), calib_samples=12, **FAST)
    assert res.report.inputs["calibration"]["samples"] == 20
    assert res.report.artifact("int8").details["quantization"]["calibration_samples"] == 12
    assert res.report.artifact("int8").numerics["samples"] == 8


def test_dynamic_for_matmul_model_without_calibration():
    res = export_model(mlp(), to="int8", **FAST)
    q = res.models["int8"]
    onnx.checker.check_model(q, full_check=True)
    assert res.report.artifact("int8").details["quantization"]["mode"] == "dynamic"
    assert "DynamicQuantizeLinear" in _ops(q) or "MatMulInteger" in _ops(q)
    assert "random inputs" in res.report.inputs["fidelity_on"]
    assert res.report.artifact("int8").numerics["cosine"] > 0.99


def test_conv_model_without_calibration_is_refused(tmp_path):
    out = tmp_path / "edge"
    with pytest.raises(UserError) as e:
        export_model(conv_net(), to="int8", output_dir=out)
    assert e.value.option == "calib" and "dynamic" in e.value.message
    assert not out.exists()


def test_dynamic_on_request_for_a_conv_model():
    res = export_model(conv_net(), to="int8", quantization="dynamic", **FAST)
    assert res.report.artifact("int8").details["quantization"]["mode"] == "dynamic"


def test_layer_errors_compare_chains_with_dense_layers():
    dense = conv_net()
    res = export_model(tt_twin(dense, (8, 8)), to="int8", calib=images(48, groups=6), original=dense,
                       latency=False, layer_error_samples=4)
    rows = {r["name"]: r for r in res.report.artifact("int8").details["layer_errors"]}
    assert set(rows) == {"conv1", "conv2", "fc"}
    assert rows["conv2"]["method"] == "tt" and rows["conv2"]["nodes"] == 3
    assert rows["conv2"]["dense_rel_error"] is not None and rows["conv1"]["dense_rel_error"] is None
    for r in rows.values():
        assert 0 < r["rel_error"] < 0.2 and r["sqnr_db"] > 10


def test_lossy_chain_kept_in_float(monkeypatch):
    monkeypatch.setattr(layer_error, "MIN_GAP", 0.0)
    dense = conv_net()
    res = export_model(tt_twin(dense, (8, 8)), to="int8", calib=images(48, groups=6), original=dense, latency=False,
                       layer_error_samples=4, lossy_ratio=0.01, lossy_chains="float")
    assert res.lossy_chains == ["conv2"]
    kept = res.report.artifact("int8").details["quantization"]["kept_float"]
    assert kept == ["conv2/tt_core", "conv2/tt_first", "conv2/tt_last"]
    assert any("kept in float" in n for n in res.report.artifact("int8").notes)


def test_compare_dense_flags_only_clear_losses():
    E = layer_error.LayerError
    chains = {"a": E("a", "tt", 3, 0.06, None), "b": E("b", "svd", 2, 0.034, None), "c": E("c", "dense", 1, 0.5, None),
              "d": E("d", "tt", 3, 0.0025, None)}
    dense = {"a": E("a", "dense", 1, 0.02, None), "b": E("b", "dense", 1, 0.02, None), "c": E("c", "dense", 1, 0.01, None),
             "d": E("d", "dense", 1, 0.0005, None)}
    assert layer_error.compare_dense(chains, dense) == ["a"]  # b: 1.7x (a chain's expected price); d: tiny gap
    assert chains["b"].dense_rel_error == 0.02 and not chains["b"].lossy


def test_find_layers_groups_chain_nodes():
    layers = {l.name: l for l in layer_error.find_layers(tt_twin(conv_net(), (4, 4)))}
    assert layers["conv2"].nodes == ["conv2/tt_first", "conv2/tt_core", "conv2/tt_last"]
    assert layers["conv2"].output == "c2" and layers["conv1"].method == "dense"
