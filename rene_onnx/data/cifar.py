"""CIFAR-10 / CIFAR-100 folders in the python-pickle layout.

CIFAR-10: ``data_batch_1..5`` + ``test_batch`` (+ ``batches.meta``);
CIFAR-100: ``train`` + ``test`` with ``fine_labels`` (+ ``meta``). The
standard archive folders (``cifar-10-batches-py``, ``cifar-100-python``)
may be passed or their parent. The pickles are read by a restricted unpickler
(:mod:`rene_onnx.data.safe_pickle`) that admits dicts, lists, strings, bytes,
numbers and numpy arrays only, so a batch file cannot run code when loaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .core import ArrayDataset, DataSplits, make_splits
from .safe_pickle import load_data_pickle

from rene_onnx.errors import LoadError

SUBFOLDERS = ("cifar-10-batches-py", "cifar-100-python")


def detect_cifar(folder: Path) -> tuple[Path, str] | None:
    """``(folder, "cifar10" | "cifar100")`` if ``folder`` (or a standard subfolder) holds CIFAR pickles."""
    for cand in (folder, *(folder / s for s in SUBFOLDERS)):
        if (cand / "data_batch_1").is_file() and (cand / "test_batch").is_file():
            return cand, "cifar10"
        if (cand / "train").is_file() and (cand / "test").is_file():
            return cand, "cifar100"
    return None


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise LoadError(f"{path}: missing CIFAR file")
    d = load_data_pickle(path)
    if not isinstance(d, dict):
        raise LoadError(f"{path}: not a CIFAR batch (a dict), got {type(d).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise LoadError(f"{path}: not a CIFAR batch (needs 'data' and {label_key!r})")
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise LoadError(f"{path}: CIFAR data must be (N, 3072), got {data.shape}")
    return data.reshape(-1, 3, 32, 32), np.asarray(d[label_key], dtype=np.int64)


def load_cifar_splits(folder: Path, *, seed: int, calib_fraction: float, mean=None, std=None) -> DataSplits:
    detected = detect_cifar(folder)
    if detected is None:
        raise LoadError(f"{folder}: no CIFAR pickles (data_batch_1..5 + test_batch, or train + test)")
    root, kind = detected
    if kind == "cifar10":
        batches = sorted(p for p in root.glob("data_batch_*") if p.is_file())
        parts = [_batch(p, "labels") for p in batches]
        test = _batch(root / "test_batch", "labels")
        meta_file, names_key, default_classes = root / "batches.meta", "label_names", 10
    else:
        parts = [_batch(root / "train", "fine_labels")]
        test = _batch(root / "test", "fine_labels")
        meta_file, names_key, default_classes = root / "meta", "fine_label_names", 100
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    classes: tuple[str, ...] = ()
    if meta_file.is_file():
        names = _unpickle(meta_file).get(names_key, [])
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    all_y = np.concatenate([train_y, test[1]])
    num_classes = len(classes) or max(default_classes, int(all_y.max()) + 1 if len(all_y) else 0)
    images = np.concatenate([train_x, test[0]])
    return make_splits(
        ArrayDataset(images, all_y, scale=1 / 255),
        np.arange(len(train_x)), np.arange(len(train_x), len(images)),
        calib_fraction=calib_fraction, seed=seed, mean=mean, std=std,
        num_classes=num_classes, name=kind, classes=classes, source=root,
        description=f"{kind} pickles in {root}: {len(train_x)} train / {len(test[0])} test 3x32x32, "
                    f"calib {calib_fraction:.0%} of train (seed {seed})",
    )
