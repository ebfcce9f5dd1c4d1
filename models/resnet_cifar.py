"""CIFAR ResNet-20 / 32 / 56 (He et al. 2016, Sec. 4.2): 6n+2 layers, 16-32-64 channels.

Shortcuts where the shape changes are option B of the paper: a strided 1x1
conv + BN projection (``layerN.0.downsample.0/1``), which exports to plain
Conv nodes (option A's zero-padding would add Slice/Pad ops). That adds
2,752 parameters to ResNet-20 (272,474 instead of 269,722).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import conv3x3, init_weights, make_layer


class CifarResNet(nn.Module):
    """3x3 stem, one stage per width (the first unstrided, the rest stride 2), GAP, ``fc``."""

    def __init__(
        self,
        blocks: tuple[int, ...],
        widths: tuple[int, ...] = (16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks {blocks} and widths {widths} must be non-empty and of equal length")
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        self.num_stages = len(blocks)
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            setattr(self, f"layer{i + 1}", make_layer(inplanes, planes, n, 1 if i == 0 else 2))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _cifar_resnet(depth: int, num_classes: int) -> CifarResNet:
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), (16, 32, 64), num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(32, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return _cifar_resnet(56, num_classes)


def resnet20_fmnist(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for 1x28x28 inputs (Fashion-MNIST): a 1-channel stem, otherwise ``resnet20``."""
    return CifarResNet((3, 3, 3), (16, 32, 64), num_classes, in_channels=1)


def resnet8_fmnist(num_classes: int = 10) -> CifarResNet:
    """ResNet-8 for 1x28x28 inputs: one block per stage (16-32-64), the distilled student of ``resnet20_fmnist``."""
    return CifarResNet((1, 1, 1), (16, 32, 64), num_classes, in_channels=1)
