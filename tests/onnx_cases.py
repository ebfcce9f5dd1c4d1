"""ONNX graphs built in code for the tests: tiny models (a small image classifier among them), factor makers and
runners."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rene_onnx import passes
from rene_onnx.plan import LayerFactors

OPSET = 18
F32 = TensorProto.FLOAT


# ---------------------------------------------------------------------------------------------- helpers


def vi(name, shape, elem=F32):
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(nodes, inputs, outputs, inits=None, value_info=(), check=True):
    g = helper.make_graph(nodes, "g", inputs, outputs,
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()],
                          value_info=list(value_info))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="test")
    m.ir_version = 10
    if any(not o.type.tensor_type.HasField("shape") for o in m.graph.output):  # fill output shapes in
        inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(m).graph.output}
        for o in m.graph.output:
            o.CopyFrom(inferred[o.name])
    if check:
        onnx.checker.check_model(m, full_check=True)
    return m


def run(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def rewrite(m, layers, dense=None):
    before = m.SerializeToString()
    out, records = passes.apply_factors(m, layers, dense)
    assert m.SerializeToString() == before  # the input model is untouched
    onnx.checker.check_model(out, full_check=True)
    assert out.ir_version == m.ir_version
    assert list(out.opset_import) == list(m.opset_import)
    assert [i.name for i in out.graph.input] == [i.name for i in m.graph.input]
    assert [o.name for o in out.graph.output] == [o.name for o in m.graph.output]
    return out, records


def ops(m):
    return [n.op_type for n in m.graph.node]


def inits(m):
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------ factors in numpy


def svd_factors(w2d, r):
    u, s, vt = np.linalg.svd(np.asarray(w2d, np.float64), full_matrices=False)
    return {"U": u[:, :r] * s[:r], "V": vt[:r]}


def tt_factors(w, r1, r2):
    """TT-SVD of a (Cout, Cin, k..) weight into first (r2, Cin, 1..), core (r1, r2, k..), last (Cout, r1, 1..)."""
    w = np.asarray(w, np.float64)
    cout, cin, kernel = w.shape[0], w.shape[1], w.shape[2:]
    k, ones = math.prod(kernel), (1,) * len(kernel)
    u1, s1, v1 = np.linalg.svd(w.reshape(cout, cin * k), full_matrices=False)
    last = u1[:, :r1] * s1[:r1]
    rest = v1[:r1].reshape(r1, cin, k).transpose(0, 2, 1).reshape(r1 * k, cin)
    u2, s2, v2 = np.linalg.svd(rest, full_matrices=False)
    core = (u2[:, :r2] * s2[:r2]).reshape(r1, k, r2).transpose(0, 2, 1).reshape(r1, r2, *kernel)
    return {"first": v2[:r2].reshape(r2, cin, *ones), "core": core, "last": last.reshape(cout, r1, *ones)}


def cp_random(cout, cin, kernel, r, seed=1):
    g = rng(seed)
    ones = (1,) * len(kernel)
    return {"first": g.standard_normal((r, cin, *ones)), "core": g.standard_normal((r, 1, *kernel)),
            "last": g.standard_normal((cout, r, *ones)) / r}


def dense_from(method, f, wshape):
    cout, cin, kernel = wshape[0], wshape[1], wshape[2:]
    k = math.prod(kernel)
    if method == "svd":
        return (f["U"].reshape(cout, -1) @ f["V"].reshape(f["V"].shape[0], -1)).reshape(wshape)
    first = f["first"].reshape(f["first"].shape[0], cin)
    last = f["last"].reshape(cout, -1)
    if method == "tt":
        core = f["core"].reshape(last.shape[1], first.shape[0], k)
        return np.einsum("oa,abk,bi->oik", last, core, first).reshape(wshape)
    core = f["core"].reshape(first.shape[0], k)
    return np.einsum("or,rk,ri->oik", last, core, first).reshape(wshape)


def ranks_of(method, f):
    if method == "tt":
        return (f["last"].shape[1], f["first"].shape[0])
    return (f["V"].shape[0],) if method == "svd" else (f["first"].shape[0],)


def lf_of(method, f, name="layer", bias=None):
    arrays = dict(f)
    if bias is not None:
        arrays["bias"] = bias
    return LayerFactors(name, method, ranks_of(method, f), arrays)


# ------------------------------------------------------------------------------------------------ conv


def conv_model(w, b, x_shape, name="conv", **attrs):
    ins = ["x", "w"] + (["b"] if b is not None else [])
    init = {"w": w} | ({"b": b} if b is not None else {})
    node = helper.make_node("Conv", ins, ["y"], name=name, **attrs)
    return make_model([node], [vi("x", list(x_shape))], [vi("y", None)], init)


# (weight shape, input shape, bias, attributes)
CONV_CASES = {
    "sym_pads": ((6, 4, 3, 3), (2, 4, 9, 9), True, dict(pads=[1, 1, 1, 1], kernel_shape=[3, 3])),
    "asym_pads_stride2": ((6, 4, 3, 3), (1, 4, 10, 9), True, dict(pads=[0, 1, 2, 1], strides=[2, 2])),
    "same_upper_stride2": ((6, 4, 3, 3), (1, 4, 10, 10), True, dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "same_lower_stride2": ((6, 4, 3, 3), (1, 4, 9, 10), True, dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "same_upper_k4": ((6, 4, 4, 4), (1, 4, 9, 9), False, dict(auto_pad="SAME_UPPER", strides=[1, 1])),
    "valid_stride12": ((6, 4, 3, 3), (1, 4, 9, 9), True, dict(auto_pad="VALID", strides=[1, 2])),
    "dilation_no_bias": ((6, 4, 3, 3), (1, 4, 11, 11), False, dict(pads=[2, 2, 2, 2], dilations=[2, 2])),
    "rect_kernel": ((6, 4, 3, 5), (1, 4, 8, 12), True, dict(pads=[1, 2, 1, 2], strides=[1, 2])),
    "conv1d": ((6, 4, 3), (2, 4, 11), True, dict(pads=[1, 0], strides=[2])),
    "conv1d_same_no_bias": ((6, 4, 3), (2, 4, 10), False, dict(auto_pad="SAME_UPPER", strides=[2], dilations=[1])),
}


def conv_setup(case, seed=0):
    wshape, xshape, has_bias, attrs = CONV_CASES[case]
    g = rng(seed)
    w = g.standard_normal(wshape).astype(np.float32)
    b = g.standard_normal(wshape[0]).astype(np.float32) if has_bias else None
    x = g.standard_normal(xshape).astype(np.float32)
    return w, b, x, attrs


def full_factors(method, w):
    cout, cin, kernel = w.shape[0], w.shape[1], w.shape[2:]
    k = math.prod(kernel)
    if method == "svd":
        return svd_factors(w.reshape(cout, -1), min(cout, cin * k))
    r1 = min(cout, cin * k)
    return tt_factors(w, r1, min(cin, r1 * k))


# ---------------------------------------------------------------- MatMul chains (packs, latency-aware reverts)


def mlp_chain(widths: list[int]) -> onnx.ModelProto:
    """x[N, widths[0]] -> MatMul chain; batch dim symbolic like the packed zoo models."""
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        inits.append(numpy_helper.from_array(rng.standard_normal((a, b)).astype(np.float32), f"W{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"h{i}"], name=f"mm{i}"))
        cur = f"h{i}"
    return _batch_model(nodes, inits, widths, cur)


def factored_chain(widths: list[int], ranks: list[int]) -> onnx.ModelProto:
    """``mlp_chain(widths)`` with MatMul i replaced by x @ A_i @ B_i (rank ranks[i]); the chain ends in h_i."""
    rng = np.random.default_rng(1)
    nodes, inits, cur = [], [], "x"
    for i, ((a, b), r) in enumerate(zip(zip(widths, widths[1:]), ranks)):
        inits += [numpy_helper.from_array(rng.standard_normal((a, r)).astype(np.float32), f"mm{i}/A"),
                  numpy_helper.from_array(rng.standard_normal((r, b)).astype(np.float32), f"mm{i}/B")]
        nodes += [helper.make_node("MatMul", [cur, f"mm{i}/A"], [f"mm{i}/t"], name=f"mm{i}/svd_first"),
                  helper.make_node("MatMul", [f"mm{i}/t", f"mm{i}/B"], [f"h{i}"], name=f"mm{i}/svd_last")]
        cur = f"h{i}"
    return _batch_model(nodes, inits, widths, cur)


MLP_LAYER_NODES = {f"layer{i}": [f"mm{i}", [f"mm{i}/svd_first", f"mm{i}/svd_last"]] for i in range(2)}


def _batch_model(nodes, inits, widths, out):
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", F32, ["batch", widths[0]])],
                          [helper.make_tensor_value_info(out, F32, ["batch", widths[-1]])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


# ---------------------------------------------------------------------------------------------- models


def small_classifier(path, hw=(32, 32)):
    """Conv 3->16 (3x3), ReLU, Conv 16->16 (3x3), global pool, a 10-class Gemm; input x (1, 3, H, W)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32), "W0"),
             numpy_helper.from_array((rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal((10, 16)).astype(np.float32), "Wfc"),
             numpy_helper.from_array(np.zeros(10, np.float32), "Bfc")]
    nodes = [helper.make_node("Conv", ["x", "W0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c1"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "Wfc", "Bfc"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", F32, [1, 3, *hw])],
                          [helper.make_tensor_value_info("y", F32, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return m
