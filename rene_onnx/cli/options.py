"""Option decorators shared by several commands."""
from __future__ import annotations

import click


def _compose(*decorators):
    def wrap(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return wrap


input_shape_option = click.option(
    "--input-shape", multiple=True, metavar="[NAME:]DIMS",
    help="Input shape with batch, e.g. 1,3,32,32 (zoo models know theirs); for a model with several inputs "
         "NAME:DIMS, repeated for each input with dynamic dims, e.g. --input-shape input_ids:1,128 "
         "--input-shape attention_mask:1,128.")

model_options = _compose(
    click.option("--weights", type=click.Path(dir_okay=False), default=None,
                 help="State dict (.pt) to load into the model (loaded with weights_only=True)."),
    input_shape_option,
)

validate_options = _compose(
    click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default=None,
                 help="onnxruntime execution provider for numerics and latency; fails if not really active "
                      "[default: cpu]."),
    click.option("--latency/--no-latency", default=True, show_default=True, help="Measure onnxruntime latency."),
    click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True,
                 help="Timed runs per model (median reported)."),
    click.option("--device-io", is_flag=True, default=False,
                 help="Time with inputs and outputs kept on the provider's device (onnxruntime I/O binding): the "
                      "model alone, without run()'s host <-> GPU copies. Same as the default on the CPU."),
)


class MethodChoice(click.Choice):
    """``auto`` and the registered decomposition methods (``rene_onnx.decompose.registry``), read at each use."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        from rene_onnx.decompose.choose import method_choices  # numpy only

        return ("auto",) + tuple(m for m in method_choices() if m != "auto")

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


calib_option = click.option(
    "--calib", type=click.Path(dir_okay=False), default=None,
    help="Unlabeled real inputs for a model without labeled data: .npy/.npz, or for a model with several inputs an "
         ".npz with one array per input name (integer inputs as integers). Without --data-free the search runs "
         "on them (output error to the original; SVD layers decomposed activation-aware, i.e. truncated for the "
         "least output error on these inputs); fine-tuning distills on them; both models are compared on them.")

latency_aware_option = click.option(
    "--latency-aware/--no-latency-aware", default=None,
    help="Keep a layer dense when its factorized chain is not faster on the provider (onnxruntime's per-node "
         "profile on the CPU; on a GPU each dense node and chain timed as a model of its own) "
         "[default: on when --provider is given, i.e. a deployment target is named].")

search_options = _compose(
    click.option("--method", type=MethodChoice(), default="auto", show_default=True,
                 help="The registered decompositions: tt, cp.. for k x k convs, svd for Linear and 1x1 convs (and "
                      "any conv); auto = per layer among the methods that are auto candidates for it (tt.. for "
                      "k x k, svd otherwise), by the least error at equal cost when searched."),
    click.option("--target-params", type=float, default=None, metavar="FRACTION",
                 help="Keep this fraction of the model's parameters (lands within +-2%)."),
    click.option("--target-macs", type=float, default=None, metavar="FRACTION",
                 help="Keep this fraction of the model's MACs (lands within +-2%)."),
    click.option("--gamma", type=float, default=0.4, show_default=True, help="Rank-loss weight (Eq. 5)."),
    click.option("--beta", type=float, default=0.8, show_default=True, help="Rank-loss exponent (Eq. 5)."),
    click.option("--preset", type=click.Choice(["auto", "paper-cifar", "paper-imagenet"]), default="auto",
                 show_default=True, help="Candidate ranks: scaled to each layer, or the paper's grids."),
    click.option("--search-steps", type=click.IntRange(min=1), default=60, show_default=True,
                 help="Alternating weight / alpha steps per search stage."),
    click.option("--rank-multiple", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Round ranks to a multiple of this (hardware-friendly shapes)."),
    click.option("--data", default=None,
                 help="Dataset name (digits, fashion-mnist) or folder (CIFAR pickles, idx files, ImageFolder) "
                      "[default: the zoo model's own]."),
    click.option("--data-free", is_flag=True, help="Search on the weights only (no forward pass, no labels)."),
    click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
                 help="Each finished search stage's rank plan is kept here, and a rerun of the same search "
                      "resumes from it [default: <output>.search/]."),
    click.option("--fresh", is_flag=True, default=False,
                 help="Start the search over, ignoring (and replacing) the plans in --checkpoint-dir."),
    click.option("--seed", type=int, default=0, show_default=True),
)


def search_config(method, target_params, target_macs, gamma, beta, preset, search_steps, rank_multiple, seed,
                  checkpoint_dir, fresh=False):
    """A SearchConfig from the shared search options (one place, used by compress and search)."""
    from rene_onnx.engine.search import SearchConfig

    for key, value in (("--target-params", target_params), ("--target-macs", target_macs)):
        if value is not None and not 0 < value < 1:
            raise click.BadParameter(f"must be in (0, 1), got {value}", param_hint=key)
    if target_params is not None and target_macs is not None:
        raise click.UsageError("give --target-params or --target-macs, not both")
    return SearchConfig(method=method, preset=preset, gamma=gamma, beta=beta, target_params=target_params,
                        target_macs=target_macs, steps=search_steps, rank_multiple=rank_multiple, seed=seed,
                        checkpoint_dir=checkpoint_dir, resume=not fresh)
