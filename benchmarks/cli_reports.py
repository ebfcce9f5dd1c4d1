"""End-to-end `rene-onnx compress` runs whose reports back the README's numbers.

Each case runs the CLI as a user would and keeps its report in benchmarks/results/<case>.json:

- demo_digits: the built-in demo (`rene-onnx compress`: digits_resnet, RENE search to 30% of the parameters,
  10 epochs of fine-tuning with distillation); top-1 on the held-out digits test split.
- resnet18_tt025 / resnet18_tt025_m16: ResNet-18 (224x224, batch 1, random init: latency does not depend on
  the values), TT at 25% of each layer's parameters, no fine-tuning; MACs ratio and onnxruntime CPU latency
  ratio measured side by side (interleaved, torch-free worker), ranks exact or rounded to multiples of 16, every
  layer factorized (no latency-aware revert).

    .venv/bin/python benchmarks/cli_reports.py [case ...]
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CASES = {
    "demo_digits": [],
    # every layer factorized (--no-latency-aware), ranks exact (--rank-multiple 1; the default rounds to the CPU's
    # channel block) or rounded to multiples of 16: the table compares what the rounding does to latency
    "resnet18_tt025": ["resnet18", "--method", "tt", "--ranks", "0.25", "--rank-multiple", "1", "--no-latency-aware",
                       "--epochs", "0", "--repeats", "100"],
    "resnet18_tt025_m16": ["resnet18", "--method", "tt", "--ranks", "0.25", "--rank-multiple", "16",
                           "--no-latency-aware", "--epochs", "0", "--repeats", "100"],
}

if __name__ == "__main__":
    # every case reports into a temporary folder and the files are moved into results/ at the end: a report
    # written into the tree would mark the next cases' commit "with uncommitted changes"
    with tempfile.TemporaryDirectory() as tmp:
        reports = []
        for case in sys.argv[1:] or list(CASES):
            report = Path(tmp) / f"{case}.json"
            subprocess.run([sys.executable, "-m", "rene_onnx.cli.main", "compress", *CASES[case], "--report",
                            str(report), "-o", str(Path(tmp) / f"{case}.onnx")], check=True)
            reports.append(report)
        for report in reports:
            shutil.move(report, RESULTS / report.name)
            print(f"wrote {RESULTS / report.name}")
