"""RankPlan and Factors: the only things the engine hands to the ONNX passes.

No torch, no onnx here: plain dataclasses + numpy, with a JSON (and ``.npz``
for arrays) round-trip so ``search``, ``finetune`` and ``rewrite`` can run as
separate steps.

Layers are keyed by their *layer name* (the torch module name, e.g.
``layer1.0.conv1``). The pipeline translates layer names to ONNX node names
through the layer map before calling the passes.

Factor array conventions (the contract with ``rene_onnx.passes``)
-----------------------------------------------------------------
All arrays are in the model's dtype (float32 unless the model says otherwise).
The methods and their arrays are those registered in
:mod:`rene_onnx.decompose.registry` (each method's ``Decomposition.layout``
states its arrays); the built-in ones:

``svd`` (Linear / Gemm / MatMul weight, or a 1x1 conv), ranks ``(r,)``:
    ``U``: (out, r), ``V``: (r, in); W ~= U @ V where W is (out, in) in the
    torch ``Linear`` layout. Optional ``bias``: (out,). For a conv, W is the
    weight reshaped to (Cout, Cin*k..): ``V`` reshapes to a (r, Cin, k..) conv
    that carries stride / padding / dilation, ``U`` to a (Cout, r, 1..) 1x1 conv.
``tt`` (k x k conv), ranks ``(r1, r2)``:
    ``first``: (r2, Cin, 1, ..)  1x1 conv, no stride/padding
    ``core``:  (r1, r2, k..)     carries stride / padding / dilation
    ``last``:  (Cout, r1, 1, ..) 1x1 conv, carries ``bias`` (Cout,)
``cp`` (k x k conv), ranks ``(R,)``:
    ``first``: (R, Cin, 1, ..), ``core``: (R, 1, k..) depthwise (groups=R),
    ``last``: (Cout, R, 1, ..), optional ``bias`` (Cout,).
Grouped convs (``groups = g > 1``, see :mod:`rene_onnx.decompose.grouped`): ranks are per group and
    every factor is itself a grouped conv weight with the same ``g`` -- the
    per-group factors stacked on axis 0 (g = 1 gives the layouts above):
    ``tt``: ``first`` (g*r2, Cin/g, 1..), ``core`` (g*r1, r2, k..), ``last``
    (Cout, r1, 1..), all group=g; ``cp``: ``first`` (g*R, Cin/g, 1..) group=g,
    ``core`` (g*R, 1, k..) group=g*R, ``last`` (Cout, R, 1..) group=g; ``svd``:
    ``V`` (g*r, Cin/g*k..), ``U`` (Cout, r), both group=g.
``dense``: no factors; the layer keeps its dense weight. ``Factors.dense``
    may carry updated values for dense parameters (e.g. after fine-tuning),
    keyed by torch parameter name (``layer.weight``, ``layer.bias``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rene_onnx.errors import UserError, first_line
from rene_onnx.files import atomic_write_text

def methods() -> tuple[str, ...]:
    """The methods a layer may have: the registered decompositions (``rene_onnx.decompose.registry``), then dense."""
    from rene_onnx.decompose import registry  # lazily (numpy only): the decompose package imports this module

    return registry.names() + ("dense",)


def factor_keys(method: str) -> tuple[str, ...]:
    """The factor array names ``method`` must provide (``bias`` is always optional); ``()`` for dense."""
    if method == "dense":
        return ()
    from rene_onnx.decompose import registry

    return registry.get(method).factor_keys


def __getattr__(name: str):
    # METHODS / FACTOR_KEYS are read from the registry at each use, so a method registered later counts too
    if name == "METHODS":
        return methods()
    if name == "FACTOR_KEYS":
        return {m: factor_keys(m) for m in methods()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class LayerPlan:
    """The decision for one layer: how it is decomposed and at which ranks."""

    name: str
    method: str
    ranks: tuple[int, ...] = ()
    reason: str = ""  # why a layer stays dense (or any note on the choice)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PlanError(f"a layer name must be a non-empty string, got {self.name!r}")
        if self.method not in methods():
            raise PlanError(f"layer {self.name!r}: unknown method {self.method!r} (expected one of {methods()})")
        if isinstance(self.ranks, (str, bytes)) or not isinstance(self.ranks, (list, tuple)):
            raise PlanError(f"layer {self.name!r}: ranks must be a list of integers, got {self.ranks!r}")
        self.ranks = tuple(parse_rank(r, self.name) for r in self.ranks)
        if self.method != "dense" and not self.ranks:
            raise ValueError(f"layer {self.name!r}: method {self.method!r} needs ranks")
        if any(r <= 0 for r in self.ranks):
            raise PlanError(f"layer {self.name!r}: ranks must be positive, got {list(self.ranks)}")
        if not isinstance(self.reason, str):
            raise PlanError(f"layer {self.name!r}: reason must be a string, got {self.reason!r}")


class PlanError(UserError):
    """A rank plan that is not well formed (wrong structure, a rank that is not a positive integer)."""


def parse_rank(value: Any, layer: str) -> int:
    """A rank as an int: a positive integer, or a float with an integral value (``16.0``); else ``PlanError``.

    ``2.5``, ``Infinity``, ``NaN``, ``true`` and strings are refused rather than truncated.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise PlanError(f"layer {layer!r}: a rank must be an integer, got {value!r}")
    if isinstance(value, (float, np.floating)) and not (math.isfinite(value) and float(value).is_integer()):
        raise PlanError(f"layer {layer!r}: a rank must be an integer, got {value!r}")
    return int(value)


