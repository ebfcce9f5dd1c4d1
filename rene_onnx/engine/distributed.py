"""Multi-process (DDP) support for fine-tuning, and its command-line entry.

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

The helpers below are no-ops in a single process, so :func:`finetune` calls
them unconditionally.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # the process's device under DDP; None in a single process
    backend: str | None = None


def init_distributed(device: str | None = None) -> DistInfo:
    """Join (or start) the process group when ``WORLD_SIZE > 1``; a single-process ``DistInfo`` otherwise.

    The backend is nccl when CUDA is available and ``device`` does not ask for
    the CPU, gloo otherwise. A process group started here is left running (the
    caller may keep using it); :func:`main` destroys it at the end.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_available() or (world <= 1 and not dist.is_initialized()):
        return DistInfo()
    use_cuda = torch.cuda.is_available() and not (device or "").startswith("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    backend = dist.get_backend()
    if dist.get_world_size() <= 1:
        return DistInfo(backend=backend)
    dev = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dev, backend)


class _ShardSampler(Sampler[int]):
    """Every ``world``-th index starting at ``rank``, no padding (exact metrics after a sum-reduce)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _ShardedBatches:
    """Batches ``i`` with ``i % world == rank`` of a re-iterable; ``equal`` truncates to the same count on all ranks."""

    def __init__(self, batches: Iterable, info: DistInfo, equal: bool) -> None:
        self.batches, self.info, self.equal = batches, info, equal
        try:
            n = len(batches)  # type: ignore[arg-type]
        except TypeError:
            n = None
        if n is None:
            self.n = None
        elif equal:
            self.n = n // info.world_size
        else:
            self.n = len(range(info.rank, n, info.world_size))

    def __iter__(self) -> Iterator[Any]:
        k = 0
        for i, b in enumerate(self.batches):
            if i % self.info.world_size == self.info.rank:
                if self.n is not None and self.equal and k >= self.n:
                    return
                k += 1
                yield b

    def __len__(self) -> int:
        if self.n is None:
            raise TypeError("length unknown")
        return self.n


def shard_loader(loader: Iterable, info: DistInfo, shuffle: bool | None = None, seed: int = 0, pad: bool = True) -> Iterable:
    """This rank's share of ``loader``.

    A batching ``DataLoader`` is rebuilt on a ``DistributedSampler`` (``pad=True``:
    every rank gets the same number of batches, as DDP needs; ``shuffle=None``
    follows the loader) or, with ``pad=False``, on a plain strided split (for
    exact evaluation). Other iterables are split batch-wise.
    """
    if info.world_size <= 1 or loader is None:
        return loader
    if isinstance(loader, DataLoader) and loader.batch_size is not None:
        if shuffle is None:
            shuffle = isinstance(loader.sampler, RandomSampler)
        ds = loader.dataset
        if pad:
            sampler: Sampler = DistributedSampler(ds, info.world_size, info.rank, shuffle=shuffle, seed=seed)
        else:
            sampler = _ShardSampler(len(ds), info.rank, info.world_size)
        return DataLoader(
            ds,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
        )
    return _ShardedBatches(loader, info, equal=pad)


def set_epoch(loader: Iterable, epoch: int) -> None:
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def wrap_ddp(module: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device is not None and info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)


def sync_buffers(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank."""
    if info.world_size <= 1:
        return
    for b in module.buffers():
        dist.broadcast(b.data, 0)


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device | None = None) -> list[float]:
    if info.world_size <= 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=info.device or device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def replica_max_diff(module: nn.Module, info: DistInfo) -> float:
    """Largest |difference| of any parameter between rank 0 and any rank (0.0 in a single process)."""
    if info.world_size <= 1:
        return 0.0
    diff = torch.zeros((), dtype=torch.float64, device=info.device)
    for p in module.parameters():
        ref = p.detach().clone()
        dist.broadcast(ref, 0)
        if ref.numel():
            diff = torch.maximum(diff, (ref - p.detach()).abs().max().to(torch.float64))
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


# --------------------------------------------------------------------------- command-line entry


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
    from .finetune import FinetuneConfig, finetune  # local import: finetune imports this module

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

    def progress(epoch: int, step: int, total: int | None, info_: dict) -> None:
        if info_.get("phase") == "val":
            print(f"epoch {epoch} step {step}/{total}: val {info_['metric']} {info_['val_metric']:.4f}", file=sys.stderr,
                  flush=True)

    try:
        result = finetune(student, teacher, train, val, cfg, progress=progress)
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
