"""Option decorators shared by several commands."""
from __future__ import annotations

import click


def _compose(*decorators):
    def wrap(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return wrap


model_options = _compose(
    click.option("--weights", type=click.Path(dir_okay=False), default=None,
                 help="State dict (.pt) to load into the model (loaded with weights_only=True)."),
    click.option("--input-shape", default=None, metavar="N,C,H,W",
                 help="Input shape with batch 1, e.g. 1,3,32,32 (zoo models know theirs)."),
)

validate_options = _compose(
    click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
                 help="onnxruntime execution provider for numerics and latency (fails if not really active)."),
    click.option("--latency/--no-latency", default=True, show_default=True, help="Measure onnxruntime latency."),
    click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True,
                 help="Timed runs per model (median reported)."),
)
