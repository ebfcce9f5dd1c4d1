"""``rene-onnx compress``: model in, factorized and validated ONNX model (and report) out."""
from __future__ import annotations

import shlex
import sys

import click

from rene_onnx.cli.options import model_options, validate_options


@click.command()
@click.argument("model", required=False, default="digits_resnet")
@model_options
@click.option("--method", type=click.Choice(["auto", "tt", "cp", "svd"]), default="auto", show_default=True,
              help="tt / cp for k x k convs, svd for Linear and 1x1 convs; auto = tt for k x k, svd otherwise.")
@click.option("--ranks", default="0.3", show_default=True, metavar="FRACTION|PLAN.json",
              help="Fraction of each layer's parameters to keep, or a JSON plan {layer: rank or [r1, r2]}.")
@click.option("--rank-multiple", type=click.IntRange(min=1), default=1, show_default=True,
              help="Round ranks to a multiple of this (hardware-friendly shapes).")
@click.option("--data", default=None, help="Dataset name or path for accuracy (default: the zoo model's own).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output ONNX path [default: <model>.rene.onnx].")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the report as JSON here.")
@validate_options
def compress(model, weights, input_shape, method, ranks, rank_multiple, data, output, report_path,
             provider, latency, repeats):
    """Compress MODEL (a zoo name or package.module:callable) into a factorized ONNX model.

    With no MODEL, runs the built-in demo: a small ResNet trained on the UCI
    digits images that ship with scikit-learn.
    """
    from rene_onnx.cli.render import show_report, stage_status
    from rene_onnx.config import CompressConfig, RewriteConfig, ValidateConfig
    from rene_onnx.load import parse_shape
    from rene_onnx.pipeline import compress as run

    name = model.rsplit(":", 1)[-1].rsplit("/", 1)[-1].removesuffix(".onnx")
    cfg = CompressConfig(
        model=model, weights=weights, input_shape=parse_shape(input_shape),
        output=output or f"{name}.rene.onnx", report=report_path, data=data,
        rewrite=RewriteConfig(method=method, ranks=ranks, rank_multiple=rank_multiple),
        validate=ValidateConfig(provider=provider, latency=latency, repeats=repeats),
        command=shlex.join(["rene-onnx", *sys.argv[1:]]),
    )
    with stage_status() as progress:
        result = run(cfg, progress)
    show_report(result.report, result.notes)
    click.echo(f"wrote {result.output}" + (f" and {report_path}" if report_path else ""), err=True)
