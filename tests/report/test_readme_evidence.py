"""The README's numbers against the results files they come from.

Each :class:`Claim` says where a number stands in README.md (a regex whose one group is the number as
printed, or a table cell: table, row, column), which results file under benchmarks/results holds it,
where in that JSON (a key path, or a function of the document for a derived number) and how the README
prints it (``str.format``). The number is read from the file on every run, never written here, so a
rerun of a benchmark that changes a result fails this test until the README shows the new value.
Adding a number is one line in ``CLAIMS``. Every results file the README cites must exist.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Prose:
    """A regex with one group, the number as printed; it must match the README exactly once (a space in
    it matches any run of whitespace: prose wraps anywhere)."""

    pattern: str


@dataclass(frozen=True)
class Cell:
    """A cell of a markdown table: the table whose header line contains ``table`` (one in the README), the
    row whose first cells are ``row``, the column headed ``column``. The cell must show the number."""

    table: str
    row: tuple[str, ...]
    column: str
    block: str | None = None  # only the README text between <!-- block:start --> and <!-- block:end -->


@dataclass(frozen=True)
class Claim:
    where: Prose | Cell
    file: str  # relative to benchmarks/results
    path: tuple | Callable[[Any], Any]  # keys / indexes into the JSON, or a function of it (a derived number)
    fmt: str  # how the README prints the value

    def label(self) -> str:
        where = self.where.pattern[:40] if isinstance(self.where, Prose) else \
            f"{' / '.join(self.where.row)} | {self.where.column}"
        return f"{self.file}: {where} {self.fmt}"


@functools.lru_cache(maxsize=None)
def results(name: str) -> Any:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _at(doc: Any, path: tuple | Callable[[Any], Any]) -> Any:
    if callable(path):
        return path(doc)
    for key in path:
        doc = doc[key]
    return doc


# ----------------------------------------------------------------------------------------- derived numbers


def _study(threads: str, multiple: str) -> Callable[[dict], float]:
    """latency ratio / MACs ratio of latency_cpu.json's rank-multiple study."""
    return lambda d: d["rank_multiple_study"]["by_multiple"][multiple]["latency"][threads]["ratio_over_macs_ratio"]


def _throughput_drop(threads: str) -> Callable[[dict], float]:
    """% lower MAC throughput of the exact-rank model than the 16-multiple one (the same original)."""
    return lambda d: 100 * (1 - _study(threads, "1")(d) / _study(threads, "16")(d))


def _xeon16(threads: str) -> Callable[[dict], list[float]]:
    """ResNet-18 TT 0.25 with 16-multiples: latency ratios at ``threads`` over every run of the 16-core file."""
    return lambda d: [c["variants"]["full"]["latency"][threads]["ratio"] for run in d["runs"].values()
                      for c in run["cases"] if c["tag"] == "resnet18_tt_0.25_m16" and threads in
                      c["variants"]["full"]["latency"]]


def _search_case(case: str, key: str) -> tuple:
    return ("cases", case, key)


SEARCH_TABLE_CASES = ("resnet18-data-free", "resnet18-ce", "resnet20-data-free", "resnet20-ce")
SEARCH_CE_CASES = ("resnet18-ce", "resnet18-ce@1", "resnet20-ce")


def _ce_max_rank(d: dict) -> int:
    return max(r for case in SEARCH_CE_CASES for ranks in d["cases"][case]["ranks"].values() for r in ranks)


FMNIST = "variant (≈71 % of parameters removed)"
FMNIST_ROWS = (("RENE(TT), 10 fine-tuning epochs (2-core box)", "fashion_mnist_cpu10", "tt"),
               ("uniform TT rank, same size, same budget (2-core box)", "fashion_mnist_cpu10", "uniform"),
               ("RENE(CP), same size, same budget (2-core box)", "fashion_mnist_cpu10", "cp"),
               ("RENE(TT), 5 fine-tuning epochs (lent H200 GPU)", "fashion_mnist_h200", "tt"),
               ("uniform TT rank, same size, same budget (H200)", "fashion_mnist_h200", "uniform"))
FMNIST_COLUMNS = (("MACs removed", "macs_reduction_pct", "{:.1f} %"), ("top-1 before FT", "test_top1_before_ft", "{:.2f} %"),
                  ("top-1 after FT", "test_top1_after_ft", "{:.2f} %"))


