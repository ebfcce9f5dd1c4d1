"""Shared pieces of the graph-surgery passes: the Pass type, records, constant lookup, naming, factor checks.

No torch here. Every pass module defines ``check(graph, node, lf) -> str | None``
(a reason to skip, or ``None``) and ``rewrite(graph, node, lf) -> list[gs.Node]``
(the replacement nodes, already wired: they read the old node's inputs and the
last one writes the old node's output tensor). The driver (:mod:`.apply`) puts
them in the old node's place and drops what the old node leaves orphaned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from rene_onnx.decompose import registry
from rene_onnx.plan import LayerFactors

DEFAULT_DOMAINS = ("", "ai.onnx", None)  # gs reads the default domain as None


@dataclass
class PassRecord:
    """What happened to one requested node."""

    node: str  # the node's key (its ONNX name)
    op_type: str
    method: str
    status: str  # "factorized" | "skipped"
    reason: str = ""  # why it was skipped ("" when factorized)
    new_nodes: list[str] = field(default_factory=list)


CheckFn = Callable[[gs.Graph, gs.Node, LayerFactors], "str | None"]
RewriteFn = Callable[[gs.Graph, gs.Node, LayerFactors], "list[gs.Node]"]


@dataclass(frozen=True)
class Pass:
    """One rewrite rule: ``op_type`` nodes factorized with ``method``."""

    name: str
    op_type: str
    method: str
    check: CheckFn
    rewrite: RewriteFn
    doc: str = ""


# ---------------------------------------------------------------------------------------------- constants


def constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of ``tensor`` if it is known before run time, else ``None``.

    Known: an initializer, the output of a ``Constant`` node, or an ``Identity``
    of either (any chain length).
    """
    for _ in range(64):  # Identity chains are short; the bound guards against cycles in broken graphs
        if tensor is None or not tensor.name:
            return None
        if isinstance(tensor, gs.Constant):
            return np.asarray(tensor.values)
        if len(tensor.inputs) != 1:
            return None  # graph input, or no producer
        prod = tensor.inputs[0]
        if prod.domain not in DEFAULT_DOMAINS:
            return None
        if prod.op == "Constant":
            return _constant_node_value(prod)
        if prod.op == "Identity" and prod.inputs:
            tensor = prod.inputs[0]
            continue
        return None
    return None


def _constant_node_value(node: gs.Node) -> np.ndarray | None:
    a = node.attrs
    if isinstance(a.get("value"), gs.Constant):
        return np.asarray(a["value"].values)
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    return None  # sparse_value, strings: never a weight


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.outputs)


def remove_node(graph: gs.Graph, node: gs.Node) -> int:
    """Disconnect ``node`` and drop it from ``graph.nodes``; return its former position."""
    idx = index_of(graph, node)
    node.inputs.clear()
    node.outputs.clear()
    del graph.nodes[idx]
    return idx


def index_of(graph: gs.Graph, node: gs.Node) -> int:
    for i, n in enumerate(graph.nodes):
        if n is node:
            return i
    raise ValueError(f"node {node.name!r} is not in the graph")


def remove_orphans(graph: gs.Graph, tensors: list[gs.Tensor]) -> None:
    """Drop the ``Constant`` / ``Identity`` producers of constant ``tensors`` nothing reads any more.

    Initializers need no work here: an unread initializer is not written back.
    Runtime tensors and their producers are never touched.
    """
    stack = list(tensors)
    while stack:
        t = stack.pop()
        if isinstance(t, gs.Constant) or not t.name or t.outputs or is_graph_output(graph, t):
            continue
        if len(t.inputs) != 1:
            continue
        prod = t.inputs[0]
        if prod.op not in ("Constant", "Identity") or prod.domain not in DEFAULT_DOMAINS:
            continue
        if any(o.outputs or is_graph_output(graph, o) for o in prod.outputs):
            continue
        if constant_value(t) is None:
            continue  # an Identity of a runtime tensor: not ours to remove
        upstream = list(prod.inputs)
        remove_node(graph, prod)
        stack.extend(upstream)


# ------------------------------------------------------------------------------------------------ naming


def unique_name(graph: gs.Graph, base: str) -> str:
    """``base``, or ``base_1``, ``base_2``... : unique among the graph's tensor and node names."""
    names = graph.__dict__.get("_rene_used_names")  # not getattr: gs.Graph logs unknown attribute lookups
    if names is None:
        names = set(graph.tensors().keys()) | {n.name for n in graph.nodes}
        graph.__dict__["_rene_used_names"] = names
    name, i = base, 1
    while name in names:
        name, i = f"{base}_{i}", i + 1
    names.add(name)
    return name


