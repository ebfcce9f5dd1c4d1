"""What keeps the RENE search trustworthy and resumable: the NaN guard with learning-rate back-offs, checkpoints.

A non-finite loss or gradient restores the last good state and multiplies the learning rates by
``backoff`` (:class:`Guard`; at most ``max_backoffs`` times, then :class:`SearchError`).
``checkpoint_dir`` receives a plan after every stage (:func:`checkpoint`); :func:`resume` restores
the layers' windows and the stage records when the model and config fingerprints match.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..decompose import ranks as R
from ..errors import UserError, first_line
from ..decompose.ranks import LayerShape
from ..plan import LayerPlan, RankPlan
from .search_ladder import Window


class SearchError(RuntimeError):
    """The search could not produce a trustworthy plan (e.g. the losses stayed NaN / inf after back-offs)."""


@dataclass
class State:
    """What a checkpoint restores besides the layers' windows."""

    stages: list[dict] = field(default_factory=list)
    backoffs: int = 0


class Guard:
    """NaN / inf guard: snapshots the last good state; on a bad step restores it and backs off the lrs."""

    def __init__(self, tensors: list[torch.Tensor], optimizers: list[torch.optim.Optimizer],
                 max_backoffs: int, factor: float, every: int, backoffs: int = 0):
        self.tensors, self.optimizers = tensors, optimizers
        self.max_backoffs, self.factor, self.every = max_backoffs, factor, every
        self.backoffs, self._good = backoffs, 0
        self.snapshot()

    def snapshot(self) -> None:
        self._data = [t.detach().clone() for t in self.tensors]
        self._opt = [copy.deepcopy(o.state_dict()) for o in self.optimizers]

    def check(self, *values: torch.Tensor | float) -> bool:
        """True if every value is finite (and maybe snapshot); else restore, back off and return False."""
        if all(bool(torch.isfinite(torch.as_tensor(v)).all()) for v in values):
            self._good += 1
            if self._good % self.every == 0:
                self.snapshot()
            return True
        if self.backoffs >= self.max_backoffs:
            raise SearchError(
                f"the search hit a non-finite loss or gradient and {self.backoffs} learning-rate back-offs "
                f"did not cure it; lower lr / alpha_lr (now {[g['lr'] for o in self.optimizers for g in o.param_groups]})"
            )
        self.backoffs += 1
        with torch.no_grad():
            for t, d in zip(self.tensors, self._data):
                t.copy_(d)
                t.grad = None
        for o, s in zip(self.optimizers, self._opt):
            o.load_state_dict(s)
            for g in o.param_groups:
                g["lr"] *= self.factor
        self._opt = [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        return False


def model_fingerprint(shapes: dict[str, LayerShape], layers: list) -> str:
    d = [(n, asdict(s)) for n, s in shapes.items()] + [(l.name, l.method, l.first.to_dict()) for l in layers]
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint(path: Path, layers: list, state: State, fp: dict, plan: RankPlan) -> None:
    snap = RankPlan(dict(plan.layers), {"search_checkpoint": {
        "fingerprint": fp, "backoffs": state.backoffs, "stages": state.stages,
        "layers": {l.name: {"window": l.window.to_dict(), "rbar": l.rbar, "candidates": list(l.candidates),
                            "p": list(l.p), "p_moved": l.p_moved} for l in layers},
    }})
    for l in layers:
        if l.rbar:
            snap.add(LayerPlan(l.name, l.method, R.check_ranks(l.method, l.shape, l.rbar), "search in progress"))
    snap.save(path)


def resume(ckpt: Path, fp: dict, layers: list) -> State:
    def stage_no(p: Path) -> int:
        return int(p.stem[5:]) if p.stem[5:].isdigit() else -1

    files = sorted(ckpt.glob("stage*.json"), key=stage_no)
    if not files:
        return State()
    last = files[-1]
    start_over = {"refs": {"fresh": True}, "option": "checkpoint_dir"}
    try:
        state = RankPlan.load(last).meta.get("search_checkpoint")
        if not isinstance(state, dict) or "fingerprint" not in state:
            raise UserError(f"{last} is not a search checkpoint (no fingerprint): remove it, or start over with "
                            f"{{fresh}}", **start_over)
        if state["fingerprint"] != fp:
            raise UserError(f"{ckpt} holds a search of another model or config: use another folder, or start over "
                            f"with {{fresh}}", **start_over)
        for l in layers:
            s = state["layers"][l.name]
            l.window = Window.from_dict(s["window"])
            l.rbar, l.candidates, l.p, l.p_moved = int(s["rbar"]), tuple(s["candidates"]), tuple(s["p"]), s["p_moved"]
    except UserError as e:
        if e.refs:
            raise
        why = e.message.removeprefix(f"{last}: ")
        raise UserError(f"{last} is not a readable search checkpoint ({why}): remove it, or start over with "
                        f"{{fresh}}", **start_over) from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{last} is a damaged search checkpoint ({type(e).__name__}: {first_line(e)}): remove it, or "
                        f"start over with {{fresh}}", **start_over) from None
    return State(list(state["stages"]), int(state["backoffs"]))
