"""Conv (1-D / 2-D, grouped or not) -> TT chain ``<node>/tt_first``, ``/tt_core``, ``/tt_last``.

``first`` (g*r2, Cin/g, 1..) 1x1 -> ``core`` (g*r1, r2, k..) with the original
geometry -> ``last`` (Cout, r1, 1..) 1x1 with the bias; all three carry
``group`` = g (g = 1: the plain TT layout of :mod:`rene_onnx.plan`).
"""
from __future__ import annotations

from . import conv_common as cc

PASS = cc.chain_pass("conv_tt", "tt", __doc__)
