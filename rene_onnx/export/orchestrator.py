"""``export_model``: one ONNX model in, edge artifacts out (INT8, FP16, ORT format, an older opset), each validated.

::

    from rene_onnx.export import export_model

    res = export_model("model.onnx", to=("int8", "fp16", "ort"), calib="inputs.npz", output_dir="edge/")
    res.report.to_dict()          # sizes, numerics vs the original on held-out inputs, latency per runtime
    res.paths                     # {"int8": edge/model.int8.onnx, "fp16": ..., "ort": ..., "report": ...}

The keyword names are the CLI's long options in snake_case (``rene-onnx export --calibration-method``
-> ``calibration_method``); :class:`ExportConfig` lists them with their defaults. ``model`` and
``original`` are paths or in-memory ``onnx.ModelProto``; ``calib`` / ``held_out`` are dicts
``input name -> (N, ...) array`` or ``.npz`` paths (see :mod:`rene_onnx.export.inputs`).

Nothing is written unless ``output_dir`` is given. All files are built in a temporary folder inside
``output_dir`` and moved into place only when every artifact was built and validated, so a failure
leaves nothing partial there (a folder this call created is removed again). Files written:
``<stem>.int8.onnx``, ``<stem>.fp16.onnx``, ``<stem>.ort`` + ``<stem>.required_operators.config``,
``<stem>.opset<N>.onnx`` (with ``opset``), ``<stem>.fixed.onnx`` (with ``fixed_shape`` alone) and the
report ``<stem>.export.json``. With ``opset`` / ``fixed_shape`` every artifact derives from the
converted model.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from rene_onnx.options import EXPORT_TARGETS, option, parse_export_targets
from rene_onnx.errors import LoadError, PathConflictError, StageError, UserError, first_line
from rene_onnx.progress import emit
from rene_onnx.report.edge import ArtifactRow, ExportReport
from rene_onnx.report.environment import environment_meta
from rene_onnx.validate.runtimes import check_runtime, get_runtime

from . import fixed_shape as fixed_shape_mod
from . import fp16 as fp16_mod
from . import int8 as int8_mod
from . import layer_error, measure
from . import opset as opset_mod
from . import ort_format
from .inputs import InputSet, batch_of, graph_input_infos, read_inputs, split

TARGETS = EXPORT_TARGETS
LOSSY_CHAIN_ACTIONS = ("report", "float")


@dataclass
class ExportConfig:
    """Every option of :func:`export_model` (the CLI's long options, snake_case, same defaults)."""

    to: Sequence[str] | str = option(
        "int8", "Comma-separated artifacts: int8 (onnxruntime QDQ), fp16 (onnxconverter-common), ort (ORT format "
        "+ required_operators.config).", metavar="TARGETS")
    output_dir: str | os.PathLike | None = option(
        None, "Folder for <stem>.int8.onnx, <stem>.fp16.onnx, <stem>.ort and <stem>.export.json (created if "
        "missing; nothing is left there when the export fails). In Python, None writes nothing.", short="-o",
        kind="folder", required_on_cli=True)
    calib: Mapping[str, np.ndarray] | str | os.PathLike | None = option(
        None, "Real inputs (.npz, one array per graph input; may hold 'groups', e.g. the photo of each crop): "
        "INT8 calibrates on them; --held-out-fraction of them (whole groups) is held out for fidelity.", kind="file")
    held_out: Mapping[str, np.ndarray] | str | os.PathLike | None = option(
        None, "Held-out real inputs for fidelity (.npz); then all of --calib calibrates.", kind="file")
    held_out_fraction: float = option(
        0.25, "Share of --calib held out for fidelity when --held-out is not given (0: none).", min=0.0)
    original: onnx.ModelProto | str | os.PathLike | None = option(
        None, "The uncompressed model: fidelity is measured against it, and factorized chains' INT8 errors are "
        "compared with its dense layers' [default: MODEL itself].", kind="file")
    name: str | None = option(None, "File stem of the artifacts [default: MODEL's].")
    quantization: str = option(
        "auto", "INT8 kind: static (QDQ, calibrated), dynamic (weights only; for MatMul-heavy models); auto = "
        "static with --calib, dynamic for a model without convs and no --calib.", choices=("auto", "static", "dynamic"))
    calibration_method: str = option("minmax", "How static INT8 sets activation ranges from the calibration inputs.",
                                     choices=("minmax", "entropy", "percentile"))
    calib_samples: int = option(128, "Calibration samples used for INT8 at most.", min=1)
    per_channel: bool = option(True, "INT8 weight scales per output channel (--no-per-channel: per tensor).",
                               kind="switch")
    activation_type: str = option("uint8", "INT8 activations: uint8 for x86 CPUs, int8 for ARM.",
                                  choices=("uint8", "int8"))
    reduce_range: bool = option(False, "7-bit weights (x86 CPUs without VNNI).", kind="flag")
    layer_errors: bool = option(True, "Per-layer INT8 error, each layer quantized alone (factorized chains vs their "
                                "dense layer).", kind="switch")
    layer_error_samples: int = option(8, "Held-out samples the per-layer INT8 errors are measured on.", min=1)
    lossy_chains: str = option(
        "report", "Factorized chains that INT8 hurts clearly more than their dense layer: report them, or keep them "
        "in float in the INT8 model (needs --original).", choices=LOSSY_CHAIN_ACTIONS)
    lossy_ratio: float = option(
        2.5, "A chain is lossy when its INT8 error is at least this many times its dense layer's (about 1.7x is "
        "what three quantized factors cost anyway).", min=1.0)
    keep_io_types: bool = option(True, "FP16: keep float32 graph inputs and outputs.", kind="switch")
    fixed_shape: Mapping[str, Sequence[int] | int] | Sequence[str] | str | None = option(
        None, "Make dynamic dims static (NNAPI / CoreML), e.g. input:1,3,224,224 or batch=1; repeatable.",
        multiple=True, metavar="[NAME:]DIMS|PARAM=N")
    opset: int | None = option(None, "Convert to this opset first (onnx.version_converter).", metavar="INTEGER")
    runtime: Sequence[str] | str = option(
        "onnxruntime", "Comma-separated runtimes for numerics and latency: onnxruntime, openvino (extra 'openvino').",
        metavar="RUNTIMES")
    latency: bool = option(True, "Measure each artifact's latency (and the original's) on every runtime.",
                           kind="switch")
    repeats: int = option(50, "Timed runs per latency measurement (the median is reported).", min=1)
    warmup: int = option(10, "Untimed runs before each latency measurement.", min=0)
    threads: int | None = option(None, "Intra-op threads for latency [default: the runtime's].", metavar="INTEGER")
    fidelity_samples: int | None = option(None, "Held-out samples fidelity is measured on at most [default: all].",
                                          metavar="INTEGER")

    def targets(self) -> list[str]:
        return list(parse_export_targets(self.to, "to"))

    def runtimes(self) -> list[str]:
        items = list(dict.fromkeys(_csv(self.runtime) or ["onnxruntime"]))
        for r in items:
            check_runtime(r)
        return items

    def int8_options(self) -> int8_mod.Int8Options:
        return int8_mod.Int8Options(self.quantization, self.calibration_method, self.calib_samples, self.per_channel,
                                    self.activation_type, self.reduce_range)


@dataclass
class ExportResult:
    report: ExportReport
    paths: dict[str, Path] = field(default_factory=dict)  # kind -> file written (empty without output_dir)
    models: dict[str, onnx.ModelProto] = field(default_factory=dict)  # the ONNX artifacts, in memory
    lossy_chains: list[str] = field(default_factory=list)  # factorized layers that INT8 hurts clearly more than dense


def export_model(model: onnx.ModelProto | str | os.PathLike, to: Sequence[str] | str = "int8",
                 **options: Any) -> ExportResult:
    """Export ``model`` to the edge targets ``to`` (int8, fp16, ort); see the module docstring and ExportConfig."""
    try:
        cfg = ExportConfig(to=to, **options)
    except TypeError as e:
        raise UserError(f"export_model: {e}") from None
    return run(model, cfg)


def run(model: onnx.ModelProto | str | os.PathLike, cfg: ExportConfig) -> ExportResult:
    targets, runtimes = cfg.targets(), cfg.runtimes()
    if cfg.lossy_chains not in LOSSY_CHAIN_ACTIONS:
        raise UserError(f"must be one of {', '.join(LOSSY_CHAIN_ACTIONS)}, got {cfg.lossy_chains!r}",
                        option="lossy_chains")
    src, src_path = _load(model, "model")
    stem = cfg.name or (Path(src_path).name.removesuffix(".onnx") if src_path else "model")
    original, original_path = _load(cfg.original, "original") if cfg.original is not None else (None, None)
    fixed = fixed_shape_mod.parse(cfg.fixed_shape) if not isinstance(cfg.fixed_shape, Mapping) else dict(cfg.fixed_shape)
    _check_writes(cfg, src_path, original_path, planned_files(stem, targets, cfg, fixed))
    opts = cfg.int8_options()
    calib = read_inputs(cfg.calib, src, "calib")
    held = read_inputs(cfg.held_out, src, "held_out")
    if calib is not None and held is None:
        calib, held = split(calib, cfg.held_out_fraction)
    mode = int8_mod.choose_mode(src, opts, calib is not None) if "int8" in targets else None
    out_dir, created = _output_dir(cfg.output_dir, src_path)
    try:
        with tempfile.TemporaryDirectory(prefix=".rene-export-", dir=out_dir) as tmp:
            work = Path(tmp)
            result = _build(src, src_path, original, original_path, stem, targets, runtimes, mode, opts, calib, held,
                            fixed, cfg, work)
            if out_dir is not None:
                result.paths = _publish(work, out_dir, result, stem)
    except BaseException:
        if created and out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return result


# ----------------------------------------------------------------------------------------------- building


def _build(src, src_path, original, original_path, stem, targets, runtimes, mode, opts, calib, held, fixed, cfg,
           work: Path) -> ExportResult:
    base, base_kind, base_notes = src, None, []
    if fixed:
        base, base_kind = fixed_shape_mod.fix(base, fixed), "fixed"
        base_notes.append(f"dynamic dims fixed: {_show(fixed)}")
    if cfg.opset is not None:
        before = opset_mod.opset_of(base)
        base, base_kind = opset_mod.convert(base, int(cfg.opset)), "opset"
        base_notes.append(f"opset {before} -> {cfg.opset} (onnx.version_converter)")
    files: dict[str, Path] = {}  # kind -> file in work
    rows: dict[str, ArtifactRow] = {}
    ref_path = _save(original if original is not None else src, work / "reference.onnx")
    src_file = _save(src, work / "source.onnx")
    base_path = src_file if base_kind is None else _save(base, work / f"{stem}.{_base_name(base_kind, cfg)}.onnx")
    if base_kind is not None:
        files[base_kind] = base_path
        rows[base_kind] = ArtifactRow(base_kind, base_path.name, base_path.stat().st_size, opset=opset_mod.opset_of(base),
                                      notes=base_notes)
    lossy: list[str] = []
    for kind in targets:
        emit("export", message=f"building {kind}")
        if kind == "int8":
            path, row, lossy = _int8(base_path, original, stem, mode, opts, calib, held, cfg, work)
        elif kind == "fp16":
            path = _save(fp16_mod.convert(base, keep_io_types=cfg.keep_io_types), work / f"{stem}.fp16.onnx")
            row = ArtifactRow("fp16", path.name, 0, details={"converter": "onnxconverter-common float16",
                                                           "keep_io_types": cfg.keep_io_types})
        else:
            ort = ort_format.convert(base_path, work, stem)
            path, files["ort_config"] = ort.ort_path, ort.config_path
            row = ArtifactRow("ort", path.name, 0, format="ort",
                              details={"required_operators_config": ort.config_path.name,
                                       "mobile_usability": ort.usability})
        files[kind], rows[kind] = path, row
    for kind, row in rows.items():
        row.size_bytes = files[kind].stat().st_size
        if row.format == "onnx":
            row.opset = opset_mod.opset_of(onnx.load(str(files[kind]), load_external_data=False))
    report = _measure(src, src_file, original, original_path, ref_path, base, rows, files, runtimes, calib, held, cfg,
                      work)
    report.source = {"path": os.fspath(src_path) if src_path else None, "size_bytes": _size(src_path, src_file),
                     "opset": opset_mod.opset_of(src), "name": stem}
    report.meta = {**environment_meta(), "targets": targets, "options": _options(cfg)}
    models = {k: onnx.load(str(files[k])) for k, r in rows.items() if r.format == "onnx"}
    return ExportResult(report, {}, models, lossy)


def _int8(base_path: Path, original, stem, mode, opts, calib: InputSet | None, held: InputSet | None, cfg,
          work: Path) -> tuple[Path, ArtifactRow, list[str]]:
    pre = work / "int8.pre.onnx"
    notes = int8_mod.preprocess(base_path, pre)
    batch = batch_of(onnx.load(str(pre), load_external_data=False))
    cache = work / "int8.calibration.json"
    dst = work / f"{stem}.int8.onnx"
    arrays = calib.arrays if calib is not None else None
    res = int8_mod.quantize(pre, dst, mode, opts, arrays, batch, cache=cache if mode == "static" else None)
    details: dict[str, Any] = {"quantization": res.settings}
    lossy: list[str] = []
    if mode == "static" and cfg.layer_errors:
        probe = held if held is not None else calib
        feeds = _feeds_list(probe.arrays, batch, cfg.layer_error_samples)
        details["layer_error_inputs"] = f"{len(feeds) * (batch or 1)} samples of {probe.source}"

        def only(pre_path: Path, cache_path: Path):
            return lambda nodes, out: int8_mod.quantize(pre_path, out, "static", opts, None, batch, cache=cache_path,
                                                        nodes_to_quantize=nodes, nodes_to_exclude=[]).path

        errors = layer_error.measure(pre, feeds, only(pre, cache), work)
        chains = {k: e for k, e in errors.items() if e.method != "dense"}
        if chains and original is not None:
            emit("export", message="layer errors of the dense original")
            opre = work / "original.pre.onnx"
            int8_mod.preprocess(_save(original, work / "original.onnx"), opre)
            ocache = work / "original.calibration.json"
            int8_mod.quantize(opre, work / "original.int8.onnx", "static", opts, arrays, batch_of(onnx.load(str(opre))),
                              cache=ocache)
            dense_layers = [l for l in layer_error.find_layers(onnx.load(str(opre))) if l.name in chains]
            dense = layer_error.measure(opre, _feeds_list(probe.arrays, batch_of(onnx.load(str(opre))),
                                                          cfg.layer_error_samples), only(opre, ocache), work, dense_layers)
            lossy = layer_error.compare_dense(chains, dense, cfg.lossy_ratio)
        elif chains:
            notes.append("factorized chains found, but no dense original was given: their errors are not compared "
                         "with the dense layers'")
        details["layer_errors"] = [e.to_dict() for e in errors.values()]
        details["lossy_chains"] = lossy
        if lossy:
            notes.append(f"{len(lossy)} factorized chain(s) lose clearly more under INT8 than their dense layer "
                         f"(>= {cfg.lossy_ratio}x its error): {', '.join(lossy[:5])}"
                         + (" -- kept in float" if cfg.lossy_chains == "float" else
                            " -- keep them dense in compress, or lossy_chains='float' keeps them in float here"))
        if lossy and cfg.lossy_chains == "float":
            nodes = [n for e in lossy for n in _chain_nodes(pre, e)]
            res = int8_mod.quantize(pre, dst, "static", opts, arrays, batch, cache=cache, nodes_to_exclude=nodes)
            details["quantization"] = res.settings
    row = ArtifactRow("int8", dst.name, 0, details=details, notes=notes + res.notes)
    return dst, row, lossy


def _measure(src, src_file, original, original_path, ref_path, base, rows, files, runtimes, calib, held, cfg,
             work) -> ExportReport:
    ref_model = original if original is not None else src
    real = held if held is not None else None
    if real is not None:
        inputs, fidelity_on = real.arrays, f"held-out real inputs: {real.source}"
    else:
        inputs = _random_inputs(ref_model, base)
        fidelity_on = "random inputs (no held-out real inputs: a soundness check of the conversion, not fidelity)"
    report = ExportReport(inputs={"calibration": calib.describe() if calib else None,
                                  "held_out": held.describe() if held else None, "fidelity_on": fidelity_on})
    emit("export", message="numerics", samples=min(len(v) for v in inputs.values()))
    ref_batch = batch_of(ref_model)
    reference = measure.reference_outputs(ref_path, inputs, ref_batch, cfg.fidelity_samples)
    ref_size = _size(original_path if original is not None else None, ref_path) if original is not None else \
        _size(None, src_file)
    table: list[tuple[ArtifactRow, Path]] = []
    if original is not None:
        table.append((ArtifactRow("original", Path(original_path).name if original_path else None, ref_size,
                                  opset=opset_mod.opset_of(original), size_ratio=1.0), ref_path))
    src_row = ArtifactRow("source", None, _size(None, src_file), opset=opset_mod.opset_of(src),
                          size_ratio=ref_size / _size(None, src_file))
    table.append((src_row, src_file))
    table += [(row, files[kind]) for kind, row in rows.items()]
    for row, path in table:
        row.size_ratio = ref_size / row.size_bytes if row.size_bytes else None
        if row.kind == "original" or (row.kind == "source" and original is None):
            continue
        bs = batch_of(onnx.load(str(path), load_external_data=False)) if row.format == "onnx" else batch_of(base)
        for rt in runtimes:
            if rt != "onnxruntime" and row.format == "ort":
                row.numerics_by_runtime[rt] = {"skipped": f"{rt} cannot read ORT-format files"}
                continue
            n = measure.numerics(reference, path, inputs, bs, cfg.fidelity_samples, rt)
            if rt == "onnxruntime":
                row.numerics = n
            else:
                row.numerics_by_runtime[rt] = n
    report.artifacts = [row for row, _ in table]
    report.runtimes = {rt: get_runtime(rt, threads=cfg.threads).describe() for rt in runtimes}
    if cfg.latency:
        first = {k: v[: (batch_of(base) or ref_batch or 1)] for k, v in inputs.items()}
        for rt in runtimes:
            timed = [(row, path) for row, path in table if not (rt != "onnxruntime" and row.format == "ort")]
            lat = measure.latency([ref_path] + [p for r, p in timed if r.kind != "original"], first, work, rt,
                                  cfg.repeats, cfg.warmup, cfg.threads)
            rest = iter(lat[1:])
            for row, _ in table:
                if row.kind == "original":
                    row.latency_ms[rt] = lat[0]
                elif rt != "onnxruntime" and row.format == "ort":
                    row.latency_ms[rt] = {"median_ms": None, "skipped": "cannot read .ort"}
                else:
                    row.latency_ms[rt] = next(rest)
    return report


# ----------------------------------------------------------------------------------------------- helpers


def _load(model, option: str) -> tuple[onnx.ModelProto, str | None]:
    if isinstance(model, onnx.ModelProto):
        return model, None
    if not isinstance(model, (str, os.PathLike)):
        raise UserError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}", option=option)
    path = Path(model)
    if not path.is_file():
        raise LoadError(f"{path}: no such ONNX file", option=option)
    try:
        m = onnx.load(str(path))
        onnx.checker.check_model(m)
    except Exception as e:
        raise LoadError(f"{path}: not a valid ONNX model ({first_line(e)})", option=option) from None
    return m, os.fspath(path)


