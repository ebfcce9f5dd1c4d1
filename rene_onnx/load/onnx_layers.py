"""The imported torch module lined up with the ONNX graph: Linear layers, and the layer / parameter maps.

Every Gemm / MatMul with a constant weight on the right becomes an ``nn.Linear`` holding the torch-layout
weight W (out, in), the matrix the SVD factors refer to (:func:`linearize`); ``transA``, ``alpha`` and a bias
that is not one row (or any bias when alpha != 1) stay separate fx ops around it. The constant ``Add``
after a MatMul becomes the Linear's bias (the pass writes a factorized bias back into that ``Add``).
``layer_map`` holds every layer whose torch weight equals the ONNX weight; ``param_map`` maps torch
parameters and float buffers (BatchNorm running stats) to the initializer / ``Constant`` output holding
the same value, left out when the ONNX tensor is shared or stored transposed.
"""
from __future__ import annotations

from collections import Counter
import operator

import numpy as np
import onnx
import torch
from torch import fx, nn

from rene_onnx.graph import Constants

from .handle import OnnxRef

_DENSE = (nn.Conv1d, nn.Conv2d, nn.Linear)


#: torch attribute -> ONNX input index, for the modules onnx2torch builds with parameters
_PARAM_INPUTS = {
    "Conv": {"weight": 1, "bias": 2},
    "ConvTranspose": {"weight": 1, "bias": 2},
    "BatchNormalization": {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4},
    "LayerNormalization": {"weight": 1, "bias": 2},
    "InstanceNormalization": {"weight": 1, "bias": 2},
}


def _call_nodes(gm: fx.GraphModule) -> dict[str, fx.Node]:
    return {n.target: n for n in gm.graph.nodes if n.op == "call_module"}


def linearize(gm: fx.GraphModule, original: onnx.ModelProto, layers, tnames: dict[int, str]) -> dict[str, str]:
    """Turn every Gemm / MatMul with a constant weight on the right into an ``nn.Linear``.

    Returns ``{module name: bias tensor name}`` for MatMuls whose bias ``Add``
    became the Linear's bias.
    """
    consts = Constants(original)
    calls = _call_nodes(gm)
    consumers = node_consumers(original.graph)
    ranks = None
    graph = gm.graph
    absorbed: dict[str, str] = {}
    for ol in layers:
        name = tnames.get(ol.index)
        node = calls.get(name)
        if node is None or ol.skip_reason or ol.weight_side != "right" or ol.op_type not in ("Gemm", "MatMul"):
            continue
        w = np.ascontiguousarray(ol.torch_weight())
        if ol.op_type == "Gemm":
            _gemm_to_linear(gm, node, name, ol, w, consts)
            continue
        bias, add = None, None
        if ol.bias is not None:
            value = consts.value(ol.bias)
            if ranks is None and value is not None and value.ndim > 1:
                ranks = _ranks(original)
            x_rank = ranks.get(original.graph.node[ol.index].input[0]) if ranks else None
            if value is not None and (value.ndim == 1 or (x_rank is not None and value.ndim <= x_rank)):
                users = consumers.get(original.graph.node[ol.index].output[0], [])
                add = calls.get(tnames.get(users[0])) if len(users) == 1 else None
                bias = value.reshape(-1) if add is not None else None
        lin = _linear(w, bias)
        setattr(gm, name, lin)
        with graph.inserting_before(node):
            y = graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(y)
        graph.erase_node(node)
        if add is not None:
            add.replace_all_uses_with(y)
            graph.erase_node(add)
            delattr(gm, add.target)
            absorbed[name] = ol.bias
    _drop_unused(gm)
    return absorbed


def _gemm_to_linear(gm: fx.GraphModule, node: fx.Node, name: str, ol, w: np.ndarray, consts: Constants) -> None:
    """``alpha * A' @ W^T + beta * C`` -> [transpose] -> Linear(W) [* alpha] [+ beta * C]."""
    graph = gm.graph
    alpha = float(ol.attrs.get("alpha", 1.0))
    beta = float(ol.attrs.get("beta", 1.0))
    out = w.shape[0]
    c = consts.value(ol.bias) if ol.bias is not None else None
    row = None
    if c is not None and alpha == 1.0 and c.size in (1, out) and (c.ndim <= 1 or (c.ndim == 2 and c.shape[0] == 1)):
        row = np.broadcast_to(beta * c.reshape(-1), (out,)).astype(w.dtype)
    args = list(node.args) + [node.kwargs[k] for k in ("input_b", "input_c") if k in node.kwargs]
    setattr(gm, name, _linear(w, row))
    with graph.inserting_before(node):
        x = args[0]
        if int(ol.attrs.get("transA", 0)):
            x = graph.call_function(torch.transpose, (x, 0, 1))
        y = graph.call_module(name, (x,))
        if alpha != 1.0:
            y = graph.call_function(operator.mul, (y, alpha))
        if ol.bias is not None and row is None:
            if c is not None:
                buf = _register_buffer(gm, torch.from_numpy(np.ascontiguousarray(beta * c).astype(w.dtype)))
                term = graph.get_attr(buf)
            else:
                term = args[2]
                if beta != 1.0:
                    term = graph.call_function(operator.mul, (term, beta))
            y = graph.call_function(operator.add, (y, term))
    node.replace_all_uses_with(y)
    graph.erase_node(node)


