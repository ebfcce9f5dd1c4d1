"""Train the demo model: ``python -m rene_onnx.models.train_demo``.

digits_resnet on the digits TRAIN split; the epoch is selected on the
CALIBRATION split (best top-1, then lowest loss); top-1 is reported on the
TEST split. Deterministic (fixed seeds, deterministic algorithms, fixed
shuffling). Writes ``checkpoints/digits_resnet.pt`` (state_dict; load with
``torch.load(path, weights_only=True)``) and ``checkpoints/digits_resnet.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import CHECKPOINT_DIR, build


@dataclass
class TrainConfig:
    model: str = "digits_resnet"
    dataset: str = "digits"
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    shift: int = 1  # random translation augmentation, in pixels (0: none)
    seed: int = 0
    calib_fraction: float = 0.1


@dataclass
class TrainResult:
    test_top1: float
    calib_top1: float
    best_epoch: int  # 1-based
    epochs: int
    seconds: float
    seed: int
    history: list[dict] = field(default_factory=list)
    state_dict: dict = field(default_factory=dict, repr=False)


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """``(top-1 %, mean cross-entropy)`` of ``model`` (put in eval mode) on a batch of tensors."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(inputs), batch_size):
        out = model(inputs[i:i + batch_size])
        y = labels[i:i + batch_size]
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    n = max(len(inputs), 1)
    return 100.0 * correct / n, loss / n


def _shift(x: torch.Tensor, pixels: int, fill: float, gen: torch.Generator) -> torch.Tensor:
    """Translate every image by an independent random offset in [-pixels, pixels]^2."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, value=fill)
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pixels)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
    return out.gather(3, cols)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def train(config: TrainConfig = TrainConfig(), progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.dataset``; returns the calib-selected weights and their scores."""
    from rene_onnx.data import load_dataset

    if config.epochs <= 0 or config.batch_size <= 0:
        raise ValueError(f"epochs and batch_size must be positive, got {config.epochs} and {config.batch_size}")
    t0 = time.perf_counter()
    seed_everything(config.seed)
    data = load_dataset(config.dataset, seed=config.seed, calib_fraction=config.calib_fraction)
    x_tr, y_tr = data.train.tensors()
    x_ca, y_ca = data.calib.tensors()
    x_te, y_te = data.test.tensors()
    fill = (0.0 - data.mean[0]) / data.std[0]  # the normalized value of a blank pixel
    model = build(config.model, num_classes=data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                          weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(x_tr) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, epochs=config.epochs,
                                                steps_per_epoch=steps_per_epoch)
    gen = torch.Generator().manual_seed(config.seed)
    best: tuple[float, float] | None = None
    best_state, best_epoch, history = None, 0, []
    for epoch in range(1, config.epochs + 1):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(x_tr), config.batch_size):
            idx = perm[i:i + config.batch_size]
            xb = x_tr[idx]
            if config.shift > 0:
                xb = _shift(xb, config.shift, fill, gen)
            loss = F.cross_entropy(model(xb), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        calib_top1, calib_loss = evaluate(model, x_ca, y_ca)
        rec = {"epoch": epoch, "train_loss": total / len(x_tr), "calib_top1": calib_top1, "calib_loss": calib_loss}
        history.append(rec)
        if best is None or (calib_top1, -calib_loss) > best:
            best, best_epoch = (calib_top1, -calib_loss), epoch
            best_state = copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(rec)
    model.load_state_dict(best_state)
    test_top1, _ = evaluate(model, x_te, y_te)
    return TrainResult(test_top1=test_top1, calib_top1=best[0], best_epoch=best_epoch, epochs=config.epochs,
                       seconds=time.perf_counter() - t0, seed=config.seed, history=history, state_dict=best_state)


def save(result: TrainResult, config: TrainConfig, out_dir: Path, command: str) -> tuple[Path, Path]:
    """Write ``<model>.pt`` (state_dict) and ``<model>.json`` (scores and provenance) atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pt, js = out_dir / f"{config.model}.pt", out_dir / f"{config.model}.json"
    info = {
        "model": config.model,
        "dataset": config.dataset,
        "test_top1": round(result.test_top1, 4),
        "calib_top1": round(result.calib_top1, 4),
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "seconds": round(result.seconds, 1),
        "seed": result.seed,
        "command": command,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": sum(v.numel() for k, v in result.state_dict.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))),
        "config": asdict(config),
    }
    tmp_pt, tmp_js = pt.with_suffix(".pt.tmp"), js.with_suffix(".json.tmp")
    torch.save(result.state_dict, tmp_pt)
    tmp_js.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp_pt, pt)
    os.replace(tmp_js, js)
    return pt, js


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rene_onnx.models.train_demo", description=__doc__.splitlines()[0])
    d = TrainConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--shift", type=int, default=d.shift, help="random translation in pixels (0: none)")
    p.add_argument("--out", type=Path, default=CHECKPOINT_DIR, help="output folder (default: the shipped checkpoints)")
    args = p.parse_args(argv)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, shift=args.shift)
    show = lambda r: print(f"epoch {r['epoch']:3d}  train loss {r['train_loss']:.4f}  "  # noqa: E731
                           f"calib top-1 {r['calib_top1']:6.2f}%  calib loss {r['calib_loss']:.4f}", flush=True)
    try:
        result = train(cfg, progress=show)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "python -m rene_onnx.models.train_demo" + ("" if argv is None and len(sys.argv) <= 1 else
                                                       " " + " ".join(sys.argv[1:] if argv is None else argv))
    pt, js = save(result, cfg, args.out, command)
    print(f"best epoch {result.best_epoch}: calib top-1 {result.calib_top1:.2f}%, test top-1 {result.test_top1:.2f}% "
          f"({result.seconds:.1f} s) -> {pt}, {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
