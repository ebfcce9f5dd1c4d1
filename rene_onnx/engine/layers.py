"""Factorized torch layers and the in-place model surgery that installs them.

Every factorized module is a plain chain of ``nn.Conv1d`` / ``nn.Conv2d`` /
``nn.Linear`` leaves named ``first`` (, ``core``) and ``last``, so forward
hooks, counting and ONNX export see ordinary ops. A conv's chain is the one
its method's numpy rules lay out (:class:`ConvChain` reads
``Decomposition.layout``), so a new method's module is a two-line subclass:

- :class:`LowRankConv` (TT or CP): 1x1 Cin->r2 | core k x k r2->r1 with the
  original stride / padding / dilation (groups=R for CP) | 1x1 r1->Cout + bias
- :class:`SVDConv`: k x k Cin->r carrying the geometry | 1x1 r->Cout + bias
- :class:`SVDLinear`: Linear(in, r, bias=False) | Linear(r, out)

Which class builds which method is the engine registry's business
(:mod:`.registry`, :data:`ENGINE_METHODS` for the ones here).

A grouped conv (groups=g) is factorized per group: the ranks are per group
and every factor is a conv grouped by g (the CP core by g*R), in the layouts
of :mod:`rene_onnx.decompose.grouped`.

Modules are initialized from the dense weights through
:func:`rene_onnx.decompose.decompose` (never randomly) or from factor arrays
(:mod:`rene_onnx.plan` contract). :func:`factorize_` swaps them into a model
by a :class:`RankPlan`; :func:`collect_factors` reads them back as
:class:`Factors` for the ONNX passes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..decompose import decompose
from ..decompose import registry as decompositions
from ..decompose.grouped import chain_weight
from ..plan import Factors, LayerFactors, RankPlan, factor_keys
from ..progress import emit
from . import registry, search_banks
from .registry import EngineMethod

_CONVS = (nn.Conv1d, nn.Conv2d)
DENSE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _conv_cls(conv: nn.Module) -> type:
    return nn.Conv2d if isinstance(conv, nn.Conv2d) else nn.Conv1d


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _to_param(array, shape: tuple[int, ...], like: torch.Tensor, what: str) -> torch.Tensor:
    a = np.asarray(array)
    if math.prod(a.shape) != math.prod(shape):
        raise ValueError(f"{what}: array of shape {a.shape} does not fit parameter shape {shape}")
    return torch.as_tensor(a.reshape(shape)).to(device=like.device, dtype=like.dtype)


def _check_template(template: nn.Module, kinds: tuple[type, ...], who: str) -> None:
    if not isinstance(template, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise ValueError(f"{who} needs a {names} module, got {type(template).__name__}")


def _bias_of(template: nn.Module, arrays: dict) -> np.ndarray | torch.Tensor | None:
    if arrays.get("bias") is not None:
        return arrays["bias"]
    return template.bias.detach() if template.bias is not None else None


class FactorizedModule(nn.Module):
    """Base class: ``method``, ``ranks`` (per group), ``weight_shape`` (the dense weight's), ``groups``, shared API."""

    method: str
    ranks: tuple[int, ...]
    weight_shape: tuple[int, ...]
    groups: int = 1
    geometry_leaf: str = "first"  # the leaf that carries the kernel (and stride / padding / dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.children():
            x = m(x)
        return x

    @property
    def bias(self) -> torch.Tensor | None:
        return self.last.bias

    def _arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_factors(self, name: str) -> LayerFactors:
        """This layer's :class:`LayerFactors` (numpy, in the module's dtype; ``bias`` if it has one)."""
        arrays = self._arrays()
        if self.last.bias is not None:
            arrays["bias"] = _np(self.last.bias)
        return LayerFactors(name, self.method, self.ranks, arrays)

    def reconstruct_weight(self) -> torch.Tensor:
        """The dense weight (``weight_shape``) the factors represent; differentiable."""
        return chain_weight(self.method, self._weights(), self.weight_shape, self.groups, einsum=torch.einsum)

    def _weights(self) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return f"method={self.method}, ranks={self.ranks}, weight_shape={self.weight_shape}{groups}"


def checked_ranks(template: nn.Module, method: str, arrays: dict) -> tuple[int, ...]:
    """The per-group ranks factor arrays hold, checked against the method's layout for ``template``'s weight."""
    dec = decompositions.get(method)
    weight_shape, groups = tuple(template.weight.shape), getattr(template, "groups", 1)
    try:
        ranks = dec.ranks_of(arrays, groups)
        for step in dec.layout(weight_shape, ranks, groups):
            shape = tuple(np.shape(arrays[step.key]))
            if not step.accepts(shape):
                raise ValueError(f"{method} factor {step.key!r} has shape {shape}, expected {step.layout}")
    except ValueError as e:
        shapes = {k: tuple(np.shape(a)) for k, a in arrays.items() if k != "bias"}
        raise ValueError(f"{method} factors {shapes} do not fit weight shape {weight_shape}: {e}") from None
    return ranks


class ConvChain(FactorizedModule):
    """A conv factorized into the chain of convs its method's layout states (``Decomposition.layout``).

    One leaf per factor, named by the layout (``first`` (, ``core``), ``last``); the leaf that
    carries the kernel gets the template's stride / padding / dilation / padding mode, the others
    are 1x1; the last one carries the bias. Subclasses name the ``methods`` they build.
    """

    methods: tuple[str, ...] = ()

    def __init__(self, template: nn.Conv1d | nn.Conv2d, method: str, ranks: tuple[int, ...], bias: bool):
        super().__init__()
        if self.methods and method not in self.methods:
            raise ValueError(f"{type(self).__name__} takes method {' or '.join(self.methods)}, got {method!r}")
        conv = _conv_cls(template)
        kw = {"device": template.weight.device, "dtype": template.weight.dtype}
        self.method, self.ranks, self.groups = method, tuple(int(r) for r in ranks), template.groups
        self.weight_shape = tuple(template.weight.shape)
        self.steps = tuple(decompositions.get(method).layout(self.weight_shape, self.ranks, self.groups))
        for i, s in enumerate(self.steps):
            geo = {}
            if s.geometry:
                self.geometry_leaf = s.leaf
                geo = {"stride": template.stride, "padding": template.padding, "dilation": template.dilation,
                       "padding_mode": template.padding_mode}
            leaf = conv(s.weight_shape[1] * s.group, s.weight_shape[0], tuple(s.weight_shape[2:]), groups=s.group,
                        bias=bias and i == len(self.steps) - 1, **geo, **kw)
            setattr(self, s.leaf, leaf)

    @classmethod
    def from_conv(cls, conv: nn.Conv1d | nn.Conv2d, method: str, ranks) -> "ConvChain":
        _check_template(conv, _CONVS, f"{cls.__name__}.from_conv")
        arrays = decompose(method, _np(conv.weight), ranks, groups=conv.groups)
        return cls.from_arrays(conv, method, arrays)

    @classmethod
    def from_arrays(cls, template: nn.Conv1d | nn.Conv2d, method: str, arrays: dict) -> "ConvChain":
        _check_template(template, _CONVS, f"{cls.__name__}.from_arrays")
        ranks = checked_ranks(template, method, arrays)
        bias = _bias_of(template, arrays)
        m = cls(template, method, ranks, bias is not None)
        _load(m, {s.leaf: arrays[s.key] for s in m.steps}, bias)
        return m

    def _weights(self) -> dict[str, torch.Tensor]:
        return {s.key: getattr(self, s.leaf).weight for s in self.steps}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {s.key: _np(getattr(self, s.leaf).weight).reshape(s.layout) for s in self.steps}


class LowRankConv(ConvChain):
    """TT or CP conv: 1x1 (Cin->r2) -> core (r2->r1, original geometry; groups=R for CP) -> 1x1 (r1->Cout)."""

    methods = ("tt", "cp")


class SVDConv(ConvChain):
    """SVD conv: k x k conv Cin->r carrying stride/padding/dilation -> 1x1 conv r->Cout with the bias."""

    methods = ("svd",)

    @classmethod
    def from_conv(cls, conv: nn.Conv1d | nn.Conv2d, method: str = "svd", ranks=None) -> "SVDConv":
        if ranks is None:
            raise ValueError("SVDConv.from_conv needs a rank")
        return super().from_conv(conv, method, ranks)


class SVDLinear(FactorizedModule):
    """SVD linear: Linear(in, r, bias=False) -> Linear(r, out) with the bias."""

    def __init__(self, template: nn.Linear, rank: int, bias: bool):
        super().__init__()
        kw = {"device": template.weight.device, "dtype": template.weight.dtype}
        self.method, self.ranks = "svd", (int(rank),)
        self.weight_shape = tuple(template.weight.shape)
        self.first = nn.Linear(template.in_features, rank, bias=False, **kw)
        self.last = nn.Linear(rank, template.out_features, bias=bias, **kw)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank) -> "SVDLinear":
        _check_template(linear, (nn.Linear,), "SVDLinear.from_linear")
        return cls.from_arrays(linear, "svd", decompose("svd", _np(linear.weight), rank))

    @classmethod
    def from_arrays(cls, template: nn.Linear, method: str, arrays: dict) -> "SVDLinear":
        if method != "svd":
            raise ValueError(f"SVDLinear takes method 'svd', got {method!r}")
        _check_template(template, (nn.Linear,), "SVDLinear.from_arrays")
        (r,) = checked_ranks(template, method, arrays)
        bias = _bias_of(template, arrays)
        m = cls(template, r, bias is not None)
        _load(m, {"first": arrays["V"], "last": arrays["U"]}, bias)
        return m

    def _weights(self) -> dict[str, torch.Tensor]:
        return {"U": self.last.weight, "V": self.first.weight}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"U": _np(self.last.weight), "V": _np(self.first.weight)}


