"""A small classifier as an ONNX file and marked calibration inputs, for the held-out fidelity tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def tiny_classifier_onnx(path: Path) -> Path:
    """A conv net whose logits depend on the input (no pooling: a large Linear), dynamic batch, input 'x'."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).eval()
    torch.onnx.export(net, torch.randn(1, 3, 8, 8), path, dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return path


def marked_calib(path: Path, n: int = 60, groups: int | None = 15) -> Path:
    """``n`` random inputs; sample i carries the marker ``i / 100`` at x[i, 0, 0, 0] (and ``groups`` ids)."""
    x = np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32)
    x[:, 0, 0, 0] = np.arange(n) / 100
    arrays = {"x": x}
    if groups:
        arrays["groups"] = np.repeat(np.arange(groups), n // groups)
    np.savez(path, **arrays)
    return path


def markers(t) -> set[int]:
    """The sample markers in a (N, 3, 8, 8) tensor or array."""
    return {int(round(float(v) * 100)) for v in np.asarray(t)[:, 0, 0, 0]}