def _fmnist(variant: str, key: str) -> tuple:
    return ("variants", variant, key)


def _fmnist_drop(variant: str) -> Callable[[dict], float]:
    return lambda d: d["original"]["test_top1"] - d["variants"][variant]["test_top1_after_ft"]


TUCKER = "k×k weight error, TT / Tucker-2"
TUCKER_ROWS = (("resnet20_fmnist", "0.25"), ("resnet20_fmnist", "0.5"), ("digits_resnet", "0.25"), ("digits_resnet", "0.5"))
TUCKER_COLUMNS = (("k×k weight error, TT / Tucker-2", "weight_error", ("{:.4f} /", "/ {:.4f}")),
                  ("top-1 after decomposition, TT / Tucker-2", "after_decomposition", ("{:.2f} /", "/ {:.2f} %")),
                  ("after fine-tuning, TT / Tucker-2", "after_finetune", ("{:.2f} % /", "/ {:.2f} %")))


def _tucker_cell(row: int, key: str, method: str) -> Callable[[dict], float]:
    def get(d):
        r = d["rows"][row]
        return r["weight_error"][method]["mean"] if key == "weight_error" else r["top1"][method][key]
    return get


def _minilm_count(kind: str, key: str, unit: float) -> Callable[[dict], float]:
    return lambda d: d["reports"]["compress"][kind][key] / unit


def _minilm_removed(kind: str, prefix: str) -> Callable[[dict], float]:
    return lambda d: (d["reports"]["compress"][kind][f"{prefix}before"] - d["reports"]["compress"][kind][f"{prefix}after"]) / 1e6


def _rss_before(pick: Callable) -> Callable[[dict], float]:
    return lambda d: pick(d["cases"][c]["rss_before_search_mb"] for c in SEARCH_TABLE_CASES)


# ----------------------------------------------------------------------------------------- the claims

LATENCY = "latency / MACs"
R18_ROWS = (("exact ranks (`--rank-multiple 1`)", "resnet18_tt025.json"), ("`--rank-multiple 16`", "resnet18_tt025_m16.json"))
CUDA = "batch 1, CUDA graph"
CUDA_ROWS = (("TT 0.25, `--rank-multiple 16`", "resnet18_tt_0.25_m16"), ("CP 0.25, `--rank-multiple 16`",
             "resnet18_cp_0.25_m16"), ("SVD 0.25, `--rank-multiple 16`", "resnet18_svd_0.25_m16"),
             ("TT 0.25, exact ranks", "resnet18_tt_0.25_m1"), ("CP 0.5, `--rank-multiple 16`", "resnet18_cp_0.5_m16"))
CUDA_COLUMNS = (("MACs ratio", "macs_ratio"), ("batch 1, `run()`", "b1_host"), ("batch 1, I/O bound", "b1_device"),
                ("batch 1, CUDA graph", "b1_graph"), ("batch 32, I/O bound", "b32_device"),
                ("batch 32, CUDA graph", "b32_graph"))
SEARCH = "| search | wall |"
R18_DF, R18_CE = "ResNet-18 224×224, TT, data-free", \
    "ResNet-18 224×224, TT, validation cross-entropy (4 batches × 8 images)"
R20 = "ResNet-20 32×32, data-free / validation CE"
EDGE = "| model | row | size on disk |"
EDGE_MODELS = (("resnet18", "ResNet-18 (224x224, random init)"), ("mobilenet_v2", "MobileNetV2 (official)"))
REAL = "| row | command | params |"

DEMO = "| params | MACs | test top-1 |"
DEMO_ROWS = ("original", "RENE search (validation CE), `--target-params 0.3`, before fine-tuning",
             "after 10 epochs of fine-tuning with distillation")

