"""Edge export benchmark: INT8 / FP16 of original and RENE-compressed models, on onnxruntime and OpenVINO (CPU).

    .venv/bin/python benchmarks/edge.py                        # both models -> benchmarks/results/edge.json
    .venv/bin/python benchmarks/edge.py --table                # the README table from that JSON

ResNet-18 (zoo, 224x224, random init, seed 0: there are no real ResNet-18 weights offline, so its
fidelity columns only say how far INT8 moves a random network): FP32 original, INT8 original, RENE
FP32 (``rene-onnx compress resnet18 --method tt --ranks 0.25 --rank-multiple 16 --epochs 0``),
RENE + INT8. MobileNetV2 (torchvision's official ImageNet weights, ``.assets/``): FP32, INT8, FP16,
RENE FP32 (``rene-onnx compress mobilenet_v2 --weights ... --calib calib.npz`` with the arguments in
``--mnv2-compress``), RENE + INT8.

Inputs: 224x224 crops of the sample photos (``rene_onnx.data.photos``), whole photos held out
(``split_groups``, 30 %, seed 0). INT8 calibrates on ``--calib-samples`` crops of the other photos;
the RENE MobileNetV2 is distilled on those other photos' crops too. Fidelity (top-1 agreement and
top-5 overlap with the FP32 original) is measured on the held-out photos' crops only. Every
artifact comes from ``rene_onnx.export.export_model``. Latency: per runtime, all rows of a model in
one torch-free worker run, interleaved, ``--threads`` intra-op threads (1 by default), median of
``--repeats`` runs at batch 1 after warm-up; compare ratios within a run.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "edge.json"
MNV2_WEIGHTS = ROOT / ".assets" / "mobilenet_v2-b0353104.pth"
R18_COMPRESS = ["--method", "tt", "--ranks", "0.25", "--rank-multiple", "16", "--epochs", "0"]
MNV2_COMPRESS = "--target-params 0.9 --epochs 2 --batch-size 32 --optimizer adamw --lr 1e-4"
GOALS = {"resnet18_size_x": 14.0, "resnet18_ort_speed_vs_int8_x": 2.5, "mnv2_top1_drop_vs_int8_max": 0.02}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    """The report's machine facts, with ``cores`` / ``flags`` as this file's README block reads them."""
    from rene_onnx.report.environment import machine_meta

    m = machine_meta()
    return {**m, "cores": m["cpus"], "flags": m["cpu_flags"],
            "gpu": ", ".join(m["gpus"]) or "none (no device was lent to this task)"}


def commit() -> str:
    from rene_onnx.report.environment import source_commit

    return source_commit(ROOT) or "unknown"


def crops(calib_samples: int) -> tuple[np.ndarray, np.ndarray, dict]:
    from rene_onnx.data.photos import photo_crops, sample_photos, split_groups

    photos = sample_photos()
    x, groups = photo_crops(photos, 224, 24, seed=0)
    used, held = split_groups(groups, 0.3, seed=0)
    names = list(photos)
    info = {"photos": names, "crops_per_photo": 24, "held_out_photos": sorted({names[g] for g in groups[held]}),
            "calibration_crops": int(len(used)), "held_out_crops": int(len(held)),
            "int8_calibration_crops": min(calib_samples, len(used))}
    return x[used], x[held], info


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "rene_onnx.cli.main", *args]
    log("$ rene-onnx " + shlex.join(args))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def export(model: Path, calib: np.ndarray, held: np.ndarray, args, original: Path | None = None, to: str = "int8",
           **options):
    from rene_onnx.export import export_model

    log(f"export {model.name} -> {to} {options or ''}")
    return export_model(str(model), to=to, calib={"input": calib}, held_out={"input": held}, original=original,
                        calib_samples=args.calib_samples, latency=False, runtime="onnxruntime,openvino",
                        **{"layer_errors": original is not None, **options})


def save(model, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def measure_rows(rows: dict[str, Path], original: Path, held: np.ndarray, work: Path, args) -> dict:
    """Size, fidelity (ORT and OpenVINO) and latency (one interleaved run per runtime) of every row."""
    from rene_onnx.export.measure import numerics, reference_outputs
    from rene_onnx.validate.latency import measure_latency

    inputs = {"input": held}
    ref = reference_outputs(original, inputs, None, None)
    out = {name: {"file": p.name, "size_bytes": p.stat().st_size} for name, p in rows.items()}
    for name, p in rows.items():
        for rt in ("onnxruntime", "openvino"):
            n = numerics(ref, p, inputs, None, None, rt)
            out[name][f"fidelity_{rt}"] = {k: n[k] for k in ("top1_agreement", "top5_overlap", "cosine", "samples")}
    npz = work / "feeds.npz"
    np.savez(npz, input=held[:1])
    for rt in ("onnxruntime", "openvino"):
        log(f"latency on {rt}: {', '.join(rows)}")
        lat = measure_latency([str(p) for p in rows.values()], npz, None, warmup=args.warmup, repeats=args.repeats,
                              threads=args.threads, runtime=rt)
        for name, t in zip(rows, lat):
            out[name][f"latency_{rt}"] = {"median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                                          "runs": t.runs}
    base = out[next(iter(rows))]["size_bytes"]
    for r in out.values():
        r["size_x"] = base / r["size_bytes"]
    return out


def resnet18(args, calib, held, work: Path) -> dict:
    import torch

    from rene_onnx import models
    from rene_onnx.load import load_torch

    torch.manual_seed(0)
    weights = work / "r18.pt"
    torch.save(models.build("resnet18").state_dict(), weights)
    original = save(load_torch("resnet18", weights=weights).onnx_model, work / "r18.onnx")
    rene = work / "r18_rene.onnx"
    compress_args = ["compress", "resnet18", "--weights", str(weights), *R18_COMPRESS, "--no-latency", "-o", str(rene)]
    cli(*compress_args)
    int8 = export(original, calib, held, args)
    rene_int8 = export(rene, calib, held, args, original=original)
    # onnxruntime's quantize_static defaults (int8 activations, per-tensor weights): the settings a user who
    # "chains the tools by hand" gets; on x86 their convs run far slower than uint8 activations'
    s8 = dict(activation_type="int8", per_channel=False, layer_errors=False)
    int8_s8, rene_s8 = export(original, calib, held, args, **s8), export(rene, calib, held, args, original=original, **s8)
    rows = {"FP32 original": original,
            "INT8 original": save(int8.models["int8"], work / "r18.int8.onnx"),
            "rene FP32 (TT 0.25, rank multiple 16)": rene,
            "rene + INT8": save(rene_int8.models["int8"], work / "r18_rene.int8.onnx"),
            "INT8 original, quantize_static defaults (S8S8 per-tensor)": save(int8_s8.models["int8"],
                                                                               work / "r18.int8_s8.onnx"),
            "rene + INT8, quantize_static defaults (S8S8 per-tensor)": save(rene_s8.models["int8"],
                                                                             work / "r18_rene.int8_s8.onnx")}
    res = measure_rows(rows, original, held, work, args)
    ort = {k: v["latency_onnxruntime"]["median_ms"] for k, v in res.items()}
    goals = {"size_x_rene_int8_vs_fp32": res["rene + INT8"]["size_x"],
             "ort_speed_x_rene_int8_vs_int8": ort["INT8 original"] / ort["rene + INT8"],
             "ort_speed_x_with_quantize_static_defaults": ort["INT8 original, quantize_static defaults (S8S8 "
                                                              "per-tensor)"]
             / ort["rene + INT8, quantize_static defaults (S8S8 per-tensor)"]}
    goals["met_size"] = goals["size_x_rene_int8_vs_fp32"] >= GOALS["resnet18_size_x"]
    goals["met_speed"] = goals["ort_speed_x_rene_int8_vs_int8"] >= GOALS["resnet18_ort_speed_vs_int8_x"]
    return {"rows": res, "goals": goals, "compress_command": "rene-onnx " + shlex.join(compress_args[:-2]),
            "weights": "random init (torch.manual_seed(0)): fidelity columns are not ImageNet fidelity",
            "int8_settings": int8.report.artifact("int8").details["quantization"],
            "layer_errors": rene_int8.report.artifact("int8").details.get("layer_errors"),
            "lossy_chains": rene_int8.lossy_chains}


def mobilenet_v2(args, calib, held, work: Path) -> dict:
    from rene_onnx.load import load_torch

    original = save(load_torch("mobilenet_v2", weights=MNV2_WEIGHTS).onnx_model, work / "mnv2.onnx")
    np.savez(work / "calib.npz", input=calib)
    rene = work / "mnv2_rene.onnx"
    compress_args = ["compress", "mobilenet_v2", "--weights", str(MNV2_WEIGHTS), "--calib", str(work / "calib.npz"),
                     *shlex.split(args.mnv2_compress), "--no-latency", "-o", str(rene)]
    t0 = time.time()
    cli(*compress_args)
    compress_s = time.time() - t0
    base = export(original, calib, held, args, to="int8,fp16")
    rene_int8 = export(rene, calib, held, args, original=original)
    rows = {"FP32": original, "INT8": save(base.models["int8"], work / "mnv2.int8.onnx"),
            "FP16": save(base.models["fp16"], work / "mnv2.fp16.onnx"), "rene FP32": rene,
            "rene + INT8": save(rene_int8.models["int8"], work / "mnv2_rene.int8.onnx")}
    res = measure_rows(rows, original, held, work, args)
    top1 = {k: v["fidelity_onnxruntime"]["top1_agreement"] for k, v in res.items()}
    goals = {"top1_int8": top1["INT8"], "top1_rene_int8": top1["rene + INT8"],
             "met_fidelity": top1["rene + INT8"] >= top1["INT8"] - GOALS["mnv2_top1_drop_vs_int8_max"]}
    return {"rows": res, "goals": goals, "weights": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1",
            "compress_command": "rene-onnx " + shlex.join(
                [a if not a.startswith(str(work)) and not a.startswith(str(ROOT)) else Path(a).name
                 for a in compress_args[:-2]]), "compress_seconds": compress_s,
            "int8_settings": base.report.artifact("int8").details["quantization"],
            "layer_errors": rene_int8.report.artifact("int8").details.get("layer_errors"),
            "lossy_chains": rene_int8.lossy_chains}


def table(path: Path) -> str:
    """The README table (markdown) from a results JSON, numbers unedited."""
    data = json.loads(path.read_text())
    lines = ["| model | row | size on disk | smaller | ORT CPU ms | OpenVINO CPU ms | top-1 agreement | top-5 overlap |",
             "|---|---|---|---|---|---|---|---|"]
    for model, label in (("resnet18", "ResNet-18 (224x224, random init)"), ("mobilenet_v2", "MobileNetV2 (official)")):
        for name, r in data.get(model, {}).get("rows", {}).items():
            f = r["fidelity_onnxruntime"]
            lines.append(f"| {label} | {name} | {r['size_bytes'] / 1e6:.2f} MB | {r['size_x']:.2f}x | "
                         f"{r['latency_onnxruntime']['median_ms']:.2f} | {r['latency_openvino']['median_ms']:.2f} | "
                         f"{f['top1_agreement']:.3f} | {f['top5_overlap']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mnv2-compress", default=MNV2_COMPRESS, help="extra `rene-onnx compress` arguments (MobileNetV2)")
    ap.add_argument("--table", action="store_true", help="print the README table from --out and stop")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the --models sections of an existing --out (each keeps its own command / commit)")
    args = ap.parse_args()
    if args.table:
        print(table(args.out))
        return
    calib, held, data_info = crops(args.calib_samples)
    command = shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
    results = {"command": command, "commit": commit(),
               "machine": machine(), "inputs": data_info, "goals": GOALS,
               "latency": {"threads": args.threads, "repeats": args.repeats, "warmup": args.warmup, "batch": 1}}
    if args.merge and args.out.is_file():
        results = {**json.loads(args.out.read_text()), "last_command": command}
    from rene_onnx.report.environment import environment_meta

    results["versions"] = environment_meta()["versions"]
    try:
        import openvino

        results["versions"]["openvino"] = openvino.__version__
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="rene-edge-") as tmp:
        for name in args.models.split(","):
            t0 = time.time()
            results[name] = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}[name](args, calib, held, Path(tmp))
            results[name]["seconds"] = time.time() - t0
            results[name]["run"] = {"command": command, "commit": commit(), "machine": machine()}
            log(f"{name}: {json.dumps(results[name]['goals'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {args.out}")
    print(table(args.out))


if __name__ == "__main__":
    main()
