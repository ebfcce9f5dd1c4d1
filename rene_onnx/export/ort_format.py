"""ORT format: ``onnxruntime.tools.convert_onnx_models_to_ort``, and the mobile-usability check.

The converter writes ``<stem>.ort`` (optimized at the ``all`` level, NCHWc layout left out so the
file runs on ARM too) and ``<stem>.required_operators.config`` (the operators a reduced
onnxruntime build must include). The usability check is the one of
``onnxruntime.tools.check_onnx_model_mobile_usability``: how many nodes the NNAPI and CoreML
execution providers could take, in how many partitions, which ops they cannot, and whether
dynamic input shapes stand in the way (then ``fixed_shape`` helps).
"""
from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import shutil
import tempfile
from dataclasses import dataclass, field

from rene_onnx.errors import StageError


@dataclass
class OrtFormatResult:
    ort_path: pathlib.Path
    config_path: pathlib.Path
    usability: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def convert(onnx_path: pathlib.Path, out_dir: pathlib.Path, stem: str) -> OrtFormatResult:
    """``onnx_path`` -> ``out_dir/<stem>.ort`` and ``out_dir/<stem>.required_operators.config``."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="rene-ort-", dir=out_dir) as tmp:
        src = pathlib.Path(tmp) / f"{stem}.onnx"
        shutil.copyfile(onnx_path, src)
        conv_out = pathlib.Path(tmp) / "out"
        tool_log = logging.getLogger("ort_format_model.utils")  # logs INFO lines to stderr by itself
        level = tool_log.level
        tool_log.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(src, output_dir=conv_out, optimization_styles=[OptimizationStyle.Fixed])
        except Exception as e:
            raise StageError(f"ort: convert_onnx_models_to_ort failed: {str(e).splitlines()[0]}") from e
        finally:
            tool_log.setLevel(level)
        ort_files = sorted(conv_out.glob("*.ort"))
        configs = sorted(conv_out.glob("*.config"))
        if len(ort_files) != 1 or len(configs) != 1:
            raise StageError(f"ort: the converter wrote {[p.name for p in conv_out.iterdir()]}, expected one .ort "
                             f"and one .config")
        ort_path, config_path = out_dir / f"{stem}.ort", out_dir / f"{stem}.required_operators.config"
        shutil.move(ort_files[0], ort_path)
        shutil.move(configs[0], config_path)
    return OrtFormatResult(ort_path, config_path, usability(onnx_path))


def usability(onnx_path: pathlib.Path) -> dict:
    """The mobile-usability check, summarised: per execution provider the supported share of nodes,
    partitions, unsupported ops and the verdict (YES / MAYBE / NO), as is and with fixed shapes."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import optimize_model

    logger = logging.getLogger("rene_onnx.export.usability")
    out: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="rene-usability-") as tmp, \
                contextlib.redirect_stdout(io.StringIO()):
            opt = pathlib.Path(tmp) / "model.onnx"
            optimize_model(onnx_path, opt, use_external_initializers=True)  # BASIC level, as the tool does
            model = uc.ModelProtoWithShapeInfo(opt).model_with_shape_info
            dynamic_inputs, num_dynamic = uc.check_shapes(model.graph, logger)
            out["dynamic_inputs"] = [i.name for i in dynamic_inputs] if dynamic_inputs else []
            checks = {
                "NNAPI": uc.check_nnapi_partitions,
                "CoreML MLProgram": lambda m, fixed: uc.check_coreml_partitions(m, fixed, "coreml_supported_mlprogram_ops.md"),
                "CoreML NeuralNetwork": lambda m, fixed: uc.check_coreml_partitions(
                    m, fixed, "coreml_supported_neuralnetwork_ops.md"),
            }
            eps = {}
            for ep, check in checks.items():
                info = check(model, True)
                row = _summary(info)
                if dynamic_inputs and info.suitability().name != "YES":
                    row["with_fixed_shapes"] = info_fixed = _summary(check(model, False))
                    row["fixed_shape_helps"] = info_fixed["verdict"] != row["verdict"]
                eps[ep] = row
            out["execution_providers"] = eps
    except Exception as e:  # the checker is advisory: its failure does not fail the export
        return {"error": f"mobile usability check failed: {str(e).splitlines()[0] if str(e) else repr(e)}"}
    verdicts = {ep: r["verdict"] for ep, r in out["execution_providers"].items()}
    out["summary"] = ", ".join(f"{ep} {v}" for ep, v in verdicts.items())
    return out


def _summary(info) -> dict:
    pct = 100.0 * info.num_supported_nodes / info.num_nodes if info.num_nodes else 0.0
    return {"verdict": info.suitability().name, "nodes": info.num_nodes, "supported_nodes": info.num_supported_nodes,
            "supported_pct": round(pct, 1), "partitions": info.num_partitions,
            "unsupported_ops": sorted(info.unsupported_ops),
            "unsupported_due_to_dynamic_shapes": info.nodes_unsupported_due_to_dynamic_input}
