"""Dataset adapters: split sizes, no overlap, shapes, values, bad input."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rene_onnx.data import load_dataset, stratified_split, unlabeled_inputs
from rene_onnx.data.idx import FASHION_MNIST_DIR, find_idx_files


def _raw(split):
    """Inputs back in [0, 1] units."""
    x, y = split.tensors()
    m = torch.tensor(split.mean).view(1, -1, 1, 1)
    s = torch.tensor(split.std).view(1, -1, 1, 1)
    return (x * s + m).numpy(), y.numpy()


def _assert_disjoint(d):
    tr, ca, te = (set(s.indices.tolist()) for s in (d.train, d.calib, d.test))
    assert not (tr & ca) and not (tr & te) and not (ca & te)
    assert len(tr) == len(d.train) and len(ca) == len(d.calib) and len(te) == len(d.test)


# ---------------------------------------------------------------- digits

def test_digits_splits():
    d = load_dataset("digits")
    assert d.sizes() == {"train": 1294, "calib": 144, "test": 359}
    assert sum(d.sizes().values()) == 1797
    _assert_disjoint(d)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and d.name == "digits"
    for split in (d.train, d.calib, d.test):  # stratified: every class in every split
        assert set(np.unique(split.labels)) == set(range(10))
    x, y = d.train.tensors()
    assert x.shape == (1294, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert d.train[0][0].shape == (1, 8, 8)
    # normalized with the training part's statistics
    full = torch.cat([x, d.calib.tensors()[0]])
    assert abs(full.mean().item()) < 1e-4 and abs(full.std().item() - 1) < 1e-2


def test_digits_values_match_sklearn():
    from sklearn.datasets import load_digits

    raw = load_digits().images
    d = load_dataset("digits")
    x, y = _raw(d.test)
    np.testing.assert_allclose(x[:, 0] * 16, raw[d.test.indices], atol=1e-4)
    np.testing.assert_array_equal(y, load_digits().target[d.test.indices])
    item_x, item_y = d.test[3]
    assert torch.allclose(item_x, d.test.tensors()[0][3]) and item_y == y[3]


def test_digits_test_split_is_fixed_and_calib_follows_seed():
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    np.testing.assert_array_equal(a.test.indices, b.test.indices)
    assert not np.array_equal(a.calib.indices, b.calib.indices)
    np.testing.assert_array_equal(np.sort(np.r_[a.train.indices, a.calib.indices]),
                                  np.sort(np.r_[b.train.indices, b.calib.indices]))
    c = load_dataset("digits", seed=0)
    np.testing.assert_array_equal(a.calib.indices, c.calib.indices)
    d = load_dataset("digits", calib_fraction=0.25, test_fraction=0.1)
    assert len(d.test) == 180 and len(d.calib) == round(0.25 * 1617)
    assert len(load_dataset("digits", calib_fraction=0.0).calib) == 0


def test_dataloader_batches():
    d = load_dataset("digits")
    xb, yb = next(iter(torch.utils.data.DataLoader(d.calib, batch_size=16)))
    assert xb.shape == (16, 1, 8, 8) and yb.shape == (16,)
    torch.testing.assert_close(xb, d.calib.tensors(16)[0])


def test_stratified_split_keeps_one_per_class():
    labels = np.array([0] * 10 + [1] * 2 + [2])
    keep, held = stratified_split(labels, 0.1, seed=0)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == 13
    assert sorted(labels[held].tolist()) == [0, 1]  # class 1 holds one out, singleton class 2 stays


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(name_or_path="imagenet-21k"), "unknown dataset 'imagenet-21k'"),
    (dict(name_or_path="/no/such/folder"), "no such path"),
    (dict(name_or_path="digits", calib_fraction=1.0), "calib_fraction"),
    (dict(name_or_path="digits", test_fraction=-0.1), "test_fraction"),
    (dict(name_or_path="digits", mean=(0.5,)), "both mean and std"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)


def test_empty_folder_and_file_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="no dataset found"):
        load_dataset(tmp_path)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no dataset found"):
        load_dataset(tmp_path)
    f = tmp_path / "x.npy"
    np.save(f, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unlabeled_inputs"):
        load_dataset(f)


# ---------------------------------------------------------------- CIFAR

def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_images(rng, n):
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def test_cifar10_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = []
    for i in range(1, 6):
        data, labels = _cifar_images(rng, 20), [j % 10 for j in range(20)]
        batches.append(data)
        _pickle(root / f"data_batch_{i}", {b"data": data, b"labels": labels, b"batch_label": b"x"})
    test = _cifar_images(rng, 30)
    _pickle(root / "test_batch", {b"data": test, b"labels": [j % 10 for j in range(30)]})
    names = [f"c{i}".encode() for i in range(10)]
    _pickle(root / "batches.meta", {b"label_names": names})
    for path in (root, tmp_path):  # the archive folder or its parent
        d = load_dataset(path, seed=3)
        assert d.name == "cifar10" and d.num_classes == 10 and d.input_shape == (3, 32, 32)
        assert d.sizes() == {"train": 90, "calib": 10, "test": 30}
        assert d.classes == tuple(f"c{i}" for i in range(10))
        _assert_disjoint(d)
    x, y = _raw(d.test)
    np.testing.assert_allclose(x * 255, test.reshape(-1, 3, 32, 32), atol=1e-3)
    np.testing.assert_array_equal(y, np.arange(30) % 10)
    train_all = np.concatenate(batches).reshape(-1, 3, 32, 32).astype(np.float64) / 255
    np.testing.assert_allclose(d.mean, train_all.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(d.std, train_all.std(axis=(0, 2, 3)), atol=1e-6)
    xc, yc = _raw(d.calib)
    np.testing.assert_allclose(xc * 255, train_all[d.calib.indices] * 255, atol=1e-3)
    assert set(yc.tolist()) == set(range(10))


def test_cifar100_folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "c100"
    root.mkdir()
    _pickle(root / "train", {b"data": _cifar_images(rng, 200), b"fine_labels": [j % 100 for j in range(200)],
                             b"coarse_labels": [j % 20 for j in range(200)]})
    _pickle(root / "test", {b"data": _cifar_images(rng, 50), b"fine_labels": [j % 100 for j in range(50)]})
    d = load_dataset(root, calib_fraction=0.5)
    assert d.name == "cifar100" and d.num_classes == 100
    assert d.sizes() == {"train": 100, "calib": 100, "test": 50}
    _assert_disjoint(d)


def test_cifar_bad_batch(tmp_path):
    _pickle(tmp_path / "data_batch_1", {b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})
    _pickle(tmp_path / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- ImageFolder

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def _write_images(root: Path, per_class: int, size=(10, 12), mode="RGB"):
    from PIL import Image

    for cls, color in COLORS.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = color if mode == "RGB" else 40 * (list(COLORS).index(cls) + 1)
            Image.new(mode, size, value).save(root / cls / f"{i:03d}.png")


def test_imagefolder_flat(tmp_path):
    _write_images(tmp_path, 10)
    d = load_dataset(tmp_path)
    assert d.classes == ("cat", "dog", "emu") and d.num_classes == 3
    assert d.input_shape == (3, 12, 10)  # PIL size (10, 12) is W x H
    assert d.sizes() == {"train": 21, "calib": 3, "test": 6}
    _assert_disjoint(d)
    x, y = _raw(d.test)
    for img, label in zip(x, y):  # each class is a solid colour
        np.testing.assert_allclose(img[:, 0, 0] * 255, COLORS[d.classes[label]], atol=0.5)
    np.testing.assert_allclose(d.mean, (0.485, 0.456, 0.406))  # ImageNet normalization by default
    r = load_dataset(tmp_path, image_size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    xr, _ = r.train.tensors()
    assert xr.shape == (21, 3, 8, 8)
    assert sorted(set(np.round(xr[:, :, 4, 4].numpy().ravel(), 3))) == [-2.0, 2.0]


def test_imagefolder_train_val_grey(tmp_path):
    _write_images(tmp_path / "train", 6, mode="L")
    _write_images(tmp_path / "val", 2, mode="L")
    d = load_dataset(tmp_path, image_size=(4, 5))
    assert d.input_shape == (1, 4, 5)
    assert d.sizes() == {"train": 15, "calib": 3, "test": 6}
    _assert_disjoint(d)
    x, y = _raw(d.test)
    np.testing.assert_allclose(x[:, 0, 0, 0] * 255, 40 * (y + 1), atol=0.5)
    import shutil

    shutil.move(str(tmp_path / "val"), str(tmp_path.parent / f"{tmp_path.name}_val"))
    only_train = load_dataset(tmp_path)  # train/ without val/: a fixed held-out part of train/
    assert only_train.classes == ("cat", "dog", "emu") and only_train.sizes() == {"train": 11, "calib": 3, "test": 4}
    shutil.move(str(tmp_path.parent / f"{tmp_path.name}_val"), str(tmp_path / "val"))
    (tmp_path / "val" / "zebra").mkdir()
    with pytest.raises(ValueError, match="zebra"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- idx / Fashion-MNIST

def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder(tmp_path):
    rng = np.random.default_rng(2)
    tr, te = rng.integers(0, 256, (40, 6, 7)), rng.integers(0, 256, (10, 6, 7))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(40) % 4)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", te)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 4)
    d = load_dataset(tmp_path, calib_fraction=0.25)
    assert d.input_shape == (1, 6, 7) and d.num_classes == 4
    assert d.sizes() == {"train": 30, "calib": 10, "test": 10}
    _assert_disjoint(d)
    x, y = _raw(d.test)
    np.testing.assert_allclose(x[:, 0] * 255, te, atol=1e-3)
    np.testing.assert_array_equal(y, np.arange(10) % 4)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(9) % 4)
    with pytest.raises(ValueError, match="differ in count"):
        load_dataset(tmp_path)


@pytest.mark.skipif(find_idx_files(FASHION_MNIST_DIR) is None, reason="dataset-fashion-mnist not installed")
def test_fashion_mnist():
    d = load_dataset("fashion-mnist")
    assert d.sizes() == {"train": 54000, "calib": 6000, "test": 10000}
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10 and d.classes[9] == "Ankle boot"
    assert abs(d.mean[0] - 0.2860) < 1e-3 and abs(d.std[0] - 0.3530) < 1e-3
    _assert_disjoint(d)
    assert set(d.test.indices.tolist()) == set(range(60000, 70000))
    x, y = d.calib.tensors(100)
    assert x.shape == (100, 1, 28, 28) and set(np.bincount(d.calib.labels)) == {600}
    assert load_dataset("fashion_mnist").sizes() == d.sizes()


# ---------------------------------------------------------------- unlabeled inputs

def test_unlabeled_inputs(tmp_path):
    a = np.random.default_rng(0).normal(size=(5, 1, 8, 8))
    np.save(tmp_path / "a.npy", a)
    t = unlabeled_inputs(tmp_path / "a.npy", input_shape=(1, 1, 8, 8))
    assert t.dtype == torch.float32 and t.shape == (5, 1, 8, 8)
    np.testing.assert_allclose(t.numpy(), a, rtol=1e-6)
    np.savez(tmp_path / "named.npz", labels=np.zeros(5), x=a)
    assert unlabeled_inputs(tmp_path / "named.npz").shape == (5, 1, 8, 8)
    np.savez(tmp_path / "one.npz", whatever=a[0])
    assert unlabeled_inputs(tmp_path / "one.npz", input_shape=(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    np.savez(tmp_path / "two.npz", p=a, q=a)
    with pytest.raises(ValueError, match="name the inputs array"):
        unlabeled_inputs(tmp_path / "two.npz")
    with pytest.raises(ValueError, match=r"expected \(N, 3, 8, 8\)"):
        unlabeled_inputs(tmp_path / "a.npy", input_shape=(1, 3, 8, 8))
    with pytest.raises(ValueError, match="no such file"):
        unlabeled_inputs(tmp_path / "missing.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    with pytest.raises(ValueError, match="empty"):
        unlabeled_inputs(tmp_path / "empty.npy")
    (tmp_path / "x.txt").write_text("1 2")
    with pytest.raises(ValueError, match=".npy or .npz"):
        unlabeled_inputs(tmp_path / "x.txt")
