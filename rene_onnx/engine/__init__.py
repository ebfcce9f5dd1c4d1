"""PyTorch side: factorized layers, the RENE search, fine-tuning (torch only; never onnx).

The torch side of every decomposition method is registered here, in one place
(:mod:`.registry`): each module named below holds ``ENGINE_METHODS``, keyed by the
method names of :mod:`rene_onnx.decompose.registry`.
"""
from __future__ import annotations

import importlib

from . import registry

#: modules of this package holding ``ENGINE_METHODS``. A new method is a new module and its name here.
METHOD_MODULES = ("layers", "tucker2")
for _name in METHOD_MODULES:
    registry.register(*importlib.import_module(f"{__name__}.{_name}").ENGINE_METHODS)
