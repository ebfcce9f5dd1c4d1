"""Multi-input / integer-input ONNX models (transformers) through the loader, the counter, the data and the CLI.

A tiny BERT-like encoder (tests/tiny_bert.py: embeddings, attention blocks, mean pooling over the mask;
int64 input_ids + attention_mask, dynamic batch and sequence) is exported once with the dynamo exporter.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from rene_onnx.data import unlabeled_dataset, unlabeled_input_arrays
from rene_onnx.load import InputSpec, LoadError, parse_input_shapes
from rene_onnx.load import load_onnx
from rene_onnx.graph import index_ranges
from rene_onnx.validate.counts import count_onnx
from rene_onnx.validate.numerics import input_feeds, make_session

from tiny_bert import TinyBert, export_tiny_bert

CLI = [sys.executable, "-m", "rene_onnx.cli.main"]
SHAPES = ["--input-shape", "input_ids:1,16", "--input-shape", "attention_mask:1,16"]
D, FF, BLOCKS, VOCAB = 32, 64, 2, 50


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(path of the exported tiny BERT, the torch model)."""
    torch.set_num_threads(1)
    model = TinyBert(vocab=VOCAB, d=D, ff=FF, blocks=BLOCKS).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(export_tiny_bert(model), str(path))
    return path, model


