"""``rene-onnx search``: run the RENE rank search and write the rank plan (JSON) for ``compress --ranks``."""
from __future__ import annotations

import click

from rene_onnx.cli.options import from_fields, given
from rene_onnx.options import DEMO_MODEL, SearchCommandOptions


@click.command()
@click.argument("model", required=False, default=DEMO_MODEL)
@from_fields(SearchCommandOptions)
@click.pass_context
def search(ctx: click.Context, model, **options):
    """Search per-layer ranks for MODEL and write them as a JSON rank plan.

    `rene-onnx compress MODEL --ranks plan.json` then skips the search (give it the same --calib to
    initialize the SVD layers activation-aware again).
    """
    from rene_onnx.api import search as run
    from rene_onnx.cli.render import command_line, out, progress_display, show_notes, wrote

    options = given(ctx, options)
    options.setdefault("output", "plan.json")
    with progress_display():
        result = run(model, command=command_line(), **options)
    show_notes(result.notes)
    s = result.report.search
    out.print(f"{s['mode']} search: {len(result.plan.factorized())} of {len(result.plan.layers)} layers factorized, "
              f"params kept {100 * s['params_fraction']:.1f}%, MACs kept {100 * s['macs_fraction']:.1f}%, "
              f"{result.seconds:.1f} s")
    wrote(result.paths)
