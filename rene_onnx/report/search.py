"""The report's ``search`` section from a search result, and a report of a search alone (no torch, no onnx).

``search_section(result)`` is what ``Report.search`` holds after a searched ``compress``: the mode,
the final per-layer choice, and ``trace``, the multi-stage search as it ran (the paper's Fig. 3)::

    "trace": [{"stage": 1, "layers": {"layer1.0.conv1": {"window": [lo, hi, step], "candidates": [...],
                                                        "p": [...], "rbar": 12}, ...}}, ...]

``search_report(result, shapes, ops)`` builds a :class:`Report` from a search alone (``rene-onnx
search`` has no rewritten model): per-layer rows counted from the layer shapes at the chosen ranks,
so the same plots work on it. Both read the result's attributes only (``rene_onnx.engine.search.SearchResult``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rene_onnx.decompose.ranks import LayerShape

from .report import LayerRow, Report


def search_trace(stages: list[dict]) -> list[dict]:
    """Per stage, per layer: the candidate window ``[lo, hi, step]``, the candidates, their p, argmax p."""
    out = []
    for i, st in enumerate(stages):
        layers = {}
        for name, rec in (st.get("layers") or {}).items():
            layers[name] = {"window": list(rec.get("window") or []), "candidates": [int(c) for c in rec["candidates"]],
                            "p": [round(float(v), 4) for v in rec["p"]], "rbar": int(rec["rbar"])}
        out.append({"stage": int(st.get("stage", i + 1)), "layers": layers})
    return out


def search_section(searched: Any) -> dict | None:
    """``Report.search`` for a search result (None for no search)."""
    if searched is None:
        return None
    return {
        "mode": searched.mode, "seconds": round(searched.seconds, 2), "stages": len(searched.stages),
        "params_fraction": searched.params_fraction, "macs_fraction": searched.macs_fraction,
        "calib_samples": searched.calib_samples, "backoffs": searched.backoffs,
        "sensitivity": dict(getattr(searched, "sensitivity", None) or {}),
        "layers": {n: {"method": l.method, "chosen": list(l.chosen), "rbar": l.rbar,
                       "candidates": list(l.candidates), "p": [round(float(v), 4) for v in l.p],
                       "p_moved": round(float(l.p_moved), 4), "error": float(l.error)}
                   for n, l in searched.layers.items()},
        "trace": search_trace(searched.stages),
    }


def search_report(searched: Any, shapes: Mapping[str, LayerShape], ops: Mapping[str, str] | None = None,
                  meta: Mapping[str, Any] | None = None) -> Report:
    """A report of the searched plan: each layer of ``shapes`` counted dense and at its planned ranks."""
    rows = []
    for name, shape in shapes.items():
        lp = searched.plan.layers.get(name)
        op = (ops or {}).get(name, "?")
        if lp is not None and lp.method != "dense" and lp.ranks:
            rows.append(LayerRow.from_shape(name, op, shape, lp.method, lp.ranks))
        else:
            rows.append(LayerRow.from_shape(name, op, shape, reason=(lp.reason if lp else "") or "not in the plan"))
    params = {"before": int(searched.params[0]), "after": int(searched.params[1])}
    macs = {"before": int(searched.macs[0]), "after": int(searched.macs[1])}
    return Report(params=params, macs=macs, layers=rows, search=search_section(searched),
                  meta={"source": "search", **dict(meta or {})})


__all__ = ["search_report", "search_section", "search_trace"]