def _tokens(n: int, seq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (n, seq)).astype(np.int64)
    mask = np.ones((n, seq), np.int64)
    mask[::2, seq // 2:] = 0  # every other sentence padded
    return ids, mask


def _dims(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


# ---------------------------------------------------------------------------------------------- --input-shape


def test_parse_input_shapes():
    assert parse_input_shapes(()) is None and parse_input_shapes(None) is None
    assert parse_input_shapes(["1,3,32,32"]) == (1, 3, 32, 32)
    assert parse_input_shapes(["input_ids:1,16", "attention_mask:1x16"]) == {"input_ids": (1, 16),
                                                                             "attention_mask": (1, 16)}
    for bad, msg in ((["1,3", "x:1,2"], "not both"), (["1,3", "1,4"], "several plain"),
                     (["a:1,2", "a:1,3"], "twice"), ([":1,2"], "name before ':' is empty"),
                     (["a:1,0"], "positive"), (["a:one"], "integers")):
        with pytest.raises(LoadError, match=msg):
            parse_input_shapes(bad)


# ---------------------------------------------------------------------------------------------- example data


def _graph_with_tables():
    """ids -> Cast -> Gather(table 7 rows); types -> Gather(table 3 rows) and Gather(table 5 rows); mask not
    gathered; flag bool."""
    F = TensorProto.FLOAT
    inits = [numpy_helper.from_array(np.ones((7, 4), np.float32), "tok"),
             numpy_helper.from_array(np.ones((3, 4), np.float32), "typ"),
             numpy_helper.from_array(np.ones((5, 4), np.float32), "typ2")]
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("Gather", ["tok", "ids64"], ["e1"]),
             helper.make_node("Gather", ["typ", "types"], ["e2"]),
             helper.make_node("Gather", ["typ2", "types"], ["e3"]),
             helper.make_node("Cast", ["mask"], ["mf"], to=F),
             helper.make_node("Cast", ["flag"], ["ff"], to=F),
             helper.make_node("Sum", ["e1", "e2", "e3"], ["s"]),
             helper.make_node("Unsqueeze", ["mf", "ax"], ["mu"]),
             helper.make_node("Mul", ["s", "mu"], ["y0"]),
             helper.make_node("Mul", ["y0", "ff"], ["y"])]
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "ax"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["B", 6]),
                                       helper.make_tensor_value_info("types", TensorProto.INT64, ["B", 6]),
                                       helper.make_tensor_value_info("mask", TensorProto.INT64, ["B", 6]),
                                       helper.make_tensor_value_info("flag", TensorProto.BOOL, [1])],
                          [helper.make_tensor_value_info("y", F, ["B", 6, 4])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def test_integer_inputs_get_valid_values():
    m = _graph_with_tables()
    assert index_ranges(m) == {"ids": 7, "types": 3}  # through the Cast; the smaller of two tables
    feeds = input_feeds(m, {"ids": (4, 6), "types": (4, 6), "mask": (4, 6)}, seed=1)
    assert feeds["ids"].dtype == np.int32 and feeds["ids"].min() >= 0 and feeds["ids"].max() < 7
    assert len(np.unique(feeds["ids"])) > 1  # random ids, not a constant
    assert feeds["types"].max() < 3 and (feeds["mask"] == 1).all() and feeds["flag"].dtype == bool
    assert feeds["flag"].all()
    out = make_session(m).run(None, feeds)[0]  # valid for onnxruntime (out-of-range ids would fail)
    assert out.shape == (4, 6, 4) and np.isfinite(out).all()


# ---------------------------------------------------------------------------------------------- counting


def _dynamic_encoder(T_pos: int = 32, d: int = 8, ff: int = 12) -> tuple[onnx.ModelProto, dict]:
    """Embeddings (token Gather + position rows gathered at Range(0, run-time length): shape inference loses
    the sequence dim there) -> MatMul(const) + Add -> attention-like MatMul of run-time tensors -> MatMul(const)."""
    rng = np.random.default_rng(0)
    F, I = TensorProto.FLOAT, TensorProto.INT64
    w = {"tok": rng.standard_normal((20, d)), "pos": rng.standard_normal((T_pos, d)),
         "w1": rng.standard_normal((d, ff)), "b1": rng.standard_normal(ff), "w2": rng.standard_normal((ff, d)),
         "wp": rng.standard_normal((d, d))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), k)
              for k, v in (("zero", 0), ("step", 1), ("one", [1]), ("two", [2]))]
    nodes = [
        helper.make_node("Gather", ["tok", "ids"], ["emb"]),
        helper.make_node("Shape", ["ids"], ["shp"]),
        helper.make_node("Slice", ["shp", "one", "two"], ["tlen"]),
        helper.make_node("Squeeze", ["tlen"], ["tlen0"]),
        helper.make_node("Range", ["zero", "tlen0", "step"], ["positions"]),
        helper.make_node("Gather", ["pos", "positions"], ["pos_t"]),
        helper.make_node("MatMul", ["pos_t", "wp"], ["pos_p"], name="posproj"),
        helper.make_node("Add", ["emb", "pos_p"], ["h"]),
        helper.make_node("MatMul", ["h", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Transpose", ["h1b"], ["h1t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["h1b", "h1t"], ["scores"], name="attn"),
        helper.make_node("MatMul", ["scores", "h"], ["ctx"], name="mix"),
        helper.make_node("MatMul", ["ctx", "w1"], ["h2"], name="fc1b"),
        helper.make_node("MatMul", ["h2", "w2"], ["y"], name="fc2"),
    ]
    g = helper.make_graph(nodes, "enc", [helper.make_tensor_value_info("ids", I, ["batch", "seq"])],
                          [helper.make_tensor_value_info("y", F, ["batch", "seq", d])], initializer=inits)
    # an exporter's stale symbolic value_info, which plain inference would keep
    g.value_info.append(helper.make_tensor_value_info("h", F, ["batch", "seq", d]))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m, {"d": d, "ff": ff}


@pytest.mark.parametrize("b,t", [(1, 5), (3, 7)])
def test_count_onnx_on_a_dynamic_transformer_graph(b, t):
    m, k = _dynamic_encoder()
    d, ff = k["d"], k["ff"]
    from rene_onnx.validate import counts
    from rene_onnx.graph import with_static_inputs

    static = counts._without_stored_shapes(with_static_inputs(m, {"ids": [b, t]}))
    dims = counts._shape_table(onnx.shape_inference.infer_shapes(static, data_prop=True).graph)
    assert dims["pos_t"][0] != t  # shape inference alone loses the sequence dim: the onnxruntime probe sizes it
    c = count_onnx(m, {"ids": (b, t)})
    want = {"posproj": t * d * d, "fc1": b * t * d * ff, "attn": b * t * t * ff, "mix": b * t * t * d, "fc1b": b * t * d * ff,
            "fc2": b * t * ff * d}
    assert {n: c.per_node[n].macs for n in want} == want
    assert c.macs == sum(want.values())
    assert c.params == 20 * d + 32 * d + d * ff + ff + ff * d + d * d
    with pytest.raises(ValueError, match="symbolic"):  # no shape for the dynamic sequence: a clear error
        count_onnx(m)


# ---------------------------------------------------------------------------------------------- loader


def test_load_tiny_bert(tiny, tmp_path):
    path, model = tiny
    with pytest.raises(LoadError, match=r"'input_ids' dims 1 \(seq\); 'attention_mask' dims 1 \(seq\).*"
                                         r"e.g. input_ids:1,N, attention_mask:1,N"):
        load_onnx(path)
    with pytest.raises(LoadError, match=r"2 inputs \(input_ids, attention_mask\).*NAME:DIMS"):
        load_onnx(path, (1, 16))
    with pytest.raises(LoadError, match="'ids', not a graph input"):
        load_onnx(path, {"ids": (1, 16)})
    h = load_onnx(path, {"input_ids": (1, 16), "attention_mask": (1, 16)})  # verified against onnxruntime
    assert h.input_names == ["input_ids", "attention_mask"] and h.multi_input
    assert h.input_shapes == {"input_ids": (1, 16), "attention_mask": (1, 16)}
    assert h.input_dtypes == {"input_ids": "int64", "attention_mask": "int64"}
    assert [s.high for s in h.specs] == [VOCAB, None] and h.specs[0].dynamic == (0, 1)
    assert len(h.layer_map) == 6 * BLOCKS and all(r.op_type == "MatMul" for r in h.layer_map.values())
    assert sum(r.bias is not None for r in h.layer_map.values()) == 6 * BLOCKS  # MatMul + Add -> Linear bias
    ex = h.example_inputs(seed=3)
    assert ex["input_ids"].dtype == torch.int64 and 0 <= ex["input_ids"].min() and ex["input_ids"].max() < VOCAB
    assert (ex["attention_mask"] == 1).all()
    x = h.example_input(seed=3)
    assert isinstance(x, tuple) and [t.dtype for t in x] == [torch.int64, torch.int64]
    # other batch / sequence lengths and a padded mask: torch import == onnxruntime == the original torch model
    ids, mask = _tokens(3, 9)
    with torch.no_grad():
        got = h.torch_model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    ort = make_session(str(path)).run(None, h.feeds((torch.from_numpy(ids), torch.from_numpy(mask))))[0]
    np.testing.assert_allclose(got, ort, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_unsupported_input_dtype_is_refused(tiny, tmp_path):
    m = onnx.load(str(tiny[0]))
    m.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.DOUBLE, [1]))
    path = tmp_path / "double.onnx"
    onnx.save(m, str(path))
    with pytest.raises(LoadError, match="input 'extra' is DOUBLE; supported input types: float32, int64"):
        load_onnx(path, {"input_ids": (1, 16), "attention_mask": (1, 16)})


