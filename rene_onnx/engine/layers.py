"""Factorized torch layers and the in-place model surgery that installs them.

Every factorized module is a plain chain of ``nn.Conv1d`` / ``nn.Conv2d`` /
``nn.Linear`` leaves named ``first`` (, ``core``) and ``last``, so forward
hooks, counting and ONNX export see ordinary ops:

- :class:`LowRankConv` (TT or CP): 1x1 Cin->r2 | core k x k r2->r1 with the
  original stride / padding / dilation (groups=R for CP) | 1x1 r1->Cout + bias
- :class:`SVDConv`: k x k Cin->r carrying the geometry | 1x1 r->Cout + bias
- :class:`SVDLinear`: Linear(in, r, bias=False) | Linear(r, out)

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
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..decompose import decompose
from ..decompose.grouped import chain_weight
from ..plan import FACTOR_KEYS, Factors, LayerFactors, RankPlan

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


class LowRankConv(FactorizedModule):
    """TT or CP conv: 1x1 (Cin->r2) -> core (r2->r1, original geometry; groups=R for CP) -> 1x1 (r1->Cout)."""

    def __init__(self, template: nn.Conv1d | nn.Conv2d, method: str, ranks: tuple[int, ...], bias: bool):
        super().__init__()
        if method not in ("tt", "cp"):
            raise ValueError(f"LowRankConv takes method tt or cp, got {method!r}")
        conv = _conv_cls(template)
        kw = {"device": template.weight.device, "dtype": template.weight.dtype}
        g = template.groups
        if method == "tt":
            r1, r2 = ranks
            core_groups = g
        else:
            (r1,) = ranks
            r2, core_groups = r1, g * r1
        self.method, self.ranks, self.groups = method, tuple(int(r) for r in ranks), g
        self.weight_shape = tuple(template.weight.shape)
        self.first = conv(template.in_channels, g * r2, 1, groups=g, bias=False, **kw)
        self.core = conv(
            g * r2, g * r1, template.kernel_size, stride=template.stride, padding=template.padding,
            dilation=template.dilation, groups=core_groups, bias=False, padding_mode=template.padding_mode, **kw,
        )
        self.last = conv(g * r1, template.out_channels, 1, groups=g, bias=bias, **kw)

    @classmethod
    def from_conv(cls, conv: nn.Conv1d | nn.Conv2d, method: str, ranks) -> "LowRankConv":
        _check_template(conv, _CONVS, "LowRankConv.from_conv")
        arrays = decompose(method, _np(conv.weight), ranks, groups=conv.groups)
        return cls.from_arrays(conv, method, arrays)

    @classmethod
    def from_arrays(cls, template: nn.Conv1d | nn.Conv2d, method: str, arrays: dict) -> "LowRankConv":
        _check_template(template, _CONVS, "LowRankConv.from_arrays")
        _check_keys(method, arrays)
        core = np.asarray(arrays["core"])
        g = template.groups
        if core.ndim < 2 or core.shape[0] % g:
            raise ValueError(f"{method} factor 'core' has shape {core.shape}, which does not split into {g} groups")
        ranks = (core.shape[0] // g, core.shape[1]) if method == "tt" else (core.shape[0] // g,)
        bias = _bias_of(template, arrays)
        m = cls(template, method, ranks, bias is not None)
        shapes = {"first": m.first.weight.shape, "core": m.core.weight.shape, "last": m.last.weight.shape}
        for key, shape in shapes.items():
            a = np.asarray(arrays[key])
            if tuple(a.shape) != tuple(shape):
                raise ValueError(f"{method} factor {key!r} has shape {a.shape}, expected {tuple(shape)}")
        _load(m, arrays, bias)
        return m

    def _weights(self) -> dict[str, torch.Tensor]:
        return {"first": self.first.weight, "core": self.core.weight, "last": self.last.weight}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"first": _np(self.first.weight), "core": _np(self.core.weight), "last": _np(self.last.weight)}


class _SVDModule(FactorizedModule):
    """Shared SVD behaviour: ``first`` holds V (r, in[, k..]), ``last`` holds U (out, r[, 1..]) and the bias."""

    _kinds: tuple[type, ...] = ()

    @classmethod
    def from_arrays(cls, template: nn.Module, method: str, arrays: dict) -> "_SVDModule":
        if method != "svd":
            raise ValueError(f"{cls.__name__} takes method 'svd', got {method!r}")
        _check_template(template, cls._kinds, f"{cls.__name__}.from_arrays")
        _check_keys("svd", arrays)
        r = _svd_rank(template.weight.shape, arrays, getattr(template, "groups", 1))
        bias = _bias_of(template, arrays)
        m = cls(template, r, bias is not None)
        _load(m, {"first": arrays["V"], "last": arrays["U"]}, bias)
        return m

    def _weights(self) -> dict[str, torch.Tensor]:
        return {"U": self.last.weight, "V": self.first.weight}

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "U": _np(self.last.weight).reshape(self.weight_shape[0], self.ranks[0]),
            "V": _np(self.first.weight).reshape(self.first.weight.shape[0], -1),
        }


class SVDConv(_SVDModule):
    """SVD conv: k x k conv Cin->r carrying stride/padding/dilation -> 1x1 conv r->Cout with the bias."""

    _kinds = _CONVS

    def __init__(self, template: nn.Conv1d | nn.Conv2d, rank: int, bias: bool):
        super().__init__()
        conv = _conv_cls(template)
        kw = {"device": template.weight.device, "dtype": template.weight.dtype}
        g = template.groups
        self.method, self.ranks, self.groups = "svd", (int(rank),), g
        self.weight_shape = tuple(template.weight.shape)
        self.first = conv(
            template.in_channels, g * rank, template.kernel_size, stride=template.stride, padding=template.padding,
            dilation=template.dilation, groups=g, bias=False, padding_mode=template.padding_mode, **kw,
        )
        self.last = conv(g * rank, template.out_channels, 1, groups=g, bias=bias, **kw)

    @classmethod
    def from_conv(cls, conv: nn.Conv1d | nn.Conv2d, method: str = "svd", ranks=None) -> "SVDConv":
        if method != "svd":
            raise ValueError(f"SVDConv takes method 'svd', got {method!r}")
        if ranks is None:
            raise ValueError("SVDConv.from_conv needs a rank")
        _check_template(conv, _CONVS, "SVDConv.from_conv")
        return cls.from_arrays(conv, "svd", decompose("svd", _np(conv.weight), ranks, groups=conv.groups))


class SVDLinear(_SVDModule):
    """SVD linear: Linear(in, r, bias=False) -> Linear(r, out) with the bias."""

    _kinds = (nn.Linear,)

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


def _check_keys(method: str, arrays: dict) -> None:
    missing = [k for k in FACTOR_KEYS[method] if k not in arrays]
    if missing:
        raise ValueError(f"{method} factors miss {missing}")


def _svd_rank(weight_shape, arrays: dict, groups: int = 1) -> int:
    """Per-group rank of SVD arrays, checked against the dense weight (Cout, Cin/g[, k..]):
    U (out, r[,1..]), V (g*r, in/g[*k] | in/g, k..)."""
    u, v = np.asarray(arrays["U"]), np.asarray(arrays["V"])
    out = weight_shape[0]
    per_row = math.prod(weight_shape[1:])
    rows = v.shape[0] if v.ndim else 0
    r = rows // groups
    if (u.ndim < 2 or u.shape[0] != out or math.prod(u.shape[1:]) != r or rows != groups * r
            or v.size != rows * per_row or r == 0):
        raise ValueError(f"svd factors U {u.shape}, V {v.shape} do not fit weight shape {tuple(weight_shape)}")
    return r


@torch.no_grad()
def _load(m: FactorizedModule, arrays: dict, bias) -> None:
    for key in ("first", "core", "last"):
        if key in arrays and hasattr(m, key):
            leaf = getattr(m, key)
            leaf.weight.copy_(_to_param(arrays[key], tuple(leaf.weight.shape), leaf.weight, f"{m.method} {key}"))
    if bias is not None:
        b = m.last.bias
        b.copy_(_to_param(bias.cpu().numpy() if torch.is_tensor(bias) else bias, tuple(b.shape), b, "bias"))


def factorize_module(module: nn.Module, method: str, ranks) -> FactorizedModule:
    """A factorized replacement for a Conv1d / Conv2d / Linear, decomposed from its current weights."""
    _check_template(module, DENSE_TYPES, "factorize_module")
    if isinstance(module, nn.Linear):
        if method != "svd":
            raise ValueError(f"a Linear layer is factorized by svd, not {method!r}")
        return SVDLinear.from_linear(module, ranks)
    if method == "svd":
        return SVDConv.from_conv(module, "svd", ranks)
    return LowRankConv.from_conv(module, method, ranks)


def module_from_arrays(template: nn.Module, method: str, arrays: dict) -> FactorizedModule:
    """A factorized replacement for ``template`` built from factor arrays (the plan contract)."""
    _check_template(template, DENSE_TYPES, "module_from_arrays")
    if isinstance(template, nn.Linear):
        return SVDLinear.from_arrays(template, method, arrays)
    if method == "svd":
        return SVDConv.from_arrays(template, method, arrays)
    if method in ("tt", "cp"):
        return LowRankConv.from_arrays(template, method, arrays)
    raise ValueError(f"unknown method {method!r}")


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


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def factorize_(
    model: nn.Module,
    plan: RankPlan,
    factors: Factors | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, str]:
    """Swap the plan's layers in ``model`` (in place) for factorized modules; return ``{name: status}``.

    Layers with a factor entry in ``factors`` are built from those arrays,
    the others are decomposed from their current weights. ``factors.dense``
    (updated dense parameters, by torch parameter name) is loaded too.
    Everything is validated and built before the first swap, so a bad plan
    leaves the model untouched. ``progress(name, i, n)`` is called per layer.
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
        if progress is not None:
            progress(name, i, n)
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
        _set_submodule(model, name, built)
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
        geo = m.core if isinstance(m, LowRankConv) else m.first  # the factor that carries the geometry
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
        _set_submodule(model, n, dense_module(fmods[n]))


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


__all__ = [
    "FactorizedModule",
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
