"""A fixed-batch export imports batch-dynamic; a BatchNormalization of unknown input rank imports (shim)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
import torch

from rene_onnx.load import load_onnx

F32 = TensorProto.FLOAT


def _save(nodes, inits, x_shape, y_shape, path):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, x_shape)],
                          [helper.make_tensor_value_info("y", F32, y_shape)],
                          initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


def _rnd(*shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.3).astype(np.float32)


def fixed_batch_cnn(path):
    """Conv -> GlobalAveragePool -> Reshape([1, 8]) -> Gemm: the batch (1) baked into the Reshape target."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Reshape", ["p", "shape"], ["f"], allowzero=1),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1)]
    inits = {"w": _rnd(8, 3, 3, 3), "shape": np.array([1, 8], np.int64), "fc": _rnd(5, 8, seed=1),
             "fb": _rnd(5, seed=2)}
    return _save(nodes, inits, [1, 3, 6, 6], [1, 5], path)


def test_fixed_batch_reshape_becomes_the_input_batch(tmp_path):
    h = load_onnx(fixed_batch_cnn(tmp_path / "fixed.onnx"))
    assert h.torch_batch is None
    assert any("Reshape target" in n for n in h.notes)
    x = torch.from_numpy(_rnd(4, 3, 6, 6, seed=3))
    with torch.no_grad():
        got = h.torch_model(x).numpy()
    sess = ort.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {"x": x[i:i + 1].numpy()})[0] for i in range(4)])
    assert got.shape == (4, 5) and np.allclose(got, ref, atol=1e-5)
    # the shipped graph is the user's: its Reshape target still holds the batch
    t = {i.name: numpy_helper.to_array(i) for i in h.onnx_model.graph.initializer}
    assert t["shape"].tolist() == [1, 8]


def test_fixed_batch_compress_with_calib(tmp_path):
    from tests.cli_inproc import cli

    fixed_batch_cnn(tmp_path / "fixed.onnx")
    np.savez(tmp_path / "calib.npz", x=_rnd(24, 3, 6, 6, seed=4))
    r = cli("compress", "fixed.onnx", "--calib", "calib.npz", "--epochs", "1", "--batch-size", "8",
            "--target-params", "0.7", "-o", "out.onnx", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    out = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(out, full_check=True)
    dims = [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 6, 6]  # the user's input signature


def unranked_bn_model(path):
    """Conv -> Squeeze / Unsqueeze by run-time axes (shape inference loses the rank) -> BatchNormalization."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a0", "zero"], ["axes"]),  # computed: not a constant for inference
             helper.make_node("Squeeze", ["c", "axes"], ["s"]),
             helper.make_node("Unsqueeze", ["s", "axes"], ["u"]),
             helper.make_node("BatchNormalization", ["u", "g", "b", "m", "v"], ["y"], epsilon=1e-3)]
    inits = {"w": _rnd(4, 3, 3, 3), "a0": np.array([0], np.int64), "zero": np.array([0], np.int64),
             "g": 1 + _rnd(4, seed=1), "b": _rnd(4, seed=2), "m": _rnd(4, seed=3),
             "v": 1 + np.abs(_rnd(4, seed=4))}
    return _save(nodes, inits, [1, 3, 5, 5], [1, 4, 5, 5], path)


def test_batchnorm_of_unknown_rank_imports(tmp_path):
    path = unranked_bn_model(tmp_path / "bn.onnx")
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    u = [vi for vi in m.graph.value_info if vi.name == "u"]
    assert not u or not u[0].type.tensor_type.HasField("shape")  # the case: rank unknown to inference
    h = load_onnx(path)  # verifies the torch import against onnxruntime
    bns = [mod for mod in h.torch_model.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 1 and abs(bns[0].eps - 1e-3) < 1e-9
    assert any(k.endswith("running_mean") for k in h.param_map)  # its stats map back to the ONNX tensors
