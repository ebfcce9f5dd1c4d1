"""The export report: one row per artifact (size, numerics vs the original, latency per runtime); JSON, table.

No torch, no onnx. ``ExportReport.artifacts`` holds one :class:`ArtifactRow` per file written (and a
``source`` row for the model exported, and an ``original`` row when the fidelity reference is
another model, e.g. the dense model a compressed one came from). ``numerics`` follow
``rene_onnx.validate.numerics.Numerics`` (max/mean abs diff, cosine, top-1 agreement, top-5
overlap, mean per-sample cosine) and are measured on the inputs ``inputs["fidelity_on"]`` names:
held-out real inputs where there are any, else random inputs (which check that the conversion is
sound, nothing more). ``latency_ms[runtime]`` holds the artifact's median, the original's median
from the same interleaved run, and their ratio ``speedup`` (> 1: faster than the original).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from rene_onnx.plan import atomic_write_text

FORMAT = "rene-onnx/export-report/v1"


@dataclass
class ArtifactRow:
    kind: str  # original | source | int8 | fp16 | ort | opset
    file: str | None
    size_bytes: int
    format: str = "onnx"  # onnx | ort
    opset: int | None = None
    size_ratio: float | None = None  # original size / this size (> 1: smaller)
    numerics: dict[str, Any] | None = None  # vs the original, on onnxruntime
    numerics_by_runtime: dict[str, Any] = field(default_factory=dict)  # other runtimes: vs the original on onnxruntime
    latency_ms: dict[str, Any] = field(default_factory=dict)  # runtime -> {median_ms, original_ms, speedup, ...}
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportReport:
    source: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    artifacts: list[ArtifactRow] = field(default_factory=list)
    runtimes: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def artifact(self, kind: str) -> ArtifactRow | None:
        return next((a for a in self.artifacts if a.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        from .report import jsonable

        d: dict[str, Any] = {"format": FORMAT}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = [asdict(a) for a in v] if f.name == "artifacts" else v
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExportReport":
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"not a rene-onnx export report (format {d.get('format')!r}, expected {FORMAT!r})")
        names = {f.name for f in fields(ArtifactRow)}
        rows = [ArtifactRow(**{k: v for k, v in a.items() if k in names}) for a in d.get("artifacts", [])]
        return cls(dict(d.get("source") or {}), dict(d.get("inputs") or {}), rows, dict(d.get("runtimes") or {}),
                   dict(d.get("meta") or {}))

    def save_json(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------------------------- rendering


def render_export(report: ExportReport) -> list:
    """Rich renderables: the artifact table, then each INT8 artifact's per-layer error table."""
    out: list = [artifact_table(report)]
    for row in report.artifacts:
        layers = (row.details or {}).get("layer_errors")
        if layers:
            out.append(layer_error_table(row.kind, layers))
    notes = [f"{a.kind}: {n}" for a in report.artifacts for n in a.notes]
    if notes:
        out.append(Group(*[Text(f"note: {n}", style="dim") for n in notes]))
    return out


def render_export_text(report: ExportReport, width: int = 160) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    for r in render_export(report):
        console.print(r)
    return console.export_text()


def artifact_table(report: ExportReport) -> Table:
    fid = report.inputs.get("fidelity_on", "")
    t = Table(title=f"Export (fidelity vs the original on {fid})" if fid else "Export", header_style="bold")
    for col, just in (("artifact", "left"), ("file", "left"), ("size", "right"), ("smaller", "right"),
                      ("top-1 agr.", "right"), ("top-5 ovl.", "right"), ("cosine", "right")):
        t.add_column(col, justify=just, overflow="fold")
    runtimes = list(report.runtimes) or sorted({r for a in report.artifacts for r in a.latency_ms})
    for rt in runtimes:
        t.add_column(f"{rt} ms", justify="right")
    for a in report.artifacts:
        n = a.numerics or {}
        cells = [a.kind, a.file or "-", _mb(a.size_bytes), _x(a.size_ratio), _pct(n.get("top1_agreement")),
                 _pct(n.get("top5_overlap")), _f(n.get("cosine"), "{:.5f}")]
        for rt in runtimes:
            lat = a.latency_ms.get(rt)
            if not lat:
                cells.append("-")
            elif lat.get("median_ms") is None:
                cells.append(Text(lat.get("skipped", "-"), style="dim"))
            else:
                cells.append(f"{lat['median_ms']:.3f}" + (f" ({lat['speedup']:.2f}x)" if lat.get("speedup") else ""))
        t.add_row(*cells)
    return t


def layer_error_table(kind: str, layers: list[dict]) -> Table:
    t = Table(title=f"{kind}: per-layer quantization error (each layer quantized alone)", header_style="bold")
    for col in ("layer", "method", "nodes", "rel. error", "SQNR dB", "dense rel. error", ""):
        t.add_column(col, justify="left" if col in ("layer", "method", "") else "right", overflow="fold")
    for r in layers:
        t.add_row(r["name"], r["method"], str(r["nodes"]), _f(r["rel_error"], "{:.4f}"), _f(r["sqnr_db"], "{:.1f}"),
                  _f(r.get("dense_rel_error"), "{:.4f}"), "LOSSY: chain loses clearly more than dense" if r.get("lossy") else "",
                  style="bold" if r.get("lossy") else None)
    return t


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)