@torch.no_grad()
def _load(m: FactorizedModule, arrays: dict, bias) -> None:
    """Copy factor arrays (by leaf name) into ``m``'s leaves, and the bias into its last one."""
    for key, a in arrays.items():
        leaf = getattr(m, key)
        leaf.weight.copy_(_to_param(a, tuple(leaf.weight.shape), leaf.weight, f"{m.method} {key}"))
    if bias is not None:
        b = m.last.bias
        b.copy_(_to_param(bias.cpu().numpy() if torch.is_tensor(bias) else bias, tuple(b.shape), b, "bias"))


def _engine(module: nn.Module, method: str) -> type:
    """The factorized module class that builds ``method`` for ``module`` (a conv or a Linear)."""
    entry = registry.get(method)
    linear = isinstance(module, nn.Linear)
    cls = entry.linear if linear else entry.conv
    if cls is None:
        able = [n for n in registry.names() if (registry.get(n).linear if linear else registry.get(n).conv)]
        kind = "a Linear layer" if linear else f"a {type(module).__name__}"
        raise ValueError(f"{kind} is factorized by {' / '.join(able)}, not {method!r}")
    return cls


def factorize_module(module: nn.Module, method: str, ranks) -> FactorizedModule:
    """A factorized replacement for a Conv1d / Conv2d / Linear, decomposed from its current weights."""
    _check_template(module, DENSE_TYPES, "factorize_module")
    cls = _engine(module, method)
    if isinstance(module, nn.Linear):
        return cls.from_linear(module, ranks)
    return cls.from_conv(module, method, ranks)


