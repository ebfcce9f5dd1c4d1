"""Tucker-2 end to end: the CLI with fixed and searched ranks, fine-tuning on real data, and the rewrite of the
original ONNX graph at full rank (== the original to float error) and at low rank (== the torch student)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import torch

from rene_onnx import pipeline
from rene_onnx.decompose import ranks as R
from rene_onnx.load import load_torch
from rene_onnx.plan import LayerPlan, RankPlan
from rene_onnx.validate.numerics import run_onnx

CLI = [sys.executable, "-m", "rene_onnx.cli.main"]


def run(*args, cwd):
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def check_report(path, out):
    onnx.checker.check_model(onnx.load(out), full_check=True)
    report = json.loads(path.read_text())
    for key in ("params", "macs"):  # the ONNX counter and the torch counter agree on the rewrite
        assert report[key]["after"] == report[key]["torch_after"] < report[key]["before"]
    assert report["numerics"]["max_abs_diff"] < 1e-3  # onnxruntime == the torch student
    return report


def test_cli_tucker2_with_fixed_ranks(tmp_path):
    run("compress", "resnet20", "--method", "tucker2", "--ranks", "0.5", "--rank-multiple", "1", "--epochs", "0", "--no-latency",
        "-o", "out.onnx", "--report", "rep.json", cwd=tmp_path)
    report = check_report(tmp_path / "rep.json", tmp_path / "out.onnx")
    methods = {l["name"]: l["method"] for l in report["layers"]}
    assert sum(m == "tucker2" for m in methods.values()) == 19  # every 3x3 conv
    assert methods["fc"] == "svd" and methods["layer2.0.downsample.0"] == "svd"  # 1x1 / Linear: svd
    names = [n.name for n in onnx.load(tmp_path / "out.onnx").graph.node]
    assert any(n.endswith("/tucker2_core") for n in names)
    saved = sum(l["params_before"] - l["params_after"] for l in report["layers"])
    assert saved == report["params"]["before"] - report["params"]["after"]
    assert 0.45 < report["params"]["after"] / report["params"]["before"] < 0.56


def test_cli_tucker2_searched(tmp_path):
    run("compress", "resnet20", "--method", "tucker2", "--target-params", "0.5", "--data-free", "--epochs", "0",
        "--no-latency", "-o", "s.onnx", "--report", "s.json", cwd=tmp_path)
    report = check_report(tmp_path / "s.json", tmp_path / "s.onnx")
    assert abs(report["params"]["after"] / report["params"]["before"] - 0.5) < 0.03
    searched = report["search"]["layers"]
    kxk = [l for l in report["layers"] if l["method"] == "tucker2"]
    assert kxk and all(searched[l["name"]]["method"] == "tucker2" for l in kxk)
    assert report["search"]["mode"] == "data-free"


def test_cli_tucker2_finetunes_on_digits(tmp_path):
    run("compress", "digits_resnet", "--method", "tucker2", "--ranks", "0.6", "--epochs", "2", "--no-latency",
        "-o", "d.onnx", "--report", "d.json", cwd=tmp_path)
    report = check_report(tmp_path / "d.json", tmp_path / "d.onnx")
    acc = report["accuracy"]
    assert any(l["method"] == "tucker2" for l in report["layers"])
    # fine-tuning (CE + distillation, the original as teacher) recovers much of what the decomposition lost
    assert acc["before"] > 97 and acc["after_finetune"] > acc["after_decomposition"] + 20


def _handle_and_plan(full: bool):
    torch.manual_seed(0)
    handle = load_torch("resnet20_fmnist")
    shapes = pipeline.layer_shapes(handle)
    plan = RankPlan()
    for name, s in shapes.items():
        if "tucker2" in R.supported_methods(s):
            ranks = (s.group_out, s.group_in) if full else (max(2, s.group_out // 4), max(1, s.group_in // 4))
            plan.add(LayerPlan(name, "tucker2", ranks))
    return handle, plan


def test_rewrite_of_the_original_graph_at_full_and_low_rank():
    for full in (True, False):
        handle, plan = _handle_and_plan(full)
        student = pipeline.factorize(handle, plan)
        done = pipeline.rewrite(handle, student)
        onnx.checker.check_model(done.model, full_check=True)
        assert all(r.status == "factorized" for r in done.records) and len(done.records) == len(plan.layers)
        x = handle.example_input(0)
        feeds = handle.feeds(x)
        (orig,), (new,) = run_onnx(handle.onnx_model, feeds, "cpu"), run_onnx(done.model, feeds, "cpu")
        with torch.no_grad():
            want = handle.deployable(student)(x).numpy()
        scale = float(np.abs(orig).max())
        assert float(np.abs(new - want).max()) < 1e-4 * scale  # onnxruntime == the torch student
        if full:
            assert float(np.abs(new - orig).max()) < 1e-4 * scale  # full rank: the original, to float error
        else:
            assert float(np.abs(new - orig).max()) > 1e-2 * scale  # really low rank
