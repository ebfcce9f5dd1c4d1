"""``rene-onnx search``: run the RENE rank search and write the rank plan (JSON) for ``compress --ranks``."""
from __future__ import annotations

import click

from rene_onnx.cli.options import calib_option, model_options, search_config, search_options


@click.command()
@click.argument("model", required=False, default="digits_resnet")
@model_options
@search_options
@calib_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="plan.json", show_default=True,
              help="Where to write the rank plan.")
@click.option("--plots", type=click.Path(file_okay=False), default=None,
              help="Write ranks.png, layers.png and search.png (the search trace) into this folder.")
def search(model, weights, input_shape, method, target_params, target_macs, gamma, beta, preset, search_steps,
           rank_multiple, data, data_free, checkpoint_dir, fresh, seed, calib, output, plots):
    """Search per-layer ranks for MODEL and write them as a JSON rank plan.

    `rene-onnx compress MODEL --ranks plan.json` then skips the search (give it the same --calib to
    initialize the SVD layers activation-aware again).
    """
    from rene_onnx.cli.render import out, stage_status
    from rene_onnx.config import CompressConfig, RewriteConfig
    from rene_onnx.files import check_io, existing, model_reads
    from rene_onnx.load import parse_input_shapes
    from rene_onnx.pipeline import calib_inputs, layer_shapes, load_data, load_model, search_ranks
    from rene_onnx.report.figures import plot_paths, write_plots
    from rene_onnx.report.search import search_report

    protect = (model, weights, data, calib, output)
    if plots:
        plot_paths(plots, protect)  # refuse before the search, not after it
    checkpoint_dir = checkpoint_dir or f"{output}.search"
    check_io({"model": model_reads(model), "weights": weights, "calib": calib, "data": existing(data),
              "checkpoint_dir": existing(checkpoint_dir)}, {"output": output})
    cfg = CompressConfig(
        model=model, weights=weights, input_shape=parse_input_shapes(input_shape), data=data, data_free=data_free,
        calib=calib,
        rewrite=RewriteConfig(method=method, rank_multiple=rank_multiple),
        search=search_config(method, target_params, target_macs, gamma, beta, preset, search_steps, rank_multiple,
                             seed, checkpoint_dir, fresh),
    )
    with stage_status() as progress:
        handle = load_model(cfg)
        splits = load_data(cfg, handle)
        result = search_ranks(handle, cfg, splits, progress, calib_inputs(cfg, handle) if splits is None else None)
    # no timings in the plan: the same search (model, options, seed) writes the same bytes
    result.plan.meta["search"] = {**result.plan.meta.get("search", {}),
                                  "params_fraction": result.params_fraction, "macs_fraction": result.macs_fraction}
    result.plan.save(output)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    out.print(f"{result.mode} search: {len(result.plan.factorized())} of {len(result.plan.layers)} layers factorized, "
              f"params kept {100 * result.params_fraction:.1f}%, MACs kept {100 * result.macs_fraction:.1f}%, "
              f"{result.seconds:.1f} s")
    click.echo(f"wrote {output}", err=True)
    if plots:
        rep = search_report(result, layer_shapes(handle), {n: r.op_type for n, r in handle.layer_map.items()},
                            {"model": model})
        click.echo(f"wrote {', '.join(map(str, write_plots(rep, plots, protect=protect)))}", err=True)
