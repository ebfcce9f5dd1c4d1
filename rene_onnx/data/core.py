"""Datasets and splits shared by every adapter.

A split is a view (an index array) on storage shared with the other splits
of the same dataset, so carving ``calib`` out of ``train`` copies nothing.
Items are ``(float32 tensor (C, H, W), int label)``, scaled to [0, 1] and
then normalized per channel with ``(x - mean) / std``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from rene_onnx.errors import LoadError

# the test split of a dataset without its own test split is held out with this fixed seed
HOLDOUT_SEED = 0


class SplitDataset(Dataset):
    """Base class: one split (``indices``) of labelled images.

    Subclasses implement :meth:`_load` (raw storage indices -> float32
    ``(n, C, H, W)`` in [0, 1]).
    """

    def __init__(self, targets: np.ndarray, indices: np.ndarray, mean: Sequence[float], std: Sequence[float],
                 image_shape: tuple[int, int, int]) -> None:
        self.targets = np.asarray(targets, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.mean) != self.image_shape[0] or len(self.std) != self.image_shape[0]:
            raise LoadError(f"mean/std need {self.image_shape[0]} values (one per channel), got {self.mean}/{self.std}")
        if any(s <= 0 for s in self.std):
            raise LoadError(f"std must be positive, got {self.std}")
        self._m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)

    def _load(self, raw_indices: np.ndarray) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def subset(self, indices: np.ndarray) -> "SplitDataset":
        """Another split over the same storage (``indices`` are storage indices)."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.indices = np.asarray(indices, dtype=np.int64)
        return out

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> "SplitDataset":
        out = self.subset(self.indices)
        SplitDataset.__init__(out, self.targets, self.indices, mean, std, self.image_shape)
        return out

    @property
    def labels(self) -> np.ndarray:
        return self.targets[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        return self._normalize(self._load(np.array([j])))[0], int(self.targets[j])

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._m) / self._s

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split (or its first ``limit`` items) as ``(inputs (N, C, H, W), labels (N,))``."""
        idx = self.indices if limit is None else self.indices[:limit]
        return self._normalize(self._load(idx)), torch.from_numpy(self.targets[idx].copy())


class ArrayDataset(SplitDataset):
    """Images held in memory as an integer (or float) array ``(N, C, H, W)``; ``scale`` maps them to [0, 1]."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, indices: np.ndarray | None = None, *,
                 scale: float = 1 / 255, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        if images.ndim != 4:
            raise LoadError(f"images must be (N, C, H, W), got shape {images.shape}")
        if len(images) != len(targets):
            raise LoadError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.scale = float(scale)
        c = images.shape[1]
        super().__init__(targets, np.arange(len(images)) if indices is None else indices,
                         (0.0,) * c if mean is None else mean, (1.0,) * c if std is None else std, images.shape[1:])

    def _load(self, raw_indices: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.images[raw_indices]))
        return x.to(torch.float32) * self.scale

    def channel_stats(self, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of this split in [0, 1] units (chunked: no float64 copy of the data)."""
        if len(self.indices) == 0:
            raise LoadError("cannot compute normalization statistics of an empty split")
        c = self.images.shape[1]
        s1 = np.zeros(c)
        s2 = np.zeros(c)
        n = 0
        for start in range(0, len(self.indices), chunk):
            x = self.images[self.indices[start:start + chunk]].astype(np.float64) * self.scale
            s1 += x.sum(axis=(0, 2, 3))
            s2 += np.square(x).sum(axis=(0, 2, 3))
            n += x.shape[0] * x.shape[2] * x.shape[3]
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        std = np.where(std > 1e-8, std, 1.0)
        return tuple(mean.tolist()), tuple(std.tolist())


@dataclass
class DataSplits:
    """train / calib / test never overlap; calib is carved out of the training part."""

    train: SplitDataset
    calib: SplitDataset
    test: SplitDataset
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    name: str
    description: str
    classes: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    source: Path | None = None
    meta: dict = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "calib": len(self.calib), "test": len(self.test)}


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(keep, held)`` into ``labels``; ``held`` gets ``round(N * fraction)`` items, spread
    over the classes in proportion (largest remainder), each class shuffled with ``seed``.

    For fraction > 0, every class with at least two items keeps one and holds one out.
    Both outputs are sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * fraction
    k = np.floor(quota).astype(np.int64)
    extra = int(round(len(labels) * fraction)) - int(k.sum())
    if extra > 0:
        k[np.argsort(-(quota - k), kind="stable")[:extra]] += 1
    if fraction > 0:
        k = np.where(counts >= 2, np.clip(k, 1, counts - 1), k)
    keep: list[np.ndarray] = [np.zeros(0, np.int64)]
    held: list[np.ndarray] = [np.zeros(0, np.int64)]
    for c, kc in zip(classes, k):
        pos = np.flatnonzero(labels == c)
        pos = pos[rng.permutation(len(pos))]
        held.append(pos[:kc])
        keep.append(pos[kc:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise LoadError(f"{name} must be in [0, 1), got {value}")
    return value


def make_splits(
    full: SplitDataset,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    calib_fraction: float,
    seed: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    default_mean: Sequence[float] | None = None,
    default_std: Sequence[float] | None = None,
    **info,
) -> DataSplits:
    """Carve calib out of ``train_idx`` (stratified, ``seed``), set normalization, build :class:`DataSplits`.

    Normalization: ``mean``/``std`` if given, else ``default_mean``/``default_std``, else
    the per-channel statistics of the whole training part (train + calib; needs an
    :class:`ArrayDataset`).
    """
    if len(train_idx) == 0:
        raise LoadError(f"dataset {info.get('name', '?')!r} has no training images")
    if len(test_idx) == 0:
        raise LoadError(f"dataset {info.get('name', '?')!r} has no test images")
    if (mean is None) != (std is None):
        raise LoadError("give both mean and std, or neither")
    if mean is None:
        if default_mean is not None:
            mean, std = default_mean, default_std
        else:
            mean, std = full.subset(train_idx).channel_stats()  # type: ignore[attr-defined]
    full = full.with_normalization(mean, std)
    keep, held = stratified_split(full.targets[train_idx], calib_fraction, seed)
    return DataSplits(
        train=full.subset(train_idx[keep]),
        calib=full.subset(train_idx[held]),
        test=full.subset(test_idx),
        input_shape=full.image_shape,
        mean=full.mean,
        std=full.std,
        **info,
    )
