"""Conv (1-D / 2-D, grouped or not, any kernel incl. 1x1) -> SVD chain ``<node>/svd_first``, ``/svd_last``.

``V`` (g*r, Cin/g*k) reshaped to a (g*r, Cin/g, k..) conv with the original
geometry (a 1x1 keeps its stride) -> ``U`` (Cout, r) reshaped to a
(Cout, r, 1..) 1x1 with the bias; both carry ``group`` = g (g = 1: the plain
SVD layout of :mod:`rene_onnx.plan`). Conv-shaped ``V`` / ``U`` are accepted too.
"""
from __future__ import annotations

from . import conv_common as cc

PASS = cc.chain_pass("conv_svd", "svd", __doc__)
