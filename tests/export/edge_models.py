"""Small ONNX models built in code for the export tests (no torch): a conv net, its TT-factorized twin, an MLP."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_net(seed: int = 0, batch: int | str = "N", size: int = 16, opset: int = 18) -> onnx.ModelProto:
    """input (batch, 3, size, size) -> conv 3x3 (3->16) relu -> conv 3x3 (16->32) relu -> GAP -> Gemm 32->10."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((32, 16, 3, 3)) * 0.12).astype(np.float32)
    fc = (rng.standard_normal((10, 32)) * 0.3).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w1, "w1"), (np.zeros(16, np.float32), "b1"), (w2, "w2"), (rng.standard_normal(32).astype(np.float32) * 0.1, "b2"),
        (fc, "fc.weight"), (np.zeros(10, np.float32), "fc.bias"))]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "conv_net", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                [batch, 3, size, size])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def tt_twin(model: onnx.ModelProto, ranks: tuple[int, int] = (8, 8), layer: str = "conv2") -> onnx.ModelProto:
    """``model`` with ``layer`` rewritten by the conv_tt pass (factors from the TT-SVD of its weight)."""
    from rene_onnx.decompose import TTTruncations
    from rene_onnx.passes import apply_factors
    from rene_onnx.plan import LayerFactors

    w = next(numpy_helper.to_array(t) for t in model.graph.initializer
             if t.name == next(n for n in model.graph.node if n.name == layer).input[1])
    arrays = TTTruncations(w).factors(*ranks)
    out, _ = apply_factors(model, {layer: LayerFactors(layer, "tt", ranks, arrays)})
    onnx.checker.check_model(out, full_check=True)
    return out


def mlp(seed: int = 0) -> onnx.ModelProto:
    """input (N, 64) -> MatMul 64x128 -> Add -> Relu -> MatMul 128x16: a MatMul-only model (dynamic quantization)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((64, 128)) * 0.1).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(128, np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((128, 16)) * 0.1).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def images(n: int, size: int = 16, seed: int = 1, groups: int | None = None) -> dict[str, np.ndarray]:
    """Smooth random images (N, 3, size, size) (+ ``groups`` when asked): inputs with some structure."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 3, size // 4, size // 4)).astype(np.float32)
    x = np.repeat(np.repeat(base, 4, axis=2), 4, axis=3) + 0.2 * rng.standard_normal((n, 3, size, size)).astype(np.float32)
    out = {"input": x.astype(np.float32)}
    if groups:
        out["groups"] = np.arange(n) % groups
    return out


def mish_net() -> onnx.ModelProto:
    """input (N, 8) -> Mish (an op that first appeared in opset 18): no older opset can hold it."""
    graph = helper.make_graph([helper.make_node("Mish", ["x"], ["y"], name="mish")], "mish",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
