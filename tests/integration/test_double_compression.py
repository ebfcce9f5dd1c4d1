"""benchmarks/double_compression.py: the size matching, merging two parts' rows, the table, data that does
not fit (a CIFAR folder), and (slow) the whole script on a few hundred Fashion-MNIST images."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from synthetic_cifar import cifar10_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def dc(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    for name in ("double_compression", "fashion_mnist"):
        sys.modules.pop(name, None)
    yield importlib.import_module("double_compression")
    for name in ("double_compression", "fashion_mnist"):
        sys.modules.pop(name, None)


def test_teacher_target_matches_the_student_target(dc):
    cfg = dc.DoubleConfig(student_keep=0.5)
    assert dc.n_params("resnet8_fmnist") == 77_754 and dc.n_params("resnet20_fmnist") == 272_186
    assert dc.teacher_keep(cfg) * 272_186 == pytest.approx(0.5 * 77_754)
    with pytest.raises(ValueError, match="student_keep"):
        dc.DoubleConfig(student_keep=1.5)


def test_two_parts_merge_into_one_table(dc, tmp_path):
    cfg, out = dc.DoubleConfig(), tmp_path / "dc.json"
    run = {"command": "x", "commit": None, "date": "", "seconds": 1.0, "threads": 1, "machine": {}}
    dc.merge(out, cfg, [dc._row("teacher", "t", 1000, 500, 93.0), dc._row("teacher+RENE", "t", 140, 200, 90.0)],
             {"teacher+RENE": {}}, {"part": "teacher", **run})
    doc = dc.merge(out, cfg, [dc._row("student", "s", 300, 150, 92.0), dc._row("student+RENE", "s", 142, 120, 91.0)],
                   {"student+RENE": {}}, {"part": "student", **run})
    assert [r["variant"] for r in doc["rows"]] == ["teacher", "student", "student+RENE", "teacher+RENE"]
    assert [r["part"] for r in doc["runs"]] == ["teacher", "student"]
    assert doc["summary"]["student_rene_beats_teacher_rene"] is True
    assert doc["summary"]["student_rene_minus_teacher_rene_points"] == 1.0
    assert json.loads(out.read_text()) == doc and [p.name for p in tmp_path.iterdir()] == ["dc.json"]
    table = dc.table(doc)
    assert "| student+RENE | s | 142 | 0.00 M | 91.00 | 14.2 % |" in table
    # another config replaces the rows of the old one (never mixes runs of two configs)
    doc = dc.merge(out, dc.DoubleConfig(student_keep=0.4), [dc._row("student", "s", 300, 150, 92.0)], {},
                   {"part": "student", **run})
    assert [r["variant"] for r in doc["rows"]] == ["student"] and doc["summary"] == {}


def test_cifar_folder_is_refused_with_one_line(dc, tmp_path, capsys):
    data = cifar10_folder(tmp_path / "data", per_batch=4, n_test=4)
    code = dc.main(["--data", str(data), "--student-checkpoint", str(tmp_path / "s.pt"), "--out",
                    str(tmp_path / "dc.json"), "--smoke"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cifar10: inputs (3, 32, 32), resnet20_fmnist expects (1, 28, 28)" in err
    assert not (tmp_path / "dc.json").exists() and not (tmp_path / "s.pt").exists()


def test_smoke_refuses_the_zoo_checkpoint(dc, capsys):
    assert dc.main(["--smoke"]) == 2
    assert "would overwrite the zoo's student checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_run_both_parts(dc, tmp_path):
    """Both parts side by side write one document (a few hundred images, 2 steps of everything)."""
    args = ["--smoke", "--threads", "1", "--student-checkpoint", str(tmp_path / "s.pt"), "--out", str(tmp_path / "o.json")]
    assert dc.main([*args, "--part", "student"]) == 0
    assert dc.main([*args, "--part", "teacher"]) == 0
    doc = json.loads((tmp_path / "o.json").read_text())
    assert [r["variant"] for r in doc["rows"]] == ["teacher", "student", "student+RENE", "teacher+RENE"]
    by = {r["variant"]: r for r in doc["rows"]}
    assert abs(by["student+RENE"]["params"] / by["teacher+RENE"]["params"] - 1) < 0.05  # about the same size
    assert json.loads((tmp_path / "s.json").read_text())["teacher"] == "resnet20_fmnist"
    assert doc["runs"][0]["machine"]["gpu"] in ("none",) or doc["runs"][0]["machine"]["gpu"]
    assert doc["variants"]["teacher+RENE"]["report"]["search"]["trace"]
    written = dc.write_row_plots(doc, tmp_path / "png")
    assert len(written) == 6
