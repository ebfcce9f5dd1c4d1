"""Data-free inputs for the RENE search: what a layer's truncation does to the output, measured without data.

The data-free objective ``L_d`` weighs a unit of relative weight error the same in every layer. It
is not the same harm: the classifier of an ImageNet net, or the last 1x1 conv before it, moves the
logits far more per unit of weight error than a wide middle layer. With calibration data the
search measures this (``importance="measured"``, :func:`.search_data.measured_importance`); data-free,
this module supplies the inputs to measure it on, so the data-free search can run the SAME
measurement on them (``SearchConfig.sensitivity="synthetic"``):

- ``zeroq-bn`` (the model has BatchNorm layers with running statistics): ZeroQ-style synthetic
  inputs (Cai et al., 2020). A batch starts as standard normal noise of the example input's shape
  and is optimized (Adam) so that, at the input of every BatchNorm layer, the batch's per-channel
  mean and standard deviation match the layer's running mean and ``sqrt(running_var)``
  (:func:`bn_synthetic_inputs`; the loss is the sum over layers of the relative L2 distances of
  means and of standard deviations). The model runs in eval mode; only the inputs are trained.
  What this is: inputs that reproduce the first- and second-order per-channel statistics the
  trained network saw, layer by layer -- not images, and nothing about their labels.
- ``gaussian`` (no BatchNorm statistics, e.g. an ONNX import whose BatchNorm was folded into the
  convs, or a transformer): standard normal inputs of the example's shape (for an image model,
  what ImageNet-normalized pixels are on average, per channel, but with none of natural images'
  spatial structure); integer inputs (token ids) are not synthesized (:func:`synthetic_inputs`
  says why). A weaker estimate: the report names the method.

The sensitivity itself is then the existing measured importance: per layer, the increase of the
relative squared error of the model output to the original's (``objective="distill"``) when that
layer ALONE is truncated to the rank keeping half its parameters, per unit of its relative weight
(or whitened output) error. The search's own ``L_d`` and its stages stay data-free; only the
budget's per-layer weights (and, with ``whiten``, the SVD layers' metric) come from these inputs.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .batches import forward, model_device, n_samples
from .search_data import cached_batches, distill_error, measured_curves, output_kl

_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

from ..config import SENSITIVITY  # noqa: F401 (re-exported)
#: Adam steps of the ZeroQ-style synthesis per batch
SYNTHETIC_STEPS = 200
#: the fractions of its parameters each layer keeps where its sensitivity is measured
CURVE_FRACTIONS = (0.9, 0.7, 0.5, 0.3)
#: what is measured on the synthetic inputs: the output's divergence from the original's
MEASURES = {"kl": output_kl, "relative-mse": distill_error}
MEASURE = "kl"


@dataclass
class Synthetic:
    """Synthetic inputs and how they were made (``info`` goes into the search result / report)."""

    inputs: list[torch.Tensor]  # batches of inputs, on the model's device
    info: dict[str, Any] = field(default_factory=dict)


def bn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's BatchNorm layers that carry running statistics (name, module), in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, _BNS) and m.track_running_stats and m.running_mean is not None
            and m.running_var is not None]


def _batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) standard deviation of a BatchNorm input ``(N, C, ...)``."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dim=dims)
    var = x.var(dim=dims, unbiased=False)
    return mean, (var + 1e-8).sqrt()


def bn_loss_fn(model: nn.Module):
    """``(hooks, loss)``: forward pre-hooks on the BatchNorm layers and a function returning the summed
    statistics mismatch of the last forward pass (see the module docstring), and the per-layer terms."""
    bns = bn_layers(model)
    seen: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(module, args):
            seen[name] = _batch_stats(args[0].float())
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in bns]

    def loss() -> tuple[torch.Tensor, dict[str, float]]:
        terms = {}
        total = 0.0
        for n, m in bns:
            if n not in seen:
                continue
            mean, std = seen[n]
            rm, rs = m.running_mean.float(), (m.running_var.float() + m.eps).sqrt()
            t = (mean - rm).norm() / (rm.norm() + rs.norm()) + (std - rs).norm() / rs.norm().clamp_min(1e-12)
            terms[n] = float(t.detach())
            total = total + t
        seen.clear()
        return total, terms

    return handles, loss


def bn_synthetic_inputs(model: nn.Module, example: torch.Tensor, samples: int = 32, steps: int = 200,
                        lr: float = 0.1, seed: int = 0, batch_size: int | None = None) -> Synthetic:
    """ZeroQ-style inputs: ``samples`` inputs shaped like ``example`` (batch dim replaced) whose BatchNorm
    input statistics match the running ones (the module docstring). Optimized in batches of
    ``batch_size`` (default: all at once) for ``steps`` Adam steps each; the model is not modified."""
    if not bn_layers(model):
        raise ValueError("the model has no BatchNorm layer with running statistics")
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    bs = int(batch_size or samples)
    flags = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    handles, loss_fn = bn_loss_fn(model)
    out, first, last = [], [], []
    t0 = time.perf_counter()
    model.eval()
    try:
        for p in grads:
            p.requires_grad_(False)
        for start in range(0, samples, bs):
            n = min(bs, samples - start)
            x = torch.randn((n, *example.shape[1:]), generator=gen).to(device=device, dtype=example.dtype)
            x.requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * 0.01)
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                forward(model, x)
                loss, terms = loss_fn()
                if step == 0:
                    first.append(float(loss.detach()))
                loss.backward()
                opt.step()
                sched.step()
            with torch.no_grad():
                forward(model, x)
                loss, terms = loss_fn()
            last.append(float(loss))
            out.append(x.detach())
    finally:
        for h in handles:
            h.remove()
        for p, g in grads.items():
            p.requires_grad_(g)
        for m, flag in flags.items():
            m.training = flag
    n_bn = len(bn_layers(model))
    info = {"method": "zeroq-bn", "samples": int(samples), "steps": int(steps), "lr": lr, "seed": int(seed),
            "bn_layers": n_bn, "bn_mismatch": [round(sum(first) / len(first) / n_bn, 4),
                                               round(sum(last) / len(last) / n_bn, 4)],
            "seconds": round(time.perf_counter() - t0, 1)}
    return Synthetic(out, info)


def gaussian_inputs(example: torch.Tensor, samples: int = 32, seed: int = 0, batch_size: int | None = None,
                    device: torch.device | str = "cpu") -> Synthetic:
    """Standard normal inputs shaped like ``example`` (batch dimension replaced by ``batch_size``)."""
    gen = torch.Generator().manual_seed(seed)
    bs = int(batch_size or samples)
    out = [torch.randn((min(bs, samples - s), *example.shape[1:]), generator=gen).to(device=device, dtype=example.dtype)
           for s in range(0, samples, bs)]
    return Synthetic(out, {"method": "gaussian", "samples": int(samples), "seed": int(seed)})


def synthetic_inputs(model: nn.Module, example: Any, samples: int = 32, steps: int = 200, seed: int = 0,
                     batch_size: int | None = None) -> Synthetic:
    """Synthetic inputs for the data-free sensitivity: ZeroQ-style when the model has BatchNorm statistics,
    else Gaussian (see the module docstring); ``ValueError`` for inputs that cannot be synthesized
    (several inputs, or integer ones such as token ids)."""
    if not isinstance(example, torch.Tensor):
        raise ValueError("synthetic inputs need a single tensor input (the model takes several)")
    if not example.is_floating_point():
        raise ValueError(f"synthetic inputs need a float input, the model takes {example.dtype} (token ids?)")
    if n_samples(example) < 1 or example.dim() < 2:
        raise ValueError(f"synthetic inputs need a batched example input, got shape {tuple(example.shape)}")
    bs = runnable_batch_size(model, example, batch_size or samples)
    if bn_layers(model):
        syn = bn_synthetic_inputs(model, example, samples, steps, seed=seed, batch_size=bs)
    else:
        syn = gaussian_inputs(example, samples, seed, bs, model_device(model))
        syn.info["why"] = "no BatchNorm running statistics in the model"
    return syn


def synthetic_probe(model: nn.Module, example: Any, cfg) -> tuple[list, dict[str, Any]]:
    """The data-free search's probe: ``cfg.max_calib_batches`` synthetic batches of ``cfg.calib_batch_size``
    inputs (:func:`synthetic_inputs`), each cached as ``(x, None, original output)`` for the measured
    importance with ``objective="distill"`` (:func:`.search_data.measured_importance`), and what was used.

    Inputs that cannot be synthesized give ``([], {"method": "none", "why": ...})``: the budget then
    falls back to the implied weights.
    """
    samples = int(cfg.calib_batch_size) * int(cfg.max_calib_batches)
    try:
        syn = synthetic_inputs(model, example, samples, SYNTHETIC_STEPS, cfg.seed, cfg.calib_batch_size)
    except ValueError as e:
        return [], {"method": "none", "why": str(e)}
    distill = dataclasses.replace(cfg, objective="distill")
    batches = cached_batches(model, [(x, None) for x in syn.inputs], distill)
    return batches, syn.info


def probe_curves(model: nn.Module, params: dict, layers: list, probe: list) -> tuple[dict, dict[str, Any]]:
    """Each layer's measured sensitivity curve on the probe (:func:`.search_data.measured_curves` at
    :data:`CURVE_FRACTIONS`, measure :data:`MEASURE`) and a compact record of it."""
    curves = measured_curves(model, params, layers, probe, CURVE_FRACTIONS, MEASURES[MEASURE])
    record = {"measure": MEASURE, "fractions": list(CURVE_FRACTIONS),
              "curves": {n: [[float(f"{e:.4g}") for e in c[0]], [float(f"{d:.4g}") for d in c[1]]]
                         for n, c in curves.items()}}
    return curves, record


def describe(record: dict[str, Any], subject: str | None = None) -> str:
    """One honest sentence on what the per-layer sensitivity was estimated from (``record``: the
    ``synthetic_probe`` / ``probe_curves`` record). ``subject`` names what used it (e.g. "--target-latency");
    by default the data-free search's budget."""
    method, head = record.get("method", "none"), subject or "data-free sensitivity"
    if method == "zeroq-bn":
        mis = record.get("bn_mismatch") or [None, None]
        return (f"{head}: each layer's output effect measured on {record.get('samples')} synthetic "
                f"inputs fitted to the model's {record.get('bn_layers')} BatchNorm statistics (ZeroQ-style; "
                f"mismatch {mis[0]} -> {mis[1]}); not real data, so accuracy is unknown")
    if method == "gaussian":
        return (f"{head}: each layer's output effect measured on {record.get('samples')} Gaussian "
                f"random inputs ({record.get('why', 'no BatchNorm statistics')}): a weak estimate, accuracy unknown")
    why = f" ({record['why']})" if record.get("why") else ""
    return f"{subject or 'data-free budget'} weighs weight error only, no output sensitivity{why}"


