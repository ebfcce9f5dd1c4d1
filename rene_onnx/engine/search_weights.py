"""A weights-only rank choice under a budget: the RENE search's final choice without its stages (numpy weights).

For a model with no runnable torch module (an ONNX graph onnx2torch cannot import) only the layer weights
are at hand. Each layer gets the search's first window (:func:`.search.search_layers`) and one decomposition
(:func:`.search_banks.make_frame`: its normalized error curve ``||W - W_r||^2 / ||W||^2``), and
:func:`.search_choice.final_choice` allocates the ranks under ``target_params`` / ``target_macs``
(:func:`.search_budget.allocate`) with every layer weighted alike: no alpha search, no data, no forward pass.
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from ..config import SearchConfig
from ..decompose.ranks import LayerShape
from .search import SearchResult, blas_threads, layer_budget, planned_totals, search_layers
from .search_banks import make_frame
from .search_choice import check_budget, final_choice

#: the plan's and the report's word for how the ranks were chosen
HOW = "weights only: least summed error-curve value under the budget"


def weights_search(weights: Mapping[str, np.ndarray], shapes: Mapping[str, LayerShape], cfg: SearchConfig,
                   totals: tuple[int, int]) -> SearchResult:
    """Ranks for the layers of ``shapes`` from their ``weights`` (torch layout) under the config's target.

    ``totals``: (params, MACs) of the whole model the targets are fractions of. The result is a data-free
    :class:`~.search.SearchResult` with no stages (``sensitivity`` says the weights alone chose).
    """
    if cfg.target_params is None and cfg.target_macs is None:
        raise ValueError("a weights-only rank choice needs target_params or target_macs")
    t0 = time.perf_counter()
    shapes = dict(shapes)
    plan, layers = search_layers(cfg, shapes, "data-free")
    plan.meta["search"]["weights_only"] = True
    budget = layer_budget(cfg, layers, totals)
    check_budget(cfg, layers, budget)
    with blas_threads(cfg.decompose_threads):
        for l in layers:
            l.frame = make_frame(l.name, l.method, l.shape, np.asarray(weights[l.name]), l.window.ub,
                                 cp_iters=cfg.cp_iters, seed=cfg.seed)
            # the largest rank as the pick: on the window's edge it gives the layer the neutral weight 1
            l.rbar, l.candidates, l.p = l.window.ub, (l.window.ub,), (1.0,)
    result_layers, _, notes = final_choice(cfg, layers, plan, budget, None, lambda n: np.asarray(weights[n]),
                                           None, how=HOW)
    plan.layers = {n: plan.layers[n] for n in shapes}  # model order
    params, macs = planned_totals(plan, shapes, result_layers, budget)
    total = budget.total
    plan.meta["search"].update({"stages": 0, "params": [total["params"], params], "macs": [total["macs"], macs],
                                "target_params": cfg.target_params, "target_macs": cfg.target_macs})
    sens = {"method": "none", "estimate": HOW}
    return SearchResult(plan, result_layers, "data-free", time.perf_counter() - t0, [], (total["params"], params),
                        (total["macs"], macs), notes=[HOW] + notes, sensitivity=sens)
