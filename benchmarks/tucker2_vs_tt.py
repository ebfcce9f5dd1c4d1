"""Tucker-2 (HOSVD) vs TT (TT-SVD) at equal parameters on the bundled checkpoints; writes benchmarks/results/tucker2_vs_tt.json.

Both methods are the same conv chain with the same counts at the same ranks, so ``--ranks F``
gives the two the same ranks (and the same parameters, MACs) on every k x k conv; 1x1 convs and
the classifier are SVD in both. What differs is the initialization. Per checkpoint and fraction:

- ``weight_error``: the k x k convs' relative weight error ``||W - W'||^2 / ||W||^2``, mean over
  the layers (and the worst layer);
- ``top1``: the compressed ONNX model's top-1 on the checkpoint's held-out test split, before
  fine-tuning and (digits only, ``--epochs``) after fine-tuning, through ``rene_onnx.compress``
  (the CLI's own path).

    .venv/bin/python benchmarks/tucker2_vs_tt.py              # both checkpoints, fractions 0.25 and 0.5
    .venv/bin/python benchmarks/tucker2_vs_tt.py --epochs 0   # no fine-tuning
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import rene_onnx
from rene_onnx import models
from rene_onnx.decompose import decompose, reconstruct
from rene_onnx.decompose.choose import plan_from_fraction
from rene_onnx.engine.profile import layer_shapes
from rene_onnx.report.environment import environment_meta

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "tucker2_vs_tt.json"
METHODS = ("tt", "tucker2")


def weight_errors(name: str, fraction: float) -> dict:
    net = models.build(name, pretrained=True)
    x = torch.zeros(models.input_shape(name))
    named = dict(net.named_modules())
    out = {m: [] for m in METHODS}
    plans = {m: plan_from_fraction(layer_shapes(net, x), m, fraction) for m in METHODS}
    for lname, lp in plans["tt"].layers.items():
        if lp.method != "tt":
            continue
        assert plans["tucker2"].layers[lname].ranks == lp.ranks  # same ranks, same counts
        w = named[lname].weight.detach().double().numpy()
        for m in METHODS:
            d = w - reconstruct(m, decompose(m, w, lp.ranks, groups=named[lname].groups), w.shape)
            out[m].append(float(np.sum(d * d) / np.sum(w * w)))
    return {m: {"mean": round(float(np.mean(e)), 6), "max": round(float(np.max(e)), 6), "layers": len(e)}
            for m, e in out.items()}


def top1(name: str, method: str, fraction: float, epochs: int) -> dict:
    report = rene_onnx.compress(name, method=method, ranks=fraction, epochs=epochs, seed=0,
                                latency=False).report.to_dict()
    acc = report["accuracy"]
    return {"params_kept": round(report["params"]["after"] / report["params"]["before"], 4),
            "before": round(acc["before"], 2), "after_decomposition": round(acc["after_decomposition"], 2),
            **({"after_finetune": round(acc["after_finetune"], 2)} if epochs else {})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs for digits_resnet (0: none)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    command = shlex.join([".venv/bin/python", "benchmarks/tucker2_vs_tt.py", *sys.argv[1:]])
    meta = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"), **environment_meta(), "torch_threads": 1}
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rows = []
    for name in ("resnet20_fmnist", "digits_resnet"):
        for fraction in args.fractions:
            t0 = time.perf_counter()
            row = {"model": name, "fraction": fraction, "weight_error": weight_errors(name, fraction)}
            epochs = args.epochs if name == "digits_resnet" else 0
            row["top1"] = {m: top1(name, m, fraction, epochs) for m in METHODS}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(json.dumps(row))
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
