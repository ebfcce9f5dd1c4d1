"""An ONNX file onnx2torch cannot import (issue 10 item 6): compress still works data-free from the graph's
weights (ranks given or a weights-only target), and a run that needs the torch import says what works without."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cli_inproc import cli

F32 = TensorProto.FLOAT


def make_model(path: Path, *, low_rank: bool = False, act: str = "ThresholdedRelu", seed: int = 0) -> Path:
    """conv1 (3x3) -> ``act`` -> conv2 (3x3) -> Relu -> conv3 (1x1) -> GlobalAveragePool -> Flatten -> fc (Gemm).

    onnx2torch has no converter for ThresholdedRelu. ``low_rank``: conv3's and fc's weights have exact ranks 8
    and 2 (their SVD factors at those ranks are exact)."""
    rng = np.random.default_rng(seed)

    def arr(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w3 = (arr(64, 8) @ arr(8, 64, scale=0.5)).reshape(64, 64, 1, 1) if low_rank else arr(64, 64, 1, 1, scale=0.1)
    wf = arr(10, 2) @ arr(2, 64, scale=0.5) if low_rank else arr(10, 64)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w1", arr(32, 3, 3, 3)), ("b1", arr(32)), ("w2", arr(64, 32, 3, 3, scale=0.05)), ("b2", arr(64)),
        ("w3", w3), ("b3", arr(64)), ("wf", wf), ("bf", arr(10))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node(act, ["c1"], ["a1"], "act1", **({"alpha": 0.1} if act == "ThresholdedRelu" else {})),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["a2"], "relu2"),
             helper.make_node("Conv", ["a2", "w3", "b3"], ["c3"], "conv3"),
             helper.make_node("GlobalAveragePool", ["c3"], ["g"], "gap"),
             helper.make_node("Flatten", ["g"], ["f"], "flat"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], "fc", transB=1)]
    graph = helper.make_graph(nodes, "noimport", [helper.make_tensor_value_info("x", F32, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", F32, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("noimport") / "m.onnx")


def _params(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_onnx2torch_cannot_import_the_model(model_file):
    from rene_onnx.load import TorchImportError, load_onnx

    with pytest.raises(TorchImportError, match="no converter for ThresholdedRelu"):
        load_onnx(model_file)


def test_ranks_given_compress_without_torch(model_file, tmp_path):
    r = cli("compress", model_file, "--data-free", "--ranks", "0.5", "--epochs", "0", "--no-latency",
            "-o", "out.onnx", "--report", "r.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "ThresholdedRelu" in r.output and "onnx2torch can import" in r.output  # the note, printed
    out = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(out, full_check=True)
    assert _params(tmp_path / "out.onnx") < 0.75 * _params(model_file)
    report = json.loads((tmp_path / "r.json").read_text())
    assert "ThresholdedRelu" in report["meta"]["torch_import"]["error"]
    assert any("no converter for ThresholdedRelu" in n for n in report["meta"]["notes"])
    assert report["numerics"]["vs"] == "original" and report["numerics"]["inputs"] == "random"
    assert report["numerics"]["vs_original"]["inputs"] == "random"
    assert "torch_before" not in report["params"]
    assert sum(row["status"] == "factorized" for row in report["layers"]) == 4
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    assert _outputs(tmp_path / "out.onnx", x).shape == (2, 10)  # the dynamic batch is kept


@pytest.mark.parametrize("target", ["params", "macs"])
def test_target_weights_only(model_file, tmp_path, target):
    r = cli("compress", model_file, "--data-free", f"--target-{target}", "0.5", "--rank-multiple", "1", "--epochs", "0",
            "--no-latency", "-o", "out.onnx", "--report", "r.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    kept = report[target]["after"] / report[target]["before"]
    assert abs(kept - 0.5) < 0.03, kept
    assert report["search"]["mode"] == "data-free" and report["search"]["stages"] == 0
    assert any("weights only" in n for n in report["meta"]["notes"] + r.output.splitlines())
    onnx.checker.check_model(onnx.load(str(tmp_path / "out.onnx")), full_check=True)


def test_exact_rank_rewrite_equals_the_original(tmp_path):
    """Factors at a layer's exact rank reproduce it: the rewrite from numpy factors is exact (SVD conv and Gemm)."""
    src = make_model(tmp_path / "lr.onnx", low_rank=True)
    (tmp_path / "plan.json").write_text(json.dumps({"conv3": 8, "fc": 2}))
    r = cli("compress", src, "--data-free", "--ranks", "plan.json", "--rank-multiple", "1", "--epochs", "0",
            "--no-latency", "-o", "out.onnx", "--report", "r.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert {row["name"] for row in report["layers"] if row["status"] == "factorized"} == {"conv3", "fc"}
    x = np.random.default_rng(2).standard_normal((4, 3, 16, 16)).astype(np.float32)
    assert np.max(np.abs(_outputs(tmp_path / "out.onnx", x) - _outputs(src, x))) < 1e-4
    assert report["numerics"]["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("args, needs", [
    (("--epochs", "1", "--data", "digits", "--ranks", "0.5"), "dataset"),
    (("--calib", "x.npz", "--ranks", "0.5"), "calib"),
    (("--target-params", "0.5"), "RENE rank search"),
])
def test_runs_that_need_torch_keep_the_error_with_a_hint(model_file, tmp_path, args, needs):
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 3, 16, 16), np.float32))
    r = cli("compress", model_file, *args, "-o", "out.onnx", cwd=tmp_path)
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: m.onnx: onnx2torch has no converter for ThresholdedRelu"), line
    assert needs in line and "--data-free with --ranks FRACTION or --target-params" in line and "--epochs 0" in line
    assert not (tmp_path / "out.onnx").exists()


def test_a_converter_that_fails_falls_back_too(tmp_path, monkeypatch):
    """onnx2torch.convert raising (e.g. its BatchNorm converter on an input of unknown rank) is an import failure."""
    import onnx2torch

    def fail(*a, **k):
        raise NotImplementedError("BatchNorm operation with spatial rank == -2 is not implemented")

    src = make_model(tmp_path / "relu.onnx", act="Relu")
    monkeypatch.setattr(onnx2torch, "convert", fail)
    r = cli("compress", src, "--data-free", "--ranks", "0.5", "--epochs", "0", "--no-latency", "-o", "out.onnx",
            cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "onnx2torch cannot import the graph: NotImplementedError: BatchNorm operation" in r.output


def test_search_command_weights_only(model_file, tmp_path):
    """``rene-onnx search`` on the same graph: a weights-only plan that ``compress --ranks`` takes."""
    r = cli("search", model_file, "--data-free", "--target-params", "0.5", "--rank-multiple", "1", "-o", "plan.json",
            cwd=tmp_path)
    assert r.exit_code == 0, r.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["meta"]["search"]["weights_only"] and abs(plan["meta"]["search"]["params_fraction"] - 0.5) < 0.03
    r = cli("compress", model_file, "--data-free", "--ranks", "plan.json", "--epochs", "0", "--no-latency",
            "-o", "out.onnx", cwd=tmp_path)
    assert r.exit_code == 0, r.output


def test_python_api_hint_names_python_options(model_file):
    import rene_onnx
    from rene_onnx.errors import LoadError

    with pytest.raises(LoadError, match=r"data_free=True with ranks='FRACTION'.*epochs=0"):
        rene_onnx.compress(model_file, calib="none.npz", ranks=0.5)
