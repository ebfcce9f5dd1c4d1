"""``rene-onnx inputs``: real inputs for a model from offline photos or sentences, as a --calib file."""
from __future__ import annotations

import click

from rene_onnx.cli.options import from_fields, given
from rene_onnx.options import InputsOptions


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@from_fields(InputsOptions)
@click.pass_context
def inputs(ctx: click.Context, model, **options):
    """Write real inputs for MODEL (an ONNX file) to -o FILE.npz, from data that ships with this machine.

    An image model (one input N,3,H,W) gets crops of the sample photos that scikit-image, scikit-learn
    and matplotlib ship (or of --photos DIR), normalized with ImageNet's mean / std unless told. A text
    model (token-id inputs) gets English sentences from the licenses, package docs and Python docstrings
    on disk, tokenized by its own --tokenizer. The file also holds `groups` (the photo or document of
    each sample): `compress --calib` holds whole groups out for its fidelity figures.
    """
    from rene_onnx.api import inputs as run
    from rene_onnx.cli.render import console, progress_display, wrote

    options = given(ctx, options)
    with progress_display():
        made = run(model, **options)
    src = made.source
    if made.kind == "photos":
        click.echo(f"{len(made)} crops of {src['photos']} photos ({src['per_photo']} per photo, "
                   f"{src['size'][0]}x{src['size'][1]}, from {src['from']})")
    else:
        click.echo(f"{len(made)} sentences from {src['documents']} documents ({', '.join(src['sources'])}), "
                   f"{src['length']} tokens each ({src['truncated']} truncated)")
    for name, a in made.arrays.items():
        click.echo(f"  {name}: {a.dtype} {list(a.shape)}")
    wrote({"inputs": options["output"]})
    console.print(f"next: rene-onnx compress {model} --calib {options['output']} --min-fidelity 0.9 -o small.onnx",
                  highlight=False, soft_wrap=True)
