"""``write_plots``: a report's three PNGs into a folder (what ``compress --plots`` / ``search --plots`` write).

- ``ranks.png``: chosen rank and kept-parameter fraction per layer (:func:`.plots.plot_ranks`, Fig. 5 style);
- ``layers.png``: parameters and MACs per layer before / after, and latency where measured
  (:func:`.plots.plot_layers`);
- ``search.png``: the multi-stage search trace (:func:`.plots.plot_search`, Fig. 3 style), only when the
  report has one (no search, e.g. ``compress --ranks``: no file).

A plot path that is one of the command's inputs or other outputs (``protect``) is refused with a
:class:`~rene_onnx.errors.PathConflictError` before anything is written; :func:`plot_paths` does that check
alone, so a caller can run it before a long compression.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rene_onnx.errors import PathConflictError, UserError

from .plots import plot_layers, plot_ranks, plot_search
from .report import Report

NAMES = ("ranks.png", "layers.png", "search.png")


def plot_paths(out_dir: str | os.PathLike, protect: Iterable[Any] = ()) -> list[Path]:
    """The three plot paths in ``out_dir``; PathConflictError if one is a path in ``protect`` (inputs and
    other outputs: None and non-path values are ignored) or ``out_dir`` is an existing file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PathConflictError(f"{out} is a file, not a folder for the plots", option="plots")
    paths = [out / n for n in NAMES]
    guarded = {}
    for p in protect:
        if isinstance(p, (str, os.PathLike)) and str(p):
            guarded[Path(p).resolve()] = p
    for path in paths:
        hit = guarded.get(path.resolve())
        if hit is not None:
            raise PathConflictError(f"plot {path} would overwrite {hit}, which this command reads or writes",
                                    option="plots")
    return paths


def write_plots(report: Report | Mapping[str, Any], out_dir: str | os.PathLike, *,
                protect: Iterable[Any] = ()) -> list[Path]:
    """Write ``ranks.png``, ``layers.png`` and (with a search trace) ``search.png`` into ``out_dir``
    (created if missing); returns the paths written. ``report``: a :class:`Report` or its ``to_dict()``."""
    ranks, layers, search = plot_paths(out_dir, protect)
    try:
        rep = report if isinstance(report, Report) else Report.from_dict(dict(report))
    except (TypeError, ValueError) as e:
        raise UserError(f"not a rene-onnx report: {e}") from e
    if not rep.layers:
        raise UserError("the report has no layers to plot")
    ranks.parent.mkdir(parents=True, exist_ok=True)
    title = f": {rep.meta['model']}" if rep.meta.get("model") else ""
    written = [plot_ranks(rep, ranks, title=f"Per-layer ranks{title}"), plot_layers(rep, layers)]
    if (rep.search or {}).get("trace"):
        written.append(plot_search(rep, search))
    return written


__all__ = ["NAMES", "plot_paths", "write_plots"]
