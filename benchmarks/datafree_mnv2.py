"""Issue 10 item 3: MobileNetV2 (official ImageNet weights), data-free, ``--target-macs 0.8``.

The tool gets no photo: ``rene_onnx.compress("mobilenet_v2", weights=..., data_free=True, target_macs=...)``.
Afterwards the compressed ONNX model (onnxruntime CPU) is compared with the original torch model on
crops of the sample photos (:mod:`rene_onnx.data.photos`, never given to the tool): top-1 agreement
and top-5 overlap. Writes benchmarks/results/datafree_mnv2.json.

    nice -n 5 .venv/bin/python benchmarks/datafree_mnv2.py [--target-macs 0.8] [--sensitivity synthetic|none]
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import rene_onnx
from rene_onnx.data.photos import photo_crops, sample_photos
from rene_onnx.report.environment import environment_meta

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / ".assets" / "mobilenet_v2-b0353104.pth"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-macs", type=float, default=0.8)
    ap.add_argument("--sensitivity", default="synthetic", choices=("synthetic", "none"))
    ap.add_argument("--per-photo", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "datafree_mnv2.json"))
    args = ap.parse_args()
    command = shlex.join(["nice", "-n", "5", ".venv/bin/python", "benchmarks/datafree_mnv2.py", *sys.argv[1:]])
    meta = environment_meta()  # at the start: the code that ran
    torch.manual_seed(0)

    import torchvision

    original = torchvision.models.mobilenet_v2()
    original.load_state_dict(torch.load(WEIGHTS, map_location="cpu"))
    original.eval()
    x, groups = photo_crops(sample_photos(), 224, args.per_photo, seed=1)
    with torch.no_grad():
        ref = np.concatenate([original(torch.from_numpy(x[i:i + 32])).numpy() for i in range(0, len(x), 32)])

    t0 = time.perf_counter()
    result = rene_onnx.compress("mobilenet_v2", weights=str(WEIGHTS), data_free=True, target_macs=args.target_macs,
                                sensitivity=args.sensitivity)
    seconds = time.perf_counter() - t0
    sess = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    top1 = float((out.argmax(1) == ref.argmax(1)).mean())
    t5o, t5r = np.argsort(-out, 1)[:, :5], np.argsort(-ref, 1)[:, :5]
    top5 = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(t5o, t5r)]))
    rep = result.report.to_dict()
    search_rec = rep.get("search") or {}
    res = {
        "command": command, **meta,
        "compress": f"rene-onnx compress mobilenet_v2 --weights {WEIGHTS.name} --data-free --target-macs "
                    f"{args.target_macs} --sensitivity {args.sensitivity}",
        "sensitivity": args.sensitivity, "photos": len(set(groups.tolist())), "crops": int(len(x)),
        "top1_agreement": round(top1, 4), "top5_overlap": round(top5, 4),
        "compress_seconds": round(seconds, 1), "search_seconds": search_rec.get("seconds"),
        "estimate": search_rec.get("sensitivity"),
        "summary": rep.get("summary"),
        "dense_layers": [n for n, lp in result.plan.layers.items() if lp.method == "dense"],
    }
    print(json.dumps({k: v for k, v in res.items() if k != "summary"}, indent=1)[:3000])
    Path(args.out).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
