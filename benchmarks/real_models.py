"""Proof on a real model (issue 10, item 7): MobileNetV2 with torchvision's official ImageNet weights.

What it does, in order (everything lands in ``--work``; the results JSON in ``--out``):

1. Exports ``torchvision.models.mobilenet_v2`` with the official weights (``--weights``) by
   ``torch.onnx.export`` with its defaults (a fixed batch of 1), as a user would.
2. Cuts crops of scikit-image's (and scikit-learn's, matplotlib's) sample photos
   (``rene_onnx.data.photos.photo_crops``) and holds out whole photos (``split_groups``, by photo,
   not by crop). The calibration crops go to ``calib.npz`` (with a ``groups`` array: the photo of each crop,
   so that the tool's own held-out part of them is whole photos too); the held-out crops are never given to
   the tool or to the INT8 calibration.
3. Runs every rene-onnx row through the real CLI (a subprocess ``rene-onnx compress ...``). A row
   whose flag this checkout does not have (or that fails for any reason) is recorded with the CLI's
   exit code and error line, and gets no numbers.
4. Builds the baseline a user would pick instead: onnxruntime INT8 static quantization of the
   original (``quantize_static``, QDQ, per-channel, uint8 activations / int8 weights, calibrated on
   the calibration crops).
5. Measures every model: params and MACs (``rene_onnx.validate.counts``), file size (with any
   external-data file), onnxruntime CPU latency of all models in ONE torch-free worker process
   (``rene_onnx.validate.latency.measure_latency``: warm-up, interleaved runs, median), and top-1
   agreement / top-5 overlap with the original on the held-out crops (batch 1, as exported).

``--write-readme`` puts the table (built from the JSON by :func:`markdown_table`) into README.md
between ``<!-- real-models:start -->`` / ``<!-- real-models:end -->`` (added before ``## Docker``
the first time); ``--readme-only`` does that from an existing JSON without running anything.

Run (about 15-20 min on the 2-core box)::

    nice -n 5 .venv/bin/python benchmarks/real_models.py --write-readme
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS = ROOT / ".assets" / "mobilenet_v2-b0353104.pth"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "real_models.json"
README = ROOT / "README.md"
#: README blocks (``--block``): name -> heading; the table goes between <!-- name:start --> and <!-- name:end -->
BLOCKS = {"real-models": "Real models: MobileNetV2 with the official ImageNet weights (issue 10)",
          "real-models-latency": "Real models: latency targets, with and without a fidelity floor (MobileNetV2, issue 10)"}

#: rene-onnx rows: name -> (label, CLI arguments after the model path). ``{calib}`` is the calibration file.
RENE_ROWS = {
    "default": ("data-free default", []),
    "min-fidelity": ("--calib, --min-fidelity 0.9", ["--calib", "{calib}", "--min-fidelity", "0.9"]),
    "target-latency": ("--target-latency 0.7", ["--target-latency", "0.7"]),
    "calib-latency": ("--calib, --target-latency 0.8", ["--calib", "{calib}", "--target-latency", "0.8"]),
    "latency-floor": ("--calib, --target-latency 0.8, --min-fidelity 0.9",
                      ["--calib", "{calib}", "--target-latency", "0.8", "--min-fidelity", "0.9"]),
}
ALL_ROWS = ("original", *RENE_ROWS, "int8")
ORIGINAL = "mobilenet_v2.onnx"  # the exported original, in --work


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="torchvision mobilenet_v2 state dict")
    p.add_argument("--work", default="/tmp/rene_real_models", help="folder for the ONNX files, crops and reports")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results JSON")
    p.add_argument("--rows", default=",".join(ALL_ROWS), help=f"comma-separated subset of {','.join(ALL_ROWS)}")
    p.add_argument("--per-photo", type=int, default=24, help="crops per photo (the first is the central view)")
    p.add_argument("--held-out", type=float, default=0.3, help="fraction of the photos held out (whole photos)")
    p.add_argument("--int8-calib", type=int, default=128, help="calibration crops for the INT8 baseline")
    p.add_argument("--repeats", type=int, default=200, help="timed runs per model (median reported)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs per model first")
    p.add_argument("--extra", action="append", default=[],
                   help="an extra argument for every rene-onnx row (repeat; e.g. --extra=--epochs=2)")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per rene-onnx row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-readme", action="store_true", help="write the table into --readme")
    p.add_argument("--readme-only", action="store_true", help="only write the table from --out's JSON")
    p.add_argument("--readme", default=str(README))
    p.add_argument("--block", default="real-models", choices=list(BLOCKS),
                   help="the README block the table is written into (a new one goes after the others)")
    args = p.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in args.rows if r not in ALL_ROWS]
    if bad:
        p.error(f"unknown rows {bad}; choose from {', '.join(ALL_ROWS)}")
    return args


# ---------------------------------------------------------------- setup


def machine() -> dict:
    """The report's machine facts, plus the keys this file's README block reads (``cores``, one bool per flag)."""
    import onnxruntime
    import torch

    from rene_onnx.report.environment import machine_meta

    m = machine_meta()
    return {**m, "cores": m["cpus"], **{f: f in m["cpu_flags"] for f in ("avx512f", "avx2", "avx512_vnni")},
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


def git_commit() -> str:
    from rene_onnx.report.environment import source_commit

    return source_commit(ROOT) or "unknown"


def export_original(weights: str, path: Path) -> dict:
    """torchvision MobileNetV2 with ``weights``, exported by ``torch.onnx.export`` with its defaults (batch 1)."""
    import torch
    import torchvision

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path))
    return {"model": "torchvision mobilenet_v2", "weights": os.path.basename(weights),
            "export": f"torch.onnx.export defaults (torch {torch.__version__}), input 1x3x224x224"}


def input_name(path: Path) -> str:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].name


def make_photos(work: Path, per_photo: int, held_out: float, seed: int) -> dict:
    """Calibration / held-out crops, split by photo; writes calib.npz (the crops + ``groups``), heldout.npy."""
    from rene_onnx.data.photos import photo_crops, sample_photos, split_groups

    photos = sample_photos()
    names = list(photos)
    x, groups = photo_crops(photos, 224, per_photo, seed=seed)
    used, out = split_groups(groups, held_out, seed=seed)
    np.savez(work / "calib.npz", **{input_name(work / ORIGINAL): x[used], "groups": groups[used]})
    np.save(work / "heldout.npy", x[out])
    return {"photos": len(names), "per_photo": per_photo,
            "calib_photos": sorted({names[g] for g in groups[used]}), "calib_crops": int(len(used)),
            "heldout_photos": sorted({names[g] for g in groups[out]}), "heldout_crops": int(len(out)),
            "split": f"whole photos held out (split_groups, held_out={held_out}, seed={seed}); "
                     "held-out crops never given to the tool nor to the INT8 calibration"}


# ---------------------------------------------------------------- rows


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("rene-onnx")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rene_onnx.cli.main"]


def run_rene_row(name: str, original: Path, work: Path, extra: list[str], timeout: float) -> dict:
    label, args = RENE_ROWS[name]
    out, report = work / f"{name}.onnx", work / f"{name}.report.json"
    for stale in (out, report, Path(f"{out}.data")):
        stale.unlink(missing_ok=True)
    argv = ["compress", str(original), *[a.format(calib=work / "calib.npz") for a in args], *extra,
            "-o", str(out), "--report", str(report)]
    shown = "rene-onnx " + " ".join(shlex.quote(a) for a in ["compress", original.name,
                                                              *[a.format(calib="calib.npz") for a in args], *extra])
    row = {"row": name, "label": label, "command": shown,
           "tool_inputs": "calib.npz (calibration photos only)" if "{calib}" in args else "none (data-free)"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cli() + argv, capture_output=True, text=True, timeout=timeout, cwd=work)
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, stderr = None, f"timed out after {timeout:.0f} s\n{(e.stderr or b'')[-2000:]!r}"
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["exit_code"] = rc
    if rc != 0 or not out.exists():
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.lower().startswith(("error", "usage error"))]
        row["error"] = (errors[-1] if errors else lines[-1] if lines else f"exit code {rc}, no output").strip()
        row["stderr_tail"] = "\n".join(lines[-15:])
        return row
    row["path"] = str(out)
    if report.exists():
        rep = json.loads(report.read_text())
        row["tool_said"] = tool_said(rep)
    return row


def tool_said(rep: dict) -> dict:
    """What the row's own --report claimed: its fidelity (and on which inputs), its speed-up, its search mode, its
    warnings, and the INT8 baseline it measured beside the compressed model (``--compare-int8``)."""
    num = rep.get("numerics") or {}
    said = {"latency_speedup": rep.get("latency_speedup"), "search_mode": (rep.get("search") or {}).get("mode"),
            "warnings": rep.get("warnings") or []}
    base = (rep.get("meta") or {}).get("int8_baseline")
    if base:
        fid = base.get("fidelity") or {}
        said["int8_baseline"] = {"speedup": base.get("speedup"), "top1_agreement": fid.get("top1_agreement"),
                                 "inputs": fid.get("inputs"), "n": fid.get("n")}
    for key, value in num.items():
        if isinstance(value, dict) and value.get("top1_agreement") is not None:
            said.setdefault("top1_agreement", {})[key] = {
                "value": value["top1_agreement"], "inputs": value.get("inputs", "unnamed"), "n": value.get("n")}
    return said


def make_int8(original: Path, work: Path, n: int, seed: int) -> dict:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    with np.load(work / "calib.npz") as z:
        calib = z[input_name(work / ORIGINAL)]
    pick = np.sort(np.random.default_rng(seed).permutation(len(calib))[:n])
    name = input_name(original)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib[pick])

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x[None]}

    out = work / "int8.onnx"
    t0 = time.perf_counter()
    quantize_static(str(original), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {"row": "int8", "label": "onnxruntime INT8 static (baseline)", "path": str(out),
            "command": f"quantize_static(QDQ, per_channel=True, activations QUInt8, weights QInt8, "
                       f"{len(pick)} calibration crops)",
            "tool_inputs": f"{len(pick)} crops of calib.npz (calibration photos only)",
            "seconds": round(time.perf_counter() - t0, 1), "exit_code": 0}


# ---------------------------------------------------------------- measurement


def file_size(path: Path) -> int:
    import onnx

    size = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    return size + sum((path.parent / loc).stat().st_size for loc in locations if (path.parent / loc).exists())


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: xi[None]})[0] for xi in x])


def measure(rows: list[dict], original: Path, work: Path, warmup: int, repeats: int) -> dict:
    from rene_onnx.validate.counts import count_onnx
    from rene_onnx.validate.latency import measure_latency
    from rene_onnx.validate.numerics import compare

    held = np.load(work / "heldout.npy")
    reference = outputs(original, held)
    np.savez(work / "latency_feed.npz", **{input_name(original): held[:1]})
    done = [r for r in rows if "path" in r]
    for r in done:
        path = Path(r["path"])
        counts = count_onnx(path)
        r.update(params=counts.params, macs=counts.macs, file_bytes=file_size(path))
        num = compare([reference], [outputs(path, held)])
        r["fidelity"] = {"inputs": "held-out photos (crops, batch 1)", "n": int(len(held)),
                         "top1_agreement": num.top1_agreement, "top5_overlap": num.top5_overlap,
                         "cosine": num.cosine}
    load = os.getloadavg()[0]  # other work on the box while timing (ratios are interleaved, medians are not)
    lat = measure_latency([Path(r["path"]) for r in done], feeds_npz=work / "latency_feed.npz", provider="cpu",
                          warmup=warmup, repeats=repeats)
    base = next(x for r, x in zip(done, lat) if r["row"] == "original")
    for r, x in zip(done, lat):
        r["latency"] = {"median_ms": x.median_ms, "p10_ms": x.p10_ms, "p90_ms": x.p90_ms, "runs": x.runs,
                        "speedup": base.median_ms / x.median_ms, "load_avg_1m_before": round(load, 2),
                        "inputs": "one held-out crop, batch 1; onnxruntime CPU, all models in one torch-free "
                                  f"worker, {warmup} warm-up runs, median of {repeats} interleaved runs"}
    orig = next(r for r in done if r["row"] == "original")
    for r in done:
        r["params_ratio"] = r["params"] / orig["params"]
        r["macs_ratio"] = r["macs"] / orig["macs"]
        r["size_ratio"] = r["file_bytes"] / orig["file_bytes"]
    return goal(rows)


def goal(rows: list[dict]) -> dict:
    """Issue 10's goal: a rene-onnx row faster than the original at >= 0.9 top-1 agreement; does INT8 win?"""
    def ok(r):
        return "latency" in r and r["latency"]["speedup"] > 1 and r["fidelity"]["top1_agreement"] >= 0.9

    rene = [r for r in rows if r["row"] in RENE_ROWS and ok(r)]
    best = max(rene, key=lambda r: r["latency"]["speedup"], default=None)
    int8 = next((r for r in rows if r["row"] == "int8" and "latency" in r), None)
    out = {"met": best is not None, "best_rene_row": best and best["row"],
           "rule": "a rene-onnx row with speedup > 1 and top-1 agreement >= 0.9 on the held-out photos"}
    if int8 is not None:
        out["int8_ok"] = ok(int8)
        out["int8_wins"] = ok(int8) and (best is None or int8["latency"]["speedup"] > best["latency"]["speedup"])
    return out


