"""benchmarks/real_models.py in a tiny configuration, run as the lead runs it (a subprocess).

Real MobileNetV2 weights and real photos; few crops, given ranks, no fine-tuning, few timed runs. Checks
the split by photo, that each row either has numbers or the CLI's error (never both), the top-1
agreement recomputed here from the files the script left, and the README block written from the JSON.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "real_models.py"
WEIGHTS = ROOT / ".assets" / "mobilenet_v2-b0353104.pth"


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: xi[None]})[0] for xi in x])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} missing (see ASSETS.md: the official MobileNetV2 weights)")
    tmp = tmp_path_factory.mktemp("real_models")
    work, out = tmp / "work", tmp / "results.json"
    cmd = [sys.executable, str(SCRIPT), "--rows", "original,default,min-fidelity,int8", "--per-photo", "2",
           "--held-out", "0.3", "--repeats", "5", "--warmup", "2", "--int8-calib", "8",
           "--extra=--ranks=0.9", "--extra=--epochs=0", "--extra=--no-latency", "--extra=--no-latency-aware",
           "--work", str(work), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, work, out, json.loads(out.read_text())


def test_rows_split_and_numbers(run):
    _, work, _, res = run
    data = res["data"]
    assert set(data["calib_photos"]).isdisjoint(data["heldout_photos"])
    with np.load(work / "calib.npz") as z:  # the crops under the graph input's name, and each crop's photo
        names = [k for k in z.files if k != "groups"]
        assert len(names) == 1 and len(z["groups"]) == len(z[names[0]])
        assert data["calib_crops"] == len(z[names[0]]) == 2 * len(data["calib_photos"])
        assert len(set(z["groups"].tolist())) == len(data["calib_photos"])
    assert data["heldout_crops"] == len(np.load(work / "heldout.npy")) == 2 * len(data["heldout_photos"])
    for key in ("commit", "command", "date"):
        assert res[key]
    assert res["machine"]["cores"] >= 1 and isinstance(res["machine"]["avx2"], bool)

    rows = {r["row"]: r for r in res["rows"]}
    assert list(rows) == ["original", "default", "min-fidelity", "int8"]
    for r in rows.values():
        assert ("fidelity" in r) != ("error" in r), r  # numbers or the CLI's error, never both
        if "error" in r:
            assert r["exit_code"] != 0 and r["error"]
            continue
        assert r["fidelity"]["n"] == data["heldout_crops"] and r["fidelity"]["inputs"].startswith("held-out")
        assert 0 <= r["fidelity"]["top1_agreement"] <= 1 and 0 <= r["fidelity"]["top5_overlap"] <= 1
        assert r["latency"]["median_ms"] > 0 and r["latency"]["runs"] == 5
        assert r["tool_inputs"]
    orig = rows["original"]
    assert orig["fidelity"]["top1_agreement"] == 1.0 and orig["latency"]["speedup"] == 1.0
    assert 3.4e6 < orig["params"] < 3.6e6 and 2.9e8 < orig["macs"] < 3.1e8  # MobileNetV2: 3.5 M params, 300 M MACs
    assert rows["default"]["exit_code"] == 0 and rows["default"]["params_ratio"] < 0.99
    assert rows["default"]["command"].startswith("rene-onnx compress mobilenet_v2.onnx")
    assert rows["int8"]["file_bytes"] < 0.5 * orig["file_bytes"]


def test_top1_recomputed_from_files(run):
    _, work, _, res = run
    held = np.load(work / "heldout.npy")
    ref = _logits(work / "mobilenet_v2.onnx", held).argmax(1)
    for r in res["rows"]:
        if "fidelity" in r:
            agree = float(np.mean(_logits(Path(r["path"]), held).argmax(1) == ref))
            assert r["fidelity"]["top1_agreement"] == pytest.approx(agree)


def test_readme_block_from_json(run):
    tmp, _, out, res = run
    readme = tmp / "README.md"
    readme.write_text("# x\n\n## Results\n\ntext\n\n## Docker\n\nrest\n")
    for _ in range(2):  # a second write replaces the block
        cmd = [sys.executable, str(SCRIPT), "--readme-only", "--out", str(out), "--readme", str(readme)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    text = readme.read_text()
    assert text.count("<!-- real-models:start -->") == 1 and text.index("real-models:end") < text.index("## Docker")
    assert text.startswith("# x\n\n## Results\n\ntext\n") and text.endswith("## Docker\n\nrest\n")
    for r in res["rows"]:
        assert r["label"] in text
        if "error" in r:
            assert "failed (exit" in text
    assert f"| {res['data']['heldout_crops']} |" in text
