"""``rene-onnx validate``: two ONNX models side by side (numerics, MACs, params, latency, top-1)."""
from __future__ import annotations

import click

from rene_onnx.cli.options import from_fields, given
from rene_onnx.options import ValidateOptions


@click.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("compressed", type=click.Path(dir_okay=False))
@from_fields(ValidateOptions)
@click.pass_context
def validate(ctx: click.Context, original, compressed, **options):
    """Compare ORIGINAL and COMPRESSED (any two ONNX models with the same inputs).

    Inputs follow the graph's dtypes: floats are random normal, an integer input that indexes an
    embedding table gets ids within it, other integer inputs ones, bool inputs True. With --calib the
    outputs are also compared on real inputs (numerics.calib; mean_sample_cosine is the embedding
    models' fidelity measure).
    """
    from rene_onnx.api import validate as run
    from rene_onnx.cli.render import command_line, progress_display, show_report, wrote

    options = given(ctx, options)
    with progress_display():
        result = run(original, compressed, command=command_line(), **options)
    show_report(result.report)
    if options.get("report"):
        wrote({"report": options["report"]})
