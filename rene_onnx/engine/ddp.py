"""Distributed data parallel helpers for fine-tuning: no-ops in a single process.

:func:`rene_onnx.engine.finetune.finetune` calls these unconditionally: under ``torchrun`` they shard the
loaders, wrap the student in DistributedDataParallel, sync buffers and reduce the epoch's sums; in one
process they do nothing. The command-line entry for ``torchrun`` is :mod:`rene_onnx.engine.distributed`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler


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
