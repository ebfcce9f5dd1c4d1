"""MNIST-format idx files (Fashion-MNIST): ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .core import ArrayDataset, DataSplits, make_splits

from rene_onnx.errors import LoadError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
          "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four idx files in ``folder`` (gzipped or not), or None if any is missing."""
    found = {}
    for key, stem in _FILES.items():
        for cand in (folder / f"{stem}.gz", folder / stem):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def read_idx(path: Path) -> np.ndarray:
    """One idx file as a uint8 array (images ``(N, H, W)``, labels ``(N,)``)."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise LoadError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise LoadError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def load_idx_splits(folder: Path, *, seed: int, calib_fraction: float, name: str = "fashion-mnist",
                    mean=None, std=None) -> DataSplits:
    files = find_idx_files(folder)
    if files is None:
        raise LoadError(f"{folder}: expected {', '.join(f'{s}.gz' for s in _FILES.values())}")
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise LoadError(f"{folder}: {split} images and labels differ in count")
    images = np.concatenate([arrays["train_images"], arrays["test_images"]])[:, None]
    targets = np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64)
    n_train = len(arrays["train_images"])
    num_classes = int(targets.max()) + 1 if len(targets) else 0
    classes = FASHION_MNIST_CLASSES if name == "fashion-mnist" and num_classes == 10 else tuple(map(str, range(num_classes)))
    return make_splits(
        ArrayDataset(images, targets, scale=1 / 255),
        np.arange(n_train), np.arange(n_train, len(images)),
        calib_fraction=calib_fraction, seed=seed, mean=mean, std=std,
        num_classes=num_classes, name=name, classes=classes, source=folder,
        description=f"{name} idx files in {folder}: {images.shape[2]}x{images.shape[3]} grey, official test split, "
                    f"calib {calib_fraction:.0%} of train (seed {seed})",
    )
