"""Wall time and peak memory of the RENE rank search; writes benchmarks/results/search_speed.json.

Every case runs in a fresh Python process (so peak RSS, from
``resource.getrusage``, is the search's own, imports included):

- ``resnet18-data-free``: ResNet-18 (224x224), TT for 3x3 convs / SVD for 1x1 and fc, data-free.
- ``resnet18-ce``: the same with the validation cross-entropy on real-shaped calibration images
  (224x224 crops of sklearn's two sample photos, labelled by the model itself).
- ``resnet20-data-free`` / ``resnet20-ce``: CIFAR ResNet-20 (32x32 crops).
- ``calib-sweep``: how much calibration data the alpha step needs: the validation-CE search
  on a model with planted layer ranks, for several (batches x batch size); how many layers
  land within one step of their planted rank.

Random-init weights are fine for timing (the work does not depend on the values).

    .venv/bin/python benchmarks/search_speed.py            # all cases
    .venv/bin/python benchmarks/search_speed.py --case resnet18-data-free
    .venv/bin/python benchmarks/search_speed.py --case resnet18-ce --threads 1   # CPU time without thread contention

Wall times depend on what else runs on the machine: each row records the load
average before it and the process's CPU time (user + system).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "search_speed.json"
CASES = ("resnet18-data-free", "resnet18-ce", "resnet20-data-free", "resnet20-ce", "calib-sweep")
BARS = {"resnet18-data-free": (60.0, 1536.0), "resnet18-ce": (600.0, 2048.0)}  # seconds, MB


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_seconds() -> float:
    """User + system CPU time of this process: unlike wall time, barely moved by other jobs on the machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _crops(size: int, n: int, seed: int = 0):
    """``n`` random ``size`` x ``size`` crops of sklearn's sample photos, ImageNet-normalized (N, 3, size, size)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_sample_images

    images = [np.asarray(im, dtype=np.float32) / 255.0 for im in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        im = images[i % len(images)]
        scale = rng.uniform(0.35, 1.0) if size < 100 else 1.0
        h = max(size, int(im.shape[0] * scale))
        y0, x0 = rng.integers(0, im.shape[0] - h + 1), rng.integers(0, im.shape[1] - h + 1)
        crop = torch.from_numpy(im[y0:y0 + h, x0:x0 + h].copy()).permute(2, 0, 1)[None]
        crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
        out[i] = crop.numpy()
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
    return torch.from_numpy((out - mean) / std)


def _model_case(name: str, mode: str) -> dict:
    import torch

    from rene_onnx import models
    from rene_onnx.engine.search import SearchConfig, search

    torch.manual_seed(0)
    model = models.build(name).eval()
    size = models.input_shape(name)[-1]
    cfg = SearchConfig(method="tt", seed=0)
    loader = None
    if mode == "ce":
        x = _crops(size, cfg.calib_batch_size * cfg.max_calib_batches)
        b = cfg.calib_batch_size
        with torch.no_grad():  # labels: the model's own predictions (random-init weights time the same)
            loader = [(x[i:i + b], model(x[i:i + b]).argmax(1)) for i in range(0, len(x), b)]
    base, cpu0 = _rss_mb(), _cpu_seconds()
    t0 = time.perf_counter()
    res = search(model, torch.zeros(models.input_shape(name)), cfg, calib_loader=loader)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    return {
        "model": name, "mode": res.mode, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "peak_rss_mb": round(_rss_mb(), 1),
        "rss_before_search_mb": round(base, 1), "stages": len(res.stages),
        "stage_seconds": [round(s["seconds"], 2) for s in res.stages],
        "decompose_seconds": round(seconds - sum(s["seconds"] for s in res.stages), 2),
        "steps_per_stage": cfg.warmup_steps + cfg.steps, "calib_samples": res.calib_samples,
        "calib_batch_size": cfg.calib_batch_size if loader else None,
        "searched_layers": len(res.layers), "params_fraction": round(res.params_fraction, 4),
        "ranks": {n: list(l.chosen) for n, l in res.layers.items()}, "notes": res.notes,
    }


def _calib_sweep() -> dict:
    """Planted-rank teacher (``rene_onnx.models.planted``, as the search tests use): plan quality vs
    calibration data for the alpha step."""
    from rene_onnx.engine.search import SearchConfig, search
    from rene_onnx.models.planted import PLANTED, teacher

    model, x, y = teacher(n=512)
    rows = []
    for batches, bs in ((1, 4), (1, 8), (1, 16), (2, 16), (4, 16), (4, 32), (8, 64)):
        loader = [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]
        cfg = SearchConfig(calib_batch_size=bs, max_calib_batches=batches, seed=0)
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        res = search(model, x[:1], cfg, calib_loader=loader)
        hits = sum(abs(res.layers[n].rbar - r) <= 1 for n, r in PLANTED.items())
        exact = sum(res.layers[n].rbar == r for n, r in PLANTED.items())
        rows.append({"batches": batches, "batch_size": bs, "samples": res.calib_samples,
                     "within_one_step": f"{hits}/{len(PLANTED)}", "exact": f"{exact}/{len(PLANTED)}",
                     "ranks": {n: res.layers[n].rbar for n in PLANTED}, "seconds": round(time.perf_counter() - t0, 2),
                     "cpu_seconds": round(_cpu_seconds() - cpu0, 2)})
    return {"planted": PLANTED, "rows": rows, "peak_rss_mb": round(_rss_mb(), 1)}


def run_case(case: str) -> dict:
    if case == "calib-sweep":
        return _calib_sweep()
    name, _, mode = case.partition("-")
    return _model_case(name, "ce" if mode == "ce" else "data-free")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=CASES, action="append", help="run only these cases (repeatable)")
    ap.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in the child (default: torch's, i.e. all cores); the row's key gets @<n>")
    args = ap.parse_args(argv)
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        row = run_case(args.child)
        row["torch_threads"] = torch.get_num_threads()
        print(json.dumps(row))
        return 0
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("cases", {})
    from rene_onnx.report.environment import source_commit

    commit = source_commit(ROOT)  # at the start: the code that ran
    command = shlex.join([".venv/bin/python", "benchmarks/search_speed.py", *(sys.argv[1:] if argv is None else argv)])
    for case in args.case or CASES:
        load = _load()
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--child", case] + (["--threads", str(args.threads)] if args.threads else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"case {case} failed")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["load_average_before"] = load
        row["process_seconds"] = round(time.perf_counter() - t0, 2)
        row["commit"], row["command"] = commit, command  # the file merges rows of several runs: each says its own
        if case in BARS:
            secs, mb = BARS[case]
            row["bar"] = {"seconds": secs, "peak_rss_mb": mb,
                          "met": row["seconds"] <= secs and row["peak_rss_mb"] <= mb}
        results["cases"][case if not args.threads else f"{case}@{args.threads}"] = row
        print(f"{case}: {json.dumps({k: v for k, v in row.items() if k not in ('ranks', 'rows')})}", flush=True)
    import torch

    from rene_onnx.report.environment import machine_meta

    results["machine"] = {**machine_meta(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version()}
    results["commit"] = commit
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
