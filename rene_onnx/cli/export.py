"""``rene-onnx export``: any ONNX model -> INT8 / FP16 / ORT-format files for edge runtimes, each validated."""
from __future__ import annotations

import click

from rene_onnx.cli.options import from_fields, given
from rene_onnx.export.orchestrator import ExportConfig


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@from_fields(ExportConfig)
@click.pass_context
def export(ctx: click.Context, model, **options):
    """Export MODEL (any ONNX model, compressed or not) for edge runtimes, with a report that validates each file.

    Example: rene-onnx export model.onnx --to int8,fp16,ort --calib inputs.npz -o edge/
    """
    from rene_onnx.cli.render import console, out
    from rene_onnx.export import export_model
    from rene_onnx.progress import listen
    from rene_onnx.report.edge import render_export

    options = given(ctx, options)
    if "fixed_shape" in options:
        options["fixed_shape"] = list(options["fixed_shape"]) or None
    with console.status("export") as status, listen(lambda e: status.update(e.describe())):
        res = export_model(model, **options)
    for r in render_export(res.report):
        out.print(r)
    for kind, path in res.paths.items():
        console.print(f"[dim]wrote {kind}: {path}[/]")
