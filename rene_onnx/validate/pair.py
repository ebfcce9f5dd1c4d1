"""Two ONNX models side by side: counts, numerics, latency and top-1 (no torch).

Used by the pipeline (original vs compressed) and by ``rene-onnx validate``
on any pair of models with the same inputs.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import onnx

from .counts import OnnxCounts, count_onnx
from .latency import measure_latency
from .numerics import Numerics, compare, make_session, run_onnx


@dataclass
class PairResult:
    counts: tuple[OnnxCounts, OnnxCounts]
    numerics: Numerics
    latency: dict[str, Any] | None
    accuracy: dict[str, Any] | None


def measure_pair(original: onnx.ModelProto, compressed: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                 provider: str = "cpu", warmup: int = 10, repeats: int = 50, device_io: bool = False,
                 runtime: str = "onnxruntime", extra: Mapping[str, onnx.ModelProto] | None = None) -> dict[str, Any]:
    """Latency of both models, interleaved in one torch-free worker process (the ratio is what matters).

    ``device_io``: inputs / outputs stay on the provider's device (see ``measure_latency``);
    ``runtime``: onnxruntime or openvino (``rene_onnx.validate.runtimes``); ``extra``: more models timed in the
    same interleaved run (e.g. ``{"int8": ...}``), reported as ``<name>_ms``.
    """
    extra = dict(extra or {})
    with tempfile.TemporaryDirectory(prefix="rene-lat-") as tmp:
        models = {"original": original, "compressed": compressed, **extra}
        paths = [os.path.join(tmp, f"{name}.onnx") for name in models]
        for path, model in zip(paths, models.values()):
            onnx.save(model, path)
        np.savez(os.path.join(tmp, "feeds.npz"), **feeds)
        lat = measure_latency(paths, os.path.join(tmp, "feeds.npz"), None, provider=provider,
                              warmup=warmup, repeats=repeats, device_io=device_io, runtime=runtime)
    out = {"before": lat[0].median_ms, "after": lat[1].median_ms, "provider": lat[1].provider,
           "repeats": repeats, "device_io": bool(device_io), "detail": [vars(t) for t in lat[:2]],
           **{f"{name}_ms": t.median_ms for name, t in zip(extra, lat[2:])}}
    return out if runtime == "onnxruntime" else {**out, "runtime": runtime}


def run_on(runtime: str, model: onnx.ModelProto | str | os.PathLike, inputs: Mapping[str, np.ndarray],
           batch: int | None = None, limit: int | None = None) -> list[np.ndarray]:
    """Outputs of ``model`` on ``inputs`` ((N, ...) arrays) run by ``runtime`` (CPU), ``batch`` samples at a time."""
    from .runtimes import get_runtime, run_model

    rt = get_runtime(runtime)
    if not isinstance(model, onnx.ModelProto):
        return run_model(rt, model, inputs, batch, limit, batch is not None)
    with tempfile.TemporaryDirectory(prefix="rene-rt-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(model, path)
        return run_model(rt, path, inputs, batch, limit, batch is not None)


def onnx_top1(model: onnx.ModelProto, X: np.ndarray, y: np.ndarray, provider: str = "cpu",
              batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of a classifier with one input; a static batch dim is respected."""
    sess = make_session(model, provider)
    inp = sess.get_inputs()[0]
    if isinstance(inp.shape[0], int):
        batch_size = inp.shape[0]
    n = len(X) - len(X) % batch_size if isinstance(inp.shape[0], int) else len(X)  # a fixed batch: no short one
    correct = 0
    for i in range(0, n, batch_size):
        logits = sess.run(None, {inp.name: X[i:i + batch_size]})[0]
        correct += int((logits.reshape(len(logits), -1).argmax(-1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / n


def compare_pair(original: onnx.ModelProto, compressed: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                 input_shapes: Mapping[str, tuple[int, ...]] | None = None, provider: str = "cpu",
                 latency: bool = True, warmup: int = 10, repeats: int = 50,
                 test_data: tuple[np.ndarray, np.ndarray] | None = None, device_io: bool = False,
                 runtime: str = "onnxruntime") -> PairResult:
    """Counts, output differences on ``feeds``, latency and (with ``test_data``) top-1 of both models.

    ``runtime``: where numerics and latency are measured (``onnxruntime`` or ``openvino``); top-1 on
    ``test_data`` is onnxruntime's.
    """
    counts = (count_onnx(original, input_shapes), count_onnx(compressed, input_shapes))
    if runtime == "onnxruntime":
        numerics = compare(run_onnx(original, feeds, provider), run_onnx(compressed, feeds, provider))
    else:
        numerics = compare(*(run_on(runtime, m, feeds) for m in (original, compressed)))
    lat = measure_pair(original, compressed, feeds, provider, warmup, repeats, device_io, runtime) if latency else None
    acc = None
    if test_data is not None:
        X, y = test_data
        acc = {"metric": "top1", "inputs": "data-test", "n": int(len(y)), "samples": int(len(y)), "before": onnx_top1(original, X, y, provider),
               "after": onnx_top1(compressed, X, y, provider)}
    return PairResult(counts, numerics, lat, acc)
