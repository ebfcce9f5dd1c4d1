"""Fine-tune a factorized network with distillation from the original (RENE Eq. 10-11).

The loss is::

    L_f = L_ce + lambda_diss * L_diss + logit_kd * L_kd
    L_diss = L_weight + L_output
    L_weight = mean_i  d(W_i, What_i)            W_i: the teacher's (original) layer weight,
                                                 What_i: the student's ``reconstruct_weight()``
    L_output = mean_i  d(O_i(x), D_i(x))         O_i / D_i: outputs of layer i in teacher / student
    L_kd = T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

``i`` runs over the factorized layers of the student (modules that have a
``reconstruct_weight()`` method); the teacher's module of the same name is the
original layer. ``d`` is chosen by ``FinetuneConfig.diss_norm``:

- ``"relative"`` (default): ``||A - B||_F^2 / ||A||_F^2`` per layer (A the
  teacher's weight / output over the batch), averaged over layers. Scale free:
  every layer counts the same whatever its size or activation range, and
  adding layers does not change the scale that ``lambda_diss`` multiplies (a
  term near 1 means the layer is as wrong as predicting zeros).
- ``"mse"``: mean squared error per element, averaged over layers. Its output
  term follows the activations' scale (19.5 vs a cross-entropy of 2 on the
  damaged digits CNN of the tests), which can swamp ``L_ce`` at lambda = 0.5.
- ``"sum"``: the paper's literal sums of squared Frobenius norms (over layers and
  over the samples of the batch); its scale depends on the model.

Batches without labels (a bare tensor, a 1-tuple, or ``use_labels=False``)
drop ``L_ce``: the student then distills the teacher's logits (``L_kd`` with
weight ``logit_kd``, or 1.0 when ``logit_kd`` is 0) and layer outputs.

With ``WORLD_SIZE > 1`` in the environment (``torch.distributed.run``) the
process group is initialized (gloo on CPU, nccl on GPU), the student is wrapped
in ``DistributedDataParallel``, the loaders are sharded, and metrics are reduced
over ranks; see :mod:`rene_onnx.engine.distributed` for the command-line entry.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FinetuneConfig  # noqa: F401 (re-exported: its home is rene_onnx.config)
from . import ddp as dist_utils
from ..progress import emit
from .batches import forward, model_device, split_batch, to_device
from .distill import Distiller, distillation_terms, factorized_layers, kd_loss, output_match_loss  # noqa: F401



def _progress(epoch: int, step: int, total: int | None, info: dict) -> None:
    """A ``finetune`` event (:func:`rene_onnx.progress.emit`): ``step`` is the global optimizer step (1-based),
    ``total`` the planned steps (None when the loader has no length), ``epoch`` 1-based (0: before training);
    ``info`` holds the loss terms (phase "train") or the validation metric (phase "val"). Rank 0 only."""
    emit("finetune", step=step, total=total, message=f"epoch {epoch}", **info)

@dataclass
class FinetuneResult:
    """What :func:`finetune` did. Accuracies are fractions in [0, 1].

    ``best_val_metric`` is the selected checkpoint's value of ``metric``
    (``FinetuneConfig.select_metric``) on the validation split (None without a
    ``val_loader``); ``best_val_top1`` / ``initial_val_top1`` repeat it when
    the metric is ``top1`` (else None). ``best_epoch`` is 0 when the un-tuned
    student won. ``history`` has one dict per epoch: ``epoch, steps, loss, ce,
    kd, diss, diss_weight, diss_output, labeled, lr, val_metric, val_top1, seconds``.
    """

    best_val_top1: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    epochs_run: int = 0
    best_epoch: int = 0
    initial_val_top1: float | None = None
    steps: int = 0
    selected_on: str = "last"  # "calib" (val_loader) or "last"
    layers: list[str] = field(default_factory=list)  # the distilled layers
    world_size: int = 1
    stopped: str = ""  # why training stopped early (e.g. a non-finite loss), "" otherwise
    metric: str = "top1"
    best_val_metric: float | None = None
    initial_val_metric: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- batches / evaluation


@torch.no_grad()
def evaluate_counts(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    teacher: nn.Module | None = None,
    max_batches: int | None = None,
) -> tuple[int, int]:
    """``(correct, total)`` top-1 counts of ``model`` on ``loader`` (see :func:`evaluate`)."""
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    t_training = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.eval()
    correct = total = 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = split_batch(batch)
            x = to_device(x, device)
            pred = forward(model, x).argmax(dim=-1)
            if y is None:
                if teacher is None:
                    raise ValueError("evaluate: the batch has no labels; pass a teacher to score agreement with it")
                y = forward(teacher, x).argmax(dim=-1)
            y = y.to(pred.device)
            if y.shape != pred.shape:
                raise ValueError(f"evaluate: labels of shape {tuple(y.shape)} do not match predictions {tuple(pred.shape)}")
            correct += int((pred == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
        if teacher is not None:
            teacher.train(t_training)
    return correct, total


@torch.no_grad()
def output_agreement_sums(
    model: nn.Module,
    teacher: nn.Module,
    loader: Iterable,
    metric: str = "cosine",
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> tuple[float, int]:
    """``(sum, samples)`` of a per-sample agreement of ``model``'s outputs with ``teacher``'s on ``loader``.

    ``metric``: ``"cosine"`` (cosine similarity of the flattened outputs) or
    ``"mse"`` (minus their mean squared error, so larger is better). Labels are
    ignored; both models' modes are restored.
    """
    if metric not in ("cosine", "mse"):
        raise ValueError(f"metric must be 'cosine' or 'mse', got {metric!r}")
    device = torch.device(device) if device is not None else model_device(model)
    modes = (model.training, teacher.training)
    model.eval()
    teacher.eval()
    total, n = 0.0, 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, _ = split_batch(batch, use_labels=False)
            x = to_device(x, device)
            s, t = forward(model, x).float().flatten(1), forward(teacher, x).float().flatten(1)
            if metric == "cosine":
                v = F.cosine_similarity(s, t, dim=1, eps=1e-12)
            else:
                v = -(s - t).pow(2).mean(1)
            total += float(v.sum())
            n += int(v.numel())
    finally:
        model.train(modes[0])
        teacher.train(modes[1])
    return total, n


def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    teacher: nn.Module | None = None,
    max_batches: int | None = None,
) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of ``model`` on ``loader``.

    Labeled batches are scored against their labels; unlabeled ones against the
    ``teacher``'s top-1 (agreement), which must then be given. The model's
    train/eval mode is restored afterwards. Returns 0.0 for an empty loader.
    """
    correct, total = evaluate_counts(model, loader, device, teacher, max_batches)
    return correct / total if total else 0.0


