"""Candidate banks of the RENE search: one layer's candidates at one stage, and their mixture.

A *frame* holds what a layer needs for the whole search, from ONE decomposition
(``TTTruncations`` / ``SVDTruncations`` / ``CPTruncations``): the normalized
error curve ``e(r) = ||W - W_r||^2 / ||W||^2`` and, when the model has to run
with mixed weights, the orthonormal bases. A *bank* holds one stage's
candidates, each initialized from the weights (never randomly), and computes
the mixture ``W_mix = sum_r p_r W_r``.

TT and SVD: shells (exact, and why no weight is ever reconstructed data-free)
------------------------------------------------------------------------------
In the layer's orthonormal HOSVD frame (TT, r1 = r2 = r) or SVD frame, the
rank-r candidate is ``U[:, :r] C_r V[:, :r]^T`` with a trainable core ``C_r``
initialized to the projected core ``G[:r, :r]`` (for TT exactly the
contract's ``last`` / ``core`` / ``first``; the bases are the truncations' and
are not trained). Index the core entries by their *shell*
``s = max(a, b)``: the rank-r block holds shells ``0..r-1``. The mixture is
``U M V^T`` with ``M = sum_r p_r pad(C_r)``, and since U, V are orthonormal

    ||W - W_mix||^2 = e(R) ||W||^2 + ||G_R - M||^2      (R = the stage's largest rank).

At initialization every ``C_r`` is G masked to its block, so ``G - M`` is G
times a per-shell factor; the gradient of ``L_d * L_r`` w.r.t. each ``C_r``
is then again G times a per-shell factor, and so are SGD's momentum and
Nesterov updates and the global-norm gradient clipping. By induction the
trajectory of full-core SGD never leaves ``C_r = c_r[shell] * G``. We train
exactly that trajectory with one parameter per shell per candidate,
``theta_r[s] = c_r[s] * ||G_shell s||`` (this scaling makes the parameter
metric, hence SGD, clipping and momentum, identical to the full cores'):

    m[s] = sum_{r > s} p_r theta_r[s],   ||G - M||^2 = sum_s (g[s] - m[s])^2,
    g[s] = ||G_shell s|| = sqrt(e(s) - e(s+1)) ||W||.

So the data-free objective costs O(sum of candidate ranks) per step, needs only
the error curve (no core, no bases) and no forward pass. With validation data,
the mixed weight is rebuilt once per step as ``U (G * m/g [shell]) V^T``: one
dense weight per layer, not one per candidate.

CP: candidates are CP-ALS solutions (warm-started from the largest), not
nested; all three factors are trainable and the mixture is one einsum over
all candidates' components (dense reconstruction: meant for small models).

All values are normalized by ``||W||`` (every layer's decomposition loss is
relative); ``weight()`` scales back.

Grouped convs (:class:`GroupedFrame`): one frame per group, one shared rank;
the errors add up weighted by each group's share of ``||W||^2``.

Whitened SVD (``moment`` given): the frame is that of ``W L`` with ``L L^T`` the
damped input second moment (:class:`~rene_onnx.decompose.svd.WhitenedSVDTruncations`);
every statement above holds in the whitened metric, so the error curve, the
shells and ``L_d`` measure the relative OUTPUT error ``||(W - W') L||^2 / ||W L||^2``
and the mixed weight is mapped back through ``L^{-1}``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..decompose import CPTruncations, SVDTruncations, TTTruncations
from ..decompose.ranks import LayerShape
from ..decompose.svd import WhitenedSVDTruncations
from . import registry


class LayerFrame:
    """Everything the search keeps for one layer across stages.

    The method's candidate source (``registry.get(method).search``: :func:`hosvd_candidates`,
    :func:`svd_candidates`, :func:`cp_candidates` ..) fills the error curve and what the bank
    needs, from one decomposition. ``dense_mix``: keep the bases to rebuild mixed dense weights
    (validation cross-entropy mode); without it a TT / SVD frame holds only its error curve.
    """

    def __init__(self, name: str, method: str, shape: LayerShape, weight: np.ndarray, max_rank: int, *,
                 dense_mix: bool = False, cp_iters: int = 100, seed: int = 0,
                 device: torch.device | str = "cpu", moment: np.ndarray | None = None, whiten_eps: float = 1e-2):
        self.name, self.method, self.shape = name, method, shape
        self.weight_shape = tuple(weight.shape)
        w = np.asarray(weight, dtype=np.float64)
        if not np.all(np.isfinite(w)):
            raise ValueError(f"layer {name!r}: the weight holds NaN or inf values")
        self.norm2 = float(np.sum(w * w))
        if self.norm2 == 0.0:
            raise ValueError(f"layer {name!r}: the weight is all zeros (nothing to decompose)")
        self.scale = math.sqrt(self.norm2)
        self.max_rank = int(max_rank)
        self.u = self.v = self.g = self.w = None
        self.whitened = False
        self.errors: np.ndarray | None = None  # normalized error per rank 0..max_rank (None: known per rank)
        self.bank_type: type = ShellBank
        self._cp: CPTruncations | None = None
        self._cp_err: dict[int, float] = {}
        try:
            source = registry.get(method).search
        except ValueError:
            raise ValueError(f"layer {name!r}: the search handles {', '.join(registry.names())}, "
                             f"not {method!r}") from None
        if moment is not None and not registry.get(method).whitens:
            raise ValueError(f"layer {name!r}: whitening (an input moment) applies to svd layers, not {method!r}")
        source(self, w, dense_mix=dense_mix, cp_iters=cp_iters, seed=seed, moment=moment, whiten_eps=whiten_eps)
        for attr in ("u", "v", "g", "w"):  # what the mixed dense weight is built from lives with the model
            if getattr(self, attr) is not None:
                setattr(self, attr, getattr(self, attr).to(device))
        if self.errors is not None:
            # shell norms of the normalized projected core: g[s]^2 = e(s) - e(s+1)
            self.shell = torch.from_numpy(np.sqrt(np.maximum(self.errors[:-1] - self.errors[1:], 0.0)))

    # -- error curve ---------------------------------------------------------------------------
    def error(self, r: int) -> float:
        """Normalized error ``||W - W_r||^2 / ||W||^2`` of the rank-``r`` truncation (CP: its ALS solution)."""
        if self.errors is not None:
            return float(self.errors[int(r)])
        r = int(r)
        if r not in self._cp_err:
            self._cp_err[r] = float(self._cp.error(r)) / self.norm2
        return self._cp_err[r]

    def error_curve(self, ranks: np.ndarray) -> np.ndarray:
        """Errors at ``ranks``; for CP interpolated between the ranks whose ALS solution is known."""
        ranks = np.asarray(ranks, dtype=np.int64)
        if self.errors is not None:
            return self.errors[ranks]
        known = sorted(self._cp_err.items())
        xs = np.array([0] + [r for r, _ in known], dtype=np.float64)
        ys = np.array([1.0] + [e for _, e in known])
        return np.interp(ranks, xs, ys)

    def truncated_weight(self, r: int) -> torch.Tensor:
        """The dense weight of the rank-``r`` candidate as initialized (TT / SVD: needs ``dense_mix``)."""
        bank = self.bank([int(r)])
        with torch.no_grad():
            return bank.weight(bank.mix(torch.ones(1), train=False))

    def bank(self, ranks: list[int]) -> "ShellBank | CPBank":
        return self.bank_type(self, ranks)


class ShellBank:
    """TT / SVD candidates, one trainable value per shell per candidate (see the module docstring)."""

    def __init__(self, frame: LayerFrame, ranks: list[int]):
        self.frame, self.ranks = frame, list(ranks)
        self.r = max(self.ranks)
        self.g = frame.shell[: self.r]
        self.resid = float(frame.errors[self.r])  # ||W - U G_R V^T||^2 / ||W||^2: beyond the largest candidate
        self.params = [frame.shell[:k].clone().requires_grad_(True) for k in self.ranks]

    def mix(self, p: torch.Tensor, *, train: bool = True) -> torch.Tensor:
        """Shell norms ``m`` (R,) of the mixed core."""
        rows = [t if train else t.detach() for t in self.params]
        stacked = torch.stack([torch.nn.functional.pad(t, (0, self.r - t.shape[0])) for t in rows])
        return p.to(stacked.dtype) @ stacked

    def dist(self, m: torch.Tensor) -> torch.Tensor:
        d = self.g - m
        return self.resid + (d * d).sum()

    def weight(self, m: torch.Tensor) -> torch.Tensor:
        """The dense mixed weight (needs a frame built with ``dense_mix``)."""
        f = self.frame
        if f.g is None:
            raise RuntimeError(f"layer {f.name!r}: the frame was built without dense_mix")
        r = self.r
        factor = torch.where(self.g > 0, m / torch.where(self.g > 0, self.g, torch.ones_like(self.g)),
                             torch.zeros_like(m)).float()
        idx = torch.arange(r)
        shell = torch.maximum(idx[:, None], idx[None, :])
        core = f.g[:r, :r] * factor[shell].to(f.g.device)[:, :, None]  # (R, R, x)
        cout, x = f.u.shape[0], core.shape[2]
        t = (f.u[:, :r] @ core.reshape(r, r * x)).reshape(cout, r, x)  # (Cout, R_b, x)
        w = torch.einsum("obx,ib->oix", t, f.v[:, :r]) * f.scale
        return w.reshape(f.weight_shape)


class CPBank:
    """CP candidates (CP-ALS solutions, warm-started from the largest) with all factors trainable."""

    def __init__(self, frame: LayerFrame, ranks: list[int]):
        self.frame, self.ranks = frame, list(ranks)
        self.params = []
        for r in self.ranks:
            f = frame._cp.factors(r)
            frame.error(r)  # record the ALS error: the budget choice interpolates between known ranks
            a = torch.from_numpy(f["last"].reshape(-1, r) / frame.scale).float()
            c = torch.from_numpy(f["core"].reshape(r, -1)).float()
            b = torch.from_numpy(f["first"].reshape(r, -1)).float()
            self.params += [t.to(frame.w.device).requires_grad_(True) for t in (a, c, b)]
        self._owner = torch.from_numpy(np.repeat(np.arange(len(self.ranks)), self.ranks))

    def mix(self, p: torch.Tensor, *, train: bool = True) -> torch.Tensor:
        """The dense mixed weight (Cout, Cin, x), normalized."""
        ps = self.params if train else [t.detach() for t in self.params]
        a = torch.cat(ps[0::3], dim=1) * p[self._owner].to(ps[0].device)[None, :]
        c, b = torch.cat(ps[1::3], dim=0), torch.cat(ps[2::3], dim=0)
        return torch.einsum("os,sx,si->oix", a, c, b)

    def dist(self, m: torch.Tensor) -> torch.Tensor:
        d = self.frame.w - m
        return (d * d).sum()

    def weight(self, m: torch.Tensor) -> torch.Tensor:
        return (m * self.frame.scale).reshape(self.frame.weight_shape)


def hosvd_candidates(frame: LayerFrame, w: np.ndarray, *, dense_mix: bool, **_) -> None:
    """TT (r1 = r2) candidates: nested HOSVD truncations of the conv weight (:class:`TTTruncations`)."""
    tr = TTTruncations(w)
    frame.errors = np.asarray(tr.error(np.arange(frame.max_rank + 1)), dtype=np.float64) / frame.norm2
    if dense_mix:
        r, cout = frame.max_rank, frame.weight_shape[0]
        f = tr.factors(r, r)
        frame.u = torch.from_numpy(f["last"].reshape(cout, -1)).float()
        frame.v = torch.from_numpy(f["first"].reshape(r, -1).T.copy()).float()
        frame.g = torch.from_numpy(f["core"].reshape(r, r, -1) / frame.scale).float()


def svd_candidates(frame: LayerFrame, w: np.ndarray, *, dense_mix: bool, moment: np.ndarray | None = None,
                   whiten_eps: float = 1e-2, **_) -> None:
    """SVD candidates: truncations of one SVD of the weight unfolded to (Cout, Cin*k); whitened with a ``moment``."""
    cout = frame.weight_shape[0]
    if moment is None:
        tr = SVDTruncations(w.reshape(cout, -1))
    else:
        tr = WhitenedSVDTruncations(w.reshape(cout, -1), moment, whiten_eps)
        frame.norm2 = float(tr.errors[0])  # ||W L||^2: errors and shells are relative output errors
        frame.scale = math.sqrt(frame.norm2)
    frame.whitened = moment is not None
    frame.errors = np.asarray(tr.errors[: frame.max_rank + 1], dtype=np.float64) / frame.norm2
    if dense_mix:
        us, vs = tr.factors(frame.max_rank)
        s = tr.singular_values[: frame.max_rank]
        root = np.sqrt(s)
        inv = np.divide(1.0, root, out=np.zeros_like(root), where=root > 0)
        frame.u = torch.from_numpy(us * inv[None, :]).float()
        frame.v = torch.from_numpy((vs * inv[:, None]).T.copy()).float()
        frame.g = torch.from_numpy(np.diag(s)[:, :, None] / frame.scale).float()


def cp_candidates(frame: LayerFrame, w: np.ndarray, *, cp_iters: int = 100, seed: int = 0, **_) -> None:
    """CP candidates: CP-ALS at the largest rank, the others warm-started from it (:class:`CPTruncations`)."""
    frame._cp = CPTruncations(w, frame.max_rank, n_iter_max=cp_iters, seed=seed)
    frame.w = torch.from_numpy(w.reshape(frame.weight_shape[0], w.shape[1], -1) / frame.scale).float()
    frame.errors = None
    frame.bank_type = CPBank


class GroupedFrame:
    """A grouped conv searched per group: one :class:`LayerFrame` per group's weight slice, one rank for all.

    Group ``j``'s block of the weight (output channels ``j*Cout/g ..``) is an
    ungrouped conv weight ``(Cout/g, Cin/g, k...)``; its frame decomposes it
    once. Relative errors combine as the groups' share of ``||W||^2``
    (``||W - W'||^2 = sum_j ||W_j - W'_j||^2``), and a mixed or truncated
    weight is the groups' blocks stacked along the output channels, which is
    the grouped conv's own weight layout. Whitening does not apply (no input
    moment is collected for grouped convs).
    """

    whitened = False

    def __init__(self, name: str, method: str, shape: LayerShape, weight: np.ndarray, max_rank: int, **kw):
        if shape.groups < 2:
            raise ValueError(f"layer {name!r}: GroupedFrame needs groups >= 2, got {shape.groups}")
        self.name, self.method, self.shape = name, method, shape
        self.weight_shape = tuple(weight.shape)
        g, og = shape.groups, shape.group_out
        sub = dataclasses.replace(shape, out_features=og, in_features=shape.group_in, groups=1)
        self.frames = [LayerFrame(f"{name}[group {j}]", method, sub, np.asarray(weight)[j * og:(j + 1) * og],
                                  max_rank, **kw) for j in range(g)]
        self.norm2 = sum(f.norm2 for f in self.frames)
        self.share = [f.norm2 / self.norm2 for f in self.frames]

    def error(self, r: int) -> float:
        return float(sum(s * f.error(r) for s, f in zip(self.share, self.frames)))

    def error_curve(self, ranks: np.ndarray) -> np.ndarray:
        return sum(s * f.error_curve(ranks) for s, f in zip(self.share, self.frames))

    def truncated_weight(self, r: int) -> torch.Tensor:
        return torch.cat([f.truncated_weight(r) for f in self.frames], dim=0)

    def bank(self, ranks: list[int]) -> "GroupedBank":
        return GroupedBank(self, ranks)


class GroupedBank:
    """The groups' banks side by side; one mixture ``p`` over the shared candidate ranks drives them all."""

    def __init__(self, frame: GroupedFrame, ranks: list[int]):
        self.frame, self.ranks = frame, list(ranks)
        self.banks = [f.bank(self.ranks) for f in frame.frames]
        self.params = [t for b in self.banks for t in b.params]

    def mix(self, p: torch.Tensor, *, train: bool = True) -> list[torch.Tensor]:
        return [b.mix(p, train=train) for b in self.banks]

    def dist(self, ms: list[torch.Tensor]) -> torch.Tensor:
        return sum(s * b.dist(m) for s, b, m in zip(self.frame.share, self.banks, ms))

    def weight(self, ms: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([b.weight(m) for b, m in zip(self.banks, ms)], dim=0)


def make_frame(name: str, method: str, shape: LayerShape, weight: np.ndarray, max_rank: int,
               **kw) -> "LayerFrame | GroupedFrame":
    """The search's frame for a layer: per group for a grouped conv (see :class:`GroupedFrame`)."""
    if shape.groups > 1:
        kw.pop("moment", None)
        return GroupedFrame(name, method, shape, weight, max_rank, **kw)
    return LayerFrame(name, method, shape, weight, max_rank, **kw)
