"""ImageFolder trees: ``root/<class>/*.png|jpg|...`` (torchvision's layout).

With ``root/train/<class>/...`` and ``root/val/`` (or ``root/test/``) the
two subtrees are the train and test parts; otherwise the test split is a
fixed stratified held-out part of the tree (``root/train/`` alone, or ``root``). Classes are the sorted
sub-folder names of the training tree (torchvision's indices). Images are
decoded lazily with PIL, converted to RGB (or L for a grey tree) and resized
to ``image_size`` (default: the first image's size).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .core import HOLDOUT_SEED, DataSplits, SplitDataset, make_splits, stratified_split

from rene_onnx.errors import LoadError, first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")
TEST_DIRS = ("val", "test")


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def detect_imagefolder(folder: Path) -> bool:
    root = folder / "train" if (folder / "train").is_dir() else folder
    return any(_images_under(d) for d in _class_dirs(root)) if root.is_dir() else False


class ImageFileDataset(SplitDataset):
    """Image files decoded on access."""

    def __init__(self, paths: Sequence[Path], targets: np.ndarray, size: tuple[int, int], mode: str,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.paths = [Path(p) for p in paths]
        self.size = (int(size[0]), int(size[1]))  # (H, W)
        self.mode = mode
        channels = 1 if mode == "L" else 3
        super().__init__(targets, np.arange(len(self.paths)), mean, std, (channels, *self.size))

    def _load(self, raw_indices: np.ndarray) -> torch.Tensor:
        from PIL import Image

        out = np.empty((len(raw_indices), *self.image_shape), dtype=np.float32)
        for k, j in enumerate(raw_indices):
            try:
                with Image.open(self.paths[j]) as im:
                    im = im.convert(self.mode)
                    if im.size != (self.size[1], self.size[0]):
                        im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.float32) / 255.0
            except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
                raise LoadError(f"{self.paths[j]}: not a readable image ({first_line(e)})") from None
            out[k] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return torch.from_numpy(out)


def _collect(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    index = {c: i for i, c in enumerate(classes)}
    for d in _class_dirs(root):
        if d.name not in index:
            raise LoadError(f"{d}: class {d.name!r} is not in the training classes {classes}")
        files = _images_under(d)
        paths += files
        labels += [index[d.name]] * len(files)
    return paths, labels


def load_imagefolder_splits(folder: Path, *, seed: int, calib_fraction: float, test_fraction: float,
                            image_size: int | tuple[int, int] | None = None, mean=None, std=None) -> DataSplits:
    from PIL import Image

    test_root = next((folder / t for t in TEST_DIRS if (folder / t).is_dir()), None)
    train_root = folder / "train" if (folder / "train").is_dir() else folder
    split_tree = train_root != folder and test_root is not None
    classes = [d.name for d in _class_dirs(train_root)]
    if not classes:
        raise LoadError(f"{train_root}: no class sub-folders (expected <root>/<class>/*.png)")
    paths, labels = _collect(train_root, classes)
    n_train = len(paths)
    if split_tree:
        p, l = _collect(test_root, classes)
        paths += p
        labels += l
    if n_train == 0:
        raise LoadError(f"{train_root}: no images ({', '.join(IMAGE_EXTENSIONS)}) under the class folders")
    try:
        with Image.open(paths[0]) as im:
            mode = "L" if im.mode in GREY_MODES else "RGB"
            first_size = (im.height, im.width)
    except (OSError, ValueError) as e:
        raise LoadError(f"{paths[0]}: not a readable image ({first_line(e)})") from None
    if image_size is None:
        size = first_size
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(image_size)
    if len(size) != 2 or min(size) <= 0:
        raise LoadError(f"image_size must be a positive int or (H, W), got {image_size}")
    targets = np.asarray(labels, dtype=np.int64)
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if mode == "RGB" else ((0.5,), (0.5,))
    full = ImageFileDataset(paths, targets, size, mode, default_mean, default_std)
    if split_tree:
        train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(paths))
        how = f"{test_root.name}/ as test"
    else:
        train_idx, test_idx = stratified_split(targets, test_fraction, HOLDOUT_SEED)
        how = f"fixed stratified {test_fraction:.0%} test split"
    return make_splits(
        full, train_idx, test_idx, calib_fraction=calib_fraction, seed=seed, mean=mean, std=std,
        default_mean=default_mean, default_std=default_std,
        num_classes=len(classes), name=folder.name, classes=tuple(classes), source=folder,
        description=f"image folder {folder}: {len(classes)} classes, {mode} resized to {size[0]}x{size[1]}, "
                    f"{how}, calib {calib_fraction:.0%} of train (seed {seed})",
    )
