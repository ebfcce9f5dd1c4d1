"""``compress --export``: the compressed model's edge artifacts, calibrated on what the tool used and measured
against the original on what it did not; refused before any work when it cannot be done."""
from __future__ import annotations

import json

import onnx
import pytest
import torch

from cli_inproc import cli
from rene_onnx import models as zoo

FAST = ["--ranks", "0.5", "--epochs", "0", "--no-latency"]


def test_compress_export_writes_validated_artifacts_next_to_the_output(tmp_path):
    r = cli("compress", "digits_resnet", *FAST, "--export", "int8,fp16", "-o", "d.onnx", "--report", "r.json",
            cwd=tmp_path)
    assert r.exit_code == 0, r.output
    for name in ("d.onnx", "d.int8.onnx", "d.fp16.onnx"):
        onnx.checker.check_model(onnx.load(tmp_path / name), full_check=True)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(tmp_path / "d.int8.onnx").graph.node)
    meta = json.loads((tmp_path / "r.json").read_text())["meta"]["export"]
    assert meta["targets"] == ["int8", "fp16"] and meta["inputs"] == "data: calibration split / test split"
    exp = json.loads((tmp_path / "d.export.json").read_text())
    assert "held-out" in exp["inputs"]["fidelity_on"]  # digits' test split: never used by the tool
    rows = {a["kind"]: a for a in exp["artifacts"]}
    assert set(rows) >= {"int8", "fp16"}
    # ranks 0.5 without fine-tuning breaks this small model (the source row: the compressed FP32 model); the
    # artifacts must not move it further: their agreement with the original is the source's
    source = rows["source"]["numerics"]["top1_agreement"]
    for kind in ("int8", "fp16"):
        assert abs(rows[kind]["numerics"]["top1_agreement"] - source) <= 0.03, (kind, rows[kind], source)
        assert rows[kind]["numerics"]["samples"] == 359  # the digits test split
    assert rows["int8"]["size_bytes"] < 0.5 * (tmp_path / "d.onnx").stat().st_size  # FP32 -> INT8 weights
    assert "d.int8.onnx" in r.output and "Export" in r.output


def _conv_onnx(path):
    model = zoo.build("digits_resnet", pretrained=True).eval()
    torch.onnx.export(model, (torch.randn(1, 1, 8, 8),), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"])


@pytest.mark.parametrize("args, needles", [
    (["--data-free", "--export", "int8"], ["--export", "int8", "calibration", "--calib"]),
    (["--data-free", "--export", "int4"], ["--export", "int4"]),
])
def test_compress_export_refused_before_any_work(tmp_path, args, needles):
    _conv_onnx(tmp_path / "m.onnx")
    r = cli("compress", "m.onnx", *FAST, *args, "-o", "out.onnx", cwd=tmp_path)
    assert r.exit_code == 2, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("error:"))
    assert all(n in line for n in needles), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_compress_export_never_overwrites_the_input(tmp_path):
    _conv_onnx(tmp_path / "out.fp16.onnx")
    before = (tmp_path / "out.fp16.onnx").read_bytes()
    r = cli("compress", "out.fp16.onnx", "--data-free", *FAST, "--export", "fp16", "-o", "out.onnx", cwd=tmp_path)
    assert r.exit_code == 2 and "--export" in r.output and "out.fp16.onnx" in r.output, r.output
    assert (tmp_path / "out.fp16.onnx").read_bytes() == before and not (tmp_path / "out.onnx").exists()
