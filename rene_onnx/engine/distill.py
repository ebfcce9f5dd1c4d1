"""Distillation from the original (RENE Eq. 10-11): the per-layer weight / output terms and the output match.

:class:`Distiller` hooks the factorized layers of the student and the same layers of the teacher and
computes ``L_diss = L_weight + L_output`` with the norm ``FinetuneConfig.diss_norm`` chooses;
:func:`output_match_loss` is ``L_kd`` (KL of the softmaxes, MSE, or 1 - cosine per sample). The module
docstring of :mod:`rene_onnx.engine.finetune` has the whole loss.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DISS_NORMS, OUTPUT_LOSSES, FinetuneConfig
from ..errors import ConfigError
from .batches import forward, model_device, split_batch, to_device


def factorized_layers(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that have a ``reconstruct_weight()`` (the factorized layers)."""
    return [n for n, m in model.named_modules() if n and callable(getattr(m, "reconstruct_weight", None))]


def _sq(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    diff = (a - b).float()
    if norm == "mse":
        return diff.pow(2).mean()
    if norm == "relative":
        return diff.pow(2).sum() / a.float().pow(2).sum().clamp_min(1e-12)
    return diff.pow(2).sum()


def distill_points(student: nn.Module, points: Iterable[str]) -> list[str]:
    """The module names of ``student`` that ``points`` name, in model order, each once.

    A point is ``"factorized"`` (every factorized layer), an exact module name, or a glob pattern over the
    module names (``*``, ``?``, ``[...]``; e.g. ``*layer_norm*``: for an ONNX model the modules are named
    after its nodes). A point that names no module is a :class:`~rene_onnx.errors.ConfigError`.
    """
    names = [n for n, _ in student.named_modules() if n]
    factorized = set(factorized_layers(student))
    chosen: set[str] = set()
    for point in points:
        if point == "factorized":
            hit = factorized
        elif point in names:
            hit = {point}
        else:
            hit = {n for n in names if fnmatchcase(n, point)}
        if not hit and point != "factorized":
            raise ConfigError(f"{point!r} names no layer of the model (e.g. {', '.join(names[:3])})",
                              option="distill_layers")
        chosen |= hit
    return [n for n in names if n in chosen]


class Distiller:
    """The distillation terms between a student and its frozen teacher.

    Registers forward hooks on the matching layers of both models (by module
    name: a factorized module replaces the original at the same name) and
    computes ``L_weight`` (from the student's ``reconstruct_weight()``) and
    ``L_output`` (from the last forward pass). Use as a context manager or call
    :meth:`close` to remove the hooks.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        layers: Iterable[str] | None = None,
        norm: str = "relative",
        weight_term: bool = True,
        output_term: bool = True,
    ) -> None:
        if norm not in DISS_NORMS:
            raise ValueError(f"norm must be one of {DISS_NORMS}, got {norm!r}")
        s_mods = dict(student.named_modules())
        t_mods = dict(teacher.named_modules())
        names = distill_points(student, layers) if layers is not None else factorized_layers(student)
        for n in names:
            if n not in s_mods:
                raise ValueError(f"distilled layer {n!r} is not a module of the student")
            if n not in t_mods:
                raise ValueError(f"distilled layer {n!r} has no module of the same name in the teacher")
        self.layers = names
        self.norm = norm
        self.weight_term = weight_term
        self.output_term = output_term
        self._student = {n: s_mods[n] for n in names}
        self._teacher = {n: t_mods[n] for n in names}
        self._weighted = []  # layers whose weight term applies: student reconstructs, teacher has .weight
        for n in names:
            sm, tm = self._student[n], self._teacher[n]
            if callable(getattr(sm, "reconstruct_weight", None)) and isinstance(getattr(tm, "weight", None), torch.Tensor):
                self._weighted.append(n)
        self.s_out: dict[str, torch.Tensor] = {}
        self.t_out: dict[str, torch.Tensor] = {}
        self._hooks = []
        if output_term:
            for n in names:
                self._hooks.append(self._student[n].register_forward_hook(self._hook(self.s_out, n)))
                self._hooks.append(self._teacher[n].register_forward_hook(self._hook(self.t_out, n)))

    @staticmethod
    def _hook(store: dict, name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                store[name] = output

        return hook

    def clear(self) -> None:
        self.s_out.clear()
        self.t_out.clear()

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.clear()

    def __enter__(self) -> "Distiller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def weight_loss(self) -> torch.Tensor | None:
        """``mean_i d(W_i, What_i)`` (or the sum for ``norm="sum"``); None if no layer applies."""
        if not self.weight_term or not self._weighted:
            return None
        terms = []
        for n in self._weighted:
            w_hat = self._student[n].reconstruct_weight()
            w = self._teacher[n].weight.detach()
            if w_hat.shape != w.shape:
                raise ValueError(
                    f"layer {n!r}: reconstructed weight {tuple(w_hat.shape)} does not match the teacher's {tuple(w.shape)}"
                )
            terms.append(_sq(w, w_hat, self.norm))
        return self._reduce(terms)

    def output_loss(self) -> torch.Tensor | None:
        """``mean_i d(O_i(x), D_i(x))`` over the layers seen in the last forward of both models."""
        if not self.output_term:
            return None
        terms = []
        for n in self.layers:
            if n in self.s_out and n in self.t_out:
                o, d = self.t_out[n].detach(), self.s_out[n]
                if o.shape != d.shape:
                    raise ValueError(f"layer {n!r}: student output {tuple(d.shape)} does not match the teacher's {tuple(o.shape)}")
                terms.append(_sq(o, d, self.norm))
        return self._reduce(terms) if terms else None

    def _reduce(self, terms: list[torch.Tensor]) -> torch.Tensor:
        total = torch.stack(terms).sum()
        return total if self.norm == "sum" else total / len(terms)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch."""
    t = temperature
    log_p = F.log_softmax(student_logits.float() / t, dim=-1)
    log_q = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * (t * t)


def output_match_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, kind: str = "kd",
                      temperature: float = 1.0) -> torch.Tensor:
    """The output-matching term: ``kd`` (:func:`kd_loss`), ``mse`` (mean squared error) or ``cosine``
    (mean over samples of ``1 - cos`` of the flattened outputs)."""
    if kind == "kd":
        return kd_loss(student_out, teacher_out, temperature)
    s, t = student_out.float(), teacher_out.detach().float()
    if kind == "mse":
        return (s - t).pow(2).mean()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1, eps=1e-12)).mean()
    raise ValueError(f"output loss must be one of {OUTPUT_LOSSES}, got {kind!r}")


@torch.no_grad()
def distillation_terms(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable,
    config: FinetuneConfig | None = None,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Average ``weight``, ``output`` and ``kd`` terms over ``loader`` (both models in eval mode, no update)."""
    cfg = config or FinetuneConfig()
    device = model_device(student)
    modes = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    sums = {"weight": 0.0, "output": 0.0, "kd": 0.0}
    n = 0
    try:
        with Distiller(student, teacher, cfg.distill_layers, cfg.diss_norm, cfg.weight_term, cfg.output_term) as d:
            w = d.weight_loss()
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                x, _ = split_batch(batch)
                x = to_device(x, device)
                d.clear()
                zt = forward(teacher, x)
                zs = forward(student, x)
                o = d.output_loss()
                sums["output"] += float(o) if o is not None else 0.0
                sums["kd"] += float(output_match_loss(zs, zt, cfg.output_loss, cfg.temperature))
                n += 1
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["weight"] = float(w) if w is not None else 0.0
    return out


# --------------------------------------------------------------------------- the loop