CLAIMS: list[Claim] = [
    # the demo (benchmarks/cli_reports.py demo_digits: the report of `rene-onnx compress`)
    Claim(Cell(DEMO, (DEMO_ROWS[0],), "params"), "demo_digits.json", ("params", "before"), "{:,}"),
    Claim(Cell(DEMO, (DEMO_ROWS[0],), "MACs"), "demo_digits.json", lambda d: d["macs"]["before"] / 1e6, "{:.2f} M"),
    Claim(Cell(DEMO, (DEMO_ROWS[0],), "test top-1"), "demo_digits.json", ("accuracy", "before"), "{:.2f} %"),
    Claim(Cell(DEMO, (DEMO_ROWS[1],), "params"), "demo_digits.json", ("params", "after"), "{:,}"),
    Claim(Cell(DEMO, (DEMO_ROWS[1],), "params"), "demo_digits.json",
          lambda d: 100 * (1 - d["params"]["after"] / d["params"]["before"]), "(−{:.1f} %)"),
    Claim(Cell(DEMO, (DEMO_ROWS[1],), "MACs"), "demo_digits.json", lambda d: d["macs"]["after"] / 1e6, "{:.2f} M"),
    Claim(Cell(DEMO, (DEMO_ROWS[1],), "test top-1"), "demo_digits.json", ("accuracy", "after_decomposition"),
          "{:.2f} %"),
    Claim(Cell(DEMO, (DEMO_ROWS[2],), "params"), "demo_digits.json", ("params", "after"), "{:,}"),
    Claim(Cell(DEMO, (DEMO_ROWS[2],), "test top-1"), "demo_digits.json", ("accuracy", "after_finetune"),
          "**{:.2f} %**"),
    Claim(Prose(r"dense convs \(([\d.]+) → [\d.]+ ms\)"), "demo_digits.json", ("latency_ms", "before"), "{:.3f}"),
    Claim(Prose(r"dense convs \([\d.]+ → ([\d.]+) ms\)"), "demo_digits.json", ("latency_ms", "after"), "{:.3f}"),
    # Latency vs MACs: the ResNet-18 table (one `rene-onnx compress` report per row) and the prose below it
    *[c for row, f in R18_ROWS for c in (
        Claim(Cell(LATENCY, (row,), "MACs ratio"), f, ("macs_ratio",), "{:.2f}×"),
        Claim(Cell(LATENCY, (row,), "latency ratio"), f, ("latency_speedup",), "{:.2f}×"),
        Claim(Cell(LATENCY, (row,), "latency ratio"), f, ("latency_ms", "before"), "({:.1f} →"),
        Claim(Cell(LATENCY, (row,), "latency ratio"), f, ("latency_ms", "after"), "→ {:.1f} ms)"),
        Claim(Cell(LATENCY, (row,), "latency / MACs"), f, lambda d: d["latency_speedup"] / d["macs_ratio"], "{:.2f}"),
    )],
    Claim(Prose(r"MACs at (\d+) % lower throughput than the 16-multiple one"), "latency_cpu.json",
          _throughput_drop("default"), "{:.0f}"),
    Claim(Prose(r"and (\d+) % lower with one thread"), "latency_cpu.json", _throughput_drop("1"), "{:.0f}"),
    Claim(Prose(r"MACs ratio ([\d.]+) vs [\d.]+ and [\d.]+ vs [\d.]+\)"), "latency_cpu.json",
          _study("default", "1"), "{:.3f}"),
    Claim(Prose(r"MACs ratio [\d.]+ vs ([\d.]+) and [\d.]+ vs [\d.]+\)"), "latency_cpu.json",
          _study("default", "16"), "{:.3f}"),
    Claim(Prose(r"MACs ratio [\d.]+ vs [\d.]+ and ([\d.]+) vs [\d.]+\)"), "latency_cpu.json", _study("1", "1"), "{:.3f}"),
    Claim(Prose(r"MACs ratio [\d.]+ vs [\d.]+ and [\d.]+ vs ([\d.]+)\)"), "latency_cpu.json", _study("1", "16"), "{:.3f}"),
    Claim(Prose(r"gave ([\d.]+)–[\d.]+× at 16 threads"), "latency_xeon16_cpu.json",
          lambda d: min(_xeon16("default")(d)), "{:.1f}"),
    Claim(Prose(r"gave [\d.]+–([\d.]+)× at 16 threads"), "latency_xeon16_cpu.json",
          lambda d: max(_xeon16("default")(d)), "{:.1f}"),
    Claim(Prose(r"vs ([\d.]+)–[\d.]+× at 1 thread"), "latency_xeon16_cpu.json", lambda d: min(_xeon16("1")(d)), "{:.1f}"),
    Claim(Prose(r"vs [\d.]+–([\d.]+)× at 1 thread"), "latency_xeon16_cpu.json", lambda d: max(_xeon16("1")(d)), "{:.1f}"),
    # onnxruntime CUDA on the H200
    *[Claim(Cell(CUDA, (row,), column), "latency_cuda_h200.json", ("summary", tag, key), "{:.2f}×")
      for row, tag in CUDA_ROWS for column, key in CUDA_COLUMNS],
    # search speed: the table (peak RSS in MiB, as recorded) and the notes under it
    Claim(Cell(SEARCH, (R18_DF,), "wall"), "search_speed.json", _search_case("resnet18-data-free", "seconds"), "{:.1f} s"),
    Claim(Cell(SEARCH, (R18_DF,), "CPU time"), "search_speed.json", _search_case("resnet18-data-free", "cpu_seconds"),
          "{:.1f} s"),
    Claim(Cell(SEARCH, (R18_DF,), "peak RSS"), "search_speed.json", _search_case("resnet18-data-free", "peak_rss_mb"),
          "{:.1f} MiB"),
    Claim(Cell(SEARCH, (R18_CE,), "wall"), "search_speed.json", _search_case("resnet18-ce", "seconds"), "{:.0f} s"),
    Claim(Cell(SEARCH, (R18_CE,), "CPU time"), "search_speed.json", _search_case("resnet18-ce", "cpu_seconds"), "{:.0f} s"),
    Claim(Cell(SEARCH, (R18_CE,), "peak RSS"), "search_speed.json", _search_case("resnet18-ce", "peak_rss_mb"), "{:.1f} MiB"),
    Claim(Cell(SEARCH, (R20,), "wall"), "search_speed.json", _search_case("resnet20-data-free", "seconds"), "{:.1f} s /"),
    Claim(Cell(SEARCH, (R20,), "wall"), "search_speed.json", _search_case("resnet20-ce", "seconds"), "/ {:.1f} s"),
    Claim(Cell(SEARCH, (R20,), "CPU time"), "search_speed.json", _search_case("resnet20-data-free", "cpu_seconds"),
          "{:.1f} s /"),
    Claim(Cell(SEARCH, (R20,), "CPU time"), "search_speed.json", _search_case("resnet20-ce", "cpu_seconds"), "/ {:.1f} s"),
    Claim(Cell(SEARCH, (R20,), "peak RSS"), "search_speed.json", _search_case("resnet20-data-free", "peak_rss_mb"),
          "{:.1f} /"),
    Claim(Cell(SEARCH, (R20,), "peak RSS"), "search_speed.json", _search_case("resnet20-ce", "peak_rss_mb"), "/ {:.1f} MiB"),
    Claim(Prose(r"Of each peak, ([\d.]+)–[\d.]+ MiB"), "search_speed.json", _rss_before(min), "{:.1f}"),
    Claim(Prose(r"Of each peak, [\d.]+–([\d.]+) MiB"), "search_speed.json", _rss_before(max), "{:.1f}"),
    Claim(Prose(r"CE search took (\d+) s wall and \d+ s CPU: case `resnet18-ce@1`"), "search_speed.json",
          _search_case("resnet18-ce@1", "seconds"), "{:.0f}"),
    Claim(Prose(r"CE search took \d+ s wall and (\d+) s CPU: case `resnet18-ce@1`"), "search_speed.json",
          _search_case("resnet18-ce@1", "cpu_seconds"), "{:.0f}"),
    Claim(Prose(r"its model rows record commit (\w+)"), "search_speed.json", _search_case("resnet18-ce", "commit"), "{}"),
    Claim(Prose(r"every searched layer ended at rank (\d+)"), "search_speed.json", _ce_max_rank, "{}"),
    Claim(Prose(r"`params_fraction` ([\d.]+) for ResNet-18"), "search_speed.json",
          _search_case("resnet18-ce", "params_fraction"), "{:g}"),
    Claim(Prose(r"and ([\d.]+) for ResNet-20; note"), "search_speed.json", _search_case("resnet20-ce", "params_fraction"),
          "{:g}"),
    Claim(Prose(r'note "(\d+ of \d+) layers ended at their smallest rank"'), "search_speed.json",
          lambda d: re.match(r"\d+ of \d+", d["cases"]["resnet18-ce"]["notes"][0]).group(0), "{}"),
    # MiniLM through the CLI
    # Fashion-MNIST, the paper's Table 1 analog: every cell, from the run each row names
    *(Claim(Cell(FMNIST, (row,), col), f"{file}.json", _fmnist(variant, key), fmt)
      for row, file, variant in FMNIST_ROWS for col, key, fmt in FMNIST_COLUMNS),
    *(Claim(Cell(FMNIST, (row,), "top-1 after FT"), f"{file}.json", _fmnist_drop(variant), "(−{:.2f})")
      for row, file, variant in FMNIST_ROWS[:4]),
    Claim(Prose(r"ResNet-20 trained once to\s+([\d.]+) % test top-1"), "fashion_mnist_cpu10.json",
          ("original", "test_top1"), "{:.2f}"),
    Claim(Prose(r"RENE\(TT\) lost ([\d.]+)\s+points \(`fashion_mnist.json`\)"), "fashion_mnist.json",
          _fmnist_drop("tt"), "{:.2f}"),
    Claim(Prose(r"latency / MACs ≥ 0.8, is missed at ([\d.]+) /"), "latency_cpu.json",
          lambda d: d["goal"]["cases"][1]["latency"]["default"]["ratio_over_macs_ratio"], "{:.2f}"),
    Claim(Prose(r"is missed at [\d.]+ / ([\d.]+);"), "latency_cpu.json",
          lambda d: d["goal"]["cases"][1]["latency"]["1"]["ratio_over_macs_ratio"], "{:.2f}"),
    Claim(Prose(r"ResNet-18 TT 0.25: ([\d.]+)× at `--rank-multiple 16` on this host"), "resnet18_tt025_m16.json",
          ("latency_speedup",), "{:.2f}"),
    # data-free MobileNetV2 at --target-macs 0.8
    Claim(Prose(r"Intel Xeon host; (\d+) min, of which"), "datafree_mnv2.json", lambda d: d["compress_seconds"] / 60, "{:.0f}"),
    Claim(Prose(r"of which (\d+) min synthesising"), "datafree_mnv2.json", lambda d: d["estimate"]["seconds"] / 60,
          "{:.0f}"),
    Claim(Prose(r"on 128 crops of 16 photos it never saw: \*\*([\d.]+)\*\*"), "datafree_mnv2.json",
          ("top1_agreement",), "{:.3f}"),
    Claim(Prose(r"\(top-5 overlap ([\d.]+);"), "datafree_mnv2.json", ("top5_overlap",), "{:.3f}"),
    Claim(Prose(r"by a KL of ([\d.]+) \(median of the"), "datafree_mnv2.json",
          lambda d: float(np.median([c[1][0] for c in d["estimate"]["curves"].values()])), "{:.2f}"),
    Claim(Prose(r"median of the (\d+) layers\)"), "datafree_mnv2.json", lambda d: len(d["estimate"]["curves"]), "{}"),
    Claim(Prose(r"median of the \d+ layers\) to ([\d.]+) on the synthetic"), "datafree_mnv2.json",
          lambda d: max(c[1][0] for c in d["estimate"]["curves"].values()), "{:.1f}"),
    Claim(Prose(r"original's runs spread from ([\d.]+) to"), "resnet18_tt025.json",
          lambda d: d["latency_ms"]["detail"][0]["p10_ms"], "{:.1f}"),
    Claim(Prose(r"original's runs spread from [\d.]+ to ([\d.]+) ms"), "resnet18_tt025.json",
          lambda d: d["latency_ms"]["detail"][0]["p90_ms"], "{:.1f}"),
    # Tucker-2 vs TT: every cell of the table, both methods
    *(Claim(Cell(TUCKER, (model, frac), col), "tucker2_vs_tt.json", _tucker_cell(i, key, m), fmt)
      for i, (model, frac) in enumerate(TUCKER_ROWS) for col, key, fmts in TUCKER_COLUMNS
      for m, fmt in zip(("tt", "tucker2"), fmts) if key != "after_finetune" or model == "digits_resnet"),
    # the report section: ONNX vs torch counts on a transformer graph, and what the compression removed
    Claim(Prose(r"all-MiniLM-L6-v2: ([\d.]+) M vs"), "minilm_cli.json", _minilm_count("params", "before", 1e6), "{:.1f}"),
    Claim(Prose(r"all-MiniLM-L6-v2: [\d.]+ M vs\s+([\d.]+) M params"), "minilm_cli.json",
          _minilm_count("params", "torch_before", 1e6), "{:.1f}"),
    Claim(Prose(r"\(([\d.]+) M vs [\d.]+ M\s+MACs"), "minilm_cli.json", _minilm_count("macs", "before", 1e6), "{:.1f}"),
    Claim(Prose(r"\([\d.]+ M vs ([\d.]+) M\s+MACs"), "minilm_cli.json", _minilm_count("macs", "torch_before", 1e6),
          "{:.1f}"),
    Claim(Prose(r"MiniLM: ([\d.]+) M params,"), "minilm_cli.json", _minilm_removed("params", ""), "{:.2f}"),
    Claim(Prose(r"MiniLM: ([\d.]+) M params,"), "minilm_cli.json", _minilm_removed("params", "torch_"), "{:.2f}"),
    Claim(Prose(r"M params,\s+([\d.]+) M MACs both ways"), "minilm_cli.json", _minilm_removed("macs", ""), "{:.1f}"),
    Claim(Prose(r"M params,\s+([\d.]+) M MACs both ways"), "minilm_cli.json", _minilm_removed("macs", "torch_"),
          "{:.1f}"),
    Claim(Prose(r"held-out mean\s+cosine \*\*([\d.]+)\*\*"), "minilm_cli.json", ("held_out_mean_sample_cosine",), "{:.3f}"),
    Claim(Prose(r"\*\*0\.9\d\d\*\* \(([\d.]+)\) on all \d+ test sentences"), "minilm_cli.json",
          ("held_out_mean_sample_cosine",), "{:.4f}"),
    Claim(Prose(r"\(([\d.]+)\) on all \d+ test sentences"), "minilm_cli.json",
          ("reports", "validate", "numerics", "calib", "mean_sample_cosine"), "{:.4f}"),
    Claim(Prose(r"on all (\d+) test sentences"), "minilm_cli.json", ("reports", "validate", "numerics", "calib", "n"),
          "{}"),
    Claim(Prose(r"compared only the first (\d+), as that command"), "minilm_cli.json",
          ("revalidated", "previous", "n"), "{}"),
    Claim(Prose(r"as that command then did: ([\d.]+);"), "minilm_cli.json",
          ("revalidated", "previous", "mean_sample_cosine"), "{:.4f}"),
    Claim(Prose(r"original \*\*([\d.]+)\*\* on its \d+ held-out calibration"), "minilm_cli.json",
          ("reports", "compress", "numerics", "calib", "mean_sample_cosine"), "{:.3f}"),
    Claim(Prose(r"\*\* on its (\d+) held-out calibration"), "minilm_cli.json",
          ("reports", "compress", "numerics", "calib", "n"), "{}"),
    Claim(Prose(r"−([\d.]+) % of the Linear parameters \(−"), "minilm_cli.json",
          lambda d: 100 * (1 - d["reports"]["compress"]["params"]["torch_after"]
                           / d["reports"]["compress"]["params"]["torch_before"]), "{:.1f}"),
    Claim(Prose(r"latency ([\d.]+)×\s+\([\d.]+ → [\d.]+ ms at batch 1 × 32 tokens"), "minilm_cli.json",
          lambda d: d["reports"]["validate"]["latency_ms"]["before"] / d["reports"]["validate"]["latency_ms"]["after"],
          "{:.2f}"),
]


