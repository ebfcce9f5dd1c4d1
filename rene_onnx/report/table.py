"""Terminal rendering of a ``Report`` with rich (the CLI prints; this module never does)."""
from __future__ import annotations

import io
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .report import FIDELITY_NAMES, LayerRow, Report


def render(report: Report) -> list:
    """Rich renderables: the per-layer table (when the report has layers; ``validate`` of two arbitrary models
    has none), then a summary panel."""
    return ([layer_table(report.layers)] if report.layers else []) + [summary_panel(report)]


def render_text(report: Report, width: int = 140) -> str:
    """The rendered report as plain text (for logs and tests)."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    for r in render(report):
        console.print(r)
    return console.export_text()


def layer_table(layers: list[LayerRow]) -> Table:
    with_latency = any(r.latency_us_before is not None or r.latency_us_after is not None for r in layers)
    t = Table(title="Layers", show_lines=False, header_style="bold")
    t.add_column("layer", overflow="fold")
    t.add_column("op")
    t.add_column("method")
    t.add_column("rank", justify="right")
    t.add_column("params", justify="right")
    t.add_column("kept", justify="right")
    t.add_column("MACs", justify="right")
    if with_latency:
        t.add_column("time (us)", justify="right")
    t.add_column("note", overflow="fold")
    for r in layers:
        kept = r.params_kept
        cells = [
            r.name,
            r.op,
            r.method,
            "x".join(str(k) for k in r.rank) if r.rank else "-",
            _arrow(r.params_before, r.params_after, human),
            "-" if kept is None else f"{100 * kept:.0f}%",
            _arrow(r.macs_before, r.macs_after, human),
        ]
        if with_latency:
            cells.append(_arrow(r.latency_us_before, r.latency_us_after, lambda v: f"{v:.0f}"))
        cells.append(Text(r.reason or "", style="dim"))  # dense: why; factorized: e.g. "ranks per group (4 groups)"
        t.add_row(*cells, style=None if r.status == "factorized" else "dim")
    return t


def summary_panel(report: Report) -> Panel:
    lines = []
    p, m, lat = report.params, report.macs, report.latency_ms
    if p.get("before") is not None:
        pct = report.params_reduction_pct
        lines.append(f"params   {_arrow(p.get('before'), p.get('after'), human)}" + ("" if pct is None else f"   ({pct:.1f}% removed)"))
    if m.get("before") is not None:
        r = report.macs_ratio
        lines.append(f"MACs     {_arrow(m.get('before'), m.get('after'), human)}" + ("" if r is None else f"   ({r:.2f}x fewer)"))
    if lat and lat.get("before") is not None:
        s = report.latency_speedup
        lines.append(
            f"latency  {_arrow(lat.get('before'), lat.get('after'), lambda v: f'{v:.3f} ms')}"
            + ("" if s is None else f"   ({s:.2f}x speedup)")
            + (f"   on {lat['provider']}" if lat.get("provider") else "")
        )
    n = report.numerics
    if n:
        if n.get("vs") != "original":  # vs the torch student; without one the same as "vs original" below
            lines += _numerics_lines("output", n)
        lines += [ln for k, v in n.items() if isinstance(v, dict) for ln in _numerics_lines(k.replace("_", " "), v)]
    lines += fidelity_lines(report)
    base = report.meta.get("int8_baseline") if report.meta else None
    if base:
        fid = base.get("fidelity") or {}
        parts = [f"{base['speedup']:.2f}x speedup" if base.get("speedup") is not None else None,
                 f"{base['smaller']:.1f}x smaller" if base.get("smaller") else None]
        for key, name in FIDELITY_NAMES.items():
            if fid.get(key) is not None:
                parts.append(f"{name} {fid[key]:.3f} [{fid.get('inputs')}, n={fid.get('n')}]")
                break
        lines.append("INT8     " + ", ".join(p for p in parts if p) + "   (onnxruntime INT8 of the original)")
    acc = report.accuracy
    if acc:
        vals = {k: v for k, v in acc.items() if isinstance(v, (int, float)) and k not in ("samples", "n")}
        if vals:
            lines.append(f"{acc.get('metric', 'accuracy')}     " + ", ".join(f"{k} {_num(v)}" for k, v in vals.items())
                         + (f"   [{acc['inputs']}, n={acc.get('n')}]" if acc.get("inputs") else ""))
    if report.layers:
        n_fact = sum(r.status == "factorized" for r in report.layers)
        lines.append(f"layers   {n_fact} factorized, {len(report.layers) - n_fact} dense")
    title = "Summary" + (f": {report.meta['model']}" if report.meta.get("model") else "")
    texts = [Text(s) for s in lines] + [Text(f"warning  {w}", style="bold red") for w in report.warnings]
    return Panel(Group(*texts), title=title, expand=False)


def _numerics_lines(label: str, n: dict) -> list[str]:
    parts = []
    for key, name, fmt in (
        ("max_abs_diff", "max abs", "{:.3g}"), ("max_rel_diff", "max rel", "{:.3g}"),
        ("cosine", "cosine", "{:.6f}"), ("mean_sample_cosine", "mean cosine per sample", "{:.4f}"),
        ("top1_agreement", "top-1 agreement", "{:.1%}"), ("top5_overlap", "top-5 overlap", "{:.1%}"),
    ):
        if isinstance(n.get(key), (int, float)):
            parts.append(f"{name} {fmt.format(n[key])}")
    where = f"   [{n['inputs']} inputs, n={n.get('n')}]" if n.get("inputs") else ""
    return [f"{label:<8} " + ", ".join(parts) + where] if parts else []


def fidelity_lines(report: Report) -> list[str]:
    """Where the fidelity figure comes from, or that accuracy is unknown (random inputs only)."""
    from rene_onnx.validate.fidelity import UNKNOWN_ACCURACY, fidelity, real_entries

    real = real_entries(report.numerics or {})
    if not real and not report.accuracy:
        return [UNKNOWN_ACCURACY]
    lines = []
    for entry in real.values():
        got = fidelity(entry)
        if got is not None:
            name = "top-1 agreement" if got[0] == "top1_agreement" else "mean per-sample cosine"
            lines.append(f"fidelity {name} {got[1]:.4f} with the original on {entry.get('n')} {entry['inputs']} "
                         "samples" + (" (never used for search or fine-tuning)" if entry["inputs"] == "calib-heldout"
                                      else ""))
    floor = report.meta.get("min_fidelity")
    if floor:
        chosen = floor.get("chosen") or {}
        at = (f" at --target-latency {chosen['target_latency']:g}" if chosen.get("target_latency") is not None
              else f" keeping {chosen['target_params']:g} of the params" if chosen.get("target_params") is not None
              else "")
        n = len(floor["tries"])
        lines.append(f"floor    --min-fidelity {floor['floor']:g} met{at} after {n} {'try' if n == 1 else 'tries'}")
    return lines


def human(v: float) -> str:
    """12345678 -> '12.35M'."""
    v = float(v)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}"
    return f"{v:.0f}" if v == int(v) else f"{v:.3g}"


def _arrow(before: Any, after: Any, fmt) -> str:
    if before is None and after is None:
        return "-"
    b = "?" if before is None else fmt(before)
    a = "?" if after is None else fmt(after)
    return b if before == after else f"{b} -> {a}"


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
