"""``rene-onnx validate``: two ONNX models side by side (numerics, MACs, params, latency, top-1)."""
from __future__ import annotations

import click

from rene_onnx.cli.options import validate_options


@click.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("compressed", type=click.Path(dir_okay=False))
@click.option("--input-shape", default=None, metavar="N,C,H,W", help="Shape for a graph input with dynamic dims.")
@click.option("--data", default=None, help="Dataset name or path: top-1 of both models on its test split.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None, help="Write JSON here.")
@validate_options
def validate(original, compressed, input_shape, data, report_path, provider, latency, repeats):
    """Compare ORIGINAL and COMPRESSED (any two ONNX models with the same inputs)."""
    from rene_onnx.cli.render import show_report, stage_status
    from rene_onnx.load import parse_shape
    from rene_onnx.load_onnx import read_onnx
    from rene_onnx.report.report import Report, environment_meta
    from rene_onnx.validate.numerics import input_feeds
    from rene_onnx.validate.pair import compare_pair

    with stage_status() as progress:
        progress("load", {})
        a, b = read_onnx(original), read_onnx(compressed)
        shape = parse_shape(input_shape)
        shapes = None
        if shape is not None:
            init = {i.name for i in a.graph.initializer}
            first = next(i.name for i in a.graph.input if i.name not in init)
            shapes = {first: shape}
        feeds = input_feeds(a, shapes)
        test_data = None
        if data:
            from rene_onnx.pipeline import test_split_arrays

            progress("data", {"data": data})
            test_data = test_split_arrays(data)
        progress("validate", {})
        res = compare_pair(a, b, feeds, shapes, provider or "cpu", latency, repeats=repeats, test_data=test_data)
    ca, cb = res.counts
    report = Report(
        params={"before": ca.params, "after": cb.params}, macs={"before": ca.macs, "after": cb.macs},
        latency_ms=res.latency, numerics=vars(res.numerics), layers=[], search=None, accuracy=res.accuracy,
        meta={"original": str(original), "compressed": str(compressed), **environment_meta()},
    )
    show_report(report)
    if report_path:
        report.save_json(report_path)
