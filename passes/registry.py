"""The list of passes: one per (op type, method)."""
from __future__ import annotations

from . import conv_cp, conv_svd, conv_tt, gemm_svd, matmul_svd
from .base import Pass

REGISTRY: tuple[Pass, ...] = (conv_tt.PASS, conv_cp.PASS, conv_svd.PASS, gemm_svd.PASS, matmul_svd.PASS)


def find_pass(op_type: str, method: str) -> Pass | None:
    """The pass that rewrites ``op_type`` nodes with ``method``, or ``None``."""
    for p in REGISTRY:
        if p.op_type == op_type and p.method == method:
            return p
    return None


def methods_for(op_type: str) -> tuple[str, ...]:
    return tuple(p.method for p in REGISTRY if p.op_type == op_type)
