"""A tiny CIFAR-10 folder in the python-pickle layout (random images), for tests of the CIFAR code path."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def cifar10_folder(root: Path, per_batch: int = 24, n_test: int = 30, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with data_batch_1..5, test_batch, batches.meta (random images)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, obj) -> None:
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f)

    for i in range(1, 6):
        dump(f"data_batch_{i}", {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                                 b"labels": [j % 10 for j in range(per_batch)], b"batch_label": b"synthetic"})
    dump("test_batch", {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                        b"labels": [j % 10 for j in range(n_test)]})
    dump("batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)]})
    return folder
