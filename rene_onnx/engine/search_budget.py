"""Budget-constrained final rank choice for the RENE search (numpy only).

The search's ``argmax p`` says which rank each layer *prefers* under the
rank loss; it does not hit a parameter / MAC budget. To land on a budget we
solve, over every layer's admissible ranks (its original window ``[lb, ub]``
in steps of the rank multiple, plus "stay dense"),

    minimize  sum_i w_i e_i(r_i)   subject to   sum_i cost_i(r_i) <= budget

where ``e_i`` is the layer's normalized truncation error curve
(``||W - W_r||^2 / ||W||^2`` from the same SVD / HOSVD / CP-ALS that made the
candidates) and the importance ``w_i`` is *implied by the search*: it is the
weight under which the searched rank ``rbar_i`` is a Lagrange-optimal point,
``w_i = cost_i'(rbar_i) / -e_i'(rbar_i)`` (secant slopes over +-10% of the
layer's admissible ranks), normalized by the median and clipped to
[1/100, 100]. A rank on the edge of its window only bounds that weight, so
such a layer gets the neutral weight 1 (with every layer on an edge, e.g. when
the data-free search keeps the largest ranks, this is the plain error-curve
allocation). So a layer whose search stopped early on a steep part of its
error curve keeps its relatively low rank, and a budget equal to the searched
plan's own cost returns (nearly) the searched plan. The problem is solved by bisection on the Lagrange multiplier, then a
greedy fill (best error drop per unit cost) up to the budget, which lands
within one rank step of it. Two budgets (params and MACs) are handled with a
cost normalized by each budget, and both must hold.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


@dataclass
class LayerOptions:
    """One layer's admissible choices. ``ranks`` ascending; index ``len(ranks)`` means dense."""

    name: str
    ranks: np.ndarray
    err: np.ndarray
    params: np.ndarray
    macs: np.ndarray
    dense_params: int
    dense_macs: int
    pick: int  # the search's rank

    def __post_init__(self) -> None:
        self.ranks = np.asarray(self.ranks, dtype=np.int64)
        self.err = np.asarray(self.err, dtype=np.float64)
        self.params = np.asarray(self.params, dtype=np.float64)
        self.macs = np.asarray(self.macs, dtype=np.float64)
        if not (len(self.ranks) == len(self.err) == len(self.params) == len(self.macs)) or len(self.ranks) == 0:
            raise ValueError(f"layer {self.name!r}: ranks, errors and costs must have the same non-zero length")

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(err, params, macs) over the options, dense appended last."""
        return (
            np.append(self.err, 0.0),
            np.append(self.params, float(self.dense_params)),
            np.append(self.macs, float(self.dense_macs)),
        )


@dataclass
class Allocation:
    choice: dict[str, int | None]  # rank, or None for dense
    params: float  # searched layers only
    macs: float


def implied_weights(options: list[LayerOptions], use_macs: bool = False) -> np.ndarray:
    """Per-layer importance under which each searched rank is Lagrange-optimal (see the module docstring)."""
    w = np.empty(len(options))
    for i, o in enumerate(options):
        cost = o.macs if use_macs else o.params
        j = int(np.clip(np.searchsorted(o.ranks, o.pick), 0, len(o.ranks) - 1))
        if j == 0 or j == len(o.ranks) - 1:
            w[i] = np.nan  # a pick on the window's edge only bounds the weight: neutral
            continue
        h = max(1, int(round(0.1 * len(o.ranks))))
        lo, hi = max(j - h, 0), min(j + h, len(o.ranks) - 1)
        de = max(o.err[lo] - o.err[hi], 0.0)
        dc = max(cost[hi] - cost[lo], 1e-12)
        w[i] = dc / de if de > 0 else np.inf
    finite = w[np.isfinite(w)]
    med = float(np.median(finite)) if finite.size else 1.0
    w = np.where(np.isnan(w), med, w)
    return np.clip(w, med / 100.0, med * 100.0) / med


def _choose(tables, weights, lam, norm):
    idx = []
    for (err, params, macs), w in zip(tables, weights):
        cost = params * norm[0] + macs * norm[1]
        idx.append(int(np.argmin(w * err + lam * cost)))
    return idx


def _totals(tables, idx):
    return (sum(t[1][i] for t, i in zip(tables, idx)), sum(t[2][i] for t, i in zip(tables, idx)))


def allocate(
    options: list[LayerOptions],
    budget_params: float | None,
    budget_macs: float | None,
    *,
    weights: np.ndarray | None = None,
    slack: tuple[float, float] = (0.0, 0.0),
) -> Allocation:
    """Ranks that meet ``budget_params`` / ``budget_macs`` (for the searched layers only) at least weighted error.

    The choice stays within the budgets; only if that leaves it more than
    ``slack`` (params, MACs; absolute) below a budget is it raised into the
    band ``budget +- slack`` (coarse rank steps on small models). Raises
    ``ValueError`` if even the smallest admissible ranks exceed a budget.
    """
    if budget_params is None and budget_macs is None:
        raise ValueError("allocate needs a params or a MACs budget")
    if weights is None:
        weights = implied_weights(options, use_macs=budget_params is None)
    tables = [o.table() for o in options]
    bp = np.inf if budget_params is None else float(budget_params)
    bm = np.inf if budget_macs is None else float(budget_macs)
    norm = (0.0 if budget_params is None else 1.0 / max(bp, 1.0), 0.0 if budget_macs is None else 1.0 / max(bm, 1.0))

    def fits(p, m):
        return p <= bp * (1 + 1e-12) and m <= bm * (1 + 1e-12)

    low = [int(np.argmin(t[1] * norm[0] + t[2] * norm[1])) for t in tables]
    if not fits(*_totals(tables, low)):
        p, m = _totals(tables, low)
        raise ValueError(
            f"the budget cannot be met: the smallest admissible ranks give {p:.0f} params / {m:.0f} MACs "
            f"in the searched layers, over the budget of {bp:.0f} params / {bm:.0f} MACs"
        )
    # bisection on the Lagrange multiplier: the smallest lam whose choice fits
    lo_lam, hi_lam = 0.0, 1.0
    while not fits(*_totals(tables, _choose(tables, weights, hi_lam, norm))):
        hi_lam *= 4.0
        if hi_lam > 1e30:
            break
    idx = _choose(tables, weights, hi_lam, norm)
    if not fits(*_totals(tables, idx)):
        idx = low
    else:
        for _ in range(60):
            mid = 0.5 * (lo_lam + hi_lam)
            cand = _choose(tables, weights, mid, norm)
            if fits(*_totals(tables, cand)):
                hi_lam, idx = mid, cand
            else:
                lo_lam = mid
    idx = _fill(tables, weights, idx, bp, bm, norm)
    p, m = _totals(tables, idx)
    floor = (bp - slack[0] if budget_params is not None else -np.inf,
             bm - slack[1] if budget_macs is not None else -np.inf)
    if p < floor[0] or m < floor[1]:
        idx = _fill(tables, weights, idx, bp + slack[0], bm + slack[1], norm, stop=floor)
        p, m = _totals(tables, idx)
    if (budget_params is None) != (budget_macs is None) and (p < floor[0] or m < floor[1]):
        k = 1 if budget_params is not None else 2
        b, sl = (bp, slack[0]) if k == 1 else (bm, slack[1])
        idx = _repair(tables, weights, idx, k, b - sl, b + sl)
        p, m = _totals(tables, idx)
    choice = {
        o.name: (None if i == len(o.ranks) else int(o.ranks[i])) for o, i in zip(options, idx)
    }
    return Allocation(choice, float(p), float(m))


def _fill(tables, weights, idx, bp, bm, norm, stop=None):
    """Greedy: raise single layers one option at a time (best weighted-error drop per cost) while the budget holds.

    ``stop=(params, macs)``: stop as soon as both totals reach these floors.
    """
    idx = list(idx)
    p, m = _totals(tables, idx)

    def entry(i):
        err, params, macs = tables[i]
        j = idx[i]
        if j + 1 >= len(err):
            return None
        dp, dm = params[j + 1] - params[j], macs[j + 1] - macs[j]
        gain = weights[i] * (err[j] - err[j + 1])
        dc = dp * norm[0] + dm * norm[1]
        if dc <= 0:
            return (-np.inf, i, j)  # free or cheaper and not worse: take it
        return (-gain / dc, i, j)

    heap = [e for e in (entry(i) for i in range(len(tables))) if e is not None]
    heapq.heapify(heap)
    while heap:
        _, i, j = heapq.heappop(heap)
        if idx[i] != j:
            continue
        err, params, macs = tables[i]
        np_, nm = p + params[j + 1] - params[j], m + macs[j + 1] - macs[j]
        if np_ > bp or nm > bm:
            continue  # this layer's next step does not fit; costlier steps of the same layer would not either
        if err[j + 1] > err[j]:
            continue
        idx[i], p, m = j + 1, np_, nm
        if stop is not None and p >= stop[0] and m >= stop[1]:
            break
        e = entry(i)
        if e is not None:
            heapq.heappush(heap, e)
    return idx


def _repair(tables, weights, idx, k, lo, hi, max_work=5e7):
    """Move one or two layers to any option so that cost ``k`` (1 params, 2 MACs) lands in ``[lo, hi]``.

    The greedy fill only raises ranks one step at a time; on small models a
    band can need one layer down and another up. Cheapest weighted-error
    change wins; ``idx`` comes back unchanged if no such move exists (or the
    pair search would be too big, which large models never need).
    """
    idx = list(idx)
    cur = [t[k][i] for t, i in zip(tables, idx)]
    total = float(sum(cur))
    derr = [weights[n] * (t[0] - t[0][i]) for n, (t, i) in enumerate(zip(tables, idx))]
    dcost = [t[k] - c for t, c in zip(tables, cur)]
    best, move = np.inf, None
    for i in range(len(tables)):  # single moves
        ok = (total + dcost[i] >= lo) & (total + dcost[i] <= hi)
        if ok.any():
            a = int(np.argmin(np.where(ok, derr[i], np.inf)))
            if derr[i][a] < best:
                best, move = derr[i][a], ((i, a),)
    if move is None and sum(len(d) for d in dcost) ** 2 <= max_work:
        for i in range(len(tables)):
            for j in range(i + 1, len(tables)):
                t = total + dcost[i][:, None] + dcost[j][None, :]
                e = np.where((t >= lo) & (t <= hi), derr[i][:, None] + derr[j][None, :], np.inf)
                a, b = np.unravel_index(int(np.argmin(e)), e.shape)
                if e[a, b] < best:
                    best, move = e[a, b], ((i, int(a)), (j, int(b)))
    for i, a in move or ():
        idx[i] = a
    return idx
