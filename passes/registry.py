"""The passes, keyed by method name (the names of :mod:`rene_onnx.decompose.registry`): one per (op type, method).

Each module named in :data:`PASS_MODULES` holds one ``PASS`` (a :class:`~.base.Pass`); this is the
one list of them. A new decomposition's rewrite is a new module and its name here. No torch.
"""
from __future__ import annotations

import importlib

from .base import Pass

#: the pass modules of this package, each with a ``PASS``
PASS_MODULES = ("conv_tt", "conv_cp", "conv_svd", "gemm_svd", "matmul_svd", "conv_tucker2")

PASSES: dict[str, tuple[Pass, ...]] = {}
for _name in PASS_MODULES:
    _p = importlib.import_module(f"{__package__}.{_name}").PASS
    PASSES[_p.method] = PASSES.get(_p.method, ()) + (_p,)

#: every pass, in the order of :data:`PASS_MODULES`
REGISTRY: tuple[Pass, ...] = tuple(p for ps in PASSES.values() for p in ps)


def find_pass(op_type: str, method: str) -> Pass | None:
    """The pass that rewrites ``op_type`` nodes with ``method``, or ``None``."""
    for p in PASSES.get(method, ()):
        if p.op_type == op_type:
            return p
    return None


def methods_for(op_type: str) -> tuple[str, ...]:
    """The methods some pass rewrites ``op_type`` nodes with."""
    return tuple(m for m, ps in PASSES.items() if any(p.op_type == op_type for p in ps))
