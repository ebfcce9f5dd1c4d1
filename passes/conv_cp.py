"""Conv (1-D / 2-D, grouped or not) -> CP chain ``<node>/cp_first``, ``/cp_core``, ``/cp_last``.

``first`` (g*R, Cin/g, 1..) 1x1 group=g -> ``core`` (g*R, 1, k..) depthwise
(group=g*R) with the original geometry -> ``last`` (Cout, R, 1..) 1x1 group=g
with the bias (g = 1: the plain CP layout of :mod:`rene_onnx.plan`). A core
given as (g*R, k..) is accepted.
"""
from __future__ import annotations

from . import conv_common as cc

PASS = cc.chain_pass("conv_cp", "cp", __doc__)
