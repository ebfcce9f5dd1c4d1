"""PNG plots of a report (matplotlib Agg canvas, no pyplot global state).

``plot_ranks``: per-layer chosen rank and kept-parameter fraction, several
methods / runs side by side (the paper's Fig. 5 style).
``plot_layers``: parameters and MACs before / after per layer (and latency, where it was measured).
``plot_search``: the multi-stage search of a few layers, each stage's candidate window and its p
(the paper's Fig. 3), from ``Report.search["trace"]``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write
from .report import LayerRow, Report

Series = dict[str, list[LayerRow]]


def plot_ranks(report_or_dicts: Any, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Bar chart of each layer's chosen rank (top) and kept-parameter fraction (bottom).

    ``report_or_dicts``: a ``Report`` (or its ``to_dict()``), a list of them
    (labelled by ``meta["label"]`` / ``meta["method"]``), or a mapping
    ``label -> Report | report dict | list of LayerRow / row dicts``.
    Dense layers show rank 0 and fraction 1. For TT the bar is r1 (= r2 by default).
    """
    series = _series(report_or_dicts)
    names = _layer_names(series)
    fig, (ax_r, ax_f) = _figure(len(names), len(series), rows=2)
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (label, rows) in enumerate(series.items()):
        by = {r.name: r for r in rows}
        ranks = [by[n].rank[0] if n in by and by[n].rank else 0 for n in names]
        kept = [by[n].params_kept if n in by and by[n].params_kept is not None else np.nan for n in names]
        off = x + (i - (len(series) - 1) / 2) * width
        ax_r.bar(off, ranks, width, label=label)
        ax_f.bar(off, kept, width, label=label)
    ax_r.set_ylabel("chosen rank")
    ax_f.set_ylabel("kept parameters (after / before)")
    ax_f.axhline(1.0, color="grey", lw=0.8, ls="--")
    _finish(fig, (ax_r, ax_f), names, title or "Per-layer ranks", legend=len(series) > 1)
    return _save(fig, path)


def plot_layers(report: Report | Mapping[str, Any], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Grouped bars of parameters (top) and MACs (middle) before / after per layer, and the per-layer
    latency (bottom) when any layer's was measured (a layer without a time gets no bar)."""
    report = _as_report(report)
    rows = report.layers
    if not rows:
        raise ValueError("report has no layers to plot")
    names = [r.name for r in rows]
    panels = [("parameters", [r.params_before for r in rows], [r.params_after for r in rows]),
              ("MACs", [r.macs_before for r in rows], [r.macs_after for r in rows])]
    if any(r.latency_us_before is not None or r.latency_us_after is not None for r in rows):
        panels.append(("latency (µs)", [_num(r.latency_us_before) for r in rows],
                       [_num(r.latency_us_after) for r in rows]))
    fig, axes = _figure(len(names), 1, rows=len(panels))  # before / after share one slot per layer
    x = np.arange(len(names))
    w = 0.4
    for ax, (label, b, a) in zip(axes, panels):
        ax.bar(x - w / 2, b, w, label="before", color="#999999")
        ax.bar(x + w / 2, a, w, label="after", color="#1f77b4")
        ax.set_ylabel(label)
    _finish(fig, axes, names, title or f"Per-layer cost{_model_suffix(report)}", legend=True)
    return _save(fig, path)


def plot_search(report: Report | Mapping[str, Any], path: str | os.PathLike, *, layers: Sequence[str] | None = None,
                max_layers: int = 6, title: str | None = None) -> Path:
    """The multi-stage rank search of a few layers (the paper's Fig. 3).

    One panel per layer: a row per stage (stage 1 on top) with the stage's candidate window as a grey
    band and its candidates as dots whose size and colour give their final p of that stage; the
    stage's argmax (r̄, the centre of the next window) is ringed in red with its p; the dashed line is
    the rank finally chosen (after the parameter budget, if any). ``layers``: which to show (default:
    up to ``max_layers`` of those searched over the most stages, spread over the model).
    """
    report = _as_report(report)
    trace = (report.search or {}).get("trace")
    if not trace:
        raise ValueError("report has no search trace to plot (no search, or a report from before traces)")
    order = [r.name for r in report.layers] or []
    traced: dict[str, list[tuple[int, dict]]] = {}
    for st in trace:
        for name, rec in st["layers"].items():
            traced.setdefault(name, []).append((int(st["stage"]), rec))
    names = _pick_traced(traced, order, layers, max_layers)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * ncols + 1.2, 2.6 * nrows + 0.8), constrained_layout=True)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    cmap, norm = colormaps["viridis"], Normalize(0.0, 1.0)
    final = (report.search or {}).get("layers") or {}
    for ax, name in zip(axes, names):
        stages = traced[name]
        for stage, rec in stages:
            c, p = np.asarray(rec["candidates"], float), np.asarray(rec["p"], float)
            lo, hi = (rec["window"][:2] if len(rec.get("window") or []) >= 2 else (c.min(), c.max()))
            ax.plot([lo, hi], [stage, stage], color="#cccccc", lw=9, solid_capstyle="butt", zorder=1)
            ax.scatter(c, np.full_like(c, stage), s=15 + 220 * p, c=p, cmap=cmap, norm=norm, zorder=2,
                       edgecolors="none")
            k = int(np.argmax(p))
            ax.scatter([c[k]], [stage], s=15 + 220 * p[k], facecolors="none", edgecolors="red", lw=1.4, zorder=3)
            ax.annotate(f"r̄={int(c[k])}, p={p[k]:.2f}", (c[k], stage), xytext=(0, 11), textcoords="offset points",
                        ha="center", fontsize=7, color="red")
        chosen = (final.get(name) or {}).get("chosen") or []
        if chosen:
            ax.axvline(chosen[0], color="black", ls="--", lw=1, label=f"final rank {chosen[0]}")
            ax.legend(fontsize=7, loc="lower left")
        elif name in final:
            ax.text(0.01, 0.03, "final: kept dense", transform=ax.transAxes, fontsize=7)
        ax.margins(x=0.06)
        n = max(s for s, _ in stages)
        ax.set_ylim(n + 0.7, 0.4)
        ax.set_yticks(range(1, n + 1))
        ax.set_ylabel("stage")
        ax.set_xlabel("rank")
        method = (final.get(name) or {}).get("method")
        ax.set_title(name + (f" ({method})" if method else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[:len(names)]), label="p (end of stage)",
                 shrink=0.8)
    fig.suptitle(title or f"Multi-stage rank search{_model_suffix(report)}")
    return _save(fig, path)