def planned_files(stem: str, targets: Sequence[str], cfg: ExportConfig, fixed) -> dict[str, str]:
    """kind -> the file name :func:`_publish` will give it in ``output_dir`` (the module docstring's list)."""
    base_kind = "opset" if cfg.opset is not None else ("fixed" if fixed else None)
    names = {base_kind: f"{stem}.{_base_name(base_kind, cfg)}.onnx"} if base_kind else {}
    for kind in targets:
        if kind == "ort":
            names.update(ort=f"{stem}.ort", ort_config=f"{stem}.required_operators.config")
        else:
            names[kind] = f"{stem}.{kind}.onnx"
    names["report"] = f"{stem}.export.json"
    return names


def _check_writes(cfg: ExportConfig, src_path, original_path, names: dict[str, str]) -> None:
    """Refuse, before any work, an artifact that would land on a file this export reads (links included)."""
    from rene_onnx.files import check_io, model_reads

    if cfg.output_dir is None or not Path(cfg.output_dir).is_dir():
        return  # nothing is written, or into a new folder, where nothing can be read yet
    reads = {"model": model_reads(src_path) or src_path, "original": model_reads(original_path) or original_path,
             **{k: v for k, v in (("calib", cfg.calib), ("held_out", cfg.held_out)) if isinstance(v, (str, os.PathLike))}}
    check_io(reads, {f"output_dir/the {k.replace('_', ' ')} file": Path(cfg.output_dir) / n for k, n in names.items()})


