"""The held-out part of --calib: split (seeded, group-aware), never seen by search / init / distillation /
epoch selection, and the report's numerics naming their inputs (random inputs never give a top-1)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import rene_onnx
from rene_onnx.errors import UserError
from rene_onnx.pipeline.heldout import MIN_HELDOUT, needed, split_heldout
from fidelity_cases import marked_calib, markers, tiny_classifier_onnx


def test_split_is_seeded_disjoint_and_complete():
    used, held, _ = split_heldout(100, 0.2, seed=3)
    assert len(held) == 20 and not set(used) & set(held) and sorted([*used, *held]) == list(range(100))
    again, held2, _ = split_heldout(100, 0.2, seed=3)
    assert np.array_equal(held, held2) and np.array_equal(used, again)
    assert not np.array_equal(held, split_heldout(100, 0.2, seed=4)[1])


def test_split_keeps_each_group_on_one_side():
    groups = np.repeat(np.arange(10), 7)[np.random.default_rng(0).permutation(70)]
    used, held, how = split_heldout(70, 0.3, seed=0, groups=groups)
    assert not set(groups[used]) & set(groups[held])
    assert len(set(groups[held])) == 3 and "3 of 10 groups" in how


def test_too_few_samples_says_how_many_are_needed():
    assert needed(0.2) == 20 and needed(0.9) == MIN_HELDOUT + 2
    with pytest.raises(UserError, match=r"give at least 20 samples"):
        split_heldout(19, 0.2, seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fid")
    return tiny_classifier_onnx(d / "a.onnx"), marked_calib(d / "calib.npz")


def test_heldout_never_reaches_search_init_or_finetuning(files, monkeypatch):
    """Record every calib sample the search, the initialization and fine-tuning (train and selection) see."""
    import importlib

    engine_ft = importlib.import_module("rene_onnx.engine.finetune")
    comp = importlib.import_module("rene_onnx.pipeline.compress")  # the package attribute is the function

    model, calib = files
    seen: dict[str, set[int]] = {}

    def recording(name, fn, pick):
        def wrapped(*args, **kw):
            seen[name] = set().union(*(markers(t) for t in pick(*args, **kw)))
            return fn(*args, **kw)
        return wrapped

    monkeypatch.setattr(comp, "search_ranks", recording("search", comp.search_ranks, lambda h, c, s, x: [x[0]]))
    monkeypatch.setattr(comp, "init_factors", recording("init", comp.init_factors, lambda h, p, x, **k: [x[0]]))
    monkeypatch.setattr(engine_ft, "finetune", recording(
        "finetune", engine_ft.finetune, lambda s, t, train, val, cfg: [train.tensors[0], val.tensors[0]]))
    res = rene_onnx.compress(str(model), calib=str(calib), target_params=0.5, epochs=1, batch_size=16,
                             search_steps=5, latency=False)
    groups = np.repeat(np.arange(15), 4)
    used, held, _ = split_heldout(60, 0.2, seed=0, groups=groups)
    assert set(seen) == {"search", "init", "finetune"}
    for name, got in seen.items():
        assert got == set(used.tolist()), name  # all of the used part, nothing held out
    entry = res.report.numerics["calib"]
    assert entry["inputs"] == "calib-heldout" and entry["n"] == len(held) == 12
    assert res.report.meta["holdout"]["held_out"] == 12 and res.report.meta["calib"]["samples"] == 60


def test_numerics_name_inputs_and_random_gives_no_top1(files, tmp_path):
    model, _ = files
    out = tmp_path / "r.json"
    res = rene_onnx.compress(str(model), data_free=True, target_params=0.5, epochs=0, latency=False, report=str(out))
    d = json.loads(out.read_text())["numerics"]
    assert d["inputs"] == "random" and d["n"] == 1
    assert d["vs_original"]["inputs"] == "random" and "top1_agreement" not in d["vs_original"]
    assert "top5_overlap" not in d["vs_original"] and "calib" not in d
    from rene_onnx.report.table import render_text

    text = render_text(res.report, width=400)
    assert "accuracy unknown" in text and "--calib" in text and "agreement" not in text
    assert "rene-onnx inputs" in text  # and how to get real inputs without a dataset


def test_validate_command_labels_calib_inputs(files, tmp_path):
    model, calib = files
    res = rene_onnx.validate(str(model), str(model), calib=str(calib), latency=False)
    n = res.report.numerics
    assert n["inputs"] == "random" and "top1_agreement" not in n
    assert n["calib"]["inputs"] == "calib" and n["calib"]["top1_agreement"] == 1.0 and n["calib"]["n"] == 60
