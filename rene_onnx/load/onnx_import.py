"""The torch side of an ONNX file: onnx2torch run on a COPY of the graph made importable.

``Constant`` nodes and ``Identity``-of-constant outputs become initializers, opset >= 18 is converted
down to 17 (:data:`IMPORT_OPSET`), ``Reshape(allowzero=1)`` without a literal 0 loses the flag, and what
onnx2torch cannot convert (``Gelu``-20, ``GreaterOrEqual`` / ``LessOrEqual``, a Conv with a run-time
weight, a ``BatchNormalization`` whose input rank shape inference cannot tell) goes through converters
registered here under :data:`SHIM_DOMAIN`. A batch fixed in ``Reshape`` targets is made the input's
(:mod:`.batch`).
"""
from __future__ import annotations

from contextlib import redirect_stderr, redirect_stdout
import io
from pathlib import Path
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
import torch
from torch import fx, nn

from rene_onnx.errors import LoadError
from rene_onnx.graph import constant_tensor

from .batch import free_batch
from .onnx_file import DEFAULT_DOMAINS, IMPORT_OPSET, line



class TorchImportError(LoadError):
    """onnx2torch cannot import the graph (no converter, a converter that fails, an import that does not run or
    reproduce onnxruntime). ``reason``: what failed, without the file name. Data-free compression goes on without a
    torch model (:func:`rene_onnx.load.onnx_graph.load_onnx_graph`)."""

    def __init__(self, name: str, reason: str):
        self.reason = reason
        super().__init__(f"{name}: {reason}")


SHIM_DOMAIN = "rene_onnx_shim"  # ops routed to converters registered here (no previous version to convert to)


_RESERVED = {"initializers", "graph", "code", "meta"} | set(dir(fx.GraphModule))


def to_torch(light: onnx.ModelProto, path: Path, external: bool) -> tuple[fx.GraphModule, dict[int, str], list[str]]:
    """onnx2torch on an importable copy; returns the module, {original node index: module name}, notes."""
    import onnx2torch
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph

    m = onnx.ModelProto()
    m.CopyFrom(light)
    if external:
        onnx.load_external_data_for_model(m, str(path.parent))
    names = torch_names(m.graph.node)
    index = {}
    for i, (node, name) in enumerate(zip(m.graph.node, names)):
        node.name = name
        index[name] = i
        if node.domain == "ai.onnx":
            node.domain = ""
    for o in m.opset_import:
        if o.domain == "ai.onnx":
            o.domain = ""
    _fold_constants(m.graph)
    _relax_reshape(m.graph)
    freed = free_batch(m)
    _route_to_shims(m)
    m, notes = _convert_opset(m)
    if freed:
        notes.append(f"the batch fixed in {freed} Reshape target(s) is the input's batch in the torch import "
                     f"(the output keeps the graph's input shapes)")

    opsets = {o.domain: o.version for o in m.opset_import}
    missing = set()
    for node in m.graph.node:
        try:
            get_converter(node.op_type, opsets.get(node.domain, 1), node.domain)
        except NotImplementedError:
            missing.add(f"{node.op_type} (opset {opsets.get(node.domain)})")
    if missing:
        raise TorchImportError(path.name, f"onnx2torch has no converter for {', '.join(sorted(missing))}"
                               + (f" ({notes[-1]})" if notes else ""))
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), redirect_stdout(sink), redirect_stderr(sink):
            warnings.simplefilter("ignore")
            gm = onnx2torch.convert(m)
    except Exception as e:
        raise TorchImportError(path.name, f"onnx2torch cannot import the graph: {type(e).__name__}: {line(e)}") from None
    renamed = _unprefix_shims(gm)
    tnames = {}
    for uname, onode in OnnxGraph(m.graph).nodes.items():
        i = index.get(onode.name)
        if i is not None and i not in tnames and onode.operation_type == light.graph.node[i].op_type:
            tnames[i] = renamed.get(uname, uname)
    notes.insert(0, f"imported into torch with onnx2torch (opset {default_opset(m)})")
    return gm, tnames, notes


def _unprefix_shims(gm: fx.GraphModule) -> dict[str, str]:
    """onnx2torch names a module ``<domain>/<node>``: give shim-routed nodes their plain name back."""
    renamed = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target.startswith(SHIM_DOMAIN + "/"):
            plain = node.target[len(SHIM_DOMAIN) + 1:]
            if plain not in gm._modules and plain not in _RESERVED:
                gm.add_module(plain, gm.get_submodule(node.target))
                delattr(gm, node.target)
                renamed[node.target] = plain
                node.target = plain
    if renamed:
        gm.recompile()
    return renamed


