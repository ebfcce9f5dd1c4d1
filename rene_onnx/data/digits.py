"""scikit-learn's digits: 1,797 8x8 grey images (values 0..16), 10 classes, bundled with sklearn."""
from __future__ import annotations

import numpy as np

from .core import HOLDOUT_SEED, ArrayDataset, DataSplits, make_splits, stratified_split


def load_digits_splits(*, seed: int, calib_fraction: float, test_fraction: float, mean=None, std=None) -> DataSplits:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    targets = d.target.astype(np.int64)
    full = ArrayDataset(images, targets, scale=1 / 16)
    train_idx, test_idx = stratified_split(targets, test_fraction, HOLDOUT_SEED)
    return make_splits(
        full, train_idx, test_idx, calib_fraction=calib_fraction, seed=seed, mean=mean, std=std,
        num_classes=10, name="digits", classes=tuple(str(c) for c in range(10)),
        description=f"sklearn digits, 8x8 grey scaled to [0, 1] and normalized; fixed stratified "
                    f"{test_fraction:.0%} test split, calib {calib_fraction:.0%} of the rest (seed {seed})",
    )