def _output_dir(output_dir, src_path) -> tuple[Path | None, bool]:
    if output_dir is None:
        return None, False
    d = Path(output_dir)
    if d.exists() and not d.is_dir():
        raise PathConflictError(f"{d} is a file, not a folder", option="output_dir")
    if not d.parent.exists():
        raise UserError(f"{d.parent}: no such folder", option="output_dir")
    created = not d.exists()
    d.mkdir(exist_ok=True)
    return d, created


def _publish(work: Path, out_dir: Path, result: ExportResult, stem: str) -> dict[str, Path]:
    """Move the artifacts from ``work`` into ``out_dir`` and write the report; kind -> final path."""
    moves = {}
    for row in result.report.artifacts:
        if row.kind in ("original", "source") or not row.file:
            continue
        moves[row.kind] = row.file
        if row.kind == "ort":
            moves["ort_config"] = row.details["required_operators_config"]
    targets = {k: out_dir / f for k, f in moves.items()}
    report_path = out_dir / f"{stem}.export.json"
    for k, p in {**targets, "report": report_path}.items():
        if p.exists() and p.is_dir():
            raise PathConflictError(f"{p} is a folder", option="output_dir")
    result.report.save_json(work / "report.json")
    for k, f in moves.items():
        os.replace(work / f, targets[k])
    os.replace(work / "report.json", report_path)
    return {**targets, "report": report_path}