def new_const(graph: gs.Graph, base: str, values: np.ndarray) -> gs.Constant:
    return gs.Constant(unique_name(graph, base), np.ascontiguousarray(values))


def new_var(graph: gs.Graph, base: str) -> gs.Variable:
    # no dtype / shape: no value_info is written for it (shape inference fills it in)
    return gs.Variable(unique_name(graph, base))


def new_node(graph: gs.Graph, op: str, name: str, inputs: list, outputs: list, attrs: dict | None = None) -> gs.Node:
    return gs.Node(op, name=unique_name(graph, name), attrs=dict(attrs or {}), inputs=inputs, outputs=outputs)


# ----------------------------------------------------------------------------------------------- factors


def float_dtype(dtype: np.dtype, node: gs.Node) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"node {node.name!r}: weight dtype {dtype} is not a float type; cannot write factors")
    return dtype


def factor(node: gs.Node, lf: LayerFactors, key: str, shape: tuple[int, ...], dtype: np.dtype,
           alt_shapes: tuple[tuple[int, ...], ...] = ()) -> np.ndarray:
    """``lf.arrays[key]`` checked against ``shape`` and cast to ``dtype``.

    Also accepted, then reshaped: ``shape`` without its trailing 1s (e.g. a 2-D
    ``(r, Cin)`` for a ``(r, Cin, 1, 1)`` 1x1 conv) and any of ``alt_shapes``.
    """
    a = np.asarray(lf.arrays[key])
    shape = tuple(int(s) for s in shape)
    trimmed = shape
    while len(trimmed) > 2 and trimmed[-1] == 1:
        trimmed = trimmed[:-1]
    if a.shape not in (shape, trimmed, *alt_shapes):
        raise ValueError(f"node {node.name!r}: {lf.method} factor {key!r} has shape {list(a.shape)}, "
                         f"expected {list(shape)}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"node {node.name!r}: {lf.method} factor {key!r} is not numeric (dtype {a.dtype})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"node {node.name!r}: {lf.method} factor {key!r} holds NaN or Inf")
    return a.reshape(shape).astype(dtype)


def dim(node: gs.Node, lf: LayerFactors, key: str, axis: int) -> int:
    """One dimension of a factor array (used to read the ranks before the full shape check)."""
    a = np.asarray(lf.arrays[key])
    if a.ndim <= axis:
        raise ValueError(f"node {node.name!r}: {lf.method} factor {key!r} has shape {list(a.shape)}, "
                         f"expected at least {axis + 1} dimensions")
    return int(a.shape[axis])


def check_rank_match(node: gs.Node, lf: LayerFactors, ranks: tuple[int, ...]) -> None:
    """The ranks the arrays imply must be the ranks the factors declare (TT ``(r,)`` means ``(r, r)``)."""
    declared = tuple(lf.ranks)
    if not declared:
        return
    method = registry.get(lf.method)
    if len(declared) == 1 and method.n_ranks > 1:
        declared = method.expand(declared[0])
    if declared != tuple(ranks):
        raise ValueError(f"node {node.name!r}: {lf.method} ranks {list(lf.ranks)} do not match the factor "
                         f"arrays (which have ranks {list(ranks)})")


def bias_vector(node: gs.Node, lf: LayerFactors, out: int, dtype: np.dtype) -> np.ndarray | None:
    """``lf.bias`` checked to hold ``out`` values, cast to ``dtype``; ``None`` when the factors carry none."""
    b = lf.bias
    if b is None:
        return None
    b = np.asarray(b)
    if b.size != out:
        raise ValueError(f"node {node.name!r}: bias has {b.size} values, expected {out}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"node {node.name!r}: bias holds NaN or Inf")
    return b.reshape(out).astype(dtype)


def matrix_factors(node: gs.Node, lf: LayerFactors, out: int, inp: int,
                   dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``U`` (out, r), ``V`` (r, in) and the bias (or ``None``) of an SVD-factorized matrix layer, checked and cast."""
    dtype = float_dtype(dtype, node)
    r = dim(node, lf, "V", 0)
    check_rank_match(node, lf, (r,))
    return (factor(node, lf, "U", (out, r), dtype), factor(node, lf, "V", (r, inp), dtype),
            bias_vector(node, lf, out, dtype))


def prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))
