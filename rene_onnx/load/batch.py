"""A graph exported with a fixed batch, made batch-dynamic in its torch import.

Exporters bake the batch into ``Reshape`` targets (``x.view(1, 1280)`` becomes ``Reshape(x, [1, 1280])``),
so the torch import of a batch-1 export fails on a batch of 8. :func:`free_batch` rewrites, in the
IMPORT COPY only (the shipped graph keeps the user's input signature), each ``Reshape`` whose target's
first entry is provably the batch: the graph inputs' first dim is given a symbol, ONNX shape
inference propagates it, and a target ``[B, d1, ...]`` is rewritten to ``[0, d1, ...]`` (copy the
input's first dim; ``[-1, d1, ...]`` under ``allowzero=1``) only when the Reshape's input has that
symbol as its first dim and its other dims multiply to ``d1 * ...``. That is repeated until nothing
changes (a rewritten Reshape lets the symbol reach the next one). :func:`batch_is_free` then checks
the torch module at another batch size against the stacked single-sample outputs.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper
import torch

from .onnx_file import DEFAULT_DOMAINS

BATCH_SYMBOL = "rene_batch"


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch every graph input fixes (the same first dim on all of them); None: dynamic or mixed."""
    inits = {t.name for t in model.graph.initializer}
    firsts = set()
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not dims or not dims[0].HasField("dim_value"):
            return None
        firsts.add(int(dims[0].dim_value))
    return firsts.pop() if len(firsts) == 1 else None


def free_batch(model: onnx.ModelProto) -> int:
    """Rewrite the Reshape targets of ``model`` (an import copy) that fix the batch; returns how many."""
    batch = fixed_batch(model)
    if batch is None:
        return 0
    done: set[int] = set()
    for _ in range(sum(n.op_type == "Reshape" for n in model.graph.node)):
        shapes = _symbolic_shapes(model)
        if shapes is None:
            break
        changed = False
        inits = {t.name: t for t in model.graph.initializer}
        for i, node in enumerate(model.graph.node):
            if i in done or node.op_type != "Reshape" or node.domain not in DEFAULT_DOMAINS or len(node.input) < 2:
                continue
            target = inits.get(node.input[1])
            if target is None:
                continue
            new = _free_target(numpy_helper.to_array(target), shapes.get(node.input[0]), batch,
                               any(a.name == "allowzero" and a.i == 1 for a in node.attribute))
            if new is None:
                continue
            t = numpy_helper.from_array(new, _unique(f"{node.input[1]}_free_batch", inits))
            model.graph.initializer.append(t)
            inits[t.name] = t
            node.input[1] = t.name  # a new tensor: the target may be shared with a Reshape that is not rewritten
            done.add(i)
            changed = True
        if not changed:
            break
    return len(done)


def _free_target(target: np.ndarray, in_shape, batch: int, allowzero: bool) -> np.ndarray | None:
    """``target`` with its first entry made the input's batch, or None when that is not provably right."""
    if target.ndim != 1 or target.size == 0 or int(target[0]) != batch or in_shape is None or not in_shape:
        return None
    if in_shape[0] != BATCH_SYMBOL or not all(isinstance(d, int) and d > 0 for d in in_shape[1:]):
        return None
    rest = [int(d) for d in target[1:]]
    if any(d <= 0 for d in rest) or math.prod(rest) != math.prod(in_shape[1:]):
        return None  # a 0 / -1 elsewhere, or the batch is not the first dim of the result
    out = target.copy()
    out[0] = -1 if allowzero else 0
    return out


def _symbolic_shapes(model: onnx.ModelProto) -> dict[str, list] | None:
    """Value name -> dims (int, or a symbol name, or None) with the inputs' batch a symbol; None if inference fails."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    inits = {t.name for t in m.graph.initializer}
    for vi in m.graph.input:
        if vi.name not in inits:
            d = vi.type.tensor_type.shape.dim[0]
            d.Clear()
            d.dim_param = BATCH_SYMBOL
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
    except Exception:
        return None
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return out


def _unique(name: str, taken) -> str:
    k, out = 0, name
    while out in taken:
        k += 1
        out = f"{name}_{k}"
    return out


def batch_is_free(gm: torch.nn.Module, xs: dict[str, torch.Tensor]) -> bool:
    """Whether ``gm`` runs a batch of 2 (``xs`` stacked with a second draw) and gives each sample's own output."""
    second = {k: (torch.randn_like(v) if v.is_floating_point() else v.clone()) for k, v in xs.items()}
    try:
        with torch.no_grad():
            one = [gm(*x.values()) for x in (xs, second)]
            both = gm(*(torch.cat([a, b]) for a, b in zip(xs.values(), second.values())))
    except Exception:
        return False
    if not all(isinstance(t, torch.Tensor) for t in [both, *one]):
        return False
    want = torch.cat(one)
    return both.shape == want.shape and bool(torch.allclose(both, want, rtol=1e-3, atol=1e-4))
