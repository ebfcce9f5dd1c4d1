"""``compress --compare-int8``: onnxruntime INT8 of the original, measured in the same run beside the compressed model."""
from __future__ import annotations

import json

from cli_inproc import cli
from onnx_cases import small_classifier


def test_compare_int8_reports_the_int8_baseline_beside_the_compressed_model(tmp_path):
    """--compare-int8 (on by default with --calib for a conv model): onnxruntime INT8 of the original, calibrated on
    the used calib part, timed in the same run and compared on the same held-out inputs; the summary names it, and
    says when it is the better tool."""
    from rene_onnx.report.report import Report

    small_classifier(tmp_path / "m.onnx", hw=(64, 64))
    assert cli("inputs", "m.onnx", "-o", "calib.npz", "--per-photo", "3", cwd=tmp_path).exit_code == 0
    r = cli("compress", "m.onnx", "--calib", "calib.npz", "--ranks", "0.5", "--epochs", "0",
            "--repeats", "20", "-o", "small.onnx", "--report", "r.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "(onnxruntime INT8 of the original)" in r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    base = rep["meta"]["int8_baseline"]
    assert base["settings"]["mode"] == "static" and base["settings"]["per_channel"]
    assert base["size_bytes"]["int8"] < base["size_bytes"]["original"] and base["speedup"] > 0
    assert "int8_ms" not in rep["latency_ms"]  # the baseline's time is in its own section
    calib = rep["numerics"]["calib"]
    assert base["fidelity"]["inputs"] == calib["inputs"] == "calib-heldout" and base["fidelity"]["n"] == calib["n"]
    assert 0.0 <= base["fidelity"]["top1_agreement"] <= 1.0
    verdict = Report.load_json(tmp_path / "r.json").int8_comparison()
    assert verdict is not None and verdict["inputs"] == f"calib-heldout, n={calib['n']}"
    better = any(w.startswith("onnxruntime INT8 of the original is faster") for w in rep["warnings"])
    assert better == verdict["int8_better"]

    r = cli("compress", "m.onnx", "--data-free", "--ranks", "0.5", "--compare-int8", "-o", "x.onnx", cwd=tmp_path)
    assert r.exit_code == 2 and "--compare-int8" in r.output and "--calib" in r.output
    r = cli("compress", "m.onnx", "--calib", "calib.npz", "--ranks", "0.5", "--epochs", "0", "--no-compare-int8",
            "--repeats", "5", "-o", "y.onnx", "--report", "y.json", cwd=tmp_path)
    assert r.exit_code == 0 and "int8_baseline" not in json.loads((tmp_path / "y.json").read_text())["meta"]


def test_the_int8_verdict_needs_both_faster_and_as_faithful():
    from rene_onnx.report.report import Report

    def report(int8_speedup, int8_agree, agree=0.9):
        return Report(latency_ms={"before": 2.0, "after": 1.0}, numerics={"calib": {
            "inputs": "calib-heldout", "n": 40, "top1_agreement": agree}},
            meta={"model": "m.onnx", "calib": {"path": "c.npz"}, "int8_baseline": {
                "speedup": int8_speedup, "smaller": 3.9, "fidelity": {"inputs": "calib-heldout", "n": 40,
                                                                      "top1_agreement": int8_agree}}})

    assert report(2.5, 0.95).int8_comparison()["int8_better"]
    assert "rene-onnx export m.onnx --to int8 --calib c.npz" in report(2.5, 0.95).warnings[-1]
    assert not report(2.5, 0.85).int8_comparison()["int8_better"] and not report(2.5, 0.85).warnings
    assert not report(1.5, 0.95).int8_comparison()["int8_better"]
    assert Report(latency_ms={"before": 2.0, "after": 1.0}).int8_comparison() is None
