"""Label-free input arrays (``.npy`` / ``.npz``) for calibration without a dataset."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

INPUT_KEYS = ("inputs", "input", "x", "data", "images")


def unlabeled_inputs(path: str | os.PathLike, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Inputs ``(N, ...)`` as float32 from a ``.npy`` or ``.npz`` file.

    A ``.npz`` must hold one array or one named ``inputs``/``input``/``x``/``data``/``images``.
    With ``input_shape`` (the model's input shape with its batch dim, e.g. ``(1, 1, 8, 8)``
    as ``rene_onnx.models.input_shape`` gives it; the batch size is ignored), a single
    unbatched sample gets a batch dim and any other mismatch is a ValueError.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    if p.suffix.lower() not in (".npy", ".npz"):
        raise ValueError(f"{p}: expected a .npy or .npz file")
    try:
        loaded = np.load(p, allow_pickle=False)
    except Exception as e:  # numpy raises several types for corrupt files
        raise ValueError(f"{p}: cannot read ({e})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            key = next((k for k in INPUT_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{p}: holds {keys}; name the inputs array one of {INPUT_KEYS}")
            arr = loaded[key]
    else:
        arr = loaded
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{p}: inputs must be numeric, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{p}: the inputs array is empty")
    if input_shape is not None:
        sample = tuple(int(d) for d in input_shape)[1:]
        if arr.shape == sample:
            arr = arr[None]
        if arr.shape[1:] != sample:
            raise ValueError(f"{p}: inputs have shape {arr.shape}, expected (N, {', '.join(map(str, sample))})")
    elif arr.ndim < 2:
        raise ValueError(f"{p}: inputs must be (N, ...), got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
