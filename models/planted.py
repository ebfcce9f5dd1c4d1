"""A small network whose weights have planted (known) ranks, for checking that a rank search recovers them.

Three 3x3 convs with Tensor-Train ranks ``PLANTED["c1" | "c2" | "c3"]`` and a Linear of SVD rank
``PLANTED["fc"]``, plus a little noise, at different scales on purpose. :func:`teacher` rescales it to unit
activations and confident logits and labels random inputs with its own predictions, so a validation-CE search
has a task whose right answer is known. Used by the search tests and ``benchmarks/search_speed.py``; not in the
zoo's ``list_models()`` (it has no dataset and no pretrained weights).
"""
from __future__ import annotations

import torch
from torch import nn

PLANTED = {"c1": 6, "c2": 10, "c3": 13, "fc": 8}
NOISE = 1e-3


class Planted(nn.Module):
    """Three 3x3 convs and a Linear whose weights have planted TT / SVD ranks (+ small noise)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(16, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 32, 3, padding=1)
        self.c3 = nn.Conv2d(32, 64, 3, padding=1, stride=2)
        self.fc = nn.Linear(64, 48)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        return self.fc(x.mean((2, 3)))


def _planted_tt(cout, cin, r, g):
    w = torch.einsum("oa,abx,bi->oix", torch.randn(cout, r, generator=g), torch.randn(r, r, 9, generator=g),
                     torch.randn(r, cin, generator=g)).reshape(cout, cin, 3, 3)
    w = w / w.norm()
    return w + NOISE * torch.randn(w.shape, generator=g) / w.numel() ** 0.5


def _planted_svd(out, inn, r, g):
    w = torch.randn(out, r, generator=g) @ torch.randn(r, inn, generator=g)
    w = w / w.norm()
    return w + NOISE * torch.randn(w.shape, generator=g) / w.numel() ** 0.5


def planted_model(seed: int = 0) -> Planted:
    g = torch.Generator().manual_seed(seed)
    m = Planted()
    with torch.no_grad():
        m.c1.weight.copy_(3.0 * _planted_tt(32, 16, PLANTED["c1"], g))  # different scales on purpose
        m.c2.weight.copy_(_planted_tt(32, 32, PLANTED["c2"], g))
        m.c3.weight.copy_(0.3 * _planted_tt(64, 32, PLANTED["c3"], g))
        m.fc.weight.copy_(_planted_svd(48, 64, PLANTED["fc"], g))
    return m


def teacher(n: int = 256):
    """The planted model with unit-scale activations and confident logits, plus its own labels on random inputs."""
    m = planted_model()
    x = torch.randn(n, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = x
        for conv in (m.c1, m.c2, m.c3):
            conv.bias.zero_()
            conv.weight.mul_(1.0 / torch.relu(conv(h)).std())
            h = torch.relu(conv(h))
        m.fc.bias.zero_()
        m.fc.weight.mul_(10.0 / m(x).std())
        y = m(x).argmax(1)
    return m, x, y
