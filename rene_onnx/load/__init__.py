"""Loaders: a torch model or an ONNX file -> :class:`ModelHandle` (torch module, original ONNX graph, layer map).

One job per module: :mod:`.handle` (the handle and its inputs), :mod:`.shapes` (``input_shape`` values),
:mod:`.torch_model` (zoo names, ``module:callable``, state dicts, export), :mod:`.onnx_file` (reading an
ONNX file and its checks), :mod:`.onnx_import` (onnx2torch on an importable copy), :mod:`.onnx_layers`
(Linear layers and the layer / parameter maps), :mod:`.onnx_model` (an ONNX file -> handle), :mod:`.onnx_graph`
(an ONNX file onnx2torch cannot import -> a handle without a torch model).
"""
from rene_onnx.errors import LoadError

from .handle import INPUT_DTYPES, InputSpec, ModelHandle, OnnxRef, example_tensors
from .onnx_file import IMPORT_OPSET, IR_RANGE, OPSET_RANGE, input_specs, read_onnx
from .onnx_graph import NEEDS_IMPORT, load_onnx_graph
from .onnx_import import SHIM_DOMAIN, TorchImportError
from .onnx_model import load_onnx
from .shapes import MAX_INPUT_ELEMENTS, check_input_size, parse_input_shapes, parse_shape
from .torch_model import (OPSET, build_layer_map, build_torch_model, export_onnx, load_state_dict_file, load_torch,
                          restore_dropped_biases)

__all__ = [
    "IMPORT_OPSET", "INPUT_DTYPES", "IR_RANGE", "LoadError", "MAX_INPUT_ELEMENTS", "NEEDS_IMPORT", "OPSET",
    "OPSET_RANGE", "SHIM_DOMAIN", "InputSpec", "ModelHandle", "OnnxRef", "TorchImportError", "build_layer_map",
    "build_torch_model", "check_input_size", "example_tensors", "export_onnx", "input_specs", "load_onnx",
    "load_onnx_graph", "load_state_dict_file", "load_torch", "parse_input_shapes", "parse_shape", "read_onnx",
    "restore_dropped_biases",
]
