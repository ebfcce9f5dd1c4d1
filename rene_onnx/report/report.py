"""The compression report: one dataclass, JSON round-trip (no torch, no onnx).

``params`` / ``macs`` hold at least ``before`` and ``after`` (ONNX counts;
extra keys such as ``torch_before`` are kept). ``latency_ms`` holds
``before``, ``after`` and ``provider`` (or is ``None`` when not measured).
``numerics`` holds ``max_abs_diff``, ``max_rel_diff``, ... (see
``rene_onnx.validate.numerics.Numerics``). The JSON also carries the derived
ratios ``params_reduction_pct``, ``macs_ratio`` (before / after) and
``latency_speedup`` (before / after); ``from_dict`` recomputes them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rene_onnx.decompose.ranks import LayerShape, dense_macs, dense_params, factorized_macs, factorized_params
from rene_onnx.files import atomic_write_text

FORMAT = "rene-onnx/report/v1"
#: how the summary names the fidelity measures
FIDELITY_NAMES = {"top1_agreement": "top-1 agreement", "mean_sample_cosine": "mean cosine per sample"}
STATUSES = ("factorized", "dense")


@dataclass
class LayerRow:
    """One layer: how it was decomposed and what it costs before / after."""

    name: str
    op: str
    method: str
    rank: list[int] | None
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    status: str  # "factorized" | "dense"
    reason: str = ""
    latency_us_before: float | None = None
    latency_us_after: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"layer {self.name!r}: status must be one of {STATUSES}, got {self.status!r}")
        if self.rank is not None:
            self.rank = [int(r) for r in self.rank]

    @property
    def params_kept(self) -> float | None:
        """Fraction of the layer's parameters kept (after / before)."""
        return self.params_after / self.params_before if self.params_before else None

    @classmethod
    def from_shape(
        cls, name: str, op: str, shape: LayerShape, method: str = "dense",
        ranks: tuple[int, ...] | list[int] | None = None, reason: str = "",
    ) -> "LayerRow":
        """A row counted by ``rene_onnx.decompose.ranks`` (``method="dense"`` for a layer left dense)."""
        factorized = method != "dense"
        if factorized and not ranks:
            raise ValueError(f"layer {name!r}: method {method!r} needs ranks")
        return cls(
            name=name, op=op, method=method, rank=list(ranks) if factorized else None,
            params_before=dense_params(shape),
            params_after=factorized_params(method, shape, tuple(ranks)) if factorized else dense_params(shape),
            macs_before=dense_macs(shape),
            macs_after=factorized_macs(method, shape, tuple(ranks)) if factorized else dense_macs(shape),
            status="factorized" if factorized else "dense", reason=reason,
        )


#: top-1 agreement with the original, on real inputs, below which the summary warns that the model is broken
BROKEN_AGREEMENT = 0.5


