"""Conv (1-D / 2-D, grouped or not) -> Tucker-2 chain ``<node>/tucker2_first``, ``/tucker2_core``, ``/tucker2_last``.

``first`` (g*r_in, Cin/g, 1..) 1x1 -> ``core`` (g*r_out, r_in, k..) with the original geometry
-> ``last`` (Cout, r_out, 1..) 1x1 with the bias; all three carry ``group`` = g (the layout of
:class:`rene_onnx.decompose.tucker2.Tucker2`; TT's chain, see there for how the two differ).
"""
from __future__ import annotations

from . import conv_common as cc

PASS = cc.chain_pass("conv_tucker2", "tucker2", __doc__)
