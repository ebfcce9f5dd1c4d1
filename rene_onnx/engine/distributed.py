"""The command-line entry for multi-process (DDP) fine-tuning (the helpers are :mod:`rene_onnx.engine.ddp`).

Run fine-tuning on N processes (gloo on CPU, nccl on GPU, one GPU per process)::

    python -m torch.distributed.run --nproc_per_node 2 -m rene_onnx.engine.distributed \\
        --student student.pt --teacher teacher.pt --train train.pt [--val val.pt] \\
        [--config finetune.json] [--epochs N --lr X --batch-size B --max-steps S --seed K] --out DIR

``student.pt`` / ``teacher.pt`` are whole modules saved with ``torch.save(module)``
(loaded with ``weights_only=False``: pass only files you trust). ``train.pt`` /
``val.pt`` hold a ``Dataset``, a dict ``{"x": tensor, "y": tensor}`` (``y``
optional: unlabeled, data-free distillation) or a tuple ``(x, y)`` / ``(x,)``.
``--batch-size`` is per process. Only rank 0 writes ``DIR/student.pt`` (the
fine-tuned module), ``DIR/student_state.pt`` (its state dict) and
``DIR/result.json`` (the :class:`~rene_onnx.engine.finetune.FinetuneResult`
plus ``replica_param_max_diff``: the largest difference of any parameter between
rank 0 and the other ranks at the end, measured before any final sync).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from ..progress import ProgressEvent, listen
from .ddp import init_distributed, replica_max_diff
from .finetune import FinetuneConfig, finetune


def _load_data(path: str | None) -> Dataset | None:
    if path is None:
        return None
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, dict):
        if "x" not in obj:
            raise ValueError(f"{path}: a dict of data needs an 'x' entry (and optionally 'y'), got keys {sorted(obj)}")
        tensors = [obj["x"]] + ([obj["y"]] if obj.get("y") is not None else [])
    elif isinstance(obj, (tuple, list)):
        tensors = [t for t in obj if t is not None]
    elif isinstance(obj, torch.Tensor):
        tensors = [obj]
    else:
        raise ValueError(f"{path}: expected a Dataset, a dict {{'x', 'y'}}, a tuple of tensors or a tensor")
    return torch.utils.data.TensorDataset(*tensors)


def _load_module(path: str) -> nn.Module:
    m = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(m, nn.Module):
        raise ValueError(f"{path}: expected a whole module saved with torch.save(module), got {type(m).__name__}")
    return m


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:

    ap = argparse.ArgumentParser(prog="python -m rene_onnx.engine.distributed", description="DDP fine-tuning with distillation")
    ap.add_argument("--student", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--val")
    ap.add_argument("--config", help="JSON file of FinetuneConfig fields")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--device")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    try:
        d: dict[str, Any] = {}
        if args.config:
            with open(args.config) as f:
                d = json.load(f)
        for key in ("epochs", "lr", "batch_size", "max_steps", "seed", "device"):
            if getattr(args, key) is not None:
                d[key] = getattr(args, key)
        cfg = FinetuneConfig.from_dict(d)
        student, teacher = _load_module(args.student), _load_module(args.teacher)
        train, val = _load_data(args.train), _load_data(args.val)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    info = init_distributed(cfg.device)

    def progress(e: ProgressEvent) -> None:
        if e.stage == "finetune" and e.info.get("phase") == "val":
            print(f"{e.message} step {e.step}/{e.total}: val {e.info['metric']} {e.info['val_metric']:.4f}",
                  file=sys.stderr, flush=True)

    try:
        with listen(progress):
            result = finetune(student, teacher, train, val, cfg)
        # the parameters must agree without help (DDP averages gradients); buffers were synced by finetune
        diff = replica_max_diff(student, info)
        if info.rank == 0:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            student.cpu()
            _atomic_save(student, out / "student.pt")
            _atomic_save(student.state_dict(), out / "student_state.pt")
            rec = {**result.to_dict(), "replica_param_max_diff": diff, "backend": info.backend, "config": cfg.to_dict()}
            tmp = out / ".result.json.tmp"
            tmp.write_text(json.dumps(rec, indent=2) + "\n")
            os.replace(tmp, out / "result.json")
        if info.world_size > 1:
            dist.barrier()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
