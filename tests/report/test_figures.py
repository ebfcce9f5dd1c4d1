"""report.figures.write_plots / plots.plot_search / report.search: the PNGs a report gives, from any report."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.errors import PathConflictError, UserError
from rene_onnx.plan import LayerPlan, RankPlan
from rene_onnx.report import LayerRow, Report, plot_paths, plot_search, write_plots
from rene_onnx.report.search import search_report, search_section, search_trace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHAPES = {f"layer{i}.conv": LayerShape(32, 32, (3, 3), in_positions=64, out_positions=64) for i in range(12)}
SHAPES["fc"] = LayerShape(10, 32)


def _png(path: Path) -> bool:
    data = Path(path).read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 2000


def _stages() -> list[dict]:
    """Two stages of a 3-layer search, as engine.search records them (window [lo, hi, step])."""
    one = {n: {"candidates": [1, 8, 15, 22, 29], "p": [0.1, 0.5, 0.2, 0.1, 0.1], "rbar": 8, "p_moved": 0.3,
               "window": [1, 29, 7]} for n in ("layer0.conv", "layer5.conv", "layer11.conv")}
    two = {n: {"candidates": [5, 6, 7, 8, 9, 10, 11], "p": [0.05, 0.1, 0.5, 0.15, 0.1, 0.05, 0.05], "rbar": 7,
               "p_moved": 0.4, "window": [5, 11, 1]} for n in ("layer0.conv", "layer5.conv")}
    return [{"stage": 1, "seconds": 0.1, "steps": 5, "losses": {}, "layers": one},
            {"stage": 2, "seconds": 0.1, "steps": 5, "losses": {}, "layers": two}]


def _searched():
    """A stand-in for engine.search.SearchResult (the report side reads attributes only)."""
    plan = RankPlan()
    for n in SHAPES:
        plan.add(LayerPlan(n, "tt", (7, 7)) if n.startswith("layer") else LayerPlan(n, "dense", (), "kept dense"))
    layers = {n: SimpleNamespace(method="tt", chosen=(7, 7), rbar=7, candidates=(5, 6, 7), p=(0.2, 0.5, 0.3),
                                 p_moved=0.2, error=0.1) for n in ("layer0.conv", "layer5.conv", "layer11.conv")}
    return SimpleNamespace(plan=plan, layers=layers, mode="validation-ce", seconds=1.0, stages=_stages(),
                           params_fraction=0.3, macs_fraction=0.4, calib_samples=64, backoffs=0,
                           params=(1000, 300), macs=(5000, 2000))


def _report(latency: bool = True, search: bool = True) -> Report:
    rep = search_report(_searched(), SHAPES, {n: "Conv" for n in SHAPES}, {"model": "tiny"})
    if latency:
        for i, row in enumerate(rep.layers):
            if i % 3:  # some layers measured, some not
                row.latency_us_before, row.latency_us_after = 10.0 + i, 5.0 + i
    if not search:
        rep.search = None
    return rep


def test_search_section_carries_the_trace():
    sec = search_section(_searched())
    assert sec["stages"] == 2 and [t["stage"] for t in sec["trace"]] == [1, 2]
    assert sec["trace"][0]["layers"]["layer0.conv"]["window"] == [1, 29, 7]
    assert set(sec["trace"][1]["layers"]) == {"layer0.conv", "layer5.conv"}
    assert search_section(None) is None
    assert search_trace([]) == []


def test_search_report_counts_the_plan():
    rep = _report(latency=False)
    by = {r.name: r for r in rep.layers}
    assert by["layer0.conv"].status == "factorized" and by["layer0.conv"].rank == [7, 7]
    assert by["fc"].status == "dense" and by["fc"].reason == "kept dense"
    assert by["layer0.conv"].params_after < by["layer0.conv"].params_before
    assert rep.meta == {"source": "search", "model": "tiny"}
    assert Report.from_dict(rep.to_dict()).search["trace"] == rep.search["trace"]  # JSON round trip


@pytest.mark.parametrize("as_dict", [False, True])
def test_write_plots_writes_three_pngs(tmp_path, as_dict):
    rep = _report()
    out = tmp_path / "plots" / "sub"  # created
    paths = write_plots(rep.to_dict() if as_dict else rep, out)
    assert [p.name for p in paths] == ["ranks.png", "layers.png", "search.png"]
    assert all(_png(p) for p in paths)
    assert sorted(p.name for p in out.iterdir()) == ["layers.png", "ranks.png", "search.png"]  # no temp files left


def test_write_plots_without_search_or_latency(tmp_path):
    paths = write_plots(_report(latency=False, search=False), tmp_path)
    assert [p.name for p in paths] == ["ranks.png", "layers.png"] and all(_png(p) for p in paths)
    # a report with no per-layer latency still gets its layer plot; so does one without a search section key
    d = _report(latency=False).to_dict()
    d.pop("search")
    assert [p.name for p in write_plots(d, tmp_path / "b")] == ["ranks.png", "layers.png"]


def test_write_plots_refuses_inputs_and_outputs(tmp_path):
    rep = _report()
    report_json = tmp_path / "ranks.png"  # a report the user named like a plot
    report_json.write_text("{}")
    with pytest.raises(PathConflictError, match="would overwrite"):
        write_plots(rep, tmp_path, protect=[None, "resnet20", 0.25, str(report_json)])
    assert report_json.read_text() == "{}" and not (tmp_path / "layers.png").exists()  # nothing written
    with pytest.raises(PathConflictError, match="is a file"):
        plot_paths(report_json)
    with pytest.raises(UserError, match="no layers"):
        write_plots(Report(), tmp_path / "empty")
    with pytest.raises(UserError, match="not a rene-onnx report"):
        write_plots({"format": "other", "layers": []}, tmp_path / "bad")


def test_plot_search_layers_and_errors(tmp_path):
    rep = _report()
    assert _png(plot_search(rep, tmp_path / "one.png", layers=["layer11.conv"]))
    assert _png(plot_search(rep, tmp_path / "two.png", max_layers=2))
    with pytest.raises(ValueError, match="no search trace for layer"):
        plot_search(rep, tmp_path / "x.png", layers=["fc"])
    with pytest.raises(ValueError, match="no search trace"):
        plot_search(_report(search=False), tmp_path / "y.png")
