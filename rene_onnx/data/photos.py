"""Unlabeled photos as model inputs: crops of image files or of the sample photos shipped by the dependencies.

An ImageNet-style model needs real images to calibrate on and to measure fidelity on, and they need
no labels. :func:`photo_crops` cuts random crops (random-resized-crop style, with a random
horizontal flip) plus one central view of each photo, normalizes them (ImageNet mean / std by
default) and returns them with the index of the photo each crop came from. That *group* is what a
held-out split must respect: crops of one photo are near-duplicates, so a fidelity figure is only
honest when the photos it is measured on were never seen whole or in part (``split_groups``).

Sources: a folder of image files (:func:`read_photos`), or :func:`sample_photos` -- the natural
photos that scikit-image, scikit-learn and matplotlib ship with their packages (astronaut, coffee,
rocket, the Hubble deep field, a cat, a Chinese temple, a flower, Grace Hopper, ...), which work
offline. Grey photos become three equal channels.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .imagefolder import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD

from rene_onnx.errors import LoadError

#: the sample photos: name -> (package, how to get it). Only natural photographs of scenes or objects
#: (no synthetic images, microscopy slides or text pages), so that an ImageNet classifier sees what it
#: was trained on. Photos whose package is missing are skipped.
SAMPLE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "camera", "moon", "coins", "clock",
    "brick", "grass", "gravel", "sklearn:china", "sklearn:flower", "matplotlib:grace_hopper",
    "matplotlib:minduka_present",
)


def sample_photos(names: Sequence[str] = SAMPLE_PHOTOS) -> dict[str, np.ndarray]:
    """The sample photos as RGB uint8 arrays (H, W, 3), name -> photo, in ``names`` order.

    Photos whose package is not installed are left out; none at all is a ``ValueError`` naming
    the package to install (scikit-image ships most of them).
    """
    out = {}
    for name in names:
        img = _sample(name)
        if img is not None:
            out[name.split(":")[-1]] = _rgb(img)
    if not out:
        raise LoadError("no sample photos found: pip install scikit-image (its skimage.data photos work offline)")
    return out


def _sample(name: str) -> np.ndarray | None:
    source, _, key = name.rpartition(":")
    try:
        if source == "":
            import skimage.data

            return np.asarray(getattr(skimage.data, key)())
        if source == "sklearn":
            from sklearn.datasets import load_sample_image

            return np.asarray(load_sample_image(f"{key}.jpg"))
        if source == "matplotlib":
            import matplotlib.cbook
            from PIL import Image

            file = {"grace_hopper": "grace_hopper.jpg", "minduka_present": "Minduka_Present_Blue_Pack.png"}[key]
            with matplotlib.cbook.get_sample_data(file) as f:
                return np.asarray(Image.open(f).convert("RGB"))
    except (ImportError, AttributeError, FileNotFoundError, OSError):
        return None
    raise LoadError(f"unknown sample photo {name!r}")


def read_photos(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every image file directly or deeper under ``folder`` (sorted by path), relative path -> RGB uint8."""
    from PIL import Image, UnidentifiedImageError

    root = Path(folder)
    if not root.is_dir():
        raise LoadError(f"{root}: not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise LoadError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    out = {}
    for p in files:
        try:
            with Image.open(p) as im:
                out[str(p.relative_to(root))] = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise LoadError(f"{p}: not a readable image ({e})") from None
    return out


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = ((img - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def photo_crops(photos: Mapping[str, np.ndarray], size: int | tuple[int, int], per_photo: int, *, seed: int = 0,
                scale: tuple[float, float] = (0.2, 1.0), mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> tuple[np.ndarray, np.ndarray]:
    """``per_photo`` crops of every photo as model inputs, and the photo index of each crop.

    The first crop of a photo is its central view (the shorter side resized to ``size / 0.875``,
    then the central ``size`` crop: the usual ImageNet evaluation view); the others are random
    crops covering ``scale`` of the photo's area (aspect 3/4..4/3), resized to ``size``, flipped
    left-right with probability 1/2. Returns ``(x, groups)``: ``x`` float32 (N, 3, H, W)
    normalized by ``mean`` / ``std`` (channel order RGB), ``groups`` int64 (N,).
    """
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if per_photo < 1:
        raise LoadError(f"per_photo must be >= 1, got {per_photo}")
    rng = np.random.default_rng(seed)
    crops, groups = [], []
    for g, photo in enumerate(photos.values()):
        im = Image.fromarray(_rgb(photo))
        crops.append(_central(im, h, w))
        for _ in range(per_photo - 1):
            crops.append(_random_crop(im, h, w, rng, scale))
        groups += [g] * per_photo
    x = np.stack(crops).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.asarray(groups, np.int64)


def _central(im, h: int, w: int) -> np.ndarray:
    from PIL import Image

    short = min(im.size)
    s = max(h, w) / 0.875 / short
    im = im.resize((max(w, round(im.size[0] * s)), max(h, round(im.size[1] * s))), Image.BILINEAR)
    left, top = (im.size[0] - w) // 2, (im.size[1] - h) // 2
    return np.asarray(im.crop((left, top, left + w, top + h)))


def _random_crop(im, h: int, w: int, rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    from PIL import Image

    width, height = im.size
    area = width * height
    for _ in range(20):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
        if 0 < cw <= width and 0 < ch <= height:
            left, top = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
            break
    else:
        cw = ch = min(width, height)
        left, top = (width - cw) // 2, (height - ch) // 2
    crop = im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop)


def split_groups(groups: np.ndarray, held_out: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(used, held_out)`` with whole groups held out (about ``held_out`` of the groups, >= 1).

    The held-out groups are drawn with ``seed``; both index arrays are sorted. ``ValueError`` when there
    are fewer than two groups (nothing could be held out and something still used).
    """
    groups = np.asarray(groups)
    ids = np.unique(groups)
    if len(ids) < 2:
        raise LoadError(f"{len(ids)} group(s): at least 2 are needed to hold whole groups out")
    n_out = min(len(ids) - 1, max(1, int(round(held_out * len(ids)))))
    out_ids = np.random.default_rng(seed).choice(ids, size=n_out, replace=False)
    mask = np.isin(groups, out_ids)
    return np.flatnonzero(~mask), np.flatnonzero(mask)
