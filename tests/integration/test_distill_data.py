"""--distill-data, --distill-layers, --output-weight, --weight-term on a tiny BERT-like encoder (two int64 inputs):
the extra inputs are only trained on, the distillation points and loss weights reach fine-tuning and the report,
and bad values are one error line naming the flag."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import rene_onnx
from cli_inproc import cli
from tiny_bert import TinyBert, export_tiny_bert

SHAPES = {"input_ids": (1, 16), "attention_mask": (1, 16)}
VOCAB = 50


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("distill")
    torch.manual_seed(0)
    onnx.save(export_tiny_bert(TinyBert(vocab=VOCAB, d=32, ff=64, blocks=2).eval()), str(folder / "tiny.onnx"))
    for name, n, seed in (("calib", 40, 0), ("extra", 60, 1)):
        rng = np.random.default_rng(seed)
        mask = np.ones((n, 16), np.int64)
        mask[::2, 8:] = 0
        np.savez(folder / f"{name}.npz", input_ids=rng.integers(0, VOCAB, (n, 16)).astype(np.int64),
                 attention_mask=mask)
    return folder


def _compress(folder, **options):
    common = dict(input_shape=SHAPES, calib=folder / "calib.npz", target_params=0.85, search_steps=3, epochs=1,
                  optimizer="adamw", lr=1e-3, batch_size=8, latency=False, seed=0)
    if "ranks" in options:
        common["target_params"] = None
    return rene_onnx.compress(folder / "tiny.onnx", **{**common, **options})


def test_distill_data_is_trained_on_but_not_searched_or_selected_on(tiny):
    plain = _compress(tiny)
    extra = _compress(tiny, distill_data=tiny / "extra.npz")
    fp, fe = plain.report.meta["finetune"], extra.report.meta["finetune"]
    used = plain.report.meta["holdout"]["used"]  # --calib less its held-out part
    assert 0 < used < 40 and plain.report.meta["holdout"]["held_out"] == 40 - used
    train = round(0.9 * used)  # the training part (9/10) of what is used; then + the extra inputs
    assert fp["train_samples"] == train and fe["train_samples"] == train + 60
    # the search and the init see --calib only: the same plan; the training saw other batches: other weights
    assert plain.plan.to_dict()["layers"] == extra.plan.to_dict()["layers"]
    # one epoch at this lr does not beat the initialization on the selection split in either run, so both keep
    # the initialized student: byte-identical, which shows the extra inputs never reached the initialization
    assert fp["best_epoch"] == fe["best_epoch"] == 0
    assert plain.model.SerializeToString() == extra.model.SerializeToString()
    assert fe["steps"] > fp["steps"]
    assert extra.report.meta["calib"]["samples"] == 40


def test_distill_points_and_loss_weights_reach_finetuning(tiny):
    res = _compress(tiny, ranks=0.5, distill_layers="factorized,*layer_norm*", output_weight=3.0,
                    weight_term=False, lambda_diss=2.0)
    ft = res.report.meta["finetune"]
    factorized = sum(1 for row in res.report.to_dict()["layers"] if row.get("method") not in (None, "dense"))
    assert ft["distilled_layers"] == factorized + 4  # two post-LN blocks: two LayerNorms each
    assert (ft["output_weight"], ft["weight_term"], ft["lambda_diss"]) == (3.0, False, 2.0)
    assert _compress(tiny, ranks=0.5).report.meta["finetune"]["distilled_layers"] == factorized


@pytest.mark.parametrize("extra, flag", [
    (["--distill-layers", "factorized,no_such_layer*"], "--distill-layers"),
    (["--distill-data", "missing.npz"], "--distill-data"),
    (["--distill-data", "wrong.npz"], "--distill-data"),
])
def test_bad_distillation_options_name_the_flag(tiny, extra, flag):
    np.savez(tiny / "wrong.npz", input_ids=np.zeros((4, 16), np.int64))
    r = cli("compress", "tiny.onnx", "--input-shape", "input_ids:1,16", "--input-shape", "attention_mask:1,16",
            "--calib", "calib.npz", "--ranks", "0.5", "--epochs", "1", "--batch-size", "8", "--no-latency",
            *extra, "-o", "out.onnx", cwd=tiny)
    assert r.exit_code == 2 and flag in r.output, r.output
    assert not (tiny / "out.onnx").exists()


def test_distill_data_without_calib_is_a_config_error(tiny):
    r = cli("compress", "digits_resnet", "--data", "digits", "--ranks", "0.5", "--epochs", "1",
            "--distill-data", "extra.npz", "-o", "d.onnx", cwd=tiny)
    assert r.exit_code == 2 and "--distill-data" in r.output and "--calib" in r.output, r.output
