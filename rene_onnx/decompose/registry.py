"""The decompositions by method name: one :class:`Decomposition` object per method (numpy only).

Each method lives in a module of its own (:mod:`.svd`, :mod:`.tt`, :mod:`.cp` ..:
tensorly's one-module-per-format style) that defines a :class:`Decomposition` subclass, and the
package (``rene_onnx/decompose/__init__.py``) registers them in one place. Whatever depends on
the method is asked of the registered object, by name: which layers it applies to, how many
ranks and their caps, the factor arrays and their layout, the counts, the decomposition and its
reconstruction. The torch modules (``rene_onnx.engine.registry``) and the ONNX passes
(``rene_onnx.passes.registry``) keep registries of their own, keyed by the same names; the
method choices (``plan.METHODS``, ``choose.METHOD_CHOICES``, ``SearchConfig.method``, the CLI's
``--method``) are read from here.

The layout: a factorized layer is a chain of convs (for a Linear / Gemm / MatMul: of matmuls)
whose weights are the factor arrays, described by :class:`FactorStep`; exactly one step carries
the kernel (and the stride / padding / dilation), the last one the bias. The counts follow from
the layout (:meth:`Decomposition.params` / :meth:`Decomposition.macs`): parameters are the
factors' sizes, MACs each factor's size times the positions it runs at -- the layer input's
before the kernel step, the output's from the kernel step on (bias adds are not MACs).

Grouped convs (``groups`` = g) are factorized per group: each group's weight block is decomposed
at the same per-group ranks and every factor array is the groups' factors stacked on axis 0, so
every factor runs as a conv grouped by g (:mod:`.grouped`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["FactorStep", "Decomposition", "Registry", "METHODS", "register", "unregister", "get", "names",
           "applicable", "auto_candidates", "round_rank", "np_einsum"]


@dataclass(frozen=True)
class FactorStep:
    """One factor of a factorized layer, as the weight of a conv (or of a matmul for a Linear).

    ``weight_shape`` is the conv weight ``(out, in / group, k..)`` (``(out, in)`` for a matmul);
    ``array_shape`` the factor array's layout in :class:`~rene_onnx.plan.LayerFactors` when it is
    not the conv weight's (SVD keeps 2-D ``U`` / ``V``); ``alt_shapes`` further array shapes a
    reader accepts (and reshapes). ``geometry``: this step carries the kernel and the original
    stride / padding / dilation; the others are 1x1 with stride 1.
    """

    leaf: str  # the torch leaf's attribute name and the ONNX node's suffix: first | core | last
    key: str  # the factor array's key
    weight_shape: tuple[int, ...]
    group: int = 1
    geometry: bool = False
    array_shape: tuple[int, ...] | None = None
    alt_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def layout(self) -> tuple[int, ...]:
        """The factor array's shape in the plan contract."""
        return self.array_shape if self.array_shape is not None else self.weight_shape

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a factor array of ``shape`` is this step's (in any accepted layout)."""
        shape = tuple(int(s) for s in shape)
        trimmed = self.weight_shape
        while len(trimmed) > 2 and trimmed[-1] == 1:
            trimmed = trimmed[:-1]
        return shape in (self.weight_shape, self.layout, trimmed, *self.alt_shapes)


def np_einsum(equation: str, *operands):
    return np.einsum(equation, *operands, optimize=True)


def round_rank(r: int, multiple: int, cap: int) -> int:
    """Round ``r`` to the nearest positive multiple of ``multiple`` not above ``cap``."""
    if multiple <= 1:
        return max(1, min(r, cap))
    q = max(multiple, int(round(r / multiple)) * multiple)
    return max(1, min(q, cap))


