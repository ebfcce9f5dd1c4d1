"""The model zoo: the paper's architectures plus the built-in demo model.

>>> from rene_onnx import models
>>> models.list_models()
['digits_resnet', 'mobilenet_v2', 'resnet18', 'resnet20', 'resnet20_fmnist', 'resnet32', 'resnet34',
 'resnet56', 'resnet8_fmnist', 'vgg16_bn']
>>> net = models.build("resnet20")                 # random init, 10 classes
>>> net = models.build("digits_resnet", pretrained=True)   # the shipped checkpoint

Builders are imported lazily (importing this package does not import torch).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rene_onnx.errors import UserError

if TYPE_CHECKING:
    from torch import nn

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    module: str  # submodule of rene_onnx.models holding the builder (same name as the model)
    num_classes: int
    input_shape: tuple[int, ...]  # batch 1
    dataset: str | None = None  # a name rene_onnx.data.load_dataset loads without a path
    description: str = ""


_SPECS = {
    s.name: s
    for s in (
        ModelSpec("resnet20", "resnet_cifar", 10, (1, 3, 32, 32), None, "CIFAR ResNet-20, option-B shortcuts"),
        ModelSpec("resnet32", "resnet_cifar", 10, (1, 3, 32, 32), None, "CIFAR ResNet-32, option-B shortcuts"),
        ModelSpec("resnet56", "resnet_cifar", 10, (1, 3, 32, 32), None, "CIFAR ResNet-56, option-B shortcuts"),
        ModelSpec("vgg16_bn", "vgg", 10, (1, 3, 32, 32), None, "CIFAR VGG-16-BN, 512-wide classifier"),
        ModelSpec("resnet18", "resnet", 1000, (1, 3, 224, 224), None, "ImageNet ResNet-18 (torchvision keys)"),
        ModelSpec("resnet34", "resnet", 1000, (1, 3, 224, 224), None, "ImageNet ResNet-34 (torchvision keys)"),
        ModelSpec("mobilenet_v2", "mobilenetv2", 1000, (1, 3, 224, 224), None, "MobileNetV2 (torchvision keys)"),
        ModelSpec("digits_resnet", "digits", 10, (1, 1, 8, 8), "digits", "demo ResNet for 8x8 digits"),
        ModelSpec("resnet20_fmnist", "resnet_cifar", 10, (1, 1, 28, 28), "fashion-mnist",
                  "ResNet-20 for 1x28x28 Fashion-MNIST"),
        ModelSpec("resnet8_fmnist", "resnet_cifar", 10, (1, 1, 28, 28), "fashion-mnist",
                  "ResNet-8 for 1x28x28 Fashion-MNIST, distilled from resnet20_fmnist"),
    )
}


def list_models() -> list[str]:
    return sorted(_SPECS)


def spec(name: str) -> ModelSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def build(name: str, num_classes: int | None = None, *, pretrained: bool = False) -> "nn.Module":
    """A fresh model (train mode). ``pretrained=True`` loads :func:`default_checkpoint` and returns it in eval mode."""
    s = spec(name)
    n = s.num_classes if num_classes is None else int(num_classes)
    if n <= 0:
        raise UserError(f"num_classes must be positive, got {num_classes}")
    model = getattr(importlib.import_module(f"{__name__}.{s.module}"), name)(num_classes=n)
    if pretrained:
        ckpt = default_checkpoint(name)
        if ckpt is None:
            raise UserError(f"model {name!r} has no shipped checkpoint (only: {', '.join(_with_checkpoint())})")
        if n != s.num_classes:
            raise UserError(f"the {name!r} checkpoint has {s.num_classes} classes, not {n}")
        import torch

        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        model.eval()
    return model


def input_shape(name: str) -> tuple[int, ...]:
    """The model's input shape at batch 1, e.g. ``(1, 3, 32, 32)``."""
    return spec(name).input_shape


def default_checkpoint(name: str) -> Path | None:
    """The shipped state_dict (``checkpoints/<name>.pt``) if there is one."""
    path = CHECKPOINT_DIR / f"{spec(name).name}.pt"
    return path if path.is_file() else None


def default_dataset(name: str) -> str | None:
    """A dataset name that ``rene_onnx.data.load_dataset`` loads with no path, or None."""
    return spec(name).dataset


def _with_checkpoint() -> list[str]:
    return [n for n in list_models() if default_checkpoint(n) is not None]


__all__ = ["ModelSpec", "build", "default_checkpoint", "default_dataset", "input_shape", "list_models", "spec"]
