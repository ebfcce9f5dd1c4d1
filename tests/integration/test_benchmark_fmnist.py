"""benchmarks/fashion_mnist.py: the uniform baseline's size matching (fast) and the script's plumbing on a
tiny Fashion-MNIST subset (slow: trains, searches, fine-tunes and rewrites for real)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from rene_onnx import models
from rene_onnx.decompose import ranks as R
from rene_onnx.engine.profile import layer_shapes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fashion_mnist_bench", ROOT / "benchmarks" / "fashion_mnist.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def shapes():
    model = models.build("resnet20_fmnist").eval()
    return layer_shapes(model, torch.zeros(models.input_shape("resnet20_fmnist")))


def _removed(plan, shapes) -> int:
    return sum(R.dense_params(shapes[lp.name]) - R.factorized_params(lp.method, shapes[lp.name], lp.ranks)
               for lp in plan.factorized())


@pytest.mark.parametrize("target", range(150_000, 230_001, 8_000))
def test_uniform_plan_matches_the_removed_parameters_with_one_fraction(bench, shapes, target):
    total = sum(R.dense_params(s) for s in shapes.values())
    plan, frac, removed = bench.uniform_plan(shapes, target, keep_dense=("conv1",))
    assert removed == _removed(plan, shapes)
    assert abs(removed - target) <= 0.01 * (total - target)  # the kept parameters agree within 1%
    assert list(plan.layers) == list(shapes)  # model order, every layer
    assert plan.layers["conv1"].method == "dense" and "uniform" in plan.layers["conv1"].reason
    # one fraction: every factorized layer keeps about the same share of its parameters
    kept = [R.factorized_params(lp.method, shapes[lp.name], lp.ranks) / R.dense_params(shapes[lp.name])
            for lp in plan.factorized()]
    assert len(kept) == len(shapes) - 1
    assert max(abs(k - frac) for k in kept) < 0.1, kept
    assert 0.1 < frac < 0.5


def test_uniform_plan_without_exceptions_factorizes_the_stem(bench, shapes):
    plan, _, _ = bench.uniform_plan(shapes, 190_000)
    assert plan.layers["conv1"].method == "tt" and plan.layers["conv1"].ranks == (1, 1)


def test_bad_config_is_a_value_error(bench):
    with pytest.raises(ValueError, match="variants"):
        bench.BenchConfig(variants=("tt", "svd"))
    with pytest.raises(ValueError, match="RENE\\(TT\\)"):
        bench.BenchConfig(variants=("cp", "uniform"))
    with pytest.raises(ValueError, match="target_params"):
        bench.BenchConfig(target_params=1.5)
    assert bench.main(["--variants", "uniform", "--out", "/no/such/dir/x.json"]) == 2


@pytest.mark.slow
def test_smoke_run_writes_results_checkpoint_and_plot(bench, tmp_path):
    from rene_onnx.data import load_dataset

    try:
        load_dataset("fashion-mnist")
    except ValueError as e:
        pytest.skip(str(e))
    out, png, ckpt = tmp_path / "results.json", tmp_path / "ranks.png", tmp_path / "fm.pt"
    assert bench.main(["--smoke", "--variants", "tt,uniform", "--out", str(out), "--png", str(png),
                       "--checkpoint", str(ckpt)]) == 0
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
    assert bench.ensure_checkpoint(bench.BenchConfig(smoke=True), None, ckpt, False, "again") == info
    assert ckpt.stat().st_mtime_ns == mtime
