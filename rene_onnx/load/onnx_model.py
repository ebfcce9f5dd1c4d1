"""An ONNX file in, from any exporter -> ModelHandle (the original proto, its torch import, the maps).

The checks of :mod:`.onnx_file` run first; the torch side is :mod:`.onnx_import`'s onnx2torch import
lined up with the graph by :mod:`.onnx_layers`, and verified against onnxruntime on the handle's example
inputs. The ORIGINAL proto is what the handle carries: the passes rewrite it and it ships (with external
data again if it came with it: ``ModelHandle.external_data``).

Layer names are onnx2torch's module names: the ONNX node name with ``.`` -> ``/`` and the leading ``/``
dropped (the op type when unnamed), made unique.
"""
from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from rene_onnx.errors import LoadError

from .batch import batch_is_free, fixed_batch
from .handle import InputSpec, ModelHandle, example_tensors
from .onnx_file import check_compressible, input_specs, line, read_checked
from .onnx_import import TorchImportError, to_torch
from .onnx_layers import linearize, onnx_layer_map, onnx_param_map


def load_onnx(path: str | os.PathLike,
              input_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]] | None = None, *,
              verify: bool = True) -> ModelHandle:
    """Check and load an ONNX file; the torch model (onnx2torch) and the maps to the original graph.

    ``input_shape`` (batch included) is required when an input dim other than
    the first is dynamic: one shape for a single-input model, or ``{input name:
    shape}`` (needed only for the inputs with dynamic dims); a dynamic first
    (batch) dim is taken as 1. The torch model takes the graph inputs
    positionally, in graph order. With ``verify`` the torch model's output is
    compared with onnxruntime's on the original file (the handle's example
    inputs, seed 0) and a mismatch is a ``LoadError``.
    """
    from rene_onnx.passes import find_layers

    path = Path(path)
    light, original, external = read_checked(path)
    specs, notes = input_specs(original, input_shape, path.name)
    layers = find_layers(original)
    check_compressible(layers, path.name)

    gm, tnames, import_notes = to_torch(light, path, external)
    notes += import_notes
    absorbed = linearize(gm, original, layers, tnames)
    layer_map, unmapped = onnx_layer_map(gm, layers, tnames)
    if not layer_map:
        why = "; ".join(f"{n}: {r}" for n, r in list(unmapped.items())[:3])
        raise LoadError(f"{path.name}: no Conv / Gemm / MatMul layer could be matched to a torch layer ({why})")
    param_map, shared = onnx_param_map(gm, original, tnames, layer_map, absorbed)
    layer_params = {f"{n}.{a}" for n in layer_map for a in ("weight", "bias")}
    frozen = [n for n, _ in gm.named_parameters() if n not in param_map and n not in layer_params]
    if frozen:
        notes.append(f"{len(frozen)} torch parameter(s) have no ONNX tensor of their own to be written back to "
                     f"(shared with another layer, or not matched) and stay frozen in fine-tuning: "
                     f"{', '.join(frozen[:3])}{' ...' if len(frozen) > 3 else ''}")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules()):
        notes.append("unfused BatchNormalization kept: collect its running stats with collect_factors(buffers=True)")
    gm.eval()
    if verify:
        _verify(gm, path, specs)
    batch = fixed_batch(original)
    if batch is not None and batch_is_free(gm, example_tensors(specs, seed=0)):
        batch = None
    elif batch is not None:
        notes.append(f"the graph fixes the batch at {batch} and its torch import runs only that batch: search "
                     f"and fine-tuning use batches of {batch}")
    return ModelHandle(gm, original, layer_map, param_map, specs[0].shape, source=str(path), notes=notes,
                       unmapped=unmapped, external_data=external, inputs=specs, frozen=frozen, torch_batch=batch)


def _verify(gm: fx.GraphModule, path: Path, specs: list[InputSpec]) -> None:
    from rene_onnx.validate.numerics import make_session

    xs = example_tensors(specs, seed=0)
    shown = ", ".join(f"{k} {list(v.shape)}" for k, v in xs.items())
    try:
        with torch.no_grad():
            got = gm(*xs.values())
    except Exception as e:
        raise TorchImportError(path.name, f"the torch import fails on inputs {shown}: {line(e)}") from None
    try:
        ref = make_session(str(path), "cpu").run(None, {k: v.numpy() for k, v in xs.items()})[0]
    except Exception as e:
        raise LoadError(f"{path.name}: onnxruntime cannot run the model: {line(e)}") from None
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else None
    if got is None or got.shape != ref.shape:
        raise TorchImportError(path.name, f"the torch import returns {None if got is None else list(got.shape)}, "
                                          f"onnxruntime {list(ref.shape)}")
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not diff <= 1e-4 + 1e-3 * float(np.max(np.abs(ref), initial=0.0)):
        raise TorchImportError(path.name, f"the torch import does not reproduce onnxruntime's output (max abs "
                                          f"diff {diff:.2e}); this model is not supported yet")