def torch_names(nodes) -> list[str]:
    """A unique torch module name per node: the ONNX name as onnx2torch spells it (``.`` -> ``/``)."""
    used: set[str] = set()
    out = []
    for node in nodes:
        base = node.name.replace(".", "/").lstrip("/") or node.op_type
        name, k = base, 0
        while name in used or name in _RESERVED:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        out.append(name)
    return out


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS)


def _fold_constants(graph: onnx.GraphProto) -> None:
    """``Constant`` nodes and ``Identity`` of a constant -> initializers (onnx2torch reads weights from those)."""
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        out = node.output[0] if len(node.output) == 1 else None
        t = None
        if out is not None and out not in outputs and node.domain in DEFAULT_DOMAINS:
            if node.op_type == "Constant":
                t = constant_tensor(node)
            elif node.op_type == "Identity" and node.input and node.input[0] in inits:
                t = onnx.TensorProto()
                t.CopyFrom(inits[node.input[0]])
        if t is None:
            keep.append(node)
            continue
        t.name = out
        graph.initializer.append(t)
        inits[out] = graph.initializer[-1]
    del graph.node[:]
    graph.node.extend(keep)


def _relax_reshape(graph: onnx.GraphProto) -> None:
    """Drop ``allowzero=1`` (onnx2torch refuses it) where it cannot matter.

    It only changes a Reshape whose target shape holds a literal 0; a shape
    computed at run time from real dims holds none for non-empty tensors.
    """
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.domain not in DEFAULT_DOMAINS or len(node.input) < 2:
            continue
        for a in node.attribute:
            if a.name == "allowzero" and a.i == 1:
                shape = inits.get(node.input[1])
                if shape is None or not np.any(numpy_helper.to_array(shape) == 0):
                    node.attribute.remove(a)
                break


# Ops onnx2torch cannot convert, routed (in the import copy) to converters registered here:
# Gelu-20 has no earlier version to convert to; onnx2torch has no GreaterOrEqual / LessOrEqual (the dynamo
# exporter writes them for HF attention masks); onnx2torch reads a Conv's weight from initializers only.
_shims_registered = False


_SHIM_OPS = ("Gelu", "GreaterOrEqual", "LessOrEqual")  # (and BatchNormalization of an input of unknown rank)


def _route_to_shims(model: onnx.ModelProto) -> None:
    inits = {t.name for t in model.graph.initializer}
    unranked = _unranked_bn_inputs(model)
    routed = [node for node in model.graph.node if node.domain in DEFAULT_DOMAINS and (
        node.op_type in _SHIM_OPS or (node.op_type == "Conv" and len(node.input) > 1 and any(
            t and t not in inits for t in node.input[1:])) or (node.op_type == "BatchNormalization"
                                                               and node.input[0] in unranked))]
    if routed:
        # shape inference cannot see through an op of our own domain, and some onnx2torch converters read
        # their input's rank from value_info (GlobalAveragePool after a run-time-weight Conv): record every
        # shape while the ops are still standard ones
        _keep_inferred_shapes(model)
    for node in routed:
        node.domain = SHIM_DOMAIN
    moved = bool(routed)
    if moved:
        _register_shims()
        model.opset_import.append(onnx.helper.make_opsetid(SHIM_DOMAIN, 1))


def _unranked_bn_inputs(model: onnx.ModelProto) -> set[str]:
    """BatchNormalization inputs whose rank shape inference cannot tell (onnx2torch picks BatchNorm1d/2d/3d by it)."""
    bn = {node.input[0] for node in model.graph.node if node.op_type == "BatchNormalization"
          and node.domain in DEFAULT_DOMAINS and len(node.output) == 1}
    if not bn:
        return set()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    ranked = {vi.name for vi in list(g.value_info) + list(g.input) + list(g.output)
              if vi.type.tensor_type.HasField("shape")}
    return bn - ranked


