"""Graph-surgery passes: every rewrite checked in onnxruntime against the original (full rank) or a
plain-Conv / numpy reference built from the same factors (low rank)."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rene_onnx import passes
from rene_onnx.plan import LayerFactors

from onnx_cases import CONV_CASES, conv_model, conv_setup, cp_random, dense_from, full_factors, inits, lf_of, make_model, ops, rel_err, rewrite, rng, run, svd_factors, tt_factors, vi

N_NEW = {"tt": 3, "cp": 3, "svd": 2}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
@pytest.mark.parametrize("method", ["tt", "cp", "svd"])
def test_conv_full_rank_equals_original(case, method):
    w, b, x, attrs = conv_setup(case)
    if method == "cp":  # CP is exact only for a weight of CP rank R: build the weight from R factors
        f = cp_random(w.shape[0], w.shape[1], w.shape[2:], 5)
        w = dense_from("cp", f, w.shape).astype(np.float32)
    else:
        f = full_factors(method, w)
    m = conv_model(w, b, x.shape, **attrs)
    out, (rec,) = rewrite(m, {"conv": lf_of(method, f)})
    assert rec.status == "factorized" and rec.method == method and rec.op_type == "Conv"
    assert rec.new_nodes == [f"conv/{method}_{s}" for s in (["first", "core", "last"] if method != "svd"
                                                            else ["first", "last"])]
    assert ops(out) == ["Conv"] * N_NEW[method]
    assert "w" not in inits(out)
    assert all(v.dtype == np.float32 for v in inits(out).values())
    (ref,), (got,) = run(m, {"x": x}), run(out, {"x": x})
    assert rel_err(got, ref) <= 1e-4


@pytest.mark.parametrize("case", sorted(CONV_CASES))
@pytest.mark.parametrize("method", ["tt", "cp", "svd"])
def test_conv_low_rank_equals_reconstructed_conv(case, method):
    w, b, x, attrs = conv_setup(case, seed=1)
    cout, cin, kernel = w.shape[0], w.shape[1], w.shape[2:]
    f = {"tt": lambda: tt_factors(w, 3, 2), "svd": lambda: svd_factors(w.reshape(cout, -1), 2),
         "cp": lambda: cp_random(cout, cin, kernel, 3)}[method]()
    m = conv_model(w, b, x.shape, **attrs)
    out, (rec,) = rewrite(m, {"conv": lf_of(method, f)})
    assert rec.status == "factorized"
    w_lr = dense_from(method, f, w.shape).astype(np.float32)
    assert rel_err(w_lr, w) > 0.05  # really low rank: the rewrite differs from the original
    (got,), (ref,) = run(out, {"x": x}), run(conv_model(w_lr, b, x.shape, **attrs), {"x": x})
    assert rel_err(got, ref) <= 1e-4
    (orig,) = run(m, {"x": x})
    assert rel_err(got, orig) > 1e-2


def test_conv_geometry_goes_on_the_kernel_factor_only():
    w, b, x, attrs = conv_setup("asym_pads_stride2")
    out, _ = rewrite(conv_model(w, b, x.shape, **attrs), {"conv": lf_of("tt", tt_factors(w, 3, 2))})
    a = {n.name: {at.name: helper.get_attribute_value(at) for at in n.attribute} for n in out.graph.node}
    assert a["conv/tt_core"]["strides"] == [2, 2] and a["conv/tt_core"]["pads"] == [0, 1, 2, 1]
    for n in ("conv/tt_first", "conv/tt_last"):
        assert "strides" not in a[n] and "pads" not in a[n] and a[n]["kernel_shape"] == [1, 1]
    cp = rewrite(conv_model(w, b, x.shape, **attrs), {"conv": lf_of("cp", cp_random(6, 4, (3, 3), 5))})[0]
    core = next(n for n in cp.graph.node if n.name == "conv/cp_core")
    assert helper.get_attribute_value(next(at for at in core.attribute if at.name == "group")) == 5
    last = next(n for n in out.graph.node if n.name == "conv/tt_last")
    assert list(last.input)[2] == "b" and list(last.output) == ["y"]  # original bias tensor and output kept


@pytest.mark.parametrize("rank,full", [(4, True), (2, False)])
def test_conv_1x1_strided_svd(rank, full):
    g = rng(3)
    w = g.standard_normal((6, 4, 1, 1)).astype(np.float32)
    b = g.standard_normal(6).astype(np.float32)
    x = g.standard_normal((1, 4, 7, 7)).astype(np.float32)
    m = conv_model(w, b, x.shape, strides=[2, 2])
    f = svd_factors(w.reshape(6, 4), rank)
    out, (rec,) = rewrite(m, {"conv": lf_of("svd", f)})
    assert rec.status == "factorized" and ops(out) == ["Conv", "Conv"]
    first = next(n for n in out.graph.node if n.name == "conv/svd_first")
    assert helper.get_attribute_value(next(a for a in first.attribute if a.name == "strides")) == [2, 2]
    ref_model = m if full else conv_model(dense_from("svd", f, w.shape).astype(np.float32), b, x.shape,
                                          strides=[2, 2])
    (got,), (ref,) = run(out, {"x": x}), run(ref_model, {"x": x})
    assert got.shape == (1, 6, 4, 4) and rel_err(got, ref) <= 1e-4
    # TT / CP make no sense on a 1x1 kernel: skipped with the reason
    out2, (rec2,) = rewrite(m, {"conv": lf_of("tt", tt_factors(w, 2, 2))})
    assert rec2.status == "skipped" and "1x1" in rec2.reason and ops(out2) == ["Conv"]


def test_conv_factor_bias_and_2d_factor_arrays():
    w, b, x, attrs = conv_setup("sym_pads")
    f = tt_factors(w, 6, 4)
    f2 = {"first": f["first"].reshape(4, 4), "core": f["core"], "last": f["last"].reshape(6, 6)}  # 2-D 1x1s
    new_b = rng(9).standard_normal(6)
    out, (rec,) = rewrite(conv_model(w, b, x.shape, **attrs), {"conv": lf_of("tt", f2, bias=new_b)})
    assert "b" not in inits(out) and inits(out)["conv.bias"].dtype == np.float32
    (got,), (ref,) = run(out, {"x": x}), run(conv_model(w, new_b.astype(np.float32), x.shape, **attrs), {"x": x})
    assert rel_err(got, ref) <= 1e-4


def test_conv_svd_accepts_4d_v():
    w, b, x, attrs = conv_setup("same_upper_stride2")
    f = svd_factors(w.reshape(6, -1), 3)
    f4 = {"U": f["U"].reshape(6, 3, 1, 1), "V": f["V"].reshape(3, 4, 3, 3)}
    (got,) = run(rewrite(conv_model(w, b, x.shape, **attrs), {"conv": lf_of("svd", f4)})[0], {"x": x})
    (ref,) = run(conv_model(dense_from("svd", f, w.shape).astype(np.float32), b, x.shape, **attrs), {"x": x})
    assert rel_err(got, ref) <= 1e-4


# ------------------------------------------------------------------------------------------------ gemm

M, K_IN, N_OUT = 5, 7, 6  # batch rows, in features, out features


def gemm_setup(side, ta, tb, alpha, beta, c_shape, seed=0):
    """Gemm with the weight (torch layout (N_OUT, K_IN)) on ``side``; returns model, feeds, W, reference fn."""
    g = rng(seed)
    w = g.standard_normal((N_OUT, K_IN)).astype(np.float32)
    cols = 4  # columns of the runtime operand when the weight is on the left
    if side == "right":
        a_op = (K_IN, M) if ta else (M, K_IN)
        x = g.standard_normal(a_op).astype(np.float32)
        wb = w if tb else w.T  # B' = W^T
        names, weight = ["x", "w"], wb
    else:
        x = g.standard_normal((cols, K_IN) if tb else (K_IN, cols)).astype(np.float32)
        names, weight = ["w", "x"], (w.T if ta else w)  # A' = W
    c = None if c_shape is None else g.standard_normal(c_shape).astype(np.float32)
    init = {"w": weight} | ({"c": c} if c is not None else {})
    node = helper.make_node("Gemm", names + (["c"] if c is not None else []), ["y"], name="gemm",
                            alpha=alpha, beta=beta, transA=ta, transB=tb)
    m = make_model([node], [vi("x", list(x.shape))], [vi("y", None)], init)

    def reference(w_torch, bias=None):
        w_torch = np.asarray(w_torch, np.float64)
        xd = x.astype(np.float64)
        if side == "right":
            y = alpha * (xd.T if ta else xd) @ w_torch.T
        else:
            y = alpha * w_torch @ (xd.T if tb else xd)
        if bias is not None:
            return y + (bias if side == "right" else bias[:, None])
        return y if c is None else y + beta * c
    return m, {"x": x}, w, reference


GEMM_CASES = [(side, ta, tb, ab, cs) for side in ("right", "left") for ta in (0, 1) for tb in (0, 1)
              for ab, cs in (((1.0, 1.0), "vec"), ((0.5, 2.0), "full"))] + [
    ("right", 0, 1, (1.5, 0.25), "row"), ("right", 0, 1, (1.0, 3.0), "scalar"), ("right", 1, 0, (2.0, 1.0), None),
    ("left", 0, 0, (1.0, 1.0), "scalar"), ("left", 1, 1, (0.5, 1.0), None)]


def c_shape_of(side, cs):
    if cs is None:
        return None
    rows, cols = (M, N_OUT) if side == "right" else (N_OUT, 4)
    return {"vec": (N_OUT,) if side == "right" else (N_OUT, 1), "full": (rows, cols), "row": (1, N_OUT),
            "scalar": ()}[cs]


@pytest.mark.parametrize("side,ta,tb,ab,cs", GEMM_CASES)
@pytest.mark.parametrize("rank", [N_OUT, 2])
def test_gemm(side, ta, tb, ab, cs, rank):
    m, feeds, w, reference = gemm_setup(side, ta, tb, *ab, c_shape_of(side, cs))
    f = svd_factors(w, rank)
    out, (rec,) = rewrite(m, {"gemm": lf_of("svd", f)})
    assert rec.status == "factorized" and rec.new_nodes == ["gemm/svd_first", "gemm/svd_last"]
    assert ops(out) == ["Gemm", "Gemm"] and "w" not in inits(out)
    (got,) = run(out, feeds)
    if rank == N_OUT:
        (ref,) = run(m, feeds)
    else:
        ref = reference(f["U"] @ f["V"])
        assert rel_err(ref, reference(w)) > 0.05
    assert rel_err(got, ref) <= 1e-4


@pytest.mark.parametrize("side", ["right", "left"])
def test_gemm_factor_bias_replaces_beta_c(side):
    m, feeds, w, reference = gemm_setup(side, 0, 1, 0.5, 2.0, (N_OUT,) if side == "right" else (N_OUT, 1))
    f = svd_factors(w, 3)
    bias = rng(5).standard_normal(N_OUT)
    out, _ = rewrite(m, {"gemm": lf_of("svd", f, bias=bias)})
    (got,) = run(out, feeds)
    assert rel_err(got, reference(f["U"] @ f["V"], bias)) <= 1e-4
    assert "c" not in inits(out)


def test_gemm_transb_layout_kept():
    m, feeds, w, _ = gemm_setup("right", 0, 1, 1.0, 1.0, (N_OUT,))
    out, _ = rewrite(m, {"gemm": lf_of("svd", svd_factors(w, 2))})
    t = inits(out)
    assert t["gemm/svd_first.weight"].shape == (2, K_IN) and t["gemm/svd_last.weight"].shape == (N_OUT, 2)


# ---------------------------------------------------------------------------------------------- matmul


def matmul_model(side, x_shape, w, bias=None, seed=0):
    names = ["x", "w"] if side == "right" else ["w", "x"]
    nodes = [helper.make_node("MatMul", names, ["mm" if bias is not None else "y"], name="mm")]
    init = {"w": w}
    if bias is not None:
        nodes.append(helper.make_node("Add", ["mm", "bias"], ["y"], name="add"))
        init["bias"] = bias
    x = rng(seed).standard_normal(x_shape).astype(np.float32)
    return make_model(nodes, [vi("x", list(x_shape))], [vi("y", None)], init), {"x": x}


MATMUL_CASES = [("right", (5, 7)), ("right", (2, 5, 7)), ("right", (2, 3, 5, 7)),
                ("left", (7, 4)), ("left", (2, 7, 4)), ("left", (2, 3, 7, 4))]


@pytest.mark.parametrize("side,x_shape", MATMUL_CASES)
@pytest.mark.parametrize("rank", [N_OUT, 2])
def test_matmul(side, x_shape, rank):
    w = rng(4).standard_normal((N_OUT, K_IN)).astype(np.float32)  # torch layout (out, in)
    wm = w.T if side == "right" else w
    m, feeds = matmul_model(side, x_shape, wm)
    f = svd_factors(w, rank)
    out, (rec,) = rewrite(m, {"mm": lf_of("svd", f)})
    assert rec.status == "factorized" and ops(out) == ["MatMul", "MatMul"] and "w" not in inits(out)
    (got,) = run(out, feeds)
    x = feeds["x"].astype(np.float64)
    w_lr = f["U"] @ f["V"]
    ref = run(m, feeds)[0] if rank == N_OUT else (x @ w_lr.T if side == "right" else w_lr @ x)
    assert rel_err(got, ref) <= 1e-4
    if rank < N_OUT:
        assert rel_err(got, run(m, feeds)[0]) > 1e-2


def test_matmul_bias_add_updated_and_shared_bias_kept():
    g = rng(6)
    w = g.standard_normal((N_OUT, K_IN)).astype(np.float32)
    b = g.standard_normal(N_OUT).astype(np.float32)
    m, feeds = matmul_model("right", (2, 5, 7), w.T, bias=b)
    layer = next(ol for ol in passes.find_layers(m) if ol.op_type == "MatMul")
    assert layer.bias == "bias" and layer.shape.bias and layer.shape.in_positions == 5
    f = svd_factors(w, 3)
    new_b = g.standard_normal(N_OUT)
    out, (rec,) = rewrite(m, {"mm": lf_of("svd", f, bias=new_b)})
    assert rec.status == "factorized" and ops(out) == ["MatMul", "MatMul", "Add"]
    assert "bias" not in inits(out) and "mm.bias" in inits(out)
    (got,) = run(out, feeds)
    assert rel_err(got, feeds["x"].astype(np.float64) @ (f["U"] @ f["V"]).T + new_b) <= 1e-4
    # no bias in the factors: the Add and its bias stay as they were
    out2, _ = rewrite(m, {"mm": lf_of("svd", f)})
    assert np.array_equal(inits(out2)["bias"], b)
    # a bias in the factors but no Add: skipped with the reason
    m3, _ = matmul_model("right", (2, 5, 7), w.T)
    out3, (rec3,) = rewrite(m3, {"mm": lf_of("svd", f, bias=new_b)})
    assert rec3.status == "skipped" and "bias" in rec3.reason and ops(out3) == ["MatMul"]


def test_matmul_tied_weight_stays_for_the_other_node():
    w = rng(7).standard_normal((K_IN, N_OUT)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="mm1"),
             helper.make_node("MatMul", ["x", "w"], ["b"], name="mm2"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    m = make_model(nodes, [vi("x", [3, K_IN])], [vi("y", None)], {"w": w})
    out, _ = rewrite(m, {"mm1": lf_of("svd", svd_factors(w.T, N_OUT))})
    assert "w" in inits(out) and ops(out) == ["MatMul", "MatMul", "MatMul", "Add"]
    x = rng(8).standard_normal((3, K_IN)).astype(np.float32)
    assert rel_err(run(out, {"x": x})[0], run(m, {"x": x})[0]) <= 1e-4


def test_float16_weights_get_float16_factors():
    w = rng(10).standard_normal((N_OUT, K_IN)).astype(np.float16)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    m = make_model([node], [vi("x", [3, K_IN], TensorProto.FLOAT16)], [vi("y", None, TensorProto.FLOAT16)],
                   {"w": w.T.copy()})
    out, _ = rewrite(m, {"mm": lf_of("svd", svd_factors(w.astype(np.float64), N_OUT))})
    assert {v.dtype for v in inits(out).values()} == {np.dtype(np.float16)}
    x = rng(11).standard_normal((3, K_IN)).astype(np.float16)
    assert rel_err(run(out, {"x": x})[0], run(m, {"x": x})[0]) <= 1e-2  # float16 round-off


# ------------------------------------------------------------------------------- constants, preservation


@pytest.mark.parametrize("via_identity", [False, True])
def test_constant_node_weight_and_orphan_removed(via_identity):
    w, b, x, attrs = conv_setup("sym_pads")
    nodes = [helper.make_node("Constant", [], ["wc"], name="const_w", value=numpy_helper.from_array(w, "wv"))]
    if via_identity:
        nodes.append(helper.make_node("Identity", ["wc"], ["w"], name="ident_w"))
    nodes.append(helper.make_node("Conv", ["x", "w" if via_identity else "wc", "b"], ["y"], name="conv", **attrs))
    m = make_model(nodes, [vi("x", list(x.shape))], [vi("y", None)], {"b": b})
    (layer,) = passes.find_layers(m)
    assert layer.weight_is_constant and layer.skip_reason is None and np.array_equal(layer.weight_array, w)
    out, (rec,) = rewrite(m, {"conv": lf_of("tt", full_factors("tt", w))})
    assert ops(out) == ["Conv"] * 3  # the Constant (and Identity) are gone
    assert rel_err(run(out, {"x": x})[0], run(m, {"x": x})[0]) <= 1e-4


def test_initializer_listed_as_graph_input_leaves_with_the_weight():
    w, b, x, attrs = conv_setup("sym_pads")
    m = conv_model(w, b, x.shape, **attrs)
    m.graph.input.append(vi("w", list(w.shape)))  # old exporters listed initializers as inputs
    out, _ = passes.apply_factors(m, {"conv": lf_of("svd", full_factors("svd", w))})
    onnx.checker.check_model(out, full_check=True)
    assert [i.name for i in out.graph.input] == ["x"]
    assert rel_err(run(out, {"x": x})[0], run(m, {"x": x})[0]) <= 1e-4


def chain_model():
    """conv1 -> Relu -> conv2 -> Reshape -> Gemm (fc), with metadata, value_info, an unused initializer."""
    g = rng(12)
    t = {"w1": g.standard_normal((6, 3, 3, 3)), "b1": g.standard_normal(6), "w2": g.standard_normal((8, 6, 3, 3)),
         "b2": g.standard_normal(8), "fc.w": g.standard_normal((5, 8 * 4 * 4)), "fc.b": g.standard_normal(5),
         "unused": np.ones(3)}
    t = {k: v.astype(np.float32) for k, v in t.items()} | {"shape": np.array([1, -1], np.int64)}
    relu = helper.make_node("Relu", ["c1"], ["r1"], name="relu", doc_string="keep me")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]), relu,
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", strides=[2, 2],
                              auto_pad="SAME_UPPER"),
             helper.make_node("Reshape", ["c2", "shape"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    m = make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 5])], t, value_info=[vi("r1", [1, 6, 8, 8])])
    helper.set_model_props(m, {"author": "tests"})
    m.doc_string = "chain"
    x = g.standard_normal((1, 3, 8, 8)).astype(np.float32)
    return m, {"x": x}, t


def test_chain_everything_else_unchanged():
    m, feeds, t = chain_model()
    layers = {"conv1": lf_of("cp", cp_random(6, 3, (3, 3), 4)), "conv2": lf_of("tt", tt_factors(t["w2"], 4, 3)),
              "fc": lf_of("svd", svd_factors(t["fc.w"], 4))}
    out, records = rewrite(m, layers)
    assert [r.status for r in records] == ["factorized"] * 3
    assert ops(out) == ["Conv"] * 3 + ["Relu"] + ["Conv"] * 3 + ["Reshape", "Gemm", "Gemm"]
    relu = next(n for n in out.graph.node if n.op_type == "Relu")
    assert relu == next(n for n in m.graph.node if n.op_type == "Relu")  # the proto itself, doc_string too
    assert out.metadata_props == m.metadata_props and out.doc_string == "chain"
    assert out.producer_name == "test" and [v.name for v in out.graph.value_info] == ["r1"]
    names = set(inits(out))
    assert {"unused", "shape", "b1", "b2", "fc.b"} <= names and not {"w1", "w2", "fc.w"} & names
    assert {"conv1/cp_first.weight", "conv2/tt_core.weight", "fc/svd_last.weight"} <= names
    # reference: the same graph with the dense weights the factors stand for
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    dense = {"w1": dense_from("cp", layers["conv1"].arrays, (6, 3, 3, 3)),
             "w2": dense_from("tt", layers["conv2"].arrays, (8, 6, 3, 3)),
             "fc.w": layers["fc"].arrays["U"] @ layers["fc"].arrays["V"]}
    for init in ref.graph.initializer:
        if init.name in dense:
            init.CopyFrom(numpy_helper.from_array(dense[init.name].astype(np.float32), init.name))
    assert rel_err(run(out, feeds)[0], run(ref, feeds)[0]) <= 1e-4


def test_dense_updates():
    m, feeds, t = chain_model()
    new_b2 = rng(13).standard_normal(8)  # float64: cast to the stored float32
    new_fc = rng(14).standard_normal((5, 128)).astype(np.float32)
    out, records = rewrite(m, {"conv1": lf_of("svd", full_factors("svd", t["w1"]))},
                           {"b2": new_b2, "fc.w": new_fc, "w1": np.zeros_like(t["w1"])})  # w1: removed, dropped
    assert inits(out)["b2"].dtype == np.float32 and np.allclose(inits(out)["b2"], new_b2)
    assert "w1" not in inits(out)
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    for init in ref.graph.initializer:
        if init.name in ("b2", "fc.w"):
            v = new_b2 if init.name == "b2" else new_fc
            init.CopyFrom(numpy_helper.from_array(v.astype(np.float32), init.name))
    assert rel_err(run(out, feeds)[0], run(ref, feeds)[0]) <= 1e-4
    with pytest.raises(ValueError, match="shape"):
        passes.apply_factors(m, {}, {"b2": np.zeros(7)})
    with pytest.raises(ValueError, match="no initializer"):
        passes.apply_factors(m, {}, {"nope": np.zeros(7)})
    with pytest.raises(ValueError, match="dtype"):
        passes.apply_factors(m, {}, {"shape": np.array([1.0, -1.0])})
    with pytest.raises(ValueError, match="NaN"):
        passes.apply_factors(m, {}, {"b2": np.full(8, np.nan)})


def test_dense_update_into_constant_node():
    w, b, x, attrs = conv_setup("sym_pads")
    nodes = [helper.make_node("Constant", [], ["bc"], name="const_b", value=numpy_helper.from_array(b, "bv")),
             helper.make_node("Conv", ["x", "w", "bc"], ["y"], name="conv", **attrs)]
    m = make_model(nodes, [vi("x", list(x.shape))], [vi("y", None)], {"w": w})
    out, records = rewrite(m, {}, {"bc": np.zeros(6)})
    assert records == []
    assert rel_err(run(out, {"x": x})[0], run(conv_model(w, np.zeros(6, np.float32), x.shape, **attrs),
                                                 {"x": x})[0]) <= 1e-6


# --------------------------------------------------------------------------------------- skips, errors


def test_skip_reasons():
    g = rng(15)
    nodes = [helper.make_node("ConvTranspose", ["x", "wt"], ["a"], name="deconv"),
             helper.make_node("Conv", ["a", "wg"], ["b"], name="grouped", group=6, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "wrt"], ["c"], name="runtime"),
             helper.make_node("Conv", ["x3", "w3"], ["d"], name="conv3d"),
             helper.make_node("Gemm", ["f", "wf"], ["e"], name="fc", transB=1)]
    t = {"wt": g.standard_normal((4, 6, 3, 3)), "wg": g.standard_normal((6, 1, 3, 3)),
         "w3": g.standard_normal((2, 4, 3, 3, 3)), "wf": g.standard_normal((3, 5))}
    m = make_model(nodes, [vi("x", [1, 4, 5, 5]), vi("wrt", [2, 6, 1, 1]), vi("x3", [1, 4, 5, 5, 5]),
                           vi("f", [2, 5])],
                   [vi("c", None), vi("d", None), vi("e", None)], {k: v.astype(np.float32) for k, v in t.items()})
    found = {ol.name: ol for ol in passes.find_layers(m)}
    assert sorted(found) == ["conv3d", "deconv", "fc", "grouped", "runtime"]
    assert "ConvTranspose" in found["deconv"].skip_reason
    assert found["grouped"].skip_reason is None and found["grouped"].methods == ()  # the pass says why
    assert "run time" in found["runtime"].skip_reason and not found["runtime"].weight_is_constant
    assert found["runtime"].weight_array is None
    assert "3-D" in found["conv3d"].skip_reason
    assert found["fc"].skip_reason is None and found["fc"].methods == ("svd",)
    lf = lf_of("tt", tt_factors(np.ones((6, 6, 3, 3)), 2, 2))
    layers = {"deconv": lf, "grouped": lf, "runtime": lf, "conv3d": lf,
              "fc": LayerFactors("fc", "tt", (2, 2), lf.arrays)}
    out, records = rewrite(m, layers)
    assert [r.status for r in records] == ["skipped"] * 5
    reasons = {r.node: r.reason for r in records}
    assert "ConvTranspose" in reasons["deconv"] and "nothing to factor" in reasons["grouped"]
    assert "run time" in reasons["runtime"] and "3-D" in reasons["conv3d"]
    assert "no pass rewrites Gemm with tt" in reasons["fc"]
    assert ops(out) == ops(m) and inits(out).keys() == inits(m).keys()
    (rec,) = passes.apply_factors(m, {"fc": LayerFactors("fc", "dense", ())})[1]
    assert rec.status == "skipped" and "dense" in rec.reason


def test_errors():
    w, b, x, attrs = conv_setup("sym_pads")
    m = conv_model(w, b, x.shape, **attrs)
    f = tt_factors(w, 3, 2)
    with pytest.raises(ValueError, match="no node named 'nope'"):
        passes.apply_factors(m, {"nope": lf_of("tt", f)})
    bad = dict(f, core=np.zeros((3, 2, 5, 5)))
    with pytest.raises(ValueError, match="factor 'core' has shape"):
        passes.apply_factors(m, {"conv": lf_of("tt", bad)})
    with pytest.raises(ValueError, match="ranks"):
        passes.apply_factors(m, {"conv": LayerFactors("conv", "tt", (3, 3), f)})
    with pytest.raises(ValueError, match="bias has 5 values"):
        passes.apply_factors(m, {"conv": lf_of("tt", f, bias=np.zeros(5))})
    with pytest.raises(ValueError, match="NaN"):
        passes.apply_factors(m, {"conv": lf_of("tt", dict(f, first=f["first"] * np.nan))})
    relu = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", [2])], [vi("y", [2])])
    with pytest.raises(ValueError, match="not a Conv"):
        passes.apply_factors(relu, {"relu": lf_of("tt", f)})
    with pytest.raises(ValueError, match="LayerFactors"):
        passes.apply_factors(m, {"conv": {"method": "tt"}})


def test_unnamed_and_duplicate_node_names():
    w, b, x, attrs = conv_setup("sym_pads")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs),
             helper.make_node("Relu", ["c"], ["r"], name="dup"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="dup", pads=[1, 1, 1, 1])]
    w2 = rng(16).standard_normal((5, 6, 3, 3)).astype(np.float32)
    m = make_model(nodes, [vi("x", list(x.shape))], [vi("y", None)], {"w": w, "b": b, "w2": w2}, check=False)
    names = [ol.name for ol in passes.find_layers(m)]
    assert names == ["Conv#0", "dup#2"]
    out, records = rewrite(m, {"Conv#0": lf_of("svd", full_factors("svd", w)),
                               "dup#2": lf_of("svd", full_factors("svd", w2))})
    assert [r.new_nodes for r in records] == [["Conv#0/svd_first", "Conv#0/svd_last"],
                                              ["dup#2/svd_first", "dup#2/svd_last"]]
    assert [n.name for n in out.graph.node if n.op_type == "Relu"] == ["dup"]
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    ref.graph.node[2].name = "dup2"  # onnxruntime refuses the duplicate names of the original
    assert rel_err(run(out, {"x": x})[0], run(ref, {"x": x})[0]) <= 1e-4


# ------------------------------------------------------------------------------------------ find_layers


def test_find_layers_fields():
    g = rng(17)
    t = {"wc": g.standard_normal((6, 3, 3, 3)), "bc": g.standard_normal(6), "wg": g.standard_normal((4, 6 * 4 * 4)),
         "wm": g.standard_normal((4, 5)), "bm": g.standard_normal(5), "wl": g.standard_normal((3, 7)),
         "shape": np.array([1, -1])}
    t = {k: v.astype(np.int64 if k == "shape" else np.float32) for k, v in t.items()}
    nodes = [helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv", strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wg"], ["g"], name="fc", transB=1),
             helper.make_node("MatMul", ["g", "wm"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "bm"], ["y"], name="add"),
             helper.make_node("MatMul", ["wl", "z"], ["y2"], name="left")]
    m = make_model(nodes, [vi("x", [1, 3, 8, 8]), vi("z", [2, 7, 9])], [vi("y", None), vi("y2", None)], t)
    before = m.SerializeToString()
    found = {ol.name: ol for ol in passes.find_layers(m)}
    assert m.SerializeToString() == before
    c, fc, mm, left = found["conv"], found["fc"], found["mm"], found["left"]
    assert (c.op_type, c.weight, c.bias, c.weight_side, c.index) == ("Conv", "wc", "bc", "right", 0)
    assert c.shape.kernel == (3, 3) and c.shape.in_positions == 64 and c.shape.out_positions == 16
    assert c.methods == ("tt", "cp", "svd", "tucker2") and c.attrs["strides"] == [2, 2]
    assert (fc.weight, fc.bias, fc.shape.out_features, fc.shape.in_features) == ("wg", None, 4, 96)
    assert fc.torch_weight().shape == (4, 96)
    assert (mm.weight, mm.bias, mm.weight_side) == ("wm", "bm", "right")
    assert np.array_equal(mm.torch_weight(), t["wm"].T) and np.array_equal(mm.weight_array, t["wm"])
    assert (left.weight_side, left.shape.out_features, left.shape.in_features) == ("left", 3, 7)
    assert left.shape.in_positions == 9 and np.array_equal(left.torch_weight(), t["wl"])
    assert all(ol.skip_reason is None and ol.weight_is_constant for ol in found.values())


def test_registry():
    assert [p.name for p in passes.REGISTRY] == ["conv_tt", "conv_cp", "conv_svd", "gemm_svd", "matmul_svd",
                                                "conv_tucker2"]
    assert passes.find_pass("Conv", "cp").name == "conv_cp" and passes.find_pass("Gemm", "tt") is None
    for p in passes.REGISTRY:
        assert callable(p.check) and callable(p.rewrite) and p.doc
