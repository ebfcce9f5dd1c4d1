"""Older runtimes: convert the default-domain opset with ``onnx.version_converter``.

The converted model must pass ``onnx.checker`` and load in onnxruntime (the caller validates its
numerics); an opset the converter cannot reach (an op with no adapter to that version, an opset
below an op's first version) is the user's to change: ``UserError``.
"""
from __future__ import annotations

import onnx

from rene_onnx.errors import UserError

MIN_OPSET = 7


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def convert(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` at default-domain opset ``opset`` (a new proto), checked."""
    current = opset_of(model)
    if opset < MIN_OPSET or opset > onnx.defs.onnx_opset_version():
        raise UserError(f"opset {opset} is out of range ({MIN_OPSET}..{onnx.defs.onnx_opset_version()} with this "
                        f"onnx)", option="opset")
    if opset == current:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    try:
        out = onnx.version_converter.convert_version(model, opset)
        onnx.checker.check_model(out)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        out = _lowered_import(model, opset, first) if "No Adapter" in first and opset < current else None
        if out is None:
            raise UserError(f"onnx.version_converter cannot take this model from opset {current} to {opset}: "
                            f"{first[:200]}", option="opset") from None
    return out


def _lowered_import(model: onnx.ModelProto, opset: int, why: str) -> onnx.ModelProto | None:
    """The model with only its opset import lowered, where that is exact; else None.

    onnx's converter has no adapter for some version steps that only added types (Relu 13 -> 14,
    for one), so it refuses models a lower opset runs unchanged. Such a model is accepted when every
    node passes the full checker at ``opset`` and onnxruntime gives the same outputs (random inputs,
    max relative difference <= 1e-6); a change of semantics (Softmax 11 vs 13) fails the second test.
    """
    from rene_onnx.validate.numerics import compare, input_feeds, run_onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    try:
        onnx.checker.check_model(out, full_check=True)
        feeds = input_feeds(model)
        n = compare(run_onnx(model, feeds), run_onnx(out, feeds))
    except Exception:  # a node the older schema rejects, symbolic dims, a kernel onnxruntime lacks
        return None
    if n.max_rel_diff > 1e-6:
        return None
    out.doc_string = (out.doc_string + "\n" if out.doc_string else "") + (
        f"rene-onnx: opset import lowered to {opset} (onnx.version_converter: {why[:120]}); every node passes the "
        f"opset-{opset} checker and onnxruntime's outputs are unchanged")
    return out
