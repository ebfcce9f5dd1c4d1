"""Reading an ONNX file safely, and the checks every ONNX input passes before anything else is done.

Each check fails with one :class:`~rene_onnx.errors.LoadError` line and never touches the file: missing
file; truncated / corrupt protobuf; IR version outside 6..10; default-domain opset outside 11..20;
external data pointing outside the model's folder (refused before anything is read); the ONNX checker;
no Conv / Gemm / MatMul a pass can rewrite; an input dtype other than float32 / int64 / int32 / bool;
more than one output; a dynamic input dim other than the batch without its shape.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from rene_onnx.errors import LoadError

from .handle import INPUT_DTYPES, InputSpec

IR_RANGE = (6, 10)  # onnxruntime-gpu reads up to 13; the supported range is what the tools here are tested on


OPSET_RANGE = (11, 20)  # default (ai.onnx) domain
IMPORT_OPSET = 17  # newest opset whose ops onnx2torch converts


DEFAULT_DOMAINS = ("", "ai.onnx")


def read_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file with every check of ``load_onnx`` (versions, checker, external data in its folder)."""
    return read_checked(Path(path))[1]


def read_checked(path: Path) -> tuple[onnx.ModelProto, onnx.ModelProto, bool]:
    """(graph without external data, the full model, whether it has external data), all checked."""
    light = _read(path)
    _check_versions(light, path.name)
    external = _check_external_data(light, path)
    _run_checker(path)
    return light, (_with_external_data(light, path) if external else light), external