# --------------------------------------------------------------------------- distillation


def _make_loader(data: Any, cfg: FinetuneConfig, shuffle: bool) -> Iterable:
    """A ``Dataset`` becomes a ``DataLoader`` with ``cfg.batch_size``; loaders / iterables pass through."""
    if isinstance(data, torch.utils.data.DataLoader) or data is None:
        return data
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        g = torch.Generator().manual_seed(cfg.seed)
        return torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=shuffle, generator=g)
    if not hasattr(data, "__iter__"):
        raise ValueError(f"expected a DataLoader, Dataset or iterable of batches, got {type(data).__name__}")
    return data


def _resolve_device(cfg: FinetuneConfig, info: dist_utils.DistInfo) -> torch.device:
    if info.world_size > 1 and info.device is not None:
        return info.device
    if cfg.device is not None:
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _make_optimizer(params: list[nn.Parameter], cfg: FinetuneConfig) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("the student has no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _len_or_none(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def finetune(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: Any,
    val_loader: Any = None,
    config: FinetuneConfig | None = None,
) -> FinetuneResult:
    """Fine-tune ``student`` (in place) with ``L_ce + lambda * L_diss`` against the frozen ``teacher``.

    ``train_loader`` / ``val_loader``: DataLoaders, Datasets or iterables of
    batches (``(x, y)``, ``(x,)``, a tensor, or a dict). ``val_loader`` must be
    a validation / calibration split, never the test split: the best epoch on
    it is loaded into the student at the end (``config.select_on``). Both
    models are moved to ``config.device``; the teacher is put in eval mode and
    never updated (its mode is restored at the end). Under ``torch.distributed.run``
    with ``WORLD_SIZE > 1`` it runs data-parallel (see the module docstring);
    every rank returns the same result and holds the same final weights.
    """
    cfg = config or FinetuneConfig()
    if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
        raise ValueError("student and teacher must be torch.nn.Module instances")
    if student is teacher:
        raise ValueError("student and teacher must be different modules (deep-copy the original to get a teacher)")
    t0 = time.perf_counter()
    info = dist_utils.init_distributed(cfg.device)
    device = _resolve_device(cfg, info)
    torch.manual_seed(cfg.seed)

    train = _make_loader(train_loader, cfg, shuffle=True)
    val = _make_loader(val_loader, cfg, shuffle=False)
    if train is None:
        raise ValueError("finetune needs a train_loader")
    if info.world_size > 1:
        train = dist_utils.shard_loader(train, info, shuffle=True, seed=cfg.seed)
        val = dist_utils.shard_loader(val, info, shuffle=False, seed=cfg.seed, pad=False) if val is not None else None

    student.to(device)
    teacher.to(device)
    teacher_mode, student_mode = teacher.training, student.training
    teacher.eval()

    distiller = Distiller(student, teacher, cfg.distill_layers, cfg.diss_norm, cfg.weight_term, cfg.output_term)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = _make_optimizer(params, cfg)
    model: nn.Module = student
    if info.world_size > 1:
        model = dist_utils.wrap_ddp(student, info, find_unused_parameters=cfg.find_unused_parameters)

    per_epoch = _len_or_none(train)
    planned = per_epoch * cfg.epochs if per_epoch is not None else None
    if cfg.max_steps is not None:
        planned = min(planned, cfg.max_steps) if planned is not None else cfg.max_steps
    sched = None
    if cfg.schedule == "cosine" and planned:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, planned) / planned)))

    def validate() -> float | None:
        if val is None:
            return None
        dist_utils.sync_buffers(student, info)
        if cfg.select_metric == "top1":
            c, n = evaluate_counts(student, val, device, teacher=teacher)
        else:
            c, n = output_agreement_sums(student, teacher, val, cfg.select_metric, device)
        c, n = dist_utils.all_reduce_sum([c, n], info, device)
        return c / n if n else 0.0

    def val_info(value: float) -> dict[str, Any]:
        out = {"phase": "val", "metric": cfg.select_metric, "val_metric": value}
        if cfg.select_metric == "top1":
            out["val_top1"] = value
        return out

    top1 = cfg.select_metric == "top1"
    result = FinetuneResult(best_val_top1=None, layers=list(distiller.layers), world_size=info.world_size,
                            metric=cfg.select_metric)
    use_val = cfg.select_on == "calib" and val is not None
    result.selected_on = "calib" if use_val else "last"
    best_state = _snapshot(student)  # the un-tuned student: kept if nothing better (or training diverges)
    best = -math.inf
    if use_val and cfg.eval_initial:
        best = result.initial_val_metric = result.best_val_metric = validate()
        if top1:
            result.initial_val_top1 = result.best_val_top1 = best
        if info.rank == 0:
            _progress(0, 0, planned, val_info(best))

    step = 0
    student.train()
    try:
        for epoch in range(1, cfg.epochs + 1):
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
            te = time.perf_counter()
            dist_utils.set_epoch(train, epoch)
            sums = torch.zeros(6, device=device, dtype=torch.float64)  # loss, ce, kd, w, o, labeled-batches
            nb = 0
            for batch in train:
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
                x, y = split_batch(batch, cfg.use_labels)
                x = to_device(x, device)
                distiller.clear()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                    with torch.no_grad():
                        zt = forward(teacher, x)
                    zs = forward(model, x)
                loss, terms = _loss(zs, zt, y, distiller, cfg, device)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                if sched is not None:
                    sched.step()
                step += 1
                nb += 1
                sums += terms
                if info.rank == 0 and (step % cfg.log_every == 0 or step == planned):
                    t = terms.tolist()
                    _progress(epoch, step, planned, {"phase": "train", "loss": t[0], "ce": t[1], "kd": t[2],
                                                    "diss_weight": t[3], "diss_output": t[4], "lr": opt.param_groups[0]["lr"]})
            distiller.clear()
            totals = dist_utils.all_reduce_sum(sums.tolist() + [nb], info, device)
            nb_all = max(int(totals[6]), 1)
            rec: dict[str, Any] = {
                "epoch": epoch,
                "steps": step,
                "loss": totals[0] / nb_all,
                "ce": totals[1] / nb_all,
                "kd": totals[2] / nb_all,
                "diss_weight": totals[3] / nb_all,
                "diss_output": totals[4] / nb_all,
                "labeled": totals[5] / nb_all,
                "lr": opt.param_groups[0]["lr"],
            }
            rec["diss"] = rec["diss_weight"] + rec["diss_output"]
            finite = math.isfinite(rec["loss"])  # the same on every rank (reduced)
            rec["val_metric"] = validate() if finite else None
            rec["val_top1"] = rec["val_metric"] if top1 else None
            rec["seconds"] = time.perf_counter() - te
            result.history.append(rec)
            result.epochs_run = epoch
            if not finite:
                result.stopped = f"non-finite loss in epoch {epoch} (lower the lr?); kept epoch {result.best_epoch}"
                break
            if info.rank == 0 and rec["val_metric"] is not None:
                _progress(epoch, step, planned, val_info(rec["val_metric"]))
            if not use_val or rec["val_metric"] > best:
                best = rec["val_metric"] if use_val else best
                best_state = _snapshot(student)
                result.best_epoch = epoch
                result.best_val_metric = rec["val_metric"]
                result.best_val_top1 = rec["val_top1"]
            if nb == 0:
                break
    finally:
        distiller.close()
        teacher.train(teacher_mode)

    student.load_state_dict(best_state)
    dist_utils.sync_buffers(student, info)
    student.train(student_mode)
    result.steps = step
    result.seconds = time.perf_counter() - t0
    return result


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _loss(
    zs: torch.Tensor,
    zt: torch.Tensor,
    y: torch.Tensor | None,
    distiller: Distiller,
    cfg: FinetuneConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's loss and the detached terms ``[loss, ce, kd, w, o, labeled]`` (float64)."""
    zero = zs.new_zeros((), dtype=torch.float32)
    labeled = y is not None
    ce = F.cross_entropy(zs.float(), y.to(device)) if labeled else zero
    kd_w = cfg.logit_kd if (labeled or cfg.logit_kd > 0) else 1.0
    kd = output_match_loss(zs, zt, cfg.output_loss, cfg.temperature) if kd_w > 0 else zero
    w = distiller.weight_loss() if cfg.lambda_diss > 0 else None
    o = distiller.output_loss() if cfg.lambda_diss > 0 else None
    w = w if w is not None else zero
    o = o if o is not None else zero
    loss = ce + kd_w * kd + cfg.lambda_diss * (w + o)
    terms = torch.stack([loss.detach(), ce.detach(), kd.detach(), w.detach(), o.detach(), zero + float(labeled)])
    return loss, terms.to(torch.float64)


__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "Distiller",
    "distillation_terms",
    "evaluate",
    "evaluate_counts",
    "factorized_layers",
    "finetune",
    "kd_loss",
    "output_agreement_sums",
    "output_match_loss",
    "split_batch",
]
