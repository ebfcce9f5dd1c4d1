"""Real inputs for export: calibration arrays and held-out arrays, by graph input name (no torch).

``calib`` / ``held_out`` are a dict ``name -> (N, ...) array`` or an ``.npz`` (one array per graph
input name; a model with one input also takes a one-array ``.npz`` / a ``.npy``). An ``.npz`` may
also hold ``groups`` (N,) -- e.g. the photo each crop came from (``rene_onnx.data.photos``): a
held-out split then takes whole groups, so no photo is both calibrated on and measured on.

Without ``held_out``, :func:`split` holds ``held_out_fraction`` of ``calib`` out (whole groups when
there are groups, else the last samples); the calibration part is never measured on.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from rene_onnx.errors import UnsafeFileError, UserError
from rene_onnx.files import check_array_file

GROUPS_KEY = "groups"


@dataclass
class InputSet:
    """Arrays by graph input name, the group of each sample (or None), and where they came from."""

    arrays: dict[str, np.ndarray]
    groups: np.ndarray | None = None
    source: str = "given arrays"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return min((len(v) for v in self.arrays.values()), default=0)

    def take(self, idx: np.ndarray, source: str) -> "InputSet":
        return InputSet({k: v[idx] for k, v in self.arrays.items()},
                        None if self.groups is None else self.groups[idx], source)

    def describe(self) -> dict:
        d = {"source": self.source, "samples": len(self)}
        if self.groups is not None:
            d["groups"] = int(len(np.unique(self.groups)))
        return d


def graph_input_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real graph inputs (initializers listed as inputs are left out)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def read_inputs(source: Mapping[str, np.ndarray] | str | os.PathLike | None, model: onnx.ModelProto,
                option: str) -> InputSet | None:
    """``source`` as an :class:`InputSet` checked against the graph inputs (``UserError`` naming ``option``)."""
    if source is None:
        return None
    infos = graph_input_infos(model)
    names = [vi.name for vi in infos]
    if isinstance(source, Mapping):
        raw, label = {k: np.asarray(v) for k, v in source.items()}, "given arrays"
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"{path}: no such file", option=option)
        try:  # headers first: no pickled objects, no more declared bytes than there is memory for
            check_array_file(path)
        except UnsafeFileError as e:
            raise UnsafeFileError(e.message, option=option) from None
        try:
            if path.suffix == ".npy":
                raw = {names[0] if len(names) == 1 else "": np.load(path, allow_pickle=False)}
            else:
                with np.load(path, allow_pickle=False) as z:
                    raw = {k: z[k] for k in z.files}
        except Exception as e:  # not an npz / npy, a pickle, ...
            raise UserError(f"{path}: not a readable .npz / .npy ({e})", option=option) from None
        label = path.name
    groups = raw.pop(GROUPS_KEY, None)
    if len(names) == 1 and names[0] not in raw and len(raw) == 1:
        raw = {names[0]: next(iter(raw.values()))}
    missing = [n for n in names if n not in raw]
    if missing:
        raise UserError(f"{label}: no array for graph input(s) {missing} (it holds {sorted(raw)})", option=option)
    arrays = {}
    for vi in infos:
        arr = raw[vi.name]
        want = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        if arr.dtype.kind != want.kind and not (arr.dtype.kind in "iu" and want.kind in "iu"):
            raise UserError(f"{label}: input {vi.name!r} is {arr.dtype}, the graph takes {want}", option=option)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if arr.ndim != len(dims) or any(d and d != s for d, s in zip(dims[1:], arr.shape[1:])):
            shown = ", ".join("?" if d is None else str(d) for d in dims)
            raise UserError(f"{label}: input {vi.name!r} has shape {arr.shape}, the graph takes (N, ...) of "
                            f"[{shown}]", option=option)
        arrays[vi.name] = np.ascontiguousarray(arr.astype(want, copy=False))
    n = {len(v) for v in arrays.values()}
    if len(n) != 1 or 0 in n:
        raise UserError(f"{label}: the input arrays need the same, non-zero sample count (got {sorted(n)})",
                        option=option)
    if groups is not None and len(groups) != next(iter(n)):
        raise UserError(f"{label}: '{GROUPS_KEY}' has {len(groups)} entries for {next(iter(n))} samples",
                        option=option)
    return InputSet(arrays, None if groups is None else np.asarray(groups), label)


def split(calib: InputSet, fraction: float, seed: int = 0) -> tuple[InputSet, InputSet | None]:
    """``(calibration, held_out)``: ``fraction`` of ``calib`` held out, whole groups when it has groups."""
    if not 0 <= fraction < 1:
        raise UserError(f"must be in [0, 1), got {fraction}", option="held_out_fraction")
    n = len(calib)
    if fraction == 0 or n < 2:
        return calib, None
    if calib.groups is not None and len(np.unique(calib.groups)) >= 2:
        ids = np.unique(calib.groups)
        n_out = min(len(ids) - 1, max(1, int(round(fraction * len(ids)))))
        out_ids = np.random.default_rng(seed).choice(ids, size=n_out, replace=False)
        mask = np.isin(calib.groups, out_ids)
        how = f"{n_out} of {len(ids)} groups held out"
    else:
        mask = np.zeros(n, bool)
        mask[n - max(1, int(round(fraction * n))):] = True
        how = f"last {int(mask.sum())} of {n} samples held out"
    used = calib.take(np.flatnonzero(~mask), f"{calib.source} (calibration part; {how})")
    held = calib.take(np.flatnonzero(mask), f"{calib.source} (held-out part; {how})")
    return used, held


def batch_of(model: onnx.ModelProto) -> int | None:
    """The first graph input's fixed batch size, or None when it is dynamic."""
    infos = graph_input_infos(model)
    if not infos or not infos[0].type.tensor_type.shape.dim:
        return None
    d = infos[0].type.tensor_type.shape.dim[0]
    return int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None


def batches(inputs: Mapping[str, np.ndarray], size: int, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """Feeds of ``size`` samples each (a short last batch is dropped), at most ``limit`` samples in all."""
    n = min(len(v) for v in inputs.values())
    if limit is not None:
        n = min(n, limit)
    return [{k: np.ascontiguousarray(v[i:i + size]) for k, v in inputs.items()} for i in range(0, n - n % size, size)]