@dataclass
class Report:
    params: dict[str, Any] = field(default_factory=dict)
    macs: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, Any] | None = None
    numerics: dict[str, Any] = field(default_factory=dict)
    layers: list[LayerRow] = field(default_factory=list)
    search: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ derived ratios
    @property
    def params_reduction_pct(self) -> float | None:
        """Percent of all parameters removed (the paper's compression rate)."""
        b, a = _pair(self.params)
        return None if b is None or a is None or b == 0 else 100.0 * (1.0 - a / b)

    @property
    def macs_ratio(self) -> float | None:
        """MACs before / after (> 1 means fewer MACs)."""
        return _ratio(*_pair(self.macs))

    @property
    def latency_speedup(self) -> float | None:
        """Latency before / after (> 1 means faster)."""
        return _ratio(*_pair(self.latency_ms))

    @property
    def warnings(self) -> list[str]:
        """What the summary must not let pass unnoticed: a compressed model slower than the original, or one
        whose top-1 changed for most real inputs (agreement below :data:`BROKEN_AGREEMENT`)."""
        out = []
        s = self.latency_speedup
        if s is not None and s < 1.0:
            where = (self.latency_ms or {}).get("provider")
            shown = f"{s:.2f}" if round(s, 2) < 1.0 else f"{s:.3f}"  # never "SLOWER (1.00x)"
            out.append(f"the compressed model is SLOWER than the original ({shown}x speed-up"
                       + (f" on {where}" if where else "") + ")")
        for entry in (self.numerics or {}).values():
            if not isinstance(entry, dict) or entry.get("inputs") in (None, "random"):
                continue
            agree = entry.get("top1_agreement")
            if agree is not None and agree < BROKEN_AGREEMENT:
                out.append(f"the compressed model's top-1 differs from the original's on {100 * (1 - agree):.0f}% "
                           f"of the real inputs ({entry['inputs']}, n={entry.get('n', '?')}): its predictions "
                           f"changed for most of them; keep more (--min-fidelity sets a floor)")
        verdict = self.int8_comparison()
        if verdict is not None and verdict["int8_better"]:
            out.append(f"onnxruntime INT8 of the original is faster ({verdict['int8_speedup']:.2f}x vs "
                       f"{verdict['speedup']:.2f}x) and at least as faithful ({verdict['metric']} "
                       f"{verdict['int8_fidelity']:.3f} vs {verdict['fidelity']:.3f} on {verdict['inputs']}), and "
                       f"{verdict['int8_smaller']:.1f}x smaller than the original: here it is the better tool "
                       f"(rene-onnx export {self.meta.get('model') or 'MODEL'} --to int8 --calib "
                       f"{(self.meta.get('calib') or {}).get('path') or 'CALIB'})")
        return out

    def int8_comparison(self) -> dict[str, Any] | None:
        """The compressed model vs the INT8 baseline (``meta.int8_baseline``, ``--compare-int8``): speed-ups over
        the original, fidelity on the same held-out inputs, and ``int8_better`` (faster and at least as faithful).
        None without a baseline, its latency, or a fidelity measured on real inputs for both."""
        b = (self.meta or {}).get("int8_baseline")
        mine = (self.numerics or {}).get("calib")
        if not b or b.get("speedup") is None or self.latency_speedup is None or not mine or not b.get("fidelity"):
            return None
        metric = "top1_agreement" if mine.get("top1_agreement") is not None else "mean_sample_cosine"
        if mine.get(metric) is None or b["fidelity"].get(metric) is None:
            return None
        out = {"speedup": self.latency_speedup, "int8_speedup": b["speedup"], "metric": FIDELITY_NAMES[metric],
               "fidelity": mine[metric], "int8_fidelity": b["fidelity"][metric], "int8_smaller": b.get("smaller"),
               "inputs": f"{mine.get('inputs')}, n={mine.get('n')}"}
        out["int8_better"] = out["int8_speedup"] >= out["speedup"] and out["int8_fidelity"] >= out["fidelity"]
        return out

    # ------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        d = {"format": FORMAT}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = [asdict(r) for r in v] if f.name == "layers" else v
        d["params_reduction_pct"] = self.params_reduction_pct
        d["macs_ratio"] = self.macs_ratio
        d["latency_speedup"] = self.latency_speedup
        d["warnings"] = self.warnings
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"not a rene-onnx report (format {fmt!r}, expected {FORMAT!r})")
        names = {f.name for f in fields(LayerRow)}
        layers = [LayerRow(**{k: v for k, v in row.items() if k in names}) for row in d.get("layers", [])]
        return cls(
            params=dict(d.get("params") or {}), macs=dict(d.get("macs") or {}),
            latency_ms=d.get("latency_ms"), numerics=dict(d.get("numerics") or {}), layers=layers,
            search=d.get("search"), accuracy=d.get("accuracy"), meta=dict(d.get("meta") or {}),
        )

    def save_json(self, path: str | os.PathLike) -> None:
        """Write the report as JSON (atomically: temporary file, then rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> "Report":
        with open(path) as f:
            return cls.from_dict(json.load(f))


def fill_layer_latency(
    layers: list[LayerRow],
    times_before: dict[str, float],
    times_after: dict[str, float],
    nodes_before: dict[str, list[str]],
    nodes_after: dict[str, list[str]],
) -> None:
    """Set each row's ``latency_us_before`` / ``_after`` from per-node profiles.

    ``times_*``: node name -> microseconds (``rene_onnx.validate.latency.profile_nodes``);
    ``nodes_*``: layer name -> the ONNX nodes that compute it (the original
    node; the factorized chain). A row's time is the sum over its nodes that
    were profiled; it stays ``None`` when none was (e.g. fused away).
    """
    for row in layers:
        row.latency_us_before = _sum_times(times_before, nodes_before.get(row.name, ()))
        row.latency_us_after = _sum_times(times_after, nodes_after.get(row.name, ()))


def _sum_times(times: dict[str, float], nodes) -> float | None:
    hit = [times[n] for n in nodes if n in times]
    return float(sum(hit)) if hit else None


def _pair(d: dict[str, Any] | None) -> tuple[float | None, float | None]:
    if not d:
        return None, None
    b, a = d.get("before"), d.get("after")
    return (None if b is None else float(b)), (None if a is None else float(a))


def _ratio(b: float | None, a: float | None) -> float | None:
    return None if b is None or a is None or a == 0 else b / a


def jsonable(v: Any) -> Any:
    """Plain JSON types: numpy scalars / arrays and tuples converted, NaN / inf -> None, dataclasses -> dicts."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "__dataclass_fields__"):
        return jsonable(asdict(v))
    if hasattr(v, "tolist"):  # numpy scalar or array
        return jsonable(v.tolist())
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v
