"""An ONNX file onnx2torch cannot import -> a ModelHandle of the graph alone (no torch model).

Data-free compression needs no torch model: the Conv / Gemm / MatMul weights are initializers of the
graph, and the passes rewrite the nodes from numpy factors (:mod:`rene_onnx.pipeline.graph_only`). The
handle's ``torch_model`` is None and ``import_error`` says why; its layers are named as the torch import
would name them (:func:`.onnx_import.torch_names`), so a rank plan written for one fits the other.
"""
from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path

import onnx

from .handle import ModelHandle, OnnxRef
from .onnx_file import check_compressible, input_specs, read_checked
from .onnx_import import TorchImportError, torch_names
from .onnx_layers import onnx_ref

#: what a run without the torch import cannot do (said in its notes and in the error of a run that needs it)
NEEDS_IMPORT = "fine-tuning, the RENE alpha search and calib / data inputs need a graph onnx2torch can import"


def graph_layers(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]]) -> list[tuple[str, object]]:
    """``(layer name, passes.OnnxLayer)`` of every Conv / Gemm / MatMul node, in graph order, counted at the
    static ``input_shapes`` (the layer name is the torch import's module name for the node)."""
    from rene_onnx.graph import with_static_inputs
    from rene_onnx.passes import find_layers

    names = torch_names(model.graph.node)
    static = with_static_inputs(model, {k: list(v) for k, v in input_shapes.items()})
    return [(names[ol.index], ol) for ol in find_layers(static)]


def graph_layer_map(layers: list[tuple[str, object]]) -> tuple[dict[str, OnnxRef], dict[str, str]]:
    """``(layer map, unmapped)`` of :func:`graph_layers`: the layers a pass can rewrite with the weight on the
    right (``x @ W``, as the torch import's Linear layers), the others with why they stay dense."""
    layer_map, unmapped = {}, {}
    for name, ol in layers:
        if ol.skip_reason:
            unmapped[name] = ol.skip_reason
        elif ol.weight_side != "right":
            unmapped[name] = "the constant weight is on the left (W @ x): kept dense"
        else:
            layer_map[name] = onnx_ref(ol)
    return layer_map, unmapped


def load_onnx_graph(path: str | os.PathLike, failure: TorchImportError,
                    input_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]] | None = None) -> ModelHandle:
    """The handle of an ONNX file without its torch import (``failure``: why onnx2torch could not import it)."""
    path = Path(path)
    light, original, external = read_checked(path)
    specs, notes = input_specs(original, input_shape, path.name)
    layers = graph_layers(original, {s.name: s.shape for s in specs})
    check_compressible([ol for _, ol in layers], path.name)
    layer_map, unmapped = graph_layer_map(layers)
    notes.insert(0, f"no torch model: {failure.reason}; ranks and factors come from the graph's weights alone, "
                    f"data-free ({NEEDS_IMPORT})")
    return ModelHandle(None, original, layer_map, {}, specs[0].shape, source=str(path), notes=notes,
                       unmapped=unmapped, external_data=external, inputs=specs, import_error=failure.reason)
