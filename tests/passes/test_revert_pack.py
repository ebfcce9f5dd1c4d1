"""Weight-stripped packs (rene_onnx.pack) and reverting factorized chains on the graphs alone (passes.revert)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper as h, numpy_helper

from onnx_cases import MLP_LAYER_NODES as LAYER_NODES, factored_chain as _factored, mlp_chain as _mlp
from rene_onnx.errors import UserError
from rene_onnx.pack import refill_weights, strip_weights
from rene_onnx.passes import revert_layers


def test_strip_refill_round_trip():
    m = _mlp([64, 64, 8])  # W0: 4096 floats (stripped), W1: 512 (< min_size 1024, kept)
    stripped = strip_weights(m)
    assert stripped.ByteSize() < m.ByteSize() / 4
    filled = refill_weights(stripped)
    onnx.checker.check_model(filled, full_check=True)
    (w0, w1), (f0, f1) = m.graph.initializer, filled.graph.initializer
    assert tuple(f0.dims) == (64, 64) and f0.data_type == w0.data_type
    assert not np.array_equal(numpy_helper.to_array(w0), numpy_helper.to_array(f0))  # random, not the original
    assert np.array_equal(numpy_helper.to_array(w1), numpy_helper.to_array(f1))


def test_revert_layers_puts_the_dense_node_back():
    dense, comp = _mlp([256, 256, 256]), _factored([256, 256, 256], [8, 2048])
    m = revert_layers(dense, comp, LAYER_NODES, ["layer1"])
    onnx.checker.check_model(m, full_check=True)
    assert [n.name for n in m.graph.node] == ["mm0/svd_first", "mm0/svd_last", "mm1"]
    assert sorted(t.name for t in m.graph.initializer) == ["W1", "mm0/A", "mm0/B"]  # the chain's weights are gone
    from rene_onnx.validate import run_onnx

    x = {"x": np.ones((2, 256), np.float32)}
    mid = run_onnx(_cut(comp, "h0"), x)[0]  # layer0's chain is untouched, layer1 is the dense W1 again
    w1 = numpy_helper.to_array(next(t for t in dense.graph.initializer if t.name == "W1"))
    np.testing.assert_allclose(run_onnx(m, x)[0], mid @ w1, rtol=1e-4, atol=1e-3)


def _cut(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend([h.make_tensor_value_info(output, TensorProto.FLOAT, None)])
    return m


def test_strip_is_a_copy_and_refill_is_seeded():
    m = _mlp([64, 64, 8])
    before = m.SerializeToString()
    stripped = strip_weights(m)
    assert m.SerializeToString() == before  # the input is not changed
    a = refill_weights(onnx.load_from_string(stripped.SerializeToString()), seed=3)
    b = refill_weights(onnx.load_from_string(stripped.SerializeToString()), seed=3)
    assert a.SerializeToString() == b.SerializeToString()
    w = numpy_helper.to_array(a.graph.initializer[0])
    assert 0.5 / 8 < w.std() < 2 / 8  # N(0, 1/fan_in) with fan_in 64


def test_revert_layers_leaves_the_input_and_names_a_bad_layer():
    dense, comp = _mlp([256, 256, 256]), _factored([256, 256, 256], [8, 2048])
    before = comp.SerializeToString()
    both = revert_layers(dense, comp, LAYER_NODES, ["layer0", "layer1"])
    assert comp.SerializeToString() == before
    assert [n.name for n in both.graph.node] == ["mm0", "mm1"]
    assert sorted(t.name for t in both.graph.initializer) == ["W0", "W1"]
    with pytest.raises(UserError, match="layer9"):
        revert_layers(dense, comp, LAYER_NODES, ["layer9"])
