"""Runtimes for validation: onnxruntime and OpenVINO (skipped, with the reason, where openvino is absent)."""
from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import onnx
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "export"))
from edge_models import conv_net, images  # noqa: E402

from rene_onnx.errors import MissingDependencyError, UserError  # noqa: E402
from rene_onnx.validate import runtimes  # noqa: E402

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed (pip install 'rene-onnx[openvino]')")


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(conv_net(), path)
    return path


def test_onnxruntime_runs_in_batches(net):
    x = images(10)
    out = runtimes.run_model(runtimes.get_runtime("onnxruntime"), net, x, batch=4)
    assert out[0].shape == (10, 10)
    fixed = runtimes.run_model(runtimes.get_runtime("onnxruntime"), net, x, batch=4, fixed_batch=True)
    np.testing.assert_allclose(fixed[0], out[0][:8], rtol=1e-5, atol=1e-6)


@needs_openvino
def test_openvino_matches_onnxruntime(net):
    x = images(6)
    ort = runtimes.run_model(runtimes.get_runtime("onnxruntime"), net, x)
    ov = runtimes.run_model(runtimes.get_runtime("openvino", threads=1), net, x)
    np.testing.assert_allclose(ov[0], ort[0], rtol=1e-3, atol=1e-4)  # f32 precision hint: FP32 stays FP32


@needs_openvino
def test_openvino_latency_in_the_worker(net, tmp_path):
    from rene_onnx.validate.latency import measure_latency

    np.savez(tmp_path / "feeds.npz", input=images(1)["input"])
    lat = measure_latency([net, net], tmp_path / "feeds.npz", runtime="openvino", threads=1, warmup=2, repeats=5)
    assert [t.provider for t in lat] == ["openvino", "openvino"] and all(t.median_ms > 0 for t in lat)


@needs_openvino
def test_openvino_refuses_ort_files(tmp_path):
    with pytest.raises(UserError, match="ORT-format"):
        runtimes.get_runtime("openvino").load(tmp_path / "model.ort")


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setattr(runtimes, "available", lambda name: name == "onnxruntime")
    with pytest.raises(MissingDependencyError, match=r"rene-onnx\[openvino\]") as e:
        runtimes.get_runtime("openvino")
    assert e.value.option == "runtime"
    with pytest.raises(UserError, match="unknown runtime"):
        runtimes.check_runtime("tflite")


def test_cli_validate_without_openvino_one_line(net, monkeypatch):
    from click.testing import CliRunner

    from rene_onnx.cli.main import cli

    monkeypatch.setattr(runtimes, "available", lambda name: name == "onnxruntime")
    res = CliRunner().invoke(cli, ["validate", str(net), str(net), "--runtime", "openvino"], catch_exceptions=False)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--runtime: openvino is not installed: pip install 'rene-onnx[openvino]'" in lines[0]


@needs_openvino
def test_cli_validate_on_openvino(net, tmp_path):
    from click.testing import CliRunner

    from rene_onnx.cli.main import cli

    np.savez(tmp_path / "test.npz", input=images(8)["input"])
    report = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["validate", str(net), str(net), "--runtime", "openvino", "--calib",
                                   str(tmp_path / "test.npz"), "--repeats", "3", "--report", str(report)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import json

    r = json.loads(report.read_text())
    assert r["latency_ms"]["runtime"] == "openvino" and r["numerics"]["calib"]["cosine"] > 0.99999
