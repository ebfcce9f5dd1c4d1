"""Label-free input arrays (``.npy`` / ``.npz``) for calibration without a dataset.

:func:`unlabeled_inputs`: one float input (images). :func:`unlabeled_input_arrays`:
any graph inputs, described by specs (``rene_onnx.load.InputSpec``: name, shape,
dtype, dynamic axes, table size), e.g. ``input_ids`` + ``attention_mask`` from an
``.npz`` holding one array per input name; :func:`unlabeled_dataset` wraps them
for the engine (items ``(x,)`` with ``x`` a tuple in graph-input order).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rene_onnx.errors import LoadError, first_line
from rene_onnx.files import check_array_file, memory_limit  # noqa: F401 (re-exported: the check lives with the other read rules)

INPUT_KEYS = ("inputs", "input", "x", "data", "images")


def unlabeled_inputs(path: str | os.PathLike, input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Inputs ``(N, ...)`` as float32 from a ``.npy`` or ``.npz`` file.

    A ``.npz`` must hold one array or one named ``inputs``/``input``/``x``/``data``/``images``.
    With ``input_shape`` (the model's input shape with its batch dim, e.g. ``(1, 1, 8, 8)``
    as ``rene_onnx.models.input_shape`` gives it; the batch size is ignored), a single
    unbatched sample gets a batch dim and any other mismatch is a ValueError.
    """
    p = Path(path)
    arrays = _read_arrays(p, "a .npy or .npz file")
    if arrays is None:  # a .npy
        arr = np.load(p, allow_pickle=False)
    else:
        keys = list(arrays)
        key = next((k for k in INPUT_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise LoadError(f"{p}: holds {keys}; name the inputs array one of {INPUT_KEYS}")
        arr = arrays[key]
    if arr.dtype.kind not in "fiub":
        raise LoadError(f"{p}: inputs must be numeric, got dtype {arr.dtype}")
    if arr.size == 0:
        raise LoadError(f"{p}: the inputs array is empty")
    if input_shape is not None:
        sample = tuple(int(d) for d in input_shape)[1:]
        if arr.shape == sample:
            arr = arr[None]
        if arr.shape[1:] != sample:
            raise LoadError(f"{p}: inputs have shape {arr.shape}, expected (N, {', '.join(map(str, sample))})")
    elif arr.ndim < 2:
        raise LoadError(f"{p}: inputs must be (N, ...), got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def unlabeled_input_arrays(path: str | os.PathLike, specs: Sequence) -> tuple[torch.Tensor, ...]:
    """Inputs for every graph input, in ``specs`` order, from a ``.npz`` with one array per input name.

    Each spec has ``name``, ``shape`` (batch included), ``dtype`` (numpy name),
    ``dynamic`` (axes symbolic in the graph: the arrays may differ there) and
    ``high`` (an integer input indexing a table of ``high`` rows). A model with
    one input also takes a ``.npy`` or a one-array ``.npz`` (any key). Arrays
    are ``(N, ...)`` with the same N (one unbatched sample gets a batch dim).
    Integer inputs must hold integers (a float array is refused, never
    rounded) within ``[0, high)``; bool inputs take bools or 0/1; float inputs
    become float32. Any mismatch is a ValueError naming the input.
    """
    specs = list(specs)
    if not specs:
        raise LoadError("no graph inputs to load data for")
    p = Path(path)
    arrays = _read_arrays(p, f"a .npz file with one array per graph input ({_names(specs)})")
    if arrays is None:  # a .npy
        if len(specs) > 1:
            raise LoadError(f"{p}: a .npy holds one array; the model has {len(specs)} inputs ({_names(specs)}): "
                             "save a .npz with one array per input name")
        arrays = {specs[0].name: np.load(p, allow_pickle=False)}
    if "groups" in arrays and all(s.name != "groups" for s in specs):  # per-sample group ids, not an input
        arrays = {k: v for k, v in arrays.items() if k != "groups"}
    if len(specs) == 1 and specs[0].name not in arrays:
        key = next((k for k in INPUT_KEYS if k in arrays), next(iter(arrays)) if len(arrays) == 1 else None)
        if key is None:
            raise LoadError(f"{p}: holds {sorted(arrays)}; name the array {specs[0].name!r}")
        arrays = {specs[0].name: arrays[key]}
    missing = [s.name for s in specs if s.name not in arrays]
    extra = sorted(set(arrays) - {s.name for s in specs})
    if missing or extra:
        raise LoadError(f"{p}: needs one array per graph input ({_names(specs)})"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; not graph inputs: {', '.join(extra)}" if extra else ""))
    out = [_checked(p, s, arrays[s.name]) for s in specs]
    counts = {s.name: len(t) for s, t in zip(specs, out)}
    if len(set(counts.values())) > 1:
        raise LoadError(f"{p}: the inputs hold different numbers of samples: {counts}")
    return tuple(out)


def _read_arrays(p: Path, expected: str) -> dict[str, np.ndarray] | None:
    """The arrays of a ``.npz`` by key, or None for a readable ``.npy``; LoadError for anything else.

    The headers are checked first (:func:`check_array_file`): no pickled objects, and no array
    larger than the memory there is to hold it.
    """
    if not p.exists():
        raise LoadError(f"{p}: no such file")
    if not p.is_file():
        raise LoadError(f"{p}: not a regular file")
    if p.suffix.lower() not in (".npy", ".npz"):
        raise LoadError(f"{p}: expected {expected}")
    check_array_file(p)
    try:
        loaded = np.load(p, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return None
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except Exception as e:  # numpy raises several types for corrupt files
        raise LoadError(f"{p}: cannot read ({first_line(e)})") from None


def _names(specs) -> str:
    return ", ".join(s.name for s in specs)


def _checked(p: Path, spec, arr: np.ndarray) -> torch.Tensor:
    want = np.dtype(spec.dtype)
    shape = tuple(int(d) for d in spec.shape)
    if arr.size == 0:
        raise LoadError(f"{p}: the array for {spec.name!r} is empty")
    if arr.ndim == len(shape) - 1:
        arr = arr[None]
    free = set(getattr(spec, "dynamic", ())) | {0}
    if arr.ndim != len(shape) or any(a != b for i, (a, b) in enumerate(zip(arr.shape, shape)) if i not in free):
        expect = ", ".join("N" if i == 0 else ("*" if i in free else str(d)) for i, d in enumerate(shape))
        raise LoadError(f"{p}: {spec.name!r} has shape {arr.shape}, expected ({expect})")
    kind = arr.dtype.kind
    if want.kind in "iu":
        if kind not in "iub":
            raise LoadError(f"{p}: {spec.name!r} is an integer input ({want}) but the array holds {arr.dtype}; "
                             "save token ids / masks as integers")
        high = getattr(spec, "high", None)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or (high is not None and hi >= high):
            bound = f"[0, {high})" if high is not None else ">= 0"
            raise LoadError(f"{p}: {spec.name!r} holds values in [{lo}, {hi}], outside {bound}")
    elif want.kind == "b":
        if kind not in "iub" or not np.isin(arr, (0, 1)).all():
            raise LoadError(f"{p}: {spec.name!r} is a bool input; the array must hold bools or 0/1")
    elif kind not in "fiub":
        raise LoadError(f"{p}: {spec.name!r} must be numeric, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr.astype(want, copy=False)))


class _InputsDataset(torch.utils.data.Dataset):
    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int):
        return (tuple(t[i] for t in self.tensors),)


def unlabeled_dataset(tensors: Sequence[torch.Tensor]) -> torch.utils.data.Dataset:
    """Unlabeled samples for the engine: items ``(x,)``, ``x`` the sample (one input) or a tuple in graph order.

    A batch then collates to ``[x]`` and splits to inputs only (never ``(ids, labels=mask)``).
    """
    tensors = tuple(tensors)
    if not tensors:
        raise LoadError("no input tensors")
    if len(tensors) == 1:
        return torch.utils.data.TensorDataset(tensors[0])
    return _InputsDataset(tensors)
