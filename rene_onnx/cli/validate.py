"""``rene-onnx validate``: two ONNX models side by side (numerics, MACs, params, latency, top-1)."""
from __future__ import annotations

from pathlib import Path

import click

from rene_onnx.cli.options import input_shape_option, validate_options


@click.command()
@click.argument("original", type=click.Path(dir_okay=False))
@click.argument("compressed", type=click.Path(dir_okay=False))
@input_shape_option
@click.option("--data", default=None, help="Dataset name or path: top-1 of both models on its test split.")
@click.option("--calib", type=click.Path(dir_okay=False), default=None,
              help="Real unlabeled inputs (.npz with one array per graph input name, or a .npy for one input): "
                   "both models' outputs are also compared on up to 64 of its samples.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None, help="Write JSON here.")
@click.option("--runtime", type=click.Choice(["onnxruntime", "openvino"]), default="onnxruntime", show_default=True,
              help="Runtime for numerics and latency: onnxruntime, or OpenVINO's CPU plugin (pip install "
                   "'rene-onnx[openvino]'), both models side by side in one process.")
@validate_options
def validate(original, compressed, input_shape, data, calib, report_path, runtime, provider, latency, repeats,
             device_io):
    """Compare ORIGINAL and COMPRESSED (any two ONNX models with the same inputs).

    Inputs follow the graph's dtypes: floats are random normal, an integer input that indexes an
    embedding table gets ids within it, other integer inputs ones, bool inputs True. With --calib the
    outputs are also compared on real inputs (numerics.calib; mean_sample_cosine is the embedding
    models' fidelity measure).
    """
    from rene_onnx.cli.render import show_report, stage_status
    from rene_onnx.load import LoadError, parse_input_shapes
    from rene_onnx.load_onnx import read_onnx
    from rene_onnx.report.report import Report, environment_meta
    from rene_onnx.validate.numerics import input_feeds
    from rene_onnx.validate.pair import compare_pair
    from rene_onnx.validate.runtimes import check_runtime

    from rene_onnx.files import check_io, existing, model_reads

    check_io({"original": model_reads(original) or [original], "compressed": model_reads(compressed) or [compressed],
              "data": existing(data), "calib": calib}, {"report": report_path})
    check_runtime(runtime, provider or "cpu")
    with stage_status() as progress:
        progress("load", {})
        a, b = read_onnx(original), read_onnx(compressed)
        shapes = _input_shapes(a, parse_input_shapes(input_shape))
        try:
            feeds = input_feeds(a, shapes)
        except ValueError as e:
            raise LoadError(f"{Path(original).name}: {e} (give dynamic dims with --input-shape [NAME:]DIMS)") from None
        test_data = None
        if data:
            from rene_onnx.pipeline import test_split_arrays

            progress("data", {"data": data})
            test_data = test_split_arrays(data)
        calib_numerics = None
        if calib:
            progress("calib", {"calib": calib})
            calib_numerics = _calib_numerics(a, b, Path(original).name, shapes, calib, provider or "cpu", runtime)
        progress("validate", {})
        res = compare_pair(a, b, feeds, shapes, provider or "cpu", latency, repeats=repeats, test_data=test_data,
                           device_io=device_io, runtime=runtime)
    ca, cb = res.counts
    report = Report(
        params={"before": ca.params, "after": cb.params}, macs={"before": ca.macs, "after": cb.macs},
        latency_ms=res.latency, layers=[], search=None, accuracy=res.accuracy,
        numerics={**vars(res.numerics), **({"calib": calib_numerics} if calib else {})},
        meta={"original": str(original), "compressed": str(compressed), "runtime": runtime, **environment_meta()},
    )
    show_report(report)
    if report_path:
        report.save_json(report_path)


def _calib_numerics(a, b, name, shapes, calib, provider, runtime="onnxruntime"):
    """Both models compared on up to 64 samples of the --calib inputs (a dict for the report, or None)."""
    from rene_onnx.data.arrays import unlabeled_input_arrays
    from rene_onnx.load import LoadError
    from rene_onnx.load_onnx import input_specs
    from rene_onnx.validate.numerics import compare, compare_on_inputs
    from rene_onnx.validate.pair import run_on

    specs, _ = input_specs(a, shapes or {}, name)
    try:
        tensors = unlabeled_input_arrays(calib, specs)
    except ValueError as e:
        raise LoadError(f"--calib {calib}: {e}") from None
    arrays = {s.name: t.numpy() for s, t in zip(specs, tensors)}
    if runtime != "onnxruntime":  # both models on the other runtime, in the graphs' batch (fixed or 1 .. all)
        first = a.graph.input[0].type.tensor_type.shape.dim
        fixed = first[0].dim_value if first and first[0].HasField("dim_value") else None
        return vars(compare(run_on(runtime, a, arrays, fixed, 64), run_on(runtime, b, arrays, fixed, 64)))
    res = compare_on_inputs(a, b, arrays, provider, limit=64)
    return None if res is None else vars(res)


def _input_shapes(model, given):
    """``--input-shape`` (a plain shape or {name: shape}) -> {graph input name: shape} (None when not given)."""
    from rene_onnx.load import LoadError
    from rene_onnx.validate._graph import graph_inputs

    if given is None or isinstance(given, dict):
        return given
    names = [i.name for i in graph_inputs(model)]
    if len(names) != 1:
        raise LoadError(f"the model has {len(names)} inputs ({', '.join(names)}): give --input-shape NAME:DIMS "
                        f"for each input with dynamic dims")
    return {names[0]: given}
