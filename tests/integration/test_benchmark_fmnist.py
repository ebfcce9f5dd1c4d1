"""benchmarks/fashion_mnist.py as a user runs it: bad settings are one error line, and (slow) the smoke run
on a tiny Fashion-MNIST subset trains, searches, fine-tunes and rewrites for real, then reuses its checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(*argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fashion_mnist.py"), *argv],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("argv, message", [
    (["--variants", "tt,svd"], "variants"),
    (["--variants", "cp,uniform"], "RENE(TT)"),
    (["--target-params", "1.5"], "target_params"),
    (["--variants", "tt", "--out", "/no/such/dir/x.json"], "output folder does not exist"),
])
def test_bad_settings_are_one_error_line(argv, message):
    r = _script(*argv)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_smoke_run_writes_results_checkpoint_and_plot(tmp_path):
    from rene_onnx.data import load_dataset

    try:
        load_dataset("fashion-mnist")
    except ValueError as e:
        pytest.skip(str(e))
    out, png, ckpt = tmp_path / "results.json", tmp_path / "ranks.png", tmp_path / "fm.pt"
    r = _script("--smoke", "--variants", "tt,uniform", "--out", str(out), "--png", str(png), "--checkpoint",
                str(ckpt), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(out.read_text())
    info = json.loads(ckpt.with_suffix(".json").read_text())
    assert info["sizes"] == {"train": 512, "calib": 256, "test": 512} and 0 <= info["test_top1"] <= 100
    assert set(doc["variants"]) == {"tt", "uniform"}
    tt, uni = doc["variants"]["tt"], doc["variants"]["uniform"]
    assert doc["original"]["params"] == tt["params"]["before"] > 250_000
    assert tt["params_reduction_pct"] >= 69.0  # target_params 0.29 of the torch model (BatchNorm counted)
    assert abs(uni["params_vs_tt_pct"]) <= 1.0
    assert tt["search_seconds"] > 0 and uni["search_seconds"] is None
    for v in (tt, uni):
        assert 0 <= v["test_top1_before_ft"] <= 100 and 0 <= v["test_top1_after_ft"] <= 100
        assert v["finetune"]["steps"] == 2
        assert v["numerics"]["vs_torch_max_abs"] < 1e-3  # the shipped ONNX graph computes the torch student
        assert v["macs_reduction_pct"] > 0
    assert doc["summary"]["original_test_top1"] == doc["original"]["test_top1"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a later run reuses the cached checkpoint (no retraining)
    mtime = ckpt.stat().st_mtime_ns
    r = _script("--smoke", "--variants", "tt", "--out", str(tmp_path / "again.json"), "--png",
                str(tmp_path / "again.png"), "--checkpoint", str(ckpt), timeout=900)
    assert r.returncode == 0 and "(cached)" in r.stdout + r.stderr, r.stderr[-3000:]
    assert ckpt.stat().st_mtime_ns == mtime and json.loads(ckpt.with_suffix(".json").read_text()) == info
