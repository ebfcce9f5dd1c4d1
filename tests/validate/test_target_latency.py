"""Issue 10 item 5, ``--target-latency FRACTION``: the bad inputs, the candidate ranks, the latency tables and one
end-to-end run through the CLI."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from rene_onnx.decompose import ranks as R
from rene_onnx.pipeline.latency_target import TOLERANCE, candidate_ranks
from rene_onnx.plan import LayerFactors
from rene_onnx.validate.latency_tables import latency_tables
from tests.cli_inproc import cli

C, HW = 256, 28


def _model(path=None):
    """Three 1x1 convs 256 -> 256 at 28 x 28 (51M MACs each), ReLU between: big enough that a chain at a low rank
    is several times faster than its dense conv, whatever else runs on the box."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(3):
        nodes += [h.make_node("Conv", [x, f"W{i}", f"B{i}"], [f"c{i}"], name=f"conv{i}", kernel_shape=[1, 1]),
                  h.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        inits += [nh.from_array((rng.standard_normal((C, C, 1, 1)) / 16).astype(np.float32), f"W{i}"),
                  nh.from_array(np.zeros(C, np.float32), f"B{i}")]
        x = f"r{i}"
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, C, HW, HW])],
                     [h.make_tensor_value_info(x, T.FLOAT, [1, C, HW, HW])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    if path is not None:
        onnx.save(m, path)
    return m


@pytest.mark.parametrize("args, says", [
    (["--target-latency", "1.0"], "--target-latency: must be in (0, 1), got 1.0"),
    (["--target-latency", "0"], "--target-latency: must be in (0, 1), got 0.0"),
    (["--target-latency", "-0.5"], "--target-latency: must be in (0, 1)"),
    (["--target-latency", "0.7", "--no-latency"], "--target-latency: needs latency measurement"),
    (["--target-latency", "0.7", "--target-macs", "0.5"], "--target-latency: conflicts with target_macs"),
    (["--target-latency", "0.7", "--ranks", "0.3"], "--target-latency: conflicts with ranks"),
])
def test_bad_target_latency_is_one_line_and_writes_nothing(tmp_path, args, says):
    _model(tmp_path / "m.onnx")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("compress", "m.onnx", *args, "-o", "out.onnx", cwd=tmp_path)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_candidate_ranks_are_multiples_that_save_parameters():
    shape = R.LayerShape(C, C, (1, 1))
    rs = candidate_ranks("svd", shape, 16, n=10)
    assert rs == [16, 32, 48, 64, 80, 96, 112]  # break-even of 256 x 256 is 127: 7 multiples of 16 below it
    assert all(R.saves("svd", shape, (r,)) for r in rs)
    assert len(candidate_ranks("svd", shape, 1, n=5)) == 5
    narrow = R.LayerShape(16, 24, (1, 1))  # break-even 9: no multiple of 16 saves, so ranks are not rounded
    assert candidate_ranks("svd", narrow, 16) == candidate_ranks("svd", narrow, 1) == list(range(1, 10))


def test_latency_tables_time_the_dense_node_and_each_candidate(tmp_path):
    m = _model()
    w = nh.to_array(next(t for t in m.graph.initializer if t.name == "W0")).reshape(C, C)
    u, s, vt = np.linalg.svd(w)
    cands = [LayerFactors("conv0", "svd", (r,), {"U": (u[:, :r] * s[:r]).astype(np.float32),
                                                  "V": vt[:r].reshape(r, C, 1, 1).astype(np.float32)})
             for r in (16, 112)]
    feeds = {"x": np.random.default_rng(1).standard_normal((1, C, HW, HW)).astype(np.float32)}
    t = latency_tables(m, {"conv0": cands}, feeds, repeats=10)
    assert set(t) == {"conv0"} and set(t["conv0"]) == {"dense", (16,), (112,)}
    # rank 16 has 8x fewer MACs than dense: faster by far more than the noise of this box
    assert t["conv0"][(16,)] < t["conv0"]["dense"] / 1.5
    assert t["conv0"][(16,)] < t["conv0"][(112,)]


def test_target_latency_end_to_end(tmp_path):
    """The run must land near the target. The check: the ratio the rank choice verified (original and candidate
    timed interleaved in one worker) is the round closest to the target, and the ratio of the fastest runs the
    final validation measured lies within +-25 % of 0.6 (its medians swung from 0.31 to 0.63 between runs of
    the same plan while other work ran on the 2 shared cores; the fastest runs held). On this model "all dense" is 1.0 and "every layer at its lowest rank"
    about 0.3, so the band still proves the choice aimed at 0.6; a tighter +-5 % check would flake."""
    _model(tmp_path / "m.onnx")
    r = cli("compress", "m.onnx", "--data-free", "--epochs", "0", "--target-latency", "0.6", "-o", "out.onnx",
            "--report", "r.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    tl = rep["meta"]["target_latency"]
    assert tl["target"] == 0.6 and tl["tolerance"] == TOLERANCE and tl["rounds"]
    got = [x["measured_ratio"] for x in tl["rounds"]]
    assert tl["planned_ratio"] == min(got, key=lambda x: abs(x - 0.6))
    assert tl["met"] == (abs(tl["planned_ratio"] / 0.6 - 1) <= TOLERANCE)
    assert tl["met"] or "--target-latency 0.6: the closest plan measured" in r.output
    fastest = [d["min_ms"] for d in rep["latency_ms"]["detail"]]  # original, compressed: the fastest runs
    ratio = fastest[1] / fastest[0]
    assert 0.45 <= ratio <= 0.75, (ratio, tl)
    assert any(row["status"] == "factorized" for row in rep["layers"])


def _classifier(path, classes: int = 10):
    """:func:`_model`'s three big 1x1 convs, then global pooling and a classifier: logits to agree on."""
    m = _model()
    g = m.graph
    last = g.output[0].name
    rng = np.random.default_rng(1)
    g.node.extend([h.make_node("GlobalAveragePool", [last], ["gap"], name="gap"),
                   h.make_node("Flatten", ["gap"], ["flat"], name="flat"),
                   h.make_node("Gemm", ["flat", "Wfc", "Bfc"], ["logits"], name="fc", transB=1)])
    g.initializer.extend([nh.from_array(rng.standard_normal((classes, C)).astype(np.float32), "Wfc"),
                          nh.from_array(np.zeros(classes, np.float32), "Bfc")])
    del g.output[:]
    g.output.append(h.make_tensor_value_info("logits", T.FLOAT, [1, classes]))
    onnx.save(m, path)


def test_with_calib_the_cost_of_each_rank_is_measured_on_the_used_calib_inputs_and_a_floor_is_met(tmp_path):
    """--calib --target-latency --min-fidelity: the candidates' accuracy cost is the output KL on the used part
    of --calib (never the held-out part), and an easy floor is met by the first try, at the target itself."""
    _classifier(tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((40, C, HW, HW)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    r = cli("compress", "m.onnx", "--calib", "calib.npz", "--epochs", "0", "--target-latency", "0.6",
            "--min-fidelity", "0.01", "-o", "out.onnx", "--report", "r.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    sens = rep["meta"]["target_latency"]["sensitivity"]
    assert sens["method"] == "calibration data" and sens["measure"] == "kl" and sens["n"] == 32  # 40 - 8 held out
    assert {"conv0", "conv1", "conv2"} <= set(sens["curves"])
    assert all(list(c) == sorted(c, reverse=True) for c in sens["curves"].values())  # higher rank, lower cost
    assert any("output KL divergence measured" in n for n in rep["meta"]["target_latency"]["notes"])
    floor = rep["meta"]["min_fidelity"]
    assert [t["target_latency"] for t in floor["tries"]] == [0.6] and floor["chosen"]["met"]
    assert "--min-fidelity 0.01 met at --target-latency 0.6 after 1 try" in r.output
    assert rep["numerics"]["calib"]["inputs"] == "calib-heldout" and rep["numerics"]["calib"]["n"] == 8


def test_floor_with_a_latency_target_bisects_towards_the_original_speed_and_keeps_the_fastest_that_meets_it():
    """The budget search of compress_to_floor under --target-latency, on runs whose fidelity falls as the
    latency fraction falls (met from 0.8 up): tries 0.5 (miss), 0.75 (miss), 0.875 (meet), 0.8125 (meet)."""
    import dataclasses
    from types import SimpleNamespace

    from rene_onnx.config import CompressConfig, SearchConfig
    from rene_onnx.errors import FidelityError
    from rene_onnx.pipeline.floor import compress_to_floor

    def run_once(c):
        t = c.target_latency
        rep = SimpleNamespace(numerics={"calib": {"top1_agreement": 0.9 if t >= 0.8 else 0.5, "n": 8}},
                              params={"before": 100, "after": int(100 * t)},
                              meta={"target_latency": {"planned_ratio": t}})
        return rep, None, None, []

    cfg = CompressConfig(model="m.onnx", search=SearchConfig(), target_latency=0.5, min_fidelity=0.8)
    held = SimpleNamespace(held_idx=np.arange(8))
    rep = compress_to_floor(cfg, run_once, held)[0]
    tries = rep.meta["min_fidelity"]["tries"]
    assert [t["target_latency"] for t in tries] == [0.5, 0.75, 0.875, 0.8125]
    assert [t["met"] for t in tries] == [False, False, True, True]
    assert rep.meta["min_fidelity"]["chosen"]["target_latency"] == 0.8125  # the fastest that meets it
    with pytest.raises(FidelityError, match="of the original's latency"):
        compress_to_floor(dataclasses.replace(cfg, min_fidelity=0.95), run_once, held)


def test_the_min_fidelity_tries_share_the_candidates_and_tables_through_the_memo(tmp_path, monkeypatch):
    """plan_for_latency measures the candidates, their costs and latency tables once per model and settings
    (they do not depend on the target): a second target reuses them from the memo, another rank multiple does not."""
    import dataclasses

    from rene_onnx import pipeline
    from rene_onnx.config import CompressConfig, RewriteConfig, ValidateConfig
    from rene_onnx.load import load_onnx
    from rene_onnx.pipeline import latency_target as LT

    _model(tmp_path / "m.onnx")
    handle = load_onnx(tmp_path / "m.onnx")
    shapes = pipeline.layer_shapes(handle)
    calls = []
    real = LT.layer_options

    def counted(*args, **kwargs):
        calls.append(args[1].rewrite.rank_multiple)
        return real(*args, **kwargs)

    monkeypatch.setattr(LT, "layer_options", counted)
    cfg = CompressConfig(model=str(tmp_path / "m.onnx"), data_free=True, target_latency=0.6,
                         rewrite=RewriteConfig(rank_multiple=16), validate=ValidateConfig(repeats=5, profile_repeats=5))
    memo: dict = {}
    first = LT.plan_for_latency(handle, cfg, shapes, None, memo)
    second = LT.plan_for_latency(handle, dataclasses.replace(cfg, target_latency=0.9), shapes, None, memo)
    assert calls == [16] and len(memo) == 1
    assert first.rounds and second.rounds  # each target still measured its own rewritten models
    LT.plan_for_latency(handle, dataclasses.replace(cfg, rewrite=RewriteConfig(rank_multiple=32)), shapes, None, memo)
    assert calls == [16, 32] and len(memo) == 2