@dataclass
class RankPlan:
    """Method and ranks per layer (ordered as in the model), plus free-form metadata."""

    layers: dict[str, LayerPlan] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, layer: LayerPlan) -> None:
        self.layers[layer.name] = layer

    def factorized(self) -> list[LayerPlan]:
        return [lp for lp in self.layers.values() if lp.method != "dense"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "rene-onnx/rank-plan/v1",
            "meta": self.meta,
            "layers": [{**asdict(lp), "ranks": list(lp.ranks)} for lp in self.layers.values()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RankPlan":
        """A plan from its JSON form; ``PlanError`` naming what is wrong when it is not well formed."""
        if not isinstance(d, dict):
            raise PlanError(f"a rank plan is a JSON object, got {type(d).__name__}")
        meta, layers = d.get("meta", {}), d.get("layers", [])
        if not isinstance(meta, dict):
            raise PlanError(f"the plan's 'meta' must be an object, got {type(meta).__name__}")
        if not isinstance(layers, list):
            raise PlanError(f"the plan's 'layers' must be a list of {{name, method, ranks}}, got {type(layers).__name__}")
        plan = cls(meta=dict(meta))
        for i, item in enumerate(layers):
            if not isinstance(item, dict) or "name" not in item or "method" not in item:
                raise PlanError(f"layer entry {i} of the plan must be an object with 'name', 'method' and 'ranks', "
                                f"got {str(item)[:80]}")
            if item["name"] in plan.layers:
                raise PlanError(f"the plan names layer {item['name']!r} twice")
            plan.add(LayerPlan(item["name"], item["method"], item.get("ranks", ()), item.get("reason", "")))
        return plan

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RankPlan":
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PlanError(f"{path}: not a readable rank plan ({first_line(e)})") from None
        try:
            return cls.from_dict(data)
        except PlanError as e:
            raise PlanError(f"{path}: {e.message}") from None


@dataclass
class LayerFactors:
    """A layer's plan plus its factor arrays (see the module docstring for shapes)."""

    name: str
    method: str
    ranks: tuple[int, ...]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in methods():
            raise ValueError(f"layer {self.name!r}: unknown method {self.method!r} (expected one of {methods()})")
        missing = [k for k in factor_keys(self.method) if k not in self.arrays]
        if missing:
            raise ValueError(f"layer {self.name!r}: {self.method} factors miss {missing}")
        self.ranks = tuple(int(r) for r in self.ranks)

    @property
    def bias(self) -> np.ndarray | None:
        return self.arrays.get("bias")


@dataclass
class Factors:
    """Factor arrays per factorized layer, plus updated dense parameters."""

    layers: dict[str, LayerFactors] = field(default_factory=dict)
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, lf: LayerFactors) -> None:
        self.layers[lf.name] = lf

    def plan(self) -> RankPlan:
        return RankPlan(
            {n: LayerPlan(n, lf.method, lf.ranks) for n, lf in self.layers.items()}, dict(self.meta)
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path`` (JSON index) and ``path`` with suffix ``.npz`` (arrays)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        index = {"format": "rene-onnx/factors/v1", "meta": self.meta, "layers": [], "dense": sorted(self.dense)}
        for i, lf in enumerate(self.layers.values()):
            keys = {}
            for k, a in lf.arrays.items():
                arrays[f"l{i}/{k}"] = a
                keys[k] = f"l{i}/{k}"
            index["layers"].append({"name": lf.name, "method": lf.method, "ranks": list(lf.ranks), "arrays": keys})
        for j, name in enumerate(index["dense"]):
            arrays[f"d{j}"] = self.dense[name]
        npz = path.with_suffix(".npz")
        tmp = npz.with_name(npz.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, npz)
        atomic_write_text(path, json.dumps(index, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Factors":
        path = Path(path)
        with open(path) as f:
            index = json.load(f)
        with np.load(path.with_suffix(".npz")) as z:
            out = cls(meta=dict(index.get("meta", {})))
            for item in index["layers"]:
                arrays = {k: z[v] for k, v in item["arrays"].items()}
                out.add(LayerFactors(item["name"], item["method"], tuple(item["ranks"]), arrays))
            for j, name in enumerate(index.get("dense", [])):
                out.dense[name] = z[f"d{j}"]
        return out
