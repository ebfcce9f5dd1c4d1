"""Double compression on Fashion-MNIST (the paper's Table 3 analog, issue 11 item 1): distil a smaller
student from the ResNet-20 teacher, compress the student with RENE, and compare it with RENE applied to
the teacher at about the same size. Writes benchmarks/results/double_compression.json.

Rows (``rows: [{variant, params, macs, top1}]``; params / MACs counted on the ONNX graph, BN folded,
MACs at batch 1; top-1 on the TEST split with onnxruntime):

- ``teacher``: ``resnet20_fmnist`` (the zoo's checkpoint, 93.17 %);
- ``student``: ``resnet8_fmnist`` (one block per stage), trained from scratch with cross-entropy plus
  logit distillation from the teacher (``rene_onnx.engine.finetune`` with the layer terms off), the
  epoch chosen on the CALIB split; cached in ``models/checkpoints/resnet8_fmnist.pt`` (+ ``.json``);
- ``student+RENE``: RENE(TT) on the student, keeping ``--student-keep`` of its parameters;
- ``teacher+RENE``: RENE(TT) on the teacher with the same absolute parameter target
  (``student_keep * params(student) / params(teacher)`` of the teacher's parameters).

Both RENE rows use ``benchmarks/fashion_mnist.py``'s ``run_variant`` with the SAME search and
fine-tuning settings (validation cross-entropy and epoch selection on the calib split; fine-tuning
distils from the model being compressed, lambda 0.5). The two parts are independent (the target is fixed
up front), so they can run side by side: ``--part student`` (train the student if needed, then
student+RENE) and ``--part teacher`` (teacher+RENE) write their rows into the same ``--out`` (a lock on
its folder serializes the updates); ``--part all`` (default) runs both in turn.

The recorded run (2 shared CPU cores under a load average of 5-9 from other jobs, one thread per part,
the two parts side by side; a reduced budget that fits that: 4 distillation epochs for the student,
300 fine-tuning steps of 128 for each RENE row; 16 min and 11 min wall):

    .venv/bin/python benchmarks/double_compression.py --part student --threads 1 --kd-epochs 4 --ft-epochs 1 --ft-max-steps 300
    .venv/bin/python benchmarks/double_compression.py --part teacher --threads 1 --kd-epochs 4 --ft-epochs 1 --ft-max-steps 300
    .venv/bin/python benchmarks/double_compression.py --table --plots benchmarks/results/double_compression
        # the README's table, and each RENE row's ranks / layers / search-trace PNGs

``--data`` takes any dataset ``rene_onnx.data.load_dataset`` reads whose inputs are 1x28x28 (the zoo's
two Fashion-MNIST models); ``--smoke`` checks the plumbing on a few hundred images.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fashion_mnist as fm  # benchmarks/fashion_mnist.py: training, run_variant, the data splits

ROOT = fm.ROOT
RESULTS = fm.RESULTS
PARTS = ("all", "student", "teacher")
ORDER = ("teacher", "student", "student+RENE", "teacher+RENE")


@dataclass
class DoubleConfig:
    """Every knob (recorded in the results JSON); the RENE rows share ``bench`` (fashion_mnist.BenchConfig)."""

    teacher: str = "resnet20_fmnist"
    student: str = "resnet8_fmnist"
    student_keep: float = 0.5  # fraction of the student's parameters student+RENE keeps
    # training the student: cross-entropy + kd_weight * T^2 KL(teacher || student), SGD + cosine
    kd_epochs: int = 15
    kd_lr: float = 0.1
    kd_batch: int = 128
    kd_weight_decay: float = 5e-4
    kd_weight: float = 1.0
    kd_temperature: float = 2.0
    bench: fm.BenchConfig = dataclasses.field(default_factory=lambda: fm.BenchConfig(variants=("tt",)))

    def __post_init__(self) -> None:
        if not 0 < self.student_keep < 1:
            raise ValueError(f"student_keep must be in (0, 1), got {self.student_keep}")
        if self.kd_epochs < 1 or self.kd_batch < 1:
            raise ValueError("kd_epochs and kd_batch must be >= 1")


def n_params(name: str) -> int:
    from rene_onnx import models

    return sum(p.numel() for p in models.build(name).parameters())


def teacher_keep(cfg: DoubleConfig) -> float:
    """The fraction of the teacher's parameters that matches student+RENE's absolute target."""
    return cfg.student_keep * n_params(cfg.student) / n_params(cfg.teacher)


def machine() -> dict[str, Any]:
    """The report's machine facts, plus ``gpu`` as torch sees it (``none`` without CUDA)."""
    import torch

    from rene_onnx.report.environment import machine_meta

    return {**machine_meta(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def git_commit() -> str | None:
    from rene_onnx.report.environment import source_commit

    return source_commit(ROOT)


# ----------------------------------------------------------------------------- the student


def ensure_student(cfg: DoubleConfig, splits, path: Path, retrain: bool, command: str) -> dict:
    """The student's provenance; distils and writes ``path`` (+ ``.json``) if missing or ``retrain``."""
    from rene_onnx import models
    from rene_onnx.engine.finetune import FinetuneConfig

    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file() and not retrain:
        fm._log(f"student checkpoint {path} (cached)")
        return json.loads(info_path.read_text())
    b = cfg.bench
    tcfg = FinetuneConfig(epochs=cfg.kd_epochs, lr=cfg.kd_lr, batch_size=cfg.kd_batch,
                          weight_decay=cfg.kd_weight_decay, lambda_diss=0.0, weight_term=False, output_term=False,
                          logit_kd=cfg.kd_weight, temperature=cfg.kd_temperature, eval_initial=False,
                          select_on="calib", device=b.device, seed=b.seed, log_every=100,
                          max_steps=2 if b.smoke else None)
    teacher = models.build(cfg.teacher, pretrained=True)
    return fm.train_checkpoint(
        cfg.student, splits, path, tcfg, command, teacher=teacher,
        engine=f"rene_onnx.engine.finetune (cross-entropy + {cfg.kd_weight} x logit KD at T={cfg.kd_temperature} "
               f"from {cfg.teacher}; layer terms off)",
        extra={"teacher": cfg.teacher, "teacher_checkpoint": str(models.default_checkpoint(cfg.teacher).relative_to(ROOT))})


# ----------------------------------------------------------------------------- the RENE rows


def rene_row(cfg: DoubleConfig, model: str, weights: Path, keep: float, label: str, splits) -> fm.VariantResult:
    """RENE(TT) on zoo ``model`` with ``weights``, keeping ``keep`` of its parameters (fashion_mnist.run_variant)."""
    from rene_onnx import pipeline
    from rene_onnx.config import CompressConfig

    handle = pipeline.load_model(CompressConfig(model=model, weights=weights))
    if tuple(handle.input_shape[1:]) != tuple(splits.input_shape):
        raise ValueError(f"{cfg.bench.data}: inputs {splits.input_shape}, {model} expects {handle.input_shape[1:]}")
    shapes = pipeline.layer_shapes(handle)
    x, y = splits.test.tensors()
    bench = dataclasses.replace(cfg.bench, target_params=keep)
    return fm.run_variant(bench, "tt", handle, splits, shapes, (x.numpy(), y.numpy()), model=model, label=label)


def _row(variant: str, model: str, params: int, macs: int, top1: float) -> dict:
    return {"variant": variant, "model": model, "params": int(params), "macs": int(macs), "top1": round(top1, 2)}


def run(cfg: DoubleConfig, part: str, out: Path, student_ckpt: Path, retrain: bool, command: str) -> dict:
    import torch
    from threadpoolctl import threadpool_limits

    from rene_onnx import models

    torch.set_num_threads(cfg.bench.threads)
    t0 = time.perf_counter()
    commit = git_commit()  # at the start: the code that ran
    rows: list[dict] = []
    variants: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    with threadpool_limits(limits=cfg.bench.blas_threads, user_api="blas"):
        splits = fm.load_splits(cfg.bench)
        for name in (cfg.teacher, cfg.student):
            if tuple(models.input_shape(name)[1:]) != tuple(splits.input_shape):
                raise ValueError(f"{splits.name}: inputs {tuple(splits.input_shape)}, {name} expects "
                                 f"{tuple(models.input_shape(name)[1:])}")
        if part in ("all", "student"):
            extra["student_checkpoint"] = ensure_student(cfg, splits, student_ckpt, retrain, command)
            res = rene_row(cfg, cfg.student, student_ckpt, cfg.student_keep, "student+RENE", splits)
            rows += [_row("student", cfg.student, res.params["before"], res.macs["before"], res.original_test_top1),
                     _row("student+RENE", cfg.student, res.params["after"], res.macs["after"], res.test_top1_after_ft)]
            variants["student+RENE"] = asdict(res)
        if part in ("all", "teacher"):
            keep = teacher_keep(cfg)
            res = rene_row(cfg, cfg.teacher, models.default_checkpoint(cfg.teacher), keep, "teacher+RENE", splits)
            rows += [_row("teacher", cfg.teacher, res.params["before"], res.macs["before"], res.original_test_top1),
                     _row("teacher+RENE", cfg.teacher, res.params["after"], res.macs["after"], res.test_top1_after_ft)]
            variants["teacher+RENE"] = asdict(res)
    seconds = round(time.perf_counter() - t0, 1)
    run_info = {"part": part, "command": command, "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "seconds": seconds, "threads": cfg.bench.threads, "machine": machine(), **extra}
    return merge(out, cfg, rows, variants, run_info)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path``'s folder (flock on the directory: no lock file is left behind)."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def merge(out: Path, cfg: DoubleConfig, rows: list[dict], variants: dict, run_info: dict) -> dict:
    """Put this part's rows / variants / run into ``out`` (keeping the other part's), under a file lock."""
    from rene_onnx.plan import atomic_write_text
    from rene_onnx.report.environment import environment_meta

    with _locked(out):
        doc = json.loads(out.read_text()) if out.is_file() else {}
        if doc.get("config") not in (None, _cfg_dict(cfg)):
            fm._log(f"{out}: the other rows were run with another config; they are replaced")
            doc = {}
        doc.update({"benchmark": "double_compression", "config": _cfg_dict(cfg), **environment_meta(),
                    "teacher_keep": round(teacher_keep(cfg), 6)})
        by = {r["variant"]: r for r in doc.get("rows", [])}
        by.update({r["variant"]: r for r in rows})
        doc["rows"] = [by[v] for v in ORDER if v in by]
        doc["variants"] = {**doc.get("variants", {}), **variants}
        runs = [r for r in doc.get("runs", []) if r["part"] not in (run_info["part"], "all")]
        doc["runs"] = runs + [run_info] if run_info["part"] != "all" else [run_info]
        doc["summary"] = summarize(doc)
        atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    return doc


def _cfg_dict(cfg: DoubleConfig) -> dict:
    d = asdict(cfg)
    d["bench"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d["bench"].items()}
    return d


def summarize(doc: dict) -> dict:
    by = {r["variant"]: r for r in doc["rows"]}
    if "student+RENE" not in by or "teacher+RENE" not in by:
        return {}
    s, t = by["student+RENE"], by["teacher+RENE"]
    return {"student_rene_minus_teacher_rene_points": round(s["top1"] - t["top1"], 2),
            "student_rene_beats_teacher_rene": s["top1"] > t["top1"],
            "params_ratio_student_rene_over_teacher_rene": round(s["params"] / t["params"], 4),
            "macs_ratio_student_rene_over_teacher_rene": round(s["macs"] / t["macs"], 4)}


def table(doc: dict) -> str:
    """The README's markdown table."""
    teacher = next((r for r in doc["rows"] if r["variant"] == "teacher"), None)
    lines = ["| variant | model | params | MACs | test top-1 % | params vs teacher |", "|---|---|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        rel = f"{100 * r['params'] / teacher['params']:.1f} %" if teacher else "-"
        lines.append(f"| {r['variant']} | {r['model']} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | {r['top1']:.2f} | {rel} |")
    return "\n".join(lines)


def write_row_plots(doc: dict, folder: Path) -> list[Path]:
    """``report.figures.write_plots`` of each RENE row's recorded report, renamed ``<variant>_<plot>.png``."""
    import tempfile

    from rene_onnx.report.figures import write_plots

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for variant, res in doc.get("variants", {}).items():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            for path in write_plots(res["report"], tmp):
                dest = folder / f"{variant.replace('+', '_').lower()}_{path.name}"
                os.replace(path, dest)
                written.append(dest)
    return written


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d, b = DoubleConfig(), fm.BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=PARTS, default="all")
    p.add_argument("--data", default=b.data, help="dataset name or folder (1x28x28 inputs)")
    p.add_argument("--student-keep", type=float, default=d.student_keep)
    for name in ("kd_epochs", "kd_batch"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("kd_lr", "kd_weight", "kd_temperature"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    for name in ("search_steps", "ft_epochs", "ft_batch", "threads", "blas_threads", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(b, name))
    p.add_argument("--ft-lr", type=float, default=b.ft_lr)
    p.add_argument("--ft-max-steps", type=int, default=None)
    p.add_argument("--device", default=None, help="training / fine-tuning device (default: cuda if available)")
    p.add_argument("--student-checkpoint", type=Path, default=ROOT / "models" / "checkpoints" / f"{d.student}.pt")
    p.add_argument("--retrain", action="store_true", help="distil the student even if its checkpoint exists")
    p.add_argument("--out", type=Path, default=RESULTS / "double_compression.json")
    p.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    p.add_argument("--plots", type=Path, default=None,
                   help="with --table: write each RENE row's ranks / layers / search PNGs (from its recorded "
                        "report) into this folder, as <variant>_<plot>.png")
    p.add_argument("--smoke", action="store_true", help="tiny subsets and budgets (checks the plumbing only)")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> DoubleConfig:
    bench = {k: getattr(a, k) for k in ("data", "search_steps", "ft_epochs", "ft_batch", "threads", "blas_threads",
                                        "seed", "ft_lr", "ft_max_steps", "device", "smoke")}
    if a.smoke:
        bench.update(search_steps=2, search_warmup=1, calib_batch_size=16, max_calib_batches=2, ft_epochs=1,
                     ft_max_steps=2, ft_batch=32)
    kd = {k: getattr(a, k) for k in ("kd_epochs", "kd_batch", "kd_lr", "kd_weight", "kd_temperature")}
    if a.smoke:
        kd.update(kd_epochs=1, kd_batch=32)
    return DoubleConfig(student_keep=a.student_keep, bench=fm.BenchConfig(variants=("tt",), **bench), **kd)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.table:
        if not a.out.is_file():
            print(f"error: no results file {a.out}", file=sys.stderr)
            return 2
        doc = json.loads(a.out.read_text())
        print(table(doc))
        if a.plots is not None:
            for path in write_row_plots(doc, a.plots):
                print(f"wrote {path}")
        return 0
    try:
        cfg = config_from_args(a)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.smoke and a.student_checkpoint.resolve().parent == (ROOT / "models" / "checkpoints"):
        print("error: --smoke would overwrite the zoo's student checkpoint: pass --student-checkpoint", file=sys.stderr)
        return 2
    if not a.out.parent.is_dir():
        print(f"error: output folder does not exist: {a.out.parent}", file=sys.stderr)
        return 2
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["benchmarks/double_compression.py", *map(shlex.quote, args)])
    try:
        doc = run(cfg, a.part, a.out, a.student_checkpoint, a.retrain, command)
    except ValueError as e:  # data that does not fit the models, a dataset that cannot be read
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(doc))
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