# ---------------------------------------------------------------------------------------------- data


SPECS = [InputSpec("input_ids", (1, 16), "int64", high=VOCAB, dynamic=(0, 1)),
         InputSpec("attention_mask", (1, 16), "int64", dynamic=(0, 1))]


def test_calibration_npz_one_array_per_input(tmp_path):
    ids, mask = _tokens(10, 12)
    good = tmp_path / "good.npz"
    np.savez(good, attention_mask=mask.astype(np.int32), input_ids=ids)  # any order; ints cast to the graph dtype
    xs = unlabeled_input_arrays(good, SPECS)
    assert [t.dtype for t in xs] == [torch.int64, torch.int64] and xs[0].shape == (10, 12)  # seq is dynamic
    assert np.array_equal(xs[0].numpy(), ids) and np.array_equal(xs[1].numpy(), mask)
    ds = unlabeled_dataset(xs)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert len(batch) == 1 and len(batch[0]) == 2 and batch[0][0].shape == (4, 12)  # [(ids, mask)]: no labels

    def bad(name, **arrays):
        p = tmp_path / f"{name}.npz"
        np.savez(p, **arrays)
        return p

    cases = {
        bad("floats", input_ids=ids.astype(np.float32), attention_mask=mask): "integer input .* holds float32",
        bad("range", input_ids=ids + VOCAB, attention_mask=mask): r"outside \[0, 50\)",
        bad("missing", input_ids=ids): "missing attention_mask",
        bad("extra", input_ids=ids, attention_mask=mask, labels=ids[:, 0]): "not graph inputs: labels",
        bad("count", input_ids=ids, attention_mask=mask[:5]): "different numbers of samples",
        bad("rank", input_ids=ids[:, :, None], attention_mask=mask): r"expected \(N, \*\)",
    }
    for path, msg in cases.items():
        with pytest.raises(ValueError, match=msg):
            unlabeled_input_arrays(path, SPECS)
    np.save(tmp_path / "one.npy", ids)
    with pytest.raises(ValueError, match="a .npy holds one array; the model has 2 inputs"):
        unlabeled_input_arrays(tmp_path / "one.npy", SPECS)
    fixed = [InputSpec("x", (1, 3, 4, 4))]  # a single float input: a .npy, unbatched sample gets a batch dim
    np.save(tmp_path / "img.npy", np.zeros((3, 4, 4), np.float64))
    (x,) = unlabeled_input_arrays(tmp_path / "img.npy", fixed)
    assert x.shape == (1, 3, 4, 4) and x.dtype == torch.float32
    with pytest.raises(ValueError, match=r"expected \(N, 3, 4, 4\)"):
        np.save(tmp_path / "img2.npy", np.zeros((2, 3, 5, 4)))
        unlabeled_input_arrays(tmp_path / "img2.npy", fixed)


