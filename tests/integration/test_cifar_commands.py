"""The README's CIFAR command, unchanged, on a tiny synthetic folder in the CIFAR-10 python-pickle layout.

CIFAR-10/100 cannot be downloaded on the project's machines; this checks that the documented command
(only the paths differ) runs end to end on a folder of that format: load, search with validation on the
calibration split, fine-tune, rewrite, validate on the test split, report, plots.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from rene_onnx import models
from cli_inproc import cli
from synthetic_cifar import cifar10_folder


@pytest.mark.slow
def test_readme_cifar_command_runs_unchanged(tmp_path):
    data = cifar10_folder(tmp_path / "data")
    torch.manual_seed(0)
    torch.save(models.build("resnet20").state_dict(), tmp_path / "r20.pt")
    # README, "Using it": rene-onnx compress resnet20 --weights r20.pt --data /data/cifar-10-batches-py
    #                     --target-params 0.25 -o r20.onnx --report r20.json --plots plots/
    r = cli("compress", "resnet20", "--weights", "r20.pt", "--data", data, "--target-params", "0.25",
            "-o", "r20.onnx", "--report", "r20.json", "--plots", "plots/", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    onnx.checker.check_model(onnx.load(tmp_path / "r20.onnx"))
    rep = json.loads((tmp_path / "r20.json").read_text())
    assert rep["meta"]["data"] == {"name": "cifar10", "sizes": {"train": 108, "calib": 12, "test": 30}}
    assert rep["search"]["mode"] == "validation-ce" and rep["search"]["trace"]
    assert 0.2 < rep["params"]["after"] / rep["params"]["before"] < 0.3
    assert rep["accuracy"]["before"] is not None  # top-1 on the test split
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["layers.png", "ranks.png", "search.png"]


def test_cifar_folder_feeds_search_and_finetune(tmp_path):
    """The fast half: the same folder through the search command (validation CE on its calib split)."""
    data = cifar10_folder(tmp_path / "data", per_batch=8, n_test=10)
    r = cli("search", "resnet20", "--data", data.parent, "--target-params", "0.3", "--search-steps", "2",
            "-o", "plan.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert "validation-ce search" in r.output
    assert json.loads((tmp_path / "plan.json").read_text())["layers"]