class Decomposition:
    """The numpy rules of one decomposition method. Subclasses set the class attributes and the
    methods marked abstract; the rest has defaults that follow from them.

    ``shape`` arguments are :class:`~rene_onnx.decompose.ranks.LayerShape` (ranks are per group
    and caps use the per-group sizes ``group_out`` / ``group_in``); ``weight_shape`` arguments the
    dense weight's ``(Cout, Cin / groups, k..)`` or ``(out, in)``.
    """

    name: str = ""
    #: ranks per layer (``check_ranks`` expands one given rank to all of them, :meth:`expand`)
    n_ranks: int = 1
    #: the factor arrays (``bias`` is always optional)
    factor_keys: tuple[str, ...] = ()
    #: where each rank is read from the arrays: ``(key, axis, stacked per group)``, one per rank
    rank_axes: tuple[tuple[str, int, bool], ...] = ()
    #: keyword options :meth:`decompose` accepts
    options: frozenset[str] = frozenset()

    # -- which layers ----------------------------------------------------------------------------
    def applies(self, shape) -> bool:  # pragma: no cover - abstract
        """Whether this method can factorize ``shape`` (plain depthwise convs are refused before)."""
        raise NotImplementedError

    def auto_candidate(self, shape) -> bool:
        """Whether ``method="auto"`` considers this method for ``shape`` (see :mod:`.choose`)."""
        return False

    # -- ranks -----------------------------------------------------------------------------------
    def rank_caps(self, shape) -> tuple[int, ...]:  # pragma: no cover - abstract
        """The per-rank algebraic caps (what the unfoldings admit), one per rank."""
        raise NotImplementedError

    def cap(self, shape, ranks: tuple[int, ...]) -> tuple[int, ...]:
        """``ranks`` capped at what the layer admits (default: each at its :meth:`rank_caps`)."""
        return tuple(min(r, c) for r, c in zip(ranks, self.rank_caps(shape)))

    def expand(self, r: int) -> tuple[int, ...]:
        """The ranks a single rank ``r`` stands for (the search's one rank per layer): ``r`` for each."""
        return (int(r),) * self.n_ranks

    def max_rank(self, shape) -> int:
        """The largest single rank (:meth:`expand`) worth having: the smallest cap."""
        return min(self.rank_caps(shape))

    def round(self, shape, ranks: tuple[int, ...], multiple: int) -> tuple[int, ...]:
        """Each rank rounded to a positive multiple of ``multiple`` within its cap."""
        return tuple(round_rank(r, multiple, c) for r, c in zip(ranks, self.rank_caps(shape)))

    # -- layout and counts -----------------------------------------------------------------------
    def layout(self, weight_shape: tuple[int, ...], ranks: tuple[int, ...],
               groups: int = 1) -> list[FactorStep]:  # pragma: no cover - abstract
        """The factor chain of a layer with dense weight ``weight_shape`` at per-group ``ranks``."""
        raise NotImplementedError

    def params(self, shape, ranks: tuple[int, ...]) -> int:
        """Parameters of the factors (weights only; the bias is counted by ``ranks``)."""
        return sum(math.prod(s.weight_shape) for s in self.layout(weight_shape_of(shape), ranks, shape.groups))

    def macs(self, shape, ranks: tuple[int, ...]) -> int:
        """MACs of the factor chain at batch 1 (input positions before the kernel step, output positions from it)."""
        total, pos = 0, shape.in_positions
        for s in self.layout(weight_shape_of(shape), ranks, shape.groups):
            if s.geometry:
                pos = shape.out_positions
            total += math.prod(s.weight_shape) * pos
        return total

    # -- the math --------------------------------------------------------------------------------
    def decompose(self, weight: np.ndarray, ranks: tuple[int, ...], **options) -> dict[str, np.ndarray]:
        """Factor arrays of ONE group's (ungrouped) weight at checked ranks, in ``weight.dtype``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def reconstruct(self, arrays: dict, weight_shape: tuple[int, ...], groups: int,
                    einsum: Callable = np_einsum):  # pragma: no cover - abstract
        """The dense (grouped) weight the arrays represent: numpy, or torch with ``einsum=torch.einsum``."""
        raise NotImplementedError

    def infer_groups(self, arrays: dict) -> int:  # pragma: no cover - abstract
        """The group count the arrays' shapes imply (``ValueError`` if they do not chain)."""
        raise NotImplementedError

    def ranks_of(self, arrays: dict, groups: int = 1) -> tuple[int, ...]:
        """The per-group ranks the arrays hold, read at :attr:`rank_axes` (``ValueError`` on a bad array).

        Every factor array is stacked over the groups on axis 0, so its first dimension must
        split into ``groups``.
        """
        missing = [k for k in self.factor_keys if k not in arrays]
        if missing:
            raise ValueError(f"{self.name} factors miss {missing}")
        g = int(groups)
        for key in self.factor_keys:
            a = np.shape(arrays[key])
            if not a or a[0] % g:
                raise ValueError(f"{self.name} factor {key!r} has {a[0] if a else 0} rows along axis 0, not a "
                                 f"multiple of the conv's group={g}, so it does not split into {g} groups")
        out = []
        for key, axis, stacked in self.rank_axes:
            a = np.shape(arrays[key])
            if len(a) <= axis:
                raise ValueError(f"{self.name} factor {key!r} has shape {list(a)}, expected at least {axis + 1} "
                                 "dimensions")
            r = int(a[axis]) // g if stacked else int(a[axis])
            if r <= 0:
                raise ValueError(f"{self.name} factor {key!r} has shape {list(a)}: rank 0")
            out.append(r)
        return tuple(out)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def weight_shape_of(shape) -> tuple[int, ...]:
    """The dense weight shape ``(Cout, Cin / groups, k..)`` (``(out, in)`` for a Linear) of a LayerShape."""
    return (shape.out_features, shape.group_in, *shape.kernel)


class Registry:
    """Named objects (each has a ``name``) in registration order; the decompose and engine registries are two."""

    def __init__(self, kind: str, check: Callable[[object], None] | None = None):
        self.kind, self._check, self._items = kind, check, {}

    def register(self, *items, replace: bool = False) -> None:
        """Add ``items`` in order (the order is the preference among equals); a taken name needs ``replace``."""
        for item in items:
            if self._check is not None:
                self._check(item)
            if item.name in self._items and not replace:
                raise ValueError(f"{self.kind} {item.name!r} is registered already")
            self._items[item.name] = item

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register toy methods and take them out again)."""
        self._items.pop(name, None)

    def get(self, name: str):
        """The object registered as ``name`` (``ValueError`` naming the registered ones otherwise)."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r} (expected one of {', '.join(self._items)})") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)


def _check_method(m) -> None:
    if not isinstance(m, Decomposition) or not m.name or not m.name.isidentifier():
        raise ValueError(f"a decomposition method needs an identifier name, got {m!r}")
    if m.name in ("dense", "auto"):
        raise ValueError(f"{m.name!r} is reserved (a layer left dense / the automatic choice)")


#: the decomposition methods (``rene_onnx/decompose/__init__.py`` registers them)
METHODS = Registry("method", _check_method)
register, unregister, get, names = METHODS.register, METHODS.unregister, METHODS.get, METHODS.names


def applicable(shape) -> tuple[str, ...]:
    """The methods that can factorize ``shape``, in registration order (none for a plain depthwise conv)."""
    if shape.groups != 1 and shape.group_in == 1 and shape.group_out == 1:
        return ()
    return tuple(n for n in names() if get(n).applies(shape))


def auto_candidates(shape) -> tuple[str, ...]:
    """The methods ``auto`` considers for ``shape``, in registration order."""
    return tuple(n for n in applicable(shape) if get(n).auto_candidate(shape))
