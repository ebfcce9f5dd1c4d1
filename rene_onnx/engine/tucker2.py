"""The torch side of Tucker-2 (``tucker2``): its factorized conv and its search candidates.

:class:`Tucker2Conv` is the chain the numpy rules lay out (:class:`rene_onnx.decompose.tucker2.Tucker2`):
1x1 conv Cin -> r_in, k x k core r_in -> r_out with the original stride / padding / dilation,
1x1 conv r_out -> Cout with the bias; grouped by g per group. It is initialized by HOSVD from the
dense weight, or built from factor arrays.

The search's candidates at one rank r (r_out = r_in = r, the search's single rank per layer) are
the nested HOSVD truncations TT's search uses as well (:func:`.search_banks.hosvd_candidates`):
those ARE Tucker-2 truncations, so the two methods search the same error curves and pick the same
ranks; a ``tucker2`` layer then starts from HOSVD, a ``tt`` one from TT-SVD.
"""
from __future__ import annotations

from .layers import ConvChain
from .registry import EngineMethod
from .search_banks import hosvd_candidates


class Tucker2Conv(ConvChain):
    """Tucker-2 conv: 1x1 (Cin->r_in) -> core k x k (r_in->r_out, original geometry) -> 1x1 (r_out->Cout) + bias."""

    methods = ("tucker2",)


ENGINE_METHODS = (EngineMethod("tucker2", Tucker2Conv, hosvd_candidates),)
