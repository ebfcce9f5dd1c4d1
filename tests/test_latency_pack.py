"""benchmarks/latency.py's pack path (what the GPU runs use): strip -> refill -> measure-pack, batched, device I/O."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper as h, numpy_helper

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("latency_bench", ROOT / "benchmarks" / "latency.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def _mlp(widths: list[int]) -> onnx.ModelProto:
    """x[N, widths[0]] -> MatMul chain; batch dim symbolic like the packed zoo models."""
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        inits.append(numpy_helper.from_array(rng.standard_normal((a, b)).astype(np.float32), f"W{i}"))
        nodes.append(h.make_node("MatMul", [cur, f"W{i}"], [f"h{i}"], name=f"mm{i}"))
        cur = f"h{i}"
    g = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", widths[0]])],
                     [h.make_tensor_value_info(cur, TensorProto.FLOAT, ["batch", widths[-1]])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


def test_strip_refill_round_trip(bench):
    m = _mlp([64, 64, 8])  # W0: 4096 floats (stripped), W1: 512 (< min_size 1024, kept)
    stripped = bench.strip_weights(m)
    assert stripped.ByteSize() < m.ByteSize() / 4
    filled = bench.refill_weights(stripped)
    onnx.checker.check_model(filled, full_check=True)
    (w0, w1), (f0, f1) = m.graph.initializer, filled.graph.initializer
    assert tuple(f0.dims) == (64, 64) and f0.data_type == w0.data_type
    assert not np.array_equal(numpy_helper.to_array(w0), numpy_helper.to_array(f0))  # random, not the original
    assert np.array_equal(numpy_helper.to_array(w1), numpy_helper.to_array(f1))


def test_batched_feeds(bench, tmp_path):
    npz = tmp_path / "f.npz"
    np.savez(npz, x=np.arange(6, dtype=np.float32).reshape(1, 6))
    assert bench.batched_feeds(npz, 1, tmp_path) == str(npz)
    with np.load(bench.batched_feeds(npz, 4, tmp_path)) as f:
        assert f["x"].shape == (4, 6) and np.array_equal(f["x"][3], np.arange(6, dtype=np.float32))
    with pytest.raises(ValueError, match="batch must be >= 1"):
        bench.batched_feeds(npz, 0, tmp_path)


def test_measure_pack_batched_device_io(bench, tmp_path):
    """A hand-made pack of one case (a 4x narrower chain) timed at batch 16 with I/O binding."""
    pack = tmp_path / "pack"
    pack.mkdir()
    dense, thin = _mlp([512, 512, 512]), _mlp([512, 32, 512])
    onnx.save(bench.strip_weights(dense), pack / "mlp.onnx")
    onnx.save(bench.strip_weights(thin), pack / "mlp_svd.onnx")
    np.savez(pack / "mlp_feeds.npz", x=np.ones((1, 512), np.float32))
    before, after = (2 * 512 * 512, 2 * 512 * 512), (2 * 512 * 32, 2 * 512 * 32)
    variant = {"macs": {"before": before[0], "after": after[0]}, "params": {"before": before[1], "after": after[1]}}
    case = {"model": "mlp", "method": "svd", "fraction": 0.25, "rank_multiple": 1, "tag": "mlp_svd",
            "variants": {"full": variant}, "pack_models": ["mlp.onnx", "mlp_svd.onnx"]}
    (pack / "manifest.json").write_text(json.dumps({"cases": [case], "rank_multiple_study": None}))
    out = tmp_path / "out.json"
    argv = ["--models", "mlp", "measure-pack", str(pack), "--threads", "1", "--batch", "16", "--repeats", "15",
            "--warmup", "2", "--device-io", "--out", str(out)]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["batch"] == 16 and res["device_io"] is True and res["provider"] == "cpu"
    (row,) = res["cases"]
    full = row["variants"]["full"]
    assert full["macs"]["ratio"] == pytest.approx(16.0)
    assert full["latency"]["1"]["ratio"] > 2  # 16x fewer MACs at batch 16: clearly faster even on a busy box
    # --models filters the manifest's cases
    assert bench.main(["--models", "resnet18", *argv[2:]]) == 0
    assert json.loads(out.read_text())["cases"] == []