# ---------------------------------------------------------------------------------------------- CLI end to end


def _run(*args, cwd):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_compress_and_validate_tiny_bert(tiny, tmp_path):
    path, _ = tiny
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    r = _run("compress", str(path), "--data-free", *SHAPES, "--ranks", "0.5", "--no-latency-aware", "-o", str(out),
             "--report", str(rep),
             "--repeats", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = onnx.load(str(path)), onnx.load(str(out))
    onnx.checker.check_model(b, full_check=True)
    for field in ("input", "output"):  # names, dtypes and dynamic axes of the original kept
        assert [v.SerializeToString() for v in getattr(b.graph, field)] == \
               [v.SerializeToString() for v in getattr(a.graph, field)]
    assert _dims(b.graph.input[0]) == ["batch", "seq"]
    ops_a, ops_b = Counter(n.op_type for n in a.graph.node), Counter(n.op_type for n in b.graph.node)
    assert ops_b["MatMul"] == ops_a["MatMul"] + 6 * BLOCKS  # every Linear -> two factor MatMuls
    report = json.loads(rep.read_text())
    assert report["numerics"]["max_abs_diff"] < 1e-4  # ORT on the rewrite == the torch student
    assert 0.3 < report["numerics"]["vs_original"]["cosine"] < 0.9999
    rows = [row for row in report["layers"] if row["status"] == "factorized"]
    assert len(rows) == 6 * BLOCKS and all(row["method"] == "svd" for row in rows)
    dense_params = BLOCKS * (4 * (D * D + D) + (D * FF + FF) + (FF * D + D))
    assert sum(row["params_before"] for row in rows) == dense_params
    p, mac = report["params"], report["macs"]
    assert p["after"] < p["before"] and mac["after"] < mac["before"]
    # the ONNX graph also holds the embedding tables (buffers in the torch import) and the attention MatMuls
    # of run-time tensors (no torch layer): what the compression removed agrees exactly
    assert p["before"] - p["after"] == p["torch_before"] - p["torch_after"] > 0
    assert mac["before"] - mac["after"] == mac["torch_before"] - mac["torch_after"] > 0
    assert mac["torch_before"] == 16 * dense_params - 16 * BLOCKS * (4 * D + FF + D)  # bias adds excluded
    assert report["meta"]["inputs"] == [{"name": "input_ids", "shape": [1, 16], "dtype": "int64"},
                                        {"name": "attention_mask", "shape": [1, 16], "dtype": "int64"}]
    assert report["latency_ms"]["before"] > 0
    # the compressed model keeps its dynamic axes: another batch / sequence length, padded sentences
    ids, mask = _tokens(3, 9)
    y = make_session(str(out)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert y.shape == (3, D) and np.isfinite(y).all()

    vrep = tmp_path / "v.json"
    r = _run("validate", str(path), str(out), *SHAPES, "--repeats", "3", "--report", str(vrep), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    v = json.loads(vrep.read_text())
    assert (v["params"], v["macs"]) == ({"before": p["before"], "after": p["after"]},
                                        {"before": mac["before"], "after": mac["after"]})
    assert v["numerics"]["cosine"] == pytest.approx(report["numerics"]["vs_original"]["cosine"], abs=0.2)
    r = _run("validate", str(path), str(out), "--repeats", "3", cwd=tmp_path)
    assert r.returncode == 2 and "--input-shape" in r.stderr and "Traceback" not in r.stderr


def test_cli_bad_multi_input_usage(tiny, tmp_path):
    path, _ = tiny
    cases = [
        ([], r"'input_ids' dims 1 \(seq\)"),
        (["--input-shape", "1,16"], "2 inputs"),
        (["--input-shape", "input_ids:1,16"], "'attention_mask' dims 1"),
        ([*SHAPES, "--data", "digits"], "--calib FILE.npz"),
    ]
    for extra, msg in cases:
        r = _run("compress", str(path), "--data-free", "--ranks", "0.5", *extra, "-o", "o.onnx", cwd=tmp_path)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and __import__("re").search(msg, r.stderr), r.stderr
        assert not (tmp_path / "o.onnx").exists()


def test_cli_distills_on_calibration_inputs(tiny, tmp_path):
    path, _ = tiny
    ids, mask = _tokens(24, 16, seed=5)
    np.savez(tmp_path / "calib.npz", input_ids=ids, attention_mask=mask)
    common = ["compress", str(path), "--data-free", *SHAPES, "--ranks", "0.5", "--no-latency", "--seed", "0"]
    r0 = _run(*common, "-o", "a.onnx", "--report", "a.json", "--calib", "calib.npz", "--epochs", "0", cwd=tmp_path)
    assert r0.returncode == 0, r0.stderr
    r = _run(*common, "-o", "b.onnx", "--report", "b.json", "--calib", "calib.npz", "--epochs", "3", "--lr", "0.01",
             "--batch-size", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before, after = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert after["meta"]["calib"] == {"path": "calib.npz", "samples": 24}
    ft = after["meta"]["finetune"]
    assert ft["epochs_run"] >= 1 and (ft["output_loss"], ft["select_metric"]) == ("cosine", "cosine")
    # --batch-size: 24 samples, 5 held out for fidelity; of the 19 used 1 selects, 18 train -> 5 steps of <= 4
    assert after["meta"]["holdout"]["held_out"] == 5 and after["numerics"]["calib"]["n"] == 5
    assert ft["batch_size"] == 4 and ft["steps"] == 5 * ft["epochs_run"]
    assert after["numerics"]["max_abs_diff"] < 1e-4
    # distillation brings the compressed model closer to the original on the calibration sentences
    assert after["numerics"]["calib"]["cosine"] > before["numerics"]["calib"]["cosine"]
    per_sample = after["numerics"]["calib"]["mean_sample_cosine"]
    assert before["numerics"]["calib"]["mean_sample_cosine"] < per_sample < 1.0
    assert (ft["optimizer"], ft["lr"]) == ("sgd", 0.01)
    # --optimizer adamw (what transformers want): recorded, and it distills too
    r = _run(*common, "-o", "c.onnx", "--report", "c.json", "--calib", "calib.npz", "--epochs", "3", "--lr", "1e-3",
             "--optimizer", "adamw", "--batch-size", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    adam = json.loads((tmp_path / "c.json").read_text())
    assert (adam["meta"]["finetune"]["optimizer"], adam["meta"]["finetune"]["lr"]) == ("adamw", 1e-3)
    assert adam["numerics"]["calib"]["cosine"] > before["numerics"]["calib"]["cosine"]

    # rene-onnx validate on the pair, on the held-out inputs: the same comparison as the compress report
    from rene_onnx.pipeline.heldout import split_heldout

    held = split_heldout(24, 0.2, seed=0)[1]
    np.savez(tmp_path / "held.npz", input_ids=ids[held], attention_mask=mask[held])
    r = _run("validate", str(path), "b.onnx", *SHAPES, "--calib", "held.npz", "--no-latency", "--report", "v.json",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "mean cosine per sample" in r.stdout
    v = json.loads((tmp_path / "v.json").read_text())["numerics"]["calib"]
    assert v["mean_sample_cosine"] == pytest.approx(per_sample, abs=1e-6)
    assert v["max_abs_diff"] == pytest.approx(after["numerics"]["calib"]["max_abs_diff"], rel=1e-5)
    np.savez(tmp_path / "bad.npz", input_ids=ids.astype(np.float32), attention_mask=mask)
    r = _run("validate", str(path), "b.onnx", *SHAPES, "--calib", "bad.npz", "--no-latency", cwd=tmp_path)
    assert r.returncode == 2 and "input_ids" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---------------------------------------------------------------------------------------------- real MiniLM


@pytest.mark.slow
def test_real_minilm_export_counts_and_loads(tmp_path):
    import minilm_fixture as mf

    torch.set_num_threads(1)
    model, tok = mf.load_embedder()
    packed = mf.tokenize(tok, ["a first sentence", "and another one"], 16)
    graph = mf.export_embedder(model, packed[:1])
    graph.ir_version = min(graph.ir_version, 10)
    path = tmp_path / "minilm.onnx"
    onnx.save(graph, str(path))
    shapes = {"input_ids": (1, 16), "attention_mask": (1, 16)}
    c = count_onnx(graph, shapes)
    linear = 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    attention = 6 * 2 * 12 * 16 * 16 * 32
    assert c.macs == 16 * linear + attention
    h = load_onnx(path, shapes)
    assert len(h.layer_map) == 36 and h.specs[0].high == 30522
    ids, mask = packed[:, 0].contiguous(), packed[:, 1].contiguous()
    with torch.no_grad():
        np.testing.assert_allclose(h.torch_model(ids, mask).numpy(), model(ids, mask).numpy(), atol=1e-5)


def test_cli_calibration_inputs_drive_search_and_whitened_init(tiny, tmp_path):
    """Without --data-free, --calib feeds the search (output error to the original) and initializes the SVD
    layers activation-aware: at the same ranks the compressed model is closer to the original on those inputs."""
    path, _ = tiny
    ids, mask = _tokens(48, 16, seed=7)
    np.savez(tmp_path / "calib.npz", input_ids=ids, attention_mask=mask)
    common = ["compress", str(path), *SHAPES, "--calib", "calib.npz", "--epochs", "0", "--no-latency"]
    runs = {"plain": ["--ranks", "0.5", "--data-free"], "whitened": ["--ranks", "0.5"],
            "search": ["--target-params", "0.85", "--search-steps", "5"]}
    reports = {}
    for name, extra in runs.items():
        r = _run(*common, *extra, "-o", f"{name}.onnx", "--report", f"{name}.json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    plain, white, searched = (reports[k] for k in runs)
    assert [row["rank"] for row in white["layers"]] == [row["rank"] for row in plain["layers"]]
    assert white["params"]["after"] == plain["params"]["after"]
    assert white["numerics"]["max_abs_diff"] < 1e-4  # the whitened factors are what the ONNX graph computes
    assert white["numerics"]["calib"]["mean_sample_cosine"] > plain["numerics"]["calib"]["mean_sample_cosine"]
    # the Linear (MatMul) layers were fitted in order on the compressed model's own inputs; data-free runs never are
    assert white["meta"]["init"]["sequential"] and "init" not in plain["meta"]
    assert searched["search"]["mode"] == "validation-distill"
    # the budget is a fraction of the ONNX model (embedding tables included, which the import keeps as buffers)
    assert searched["params"]["after"] / searched["params"]["before"] == pytest.approx(0.85, rel=0.02)
    assert searched["numerics"]["max_abs_diff"] < 1e-4
