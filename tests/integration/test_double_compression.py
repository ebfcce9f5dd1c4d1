"""benchmarks/double_compression.py as a user runs it: bad settings and data that does not fit (a CIFAR folder)
are one error line, and (slow) both parts on a few hundred Fashion-MNIST images merge into one table."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic_cifar import cifar10_folder

ROOT = Path(__file__).resolve().parents[2]


def _script(*argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "double_compression.py"), *argv],
                          capture_output=True, text=True, timeout=timeout)


def test_bad_settings_are_one_error_line(tmp_path):
    r = _script("--student-keep", "1.5", "--out", str(tmp_path / "dc.json"))
    assert r.returncode == 2 and "student_keep" in r.stderr
    r = _script("--smoke")
    assert r.returncode == 2 and "would overwrite the zoo's student checkpoint" in r.stderr
    r = _script("--table", "--out", str(tmp_path / "none.json"))
    assert r.returncode == 2 and "no results file" in r.stderr


def test_cifar_folder_is_refused_with_one_line(tmp_path):
    data = cifar10_folder(tmp_path / "data", per_batch=4, n_test=4)
    r = _script("--data", str(data), "--student-checkpoint", str(tmp_path / "s.pt"), "--out",
                str(tmp_path / "dc.json"), "--smoke")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "cifar10: inputs (3, 32, 32), resnet20_fmnist expects (1, 28, 28)" in r.stderr
    assert not (tmp_path / "dc.json").exists() and not (tmp_path / "s.pt").exists()


@pytest.mark.slow
def test_smoke_run_both_parts(tmp_path):
    """Both parts side by side write one document (a few hundred images, 2 steps of everything)."""
    args = ["--smoke", "--threads", "1", "--student-checkpoint", str(tmp_path / "s.pt"), "--out", str(tmp_path / "o.json")]
    for part in ("student", "teacher"):
        r = _script(*args, "--part", part, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "o.json").read_text())
    assert [r["variant"] for r in doc["rows"]] == ["teacher", "student", "student+RENE", "teacher+RENE"]
    assert [r["part"] for r in doc["runs"]] == ["student", "teacher"]
    by = {r["variant"]: r for r in doc["rows"]}
    assert abs(by["student+RENE"]["params"] / by["teacher+RENE"]["params"] - 1) < 0.05  # about the same size
    assert json.loads((tmp_path / "s.json").read_text())["teacher"] == "resnet20_fmnist"
    assert doc["runs"][0]["machine"]["gpu"]
    assert doc["variants"]["teacher+RENE"]["report"]["search"]["trace"]
    r = _script("--table", "--out", str(tmp_path / "o.json"), "--plots", str(tmp_path / "png"))
    assert r.returncode == 0 and "| student+RENE |" in r.stdout, r.stderr
    assert len(list((tmp_path / "png").glob("*.png"))) == 6
