"""Optional last stage of compress: the compressed model exported for edge runtimes (``compress --export``).

The artifacts (INT8, FP16, ORT format) are built by :func:`rene_onnx.export.export_model` from the
compressed model in memory, next to ``-o`` (``<stem>.int8.onnx``, ..., ``<stem>.export.json``). The inputs
keep compress's split: INT8 calibrates on the inputs the search and fine-tuning used (``--calib``'s used
part, or the labeled data's calibration split), and fidelity against the *original* model is measured on
inputs the tool never used (``--calib``'s held-out part, or the test split). Without real inputs, INT8 of a
conv model is refused before any work (it has nothing to calibrate on).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from rene_onnx.config import CompressConfig
from rene_onnx.errors import UserError
from rene_onnx.load import ModelHandle

from .heldout import Heldout
from .inputs import test_arrays


def export_stem(output: str | Path) -> tuple[Path, str]:
    """(folder, file stem) of the artifacts of a compress run writing ``output``."""
    path = Path(output)
    return path.parent, path.name.removesuffix(".onnx")


def export_writes(cfg: CompressConfig) -> list[Path]:
    """The files ``cfg.export`` will write (for the path-safety check before any work)."""
    from rene_onnx.export.orchestrator import ExportConfig, planned_files

    if not cfg.export or cfg.output is None:
        return []
    folder, stem = export_stem(cfg.output)
    return [folder / name for name in planned_files(stem, list(cfg.export), ExportConfig(to=cfg.export), None).values()]


def check_export(cfg: CompressConfig, handle: ModelHandle, has_inputs: bool) -> None:
    """Refuse before the search what the export would refuse after it (an INT8 conv model with no inputs)."""
    if "int8" not in cfg.export:
        return
    from rene_onnx.export import int8

    try:
        int8.choose_mode(handle.onnx_model, int8.Int8Options(), has_inputs)
    except UserError as e:
        raise UserError(f"int8: {e.message}: give --calib or --data", option="export") from None


def _arrays(handle: ModelHandle, tensors) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy() for name, t in zip(handle.input_names, tensors)}


def export_inputs(handle: ModelHandle, splits, calib, held: Heldout | None) -> tuple[dict | None, dict | None, str]:
    """``(calibration inputs, held-out inputs, where they come from)`` as ``{graph input: array}``."""
    if splits is not None:
        x_test = test_arrays(splits)[0]
        return (_arrays(handle, [splits.calib.tensors()[0]]), {handle.input_name: x_test},
                "data: calibration split / test split")
    if held is not None:
        return _arrays(handle, held.used), _arrays(handle, held.held), "calib: used part / held-out part"
    if calib is not None:
        return _arrays(handle, calib), None, "calib (no held-out part: fidelity on random inputs)"
    return None, None, "none (fidelity on random inputs)"


def export_compressed(cfg: CompressConfig, handle: ModelHandle, model: onnx.ModelProto, splits, calib,
                      held: Heldout | None) -> tuple[Any, str]:
    """``(ExportResult, which inputs calibrated / measured)`` of ``model`` (files written next to ``cfg.output``)."""
    from rene_onnx.export import export_model

    cal, held_out, how = export_inputs(handle, splits, calib, held)
    folder, stem = export_stem(cfg.output) if cfg.output is not None else (None, "model")
    v = cfg.validate
    res = export_model(model, to=list(cfg.export), calib=cal, held_out=held_out,
                       held_out_fraction=0.0, original=handle.onnx_model, output_dir=folder, name=stem,
                       latency=v.latency, repeats=v.repeats)
    return res, how