def _linear(w: np.ndarray, bias: np.ndarray | None) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=torch.from_numpy(w[:0]).dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.array(w)))
        if bias is not None:
            lin.bias.copy_(torch.from_numpy(np.array(bias, dtype=w.dtype)))
    return lin


def _register_buffer(gm: fx.GraphModule, value: torch.Tensor) -> str:
    if "initializers" not in gm._modules:  # onnx2torch's holder is only kept when something reads from it
        gm.add_module("initializers", nn.Module())
    holder = gm.get_submodule("initializers")
    k = 0
    while hasattr(holder, f"rene_gemm_c_{k}"):
        k += 1
    holder.register_buffer(f"rene_gemm_c_{k}", value)
    return f"initializers.rene_gemm_c_{k}"


def _drop_unused(gm: fx.GraphModule) -> None:
    """Remove get_attr nodes nothing reads and the initializer buffers they held; recompile."""
    for n in list(gm.graph.nodes):
        if n.op == "get_attr" and not n.users:
            gm.graph.erase_node(n)
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    holder = gm._modules.get("initializers")
    for b in [b for b, _ in holder.named_buffers(recurse=False)] if holder is not None else []:
        if f"initializers.{b}" not in used:
            delattr(holder, b)
    gm.graph.lint()
    gm.recompile()


def node_consumers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for t in node.input:
            if t:
                out.setdefault(t, []).append(i)
    return out


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # no ranks: a multi-dim bias Add then stays a separate op
        return {}
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = len(t.shape.dim)
    return out


def _dense_leaf(gm: fx.GraphModule, name: str | None) -> tuple[str | None, nn.Module | None]:
    """The Conv / Linear module of a node: the module itself, or the one inside onnx2torch's (pad, conv)."""
    if not name or name not in gm._modules:
        return None, None
    mod = gm.get_submodule(name)
    if isinstance(mod, _DENSE):
        return name, mod
    leaves = [(f"{name}.{n}", m) for n, m in mod.named_modules() if n and isinstance(m, _DENSE)]
    return leaves[0] if len(leaves) == 1 else (None, mod)


def onnx_layer_map(gm: fx.GraphModule, layers, tnames: dict[int, str]) -> tuple[dict[str, OnnxRef], dict[str, str]]:
    layer_map: dict[str, OnnxRef] = {}
    unmapped: dict[str, str] = {}
    for ol in layers:
        name = tnames.get(ol.index)
        leaf_name, leaf = _dense_leaf(gm, name)
        grouped = ol.op_type == "Conv" and ol.shape is not None and ol.shape.groups != 1
        if ol.skip_reason and not (grouped and leaf_name):
            unmapped[leaf_name or name or ol.name] = ol.skip_reason
            continue
        if leaf_name is None:
            if ol.weight_side == "left":
                why = "the constant weight is on the left (W @ x): kept dense"
            else:
                why = f"onnx2torch gave {type(leaf).__name__ if leaf is not None else 'no module'}, not a Conv / Linear"
            unmapped[name or ol.name] = why
            continue
        w = leaf.weight.detach().cpu().numpy()
        ref = ol.torch_weight()
        if ref is None or w.shape != ref.shape or not np.allclose(w, ref, rtol=1e-6, atol=1e-7):
            unmapped[leaf_name] = "the torch layer's weight does not match the ONNX weight"
            continue
        layer_map[leaf_name] = onnx_ref(ol)
    return layer_map, unmapped


def onnx_ref(ol) -> OnnxRef:
    """The :class:`OnnxRef` of a ``passes.OnnxLayer`` (its ONNX weight is the torch weight transposed for MatMul and
    Gemm without ``transB``)."""
    transposed = ol.op_type == "MatMul" or (ol.op_type == "Gemm" and not int(ol.attrs.get("transB", 0)))
    return OnnxRef(ol.name, ol.op_type, ol.weight, ol.bias, transposed)


def onnx_param_map(gm: fx.GraphModule, original: onnx.ModelProto, tnames: dict[int, str],
               layer_map: dict[str, OnnxRef], absorbed: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """torch parameter / float buffer name -> the ONNX tensor holding the same value (checked)."""
    consts = Constants(original)
    found: dict[str, str] = {}
    for i, name in sorted(tnames.items()):
        if name not in gm._modules:
            continue
        node = original.graph.node[i]
        mod = gm.get_submodule(name)
        tensors = list(mod.named_parameters()) + [(b, t) for b, t in mod.named_buffers() if t.is_floating_point()]
        for local, tensor in tensors:
            full = f"{name}.{local}"
            owner, _, attr = full.rpartition(".")
            ref = layer_map.get(owner)
            if ref is not None:
                candidates = {"weight": [] if ref.transposed else [ref.weight],
                              "bias": [absorbed.get(owner) or ref.bias]}.get(attr, [])
            elif attr in _PARAM_INPUTS.get(node.op_type, {}):
                pos = _PARAM_INPUTS[node.op_type][attr]
                candidates = [node.input[pos]] if len(node.input) > pos else []
            else:
                candidates = list(node.input)
            value = tensor.detach().cpu().numpy()
            for cand in candidates:
                root = consts.root(cand) if cand else None
                v = consts.value(root) if root else None
                if v is not None and v.shape == value.shape and np.allclose(v, value, rtol=1e-6, atol=1e-7):
                    found[full] = root
                    break
    uses = Counter(found.values())
    shared = [k for k, v in found.items() if uses[v] > 1]
    return {k: v for k, v in found.items() if uses[v] == 1}, shared
