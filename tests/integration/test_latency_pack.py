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

ROOT = Path(__file__).resolve().parents[2]


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
    assert full["latency"]["1"]["ratio"] > 1.3  # 16x fewer MACs at batch 16: faster even on a busy box
    # --models filters the manifest's cases
    assert bench.main(["--models", "resnet18", *argv[2:]]) == 0
    assert json.loads(out.read_text())["cases"] == []


def _factored(widths: list[int], ranks: list[int]) -> onnx.ModelProto:
    """``_mlp(widths)`` with MatMul i replaced by x @ A_i @ B_i (rank ranks[i]); the chain ends in h_i."""
    rng = np.random.default_rng(1)
    nodes, inits, cur = [], [], "x"
    for i, ((a, b), r) in enumerate(zip(zip(widths, widths[1:]), ranks)):
        inits += [numpy_helper.from_array(rng.standard_normal((a, r)).astype(np.float32), f"mm{i}/A"),
                  numpy_helper.from_array(rng.standard_normal((r, b)).astype(np.float32), f"mm{i}/B")]
        nodes += [h.make_node("MatMul", [cur, f"mm{i}/A"], [f"mm{i}/t"], name=f"mm{i}/svd_first"),
                  h.make_node("MatMul", [f"mm{i}/t", f"mm{i}/B"], [f"h{i}"], name=f"mm{i}/svd_last")]
        cur = f"h{i}"
    g = h.make_graph(nodes, "mlp", [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", widths[0]])],
                     [h.make_tensor_value_info(cur, TensorProto.FLOAT, ["batch", widths[-1]])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9)


LAYER_NODES = {f"layer{i}": [f"mm{i}", [f"mm{i}/svd_first", f"mm{i}/svd_last"]] for i in range(2)}


def test_revert_layers_puts_the_dense_node_back(bench):
    dense, comp = _mlp([256, 256, 256]), _factored([256, 256, 256], [8, 2048])
    m = bench.revert_layers(dense, comp, LAYER_NODES, ["layer1"])
    onnx.checker.check_model(m, full_check=True)
    assert [n.name for n in m.graph.node] == ["mm0/svd_first", "mm0/svd_last", "mm1"]
    assert sorted(t.name for t in m.graph.initializer) == ["W1", "mm0/A", "mm0/B"]  # the chain's weights are gone
    from rene_onnx.validate import run_onnx

    x = {"x": np.ones((2, 256), np.float32)}
    mid = run_onnx(_cut(comp, "h0"), x)[0]  # layer0's chain is untouched, layer1 is the dense W1 again
    w1 = numpy_helper.to_array(next(t for t in dense.graph.initializer if t.name == "W1"))
    np.testing.assert_allclose(run_onnx(m, x)[0], mid @ w1, rtol=1e-4, atol=1e-3)


def _cut(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend([h.make_tensor_value_info(output, TensorProto.FLOAT, None)])
    return m


def test_measure_pack_latency_aware_keeps_the_slow_chain_dense(bench, tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    # layer0: rank 8 of 256x256 (16x fewer MACs, faster); layer1: rank 2048 (16x more MACs, slower)
    onnx.save(bench.strip_weights(_mlp([256, 256, 256])), pack / "mlp.onnx")
    onnx.save(bench.strip_weights(_factored([256, 256, 256], [8, 2048])), pack / "mlp_mixed.onnx")
    np.savez(pack / "mlp_feeds.npz", x=np.ones((1, 256), np.float32))
    variant = {"macs": {"before": 1, "after": 1}, "params": {"before": 1, "after": 1}}
    case = {"model": "mlp", "method": "svd", "fraction": 0.5, "rank_multiple": 1, "tag": "mlp_mixed",
            "variants": {"full": variant}, "pack_models": ["mlp.onnx", "mlp_mixed.onnx"], "layer_nodes": LAYER_NODES}
    (pack / "manifest.json").write_text(json.dumps({"cases": [case]}))
    out = tmp_path / "out.json"
    assert bench.main(["--models", "mlp", "measure-pack", str(pack), "--threads", "1", "--batch", "32",
                       "--repeats", "9", "--warmup", "1", "--latency-aware", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["cases"]
    aware = row["variants"]["latency_aware"]
    assert aware["kept_dense"] == ["layer1"]
    assert set(row["per_layer_us"]) == {"layer0", "layer1"}
    assert aware["macs"]["before"] == 2 * 256 * 256 and aware["macs"]["after"] == 256 * 8 * 2 + 256 * 256


def test_merge_puts_runs_side_by_side(bench, tmp_path):
    def run_file(name, mode, batch):
        r = {"host": 0.7, "device": 0.8, "graph": 1.2}[mode]
        case = {"model": "m", "method": "svd", "fraction": 0.5, "rank_multiple": 1, "tag": "m_svd",
                "variants": {"full": {"macs": {"ratio": 4.0}, "latency": {"default": {"ratio": r}}}}}
        data = {"batch": batch, "device_io": mode != "host", "cuda_graph": mode == "graph", "cases": [case]}
        (tmp_path / name).write_text(json.dumps(data))
        return tmp_path / name

    files = [run_file("a.json", "host", 1), run_file("b.json", "device", 1), run_file("c.json", "graph", 32)]
    (tmp_path / "meta.json").write_text(json.dumps({"device": "test"}))
    out = tmp_path / "merged.json"
    assert bench.main(["merge", *map(str, files), "--meta", str(tmp_path / "meta.json"), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["device"] == "test" and list(merged["runs"]) == ["m_b1_host", "m_b1_device", "m_b32_graph"]
    assert merged["summary"]["m_svd"] == {"macs_ratio": 4.0, "b1_host": 0.7, "b1_device": 0.8, "b32_graph": 1.2}


def test_cuda_script_parses():
    import subprocess

    r = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "cuda_latency.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
