"""``rene-onnx compress --min-fidelity X``: the most compressed model that meets X on the held-out --calib
inputs, a constraint on a given target, exit 1 with the miss when none meets it, and the bad inputs."""
from __future__ import annotations

import json

import pytest
from cli_inproc import cli
from fidelity_cases import marked_calib, tiny_classifier_onnx

FAST = ("--epochs", "1", "--batch-size", "16", "--search-steps", "5", "--no-latency")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("floor")
    tiny_classifier_onnx(d / "a.onnx")
    marked_calib(d / "calib.npz")
    marked_calib(d / "few.npz", n=12, groups=None)
    return d


def test_floor_without_target_delivers_the_most_compressed_that_meets_it(folder):
    r = cli("compress", "a.onnx", "--calib", "calib.npz", "--min-fidelity", "0.5", *FAST, "-o", "ok.onnx",
            "--report", "ok.json", cwd=folder)
    assert r.exit_code == 0, r.output
    rep = json.loads((folder / "ok.json").read_text())
    floor = rep["meta"]["min_fidelity"]
    assert floor["metric"] == "top1_agreement" and floor["inputs"] == "calib-heldout" and len(floor["tries"]) == 4
    met = [t for t in floor["tries"] if t["met"]]
    assert met and all(t["fidelity"] >= 0.5 for t in met)
    assert floor["chosen"]["target_params"] == min(t["target_params"] for t in met)  # the most compressed
    assert rep["numerics"]["calib"]["top1_agreement"] == floor["chosen"]["fidelity"] >= 0.5
    kept = rep["params"]["after"] / rep["params"]["before"]
    assert kept == pytest.approx(floor["chosen"]["params_kept"])
    assert "calib-heldout" in r.output and "never used for search or fine-tuning" in r.output


def test_floor_missed_exits_1_and_says_by_how_much(folder):
    r = cli("compress", "a.onnx", "--calib", "calib.npz", "--min-fidelity", "1.0", "--target-params", "0.1",
            *FAST, "-o", "miss.onnx", cwd=folder)
    assert r.exit_code == 1, r.output
    line = r.output.strip().splitlines()[-1]
    assert "--min-fidelity" in line and "misses --min-fidelity 1 by" in line and "--target-params 0.1" in line
    assert not (folder / "miss.onnx").exists()


@pytest.mark.parametrize("args, says", [
    (("--calib", "calib.npz", "--min-fidelity", "0"), "(0, 1]"),
    (("--calib", "calib.npz", "--min-fidelity", "1.5"), "(0, 1]"),
    (("--calib", "calib.npz", "--data-free", "--min-fidelity", "0.9"), "--data-free"),
    (("--min-fidelity", "0.9",), "--calib"),
    (("--calib", "few.npz", "--min-fidelity", "0.9"), "give at least 20 samples"),
    (("--calib", "few.npz",), "give at least 20 samples"),
    (("--calib", "calib.npz", "--holdout", "1"), "[0, 1)"),
])
def test_bad_input_gets_one_line_exit_2_and_nothing_written(folder, args, says):
    r = cli("compress", "a.onnx", *args, "--target-params", "0.5", *FAST, "-o", "bad.onnx", "--report", "bad.json",
            cwd=folder)
    assert r.exit_code == 2, r.output
    assert says in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (folder / "bad.onnx").exists() and not (folder / "bad.json").exists()
