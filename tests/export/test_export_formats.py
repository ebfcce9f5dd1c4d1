"""FP16, ORT format, opset conversion, fixed shapes, the output folder, and the export CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from edge_models import conv_net, images, mish_net

from rene_onnx.errors import UserError
from rene_onnx.export import export_model

FAST = dict(latency=False, layer_errors=False)


def test_fp16_keeps_io_types_and_halves_weights():
    res = export_model(conv_net(), to="fp16", calib=images(32, groups=4), **FAST)
    m = res.models["fp16"]
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {t.data_type for t in m.graph.initializer if len(t.dims) == 4} == {onnx.TensorProto.FLOAT16}
    row = res.report.artifact("fp16")
    assert row.size_ratio > 1.7 and row.numerics["cosine"] > 0.9999


def test_fp16_io_types_on_request():
    m = export_model(conv_net(), to="fp16", keep_io_types=False, **FAST).models["fp16"]
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_ort_format_files_and_mobile_usability(tmp_path):
    res = export_model(conv_net(), to="ort", output_dir=tmp_path / "edge", name="net", **FAST)
    assert sorted(os.listdir(tmp_path / "edge")) == ["net.export.json", "net.ort", "net.required_operators.config"]
    assert "ai.onnx" in (tmp_path / "edge" / "net.required_operators.config").read_text()
    row = res.report.artifact("ort")
    assert row.format == "ort" and row.numerics["cosine"] > 0.99999
    usability = row.details["mobile_usability"]
    assert set(usability["execution_providers"]) >= {"NNAPI", "CoreML MLProgram"}
    assert usability["dynamic_inputs"] == ["input"]  # batch "N"
    report = json.loads((tmp_path / "edge" / "net.export.json").read_text())
    assert report["format"] == "rene-onnx/export-report/v1"
    assert {a["kind"] for a in report["artifacts"]} == {"source", "ort"}


def test_fixed_shape_makes_batch_static():
    res = export_model(conv_net(), to="ort", fixed_shape={"N": 1}, **FAST)
    m = res.models["fixed"]
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert res.report.artifact("ort").details["mobile_usability"]["dynamic_inputs"] == []
    assert export_model(conv_net(), to="fp16", fixed_shape=["input:2,3,16,16"], **FAST).models["fixed"] \
        .graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_opset_down_conversion_validated_in_onnxruntime():
    res = export_model(conv_net(opset=18), to="fp16", opset=13, calib=images(16, groups=4), **FAST)
    m = res.models["opset"]
    onnx.checker.check_model(m, full_check=True)
    assert res.report.artifact("opset").opset == 13 and res.report.artifact("fp16").opset == 13
    assert res.report.artifact("opset").numerics["max_abs_diff"] < 1e-5


@pytest.mark.parametrize("kwargs, option", [
    (dict(to="int9"), "to"),
    (dict(to="fp16", opset=3), "opset"),
    (dict(to="int8"), "calib"),
    (dict(to="fp16", fixed_shape={"nope": 1}), "fixed_shape"),
])
def test_bad_input_leaves_nothing(tmp_path, kwargs, option):
    out = tmp_path / "edge"
    with pytest.raises(UserError) as e:
        export_model(conv_net(), output_dir=out, **FAST, **kwargs)
    assert e.value.option == option
    assert not out.exists()


def test_unreachable_opset_is_refused(tmp_path):
    with pytest.raises(UserError, match="cannot take this model from opset 18 to 13") as e:
        export_model(mish_net(), to="fp16", opset=13, output_dir=tmp_path / "edge", **FAST)
    assert e.value.option == "opset" and not (tmp_path / "edge").exists()


def test_existing_folder_keeps_only_finished_files(tmp_path, monkeypatch):
    from rene_onnx.export import orchestrator

    out = tmp_path / "edge"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def boom(*a, **k):
        raise RuntimeError("measure failed")

    monkeypatch.setattr(orchestrator, "_measure", boom)
    with pytest.raises(RuntimeError):
        export_model(conv_net(), to="fp16,ort", output_dir=out, **FAST)
    assert sorted(os.listdir(out)) == ["keep.txt"]


def test_nothing_written_without_output_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = export_model(conv_net(), to="fp16", **FAST)
    assert res.paths == {} and "fp16" in res.models and os.listdir(tmp_path) == []


def test_calib_file_checks(tmp_path):
    np.savez(tmp_path / "bad.npz", input=np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(UserError, match="shape") as e:
        export_model(conv_net(), to="int8", calib=tmp_path / "bad.npz", **FAST)
    assert e.value.option == "calib"


def _cli(*args, cwd):
    from click.testing import CliRunner

    from rene_onnx.cli.main import cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


def test_cli_export(tmp_path):
    onnx.save(conv_net(), tmp_path / "net.onnx")
    np.savez(tmp_path / "calib.npz", **images(40, groups=5))
    res = _cli("export", "net.onnx", "--to", "int8,fp16,ort", "--calib", "calib.npz", "-o", "edge", "--repeats", "3",
               "--no-layer-errors", cwd=tmp_path)
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path / "edge")) == ["net.export.json", "net.fp16.onnx", "net.int8.onnx", "net.ort",
                                                      "net.required_operators.config"]
    report = json.loads((tmp_path / "edge" / "net.export.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["kind"] == "int8")
    assert int8["latency_ms"]["onnxruntime"]["original_ms"] > 0 and int8["numerics"]["top1_agreement"] is not None


@pytest.mark.parametrize("args, needle", [
    (["--to", "int8"], "--calib: int8 of a conv model needs calibration inputs"),
    (["--to", "int9"], "--to: unknown export target"),
    (["--to", "fp16", "--opset", "3"], "--opset: opset 3 is out of range"),
])
def test_cli_bad_input_one_line(tmp_path, args, needle):
    onnx.save(conv_net(), tmp_path / "net.onnx")
    res = _cli("export", "net.onnx", *args, "-o", "edge", "--no-latency", cwd=tmp_path)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: " + needle), res.output
    assert not (tmp_path / "edge").exists()
