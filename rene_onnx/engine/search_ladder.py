"""Candidate ranks of the multi-stage RENE search (Algorithm 1): presets, windows, refinement.

Pure Python (no torch). A layer's search state is a :class:`Window`: the
original bounds ``[lb, ub]`` (never left: the refined window is CLAMPED to
them), the current window ``[lo, hi]`` and step ``s``. After a stage the
window is refined around ``rbar = argmax p``: ``[rbar - ceil(s/2), rbar +
ceil(s/2)]`` clamped to ``[lb, ub]``, with step ``s // f``. The search stops
for a layer when one candidate is left.

``ub`` never exceeds the layer's break-even rank (``ranks.break_even_rank``):
a candidate above it would make the layer bigger than dense.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: preset -> (lower, upper, step, factor); ``auto`` is computed per layer
PRESETS: dict[str, tuple[int, int, int, int] | None] = {
    "auto": None,
    "paper-cifar": (10, 100, 10, 10),
    "paper-imagenet": (50, 850, 100, 10),
}


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _round_down(x: int, m: int) -> int:
    return (x // m) * m


def ladder(lo: int, hi: int, step: int) -> list[int]:
    """``lo, lo+step, ..`` up to ``hi``, with ``hi`` itself always included."""
    if lo > hi:
        raise ValueError(f"empty rank window [{lo}, {hi}]")
    out = list(range(lo, hi + 1, max(step, 1)))
    if out[-1] != hi:
        out.append(hi)
    return out


@dataclass(frozen=True)
class Window:
    """One layer's candidate window at one stage."""

    lb: int  # original bounds: every later window is clamped to them
    ub: int
    lo: int
    hi: int
    step: int
    factor: int  # step divisor f between stages
    final_step: int  # the finest step (the rank multiple, 1 by default)

    @property
    def candidates(self) -> list[int]:
        return ladder(self.lo, self.hi, self.step)

    def refine(self, rbar: int) -> "Window | None":
        """The next stage's window around ``rbar`` (clamped to ``[lb, ub]``), or None when the layer is done."""
        if not self.lo <= rbar <= self.hi:
            raise ValueError(f"rbar={rbar} lies outside the window [{self.lo}, {self.hi}]")
        if len(self.candidates) <= 1:
            return None
        step = self.step // self.factor
        if step < self.final_step:
            # Algorithm 1 stops when s // f reaches 0; with s not yet at the finest step we
            # take one more stage at the finest step (for the paper presets s // f is then 1).
            step = self.final_step if self.step > self.final_step else 0
        if step == 0:
            return None
        half = math.ceil(self.step / 2)
        m = self.final_step
        lo = _round_up(max(self.lb, rbar - half), m)
        hi = _round_down(min(self.ub, rbar + half), m)
        lo, hi = max(lo, self.lb), min(hi, self.ub)
        if lo >= hi:
            return None
        return Window(self.lb, self.ub, lo, hi, step, self.factor, self.final_step)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("lb", "ub", "lo", "hi", "step", "factor", "final_step")}

    @classmethod
    def from_dict(cls, d: dict) -> "Window":
        return cls(**{k: int(d[k]) for k in ("lb", "ub", "lo", "hi", "step", "factor", "final_step")})


def initial_window(
    preset: str, break_even: int, *, n_candidates: int = 10, factor: int = 10, rank_multiple: int = 1,
    bounds: tuple[int, int, int] | None = None,
) -> Window | None:
    """The first stage's window for a layer whose break-even rank is ``break_even``; None if no rank saves.

    ``bounds=(lower, upper, step)`` overrides the preset. ``auto``: about
    ``n_candidates`` ranks from ``rank_multiple`` (1) up to the break-even rank.
    Paper presets: their fixed ladder, capped at the break-even rank (a layer
    whose break-even rank lies below the preset's lower bound gets the single
    candidate ``break_even``).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (expected one of {', '.join(PRESETS)})")
    m = int(rank_multiple)
    if m < 1:
        raise ValueError(f"rank_multiple must be >= 1, got {rank_multiple}")
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be >= 2, got {n_candidates}")
    if factor < 2:
        raise ValueError(f"factor must be >= 2, got {factor}")
    if break_even <= 0:
        return None
    cap = _round_down(break_even, m) if break_even >= m else break_even
    if bounds is None and PRESETS[preset] is not None:
        lower, upper, step, factor = PRESETS[preset]
    elif bounds is not None:
        lower, upper, step = (int(b) for b in bounds)
        if not 1 <= lower <= upper or step < 1:
            raise ValueError(f"bounds must be (lower, upper, step) with 1 <= lower <= upper and step >= 1, got {bounds}")
    else:
        lower, upper = min(m, cap), cap
        step = max(1, math.ceil((upper - lower) / (n_candidates - 1)))
    lb = min(max(m, _round_up(lower, m)), cap)
    ub = min(_round_down(upper, m) if upper >= m else upper, cap)
    ub = max(ub, lb)
    step = max(m, _round_up(step, m))
    return Window(lb, ub, lb, ub, step, int(factor), m)
