"""``rene-onnx compress``: model in, factorized, fine-tuned and validated ONNX model (and report) out."""
from __future__ import annotations

import shlex
import sys

import click

from rene_onnx.cli.options import (calib_option, latency_aware_option, model_options, search_config,
                                   search_options, validate_options)


@click.command()
@click.argument("model", required=False, default=None)
@model_options
@search_options
@click.option("--ranks", default=None, metavar="FRACTION|PLAN.json",
              help="Skip the search: keep this fraction of each layer's parameters, or use a JSON plan "
                   "{layer: rank or [r1, r2]} (e.g. written by `rene-onnx search`).")
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True,
              help="Fine-tuning epochs (CE + distillation from the original); 0 to skip.")
@click.option("--lr", type=float, default=0.03, show_default=True,
              help="Fine-tuning learning rate (cosine schedule, grad-norm clip 5).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default="sgd", show_default=True,
              help="Fine-tuning optimizer: sgd = Nesterov momentum 0.9 (the paper's, for CNNs); adamw (no weight "
                   "decay) for transformers, with an lr near 1e-4.")
@click.option("--lambda-diss", type=float, default=0.5, show_default=True,
              help="Weight of the distillation loss (weights and per-layer outputs, Eq. 10-11).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Fine-tuning batch size (a small --calib set wants a smaller one: more steps per epoch).")
@calib_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output ONNX path [default: <model>.rene.onnx].")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the report as JSON here.")
@click.option("--plots", type=click.Path(file_okay=False), default=None,
              help="Write ranks.png, layers.png and search.png (with a search) into this folder.")
@validate_options
@latency_aware_option
def compress(model, weights, input_shape, method, target_params, target_macs, gamma, beta, preset, search_steps,
             rank_multiple, data, data_free, checkpoint_dir, fresh, seed, ranks, epochs, lr, optimizer, lambda_diss, batch_size,
             calib, output, report_path, plots, provider, latency, repeats, device_io, latency_aware):
    """Compress MODEL (a zoo name or package.module:callable) into a factorized ONNX model.

    Ranks come from the RENE search unless --ranks is given. With no MODEL,
    runs the built-in demo: a small ResNet trained on the UCI digits images
    that ship with scikit-learn, searched to --target-params 0.3 unless told
    otherwise, then fine-tuned on digits.
    """
    from rene_onnx.cli.render import show_report, stage_status
    from rene_onnx.config import CompressConfig, RewriteConfig, ValidateConfig
    from rene_onnx.engine.finetune import FinetuneConfig
    from rene_onnx.load import parse_input_shapes
    from rene_onnx.pipeline import compress as run
    from rene_onnx.report.figures import plot_paths, write_plots

    if ranks is not None and (target_params is not None or target_macs is not None):
        raise click.UsageError("--ranks and --target-params/--target-macs conflict: give one of them")
    if model is None:  # the built-in demo
        model = "digits_resnet"
        if ranks is None and target_params is None and target_macs is None:
            target_params = 0.3
    name = model.rsplit(":", 1)[-1].rsplit("/", 1)[-1].removesuffix(".onnx")
    output = output or f"{name}.rene.onnx"
    protect = (model, weights, data, calib, ranks, output, report_path)
    if plots:
        plot_paths(plots, protect)  # refuse before the run, not after it
    if ranks is None and checkpoint_dir is None:
        checkpoint_dir = f"{output}.search"
    cfg = CompressConfig(
        model=model, weights=weights, input_shape=parse_input_shapes(input_shape),
        output=output, report=report_path, data=data, data_free=data_free, calib=calib,
        rewrite=RewriteConfig(method=method, ranks=ranks, rank_multiple=rank_multiple),
        search=search_config(method, target_params, target_macs, gamma, beta, preset, search_steps, rank_multiple,
                             seed, checkpoint_dir, fresh),
        finetune=FinetuneConfig(epochs=epochs, lr=lr, optimizer=optimizer, lambda_diss=lambda_diss,
                                batch_size=batch_size, seed=seed, grad_clip=5.0,
                                **({"weight_decay": 0.0} if optimizer == "adamw" else {}))
        if epochs > 0 else None,
        validate=ValidateConfig(provider=provider or "cpu", latency=latency, repeats=repeats, device_io=device_io,
                                latency_aware=(provider is not None and latency) if latency_aware is None
                                else latency_aware),
        command=shlex.join(["rene-onnx", *sys.argv[1:]]),
    )
    with stage_status() as progress:
        result = run(cfg, progress)
    show_report(result.report, result.notes)
    click.echo(f"wrote {result.output}" + (f" and {report_path}" if report_path else ""), err=True)
    if plots:
        click.echo(f"wrote {', '.join(map(str, write_plots(result.report, plots, protect=protect)))}", err=True)
