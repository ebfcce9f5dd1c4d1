"""Validate the artifacts: numerics against the original on (held-out) inputs, latency on each runtime.

Numerics: the original runs once on onnxruntime (the FP32 reference); each artifact runs on every
runtime asked for (an ``.ort`` file on onnxruntime only) and is compared with it
(``rene_onnx.validate.numerics.compare``). Latency: per runtime, the original and all the artifacts
in one torch-free worker run, interleaved (``rene_onnx.validate.latency.measure_latency``), on one
sample batch of the same inputs; speedups are ratios from that one run.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rene_onnx.progress import emit
from rene_onnx.validate.numerics import compare
from rene_onnx.validate.runtimes import get_runtime, run_model


def reference_outputs(original: Path, inputs: Mapping[str, np.ndarray], fixed_batch: int | None,
                      limit: int | None) -> list[np.ndarray]:
    """The original's outputs on onnxruntime (``fixed_batch``: the graph's static batch, else None)."""
    return run_model(get_runtime("onnxruntime"), original, inputs, fixed_batch or 32, limit, bool(fixed_batch))


def numerics(reference: list[np.ndarray], artifact: Path, inputs: Mapping[str, np.ndarray], fixed_batch: int | None,
             limit: int | None, runtime: str = "onnxruntime", precision: str | None = None) -> dict:
    """The artifact's outputs on ``runtime`` compared with the reference outputs (a dict, ``Numerics`` fields)."""
    rt = get_runtime(runtime, precision=precision)
    got = run_model(rt, artifact, inputs, fixed_batch or 32, limit, bool(fixed_batch))
    n = min(len(reference[0]), len(got[0]))
    return {**compare([r[:n] for r in reference], [g[:n] for g in got]).to_dict(), "samples": int(n)}


def latency(paths: Sequence[Path], feeds: Mapping[str, np.ndarray], work: Path, runtime: str, repeats: int,
            warmup: int, threads: int | None, precision: str | None = None) -> list[dict]:
    """Median latency of each model (``paths[0]`` the original) in one interleaved worker run."""
    from rene_onnx.validate.latency import measure_latency

    npz = work / f"latency_feeds_{runtime}.npz"
    np.savez(npz, **{k: np.asarray(v) for k, v in feeds.items()})
    emit("export", message="latency", runtime=runtime, models=len(paths))
    lat = measure_latency([os.fspath(p) for p in paths], npz, None, warmup=warmup, repeats=repeats, threads=threads,
                          runtime=runtime, precision=precision)
    base = lat[0].median_ms
    return [{"median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms, "runs": t.runs,
             "original_ms": base, "speedup": base / t.median_ms if t.median_ms else None, "threads": threads}
            for t in lat]