# ---------------------------------------------------------------- README table


def markdown_table(results: dict, block: str = "real-models", out: str | None = None) -> str:
    """A "Real models" README section, from the results JSON alone (``out``: its path, named in the text)."""
    m, data = results["machine"], results["data"]
    flags = ", ".join(f for f in ("avx512f", "avx512_vnni", "avx2") if m.get(f)) or "no AVX2"
    lines = [
        f"### {BLOCKS[block]}",
        "",
        f"{results['setup']['export']}. Calibration: {data['calib_crops']} crops of {len(data['calib_photos'])} "
        f"sample photos; fidelity on {data['heldout_crops']} crops of {len(data['heldout_photos'])} photos held out "
        f"whole ({', '.join(data['heldout_photos'])}), never given to the tool. Latency: onnxruntime CPU, one "
        f"held-out crop, batch 1, all models in one torch-free process, median of {results['repeats']} interleaved "
        f"runs{load_text(results['rows'])}. Machine: {m['cpu']}, {m['cores']} cores ({flags}); commit `{results['commit'][:12]}`, "
        f"{results['date'][:10]}. Command: `{results['command']}`"
        + (f" (results: `{os.path.relpath(out, ROOT)}`)." if out else "."),
        "",
        "| row | command | params | MACs | file | speed-up (ORT CPU) | top-1 agreement | top-5 overlap | n | "
        "tool was given | its report said |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if "latency" not in r:
            lines.append(f"| {r['label']} | `{r['command']}` | — | — | — | — | — | — | — | {r['tool_inputs']} | "
                         f"failed (exit {r.get('exit_code')}): {r.get('error', '').replace('|', '/')} |")
            continue
        f, mb = r["fidelity"], r["file_bytes"] / 2**20
        lines.append(
            f"| {r['label']} | `{r['command']}` | {r['params'] / 1e6:.2f} M ({r['params_ratio']:.2f}×) | "
            f"{r['macs'] / 1e6:.0f} M ({r['macs_ratio']:.2f}×) | {mb:.1f} MiB | "
            f"{r['latency']['speedup']:.2f}× ({r['latency']['median_ms']:.2f} ms) | {f['top1_agreement']:.3f} | "
            f"{f['top5_overlap']:.3f} | {f['n']} | {r['tool_inputs']} | {said_text(r.get('tool_said'))} |")
    g = results["goal"]
    verdict = (f"**met** by `{g['best_rene_row']}`" if g["met"] else "**not met** by any rene-onnx row")
    lines += ["", f"Goal ({g['rule']}): {verdict}."]
    if "int8_wins" in g:
        lines.append(int8_verdict(g))
    lines.append("Rows marked failed ran through the CLI and stopped with the error shown; they have no numbers.")
    return "\n".join(lines) + "\n"


def load_text(rows: list[dict]) -> str:
    loads = [r["latency"].get("load_avg_1m_before") for r in rows if "latency" in r]
    return f" (1-min load average {loads[0]} when timing began)" if loads and loads[0] is not None else ""


def said_text(said: dict | None) -> str:
    if not said:
        return "—"
    parts = [f"top-1 {v['value']:.3f} ({k}: inputs {v['inputs']}, n {v['n'] if v['n'] is not None else '?'})"
             for k, v in (said.get("top1_agreement") or {}).items()]
    if said.get("latency_speedup") is not None:
        parts.append(f"speed-up {said['latency_speedup']:.2f}×")
    base = said.get("int8_baseline")
    if base and base.get("speedup") is not None and base.get("top1_agreement") is not None:
        parts.append(f"INT8 of the original beside it: speed-up {base['speedup']:.2f}×, top-1 "
                     f"{base['top1_agreement']:.3f} (inputs {base['inputs']}, n {base['n']})")
    return "; ".join(parts) or "—"


def int8_verdict(g: dict) -> str:
    if g["int8_wins"]:
        than = "the best rene-onnx row that meets it" if g["met"] else "every rene-onnx row (none meets it)"
        return f"INT8 static quantization **wins**: it meets the bar and is faster than {than}."
    if g["int8_ok"]:
        return "INT8 static quantization meets the bar but is slower than the best rene-onnx row."
    return "INT8 static quantization misses the 0.9 top-1 agreement bar on the held-out photos."


def write_readme(results: dict, readme: Path, block_name: str = "real-models", out: str | None = None) -> None:
    text = readme.read_text()
    start, end = f"<!-- {block_name}:start -->", f"<!-- {block_name}:end -->"
    block = f"{start}\n{markdown_table(results, block_name, out)}{end}\n"
    last = [f"<!-- {b}:end -->" for b in BLOCKS if f"<!-- {b}:end -->" in text]
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + block + tail.lstrip("\n")
    elif last:  # after the last block there is
        head, _, tail = text.rpartition(last[-1])
        text = head + last[-1] + "\n\n" + block + tail.lstrip("\n")
    elif "\n## Docker" in text:
        head, _, tail = text.partition("\n## Docker")
        text = head.rstrip("\n") + "\n\n" + block + "\n## Docker" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    readme.write_text(text)


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.readme_only:
        write_readme(json.loads(out.read_text()), Path(args.readme), args.block, str(out))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    original = work / ORIGINAL
    results = {"command": "python benchmarks/real_models.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
               "commit": git_commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "machine": machine(), "repeats": args.repeats, "warmup": args.warmup,
               "setup": export_original(args.weights, original),
               "data": make_photos(work, args.per_photo, args.held_out, args.seed)}
    rows = [{"row": "original", "label": "original (FP32)", "path": str(original), "command": "torch.onnx.export",
             "tool_inputs": "—", "exit_code": 0}] if "original" in args.rows else []
    for name in args.rows:
        if name in RENE_ROWS:
            print(f"[real_models] {name} ...", file=sys.stderr, flush=True)
            rows.append(run_rene_row(name, original, work, args.extra, args.timeout))
            print(f"[real_models] {name}: exit {rows[-1]['exit_code']} in {rows[-1]['seconds']} s "
                  f"{rows[-1].get('error', '')}", file=sys.stderr, flush=True)
    if "int8" in args.rows:
        rows.append(make_int8(original, work, args.int8_calib, args.seed))
    if not any(r["row"] == "original" for r in rows):
        rows.insert(0, {"row": "original", "label": "original (FP32)", "path": str(original),
                        "command": "torch.onnx.export", "tool_inputs": "—", "exit_code": 0})
    results["rows"] = rows
    results["goal"] = measure(rows, original, work, args.warmup, args.repeats)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown_table(results))
    if args.write_readme:
        write_readme(results, Path(args.readme), args.block, str(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
