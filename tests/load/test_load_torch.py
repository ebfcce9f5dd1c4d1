"""A torch model lists the layers no pass rewrites (ConvTranspose, 3-D convs) with the reason, as an ONNX input does."""
from __future__ import annotations

import warnings

import pytest
import torch

import rene_onnx

SRC = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 32, 3, padding=1)
        self.up = nn.ConvTranspose2d(32, 32, 3, padding=1)
        self.vol = nn.Conv3d(1, 8, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.up(torch.relu(self.c(x))))
        v = self.vol(h[:, :1].unsqueeze(1)).mean((1, 2, 3, 4))
        return self.fc(h.mean((2, 3)) + v[:, None])


def build():
    torch.manual_seed(0)
    return Net().eval()
'''


@pytest.fixture
def netmod(tmp_path, monkeypatch):
    (tmp_path / "upnet.py").write_text(SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("upnet")


def _rows(report):
    return {r["name"]: (r["status"], r["reason"]) for r in report["layers"]}


def test_conv_transpose_and_3d_conv_are_listed_for_torch_and_onnx_inputs(netmod, tmp_path):
    torch_report = rene_onnx.compress("upnet:build", input_shape="1,3,16,16", data_free=True, ranks=0.5,
                                      latency=False).report.to_dict()
    rows = _rows(torch_report)
    assert rows["c"][0] == rows["fc"][0] == "factorized"
    assert rows["up"] == ("dense", "ConvTranspose is not rewritten by any pass")
    assert rows["vol"][0] == "dense" and "3-D" in rows["vol"][1]
    assert torch_report["numerics"]["max_abs_diff"] < 1e-4

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(netmod.build(), (torch.randn(1, 3, 16, 16),), str(tmp_path / "upnet.onnx"), dynamo=True,
                          external_data=False)
    onnx_rows = _rows(rene_onnx.compress(str(tmp_path / "upnet.onnx"), data_free=True, ranks=0.5,
                                         latency=False).report.to_dict())
    dense = sorted(reason for status, reason in onnx_rows.values() if status == "dense")
    assert dense == sorted([rows["up"][1], rows["vol"][1]])  # the same two layers, the same reasons
