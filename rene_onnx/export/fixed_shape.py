"""Fixed shapes for NNAPI / CoreML: onnxruntime's ``make_dynamic_shape_fixed`` helpers.

``fixed_shape`` maps a graph input name to its full shape (``{"input": (1, 3, 224, 224)}``) or a
symbolic dim's name (``dim_param``) to a value (``{"batch": 1}``); output shapes are then fixed
where they follow (``fix_output_shapes``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx

from rene_onnx.errors import UserError


def parse(text: str | Sequence[str] | None) -> dict[str, tuple[int, ...] | int]:
    """``NAME:1,3,224,224`` / ``PARAM=1`` / a plain ``1,3,224,224`` (key ``""``: the only input), repeatable."""
    if not text:
        return {}
    out: dict[str, tuple[int, ...] | int] = {}
    for item in [text] if isinstance(text, str) else text:
        try:
            if "=" in item:
                k, v = item.split("=", 1)
                out[k.strip()] = int(v)
            else:
                k, _, v = item.rpartition(":")
                out[k.strip()] = tuple(int(d) for d in v.split(",") if d.strip())
        except ValueError:
            raise UserError(f"cannot read {item!r} (NAME:1,3,224,224, PARAM=1 or 1,3,224,224)",
                            option="fixed_shape") from None
    return out


def fix(model: onnx.ModelProto, fixed: Mapping[str, Sequence[int] | int]) -> onnx.ModelProto:
    """A copy of ``model`` with the given input shapes / dim params made static."""
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed, make_input_shape_fixed

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}
    inputs = [i.name for i in m.graph.input if i.name not in inits]
    params = {d.dim_param for i in m.graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
    for key, value in fixed.items():
        if key == "" and len(inputs) == 1:
            key = inputs[0]
        try:
            if isinstance(value, int):
                if key not in params:
                    raise UserError(f"no symbolic dim {key!r} in the graph inputs (they have {sorted(params) or 'none'})",
                                    option="fixed_shape")
                make_dim_param_fixed(m.graph, key, int(value))
            else:
                if key not in inputs:
                    raise UserError(f"no graph input {key!r} (inputs: {', '.join(inputs)})", option="fixed_shape")
                make_input_shape_fixed(m.graph, key, [int(v) for v in value])
        except UserError:
            raise
        except Exception as e:  # the helper refuses a rank or a static dim that does not match
            raise UserError(f"{key}: {e}", option="fixed_shape") from None
    fix_output_shapes(m)
    return m
