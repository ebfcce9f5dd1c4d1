"""``rene-onnx compress``: model in, factorized, fine-tuned and validated ONNX model (and report) out."""
from __future__ import annotations

import click

from rene_onnx.cli.options import from_fields, given
from rene_onnx.options import CompressOptions


@click.command()
@click.argument("model", required=False, default=None)
@from_fields(CompressOptions)
@click.pass_context
def compress(ctx: click.Context, model, **options):
    """Compress MODEL (a zoo name, package.module:callable, or an .onnx file) into a factorized ONNX model.

    Ranks come from the RENE search unless --ranks is given. With no MODEL, runs the built-in demo: a
    small ResNet trained on the UCI digits images that ship with scikit-learn, searched to
    --target-params 0.3 unless told otherwise, then fine-tuned on digits (its factorized layers are kept even
    where they are slower than dense on this tiny model: --latency-aware to revert them).
    """
    from rene_onnx.api import compress as run
    from rene_onnx.cli.render import command_line, progress_display, show_notes, show_report, wrote

    options = given(ctx, options)
    if options.get("output") is None:  # a command writes its result; the library only when asked
        name = (model or "digits_resnet").rsplit(":", 1)[-1].rsplit("/", 1)[-1].removesuffix(".onnx")
        options["output"] = f"{name}.rene.onnx"
    with progress_display():
        result = run(model, command=command_line(), **options)
    show_notes(result.notes)
    show_report(result.report)
    if result.export is not None:
        from rene_onnx.cli.render import out
        from rene_onnx.report.edge import render_export

        for r in render_export(result.export.report):
            out.print(r)
    wrote(result.paths)