@torch.no_grad()
def runnable_batch_size(model: nn.Module, example: torch.Tensor, want: int) -> int:
    """``want`` if the model runs on a batch of that size, else the example's batch size (a graph
    imported with a fixed batch dimension runs only that one)."""
    fixed = n_samples(example)
    if want == fixed:
        return want
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        x = torch.zeros((want, *example.shape[1:]), dtype=example.dtype, device=model_device(model))
        out = forward(model, x)
        return want if out.shape[0] == want else fixed
    except Exception:  # noqa: BLE001 - any failure means: the graph does not take another batch size
        return fixed
    finally:
        for m, flag in flags.items():
            m.training = flag


__all__ = ["SENSITIVITY", "SYNTHETIC_STEPS", "Synthetic", "bn_layers", "bn_synthetic_inputs", "gaussian_inputs",
           "synthetic_inputs", "synthetic_probe", "describe", "probe_curves", "CURVE_FRACTIONS", "MEASURES"]


@torch.no_grad()
def candidate_divergence(model: nn.Module, candidates: dict[str, list], inputs: list) -> tuple[dict[str, list[float]], str]:
    """Each layer's measured output effect at each of its candidate weights: ``({module name: [divergence per
    candidate]}, measure name)``.

    ``candidates[name]``: the layer's candidate weights (numpy arrays, e.g. its truncations at several ranks);
    with that layer ALONE given one of them, the model runs on every batch of ``inputs`` and its output is
    compared with the original's: :func:`.search_data.output_kl` for a ``(N, classes)`` output (a
    classifier's logits), :func:`.search_data.distill_error` (relative squared error) otherwise. Summing
    these over layers is the usual additive estimate of a joint truncation's effect (HAWQ- / ZeroQ-style
    mixed-precision budgets make the same one). The model's weights are restored.
    """
    from rene_onnx.progress import emit

    modules = dict(model.named_modules())
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        refs = [forward(model, x) for x in inputs]
        kind = "kl" if refs[0].dim() == 2 and refs[0].shape[-1] > 1 else "relative-mse"
        measure = MEASURES[kind]
        out: dict[str, list[float]] = {}
        for i, (name, weights) in enumerate(candidates.items()):
            emit("sensitivity", i + 1, len(candidates), name)
            w = modules[name].weight
            keep = w.detach().clone()
            try:
                out[name] = []
                for cand in weights:
                    w.copy_(torch.as_tensor(cand).reshape(keep.shape).to(device=keep.device, dtype=keep.dtype))
                    d = sum(float(measure(forward(model, x), ref)) for x, ref in zip(inputs, refs))
                    out[name].append(d / len(inputs))
            finally:
                w.copy_(keep)
        return out, kind
    finally:
        for m, flag in flags.items():
            m.training = flag