def _read(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise LoadError(f"ONNX file not found: {path}")
    if not path.is_file():
        raise LoadError(f"not a file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise LoadError(f"{path.name} is not a readable ONNX model (truncated or corrupt protobuf: {line(e)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise LoadError(f"{path.name} holds no ONNX graph (empty, truncated, or not an ONNX model)")
    return model


def _check_versions(model: onnx.ModelProto, name: str) -> None:
    lo, hi = IR_RANGE
    ir = model.ir_version
    if ir > hi:
        raise LoadError(f"{name}: ONNX IR version {ir} is not supported (supported: {lo}..{hi}; onnxruntime reads "
                        f"up to 13): re-save it with model.ir_version = {hi} if it uses no newer IR feature")
    if ir < lo:
        raise LoadError(f"{name}: ONNX IR version {ir} is too old (supported: {lo}..{hi}): re-export it, or "
                        f"upgrade it with onnx.version_converter")
    opsets = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not opsets:
        raise LoadError(f"{name}: the model imports no default-domain (ai.onnx) opset")
    lo, hi = OPSET_RANGE
    if not lo <= opsets[0] <= hi:
        raise LoadError(f"{name}: opset {opsets[0]} is not supported (supported: {lo}..{hi}): convert it with "
                        f"onnx.version_converter.convert_version(model, {IMPORT_OPSET})")


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in ``graph``: initializers, sparse ones, node attributes, subgraphs."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            for sp in a.sparse_tensors:
                yield sp.values
                yield sp.indices
            if a.HasField("g"):
                yield from _graph_tensors(a.g)
            for g in a.graphs:
                yield from _graph_tensors(g)


def _check_external_data(model: onnx.ModelProto, path: Path) -> bool:
    """Refuse external data outside the model's folder (before reading any); True if the model has some."""
    folder = os.path.realpath(path.parent)
    found = False
    for t in _graph_tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        found = True
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = os.path.realpath(os.path.join(folder, location))
        if not location or os.path.isabs(location) or os.path.commonpath([folder, target]) != folder \
                or target == folder:
            raise LoadError(f"{path.name}: tensor {t.name!r} points its external data at {location!r}, outside "
                            f"the model's folder; refusing to read it")
        if not os.path.isfile(target):
            raise LoadError(f"{path.name}: external data file {location!r} of tensor {t.name!r} not found in {folder}")
    return found


def _run_checker(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:
        raise LoadError(f"{path.name} fails the ONNX checker: {line(e, 300)}") from None


def _with_external_data(light: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    full = onnx.ModelProto()
    full.CopyFrom(light)
    try:
        onnx.load_external_data_for_model(full, str(path.parent))
    except Exception as e:
        raise LoadError(f"{path.name}: cannot read its external data: {line(e)}") from None
    return full


def input_specs(model: onnx.ModelProto, input_shape, name: str) -> tuple[list[InputSpec], list[str]]:
    """One InputSpec per graph input (dtype checked, shape static: batch 1 unless given) and notes."""
    from rene_onnx.graph import graph_inputs, index_ranges, resolve_input_shapes

    inputs = graph_inputs(model)
    names = [vi.name for vi in inputs]
    if not inputs:
        raise LoadError(f"{name}: the model has no graph input")
    if len(model.graph.output) != 1:
        raise LoadError(f"{name}: the model has {len(model.graph.output)} outputs; only single-output models are "
                        f"supported")
    if input_shape is None:
        given = {}
    elif isinstance(input_shape, Mapping):
        unknown = [k for k in input_shape if k not in names]
        if unknown:
            raise LoadError(f"{name}: names {', '.join(map(repr, unknown))}, not a graph input "
                            f"(inputs: {', '.join(names)})", option="input_shape")
        given = {k: _positive(v, name) for k, v in input_shape.items()}
    elif len(inputs) == 1:
        given = {names[0]: _positive(input_shape, name)}
    else:
        raise LoadError(f"{name}: the model has {len(inputs)} inputs ({', '.join(names)}): give a shape per input "
                        f"with dynamic dims, by name (NAME:DIMS), e.g. {{input_shape}}", option="input_shape",
                        refs={"input_shape": f"{names[0]}:1,16"})
    dtypes = {}
    for vi in inputs:
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        dtype = None
        if tt is not None and tt.elem_type:
            try:
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
            except Exception:  # a type numpy has no dtype for
                dtype = None
        if dtype not in INPUT_DTYPES:
            kind = onnx.TensorProto.DataType.Name(tt.elem_type) if tt is not None else "not a tensor"
            raise LoadError(f"{name}: input {vi.name!r} is {kind}; supported input types: "
                            f"{', '.join(INPUT_DTYPES)} tensors")
        dtypes[vi.name] = dtype
    no_shape = [vi.name for vi in inputs if not vi.type.tensor_type.HasField("shape") and vi.name not in given]
    if no_shape:
        raise LoadError(f"{name}: input(s) {', '.join(map(repr, no_shape))} have no shape in the graph: give "
                        + ("it" if len(inputs) == 1 else "each one's, by name (NAME:DIMS)"), option="input_shape")
    shaped = onnx.ModelProto()
    shaped.CopyFrom(model)
    for vi in graph_inputs(shaped):  # a shapeless input gets the rank of its given shape, all dims symbolic
        if not vi.type.tensor_type.HasField("shape"):
            for _ in given[vi.name]:
                vi.type.tensor_type.shape.dim.add()
    try:
        dims = resolve_input_shapes(shaped, given, strict=False)
    except ValueError as e:
        raise LoadError(f"{name}: does not fit: {e}", option="input_shape") from None
    dynamic = {k: [i for i, d in enumerate(v) if not isinstance(d, int)] for k, v in dims.items()}
    dynamic = {k: v for k, v in dynamic.items() if v}
    if dynamic:
        def example(k):
            return ",".join(str(d) if isinstance(d, int) else "N" for d in dims[k])

        if len(inputs) == 1:
            k = names[0]
            what = ", ".join(f"dim {i} ({dims[k][i] or '?'})" for i in dynamic[k])
            raise LoadError(f"{name}: input {k!r} has dynamic {what}: give the full shape, e.g. {{input_shape}}",
                            option="input_shape", refs={"input_shape": example(k)})
        what = "; ".join(f"{k!r} dims {', '.join(f'{i} ({dims[k][i] or chr(63)})' for i in v)}"
                         for k, v in dynamic.items())
        shown = ", ".join(f"{k}:{example(k)}" for k in dynamic)
        raise LoadError(f"{name}: dynamic input dims need a shape per input, by name (NAME:DIMS): {what}; e.g. "
                        f"{shown}", option="input_shape")
    ranges = index_ranges(model)
    notes, specs = [], []
    for vi in inputs:
        graph_dims = vi.type.tensor_type.shape.dim
        symbolic = tuple(i for i, d in enumerate(graph_dims) if not d.HasField("dim_value"))
        if vi.name not in given and graph_dims and not graph_dims[0].HasField("dim_value"):
            notes.append(f"input {vi.name!r}: dynamic batch dim {graph_dims[0].dim_param or '?'!r} taken as 1")
        specs.append(InputSpec(vi.name, tuple(int(d) for d in dims[vi.name]), dtypes[vi.name],
                               ranges.get(vi.name) if dtypes[vi.name] in ("int64", "int32") else None,
                               symbolic if graph_dims else tuple(range(len(dims[vi.name])))))
    return specs, notes


def _positive(shape, name: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    if not shape or any(d <= 0 for d in shape):
        raise LoadError(f"{name}: must be positive integers, got {list(shape)}", option="input_shape")
    return shape


def check_compressible(layers, name: str) -> None:
    if any(ol.skip_reason is None for ol in layers):
        return
    if not layers:
        raise LoadError(f"{name}: no Conv / Gemm / MatMul node: nothing to compress")
    why = Counter(f"{ol.op_type}: {ol.skip_reason}" for ol in layers)
    raise LoadError(f"{name}: no Conv / Gemm / MatMul node can be compressed ("
                    + "; ".join(f"{n}x {r}" for r, n in why.most_common(3)) + ")")


def line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
