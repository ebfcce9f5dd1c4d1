"""The CLI is a shell over the library: the same options give the same report, and the README's Python runs."""
from __future__ import annotations

import json
from pathlib import Path

import onnx

import rene_onnx
from cli_inproc import cli

README = Path(__file__).resolve().parents[2] / "README.md"

#: report fields that differ between the two runs: wall time, the command line, the output path
VOLATILE = {"seconds", "command", "output"}


def _stable(d):
    if isinstance(d, dict):
        return {k: _stable(v) for k, v in d.items() if k not in VOLATILE}
    if isinstance(d, list):
        return [_stable(v) for v in d]
    return d


def test_cli_and_api_give_the_same_report_on_the_demo(tmp_path):
    args = dict(target_params=0.5, epochs=1, latency=False, search_steps=10)
    r = cli("compress", "--target-params", "0.5", "--epochs", "1", "--no-latency", "--search-steps", "10",
            "-o", "cli.onnx", "--report", "cli.json", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    res = rene_onnx.compress(**args, output=tmp_path / "api.onnx", checkpoint_dir=tmp_path / "cli.onnx.search")
    from_cli = json.loads((tmp_path / "cli.json").read_text())
    from_api = res.report.to_dict()
    assert from_api["meta"]["command"].startswith("rene_onnx.compress(")
    assert _stable(from_cli) == _stable(from_api), list(_diff(_stable(from_cli), _stable(from_api)))
    assert onnx.load(tmp_path / "cli.onnx").graph == onnx.load(tmp_path / "api.onnx").graph


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    start = text.index("```python\n", text.index("**From Python**")) + len("```python\n")
    code = text[start:text.index("```\n", start)]
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, str(README), "exec"), ns)
    report = ns["report"]
    assert report["params"]["after"] < 0.55 * report["params"]["before"]
    assert report["accuracy"]["inputs"] == "data-test" and report["accuracy"]["after_finetune"] > 90
    ranks = lambda plan: {lp.name: (lp.method, lp.ranks) for lp in plan.layers.values()}  # noqa: E731
    assert ranks(ns["again"].plan) == ranks(ns["plan"])
    acc = ns["pair"].report.to_dict()["accuracy"]
    assert acc["before"] == report["accuracy"]["before"]
    assert abs(acc["after"] - report["accuracy"]["after_finetune"]) < 1e-6  # ORT on the file == the report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["original.onnx", "small.onnx"]  # only what it saved


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            yield from _diff(a.get(k), b.get(k), f"{path}.{k}")
    elif a != b:
        yield path, a, b


def test_the_demo_keeps_its_factorized_layers_unless_told():
    from rene_onnx.api import compress_options

    name, opts = compress_options(None, {})
    assert name == "digits_resnet" and opts.target_params == 0.3 and opts.latency_aware is False
    assert compress_options(None, {"latency_aware": True})[1].latency_aware is True
    assert compress_options("resnet20", {})[1].latency_aware is None  # a user's model: never slower by default