def _edge_claims() -> list[Claim]:
    """Every row of edge.json's two models (the table benchmarks/edge.py --table prints)."""
    doc, out = results("edge.json") or {}, []
    for model, label in EDGE_MODELS:
        for name in doc.get(model, {}).get("rows", {}):
            def row(key, *more, m=model, n=name):
                return lambda d: _at(d[m]["rows"][n], (key, *more))
            cell = functools.partial(Cell, EDGE, (label, name))
            out += [Claim(cell("size on disk"), "edge.json", lambda d, r=row("size_bytes"): r(d) / 1e6, "{:.2f} MB"),
                    Claim(cell("smaller"), "edge.json", row("size_x"), "{:.2f}x"),
                    Claim(cell("ORT CPU ms"), "edge.json", row("latency_onnxruntime", "median_ms"), "{:.2f}"),
                    Claim(cell("OpenVINO CPU ms"), "edge.json", row("latency_openvino", "median_ms"), "{:.2f}"),
                    Claim(cell("top-1 agreement"), "edge.json", row("fidelity_onnxruntime", "top1_agreement"), "{:.3f}"),
                    Claim(cell("top-5 overlap"), "edge.json", row("fidelity_onnxruntime", "top5_overlap"), "{:.3f}")]
    return out


#: results files of benchmarks/real_models.py and the README block (--block) each one's table is written into
REAL_BLOCKS = (("real_models.json", "real-models"), ("real_models_latency.json", "real-models-latency"))


