"""The torch side of each decomposition method, by the method's name (torchao's config-type -> handler style).

One :class:`EngineMethod` per method, keyed by the same name as its numpy rules in
:mod:`rene_onnx.decompose.registry`: the factorized module class that replaces a Conv1d / Conv2d
(and one for ``nn.Linear`` where the method applies to matrices), and the source of the RENE
search's candidates (a function that fills a :class:`~rene_onnx.engine.search_banks.LayerFrame`
from the layer's weight, once per search, and names the bank class that trains the candidates).

The package (``rene_onnx/engine/__init__.py``) registers the methods in one place; model
surgery (:mod:`.layers`) and the search (:mod:`.search_banks`) look them up here. No onnx.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..decompose.registry import Registry

__all__ = ["EngineMethod", "METHODS", "register", "unregister", "get", "names"]


@dataclass(frozen=True)
class EngineMethod:
    """What the engine needs of one method.

    ``conv``: a :class:`~rene_onnx.engine.layers.FactorizedModule` subclass with
    ``from_conv(conv, method, ranks)`` and ``from_arrays(template, method, arrays)``; ``linear``:
    the same for ``nn.Linear`` (``None`` where the method does not factor matrices).
    ``search``: ``search(frame, weight64, **options)`` fills a LayerFrame's error curve and what
    its bank needs (see :mod:`.search_banks`). ``whitens``: the search may decompose the layer in
    the metric of its inputs (activation-aware SVD, ``SearchConfig.whiten``).
    """

    name: str
    conv: type | None
    search: Callable
    linear: type | None = None
    whitens: bool = False


#: the engine methods (``rene_onnx/engine/__init__.py`` registers them)
METHODS = Registry("engine method")
register, unregister, get, names = METHODS.register, METHODS.unregister, METHODS.get, METHODS.names
