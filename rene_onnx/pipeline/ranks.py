"""Stage 2 of the pipeline: the rank plan, given by the user or found by the RENE search.

:func:`plan_ranks` turns ``ranks`` (a fraction of each layer, a JSON plan file, a mapping) into a
:class:`~rene_onnx.plan.RankPlan`, checked against the model; :func:`search_ranks` runs the RENE search
(:mod:`rene_onnx.engine.search`) on the torch model with the objective the inputs allow.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from rene_onnx.config import CompressConfig, RewriteConfig, SearchConfig
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.errors import LoadError, UserError, first_line
from rene_onnx.load import ModelHandle
from rene_onnx.plan import RankPlan

from .factorize import calib_moments
from .inputs import layer_shapes


def parse_ranks(ranks: float | str | Path | dict | RankPlan | None) -> float | dict | RankPlan:
    """Check ``ranks`` before any heavy work: a fraction in (0, 1], a JSON plan file, or a mapping."""
    if ranks is None:
        raise UserError("no ranks given: a fraction of each layer to keep, or a JSON rank plan", option="ranks")
    if isinstance(ranks, (dict, RankPlan)):
        return ranks
    if isinstance(ranks, (int, float)) or (isinstance(ranks, str) and _is_number(ranks)):
        frac = float(ranks)
        if not 0 < frac <= 1:
            raise UserError(f"a fraction must be in (0, 1], got {frac}", option="ranks")
        return frac
    path = Path(ranks)
    if not path.is_file():
        raise LoadError(f"rank plan not found: {path}", option="ranks")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LoadError(f"rank plan {path} is not valid JSON: {first_line(e)}", option="ranks") from None
    if isinstance(data, dict) and str(data.get("format", "")).startswith("rene-onnx/rank-plan"):
        try:
            return RankPlan.from_dict(data)
        except UserError as e:
            raise LoadError(f"rank plan {path}: {e.message}", option="ranks") from None
    if not isinstance(data, dict):
        raise LoadError(f"rank plan {path} must be a JSON object {{layer: rank or [r1, r2]}}", option="ranks")
    return data


def plan_ranks(shapes: dict[str, LayerShape], cfg: RewriteConfig) -> RankPlan:
    """User-given ranks -> RankPlan (a fraction, a JSON plan file, or a mapping)."""
    from rene_onnx.decompose.choose import plan_from_fraction, plan_from_mapping

    ranks = parse_ranks(cfg.ranks)
    if isinstance(ranks, float):
        return plan_from_fraction(shapes, cfg.method, ranks, rank_multiple=cfg.rank_multiple)
    try:  # the plan rules validate the user's mapping / plan: their ValueErrors are about it
        if isinstance(ranks, RankPlan):
            return _checked_plan(ranks, shapes, cfg)
        return plan_from_mapping(shapes, cfg.method, ranks, rank_multiple=cfg.rank_multiple)
    except UserError as e:  # a rank the rules refuse: name --ranks and the file it came from
        source = f"rank plan {cfg.ranks}: " if isinstance(cfg.ranks, (str, Path)) else ""
        if e.refs:  # the message is a format string: keep braces in the file name literal
            source = source.replace("{", "{{").replace("}", "}}")
        raise type(e)(f"{source}{e.message}", option=e.option or "ranks", refs=e.refs) from None
    except ValueError as e:
        raise UserError(f"the rank plan does not fit the model: {first_line(e)}", option="ranks") from None


def _checked_plan(plan: RankPlan, shapes: dict[str, LayerShape], cfg: RewriteConfig) -> RankPlan:
    """A saved RankPlan (from ``rene-onnx search``): re-validate it against this model."""
    from rene_onnx.decompose.choose import plan_from_mapping

    unknown = [n for n in plan.layers if n not in shapes]
    if unknown:
        raise UserError(f"the rank plan names layer(s) not in the model: {', '.join(unknown[:3])}", option="ranks")
    out = RankPlan(meta=dict(plan.meta))
    for name, lp in plan.layers.items():
        if lp.method == "dense":
            out.add(lp)
        else:
            sub = plan_from_mapping({name: shapes[name]}, lp.method, {name: list(lp.ranks)},
                                    rank_multiple=cfg.rank_multiple)
            out.add(sub.layers[name])
    return out


def search_ranks(handle: ModelHandle, cfg: CompressConfig, splits, calib: tuple[torch.Tensor, ...] | None = None):
    """RENE search on the torch model -> SearchResult (its ``plan`` is the RankPlan).

    Labeled data: L_val is the cross-entropy on its calibration split. Unlabeled ``calib``
    inputs (not data-free): L_val is the output error to the original model
    (``objective="distill"``), the SVD layers are decomposed activation-aware (``whiten``: the
    truncation minimizes each layer's output error on these inputs) and the budget weighs the
    layers by their measured importance. Otherwise the search is data-free.
    """
    from rene_onnx.data import unlabeled_dataset
    from rene_onnx.engine.search import search

    base = cfg.search or SearchConfig()
    unlabeled = splits is None and calib is not None and not cfg.data_free
    use_data = (splits is not None or unlabeled) and not cfg.data_free
    extra = {"objective": "distill", "whiten": True, "importance": "measured"} if unlabeled else {}
    # dataclasses.replace re-runs SearchConfig's checks on the combined settings
    scfg = dataclasses.replace(base, method=cfg.rewrite.method,
                               rank_multiple=cfg.rewrite.rank_multiple, data_free=not use_data,
                               layers=[n for n in handle.layer_map if n in layer_shapes(handle)], **extra)
    if handle.torch_batch is not None:  # a fixed-batch graph whose torch import runs only that batch
        scfg = dataclasses.replace(scfg, calib_batch_size=handle.torch_batch)
    loader = None
    if use_data:
        loader = torch.utils.data.DataLoader(unlabeled_dataset(calib) if unlabeled else splits.calib,
                                             batch_size=scfg.calib_batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(scfg.seed))

    totals = None
    if str(cfg.model).endswith(".onnx"):
        # budgets are fractions of the ONNX model, whose count also holds what the torch import keeps as
        # buffers (e.g. a transformer's embedding tables) and the MACs of run-time MatMuls (attention)
        from rene_onnx.validate.counts import count_onnx

        c = count_onnx(handle.onnx_model, handle.input_shapes)
        totals = (c.params, c.macs)
    moments = None
    if unlabeled:  # the SVD layers (Linear, 1x1 convs) are whitened with moments from all the calibration inputs
        svd_like = [n for n, s in layer_shapes(handle).items() if s.kernel_size == 1 and s.groups == 1]
        moments = calib_moments(handle, calib, svd_like)
    return search(handle.torch_model, handle.example_input(), scfg, loader,  # decompose_threads=1 inside
                  moments=moments, totals=totals)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
