"""ONNX files in: a ``.onnx`` model from any exporter -> :class:`~rene_onnx.load.ModelHandle`.

Checks first, each failing with one :class:`~rene_onnx.load.LoadError` line
and never touching the file: missing file; truncated / corrupt protobuf; IR
version outside 6..10; default-domain opset outside 11..20; external data
pointing outside the model's folder (refused before anything is read); the
ONNX checker; no Conv / Gemm / MatMul a pass can rewrite; an input dtype other
than float32 / int64 / int32 / bool; more than one output; a dynamic input dim
other than the batch without its shape (``input_shape``: one shape for a
single-input model, ``{name: shape}`` for several inputs; the error names
every input that needs one).

The torch side comes from onnx2torch, run on a COPY of the graph made
importable: ``Constant`` nodes and ``Identity``-of-constant outputs become
initializers, opset >= 18 is converted down to 17 (:data:`IMPORT_OPSET`),
``Reshape(allowzero=1)`` without a literal 0 loses the flag, and what onnx2torch
cannot convert (``Gelu``-20, ``GreaterOrEqual`` / ``LessOrEqual``, a Conv with a
run-time weight) goes through
converters registered here under :data:`SHIM_DOMAIN`. The
ORIGINAL proto is what the handle carries: the passes rewrite it and it ships
(with external data again if it came with it: ``ModelHandle.external_data``).

Every Gemm / MatMul with a constant weight on the right becomes an
``nn.Linear`` holding the torch-layout weight W (out, in), the matrix the SVD
factors refer to; ``transA``, ``alpha`` and a bias that is not one row
(or any bias when alpha != 1) stay separate fx ops around it, so the pass's
handling of alpha / C matches. The constant ``Add`` after a MatMul becomes the
Linear's bias (the pass writes a factorized bias back into that ``Add``).

Layer names are onnx2torch's module names: the ONNX node name with ``.`` ->
``/`` and the leading ``/`` dropped (the op type when unnamed), made unique.
``layer_map`` holds every layer whose torch weight equals the ONNX weight;
``param_map`` maps torch parameters and float buffers (BatchNorm running
stats) to the initializer / ``Constant`` output holding the same value, left
out when the ONNX tensor is shared or stored transposed;
:func:`onnx_dense_updates` also writes back dense weights stored transposed.
"""
from __future__ import annotations

import io
import operator
import os
import warnings
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import fx, nn

from rene_onnx.graph import Constants, constant_tensor
from rene_onnx.load import INPUT_DTYPES, InputSpec, LoadError, ModelHandle, OnnxRef, example_tensors

IR_RANGE = (6, 10)  # onnxruntime-gpu reads up to 13; the supported range is what the tools here are tested on
OPSET_RANGE = (11, 20)  # default (ai.onnx) domain
IMPORT_OPSET = 17  # newest opset whose ops onnx2torch converts
SHIM_DOMAIN = "rene_onnx_shim"  # ops routed to converters registered here (no previous version to convert to)
_DEFAULT = ("", "ai.onnx")
_DENSE = (nn.Conv1d, nn.Conv2d, nn.Linear)
_RESERVED = {"initializers", "graph", "code", "meta"} | set(dir(fx.GraphModule))
#: torch attribute -> ONNX input index, for the modules onnx2torch builds with parameters
_PARAM_INPUTS = {
    "Conv": {"weight": 1, "bias": 2},
    "ConvTranspose": {"weight": 1, "bias": 2},
    "BatchNormalization": {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4},
    "LayerNormalization": {"weight": 1, "bias": 2},
    "InstanceNormalization": {"weight": 1, "bias": 2},
}


def load_onnx(path: str | os.PathLike,
              input_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]] | None = None, *,
              verify: bool = True) -> ModelHandle:
    """Check and load an ONNX file; the torch model (onnx2torch) and the maps to the original graph.

    ``input_shape`` (batch included) is required when an input dim other than
    the first is dynamic: one shape for a single-input model, or ``{input name:
    shape}`` (needed only for the inputs with dynamic dims); a dynamic first
    (batch) dim is taken as 1. The torch model takes the graph inputs
    positionally, in graph order. With ``verify`` the torch model's output is
    compared with onnxruntime's on the original file (the handle's example
    inputs, seed 0) and a mismatch is a ``LoadError``.
    """
    from rene_onnx.passes import find_layers

    path = Path(path)
    light, original, external = _read_checked(path)
    specs, notes = input_specs(original, input_shape, path.name)
    layers = find_layers(original)
    _check_compressible(layers, path.name)

    gm, tnames, import_notes = _to_torch(light, path, external)
    notes += import_notes
    absorbed = _linearize(gm, original, layers, tnames)
    layer_map, unmapped = _layer_map(gm, layers, tnames)
    if not layer_map:
        why = "; ".join(f"{n}: {r}" for n, r in list(unmapped.items())[:3])
        raise LoadError(f"{path.name}: no Conv / Gemm / MatMul layer could be matched to a torch layer ({why})")
    param_map, shared = _param_map(gm, original, tnames, layer_map, absorbed)
    layer_params = {f"{n}.{a}" for n in layer_map for a in ("weight", "bias")}
    frozen = [n for n, _ in gm.named_parameters() if n not in param_map and n not in layer_params]
    if frozen:
        notes.append(f"{len(frozen)} torch parameter(s) have no ONNX tensor of their own to be written back to "
                     f"(shared with another layer, or not matched) and stay frozen in fine-tuning: "
                     f"{', '.join(frozen[:3])}{' ...' if len(frozen) > 3 else ''}")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules()):
        notes.append("unfused BatchNormalization kept: collect its running stats with collect_factors(buffers=True)")
    gm.eval()
    if verify:
        _verify(gm, path, specs)
    return ModelHandle(gm, original, layer_map, param_map, specs[0].shape, source=str(path), notes=notes,
                       unmapped=unmapped, external_data=external, inputs=specs, frozen=frozen)