def _real_models_claims() -> list[Claim]:
    """Every row of each real-models results file (the README blocks benchmarks/real_models.py --write-readme
    writes)."""
    out = []
    for name, block in REAL_BLOCKS:
        doc = results(name) or {}
        for i, r in enumerate(doc.get("rows", [])):
            def key(*path, i=i):
                return ("rows", i, *path)
            cell = functools.partial(Cell, REAL, (r["label"],), block=block)
            if "latency" not in r:  # a failed row: no numbers, its exit code
                out.append(Claim(cell("its report said"), name, key("exit_code"), "failed (exit {})"))
                continue
            out += [Claim(cell("params"), name, lambda d, k=key("params"): _at(d, k) / 1e6, "{:.2f} M"),
                    Claim(cell("params"), name, key("params_ratio"), "({:.2f}×)"),
                    Claim(cell("MACs"), name, lambda d, k=key("macs"): _at(d, k) / 1e6, "{:.0f} M"),
                    Claim(cell("MACs"), name, key("macs_ratio"), "({:.2f}×)"),
                    # the script prints bytes / 2**20 (MiB)
                    Claim(cell("file"), name, lambda d, k=key("file_bytes"): _at(d, k) / 2**20, "{:.1f} MiB"),
                    Claim(cell("speed-up (ORT CPU)"), name, key("latency", "speedup"), "{:.2f}×"),
                    Claim(cell("speed-up (ORT CPU)"), name, key("latency", "median_ms"), "({:.2f} ms)"),
                    Claim(cell("top-1 agreement"), name, key("fidelity", "top1_agreement"), "{:.3f}"),
                    Claim(cell("top-5 overlap"), name, key("fidelity", "top5_overlap"), "{:.3f}"),
                    Claim(cell("n"), name, key("fidelity", "n"), "{}")]
    return out


