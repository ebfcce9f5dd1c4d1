"""rene_onnx.validate: counts, numerics, latency / profiling on onnxruntime (CPU)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from rene_onnx.decompose.ranks import LayerShape, dense_macs, dense_params
from rene_onnx.validate import (
    ProviderUnavailable,
    compare,
    count_onnx,
    input_feeds,
    make_session,
    measure_latency,
    profile_nodes,
    run_onnx,
)
from rene_onnx.validate.latency import name_mapper, parse_profile, run_worker, worker_env

RNG = np.random.default_rng(0)


def _init(name, *shape, dtype=np.float32):
    return nh.from_array(RNG.standard_normal(shape).astype(dtype), name)


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 10
    onnx.checker.check_model(m, full_check=True)
    return m


def _vi(name, shape, dtype=T.FLOAT):
    return h.make_tensor_value_info(name, dtype, shape)


# ------------------------------------------------------------------ counts


def test_conv_stride_pads_and_groups():
    m = _model(
        [
            h.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv_s2", strides=[2, 2], pads=[1, 1, 1, 1]),
            h.make_node("Conv", ["c1", "W2"], ["y"], name="conv_g2", group=2),
        ],
        [_vi("x", ["N", 3, 10, 10])],
        [_vi("y", ["N", 6, 3, 3])],
        [_init("W1", 4, 3, 3, 3), _init("B1", 4), _init("W2", 6, 2, 3, 3)],
    )
    c = count_onnx(m)
    # conv_s2: out 5x5, 4 x 3 x 3x3 per position; conv_g2: out 3x3, 6 x (4/2) x 3x3 per position
    assert c.per_node["conv_s2"].macs == 25 * 4 * 27 == 2700
    assert c.per_node["conv_s2"].params == 4 * 27 + 4
    assert c.per_node["conv_g2"].macs == 9 * 6 * 2 * 9 == 972
    assert c.per_node["conv_g2"].params == 6 * 2 * 9
    assert (c.params, c.macs) == (112 + 108, 2700 + 972)
    # the same numbers as the one counting module
    s = LayerShape(4, 3, (3, 3), in_positions=100, out_positions=25)
    assert (c.per_node["conv_s2"].params, c.per_node["conv_s2"].macs) == (dense_params(s), dense_macs(s))


def test_gemm_matmul_3d_and_activation_matmul():
    m = _model(
        [
            h.make_node("Gemm", ["a", "Wg", "bg"], ["g"], name="gemm", transB=1),
            h.make_node("MatMul", ["s", "Wm"], ["sm"], name="mm3d"),
            h.make_node("MatMul", ["p", "q"], ["pq"], name="mm_act"),
        ],
        [_vi("a", [1, 20]), _vi("s", [2, 5, 8]), _vi("p", ["B", 4, 5]), _vi("q", ["B", 5, 3])],
        [_vi("g", [1, 10]), _vi("sm", [2, 5, 6]), _vi("pq", ["B", 4, 3])],
        [_init("Wg", 10, 20), _init("bg", 10), _init("Wm", 8, 6)],
    )
    c = count_onnx(m)
    assert c.per_node["gemm"].macs == 1 * 10 * 20
    assert c.per_node["gemm"].params == 210
    assert c.per_node["mm3d"].macs == 2 * 5 * 6 * 8
    assert c.per_node["mm_act"].macs == 1 * 4 * 3 * 5 and c.per_node["mm_act"].params == 0
    assert c.macs == 200 + 480 + 60
    assert c.params == 210 + 48


def test_conv_transpose():
    m = _model(
        [h.make_node("ConvTranspose", ["x", "W"], ["y"], name="deconv", strides=[2, 2])],
        [_vi("x", [1, 4, 5, 5])],
        [_vi("y", [1, 2, 11, 11])],
        [_init("W", 4, 2, 3, 3)],
    )
    c = count_onnx(m)
    # every input element (4*5*5) meets a 2 x 3x3 kernel slice
    assert c.macs == 100 * 2 * 9 == 1800
    assert c.params == 72


def test_constants_float_counted_int_shapes_not():
    shape = h.make_node("Constant", [], ["shp"], value=nh.from_array(np.array([1, 12], np.int64)))
    scale = h.make_node("Constant", [], ["k"], value=nh.from_array(np.ones((12,), np.float32)))
    m = _model(
        [shape, scale, h.make_node("Reshape", ["x", "shp"], ["r"], name="reshape"),
         h.make_node("Mul", ["r", "k"], ["y"], name="scale")],
        [_vi("x", [1, 3, 4])],
        [_vi("y", [1, 12])],
        [nh.from_array(np.arange(5, dtype=np.int64), "unused_int")],
    )
    c = count_onnx(m)
    assert c.params == 12 and c.macs == 0
    assert c.per_node["scale"].params == 12
    assert "reshape" not in c.per_node


def test_symbolic_dims_need_input_shapes():
    m = _model(
        [h.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [_vi("x", ["N", 3, "H", "W"])],
        [_vi("y", ["N", 8, "H", "W"])],
        [_init("W", 8, 3, 3, 3)],
    )
    with pytest.raises(ValueError, match="symbolic"):
        count_onnx(m)
    c = count_onnx(m, {"x": (1, 3, 6, 7)})
    assert c.macs == 6 * 7 * 8 * 27
    with pytest.raises(ValueError, match="not graph inputs"):
        count_onnx(m, {"nope": (1, 3, 6, 7)})
    with pytest.raises(ValueError, match="rank"):
        count_onnx(m, {"x": (1, 3, 6)})


def test_count_from_path(tmp_path):
    m = _model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [_vi("x", ["N", 16])], [_vi("y", ["N", 4])],
               [_init("W", 16, 4)])
    onnx.save(m, tmp_path / "m.onnx")
    c = count_onnx(tmp_path / "m.onnx")
    assert (c.params, c.macs) == (64, 64)
    with pytest.raises(ValueError, match="not found"):
        count_onnx(tmp_path / "missing.onnx")


# ------------------------------------------------------------------ numerics


def _mlp(hidden=32, W1=None):
    W1 = W1 if W1 is not None else RNG.standard_normal((16, hidden)).astype(np.float32)
    return _model(
        [h.make_node("MatMul", ["x", "W1"], ["a"], name="fc1"), h.make_node("Relu", ["a"], ["r"], name="relu"),
         h.make_node("MatMul", ["r", "W2"], ["y"], name="fc2")],
        [_vi("x", ["N", 16])],
        [_vi("y", ["N", 10])],
        [nh.from_array(W1, "W1"), nh.from_array(np.full((hidden, 10), 0.1, np.float32), "W2")],
    )


def test_run_onnx_matches_numpy():
    W1 = RNG.standard_normal((16, 32)).astype(np.float32)
    x = RNG.standard_normal((4, 16)).astype(np.float32)
    (y,) = run_onnx(_mlp(W1=W1), {"x": x, "extra": np.zeros(1)})
    np.testing.assert_allclose(y, np.maximum(x @ W1, 0) @ np.full((32, 10), 0.1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="miss graph inputs"):
        run_onnx(_mlp(), {"y": x})


def test_compare_hand_numbers():
    ref = [np.array([[1.0, 2.0, 3.0], [4.0, 0.0, -2.0]])]
    act = [np.array([[1.0, 2.5, 3.0], [4.0, 0.0, 4.5]])]
    n = compare(ref, act)
    assert n.max_abs_diff == pytest.approx(6.5)
    assert n.max_rel_diff == pytest.approx(6.5 / 4.0)  # relative to the output's max |reference|
    assert n.mean_abs_diff == pytest.approx(7.0 / 6)
    r, a = ref[0].ravel(), act[0].ravel()
    assert n.cosine == pytest.approx(r @ a / np.linalg.norm(r) / np.linalg.norm(a))
    assert n.top1_agreement == 0.5  # row 0 agrees, row 1 does not
    row_cos = [x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(ref[0], act[0])]
    assert n.mean_sample_cosine == pytest.approx(np.mean(row_cos)) and row_cos[0] > n.cosine > row_cos[1]
    assert compare([np.zeros((2, 3))], [np.array([[0.0, 0, 0], [1, 0, 0]])]).mean_sample_cosine == 0.5
    with pytest.raises(ValueError, match="shape"):
        compare(ref, [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="outputs"):
        compare(ref, ref * 2)
    same = compare(ref, ref)
    assert same.max_abs_diff == 0 and same.cosine == pytest.approx(1.0) and same.top1_agreement == 1.0
    assert compare([np.zeros(3)], [np.zeros(3)]).top1_agreement is None
    assert compare([np.array(2.0)], [np.array(2.0)]).mean_sample_cosine is None


def test_compare_on_inputs_batches_and_limits():
    from rene_onnx.validate.numerics import compare_on_inputs

    W1 = RNG.standard_normal((16, 32)).astype(np.float32)
    a, b = _mlp(W1=W1), _mlp(W1=W1 * 0.5 + 0.1)
    x = RNG.standard_normal((10, 16)).astype(np.float32)
    whole = compare(run_onnx(a, {"x": x[:7]}), run_onnx(b, {"x": x[:7]}))
    for bs in (None, 1, 7):
        got = compare_on_inputs(a, b, {"x": x}, limit=7, batch_size=bs)
        assert got.max_abs_diff == pytest.approx(whole.max_abs_diff, rel=1e-6)
        assert got.mean_sample_cosine == pytest.approx(whole.mean_sample_cosine, rel=1e-6)
    assert compare_on_inputs(a, b, {"x": x}, batch_size=3, limit=2) is None  # a batch of 3 from 2 samples
    same = compare_on_inputs(a, a, {"x": x}, limit=None, batch_size=4)  # 8 of 10 samples used
    assert same.max_abs_diff == 0 and same.mean_sample_cosine == pytest.approx(1.0)


def test_compare_truncated_svd_rewrite():
    """A rank-truncated weight gives a measurable, not-too-large difference; full rank is exact."""
    W1 = RNG.standard_normal((16, 32)).astype(np.float32)
    U, S, Vt = np.linalg.svd(W1, full_matrices=False)
    feeds = input_feeds(_mlp(), {"x": (8, 16)}, seed=1)
    ref = run_onnx(_mlp(W1=W1), feeds)
    full = run_onnx(_mlp(W1=((U * S) @ Vt).astype(np.float32)), feeds)
    low = run_onnx(_mlp(W1=((U[:, :4] * S[:4]) @ Vt[:4]).astype(np.float32)), feeds)
    assert compare(ref, full).max_abs_diff < 1e-4
    n = compare(ref, low)
    assert 1e-3 < n.max_abs_diff and n.cosine < 0.9999 and n.cosine > 0.5


def test_input_feeds_dtypes_and_shapes():
    m = _model(
        [h.make_node("Cast", ["ids"], ["f"], to=T.FLOAT), h.make_node("Add", ["f", "x"], ["y"])],
        [_vi("ids", ["B", 7], T.INT64), _vi("x", ["B", 7])],
        [_vi("y", ["B", 7])],
    )
    feeds = input_feeds(m)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (1, 7)
    assert feeds["x"].dtype == np.float32 and feeds["x"].shape == (1, 7)
    assert np.array_equal(input_feeds(m, seed=3)["x"], input_feeds(m, seed=3)["x"])
    assert not np.array_equal(input_feeds(m, seed=3)["x"], input_feeds(m, seed=4)["x"])
    assert input_feeds(m, {"x": (2, 7), "ids": (2, 7)})["x"].shape == (2, 7)
    seq = _model([h.make_node("Relu", ["x"], ["y"])], [_vi("x", ["B", "T", 4])], [_vi("y", ["B", "T", 4])])
    with pytest.raises(ValueError, match="input_shapes"):
        input_feeds(seq)
    with pytest.raises(ValueError, match="fixed to 4"):
        input_feeds(seq, {"x": (1, 3, 5)})


def test_providers():
    assert make_session(_mlp(), "cpu").get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown provider"):
        make_session(_mlp(), "tpu")


def test_cuda_unavailable_raises():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            sess = ort.InferenceSession(_mlp().SerializeToString(), providers=["CUDAExecutionProvider"])
            if sess.get_providers()[0] == "CUDAExecutionProvider":
                pytest.skip("a working CUDA provider is present")
        except Exception:
            pass
    with pytest.raises(ProviderUnavailable):
        make_session(_mlp(), "cuda")


def test_gpu_libraries_preloaded_once_and_failures_reported(monkeypatch):
    import onnxruntime as ort

    from rene_onnx.validate import numerics

    calls = []

    def fake_preload(**kw):
        calls.append(kw)
        print("Failed to load libcublasLt.so.13: cannot open shared object file")

    monkeypatch.setattr(numerics, "_PRELOAD_LOG", [])
    monkeypatch.setattr(ort, "preload_dlls", fake_preload, raising=False)
    make_session(_mlp(), "cpu")
    assert calls == []  # the CPU path never touches GPU libraries
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    for _ in range(2):
        try:
            make_session(_mlp(), "cuda")
        except ProviderUnavailable as e:
            assert "libcublasLt.so.13" in str(e)  # what failed to load is in the one error line
    assert calls == [{"cuda": True, "cudnn": True, "msvc": False}]  # once per process, stdout captured


# ------------------------------------------------------------------ latency and profiling


def _heavy(n=384, depth=4):
    nodes, inits, cur = [], [], "x"
    for i in range(depth):
        nodes.append(h.make_node("MatMul", [cur, f"W{i}"], [f"h{i}"], name=f"mm{i}"))
        inits.append(_init(f"W{i}", n, n))
        cur = f"h{i}"
    return _model(nodes, [_vi("x", ["N", n])], [_vi(cur, ["N", n])], inits)


def _tiny(n=384):
    return _model([h.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", ["N", n])], [_vi("y", ["N", n])])


@pytest.fixture
def two_models(tmp_path):
    heavy, tiny = tmp_path / "heavy.onnx", tmp_path / "tiny.onnx"
    onnx.save(_heavy(), heavy)
    onnx.save(_tiny(), tiny)
    return str(heavy), str(tiny)


def test_measure_latency_interleaved(two_models, tmp_path):
    lat = measure_latency(list(two_models), warmup=2, repeats=15, threads=1)
    assert len(lat) == 2
    for t in lat:
        assert t.runs == 15 and t.provider == "cpu"
        assert 0 < t.min_ms <= t.p10_ms <= t.median_ms <= t.p90_ms < 1000
    # 4 x 384^2 MACs vs one Relu over 384 floats: orders of magnitude apart
    assert lat[0].median_ms > 3 * lat[1].median_ms
    npz = tmp_path / "feeds.npz"
    np.savez(npz, x=np.ones((1, 384), np.float32), other=np.zeros(2))
    lat2 = measure_latency(list(two_models), str(npz), warmup=1, repeats=3)
    assert [t.runs for t in lat2] == [3, 3]


def test_measure_latency_device_io(two_models, tmp_path):
    # I/O binding with preallocated outputs; on the CPU provider the bound run is the same work as run()
    lat = measure_latency(list(two_models), warmup=1, repeats=9, threads=1, device_io=True)
    assert [t.runs for t in lat] == [9, 9]
    assert lat[0].median_ms > 3 * lat[1].median_ms
    spec = {"mode": "latency", "models": [two_models[0]], "feeds_npz": None, "input_shapes": {"x": [3, 384]},
            "provider": "cpu", "warmup": 0, "repeats": 2, "threads": 1, "device_io": True}
    assert run_worker(spec)["ok"]
    with pytest.raises(ValueError, match="cuda_graph needs provider 'cuda'"):
        measure_latency([two_models[1]], cuda_graph=True)
    with pytest.raises(ProviderUnavailable):  # no GPU here: CUDA graphs need the real CUDA provider
        measure_latency([two_models[1]], provider="cuda", cuda_graph=True, warmup=0, repeats=1)


def test_worker_runs_without_torch(two_models, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TORCH_SHOW_CPP_STACKTRACES", "1")
    env = worker_env()
    assert "OMP_NUM_THREADS" not in env and "TORCH_SHOW_CPP_STACKTRACES" not in env and "PATH" in env
    spec = {"mode": "latency", "models": [two_models[1]], "feeds_npz": None, "input_shapes": {},
            "provider": "cpu", "warmup": 0, "repeats": 2, "threads": None}
    out = run_worker(spec)
    assert out["ok"] and out["torch_loaded"] is False and len(out["results"][0]["samples_ms"]) == 2


def test_measure_latency_bad_input(two_models, tmp_path):
    with pytest.raises(ProviderUnavailable):
        measure_latency([two_models[1]], provider="cuda", warmup=0, repeats=1)
    with pytest.raises(ValueError, match="unknown provider"):
        measure_latency([two_models[1]], provider="npu")
    with pytest.raises(ValueError, match="not found"):
        measure_latency([str(tmp_path / "nope.onnx")])
    np.savez(tmp_path / "wrong.npz", z=np.ones(3))
    with pytest.raises(ValueError, match="miss graph inputs"):
        measure_latency([two_models[1]], str(tmp_path / "wrong.npz"), warmup=0, repeats=1)


def _convnet():
    return _model(
        [
            h.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
            h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            h.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
            h.make_node("Add", ["c2", "x"], ["a2"], name="add2"),
            h.make_node("Flatten", ["a2"], ["f"], name="flat"),
            h.make_node("MatMul", ["f", "Wf"], ["m"], name="fc_mm"),
            h.make_node("Add", ["m", "bf"], ["y"], name="fc_add"),
        ],
        [_vi("x", ["N", 8, 8, 8])],
        [_vi("y", ["N", 10])],
        [_init("W1", 8, 8, 3, 3), _init("B1", 8), _init("W2", 8, 8, 3, 3), _init("B2", 8),
         _init("Wf", 512, 10), _init("bf", 10)],
    )


def test_profile_nodes_maps_back_to_original_names(tmp_path):
    path = tmp_path / "convnet.onnx"
    onnx.save(_convnet(), path)
    times = profile_nodes(str(path), repeats=5, warmup=1)
    # conv1 (+ fused relu1, NCHWc), conv2, and fc_mm (MatMul + Add fused into a Gemm)
    for name in ("conv1", "conv2", "fc_mm"):
        assert name in times and times[name] > 0, times
    assert "relu1" not in times and "fc_add" not in times
    times2 = profile_nodes(str(path), input_feeds(_convnet(), seed=2), repeats=2, warmup=0)
    assert "conv1" in times2


def test_name_mapper_rules():
    rename = name_mapper(_convnet())
    assert rename("conv2") == "conv2"
    assert rename("r1_nchwc") == "conv1"  # activation fused into conv1 in NCHWc layout
    assert rename("c2_nchwc") == "conv2"
    assert rename("a2_nchwc") == "conv2"  # Add (residual) fused into conv2
    assert rename("fused fc_mm/MatMulAddFusion") == "fc_mm"
    assert rename("fused conv1") == "conv1"
    assert rename("ReorderOutput_token_5") == "ReorderOutput_token_5"


def test_parse_profile_splits_runs():
    ev = []
    for run, t0 in enumerate((0, 1000, 2000)):
        ev.append({"cat": "Session", "name": "model_run", "ts": t0, "dur": 500})
        ev.append({"cat": "Node", "name": "a_kernel_time", "ts": t0 + 10, "dur": 10 * (run + 1), "args": {}})
        ev.append({"cat": "Node", "name": "b_fence_before", "ts": t0 + 20, "dur": 1, "args": {}})
        ev.append({"cat": "Node", "name": "x_kernel_time", "ts": t0 + 30, "dur": 5, "args": {"node_name": "c"}})
        ev.append({"cat": "Node", "name": "d_kernel_time", "ts": t0 + 40, "dur": 7, "args": {}})
    ev.append({"cat": "Node", "name": "a_kernel_time", "ts": 5000, "dur": 99, "args": {}})  # outside any run
    out = parse_profile(ev, skip_runs=1, rename=lambda n: "c" if n == "d" else n)
    assert out == {"a": [20.0, 30.0], "c": [12.0, 12.0]}


def test_counts_on_torch_export_agree_with_ranks():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    ).eval()
    prog = torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), dynamo=True, external_data=False,
                             opset_version=18, verbose=False)
    c = count_onnx(prog.model_proto)
    shapes = [LayerShape(16, 3, (3, 3), in_positions=256, out_positions=256),
              LayerShape(32, 16, (3, 3), in_positions=256, out_positions=64),
              LayerShape(10, 2048)]
    assert c.params == sum(dense_params(s) for s in shapes) == sum(p.numel() for p in net.parameters())
    assert c.macs == sum(dense_macs(s) for s in shapes)
    assert sorted(n.op_type for n in c.per_node.values()) == ["Conv", "Conv", "Gemm"]
