"""``rene-onnx zoo``: list the built-in architectures."""
from __future__ import annotations

import click


@click.command()
def zoo():
    """List the model zoo (name, input shape, bundled checkpoint)."""
    from rene_onnx import models

    for name in models.list_models():
        ckpt = models.default_checkpoint(name)
        shape = ",".join(map(str, models.input_shape(name)))
        click.echo(f"{name:16s} input {shape:14s} {'weights: ' + ckpt.name if ckpt else 'random init'}")