def _keep_inferred_shapes(model: onnx.ModelProto) -> None:
    """Add the value_info shape inference finds to ``model`` (nothing when inference fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # the import then works with what the graph already says
        return
    known = {vi.name for vi in model.graph.value_info} | {vi.name for vi in model.graph.input} \
        | {vi.name for vi in model.graph.output}
    for vi in inferred.graph.value_info:
        if vi.name not in known:
            model.graph.value_info.append(vi)


class RuntimeWeightConv(nn.Module):
    """An ONNX Conv whose weight (or bias) is computed at run time: ``F.conv*d`` on the given tensors."""

    def __init__(self, strides, pads, dilations, group: int):
        super().__init__()
        self.strides, self.pads, self.dilations, self.group = list(strides), list(pads), list(dilations), group

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        n = weight.dim() - 2
        conv = {1: nn.functional.conv1d, 2: nn.functional.conv2d, 3: nn.functional.conv3d}[n]
        pads = self.pads or [0] * (2 * n)
        begin, end = pads[:n], pads[n:]
        if begin != end:  # F.pad takes the last dim first: (last_begin, last_end, ..., first_begin, first_end)
            x = nn.functional.pad(x, [p for i in reversed(range(n)) for p in (begin[i], end[i])])
            begin = [0] * n
        return conv(x, weight, bias, self.strides or 1, begin, self.dilations or 1, self.group)


class AnyRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """ONNX ``BatchNormalization`` on an input of any rank >= 2 (N, C, ...): the rank is the run-time input's."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"BatchNormalization expects an (N, C, ...) input, got {input.dim()}D")


class Compare(nn.Module):
    """ONNX ``GreaterOrEqual`` / ``LessOrEqual``: elementwise, broadcasting, a bool tensor."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.ge(a, b) if self.op == "GreaterOrEqual" else torch.le(a, b)


def _register_shims() -> None:
    global _shims_registered
    if _shims_registered:
        return
    from onnx2torch.node_converters.registry import add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, onnx_mapping_from_node

    def gelu(node, graph):  # Gelu-20: approximate "none" | "tanh", as torch's
        approximate = "tanh" if node.attributes.get("approximate", "none") == "tanh" else "none"
        return OperationConverterResult(torch_module=nn.GELU(approximate=approximate),
                                        onnx_mapping=onnx_mapping_from_node(node))

    def conv(node, graph):
        a = node.attributes
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise NotImplementedError(f"Conv with a run-time weight and auto_pad={a['auto_pad']}")
        module = RuntimeWeightConv(a.get("strides", []), a.get("pads", []), a.get("dilations", []), a.get("group", 1))
        return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))

    def compare(node, graph):
        return OperationConverterResult(torch_module=Compare(node.operation_type),
                                        onnx_mapping=onnx_mapping_from_node(node))

    def batchnorm(node, graph):  # its input's rank unknown to shape inference: onnx2torch's converter refuses it
        a, names = node.attributes, node.input_values
        if not all(n in graph.initializers for n in names[1:5]):
            raise NotImplementedError("BatchNormalization of unknown rank with run-time scale / mean / var")
        scale, bias, mean, var = (graph.initializers[n].to_torch() for n in names[1:5])
        module = AnyRankBatchNorm(scale.numel(), eps=a.get("epsilon", 1e-5), momentum=1 - a.get("momentum", 0.9))
        with torch.no_grad():
            module.weight.copy_(scale)
            module.bias.copy_(bias)
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)
        return OperationConverterResult(torch_module=module,
                                        onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values))

    for op, fn in (("Gelu", gelu), ("Conv", conv), ("GreaterOrEqual", compare), ("LessOrEqual", compare),
                   ("BatchNormalization", batchnorm)):
        try:
            add_converter(operation_type=op, version=1, domain=SHIM_DOMAIN)(fn)
        except ValueError:  # already registered (module reloaded)
            pass
    _shims_registered = True


def _convert_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Convert to :data:`IMPORT_OPSET` when newer; large tensors are set aside during the conversion."""
    from onnx import version_converter

    opset = default_opset(model)
    if opset <= IMPORT_OPSET:
        return model, []
    stash = {}
    for t in model.graph.initializer:
        if len(t.raw_data) > 4096:
            stash[t.name] = t.raw_data
            t.ClearField("raw_data")
    try:
        converted = version_converter.convert_version(model, IMPORT_OPSET)
        notes = []
    except Exception as e:
        converted, notes = model, [f"opset {opset} -> {IMPORT_OPSET} conversion failed: {line(e, 150)}"]
    for t in converted.graph.initializer:
        if t.name in stash:
            t.raw_data = stash[t.name]
    return converted, notes
