"""ONNX files in (rene_onnx.load): legacy / dynamo exports of zoo models, hand-built graphs (Gemm and
MatMul variants, Constant-node weights, unfused BatchNorm, padded / grouped / run-time-weight convs),
every refused input, external data. The torch import is compared with onnxruntime on the original, and the
full path (factorize -> collect_factors -> maps -> apply_factors) with onnxruntime on the rewritten graph."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from rene_onnx import passes, pipeline
from rene_onnx.decompose.choose import plan_from_fraction
from rene_onnx.engine.layers import collect_factors
from rene_onnx.load import LoadError
from rene_onnx.load import load_onnx
from rene_onnx.pipeline.rewrite import onnx_dense_updates
from rene_onnx.plan import LayerPlan, RankPlan

F32 = TensorProto.FLOAT


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """One BLAS / torch thread: numpy's SVD on a busy 2-core machine is ~400x slower multi-threaded (1.7 s vs
    4 ms for 64x576, measured with other jobs running)."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- helpers


def ort_run(model_or_path, x: np.ndarray, name: str | None = None) -> np.ndarray:
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {name or sess.get_inputs()[0].name: x})[0]


def close(got, ref, tol=1e-4):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    err = float(np.max(np.abs(got - ref)))
    assert err <= tol * max(1.0, float(np.max(np.abs(ref)))), err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def rewrite(handle, student, buffers=False):
    """What the pipeline does: factors by torch name -> ONNX node / tensor names -> apply_factors."""
    factors = collect_factors(student, buffers=buffers)
    by_node = {handle.layer_map[n].node: lf for n, lf in factors.layers.items()}
    dense = onnx_dense_updates(handle, factors.dense)
    before = handle.onnx_model.SerializeToString()
    out, records = passes.apply_factors(handle.onnx_model, by_node, dense)
    assert handle.onnx_model.SerializeToString() == before
    assert all(r.status == "factorized" for r in records), [r.reason for r in records if r.status != "factorized"]
    onnx.checker.check_model(out, full_check=True)
    return out, records


def full_rank_plan(shapes) -> RankPlan:
    return RankPlan({n: LayerPlan(n, "svd", (s.max_matrix_rank,)) for n, s in shapes.items() if s.groups == 1})


def assert_untouched(orig: onnx.ModelProto, out: onnx.ModelProto, records) -> None:
    """Every node that was not rewritten keeps its proto; graph I/O, metadata, opsets, IR version are kept."""
    rewritten = {r.node for r in records}
    producer_of = {o: n for n in orig.graph.node for o in n.output}
    bias_adds = {n.name for n in orig.graph.node if n.op_type == "Add"
                 and any(producer_of.get(i) is not None and producer_of[i].name in rewritten for i in n.input)}
    kept = {n.name: n.SerializeToString() for n in out.graph.node}
    for n in orig.graph.node:
        if n.name in rewritten or n.op_type in ("Identity", "Constant"):
            continue  # rewritten, or the producer of a weight a rewrite no longer reads
        if n.name in bias_adds:
            assert n.name in kept  # the factorized bias is written into the Add: only its bias input changes
            continue
        assert kept.get(n.name) == n.SerializeToString(), n.name
    for field in ("input", "output"):
        assert [v.SerializeToString() for v in getattr(out.graph, field)] == \
               [v.SerializeToString() for v in getattr(orig.graph, field)]
    assert list(out.metadata_props) == list(orig.metadata_props)
    assert list(out.opset_import) == list(orig.opset_import)
    assert out.ir_version == orig.ir_version


def make_model(nodes, inputs, outputs, inits=None, opset=17, ir=8, **kw) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs,
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="hand", **kw)
    m.ir_version = ir
    return m


def save(m: onnx.ModelProto, path: Path, check=True) -> Path:
    if check:
        onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


def const_node(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(value))


def rnd(*shape, seed=0, scale=0.3):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------------------------- zoo exports


