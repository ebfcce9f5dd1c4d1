"""A tiny BERT-like sentence encoder for the multi-input tests (built in code, exported with the dynamo exporter).

Token + position embeddings, ``blocks`` post-LN blocks of softmax attention (q/k/v/o Linear) and a GELU MLP,
then mean pooling over the attention mask: ``forward(input_ids int64 (B, T), attention_mask int64 (B, T)) ->
(B, d)``, six Linear layers per block. Exported with dynamic batch and sequence.
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings

import onnx
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        dh = d // self.heads

        def split(x):
            return x.reshape(b, t, self.heads, dh).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + bias, dim=-1)
        ctx = (p @ v).transpose(1, 2).reshape(b, t, d)
        h = self.ln1(h + self.o(ctx))
        return self.ln2(h + self.ff2(nn.functional.gelu(self.ff1(h))))


class TinyBert(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 32, heads: int = 2, ff: int = 64, blocks: int = 2,
                 max_len: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(Block(d, heads, ff) for _ in range(blocks))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        h = self.tok(input_ids) + self.pos(torch.arange(t, device=input_ids.device))[None]
        m = attention_mask.to(h.dtype)
        bias = (1.0 - m[:, None, None, :]) * -1e4
        for block in self.blocks:
            h = block(h, bias)
        return (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)


def export_tiny_bert(model: nn.Module, seq: int = 16, max_len: int = 64) -> onnx.ModelProto:
    """Dynamo export, opset 18, dynamic batch and sequence; inputs input_ids / attention_mask, output embedding."""
    ids = torch.randint(0, 50, (2, seq))
    mask = torch.ones(2, seq, dtype=torch.long)
    dims = {0: torch.export.Dim("batch", min=1, max=1024), 1: torch.export.Dim("seq", min=2, max=max_len)}
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (ids, mask), dynamo=True, external_data=False, opset_version=18,
                                    input_names=["input_ids", "attention_mask"], output_names=["sentence"],
                                    dynamic_shapes=(dims, dims))
    m = program.model_proto
    m.ir_version = min(m.ir_version, 10)
    return m
