"""Make a package callable as the public function of the same name (``rene_onnx.validate(...)``).

``rene_onnx.validate`` and ``rene_onnx.export`` are both a package (the measurement code, the edge
export code) and the library's entry point of that name (:mod:`rene_onnx.api`). Python keeps one
attribute per name, and importing a submodule (``rene_onnx.validate.numerics``) sets it to the package,
so the package itself is made callable: calling it calls the entry point.
"""
from __future__ import annotations

import importlib
import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        entry = getattr(importlib.import_module("rene_onnx.api"), self.__name__.rpartition(".")[2])
        return entry(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Calling the module ``module_name`` calls :mod:`rene_onnx.api`'s function of its last name."""
    sys.modules[module_name].__class__ = _CallableModule
