"""Small ONNX graph helpers shared by the loaders, the rewrite stage and the validate modules (no torch)."""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from rene_onnx.errors import LoadError

#: ops an integer input may pass through on its way to a Gather's indices (values unchanged)
_PASS_THROUGH = ("Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Expand", "Slice", "Transpose",
                 "Concat")


def load_model(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """Return ``model`` itself, or load it from a path (with external data)."""
    if isinstance(model, onnx.ModelProto):
        return model
    path = model_path(model)
    try:
        return onnx.load(path)
    except Exception as e:  # protobuf DecodeError and friends
        raise LoadError(f"cannot read ONNX model {path!r}: {e}") from e


def model_path(path: str | os.PathLike) -> str:
    """``path`` as a str after checking that the file exists."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected an onnx.ModelProto or a path, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise LoadError(f"ONNX model file not found: {os.fspath(path)!r}")
    return os.fspath(path)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real graph inputs (initializers listed as inputs, old-style, are left out)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def input_dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    """Dims of a value info: int when static, the dim_param (or None) when symbolic."""
    if not vi.type.HasField("tensor_type"):
        raise LoadError(f"graph input {vi.name!r} is not a tensor; only tensor inputs are supported")
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        raise LoadError(f"graph input {vi.name!r} has no shape (unknown rank); cannot fix its dims")
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]


def resolve_input_shapes(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...] | list[int]] | None = None,
    *,
    strict: bool = True,
) -> dict[str, list[int | str | None]]:
    """Shapes of the graph inputs with symbolic dims fixed.

    ``input_shapes[name]`` gives the whole shape of an input; otherwise a
    symbolic leading (batch) dim becomes 1. With ``strict`` a dim that stays
    symbolic raises ``ValueError``; without, it is returned as is (str/None).
    """
    input_shapes = dict(input_shapes or {})
    inputs = graph_inputs(model)
    names = [vi.name for vi in inputs]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise LoadError(f"input_shapes names {unknown} are not graph inputs (inputs: {names})")
    out: dict[str, list[int | str | None]] = {}
    for vi in inputs:
        dims = input_dims(vi)
        if vi.name in input_shapes:
            given = [int(d) for d in input_shapes[vi.name]]
            if len(given) != len(dims):
                raise LoadError(
                    f"input {vi.name!r} has rank {len(dims)} ({_fmt(dims)}), input_shapes gives {given}"
                )
            for i, (g, d) in enumerate(zip(given, dims)):
                if g <= 0:
                    raise LoadError(f"input {vi.name!r}: dim {i} must be positive, got {given}")
                if isinstance(d, int) and d > 0 and d != g:
                    raise LoadError(f"input {vi.name!r}: dim {i} is fixed to {d} in the graph, input_shapes gives {g}")
            dims = list(given)
        elif dims and not (isinstance(dims[0], int) and dims[0] > 0):
            dims = [1, *dims[1:]]
        if strict:
            bad = [i for i, d in enumerate(dims) if not (isinstance(d, int) and d > 0)]
            if bad:
                raise LoadError(
                    f"input {vi.name!r} has symbolic dims {bad} ({_fmt(dims)}); "
                    f"give its full shape, e.g. input_shapes={{{vi.name!r}: (1, ...)}}"
                )
        out[vi.name] = dims
    return out


def with_static_inputs(model: onnx.ModelProto, shapes: Mapping[str, list[int | str | None]]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph inputs carry the int dims of ``shapes``."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name not in shapes:
            continue
        for d, v in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
            if isinstance(v, int) and v > 0:
                d.Clear()
                d.dim_value = v
    return m


def index_ranges(model: onnx.ModelProto) -> dict[str, int]:
    """Graph inputs used as indices into a constant table: input name -> the table's size along the gathered axis.

    An input counts when it reaches input 1 (the indices) of a ``Gather``
    whose data input is an initializer or a ``Constant`` (an embedding table),
    directly or through value-preserving ops (:data:`_PASS_THROUGH`: Cast,
    Reshape, Unsqueeze, ...). When it indexes several tables, the smallest
    size is kept, so every value in ``[0, n)`` is valid for all of them.
    """
    graph = model.graph
    sizes = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    sizes[node.output[0]] = list(a.t.dims)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i, t in enumerate(node.input):
            if t:
                users.setdefault(t, []).append(node)
    out: dict[str, int] = {}
    for vi in graph_inputs(model):
        found: list[int] = []
        seen, todo = set(), [vi.name]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for node in users.get(name, []):
                if node.domain not in ("", "ai.onnx"):
                    continue
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name:
                    table = sizes.get(node.input[0])
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    if table and -len(table) <= axis < len(table) and table[axis] > 0:
                        found.append(int(table[axis]))
                elif node.op_type in _PASS_THROUGH and node.input and node.input[0] == name:
                    todo.extend(o for o in node.output if o)
        if found:
            out[vi.name] = min(found)
    return out


def example_array(dtype: np.dtype, shape: tuple[int, ...], rng: np.random.Generator,
                  high: int | None = None) -> np.ndarray:
    """Example data of a graph input, valid for its dtype.

    float: standard normal; int: uniform in ``[0, high)`` when the input
    indexes a table of ``high`` rows (:func:`index_ranges`), else all ones
    (a valid attention mask / token type / count); bool: all True. Integer
    inputs never get random floats.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        if high is not None and high > 0:
            return rng.integers(0, high, size=shape).astype(dtype)
        return np.ones(shape, dtype)
    if dtype.kind == "b":
        return np.ones(shape, dtype=bool)
    raise LoadError(f"cannot make example data of dtype {dtype}")


def _fmt(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


class Constants:
    """Values known before run time in the original graph, through ``Identity`` chains, and where they live."""

    def __init__(self, model: onnx.ModelProto):
        self.inits = {t.name: t for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}

    def root(self, name: str) -> str | None:
        """The initializer or ``Constant`` output behind ``name`` (what a dense update can write)."""
        for _ in range(64):
            if name in self.inits:
                return name
            node = self.producer.get(name)
            if node is None or node.domain not in ("", "ai.onnx"):
                return None
            if node.op_type == "Constant":
                return name
            if node.op_type != "Identity" or not node.input:
                return None
            name = node.input[0]
        return None

    def value(self, name: str) -> np.ndarray | None:
        root = self.root(name)
        if root is None:
            return None
        if root in self.inits:
            return numpy_helper.to_array(self.inits[root])
        t = constant_tensor(self.producer[root])
        return numpy_helper.to_array(t) if t is not None else None


def constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a ``Constant`` node holds (None for sparse / string values)."""
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            t = onnx.TensorProto()
            t.CopyFrom(a.t)
            return t
        value = {"value_float": lambda: np.float32(a.f), "value_floats": lambda: np.asarray(a.floats, np.float32),
                 "value_int": lambda: np.int64(a.i), "value_ints": lambda: np.asarray(a.ints, np.int64)}.get(a.name)
        if value is not None:
            return numpy_helper.from_array(np.asarray(value()))
    return None  # sparse_value, strings: left to onnx2torch