def read_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file with every check of ``load_onnx`` (versions, checker, external data in its folder)."""
    return _read_checked(Path(path))[1]


def _read_checked(path: Path) -> tuple[onnx.ModelProto, onnx.ModelProto, bool]:
    """(graph without external data, the full model, whether it has external data), all checked."""
    light = _read(path)
    _check_versions(light, path.name)
    external = _check_external_data(light, path)
    _run_checker(path)
    return light, (_with_external_data(light, path) if external else light), external


# ------------------------------------------------------------------------------------------------ checks


def _read(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise LoadError(f"ONNX file not found: {path}")
    if not path.is_file():
        raise LoadError(f"not a file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise LoadError(f"{path.name} is not a readable ONNX model (truncated or corrupt protobuf: {_line(e)})") from None
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
    opsets = [o.version for o in model.opset_import if o.domain in _DEFAULT]
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
        raise LoadError(f"{path.name} fails the ONNX checker: {_line(e, 300)}") from None


def _with_external_data(light: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    full = onnx.ModelProto()
    full.CopyFrom(light)
    try:
        onnx.load_external_data_for_model(full, str(path.parent))
    except Exception as e:
        raise LoadError(f"{path.name}: cannot read its external data: {_line(e)}") from None
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


def _check_compressible(layers, name: str) -> None:
    if any(ol.skip_reason is None for ol in layers):
        return
    if not layers:
        raise LoadError(f"{name}: no Conv / Gemm / MatMul node: nothing to compress")
    why = Counter(f"{ol.op_type}: {ol.skip_reason}" for ol in layers)
    raise LoadError(f"{name}: no Conv / Gemm / MatMul node can be compressed ("
                    + "; ".join(f"{n}x {r}" for r, n in why.most_common(3)) + ")")


def _line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------ import


def _to_torch(light: onnx.ModelProto, path: Path, external: bool) -> tuple[fx.GraphModule, dict[int, str], list[str]]:
    """onnx2torch on an importable copy; returns the module, {original node index: module name}, notes."""
    import onnx2torch
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph

    m = onnx.ModelProto()
    m.CopyFrom(light)
    if external:
        onnx.load_external_data_for_model(m, str(path.parent))
    names = _torch_names(m.graph.node)
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
    _route_to_shims(m)
    m, notes = _convert_opset(m)

    opsets = {o.domain: o.version for o in m.opset_import}
    missing = set()
    for node in m.graph.node:
        try:
            get_converter(node.op_type, opsets.get(node.domain, 1), node.domain)
        except NotImplementedError:
            missing.add(f"{node.op_type} (opset {opsets.get(node.domain)})")
    if missing:
        raise LoadError(f"{path.name}: onnx2torch has no converter for {', '.join(sorted(missing))}"
                        + (f" ({notes[-1]})" if notes else ""))
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), redirect_stdout(sink), redirect_stderr(sink):
            warnings.simplefilter("ignore")
            gm = onnx2torch.convert(m)
    except Exception as e:
        raise LoadError(f"{path.name}: onnx2torch cannot import the graph: {type(e).__name__}: {_line(e)}") from None
    renamed = _unprefix_shims(gm)
    tnames = {}
    for uname, onode in OnnxGraph(m.graph).nodes.items():
        i = index.get(onode.name)
        if i is not None and i not in tnames and onode.operation_type == light.graph.node[i].op_type:
            tnames[i] = renamed.get(uname, uname)
    notes.insert(0, f"imported into torch with onnx2torch (opset {_opset(m)})")
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


def _torch_names(nodes) -> list[str]:
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


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in _DEFAULT)


def _fold_constants(graph: onnx.GraphProto) -> None:
    """``Constant`` nodes and ``Identity`` of a constant -> initializers (onnx2torch reads weights from those)."""
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        out = node.output[0] if len(node.output) == 1 else None
        t = None
        if out is not None and out not in outputs and node.domain in _DEFAULT:
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
        if node.op_type != "Reshape" or node.domain not in _DEFAULT or len(node.input) < 2:
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
_SHIM_OPS = ("Gelu", "GreaterOrEqual", "LessOrEqual")


def _route_to_shims(model: onnx.ModelProto) -> None:
    inits = {t.name for t in model.graph.initializer}
    routed = [node for node in model.graph.node if node.domain in _DEFAULT and (
        node.op_type in _SHIM_OPS or (node.op_type == "Conv" and len(node.input) > 1 and any(
            t and t not in inits for t in node.input[1:])))]
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
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

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

    for op, fn in (("Gelu", gelu), ("Conv", conv), ("GreaterOrEqual", compare), ("LessOrEqual", compare)):
        try:
            add_converter(operation_type=op, version=1, domain=SHIM_DOMAIN)(fn)
        except ValueError:  # already registered (module reloaded)
            pass
    _shims_registered = True


def _convert_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Convert to :data:`IMPORT_OPSET` when newer; large tensors are set aside during the conversion."""
    from onnx import version_converter

    opset = _opset(model)
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
        converted, notes = model, [f"opset {opset} -> {IMPORT_OPSET} conversion failed: {_line(e, 150)}"]
    for t in converted.graph.initializer:
        if t.name in stash:
            t.raw_data = stash[t.name]
    return converted, notes


