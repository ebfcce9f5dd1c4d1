"""Fold BatchNorm into the preceding conv / linear, in torch.

Why: the dynamo ONNX exporter folds BatchNorm into Conv weights but keeps the
conv's weight *name*, so the ONNX initializer ``layer1.0.conv1.weight`` holds
``W * gamma / sqrt(var + eps)`` while the torch parameter of that name holds
``W``. rene-onnx folds BatchNorm in torch first and exports the folded model:
then every ONNX weight equals the torch parameter of the same name, the layer
map is checked by value, and the factors computed in torch (search, fine-tune)
are exactly what the ONNX rewrite needs.
"""
from __future__ import annotations

import torch
import torch.fx
from torch import nn

_CONV_BN = {nn.BatchNorm1d: (nn.Conv1d, nn.Linear), nn.BatchNorm2d: (nn.Conv2d,), nn.BatchNorm3d: (nn.Conv3d,)}


def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every BatchNorm whose only input is a Conv/Linear used nowhere else; return the (layer, bn) pairs.

    The model is modified in place (BN replaced by ``nn.Identity``) and must be in eval mode.
    Pairs are found on the ``torch.fx`` graph; a model that fx cannot trace is left as it is
    (an empty list is returned).
    """
    if model.training:
        raise ValueError("fold_batchnorm_ needs the model in eval mode")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # not traceable: leave BN unfused (the ONNX export then folds it)
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), tuple(_CONV_BN)):
            continue
        bn = modules[node.target]
        src = node.args[0] if node.args else None
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        layer = modules.get(src.target)
        if not isinstance(layer, _CONV_BN[type(bn)]) or not bn.track_running_stats or bn.running_var is None:
            continue
        _fold(layer, bn)
        _set_module(model, node.target, nn.Identity())
        pairs.append((src.target, node.target))
    return pairs


@torch.no_grad()
def _fold(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.affine:
        shift = shift + bn.bias
    w = layer.weight
    layer.weight.copy_(w * scale.reshape(-1, *([1] * (w.dim() - 1))))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(shift)
    new_bias = bias * scale + shift
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias.to(w.dtype))
    else:
        layer.bias.copy_(new_bias)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
