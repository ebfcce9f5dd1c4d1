"""Per-layer INT8 error, and factorized chains that quantize clearly worse than their dense layer.

A *layer* is a Conv / Gemm / MatMul node with a constant weight, or a factorized chain that the
rewrite passes wrote in its place (nodes ``<layer>/tt_first``, ``<layer>/tt_core``, ``<layer>/tt_last``;
``cp_*``; ``svd_*``), whose last node writes the dense layer's output tensor.

Each layer's error is measured *in isolation*: the model is quantized with only that layer's nodes
(``quantize_static(..., nodes_to_quantize=...)``, the same settings, the calibration ranges of the
full quantization read back from onnxruntime's calibration cache), so everything before it is exact
float, and its output (after its output QDQ pair, where there is one) is compared with the float
model's on a few inputs. A chain carries more quantization points than the dense conv (its rank-r
intermediate activations, three weight tensors), so this says directly what the factorization
costs under INT8. ``rel_error`` = ||q - f|| / ||f|| over those inputs; ``sqnr_db`` = -20 log10 of it.

With the dense original at hand, every chain is compared with its dense layer measured the same
way in the original. A three-factor chain quantizes three activations and three weights where the
dense layer quantizes one of each, so about sqrt(3) = 1.7x the dense layer's error is its expected
price (measured on ResNet-18 TT 0.25: 1.4x to 2.7x). A chain whose error is at least ``ratio``
times the dense layer's (2.5x, i.e. 8 dB less SQNR, by default) and at least :data:`MIN_GAP`
higher is *lossy*: the report says so, and ``lossy_chains="float"`` keeps its nodes in float in
the INT8 artifact (the compress path can instead keep the layer dense).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from rene_onnx.progress import emit

#: a lossy chain's error must also exceed the dense layer's by this much (relative error), not only by the ratio
MIN_GAP = 0.01
CHAIN = re.compile(r"^(?P<layer>.+)/(?P<method>tt|cp|svd)_(?:first|core|last)$")
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class Layer:
    name: str
    method: str  # dense | tt | cp | svd
    nodes: list[str]
    output: str


@dataclass
class LayerError:
    name: str
    method: str
    nodes: int
    rel_error: float
    sqnr_db: float | None
    dense_rel_error: float | None = None
    dense_sqnr_db: float | None = None
    lossy: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def find_layers(model: onnx.ModelProto) -> list[Layer]:
    """The layers of ``model`` in graph order (see the module docstring)."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    layers: dict[str, Layer] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in consts:
            continue
        m = CHAIN.match(node.name)
        if m:
            layer = layers.setdefault(m["layer"], Layer(m["layer"], m["method"], [], node.output[0]))
            layer.nodes.append(node.name)
            layer.output = node.output[0]  # graph order: the last factor writes the layer's output
        elif node.name:
            layers[node.name] = Layer(node.name, "dense", [node.name], node.output[0])
    return list(layers.values())


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the tensors ``names`` (float, shape left to the runtime)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return m


def after_qdq(model: onnx.ModelProto, tensor: str) -> str:
    """The tensor downstream nodes read in place of ``tensor``: its DequantizeLinear output after a QDQ pair."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    for q in users.get(tensor, []):
        if q.op_type == "QuantizeLinear":
            for dq in users.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return tensor


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    from rene_onnx.validate.numerics import make_session

    sess = make_session(with_outputs(model, names), "cpu")
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for f in feeds:
        for n, v in zip(names, sess.run(names, {i.name: f[i.name] for i in sess.get_inputs()})):
            got[n].append(np.asarray(v, np.float64))
    return {n: np.concatenate([v.reshape(len(v), -1) if v.ndim else v.reshape(1, 1) for v in vs])
            for n, vs in got.items()}


def _rel(q: np.ndarray, f: np.ndarray) -> float:
    nf = float(np.linalg.norm(f))
    return float(np.linalg.norm(q - f) / nf) if nf > 0 else float(np.linalg.norm(q) > 0)


def _db(rel: float) -> float | None:
    return None if rel <= 0 else float(-20 * np.log10(rel))


def measure(pre: Path, feeds: list[dict[str, np.ndarray]], quantize_only: Callable[[list[str], Path], Path],
            work: Path, layers: list[Layer] | None = None) -> dict[str, LayerError]:
    """Isolated INT8 error of each layer of the pre-processed float model ``pre`` on ``feeds``.

    ``quantize_only(nodes, dst)`` writes ``pre`` quantized with only ``nodes`` to ``dst`` (cached ranges).
    """
    float_model = onnx.load(str(pre))
    layers = find_layers(float_model) if layers is None else layers
    ref = _run(float_model, feeds, [l.output for l in layers])
    out: dict[str, LayerError] = {}
    for i, layer in enumerate(layers):
        emit("export", step=i + 1, total=len(layers), message="layer error", layer=layer.name)
        dst = quantize_only(layer.nodes, work / f"layer_{i}.onnx")
        q = onnx.load(str(dst))
        probe = after_qdq(q, layer.output)
        got = _run(q, feeds, [probe])[probe]
        rel = _rel(got, ref[layer.output])
        out[layer.name] = LayerError(layer.name, layer.method, len(layer.nodes), rel, _db(rel))
        dst.unlink(missing_ok=True)
    return out


def compare_dense(chains: dict[str, LayerError], dense: dict[str, LayerError], ratio: float = 2.5) -> list[str]:
    """Fill each chain's dense error from ``dense`` (same layer name); return the lossy chains' names."""
    lossy = []
    for name, err in chains.items():
        d = dense.get(name)
        if err.method == "dense" or d is None:
            continue
        err.dense_rel_error, err.dense_sqnr_db = d.rel_error, d.sqnr_db
        err.lossy = err.rel_error >= ratio * d.rel_error and err.rel_error - d.rel_error >= MIN_GAP
        if err.lossy:
            lossy.append(name)
    return lossy