# ---------------------------------------------------------------- helpers


def _num(v: float | None) -> float:
    return np.nan if v is None else float(v)


def _pick_traced(traced: Mapping[str, list], order: list[str], layers: Sequence[str] | None,
                 max_layers: int) -> list[str]:
    """The layers to show: the ones asked for, else up to ``max_layers`` of the most-staged, spread evenly."""
    if layers is not None:
        missing = [n for n in layers if n not in traced]
        if missing or not layers:
            raise ValueError(f"no search trace for layer(s) {missing}; traced: {', '.join(traced)}")
        return list(layers)
    pos = {n: i for i, n in enumerate(order)}
    names = sorted(traced, key=lambda n: pos.get(n, len(pos)))
    most = max(len(v) for v in traced.values())
    pool = [n for n in names if len(traced[n]) == most]
    if len(pool) < max_layers:  # fill with the next most-staged
        pool = sorted(names, key=lambda n: -len(traced[n]))[:max_layers]
        pool = sorted(pool, key=lambda n: pos.get(n, len(pos)))
    if len(pool) <= max_layers:
        return pool
    idx = np.unique(np.linspace(0, len(pool) - 1, max_layers).round().astype(int))
    return [pool[i] for i in idx]


def _as_report(obj: Any) -> Report:
    if isinstance(obj, Report):
        return obj
    if isinstance(obj, Mapping) and "layers" in obj:
        return Report.from_dict(obj)
    raise TypeError(f"expected a Report or a report dict, got {type(obj).__name__}")


def _as_rows(obj: Any) -> list[LayerRow]:
    if isinstance(obj, (Report, Mapping)):
        return _as_report(obj).layers
    if isinstance(obj, Sequence):
        return [r if isinstance(r, LayerRow) else LayerRow(**r) for r in obj]
    raise TypeError(f"expected a Report, a report dict or a list of layer rows, got {type(obj).__name__}")


def _label(report: Report, i: int) -> str:
    return str(report.meta.get("label") or report.meta.get("method") or f"run {i + 1}")


def _series(obj: Any) -> Series:
    if isinstance(obj, Report) or (isinstance(obj, Mapping) and "layers" in obj):
        r = _as_report(obj)
        out = {_label(r, 0): r.layers}
    elif isinstance(obj, Mapping):
        out = {str(k): _as_rows(v) for k, v in obj.items()}
    elif isinstance(obj, Sequence) and not isinstance(obj, str):
        items = list(obj)
        if items and all(isinstance(o, Report) or (isinstance(o, Mapping) and "layers" in o) for o in items):
            out = {}
            for i, o in enumerate(items):
                r = _as_report(o)
                label = _label(r, i)
                out[label if label not in out else f"{label} ({i + 1})"] = r.layers
        else:
            out = {"layers": _as_rows(items)}
    else:
        raise TypeError(f"cannot plot ranks of {type(obj).__name__}")
    if not out or not any(out.values()):
        raise ValueError("nothing to plot: no layers")
    return out


def _layer_names(series: Series) -> list[str]:
    names: dict[str, None] = {}
    for rows in series.values():
        for r in rows:
            names.setdefault(r.name, None)
    return list(names)


def _figure(n_layers: int, n_series: int, rows: int):
    from matplotlib.figure import Figure

    width = min(40.0, max(6.0, 0.25 * n_layers * max(1, n_series) + 2))
    fig = Figure(figsize=(width, 3.2 * rows), constrained_layout=True)
    axes = fig.subplots(rows, 1, sharex=True)
    return fig, axes


def _finish(fig, axes, names: list[str], title: str, legend: bool) -> None:
    x = np.arange(len(names))
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels(names, rotation=90, fontsize=7)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, len(names) - 0.4)
    if legend:
        axes[0].legend(fontsize=8)
    fig.suptitle(title)


def _model_suffix(report: Report) -> str:
    return f": {report.meta['model']}" if report.meta.get("model") else ""


def _save(fig, path: str | os.PathLike) -> Path:
    """Render to PNG through a temporary file in the same folder, then rename."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"plot folder does not exist: {path.parent}")
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
