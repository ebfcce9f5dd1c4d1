"""Stage 6 of the pipeline: the :class:`~rene_onnx.report.Report` of a compress run."""
from __future__ import annotations

from rene_onnx.config import CompressConfig
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.load import ModelHandle
from rene_onnx.plan import RankPlan

from .finetune import Tuned
from .rewrite import Rewritten
from .validate import Validation


def build_report(cfg: CompressConfig, handle: ModelHandle, shapes: dict[str, LayerShape], plan: RankPlan,
                 rewritten: Rewritten, val: Validation, seconds: float):
    from rene_onnx.report.environment import environment_meta
    from rene_onnx.report.report import LayerRow, Report

    records = {r.node: r for r in rewritten.records}
    rows = []
    for name, shape in shapes.items():
        lp = plan.layers.get(name)
        ref = handle.layer_map[name]
        rec = records.get(ref.node)
        if lp and lp.method != "dense" and rec is not None and rec.status == "factorized":
            row = LayerRow.from_shape(name, ref.op_type, shape, lp.method, rewritten.factors.layers[name].ranks,
                                      reason=f"ranks per group ({shape.groups} groups)" if shape.groups > 1 else "")
        else:
            reason = (rewritten.kept_dense.get(name) or (rec.reason if rec is not None else "")
                      or (lp.reason if lp else "") or "not in the rank plan")
            row = LayerRow.from_shape(name, ref.op_type, shape, reason=reason)
        if name in rewritten.layer_times:
            row.latency_us_before, row.latency_us_after = rewritten.layer_times[name]
        rows.append(row)
    for name, why in handle.unmapped.items():
        rows.append(LayerRow(name=name, op="?", method="dense", rank=None, params_before=0, params_after=0,
                             macs_before=0, macs_after=0, status="dense", reason=why))
    params = {"before": val.counts_before.params, "after": val.counts_after.params}
    macs = {"before": val.counts_before.macs, "after": val.counts_after.macs}
    if val.torch_counts is not None:
        tb, ta = val.torch_counts["before"], val.torch_counts["after"]
        params.update(torch_before=tb[0], torch_after=ta[0])
        macs.update(torch_before=tb[1], torch_after=ta[1])
    # the top-level diffs are vs the torch student (the rewrite is exact up to float error); without a torch
    # model (the graph's weights only) vs the original ONNX model, and ``vs`` says so
    top = val.numerics.get("vs_torch") or val.numerics["vs_original"]
    return Report(
        params=params,
        macs=macs,
        latency_ms=val.latency,
        numerics={"max_abs_diff": top["max_abs_diff"], "max_rel_diff": top["max_rel_diff"],
                  "inputs": "random", "n": top["n"],
                  **({} if "vs_torch" in val.numerics else {"vs": "original"}),
                  "vs_original": val.numerics["vs_original"],
                  **({"calib": val.numerics["calib"]} if "calib" in val.numerics else {})},
        layers=rows,
        search=None,
        accuracy=val.accuracy,
        meta={"model": cfg.model, "weights": str(cfg.weights) if cfg.weights else None,
              "input_shape": list(handle.input_shape),
              "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in handle.specs],
              "output": str(cfg.output), "command": cfg.command,
              "method": cfg.rewrite.method, "ranks": str(cfg.rewrite.ranks), "notes": handle.notes,
              "rank_multiple": {"value": cfg.rewrite.rank_multiple, "why": cfg.rewrite.rank_multiple_why},
              "seconds": round(seconds, 2), **environment_meta(),
              **({"int8_baseline": val.baseline} if val.baseline is not None else {})},
    )


def finetune_meta(tuned: Tuned) -> dict:
    """``meta.finetune`` of the report: how the fine-tuning ran (the settings it actually used)."""
    r, ft = tuned.result, tuned.config
    return {"epochs_run": r.epochs_run, "best_epoch": r.best_epoch, "seconds": round(r.seconds, 2),
            "selected_on": r.selected_on, "best_val_top1": r.best_val_top1, "stopped": r.stopped,
            "batch_size": ft.batch_size, "optimizer": ft.optimizer, "lr": ft.lr,
            "steps": int(r.history[-1]["steps"]) if r.history else 0, "output_loss": ft.output_loss,
            "select_metric": ft.select_metric, "distilled_layers": len(r.layers), "output_weight": ft.logit_kd,
            "weight_term": ft.weight_term, "lambda_diss": ft.lambda_diss, "train_samples": tuned.train_samples}