def module_from_arrays(template: nn.Module, method: str, arrays: dict) -> FactorizedModule:
    """A factorized replacement for ``template`` built from factor arrays (the plan contract)."""
    _check_template(template, DENSE_TYPES, "module_from_arrays")
    missing = [k for k in factor_keys(method) if k not in arrays]
    if missing:
        raise ValueError(f"{method} factors miss {missing}")
    return _engine(template, method).from_arrays(template, method, arrays)


def factorized_modules(model: nn.Module) -> dict[str, FactorizedModule]:
    """Every factorized module of ``model`` by name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, FactorizedModule)}


def _lookup(model: nn.Module, name: str) -> nn.Module:
    if not name:
        raise ValueError("plan names the root module (empty layer name)")
    try:
        mod = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"plan names layer {name!r}, which is not a module of the model") from None
    if not isinstance(mod, DENSE_TYPES) or isinstance(mod, FactorizedModule):
        raise ValueError(f"plan names layer {name!r}, a {type(mod).__name__}, not a Conv1d / Conv2d / Linear")
    if type(mod).__name__ == "NonDynamicallyQuantizableLinear":
        raise ValueError(f"layer {name!r} is a MultiheadAttention projection whose weight is read directly")
    return mod


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def factorize_(
    model: nn.Module,
    plan: RankPlan,
    factors: Factors | None = None,
) -> dict[str, str]:
    """Swap the plan's layers in ``model`` (in place) for factorized modules; return ``{name: status}``.

    Layers with a factor entry in ``factors`` are built from those arrays,
    the others are decomposed from their current weights. ``factors.dense``
    (updated dense parameters, by torch parameter name) is loaded too.
    Everything is validated and built before the first swap, so a bad plan
    leaves the model untouched. A ``factorize`` event goes out per layer.
    """
    targets = {name: _lookup(model, name) for name in plan.layers}
    if factors is not None:
        for name, lf in factors.layers.items():
            lp = plan.layers.get(name)
            if lp is not None and lp.method != lf.method:
                raise ValueError(f"layer {name!r}: plan says {lp.method} but the factors are {lf.method}")
        params = dict(model.named_parameters())
        dense_owner = {n for n, lp in plan.layers.items() if lp.method != "dense"}
        for pname in factors.dense:
            if pname not in params:
                raise ValueError(f"factors carry dense parameter {pname!r}, which the model does not have")
            if pname.rpartition(".")[0] in dense_owner:
                raise ValueError(f"factors carry dense parameter {pname!r} of a layer the plan factorizes")
    new: dict[str, nn.Module] = {}
    status: dict[str, str] = {}
    n = len(plan.layers)
    for i, (name, lp) in enumerate(plan.layers.items()):
        emit("factorize", step=i + 1, total=n, layer=name)
        if lp.method == "dense":
            status[name] = f"dense: {lp.reason}" if lp.reason else "dense"
            continue
        mod = targets[name]
        try:
            if factors is not None and name in factors.layers:
                built = module_from_arrays(mod, lp.method, factors.layers[name].arrays)
                source = "from factors"
            else:
                built = factorize_module(mod, lp.method, lp.ranks)
                source = "decomposed"
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
        built.train(mod.training)
        new[name] = built
        status[name] = f"{lp.method} ranks {list(built.ranks)} ({source})"
    for name, built in new.items():
        set_submodule(model, name, built)
    if factors is not None and factors.dense:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for pname, value in factors.dense.items():
                p = params[pname]
                p.copy_(_to_param(value, tuple(p.shape), p, pname))
    return status


def dense_module(m: FactorizedModule) -> nn.Module:
    """The plain Conv / Linear that computes what ``m`` computes (weight = ``m.reconstruct_weight()``)."""
    out_f, in_f = m.weight_shape[0], m.weight_shape[1] * m.groups
    kw = {"device": m.last.weight.device, "dtype": m.last.weight.dtype, "bias": m.bias is not None}
    if isinstance(m, SVDLinear):
        dense = nn.Linear(in_f, out_f, **kw)
    else:
        geo = getattr(m, m.geometry_leaf)  # the factor that carries the geometry
        dense = type(geo)(in_f, out_f, geo.kernel_size, stride=geo.stride, padding=geo.padding,
                          dilation=geo.dilation, groups=m.groups, padding_mode=geo.padding_mode, **kw)
    with torch.no_grad():
        dense.weight.copy_(m.reconstruct_weight())
        if m.bias is not None:
            dense.bias.copy_(m.bias)
    return dense.train(m.training)


def densify_(model: nn.Module, names: list[str]) -> None:
    """Replace the factorized modules ``names`` by their dense equivalents (e.g. when the chain is slower)."""
    fmods = factorized_modules(model)
    missing = [n for n in names if n not in fmods]
    if missing:
        raise ValueError(f"not factorized modules: {', '.join(missing)}")
    for n in names:
        set_submodule(model, n, dense_module(fmods[n]))


def collect_factors(model: nn.Module, *, buffers: bool = False) -> Factors:
    """Factors of every factorized module, plus every other parameter's current value in ``Factors.dense``.

    ``dense`` is keyed by torch parameter name (``fc.weight``); with
    ``buffers=True`` floating-point buffers (BatchNorm running stats) are
    included under their names too.
    """
    out = Factors()
    fmods = factorized_modules(model)
    for name, m in fmods.items():
        out.add(m.to_factors(name))
    prefixes = tuple(n + "." for n in fmods)

    def _own(pname: str) -> bool:
        return bool(prefixes) and pname.startswith(prefixes)

    for pname, p in model.named_parameters():
        if not _own(pname):
            out.dense[pname] = _np(p)
    if buffers:
        for bname, b in model.named_buffers():
            if b.is_floating_point() and not _own(bname):
                out.dense[bname] = _np(b)
    return out


ENGINE_METHODS = (
    EngineMethod("tt", LowRankConv, search_banks.hosvd_candidates),
    EngineMethod("cp", LowRankConv, search_banks.cp_candidates),
    EngineMethod("svd", SVDConv, search_banks.svd_candidates, linear=SVDLinear, whitens=True),
)

__all__ = [
    "FactorizedModule",
    "ConvChain",
    "checked_ranks",
    "ENGINE_METHODS",
    "LowRankConv",
    "SVDConv",
    "SVDLinear",
    "factorize_module",
    "module_from_arrays",
    "factorize_",
    "collect_factors",
    "dense_module",
    "densify_",
    "factorized_modules",
    "DENSE_TYPES",
]
