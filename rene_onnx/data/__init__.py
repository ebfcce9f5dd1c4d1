"""Dataset adapters: every source becomes :class:`DataSplits` (train / calib / test, never overlapping).

>>> from rene_onnx.data import load_dataset
>>> d = load_dataset("digits")                    # sklearn digits, 1x8x8
>>> d = load_dataset("fashion-mnist")             # /usr/share/datasets/fashion-mnist (Debian)
>>> d = load_dataset("/data/cifar-10-batches-py") # CIFAR-10/100 pickles, idx files, or an ImageFolder tree
>>> x, y = d.calib.tensors()

calib is carved (stratified, ``seed``) out of the training part; test is the
dataset's own test split or a fixed held-out part. Inputs are scaled to
[0, 1] and normalized per channel (``d.mean``, ``d.std``).
"""
from __future__ import annotations

import os
from pathlib import Path

from .arrays import unlabeled_dataset, unlabeled_input_arrays, unlabeled_inputs
from .core import ArrayDataset, DataSplits, SplitDataset, check_fraction, stratified_split

from rene_onnx.errors import LoadError

NAMES = ("digits", "fashion-mnist")
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` loads without a path."""
    return list(NAMES)


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    seed: int = 0,
    calib_fraction: float = 0.1,
    test_fraction: float = 0.2,
    image_size: int | tuple[int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> DataSplits:
    """Load a dataset by name (``digits``, ``fashion-mnist``) or from a folder (auto-detected).

    A folder may hold Fashion-MNIST/MNIST idx files, CIFAR-10/100 pickles, or an
    ImageFolder tree. ``calib_fraction`` of the training part becomes ``calib``;
    ``test_fraction`` applies only where the dataset has no test split of its own
    (digits, a flat ImageFolder). ``image_size`` resizes ImageFolder images.
    ``mean``/``std`` override the normalization (default: training-part statistics;
    ImageNet's for RGB image folders).
    """
    calib_fraction = check_fraction("calib_fraction", calib_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    common = dict(seed=int(seed), calib_fraction=calib_fraction, mean=mean, std=std)
    key = str(name_or_path)
    name = _ALIASES.get(key.lower(), key.lower())
    if name == "digits":
        from .digits import load_digits_splits

        return load_digits_splits(test_fraction=test_fraction, **common)
    if name == "fashion-mnist":
        from .idx import FASHION_MNIST_DIR, find_idx_files, load_idx_splits

        if find_idx_files(FASHION_MNIST_DIR) is None:
            raise LoadError(f"fashion-mnist: no idx files in {FASHION_MNIST_DIR} "
                             "(apt-get install dataset-fashion-mnist, or pass the folder holding them)")
        return load_idx_splits(FASHION_MNIST_DIR, **common)
    path = Path(key).expanduser()
    if not path.exists():
        raise LoadError(f"unknown dataset {key!r}: not one of {', '.join(NAMES)} and no such path "
                         "(CIFAR / ImageFolder / idx data: pass its folder)")
    if path.is_file():
        raise LoadError(f"{path}: a dataset is a folder (for label-free .npy/.npz inputs use unlabeled_inputs)")
    return _load_folder(path, test_fraction=test_fraction, image_size=image_size, **common)


def _load_folder(path: Path, *, test_fraction: float, image_size, **common) -> DataSplits:
    from .cifar import detect_cifar, load_cifar_splits
    from .idx import find_idx_files, load_idx_splits
    from .imagefolder import detect_imagefolder, load_imagefolder_splits

    if find_idx_files(path) is not None:
        name = "fashion-mnist" if "fashion" in path.name.lower() else path.name
        return load_idx_splits(path, name=name, **common)
    if detect_cifar(path) is not None:
        return load_cifar_splits(path, **common)
    if detect_imagefolder(path):
        return load_imagefolder_splits(path, test_fraction=test_fraction, image_size=image_size, **common)
    raise LoadError(f"{path}: no dataset found (expected idx files, CIFAR pickles, or <root>/<class>/*.png images)")


__all__ = ["ArrayDataset", "DataSplits", "SplitDataset", "list_datasets", "load_dataset", "stratified_split",
           "unlabeled_dataset", "unlabeled_input_arrays", "unlabeled_inputs"]
