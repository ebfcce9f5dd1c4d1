"""rene_onnx.report: JSON round-trip, derived ratios, terminal table, PNG plots."""
from __future__ import annotations

import json
import math

import pytest

from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.report import (
    LayerRow,
    Report,
    environment_meta,
    fill_layer_latency,
    plot_layers,
    plot_ranks,
    render,
    render_text,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows():
    conv = LayerShape(64, 32, (3, 3), in_positions=256, out_positions=256)
    fc = LayerShape(10, 64)
    return [
        LayerRow.from_shape("layer1.conv", "Conv", conv, "tt", (16, 16)),
        LayerRow.from_shape("layer2.conv", "Conv", conv, "cp", (24,)),
        LayerRow.from_shape("fc", "Gemm", fc, reason="factorized form saves nothing"),
    ]


def _report(**kw):
    base = dict(
        params={"before": 1000, "after": 250, "torch_before": 1000},
        macs={"before": 8000, "after": 2000},
        latency_ms={"before": 3.0, "after": 2.0, "provider": "cpu", "detail": [{"median_ms": 3.0}]},
        numerics={"max_abs_diff": 1.5e-3, "max_rel_diff": 2e-4, "mean_abs_diff": 1e-4, "cosine": 0.99999,
                  "top1_agreement": 1.0, "vs_original": {"max_abs_diff": 0.2}},
        layers=_rows(),
        search={"stages": 2, "seconds": 12.5},
        accuracy={"metric": "top1", "samples": 100, "before": 91.0, "after_decomposition": 89.5},
        meta={"model": "tiny", "command": "rene-onnx compress tiny", "method": "tt", **environment_meta()},
    )
    base.update(kw)
    return Report(**base)


def test_layer_row_counts_come_from_ranks():
    tt, cp, dense = _rows()
    # TT (r1, r2) = (16, 16) on 64x32x3x3: r2*Cin + r1*r2*k + Cout*r1 + bias
    assert tt.params_before == 64 * 32 * 9 + 64
    assert tt.params_after == 16 * 32 + 16 * 16 * 9 + 64 * 16 + 64
    assert tt.macs_after == 16 * 32 * 256 + (16 * 16 * 9 + 64 * 16) * 256
    assert cp.params_after == 24 * 32 + 24 * 9 + 64 * 24 + 64
    assert dense.status == "dense" and dense.rank is None and dense.params_after == dense.params_before == 650
    assert tt.params_kept == pytest.approx(tt.params_after / tt.params_before)
    with pytest.raises(ValueError, match="status"):
        LayerRow("x", "Conv", "tt", [4], 1, 1, 1, 1, "compressed")
    with pytest.raises(ValueError, match="needs ranks"):
        LayerRow.from_shape("x", "Conv", LayerShape(8, 8, (3, 3)), "tt")


def test_derived_ratios():
    r = _report()
    assert r.params_reduction_pct == pytest.approx(75.0)
    assert r.macs_ratio == pytest.approx(4.0)
    assert r.latency_speedup == pytest.approx(1.5)
    empty = Report()
    assert empty.params_reduction_pct is None and empty.macs_ratio is None and empty.latency_speedup is None
    assert Report(latency_ms={"before": 1.0, "after": 0.0}).latency_speedup is None


def test_json_round_trip(tmp_path):
    r = _report()
    path = tmp_path / "report.json"
    r.save_json(path)
    d = json.loads(path.read_text())
    for key in ("format", "params", "macs", "latency_ms", "numerics", "layers", "search", "accuracy", "meta",
                "params_reduction_pct", "macs_ratio", "latency_speedup"):
        assert key in d, key
    assert d["params_reduction_pct"] == pytest.approx(75.0) and d["macs_ratio"] == pytest.approx(4.0)
    for key in ("name", "op", "method", "rank", "params_before", "params_after", "macs_before", "macs_after",
                "status", "reason", "latency_us_before", "latency_us_after"):
        assert key in d["layers"][0], key
    assert d["layers"][0]["rank"] == [16, 16]
    back = Report.load_json(path)
    assert back == r
    assert back.to_dict() == r.to_dict()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_json_sanitizes_nan_and_numpy(tmp_path):
    np = pytest.importorskip("numpy")
    r = _report(numerics={"max_abs_diff": float("nan"), "cosine": np.float32(0.5)},
                params={"before": np.int64(10), "after": np.int64(5)})
    r.save_json(tmp_path / "r.json")
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["numerics"] == {"max_abs_diff": None, "cosine": 0.5}
    assert d["params_reduction_pct"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="format"):
        Report.from_dict({"format": "something/else"})


def test_fill_layer_latency():
    rows = _rows()
    fill_layer_latency(
        rows,
        {"node_conv1": 40.0, "node_conv2": 30.0},
        {"c1_first": 5.0, "c1_core": 7.0, "c1_last": 3.0},
        {"layer1.conv": ["node_conv1"], "layer2.conv": ["node_conv2"]},
        {"layer1.conv": ["c1_first", "c1_core", "c1_last"], "layer2.conv": ["missing"]},
    )
    assert (rows[0].latency_us_before, rows[0].latency_us_after) == (40.0, 15.0)
    assert (rows[1].latency_us_before, rows[1].latency_us_after) == (30.0, None)
    assert (rows[2].latency_us_before, rows[2].latency_us_after) == (None, None)


def test_table_renders():
    r = _report()
    parts = render(r)
    assert len(parts) == 2
    text = render_text(r)
    for needle in ("layer1.conv", "layer2.conv", "fc", "16x16", "saves nothing", "75.0% removed",
                   "4.00x fewer", "1.50x speedup", "cpu", "max abs 0.0015", "89.5", "2 factorized, 1 dense"):
        assert needle in text, needle
    assert "time (us)" not in text
    fill_layer_latency(r.layers, {"a": 12.0}, {"b": 4.0}, {"fc": ["a"]}, {"fc": ["b"]})
    assert "12 -> 4" in render_text(r)
    # a report with nothing measured still renders; without layers (validate of any two models) no empty layer
    # table and no "0 factorized" line
    empty = render_text(Report())
    assert "Summary" in empty and "Layers" not in empty and "factorized" not in empty
    assert len(render(Report())) == 1


def _png_ok(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 2000


def test_plots_written(tmp_path):
    r = _report()
    assert _png_ok(plot_layers(r, tmp_path / "layers.png"))
    other = _report(layers=[LayerRow.from_shape("layer1.conv", "Conv", LayerShape(64, 32, (3, 3)), "cp", (8,))],
                    meta={"method": "cp"})
    assert _png_ok(plot_ranks({"tt": r, "cp": other}, tmp_path / "ranks.png"))
    assert _png_ok(plot_ranks([r, other.to_dict()], tmp_path / "ranks_list.png"))
    assert _png_ok(plot_ranks(r.to_dict(), tmp_path / "ranks_one.png"))
    assert _png_ok(plot_ranks([row.__dict__ for row in r.layers], tmp_path / "ranks_rows.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "layers.png", "ranks.png", "ranks_list.png", "ranks_one.png", "ranks_rows.png"]
    with pytest.raises(ValueError, match="no layers"):
        plot_layers(Report(), tmp_path / "empty.png")
    with pytest.raises(ValueError, match="does not exist"):
        plot_layers(r, tmp_path / "nope" / "x.png")


def test_environment_meta_has_versions():
    meta = environment_meta()
    assert "onnx" in meta["versions"] and meta["machine"]["cpus"] >= 1
    assert not math.isnan(float(meta["machine"]["cpus"]))


def test_environment_meta_names_the_cpu_its_flags_and_gpus():
    """What a results file needs to say which machine it ran on: the CPU model and the flags that decide
    onnxruntime's kernels, read from /proc/cpuinfo as the kernel reports them."""
    import pathlib

    m = environment_meta()["machine"]
    info = pathlib.Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo")
    text = info.read_text()
    model = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    flags = set(next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")))
    assert m["cpu"] == model
    assert m["cpu_flags"] == [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    assert isinstance(m["gpus"], list)


def test_warnings_name_a_slower_model_and_a_broken_one_on_real_inputs_only():
    from rene_onnx.report.report import Report
    from rene_onnx.report.table import render_text

    ok = {"vs_original": {"inputs": "random", "n": 1, "top1_agreement": None, "cosine": 0.1},
          "calib": {"inputs": "calib-heldout", "n": 48, "top1_agreement": 0.92}}
    assert Report(numerics=ok, latency_ms={"before": 2.0, "after": 1.0}).warnings == []
    broken = {**ok, "calib": {"inputs": "calib-heldout", "n": 48, "top1_agreement": 0.0625}}
    (w,) = Report(numerics=broken, latency_ms={"before": 2.0, "after": 1.0}).warnings
    assert "94%" in w and "calib-heldout, n=48" in w and "--min-fidelity" in w
    # random inputs never speak for accuracy, not even to warn
    rnd = {"vs_original": {"inputs": "random", "n": 1, "top1_agreement": 0.0}}
    assert Report(numerics=rnd).warnings == []
    slow = Report(numerics=broken, latency_ms={"before": 1.0, "after": 2.0, "provider": "cpu"})
    assert len(slow.warnings) == 2 and "SLOWER" in slow.warnings[0]
    assert slow.to_dict()["warnings"] == slow.warnings
    assert "predictions changed for most of them" in render_text(slow, width=400)


def test_environment_meta_records_the_source_commit(tmp_path):
    """A report or a results file names the code that produced it: the checkout's HEAD, marked when tracked
    files differ from it; None outside a git checkout (an installed wheel)."""
    import shutil
    import subprocess

    from rene_onnx.report.environment import SOURCE_ROOT, source_commit

    assert source_commit(tmp_path) is None
    if shutil.which("git") is None:
        pytest.skip("no git")
    if (SOURCE_ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert environment_meta()["commit"].startswith(head)

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "one")
    clean = source_commit(tmp_path)
    assert len(clean) == 40 and "uncommitted" not in clean
    (tmp_path / "a.txt").write_text("2")
    assert source_commit(tmp_path) == clean + " (with uncommitted changes)"