ALL = CLAIMS + _edge_claims() + _real_models_claims()


# ----------------------------------------------------------------------------------------- the README side


def _cells(line: str) -> list[str]:
    """The cells of a markdown table line (a ``|`` inside backticks is text)."""
    cells, cur, code = [], "", False
    for ch in line.strip().strip("|"):
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return cells + [cur.strip()]


def tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(header line, header cells, rows)`` of every markdown table in ``text``."""
    lines, out = text.splitlines(), []
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            rows = []
            for line in lines[i + 2:]:
                if not line.startswith("|"):
                    break
                rows.append(_cells(line))
            out.append((lines[i], _cells(lines[i]), rows))
    return out


def shows(cell: str, text: str) -> bool:
    """``text`` stands in ``cell`` as a whole number (not inside a longer one)."""
    return re.search(r"(?<![\w.])" + re.escape(text) + r"(?!\d)", cell) is not None


def check(claim: Claim, readme: str) -> None:
    doc = results(claim.file)
    assert doc is not None, f"benchmarks/results/{claim.file} is missing"
    want = claim.fmt.format(_at(doc, claim.path))
    where = claim.where
    if isinstance(where, Prose):
        found = re.findall(where.pattern.replace(" ", r"\s+"), readme)  # prose wraps anywhere
        assert len(found) == 1, f"README: {where.pattern!r} matches {len(found)} times, expected once"
        assert found[0] == want, f"README shows {found[0]}, {claim.file} says {want} ({where.pattern!r})"
        return
    if where.block is not None:
        start, end = f"<!-- {where.block}:start -->", f"<!-- {where.block}:end -->"
        assert start in readme and end in readme, f"README has no block {where.block!r}"
        readme = readme.partition(start)[2].partition(end)[0]
    picked = [t for t in tables(readme) if where.table in t[0]]
    assert len(picked) == 1, f"README: {len(picked)} tables whose header has {where.table!r}, expected one"
    _, header, rows = picked[0]
    assert where.column in header, f"README table {where.table!r} has no column {where.column!r}: {header}"
    hits = [r for r in rows if tuple(r[:len(where.row)]) == where.row]
    assert len(hits) == 1, f"README table {where.table!r}: {len(hits)} rows {where.row}, expected one"
    cell = hits[0][header.index(where.column)]
    assert shows(cell, want), f"README table {where.table!r}, row {where.row}, {where.column!r} shows {cell!r}; " \
                              f"{claim.file} says {want}"


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.mark.parametrize("claim", ALL, ids=[f"{i:03d} {c.label()}" for i, c in enumerate(ALL)])
def test_readme_shows_the_results_files_number(claim, readme):
    check(claim, readme)


def test_every_table_of_evidence_is_claimed():
    """Each table named above has claims for rows of its results file (a file emptied or renamed fails here)."""
    files = {c.file for c in ALL}
    assert {"edge.json", "real_models.json", "latency_cuda_h200.json", "search_speed.json", "minilm_cli.json",
            "resnet18_tt025.json", "resnet18_tt025_m16.json"} <= files
    assert len(_edge_claims()) >= 6 * 2 and len(_real_models_claims()) >= 1


def cited_results(text: str) -> set[str]:
    """The results files / folders the README cites: every ``benchmarks/results/...`` path, and a backticked
    relative path whose first part is in benchmarks/results (``edge.json``, ``double_compression/student_rene_ranks.png``)."""
    out = {m.rstrip(".,:;") for m in re.findall(r"benchmarks/results/[\w./*-]+", text)}
    for token in re.findall(r"`([\w.-]+(?:/[\w.*-]+)*\.(?:json|png))`", text):
        if (RESULTS / token.split("/")[0]).exists():
            out.add(f"benchmarks/results/{token}")
    return out


def test_every_results_file_the_readme_cites_exists(readme):
    cited = cited_results(readme)
    assert len(cited) >= 10, sorted(cited)
    missing = [c for c in sorted(cited) if not (list(ROOT.glob(c)) if "*" in c else (ROOT / c).exists())]
    assert not missing, f"README cites results that are not in the tree: {missing}"


def test_the_check_fails_on_a_number_the_file_does_not_back(readme):
    """A changed digit in the README, in prose or in a table cell, is caught."""
    for claim in (CLAIMS[0], next(c for c in CLAIMS if isinstance(c.where, Prose))):
        value = claim.fmt.format(_at(results(claim.file), claim.path))
        number = re.search(r"\d+(\.\d+)?", value).group(0)
        wrong = f"{float(number) + 1:.{len(number.partition('.')[2])}f}"
        tampered = readme.replace(value.strip(), value.strip().replace(number, wrong, 1))
        assert tampered != readme
        with pytest.raises(AssertionError):
            check(claim, tampered)
    assert cited_results("see `benchmarks/results/no_such.json`") == {"benchmarks/results/no_such.json"}


def _provenance(doc: Any) -> set[str]:
    """Which of commit / command / machine a results document records (at the top, in ``meta``, or per row)."""
    found: set[str] = set()

    def walk(d: Any, depth: int = 0) -> None:
        if depth > 3:
            return
        if isinstance(d, dict):
            found.update(k for k in ("commit", "command", "machine") if d.get(k))
            for v in d.values():
                walk(v, depth + 1)
        elif isinstance(d, list):
            for v in d[:3]:
                walk(v, depth + 1)

    walk(doc)
    return found


def provenance_gaps(readme: str) -> set[str]:
    """The results files the README lists, between ``<!-- provenance-gaps:start/end -->``, as written before their
    script recorded the commit, the command and the machine."""
    block = readme.split("<!-- provenance-gaps:start -->", 1)[1].split("<!-- provenance-gaps:end -->", 1)[0]
    return set(re.findall(r"`([\w.-]+\.json)`", block))


def test_every_results_file_records_its_commit_command_and_machine_or_the_readme_says_it_does_not(readme):
    """A results file names the code, the command and the machine that produced it. The few written before
    their scripts recorded that are listed in the README, and leave the list once rerun."""
    missing = {p.name: {"commit", "command", "machine"} - _provenance(json.loads(p.read_text()))
               for p in sorted(RESULTS.glob("*.json"))}
    missing = {k: v for k, v in missing.items() if v}
    listed = provenance_gaps(readme)
    assert set(missing) == listed, (f"without full provenance: {missing}; the README lists {sorted(listed)}")
    assert _provenance({"rows": [{"commit": "abc", "command": "x"}], "meta": {"machine": {"cpu": "y"}}}) == \
        {"commit", "command", "machine"}
