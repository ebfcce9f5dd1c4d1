"""compress --plots / search --plots: the three PNGs from the command line, and paths it must not overwrite."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_inproc import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir())
    for n in names:
        assert (folder / n).read_bytes()[:8] == PNG_MAGIC, n
    return names


def test_search_plots(tmp_path):
    r = cli("search", "digits_resnet", "--search-steps", "2", "--target-params", "0.4", "-o", "plan.json",
            "--plots", "plots", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert _pngs(tmp_path / "plots") == ["layers.png", "ranks.png", "search.png"]
    assert json.loads((tmp_path / "plan.json").read_text())["layers"]  # the plan is still written


def test_compress_plots_with_and_without_search(tmp_path):
    r = cli("compress", "digits_resnet", "--search-steps", "2", "--target-params", "0.4", "--epochs", "0",
            "--no-latency", "-o", "m.onnx", "--report", "r.json", "--plots", "p", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert _pngs(tmp_path / "p") == ["layers.png", "ranks.png", "search.png"]
    assert json.loads((tmp_path / "r.json").read_text())["search"]["trace"]  # the report carries the trace
    r = cli("compress", "digits_resnet", "--ranks", "0.3", "--epochs", "0", "--no-latency", "-o", "m2.onnx",
            "--plots", "q", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert _pngs(tmp_path / "q") == ["layers.png", "ranks.png"]  # no search: no search.png


@pytest.mark.parametrize("command", ["compress", "search"])
def test_plots_refuse_to_overwrite_inputs_and_outputs(tmp_path, command):
    (tmp_path / "p").mkdir()
    out = ["--report", "p/ranks.png"] if command == "compress" else ["-o", "p/search.png"]
    r = cli(command, "digits_resnet", "--ranks" if command == "compress" else "--search-steps",
            "0.3" if command == "compress" else "2", *out, "--plots", "p", cwd=tmp_path)
    assert r.exit_code == 2
    assert "error: --plots:" in r.output and "give them different paths" in r.output and "Traceback" not in r.output
    assert list((tmp_path / "p").iterdir()) == []  # refused before anything ran
    (tmp_path / "afile").write_text("x")
    r = cli(command, "digits_resnet", "--plots", "afile", cwd=tmp_path)
    assert r.exit_code == 2 and (tmp_path / "afile").read_text() == "x"
