"""A torch model in: a zoo name or ``package.module:callable`` (+ a state dict) -> ModelHandle.

A copy with BatchNorm folded into the preceding conv *in torch* (``engine.fold``) is exported with the
dynamo exporter. The exporter keeps parameter names as initializer names, so the layer map matches
``<module>.weight`` by name and checks the values; a layer whose values do not match is matched by
value instead, or left out with a reason. Search and fine-tuning run on the original (BatchNorm kept,
as in the paper); before the rewrite the student is folded the same way (``ModelHandle.deployable``),
and a BatchNorm after a factorized conv folds into the chain's last 1x1 conv.
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import redirect_stderr, redirect_stdout
import copy
import importlib
import io
from pathlib import Path
import warnings

import numpy as np
import onnx
import torch
from torch import nn

from rene_onnx.engine.fold import fold_batchnorm_
from rene_onnx.errors import LoadError, first_line

from .handle import ModelHandle, OnnxRef

OPSET = 18  # the opset torch models are exported at


def build_torch_model(spec: str, weights: str | Path | None = None, input_shape: tuple[int, ...] | None = None,
                      num_classes: int | None = None) -> tuple[nn.Module, tuple[int, ...], list[str]]:
    """Build the torch model named by ``spec`` (a zoo name or ``package.module:callable``) and load weights.

    Returns ``(model in eval mode, input shape with batch 1, notes)``.
    """
    from rene_onnx import models as zoo

    if isinstance(input_shape, Mapping):
        raise LoadError(f"NAME:DIMS is for multi-input ONNX files; {spec!r} takes one input: "
                        f"give a plain shape such as 1,3,32,32", option="input_shape")
    notes: list[str] = []
    if ":" in spec and not Path(spec).exists():
        mod_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise LoadError(f"cannot import {spec!r}: {e}") from None
        except BaseException as e:  # importing ran the user's code: anything can escape, SystemExit included
            raise LoadError(f"importing {mod_name!r} failed: {type(e).__name__}: {first_line(e)}") from None
        if not callable(factory):
            raise LoadError(f"{spec!r} is a {type(factory).__name__}, not a callable that builds a torch model")
        try:
            model = factory()
        except Exception as e:
            raise LoadError(f"{spec!r} failed to build the model: {type(e).__name__}: {first_line(e)}") from None
        except BaseException as e:  # SystemExit / KeyboardInterrupt raised by the user's factory
            if isinstance(e, KeyboardInterrupt):
                raise
            raise LoadError(f"{spec!r} raised {type(e).__name__}({first_line(e) if str(e) else ''}) instead of "
                            f"returning a model") from None
        if not isinstance(model, nn.Module):
            raise LoadError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        if input_shape is None:
            raise LoadError(f"{{input_shape}} is required for {spec!r}", refs={"input_shape": "1,3,32,32"})
        shape = input_shape
    else:
        if spec not in zoo.list_models():
            raise LoadError(f"unknown model {spec!r}: not a zoo name ({', '.join(zoo.list_models())}), "
                            "an .onnx file, or package.module:callable")
        model = zoo.build(spec, num_classes=num_classes)
        shape = input_shape or zoo.input_shape(spec)
        if weights is None:
            weights = zoo.default_checkpoint(spec)
            if weights is None:
                notes.append(f"{spec}: no weights given, random initialization (numbers are not accuracy-meaningful)")
            else:
                notes.append(f"{spec}: weights from the bundled checkpoint {Path(weights).name}")
    if weights is not None:
        load_state_dict_file(model, weights)
    return model.eval(), tuple(shape), notes


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if not path.exists():
        raise LoadError(f"file not found: {path}", option="weights")
    if not path.is_file():
        raise LoadError(f"{path} is not a regular file", option="weights")
    if path.stat().st_size == 0:
        raise LoadError(f"{path} is empty (0 bytes)", option="weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LoadError(f"cannot read {path}: {first_line(e)}", option="weights") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoadError(f"{path} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch for {len(wrong)} key(s), e.g. {k}: "
                         f"file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise LoadError(f"state dict {path.name} does not match the model: " + "; ".join(parts))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise LoadError(f"{path.name} holds NaN or infinite values in {_few(bad)}: the weights are broken",
                        option="weights")
    model.load_state_dict(state)


def _few(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], dynamic_batch: bool = True) -> onnx.ModelProto:
    """Export with the dynamo exporter (opset 18, no external data), quietly; batch dynamic where possible."""
    example = torch.randn(input_shape)
    sink = io.StringIO()
    last_error: Exception | None = None
    for dynamic in ([True, False] if dynamic_batch else [False]):
        kwargs = dict(dynamo=True, external_data=False, opset_version=OPSET, verbose=False,
                      input_names=["input"], output_names=["output"])
        if dynamic:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        try:
            with warnings.catch_warnings(), redirect_stdout(sink), redirect_stderr(sink):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(model, (example,), **kwargs)
            return program.model_proto
        except Exception as e:  # dynamic batch failed (e.g. a hard-coded view): retry static
            last_error = e
    raise LoadError(f"torch.onnx.export failed: {str(last_error).splitlines()[0]}")


#: torch modules with a weight that no pass rewrites: listed in the report as dense, with the reason
NOT_REWRITTEN = (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def build_layer_map(model: nn.Module, graph: onnx.ModelProto) -> tuple[dict[str, OnnxRef], dict[str, str], dict[str, str]]:
    """Match torch Conv/Linear modules and parameters to ONNX nodes and initializers.

    Returns ``(layer_map, param_map, unmapped)``. A layer is matched by its weight's
    name (``<module>.weight``, what the dynamo exporter keeps) and confirmed by value;
    failing that, by value alone (exact, or transposed for ``MatMul``). The conv-like modules
    no pass rewrites (ConvTranspose, 3-D convs) are listed in ``unmapped`` with the reason,
    as they are for an ONNX input.
    """
    from rene_onnx.passes import find_layers

    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}
    onnx_layers = [ol for ol in find_layers(graph) if ol.weight_array is not None]
    by_weight = {ol.weight: ol for ol in onnx_layers}
    layer_map: dict[str, OnnxRef] = {}
    unmapped: dict[str, str] = {}
    for name, mod in layers.items():
        w = mod.weight.detach().numpy()
        ol = by_weight.get(f"{name}.weight")
        transposed = False
        if ol is None or not _same(ol.weight_array, w):
            ol, transposed = _match_by_value(onnx_layers, w)
        elif ol.op_type == "MatMul" and ol.weight_array.shape != w.shape:
            transposed = True
        if ol is None:
            unmapped[name] = "no ONNX node with this layer's weight (fused or computed differently)"
            continue
        if ol.skip_reason:
            unmapped[name] = ol.skip_reason
            continue
        layer_map[name] = OnnxRef(ol.name, ol.op_type, ol.weight, ol.bias, transposed)
    for name, mod in model.named_modules():
        if isinstance(mod, NOT_REWRITTEN):
            ol = by_weight.get(f"{name}.weight")
            unmapped[name] = (ol.skip_reason if ol is not None and ol.skip_reason else
                              f"{type(mod).__name__} is not rewritten by any pass (only Conv1d / Conv2d / Linear are)")

    inits = {i.name: i for i in graph.graph.initializer}
    param_map: dict[str, str] = {}
    for pname, p in model.named_parameters():
        init = inits.get(pname)
        if init is not None and tuple(init.dims) == tuple(p.shape):
            param_map[pname] = pname
    for name, ref in layer_map.items():  # biases renamed by the exporter (e.g. folded BN: "<w>_bias")
        if ref.bias and f"{name}.bias" not in param_map and layers[name].bias is not None:
            param_map[f"{name}.bias"] = ref.bias
        if not ref.transposed:
            param_map.setdefault(f"{name}.weight", ref.weight)
    return layer_map, param_map, unmapped


def restore_dropped_biases(model: nn.Module, graph: onnx.ModelProto) -> list[str]:
    """Give back the bias input that the exporter dropped because it was all zeros.

    The dynamo exporter omits an all-zero bias (e.g. a freshly initialized BN
    folded into a conv). Fine-tuning makes it non-zero, and the ONNX graph must
    have somewhere to put it; counts must also match torch's. Conv and Gemm
    nodes whose weight is ``<layer>.weight`` get a zero ``<layer>.bias`` input.
    """
    from onnx import numpy_helper

    inits = {i.name for i in graph.graph.initializer}
    restored = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)) or mod.bias is None:
            continue
        wname, bname = f"{name}.weight", f"{name}.bias"
        if wname not in inits or bname in inits:
            continue
        for node in graph.graph.node:
            if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] != wname:
                continue
            if len(node.input) > 2 and node.input[2]:
                continue
            if node.op_type == "Gemm" and any(a.name == "beta" and a.f != 1.0 for a in node.attribute):
                continue
            if node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute):
                continue
            bias = mod.bias.detach().numpy().astype(mod.weight.detach().numpy().dtype)
            graph.graph.initializer.append(numpy_helper.from_array(bias, bname))
            while len(node.input) < 2:
                node.input.append("")
            if len(node.input) == 2:
                node.input.append(bname)
            else:
                node.input[2] = bname
            restored.append(bname)
            break
    return restored


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape == b.shape:
        return np.allclose(a, b, rtol=1e-5, atol=1e-6)
    return a.ndim == 2 and a.T.shape == b.shape and np.allclose(a.T, b, rtol=1e-5, atol=1e-6)


def _match_by_value(onnx_layers, w: np.ndarray):
    for ol in onnx_layers:
        a = ol.weight_array
        if a.shape == w.shape and np.allclose(a, w, rtol=1e-5, atol=1e-6):
            return ol, False
        if a.ndim == 2 and a.T.shape == w.shape and np.allclose(a.T, w, rtol=1e-5, atol=1e-6):
            return ol, True
    return None, False


def load_torch(spec: str, weights: str | Path | None = None, input_shape: tuple[int, ...] | None = None,
               num_classes: int | None = None) -> ModelHandle:
    """Zoo name or ``module:callable`` (+ weights) -> ModelHandle (BN folded, exported, layer map built)."""
    model, shape, notes = build_torch_model(spec, weights, input_shape, num_classes)
    x = torch.randn(shape)
    try:
        with torch.no_grad():
            ref = model(x)
    except Exception as e:  # e.g. a channel count that does not fit the first conv
        raise LoadError(f"{spec} does not run on an input of shape {list(shape)}: {first_line(e)}",
                        option="input_shape") from None
    if not isinstance(ref, torch.Tensor):
        raise LoadError(f"{spec} returns {type(ref).__name__}; only models with one tensor output are supported")
    if not bool(torch.isfinite(ref).all()):
        raise LoadError(f"{spec} outputs NaN or infinite values on a random input of shape {list(shape)}: check "
                        f"its weights")
    folded = copy.deepcopy(model)
    pairs = fold_batchnorm_(folded)
    if pairs:
        with torch.no_grad():
            got = folded(x)
        if not torch.allclose(ref, got, rtol=1e-3, atol=1e-4):
            raise LoadError(f"folding BatchNorm changed the outputs of {spec} (max diff "
                            f"{(ref - got).abs().max().item():.2e}); this model is not supported yet")
        notes.append(f"folded {len(pairs)} BatchNorm layer(s) into the preceding conv/linear before export")
    graph = export_onnx(folded, shape)
    restore_dropped_biases(folded, graph)
    layer_map, param_map, unmapped = build_layer_map(folded, graph)
    return ModelHandle(model, graph, layer_map, param_map, shape, source=spec, notes=notes, unmapped=unmapped,
                       fold_bn=bool(pairs))
