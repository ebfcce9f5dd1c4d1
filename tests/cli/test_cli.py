"""The CLI end to end, as a user runs it: real zoo models, the bundled digits checkpoint, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from rene_onnx import models as zoo

CLI = [sys.executable, "-m", "rene_onnx.cli.main"]


def run(*args, cwd=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def run_inproc(*args, cwd):
    """In-process run (fast) for the error paths: exit code, stderr, no traceback."""
    from click.testing import CliRunner

    from rene_onnx.cli.main import cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    res.returncode = res.exit_code
    return res


@pytest.fixture(scope="module")
def resnet20_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet20.pt"
    torch.manual_seed(0)
    torch.save(zoo.build("resnet20").state_dict(), path)
    return path


def test_compress_zoo_tt_with_weights_and_report(tmp_path, resnet20_weights):
    out, rep = tmp_path / "out.onnx", tmp_path / "report.json"
    r = run("compress", "resnet20", "--weights", str(resnet20_weights), "--method", "tt", "--ranks", "0.25",
            "--no-latency-aware", "-o", str(out), "--report", str(rep), "--repeats", "5")
    assert r.returncode == 0, r.stderr
    m = onnx.load(out)
    onnx.checker.check_model(m, full_check=True)
    assert m.ir_version <= 10
    report = json.loads(rep.read_text())
    for key in ("params", "macs"):
        assert report[key]["after"] < report[key]["before"]
        # ONNX-side and torch-side counts agree
        assert report[key]["after"] == report[key]["torch_after"]
        assert report[key]["before"] == report[key]["torch_before"]
    assert report["latency_ms"]["provider"] in ("cpu", "CPUExecutionProvider")
    assert report["latency_ms"]["before"] > 0 and report["latency_ms"]["after"] > 0
    assert report["numerics"]["max_abs_diff"] < 1e-3
    tt = [l for l in report["layers"] if l["method"] == "tt"]
    assert len(tt) >= 18
    for layer in report["layers"]:
        assert set(layer) >= {"name", "op", "method", "rank", "params_before", "params_after", "macs_before",
                              "macs_after", "status", "reason"}
        if layer["status"] == "dense":
            assert layer["reason"]
    # the per-layer numbers add up to the whole-model change
    saved = sum(l["params_before"] - l["params_after"] for l in report["layers"])
    assert saved == report["params"]["before"] - report["params"]["after"]
    assert "Conv" in r.stdout or "conv" in r.stdout  # the per-layer table was printed


def test_compress_cp_random_init_says_so(tmp_path):
    out = tmp_path / "cp.onnx"
    r = run("compress", "resnet20", "--method", "cp", "--ranks", "0.15", "-o", str(out), "--no-latency")
    assert r.returncode == 0, r.stderr
    assert "random init" in r.stderr
    onnx.checker.check_model(onnx.load(out), full_check=True)


def test_compress_module_callable_with_json_plan(tmp_path):
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "my_module.py").write_text(
        "import torch.nn as nn\n"
        "def build_model():\n"
        "    return nn.Sequential(nn.Conv2d(3, 32, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 64),\n"
        "                         nn.ReLU(), nn.Linear(64, 10))\n")
    sys.path.insert(0, str(tmp_path))
    try:
        from my_pkg.my_module import build_model
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    torch.save(build_model().state_dict(), tmp_path / "w.pt")
    (tmp_path / "plan.json").write_text(json.dumps({"3": 8, "5": 4}))
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    r = subprocess.run([*CLI, "compress", "my_pkg.my_module:build_model", "--weights", "w.pt", "--input-shape",
                        "1,3,8,8", "--method", "svd", "--ranks", "plan.json", "-o", str(out), "--report", str(rep),
                        "--no-latency"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    layers = {l["name"]: l for l in json.loads(rep.read_text())["layers"]}
    assert layers["3"]["rank"] == [8] and layers["5"]["rank"] == [4]
    assert layers["0"]["status"] == "dense" and layers["0"]["reason"]


@pytest.mark.parametrize("args, code, needle", [
    (["compress", "nosuchnet", "-o", "x.onnx"], 2, "unknown model"),
    (["compress", "resnet20", "--weights", "missing.pt", "-o", "x.onnx"], 2, "not found"),
    (["compress", "resnet20", "--ranks", "-0.5", "-o", "x.onnx"], 2, "ranks"),
    (["compress", "resnet20", "--ranks", "plan.json", "-o", "x.onnx"], 2, "not found"),
    (["compress", "resnet20", "-o", "no/such/dir/x.onnx"], 2, "does not exist"),
])
def test_bad_input_one_line_no_output(tmp_path, args, code, needle):
    r = run_inproc(*args, cwd=tmp_path)
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.tmp"))


def test_bad_state_dict_and_bad_plan(tmp_path):
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    r = run_inproc("compress", "resnet20", "--weights", "bad.pt", "-o", "x.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "does not match" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "plan.json").write_text(json.dumps({"layer9.conv": 4}))
    r = run_inproc("compress", "resnet20", "--ranks", "plan.json", "-o", "x.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "layer9.conv" in r.stderr
    (tmp_path / "plan0.json").write_text(json.dumps({"conv1": 0}))
    r = run_inproc("compress", "resnet20", "--ranks", "plan0.json", "-o", "x.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "positive" in r.stderr
    r = run("--debug", "compress", "resnet20", "--ranks", "plan0.json", "-o", "x.onnx", cwd=tmp_path)
    assert "Traceback" in r.stderr
    assert not list(tmp_path.glob("*.onnx"))


def test_validate_pair_side_by_side(tmp_path, resnet20_weights):
    out, rep = tmp_path / "c.onnx", tmp_path / "v.json"
    r = run("compress", "resnet20", "--weights", str(resnet20_weights), "--ranks", "0.5", "-o", str(out),
            "--no-latency")
    assert r.returncode == 0, r.stderr
    from rene_onnx.load import load_torch

    original = tmp_path / "o.onnx"
    onnx.save(load_torch("resnet20", resnet20_weights).onnx_model, original)
    r = run_inproc("validate", str(original), str(out), "--repeats", "5", "--report", str(rep), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    v = json.loads(rep.read_text())
    assert v["params"]["after"] < v["params"]["before"] and v["macs"]["after"] < v["macs"]["before"]
    assert 0 < v["numerics"]["max_abs_diff"] and v["latency_ms"]["before"] > 0
    assert v["latency_ms"]["device_io"] is False
    # --device-io: I/O binding (on the CPU the same work; on a GPU no host <-> device copies in the timing)
    r = run_inproc("validate", str(original), str(out), "--repeats", "3", "--device-io", "--report", str(rep),
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lat = json.loads(rep.read_text())["latency_ms"]
    assert lat["device_io"] is True and lat["before"] > 0 and lat["after"] > 0
    r = run_inproc("validate", str(original), "missing.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr


def test_latency_aware_keeps_slower_chains_dense(tmp_path, resnet20_weights):
    rep = tmp_path / "r.json"
    r = run("compress", "resnet20", "--weights", str(resnet20_weights), "--ranks", "0.3", "--provider", "cpu",
            "--repeats", "5", "-o", str(tmp_path / "o.onnx"), "--report", str(rep))
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    profiled = [l for l in report["layers"] if l.get("latency_us_before") is not None]
    assert len(profiled) >= 18
    for l in profiled:
        if l["status"] == "dense":  # kept dense for speed: its chain was measured slower
            assert l["reason"].startswith("kept dense") and l["latency_us_after"] >= l["latency_us_before"]
        else:
            assert l["latency_us_after"] < l["latency_us_before"]
    # torch and ONNX still compute and count the same model
    assert report["params"]["after"] == report["params"]["torch_after"]
    assert report["numerics"]["max_abs_diff"] < 1e-3


@pytest.mark.parametrize("dynamo", [False, True])
def test_compress_onnx_file_from_either_exporter(tmp_path, dynamo):
    model = zoo.build("digits_resnet", pretrained=True).eval()
    src = tmp_path / "in.onnx"
    kwargs = dict(dynamo=True, external_data=False) if dynamo else dict(dynamo=False, opset_version=13)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 1, 8, 8),), str(src), input_names=["x"], output_names=["y"], **kwargs)
    before = src.read_bytes()
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    r = run("compress", str(src), "--data-free", "--ranks", "0.5", "--data", "digits", "--epochs", "0", "--repeats",
            "5", "--no-latency-aware", "-o", str(out), "--report", str(rep))
    assert r.returncode == 0, r.stderr
    assert src.read_bytes() == before  # the input is never modified
    report = json.loads(rep.read_text())
    assert report["params"]["after"] < 0.75 * report["params"]["before"]
    assert report["numerics"]["max_abs_diff"] < 1e-3
    assert report["accuracy"]["before"] > 97
    m = onnx.load(out)
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["x"] and [o.name for o in m.graph.output] == ["y"]
    r = run_inproc("validate", str(src), str(out), "--data", "digits", "--repeats", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_bad_onnx_inputs(tmp_path):
    (tmp_path / "trunc.onnx").write_bytes(b"\x08\x07\x12\x04junk")
    r = run_inproc("compress", "trunc.onnx", "-o", "x.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
    r = run_inproc("compress", "resnet20", "--ranks", "0.5", "--target-params", "0.3", "-o", "x.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "conflict" in r.stderr
    r = run_inproc("compress", "resnet20", "--target-params", "1.5", "-o", "x.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "(0, 1)" in r.stderr
    assert not list(tmp_path.glob("x.onnx*"))


def test_data_that_does_not_fit_the_model(tmp_path):
    # digits images are 1x8x8; resnet20 wants 3x32x32
    r = run_inproc("compress", "resnet20", "--data", "digits", "--target-params", "0.3", "-o", "x.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "expects" in r.stderr, r.stderr
    # right image size, wrong number of classes: a 3-class ImageFolder of 8x8 grey images for the 10-class demo
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(tmp_path / "imgs" / c / f"{i}.png")
    r = run_inproc("compress", "digits_resnet", "--data", "imgs", "--target-params", "0.3", "-o", "x.onnx",
                   cwd=tmp_path)
    assert r.returncode == 2 and "classes" in r.stderr, r.stderr
    (tmp_path / "empty").mkdir()
    r = run_inproc("compress", "digits_resnet", "--data", "empty", "-o", "x.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "error:" in r.stderr
    assert not list(tmp_path.glob("x.onnx*"))


def test_outputs_get_normal_permissions(tmp_path):
    from rene_onnx.files import default_file_mode
    from rene_onnx.files import save_onnx as save_onnx_atomic
    from rene_onnx.plan import RankPlan

    RankPlan().save(tmp_path / "p.json")
    m = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []), ir_version=10)
    save_onnx_atomic(m, tmp_path / "m.onnx")
    for f in ("p.json", "m.onnx"):
        assert (tmp_path / f).stat().st_mode & 0o777 == default_file_mode()
