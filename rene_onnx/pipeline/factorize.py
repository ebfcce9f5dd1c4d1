"""Stage 3a of the pipeline: the student -- a copy of the torch model with the plan's layers factorized.

Factors are initialized from the weights (TT-SVD, CP-ALS, SVD), or, with unlabeled real inputs and not
data-free, activation-aware (:func:`whitened_init`) and then error-corrected layer by layer
(:func:`sequential_init`): see :func:`init_factors`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from rene_onnx.load import ModelHandle
from rene_onnx.plan import Factors, RankPlan

from .inputs import calib_loader


def numpy_blas_one_thread():
    """numpy's OpenBLAS competing with torch's OpenMP threads made SVDs 2-10x slower here; one thread is steady.

    (Only numpy's BLAS is limited; torch keeps its own threads.)
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def factorize(handle: ModelHandle, plan: RankPlan, factors: Factors | None = None) -> nn.Module:
    """A copy of the torch model with the plan's layers swapped for factorized modules.

    ``factors`` (e.g. a search's activation-aware SVD factors) initialize the layers they name;
    the others are decomposed from their weights.
    """
    from rene_onnx.engine.layers import factorize_

    student = copy.deepcopy(handle.torch_model).eval()
    with numpy_blas_one_thread():
        factorize_(student, plan, factors)
    return student


def whitened_init(handle: ModelHandle, plan: RankPlan, calib: tuple[torch.Tensor, ...],
                  max_samples: int = 1024, batch_size: int = 32) -> Factors | None:
    """Activation-aware SVD factors for the plan's ``svd`` layers from unlabeled ``calib`` inputs.

    Each layer's input second moment is collected on (at most ``max_samples``) calibration samples
    and the truncation minimizes the layer's output error on them rather than ``||W - W'||``
    (:mod:`rene_onnx.engine.calibrate`). ``None`` when the plan has no svd layer whose moment can
    be collected.
    """
    from rene_onnx.engine.calibrate import whitened_factors

    moments = calib_moments(handle, calib, [n for n, lp in plan.layers.items() if lp.method == "svd"],
                            max_samples, batch_size)
    if not moments:
        return None
    with numpy_blas_one_thread():
        return whitened_factors(handle.torch_model, plan, moments)


def sequential_init(handle: ModelHandle, plan: RankPlan, calib: tuple[torch.Tensor, ...],
                    max_samples: int = 1024, batch_size: int = 32) -> Factors | None:
    """Error-corrected activation-aware SVD factors for the plan's ``svd`` Linear layers (``calib``, not data-free).

    The layers are fitted in forward order on the partly compressed model's own inputs to the original
    layers' outputs (:func:`rene_onnx.engine.sequential.sequential_factorize_`), so each truncation also
    corrects the error the earlier ones left. On all-MiniLM-L6-v2 at -30 % of the Linear parameters this
    lifted the held-out cosine before distillation from 0.925 (plain whitening, same plan) to 0.933 (a run of
    the since retired benchmarks/minilm.py pipeline). A model with an integer input named like ``*mask*`` (a transformer's
    attention mask) counts only its unmasked tokens. ``None`` when the plan has no such layer.
    """
    from rene_onnx.engine.sequential import sequential_factorize_

    named = dict(handle.torch_model.named_modules())
    if not any(lp.method == "svd" and isinstance(named.get(n), nn.Linear) for n, lp in plan.layers.items()):
        return None
    masks = [i for i, s in enumerate(handle.specs) if "mask" in s.name.lower() and s.dtype != "float32"]
    row_mask = None
    if handle.multi_input and masks:
        row_mask = lambda x, i=masks[0]: x[i]  # noqa: E731  (B, T) of 0 / 1 for the (B, T, C) Linear inputs
    student = copy.deepcopy(handle.torch_model).eval()
    with numpy_blas_one_thread():
        factors = sequential_factorize_(handle.torch_model, student, plan, list(calib_loader(calib, max_samples,
                                        handle.torch_batch or batch_size)), row_mask=row_mask)
    return factors if factors.layers else None


def calib_moments(handle: ModelHandle, calib: tuple[torch.Tensor, ...], layers: list[str],
                  max_samples: int = 1024, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Input second moments ``E[x x^T]`` of ``layers`` (those whose moment can be collected) on at most
    ``max_samples`` calibration samples -- many more than the search's few calibration batches, which
    would leave a wide layer's moment rank-deficient and the whitening fitted to them."""
    from rene_onnx.engine.calibrate import input_moments, moment_supported

    named = dict(handle.torch_model.named_modules())
    layers = [n for n in layers if n in named and moment_supported(named[n]) is None]
    if not layers:
        return {}
    return input_moments(handle.torch_model, calib_loader(calib, max_samples, handle.torch_batch or batch_size), layers)


def with_sequential(handle: ModelHandle, plan: RankPlan, calib: tuple[torch.Tensor, ...],
                    init: Factors | None) -> Factors | None:
    """``init`` with its Linear layers replaced by :func:`sequential_init`'s (``meta["sequential"]`` lists them)."""
    seq = sequential_init(handle, plan, calib)
    if seq is None:
        return init
    base = init or Factors()
    return Factors(layers={**base.layers, **seq.layers}, dense=dict(base.dense),
                   meta={**base.meta, "sequential": sorted(seq.layers)})


def torch_top1(model: nn.Module, test_data, batch: int | None = None) -> float | None:
    if test_data is None:
        return None
    X, y = test_data
    bs = batch or 512
    usable = len(X) - len(X) % bs if batch else len(X)  # a fixed batch size cannot take a short last batch
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(X[i:i + bs])).argmax(-1) for i in range(0, usable, bs)])
    return 100.0 * float((pred.numpy() == y[:usable]).mean())


def init_factors(handle: ModelHandle, plan: RankPlan, calib: tuple[torch.Tensor, ...] | None, *,
                 searched: Factors | None, was_searched: bool, data_free: bool) -> Factors | None:
    """The factors the student starts from (None: every layer decomposed from its weights).

    A search's own factors (activation-aware SVD when it ran on ``calib``); with unlabeled ``calib``
    inputs and not data-free, given ranks get :func:`whitened_init` first, and either way the Linear
    layers are then fitted error-corrected in forward order (:func:`with_sequential`).
    """
    init = searched
    if calib is not None and not data_free:
        base = init if was_searched else whitened_init(handle, plan, calib)
        init = with_sequential(handle, plan, calib, base)
    return init