class TinyTransformer(nn.Module):
    """Linear on (B, T, C), LayerNorm, attention-like MatMul of run-time tensors, GELU, mean-pool head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(8, 16)
        self.ln = nn.LayerNorm(16)
        self.q, self.k = nn.Linear(16, 16), nn.Linear(16, 16, bias=False)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = self.emb(x)
        a = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) / 4.0, dim=-1)
        h = self.ln(h + a @ h)
        h = h + self.fc2(nn.functional.gelu(self.fc1(h)))
        return self.head(h.mean(1))


def _zoo(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name in ("resnet20", "digits_resnet"):
        from rene_onnx import models

        model = models.build(name)
        for m in model.modules():  # non-trivial BN stats: folded conv biases differ per layer
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        return model.eval(), models.input_shape(name)
    return TinyTransformer().eval(), (1, 5, 8)


def export(model: nn.Module, shape, path: Path, opset: int, dynamo: bool) -> Path:
    x = torch.randn(shape)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(model, (x,), dynamo=True, external_data=False, opset_version=opset,
                                     input_names=["input"], dynamic_shapes=({0: torch.export.Dim("batch")},))
            m = prog.model_proto
        else:
            buf = io.BytesIO()
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            m = onnx.load_from_string(buf.getvalue())
    helper.set_model_props(m, {"author": "rene-onnx tests", "exporter": "dynamo" if dynamo else "legacy"})
    return save(m, path, check=False)


ZOO_CASES = [("digits_resnet", 11, False), ("digits_resnet", 17, False),
             ("digits_resnet", 18, True), ("resnet20", 13, False),
             pytest.param("resnet20", 18, True, marks=pytest.mark.slow),
             ("tiny", 13, False), ("tiny", 17, False), ("tiny", 18, True), ("tiny", 20, True)]


def _id(case) -> str:
    n, o, d = case.values if hasattr(case, "values") else case
    return f"{n}-{'dynamo' if d else 'legacy'}{o}"


@pytest.mark.parametrize("name,opset,dynamo", ZOO_CASES, ids=[_id(c) for c in ZOO_CASES])
def test_zoo_export_roundtrip(tmp_path, name, opset, dynamo):
    model, shape = _zoo(name)
    path = export(model, shape, tmp_path / "m.onnx", opset, dynamo)
    digest = sha(path)
    handle = load_onnx(path)
    assert sha(path) == digest
    assert handle.input_shape == shape and not handle.external_data
    assert handle.onnx_model.SerializeToString() == onnx.load(str(path)).SerializeToString()

    # the torch import computes what onnxruntime computes on the original (batch 2: the batch dim is dynamic)
    x = np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(np.float32)
    ref = ort_run(path, x)
    close(torch_out(handle.torch_model, x), ref)
    close(torch_out(model, x), ref)

    # every Conv / Linear of the source is a mapped layer, weights checked by value
    n_dense = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert len(handle.layer_map) == n_dense, (handle.layer_map.keys(), handle.unmapped)
    for lname, ref_ in handle.layer_map.items():
        leaf = handle.torch_model.get_submodule(lname)
        assert ref_.op_type == ("Conv" if isinstance(leaf, nn.Conv2d) else ref_.op_type)
        assert ref_.transposed == (ref_.op_type == "MatMul" or ref_.op_type == "Gemm" and ref_.weight not in
                                   handle.param_map.values())
    if name == "tiny":  # the two MatMuls of run-time tensors are reported, not mapped
        assert sum("computed at run time" in why for why in handle.unmapped.values()) == 2

    # compressed: the rewritten graph computes exactly what the factorized torch model computes
    shapes = pipeline.layer_shapes(handle)
    method = "svd" if name == "tiny" else "tt"
    plan = plan_from_fraction(shapes, method, 0.4)
    assert len(plan.factorized()) >= (4 if name == "tiny" else 8)
    student = pipeline.factorize(handle, plan)
    out, records = rewrite(handle, student)
    got = ort_run(out, x)
    close(got, torch_out(student, x))
    assert np.max(np.abs(got - ref)) > 1e-3  # really compressed, not the original
    assert_untouched(handle.onnx_model, out, records)
    assert sum(t.ByteSize() for t in out.graph.initializer) < sum(t.ByteSize() for t in handle.onnx_model.graph.initializer)

    # full rank: the rewrite reproduces the original
    student = pipeline.factorize(handle, full_rank_plan(shapes))
    out, records = rewrite(handle, student)
    close(ort_run(out, x), ref)
    assert_untouched(handle.onnx_model, out, records)


# ---------------------------------------------------------------------------------------------- Gemm / MatMul


GEMM_CASES = [  # transA, transB, alpha, beta, C: none | vec | row | full | runtime
    (0, 1, 1.0, 1.0, "vec"), (0, 0, 1.0, 1.0, "vec"), (1, 1, 1.0, 1.0, "none"), (0, 1, 0.5, 2.0, "vec"),
    (0, 0, 1.0, 0.5, "row"), (1, 0, 2.0, 1.0, "full"), (0, 1, 1.0, 3.0, "runtime"),
]


def gemm_model(ta, tb, alpha, beta, c_kind, batch=3, n_in=6, n_out=5) -> onnx.ModelProto:
    w = rnd(n_out, n_in, seed=1)  # torch layout
    inits = {"W": w if tb else w.T.copy()}
    nodes, a = [], "x"
    if ta:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], name="pre_t", perm=[1, 0]))
        a = "xt"
    c = []
    if c_kind == "vec":
        inits["C"], c = rnd(n_out, seed=2), ["C"]
    elif c_kind == "row":
        inits["C"], c = rnd(1, n_out, seed=2), ["C"]
    elif c_kind == "full":
        inits["C"], c = rnd(batch, n_out, seed=2), ["C"]
    elif c_kind == "runtime":
        inits["Wc"] = rnd(n_in, n_out, seed=3)
        nodes.append(helper.make_node("MatMul", ["x", "Wc"], ["c_rt"], name="c_from_x"))
        c = ["c_rt"]
    nodes.append(helper.make_node("Gemm", [a, "W", *c], ["y"], name="gemm", transA=ta, transB=tb, alpha=alpha,
                                  beta=beta))
    return make_model(nodes, [helper.make_tensor_value_info("x", F32, [batch, n_in])],
                      [helper.make_tensor_value_info("y", F32, [batch, n_out])], inits)


@pytest.mark.parametrize("ta,tb,alpha,beta,c_kind", GEMM_CASES)
def test_gemm_variants_become_linear(tmp_path, ta, tb, alpha, beta, c_kind):
    path = save(gemm_model(ta, tb, alpha, beta, c_kind), tmp_path / "gemm.onnx")
    handle = load_onnx(path)
    ref = handle.layer_map["gemm"]
    assert ref.node == "gemm" and ref.op_type == "Gemm" and ref.transposed == (not tb)
    lin = handle.torch_model.get_submodule("gemm")
    assert isinstance(lin, nn.Linear)
    np.testing.assert_array_equal(lin.weight.detach().numpy(), rnd(5, 6, seed=1))
    x = rnd(3, 6, seed=9, scale=1.0)
    ref_out = ort_run(path, x)
    close(torch_out(handle.torch_model, x), ref_out)
    if c_kind == "vec" and alpha == 1.0 and beta == 1.0:
        assert handle.param_map["gemm.bias"] == "C"
    if tb:  # the Linear holds W itself (alpha stays a separate multiply)
        assert handle.param_map["gemm.weight"] == "W"
    else:
        assert "gemm.weight" not in handle.param_map  # stored transposed in ONNX

    shapes = pipeline.layer_shapes(handle)
    for plan, exact in ((RankPlan({"gemm": LayerPlan("gemm", "svd", (2,))}), False), (full_rank_plan(shapes), True)):
        student = pipeline.factorize(handle, plan)
        out, records = rewrite(handle, student)
        got = ort_run(out, x)
        close(got, torch_out(student, x))
        if exact:
            close(got, ref_out)
        else:
            assert np.max(np.abs(got - ref_out)) > 1e-3
        assert_untouched(handle.onnx_model, out, records)


def test_gemm_weight_on_the_left_stays_dense(tmp_path):
    # y = W @ x^T (the weight is input A) next to an ordinary Gemm: the left one is reported, not mapped
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc", transB=1),
             helper.make_node("Gemm", ["W2", "h"], ["y"], name="left", transB=1)]
    m = make_model(nodes, [helper.make_tensor_value_info("x", F32, [2, 6])],
                   [helper.make_tensor_value_info("y", F32, [3, 2])],
                   {"W1": rnd(4, 6), "b1": rnd(4), "W2": rnd(3, 4, seed=2)})
    path = save(m, tmp_path / "left.onnx")
    handle = load_onnx(path)
    assert list(handle.layer_map) == ["fc"]
    assert "left" in handle.unmapped and "left" in handle.unmapped["left"]
    x = rnd(2, 6, seed=5, scale=1.0)
    close(torch_out(handle.torch_model, x), ort_run(path, x))


def matmul_model(bias_first: bool, three_d: bool) -> onnx.ModelProto:
    """x @ W + b (the legacy exporter puts the bias first) -> Relu -> Wl @ r (a constant on the left)."""
    x_shape, b, wl, y_shape = (([2, 4, 6], rnd(1, 1, 5, seed=4), rnd(3, 4, seed=2), [2, 3, 5]) if three_d else
                               ([2, 6], rnd(5, seed=4), rnd(3, 2, seed=2), [3, 5]))
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm_node"),
             helper.make_node("Add", ["b", "mm"] if bias_first else ["mm", "b"], ["h"], name="bias_add"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["Wl", "r"], ["y"], name="left_mm")]
    return make_model(nodes, [helper.make_tensor_value_info("x", F32, x_shape)],
                      [helper.make_tensor_value_info("y", F32, y_shape)], {"W": rnd(6, 5, seed=1), "b": b, "Wl": wl})


@pytest.mark.parametrize("bias_first,three_d", [(True, False), (False, True)])
def test_matmul_constant_weight_becomes_linear_with_the_add_as_bias(tmp_path, bias_first, three_d):
    path = save(matmul_model(bias_first, three_d), tmp_path / "mm.onnx")
    handle = load_onnx(path)
    ref = handle.layer_map["mm_node"]
    assert (ref.op_type, ref.weight, ref.bias, ref.transposed) == ("MatMul", "W", "b", True)
    lin = handle.torch_model.get_submodule("mm_node")
    assert isinstance(lin, nn.Linear) and lin.bias is not None
    np.testing.assert_array_equal(lin.weight.detach().numpy(), rnd(6, 5, seed=1).T)
    assert "bias_add" not in dict(handle.torch_model.named_children())  # the Add is the Linear's bias now
    assert "left_mm" in handle.unmapped
    assert "mm_node.weight" not in handle.param_map  # stored transposed
    if not three_d:
        assert handle.param_map["mm_node.bias"] == "b"
    x = rnd(*([2, 4, 6] if three_d else [2, 6]), seed=7, scale=1.0)
    ref_out = ort_run(path, x)
    close(torch_out(handle.torch_model, x), ref_out)

    # fine-tuned bias goes into the factors and the pass writes it into the Add
    student = pipeline.factorize(handle, RankPlan({"mm_node": LayerPlan("mm_node", "svd", (2,))}))
    with torch.no_grad():
        student.get_submodule("mm_node").last.bias.add_(0.25)
    out, records = rewrite(handle, student)
    close(ort_run(out, x), torch_out(student, x))
    assert_untouched(handle.onnx_model, out, records)


@pytest.mark.parametrize("dynamo", [False, True])
def test_dense_updates_reach_weights_stored_transposed(tmp_path, dynamo):
    """Fine-tuned dense Linear on (B, T, C) -> a MatMul whose ONNX weight is W^T: written back transposed."""
    model, shape = _zoo("tiny")
    path = export(model, shape, tmp_path / "tiny.onnx", 18 if dynamo else 17, dynamo)
    handle = load_onnx(path)
    tuned = pipeline.factorize(handle, RankPlan())  # a copy, nothing factorized
    matmuls = [n for n, ref in handle.layer_map.items() if ref.op_type == "MatMul"]
    assert len(matmuls) >= 4 and all(handle.layer_map[n].transposed for n in matmuls)
    with torch.no_grad():
        for n in matmuls:
            tuned.get_submodule(n).weight.add_(0.05)
    x = np.random.default_rng(2).standard_normal((2, *shape[1:])).astype(np.float32)
    expected = torch_out(tuned, x)
    assert np.max(np.abs(expected - ort_run(path, x))) > 1e-3
    updates = onnx_dense_updates(handle, collect_factors(tuned).dense)
    for n in matmuls:
        assert handle.layer_map[n].weight in updates and f"{n}.weight" not in handle.param_map
    out, _ = passes.apply_factors(handle.onnx_model, {}, updates)
    close(ort_run(out, x), expected)


# ---------------------------------------------------------------------------------------------- convs, BN


def conv_bn_model(opset=17) -> onnx.ModelProto:
    """Conv (Constant weight + bias, asymmetric pads) -> BatchNorm (non-trivial stats) -> Relu -> grouped Conv
    -> Conv1x1 -> GlobalAveragePool -> Flatten -> Gemm (Constant weight)."""
    nodes = [
        const_node("w1", rnd(8, 3, 3, 3, seed=1)), const_node("b1", rnd(8, seed=2)),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="stem", pads=[0, 0, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "wg"], ["c2"], name="grouped", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c2", "wp", "bp"], ["c3"], name="point"),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        const_node("wfc", rnd(4, 12, seed=6)),
        helper.make_node("Gemm", ["f", "wfc", "bfc"], ["y"], name="fc", transB=1),
    ]
    inits = {"g": 1 + rnd(8, seed=3), "beta": rnd(8, seed=4), "mean": rnd(8, seed=5),
             "var": (1 + np.abs(rnd(8, seed=7))).astype(np.float32), "wg": rnd(8, 4, 3, 3, seed=8),
             "wp": rnd(12, 8, 1, 1, seed=9), "bp": rnd(12, seed=10), "bfc": rnd(4, seed=11)}
    return make_model(nodes, [helper.make_tensor_value_info("x", F32, ["N", 3, 8, 8])],
                      [helper.make_tensor_value_info("y", F32, ["N", 4])], inits, opset=opset)


def test_constant_weights_unfused_bn_padded_and_grouped_convs(tmp_path):
    path = save(conv_bn_model(), tmp_path / "convbn.onnx")
    handle = load_onnx(path)
    tm = handle.torch_model
    assert isinstance(tm.get_submodule("bn"), nn.BatchNorm2d)
    # the asymmetric-pad conv is onnx2torch's (pad, conv) pair: the layer is the conv inside
    assert set(handle.layer_map) == {"stem.1", "grouped", "point", "fc"}
    assert handle.layer_map["stem.1"].weight == "w1" and handle.layer_map["stem.1"].bias == "b1"
    assert handle.layer_map["grouped"].node == "grouped"
    assert handle.param_map["stem.1.weight"] == "w1" and handle.param_map["stem.1.bias"] == "b1"  # Constant outputs
    assert handle.param_map["fc.weight"] == "wfc"
    assert {k: v for k, v in handle.param_map.items() if k.startswith("bn.")} == {
        "bn.weight": "g", "bn.bias": "beta", "bn.running_mean": "mean", "bn.running_var": "var"}
    x = rnd(2, 3, 8, 8, seed=12, scale=1.0)
    ref = ort_run(path, x)
    close(torch_out(tm, x), ref)

    # the grouped conv stays dense in the plan; the others factorize and the rewrite matches torch
    shapes = pipeline.layer_shapes(handle)
    assert shapes["grouped"].groups == 2
    plan = RankPlan({"stem.1": LayerPlan("stem.1", "tt", (3, 2)), "point": LayerPlan("point", "svd", (3,)),
                     "fc": LayerPlan("fc", "svd", (2,)), "grouped": LayerPlan("grouped", "dense")})
    student = pipeline.factorize(handle, plan)
    out, records = rewrite(handle, student, buffers=True)
    close(ort_run(out, x), torch_out(student, x))
    assert_untouched(handle.onnx_model, out, records)


def test_bn_dense_update_reaches_onnx(tmp_path):
    path = save(conv_bn_model(), tmp_path / "convbn.onnx")
    handle = load_onnx(path)
    x = rnd(2, 3, 8, 8, seed=12, scale=1.0)
    ref = ort_run(path, x)
    tuned = pipeline.factorize(handle, RankPlan())  # a copy, nothing factorized
    bn = tuned.get_submodule("bn")
    with torch.no_grad():
        bn.running_mean.add_(0.5)
        bn.running_var.mul_(2.0)
        bn.weight.mul_(1.5)
        tuned.get_submodule("grouped").weight.mul_(0.5)
    expected = torch_out(tuned, x)
    assert np.max(np.abs(expected - ref)) > 1e-2
    out, _ = rewrite(handle, tuned, buffers=True)
    close(ort_run(out, x), expected)
    new = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    np.testing.assert_allclose(new["mean"], bn.running_mean.numpy())
    np.testing.assert_allclose(new["var"], bn.running_var.numpy())


def test_runtime_weight_conv_and_conv_transpose_are_imported_and_reported(tmp_path):
    nodes = [helper.make_node("Mul", ["w", "two"], ["w2"], name="scale_w"),
             helper.make_node("Conv", ["x", "w2", "b"], ["c"], name="dyn_conv", pads=[0, 0, 1, 1]),
             helper.make_node("ConvTranspose", ["c", "wt"], ["u"], name="up", strides=[2, 2]),
             helper.make_node("Conv", ["u", "wp"], ["y"], name="point")]
    m = make_model(nodes, [helper.make_tensor_value_info("x", F32, [1, 3, 6, 6])],
                   [helper.make_tensor_value_info("y", F32, [1, 5, 12, 12])],
                   {"w": rnd(4, 3, 2, 2), "two": np.float32(2.0), "b": rnd(4, seed=1), "wt": rnd(4, 6, 2, 2, seed=3),
                    "wp": rnd(5, 6, 1, 1, seed=2)})
    path = save(m, tmp_path / "dyn.onnx")
    handle = load_onnx(path)
    assert list(handle.layer_map) == ["point"]
    assert "computed at run time" in handle.unmapped["dyn_conv"]
    assert "ConvTranspose" in handle.unmapped["up"]
    assert handle.param_map["up.weight"] == "wt"  # a dense ConvTranspose is still fine-tuned and written back
    x = rnd(1, 3, 6, 6, seed=3, scale=1.0)
    close(torch_out(handle.torch_model, x), ort_run(path, x))


def test_conv1d(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="c1", pads=[1, 1], strides=[2]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "wp"], ["y"], name="c2")]
    m = make_model(nodes, [helper.make_tensor_value_info("x", F32, ["N", 6, 16])],
                   [helper.make_tensor_value_info("y", F32, ["N", 7, 8])],
                   {"w": rnd(10, 6, 3), "b": rnd(10, seed=1), "wp": rnd(7, 10, 1, seed=2)})
    path = save(m, tmp_path / "c1d.onnx")
    handle = load_onnx(path)
    assert isinstance(handle.torch_model.get_submodule("c1"), nn.Conv1d) and set(handle.layer_map) == {"c1", "c2"}
    student = pipeline.factorize(handle, RankPlan({"c1": LayerPlan("c1", "tt", (4, 3)),
                                                   "c2": LayerPlan("c2", "svd", (3,))}))
    out, records = rewrite(handle, student)
    x = rnd(2, 6, 16, seed=4, scale=1.0)
    close(ort_run(out, x), torch_out(student, x))
    assert_untouched(handle.onnx_model, out, records)


def test_an_import_that_computes_something_else_is_refused(tmp_path, monkeypatch):
    mod = importlib.import_module("rene_onnx.load.onnx_layers")

    path = save(conv_bn_model(), tmp_path / "convbn.onnx")
    real = mod._linear
    monkeypatch.setattr(mod, "_linear", lambda w, b: real(w * 1.01, b))  # a Gemm imported wrongly
    with pytest.raises(LoadError, match="does not reproduce onnxruntime's output"):
        load_onnx(path)
    handle = load_onnx(path, verify=False)
    assert handle.unmapped["fc"] == "the torch layer's weight does not match the ONNX weight"
    assert "fc" not in handle.layer_map and "fc.weight" not in handle.param_map


def test_dynamic_dims_need_input_shape(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    m = make_model(nodes, [helper.make_tensor_value_info("x", F32, [2, "T", 6])],
                   [helper.make_tensor_value_info("y", F32, [2, "T", 5])], {"W": rnd(6, 5)})
    path = save(m, tmp_path / "dyn.onnx")
    with pytest.raises(LoadError, match=r"input_shape: .*input 'x' has dynamic dim 1 \(T\).*input_shape='2,N,6'"):
        load_onnx(path)
    handle = load_onnx(path, (2, 7, 6))
    assert handle.input_shape == (2, 7, 6)
    with pytest.raises(LoadError, match="dim 2 is fixed to 6"):
        load_onnx(path, (2, 7, 5))


# ---------------------------------------------------------------------------------------------- refused input


def _bad(kind: str, tmp_path: Path) -> Path:
    good = conv_bn_model()
    path = tmp_path / f"{kind}.onnx"
    if kind == "missing":
        return path
    if kind == "truncated":
        data = good.SerializeToString()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\xff\xfe this is not a protobuf \x00\x01" * 10)
    elif kind == "checker":
        good.graph.node[4].input[0] = "undefined_tensor"
        save(good, path, check=False)
    elif kind in ("opset10", "opset21"):
        good.opset_import[0].version = int(kind[5:])
        save(good, path, check=False)
    elif kind in ("ir5", "ir11"):
        good.ir_version = int(kind[2:])
        save(good, path, check=False)
    elif kind == "no_layer":
        m = make_model([helper.make_node("Relu", ["x"], ["y"], name="r")],
                       [helper.make_tensor_value_info("x", F32, [1, 4])], [helper.make_tensor_value_info("y", F32, [1, 4])])
        save(m, path)
    elif kind == "runtime_only":
        m = make_model([helper.make_node("MatMul", ["x", "x"], ["y"], name="sq")],
                       [helper.make_tensor_value_info("x", F32, [4, 4])], [helper.make_tensor_value_info("y", F32, [4, 4])])
        save(m, path)
    elif kind == "dynamic":
        good.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
        save(good, path)
    elif kind == "int8_input":  # several inputs are fine (tests/test_multi_input.py); this dtype is not
        good.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.INT8, [1]))
        save(good, path)
    elif kind == "traversal":
        (tmp_path / "evil.bin").write_bytes(b"\x00" * 4096)  # exists: refused for where it is, not for missing
        sub = tmp_path / "models"
        sub.mkdir()
        path = sub / "traversal.onnx"
        t = next(t for t in good.graph.initializer if t.name == "wg")
        size = len(t.raw_data)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "../evil.bin"), ("offset", "0"), ("length", str(size))):
            t.external_data.add(key=k, value=v)
        onnx.save(good, str(path))
    return path


BAD = {
    "missing": "not found", "truncated": "truncated or corrupt", "garbage": "(truncated or corrupt|no ONNX graph)",
    "checker": "fails the ONNX checker: .*undefined_tensor", "opset10": "opset 10 is not supported",
    "opset21": "opset 21 is not supported", "ir5": "IR version 5 is too old", "ir11": "IR version 11 is not supported",
    "no_layer": "no Conv / Gemm / MatMul node", "runtime_only": "can be compressed .*computed at run time",
    "dynamic": r"input_shape: .*dynamic dim 2 \(H\)", "int8_input": "input 'extra' is INT8; supported input types",
    "traversal": r"'\.\./evil\.bin', outside the model's folder",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_one_load_error_and_the_file_is_untouched(tmp_path, kind):
    path = _bad(kind, tmp_path)
    digest = sha(path) if path.exists() else None
    with pytest.raises(LoadError, match=BAD[kind]) as err:
        load_onnx(path)
    assert "\n" not in str(err.value)
    assert (sha(path) if path.exists() else None) == digest


# ---------------------------------------------------------------------------------------------- external data


def test_external_data_roundtrip(tmp_path):
    m = conv_bn_model()
    path = tmp_path / "ext.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.weights",
              size_threshold=0)
    assert (tmp_path / "ext.weights").stat().st_size > 0
    light = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in light.graph.initializer)
    files = {p.name: sha(p) for p in tmp_path.iterdir()}
    handle = load_onnx(path)
    assert {p.name: sha(p) for p in tmp_path.iterdir()} == files
    assert handle.external_data
    assert all(t.data_location != TensorProto.EXTERNAL for t in handle.onnx_model.graph.initializer)
    x = rnd(2, 3, 8, 8, seed=12, scale=1.0)
    ref = ort_run(path, x)
    close(torch_out(handle.torch_model, x), ref)
    student = pipeline.factorize(handle, RankPlan({"point": LayerPlan("point", "svd", (3,))}))
    out, _ = rewrite(handle, student, buffers=True)
    out_path = tmp_path / "out" / "compressed.onnx"
    out_path.parent.mkdir()
    onnx.save(out, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="compressed.weights", size_threshold=0)
    close(ort_run(out_path, x), torch_out(student, x))