# ------------------------------------------------------------------------------------------------ fx rewrite


def _call_nodes(gm: fx.GraphModule) -> dict[str, fx.Node]:
    return {n.target: n for n in gm.graph.nodes if n.op == "call_module"}


def _linearize(gm: fx.GraphModule, original: onnx.ModelProto, layers, tnames: dict[int, str]) -> dict[str, str]:
    """Turn every Gemm / MatMul with a constant weight on the right into an ``nn.Linear``.

    Returns ``{module name: bias tensor name}`` for MatMuls whose bias ``Add``
    became the Linear's bias.
    """
    consts = Constants(original)
    calls = _call_nodes(gm)
    consumers = _consumers(original.graph)
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


def _consumers(graph: onnx.GraphProto) -> dict[str, list[int]]:
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


# ------------------------------------------------------------------------------------------------ maps


def _dense_leaf(gm: fx.GraphModule, name: str | None) -> tuple[str | None, nn.Module | None]:
    """The Conv / Linear module of a node: the module itself, or the one inside onnx2torch's (pad, conv)."""
    if not name or name not in gm._modules:
        return None, None
    mod = gm.get_submodule(name)
    if isinstance(mod, _DENSE):
        return name, mod
    leaves = [(f"{name}.{n}", m) for n, m in mod.named_modules() if n and isinstance(m, _DENSE)]
    return leaves[0] if len(leaves) == 1 else (None, mod)


def _layer_map(gm: fx.GraphModule, layers, tnames: dict[int, str]) -> tuple[dict[str, OnnxRef], dict[str, str]]:
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
        transposed = ol.op_type == "MatMul" or (ol.op_type == "Gemm" and not int(ol.attrs.get("transB", 0)))
        layer_map[leaf_name] = OnnxRef(ol.name, ol.op_type, ol.weight, ol.bias, transposed)
    return layer_map, unmapped


def _param_map(gm: fx.GraphModule, original: onnx.ModelProto, tnames: dict[int, str],
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


def _verify(gm: fx.GraphModule, path: Path, specs: list[InputSpec]) -> None:
    from rene_onnx.validate.numerics import make_session

    xs = example_tensors(specs, seed=0)
    shown = ", ".join(f"{k} {list(v.shape)}" for k, v in xs.items())
    try:
        with torch.no_grad():
            got = gm(*xs.values())
    except Exception as e:
        raise LoadError(f"{path.name}: the torch import fails on inputs {shown}: {_line(e)}") from None
    try:
        ref = make_session(str(path), "cpu").run(None, {k: v.numpy() for k, v in xs.items()})[0]
    except Exception as e:
        raise LoadError(f"{path.name}: onnxruntime cannot run the model: {_line(e)}") from None
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else None
    if got is None or got.shape != ref.shape:
        raise LoadError(f"{path.name}: the torch import returns {None if got is None else list(got.shape)}, "
                        f"onnxruntime {list(ref.shape)}")
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not diff <= 1e-4 + 1e-3 * float(np.max(np.abs(ref), initial=0.0)):
        raise LoadError(f"{path.name}: the torch import does not reproduce onnxruntime's output (max abs diff "
                        f"{diff:.2e}); this model is not supported yet")
