"""The built-in demo model: a small, deliberately wide ResNet for 1x8x8 digits.

Stem 3x3 conv 1->32, two BasicBlocks at 32 channels (8x8), two at 64
(4x4, the first strided with a 1x1 projection), GAP, ``fc``. ~170k
parameters, almost all in 3x3 convs: far more than 8x8 digits need, so
low-rank decomposition can remove most of them. Trained by
``python -m rene_onnx.models.train_demo``.
"""
from __future__ import annotations

from .resnet_cifar import CifarResNet


def digits_resnet(num_classes: int = 10) -> CifarResNet:
    return CifarResNet((2, 2), (32, 64), num_classes, in_channels=1)
