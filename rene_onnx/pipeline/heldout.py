"""The held-out part of ``calib``: inputs never used for the search, the initialization, distillation or
epoch selection, on which the report's fidelity (and ``min_fidelity``) is measured.

The split is seeded (``seed``). Without groups a random ``holdout`` fraction of the samples is held out
(at least :data:`MIN_HELDOUT`); when the ``.npz`` carries a ``groups`` array (N,) -- the photo each crop
came from, the document of each sentence -- whole groups are held out (about ``holdout`` of the groups,
:func:`rene_onnx.data.photos.split_groups`), so no group is both trained on and measured on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rene_onnx.errors import UserError

#: the fewest held-out samples a fidelity figure is computed on
MIN_HELDOUT = 4
#: the fewest samples left for the search / initialization / distillation (training and selection part)
MIN_USED = 2
GROUPS_KEY = "groups"


@dataclass(frozen=True)
class Heldout:
    """``calib`` split: ``used`` (search, init, fine-tuning) and ``held`` (fidelity only), as indices and tensors."""

    used_idx: np.ndarray
    held_idx: np.ndarray
    used: tuple[torch.Tensor, ...]
    held: tuple[torch.Tensor, ...]
    how: str

    def meta(self, fraction: float, seed: int) -> dict:
        return {"fraction": fraction, "seed": seed, "used": int(len(self.used_idx)),
                "held_out": int(len(self.held_idx)), "how": self.how}


def calib_groups(path: str | Path, n: int) -> np.ndarray | None:
    """The ``groups`` array of a ``calib`` .npz (None when it has none or is a .npy)."""
    if not str(path).endswith(".npz"):
        return None
    with np.load(path, allow_pickle=False) as z:
        if GROUPS_KEY not in z.files:
            return None
        groups = np.asarray(z[GROUPS_KEY]).reshape(-1)
    if len(groups) != n:
        raise UserError(f"{path}: '{GROUPS_KEY}' has {len(groups)} entries for {n} samples", option="calib")
    return groups


def needed(fraction: float) -> int:
    """The fewest ``calib`` samples that leave :data:`MIN_HELDOUT` held out and :data:`MIN_USED` to use."""
    return max(MIN_HELDOUT + MIN_USED, int(np.ceil(MIN_HELDOUT / fraction)))


def split_heldout(n: int, fraction: float, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Sorted indices ``(used, held_out, how)`` of ``n`` samples; UserError when too few to hold any out."""
    from rene_onnx.data.photos import split_groups

    if n < needed(fraction):
        raise UserError(f"{n} samples: too few to hold {fraction:g} of them out for fidelity (at least "
                        f"{MIN_HELDOUT} held out, {MIN_USED} used); give at least {needed(fraction)} samples, "
                        f"or --holdout 0 to measure on random inputs only", option="calib")
    if groups is not None and len(np.unique(groups)) >= 2:
        used, held = split_groups(groups, fraction, seed=seed)
        if len(held) < MIN_HELDOUT or len(used) < MIN_USED:
            raise UserError(f"{len(np.unique(groups))} groups: holding whole groups out leaves {len(held)} held out "
                            f"and {len(used)} used (needs >= {MIN_HELDOUT} and >= {MIN_USED}); give more groups "
                            f"or a larger --holdout", option="calib")
        return np.sort(used), np.sort(held), f"{len(np.unique(groups[held]))} of {len(np.unique(groups))} groups"
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(MIN_HELDOUT, int(round(fraction * n)))
    return np.sort(order[n_held:]), np.sort(order[:n_held]), f"random {n_held} of {n} samples"


def hold_out(calib: tuple[torch.Tensor, ...], path: str | Path, fraction: float, seed: int) -> Heldout:
    """Split the ``calib`` tensors (graph input order) into the used and the held-out parts."""
    n = len(calib[0])
    used, held, how = split_heldout(n, fraction, seed, calib_groups(path, n))
    tu, th = torch.from_numpy(used), torch.from_numpy(held)
    return Heldout(used, held, tuple(t[tu] for t in calib), tuple(t[th] for t in calib), how)
