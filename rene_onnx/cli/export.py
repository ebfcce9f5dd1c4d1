"""``rene-onnx export``: any ONNX model -> INT8 / FP16 / ORT-format files for edge runtimes, each validated."""
from __future__ import annotations

import click

CHOICES = {"quantization": ["auto", "static", "dynamic"], "method": ["minmax", "entropy", "percentile"]}


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--to", "to", default="int8", show_default=True, metavar="TARGETS",
              help="Comma-separated artifacts: int8 (onnxruntime QDQ), fp16 (onnxconverter-common), ort (ORT format "
                   "+ required_operators.config).")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), required=True,
              help="Folder for <stem>.int8.onnx, <stem>.fp16.onnx, <stem>.ort and <stem>.export.json (created if "
                   "missing; nothing is left there when the export fails).")
@click.option("--calib", type=click.Path(dir_okay=False), default=None,
              help="Real inputs (.npz, one array per graph input; may hold 'groups', e.g. the photo of each crop): "
                   "INT8 calibrates on them; --held-out-fraction of them (whole groups) is held out for fidelity.")
@click.option("--held-out", type=click.Path(dir_okay=False), default=None,
              help="Held-out real inputs for fidelity (.npz); then all of --calib calibrates.")
@click.option("--held-out-fraction", type=float, default=0.25, show_default=True,
              help="Share of --calib held out for fidelity when --held-out is not given (0: none).")
@click.option("--original", type=click.Path(dir_okay=False), default=None,
              help="The uncompressed model: fidelity is measured against it, and factorized chains' INT8 errors are "
                   "compared with its dense layers' [default: MODEL itself].")
@click.option("--name", default=None, help="File stem of the artifacts [default: MODEL's].")
@click.option("--quantization", type=click.Choice(CHOICES["quantization"]), default="auto", show_default=True,
              help="INT8 kind: static (QDQ, calibrated), dynamic (weights only; for MatMul-heavy models); auto = "
                   "static with --calib, dynamic for a model without convs and no --calib.")
@click.option("--calibration-method", type=click.Choice(CHOICES["method"]), default="minmax", show_default=True)
@click.option("--calib-samples", type=click.IntRange(min=1), default=128, show_default=True,
              help="Calibration samples used for INT8 at most.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="INT8 weight scales.")
@click.option("--activation-type", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True,
              help="INT8 activations: uint8 for x86 CPUs, int8 for ARM.")
@click.option("--reduce-range", is_flag=True, help="7-bit weights (x86 CPUs without VNNI).")
@click.option("--layer-errors/--no-layer-errors", default=True, show_default=True,
              help="Per-layer INT8 error, each layer quantized alone (factorized chains vs their dense layer).")
@click.option("--lossy-chains", type=click.Choice(["report", "float"]), default="report", show_default=True,
              help="Factorized chains that INT8 hurts clearly more than their dense layer: report them, or keep them "
                   "in float in the INT8 model (needs --original).")
@click.option("--lossy-ratio", type=click.FloatRange(min=1.0), default=2.5, show_default=True,
              help="A chain is lossy when its INT8 error is at least this many times its dense layer's (about 1.7x is "
                   "what three quantized factors cost anyway).")
@click.option("--keep-io-types/--no-keep-io-types", default=True, show_default=True,
              help="FP16: keep float32 graph inputs and outputs.")
@click.option("--fixed-shape", multiple=True, metavar="[NAME:]DIMS|PARAM=N",
              help="Make dynamic dims static (NNAPI / CoreML), e.g. input:1,3,224,224 or batch=1; repeatable.")
@click.option("--opset", type=int, default=None, help="Convert to this opset first (onnx.version_converter).")
@click.option("--runtime", default="onnxruntime", show_default=True, metavar="RUNTIMES",
              help="Comma-separated runtimes for numerics and latency: onnxruntime, openvino (extra 'openvino').")
@click.option("--latency/--no-latency", default=True, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads for latency.")
def export(model, to, output_dir, calib, held_out, held_out_fraction, original, name, quantization,
           calibration_method, calib_samples, per_channel, activation_type, reduce_range, layer_errors, lossy_chains,
           lossy_ratio, keep_io_types, fixed_shape, opset, runtime, latency, repeats, threads):
    """Export MODEL (any ONNX model, compressed or not) for edge runtimes, with a report that validates each file.

    Example: rene-onnx export model.onnx --to int8,fp16,ort --calib inputs.npz -o edge/
    """
    from rene_onnx.cli.render import console, out
    from rene_onnx.export import export_model
    from rene_onnx.progress import listen
    from rene_onnx.report.edge import render_export

    with console.status("export") as status, listen(lambda e: status.update(e.describe())):
        res = export_model(model, to=to, output_dir=output_dir, calib=calib, held_out=held_out,
                           held_out_fraction=held_out_fraction, original=original, name=name,
                           quantization=quantization, calibration_method=calibration_method,
                           calib_samples=calib_samples, per_channel=per_channel, activation_type=activation_type,
                           reduce_range=reduce_range, layer_errors=layer_errors, lossy_chains=lossy_chains,
                           lossy_ratio=lossy_ratio,
                           keep_io_types=keep_io_types, fixed_shape=list(fixed_shape) or None, opset=opset,
                           runtime=runtime, latency=latency, repeats=repeats, threads=threads)
    for r in render_export(res.report):
        out.print(r)
    for kind, path in res.paths.items():
        console.print(f"[dim]wrote {kind}: {path}[/]")
