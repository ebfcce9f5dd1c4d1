"""VGG-16 with BatchNorm, CIFAR variant (32x32 input, 512-wide classifier).

``features`` follows torchvision's indexing (conv, bn, relu, ..., maxpool);
after five poolings a 32x32 input is 1x1x512, so the classifier is
``Dropout, Linear(512, 512), ReLU, Dropout, Linear(512, 512), ReLU,
Linear(512, classes)`` (``classifier.1``, ``classifier.4``, ``classifier.6``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import init_weights

CFG_16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, cfg: tuple = CFG_16, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(c, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(512, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16_bn(num_classes: int = 10) -> VGG:
    return VGG(CFG_16, num_classes)
