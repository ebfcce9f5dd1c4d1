"""benchmarks/latency.py's pack path as a user runs it (what the GPU runs use): measure-pack on a hand-made
weight-stripped pack (batched, device I/O, latency-aware revert), merge, and the CUDA script's syntax."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnx_cases import MLP_LAYER_NODES as LAYER_NODES, factored_chain as _factored, mlp_chain as _mlp
from rene_onnx.pack import strip_weights

ROOT = Path(__file__).resolve().parents[2]


def _bench(*argv: str) -> int:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency.py"), *argv], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.returncode


def test_measure_pack_batched_device_io(tmp_path):
    """A hand-made pack of one case (a 4x narrower chain) timed at batch 16 with I/O binding."""
    pack = tmp_path / "pack"
    pack.mkdir()
    dense, thin = _mlp([512, 512, 512]), _mlp([512, 32, 512])
    onnx.save(strip_weights(dense), pack / "mlp.onnx")
    onnx.save(strip_weights(thin), pack / "mlp_svd.onnx")
    np.savez(pack / "mlp_feeds.npz", x=np.ones((1, 512), np.float32))
    before, after = (2 * 512 * 512, 2 * 512 * 512), (2 * 512 * 32, 2 * 512 * 32)
    variant = {"macs": {"before": before[0], "after": after[0]}, "params": {"before": before[1], "after": after[1]}}
    case = {"model": "mlp", "method": "svd", "fraction": 0.25, "rank_multiple": 1, "tag": "mlp_svd",
            "variants": {"full": variant}, "pack_models": ["mlp.onnx", "mlp_svd.onnx"]}
    (pack / "manifest.json").write_text(json.dumps({"cases": [case], "rank_multiple_study": None}))
    out = tmp_path / "out.json"
    argv = ["--models", "mlp", "measure-pack", str(pack), "--threads", "1", "--batch", "16", "--repeats", "15",
            "--warmup", "2", "--device-io", "--out", str(out)]
    _bench(*argv)
    res = json.loads(out.read_text())
    assert res["batch"] == 16 and res["device_io"] is True and res["provider"] == "cpu"
    (row,) = res["cases"]
    full = row["variants"]["full"]
    assert full["macs"]["ratio"] == pytest.approx(16.0)
    assert full["latency"]["1"]["ratio"] > 1.3  # 16x fewer MACs at batch 16: faster even on a busy box
    # --models filters the manifest's cases
    _bench("--models", "resnet18", *argv[2:])
    assert json.loads(out.read_text())["cases"] == []


def test_measure_pack_latency_aware_keeps_the_slow_chain_dense(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    # layer0: rank 8 of 256x256 (16x fewer MACs, faster); layer1: rank 2048 (16x more MACs, slower)
    onnx.save(strip_weights(_mlp([256, 256, 256])), pack / "mlp.onnx")
    onnx.save(strip_weights(_factored([256, 256, 256], [8, 2048])), pack / "mlp_mixed.onnx")
    np.savez(pack / "mlp_feeds.npz", x=np.ones((1, 256), np.float32))
    variant = {"macs": {"before": 1, "after": 1}, "params": {"before": 1, "after": 1}}
    case = {"model": "mlp", "method": "svd", "fraction": 0.5, "rank_multiple": 1, "tag": "mlp_mixed",
            "variants": {"full": variant}, "pack_models": ["mlp.onnx", "mlp_mixed.onnx"], "layer_nodes": LAYER_NODES}
    (pack / "manifest.json").write_text(json.dumps({"cases": [case]}))
    out = tmp_path / "out.json"
    _bench("--models", "mlp", "measure-pack", str(pack), "--threads", "1", "--batch", "32", "--repeats", "9",
           "--warmup", "1", "--latency-aware", "--out", str(out))
    (row,) = json.loads(out.read_text())["cases"]
    aware = row["variants"]["latency_aware"]
    assert aware["kept_dense"] == ["layer1"]
    assert set(row["per_layer_us"]) == {"layer0", "layer1"}
    assert aware["macs"]["before"] == 2 * 256 * 256 and aware["macs"]["after"] == 256 * 8 * 2 + 256 * 256


def test_merge_puts_runs_side_by_side(tmp_path):
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
    _bench("merge", *map(str, files), "--meta", str(tmp_path / "meta.json"), "--out", str(out))
    merged = json.loads(out.read_text())
    assert merged["device"] == "test" and list(merged["runs"]) == ["m_b1_host", "m_b1_device", "m_b32_graph"]
    assert merged["summary"]["m_svd"] == {"macs_ratio": 4.0, "b1_host": 0.7, "b1_device": 0.8, "b32_graph": 1.2}


def test_cuda_script_parses():
    r = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "cuda_latency.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