def _save(model: onnx.ModelProto, path: Path) -> Path:
    try:
        onnx.save(model, str(path))
    except ValueError:  # > 2 GB: external data next to it
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    return path


def _size(user_path, saved: Path) -> int:
    return os.path.getsize(user_path) if user_path else saved.stat().st_size


def _random_inputs(ref_model: onnx.ModelProto, base: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Random inputs (seed 0) whose sample count every fixed batch divides (8 when the batch is dynamic)."""
    import math

    from rene_onnx.validate.numerics import input_feeds

    fixed = [b for b in (batch_of(ref_model), batch_of(base)) if b]
    n = math.lcm(8, *fixed)
    shapes = {}
    for vi in graph_input_infos(ref_model):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims[1:]):
            shapes[vi.name] = (n, *dims[1:])
    try:
        return input_feeds(ref_model, shapes)
    except ValueError as e:
        raise UserError(f"no real inputs, and no random ones can be made: {e}; give held-out inputs",
                        option="held_out") from None


def _feeds_list(arrays: Mapping[str, np.ndarray], batch: int | None, samples: int) -> list[dict[str, np.ndarray]]:
    from .inputs import batches

    bs = batch or min(samples, min(len(v) for v in arrays.values()))
    feeds = batches(arrays, bs, max(samples, bs))
    if not feeds:
        raise StageError("no inputs to measure the per-layer errors on")
    return feeds


def _chain_nodes(pre: Path, layer: str) -> list[str]:
    return next((l.nodes for l in layer_error.find_layers(onnx.load(str(pre))) if l.name == layer), [])


def _base_name(kind: str, cfg: ExportConfig) -> str:
    return f"opset{cfg.opset}" if kind == "opset" else "fixed"


def _csv(v) -> list[str]:
    items = v.split(",") if isinstance(v, str) else [x for s in v for x in str(s).split(",")]
    return [x.strip().lower() for x in items if x.strip()]


def _show(fixed: Mapping) -> str:
    return ", ".join(f"{k or 'input'}={'x'.join(map(str, v)) if not isinstance(v, int) else v}" for k, v in fixed.items())


def _options(cfg: ExportConfig) -> dict:
    skip = {"calib", "held_out", "original", "output_dir"}
    out = {k: v for k, v in vars(cfg).items() if k not in skip}
    for k in ("calib", "held_out", "original", "output_dir"):
        v = getattr(cfg, k)
        out[k] = os.fspath(v) if isinstance(v, (str, os.PathLike)) else (None if v is None else type(v).__name__)
    return out
