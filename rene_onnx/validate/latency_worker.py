"""Latency / profiling worker: ``python -m rene_onnx.validate.latency_worker`` (spec as JSON on stdin).

Runs without torch (it never imports it) so torch's thread pool cannot skew
onnxruntime's timings. Prints one JSON line on stdout: ``{"ok": true,
"results": [...], "torch_loaded": false}`` or ``{"ok": false, "error_type":
..., "error": ...}``. See ``rene_onnx.validate.latency`` for the protocol.
"""
from __future__ import annotations

import glob
import json
import os
import statistics
import sys
import time


def main() -> int:
    try:
        spec = json.loads(sys.stdin.read())
        results = _profile(spec) if spec["mode"] == "profile" else _latency(spec)
        answer = {"ok": True, "results": results}
        code = 0
    except Exception as e:  # report every failure as JSON to the parent
        answer = {"ok": False, "error_type": type(e).__name__, "error": str(e)}
        code = 1
    answer["torch_loaded"] = "torch" in sys.modules
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return code


def _feeds(spec: dict, path: str, sess) -> dict:
    from .numerics import check_feeds, feeds_from

    return check_feeds(sess, feeds_from(spec.get("feeds_npz") or None, path, spec.get("input_shapes") or None))


def _latency(spec: dict) -> list[dict]:
    paths = spec["models"]
    runs = _ort_runs(spec) if spec.get("runtime", "onnxruntime") == "onnxruntime" else _runtime_runs(spec)
    for run in runs:
        for _ in range(spec["warmup"]):
            run()
    samples: list[list[float]] = [[] for _ in paths]
    n = len(paths)
    for r in range(spec["repeats"]):
        for j in range(n):
            i = (r + j) % n  # rotate the starting model each round
            t0 = time.perf_counter_ns()
            runs[i]()
            samples[i].append((time.perf_counter_ns() - t0) / 1e6)
    return [{"model": p, "samples_ms": s} for p, s in zip(paths, samples)]


def _ort_runs(spec: dict) -> list:
    """One no-argument run per model on onnxruntime (``device_io``: inputs / outputs bound on the device)."""
    from .numerics import make_session

    paths = spec["models"]
    options = {"enable_cuda_graph": "1"} if spec.get("cuda_graph") else None
    sessions = [make_session(p, spec["provider"], threads=spec.get("threads"), spinning=spec.get("spinning", False),
                             provider_options=options) for p in paths]
    feeds = [_feeds(spec, p, s) for p, s in zip(paths, sessions)]
    if spec.get("device_io"):
        return [_bound_run(s, f, spec["provider"], p) for s, f, p in zip(sessions, feeds, paths)]
    return [lambda s=s, f=f: s.run(None, f) for s, f in zip(sessions, feeds)]


def _runtime_runs(spec: dict) -> list:
    """One no-argument run per model on another runtime (``rene_onnx.validate.runtimes``; e.g. openvino)."""
    from .numerics import feeds_from
    from .runtimes import get_runtime

    runtime = get_runtime(spec["runtime"], provider=spec["provider"], threads=spec.get("threads"),
                          precision=spec.get("precision"))
    runs = []
    for path in spec["models"]:
        sess = runtime.load(path)
        given = feeds_from(spec.get("feeds_npz") or None, path, spec.get("input_shapes") or None)
        feeds = {n: given[n] for n in sess.input_names}
        runs.append(lambda s=sess, f=feeds: s.run(f))
    return runs


def _bound_run(sess, feeds: dict, provider: str, path: str):
    """A run with inputs copied to the provider's device once and outputs written there (I/O binding).

    Times the model alone, without the host <-> device copies of ``sess.run``
    (on the CPU provider the two are the same). Outputs are preallocated from
    one CPU run's shapes, so every run uses the same addresses, as a CUDA
    graph's replay needs. ``run_with_iobinding`` returns after the device's
    work is done.
    """
    import onnxruntime as ort

    from .numerics import make_session

    device = "cpu" if provider == "cpu" else "cuda"
    shapes = make_session(path, "cpu").run(None, feeds)
    io = sess.io_binding()
    inputs = {k: ort.OrtValue.ortvalue_from_numpy(v, device, 0) for k, v in feeds.items()}
    outputs = {o.name: ort.OrtValue.ortvalue_from_shape_and_type(list(y.shape), y.dtype, device, 0)
               for o, y in zip(sess.get_outputs(), shapes)}
    for k, v in inputs.items():
        io.bind_ortvalue_input(k, v)
    for k, v in outputs.items():
        io.bind_ortvalue_output(k, v)

    def run(keep=(inputs, outputs)):  # the bound values must outlive the binding
        sess.run_with_iobinding(io)

    return run


def _profile(spec: dict) -> list[dict]:
    from .latency import name_mapper, parse_profile
    from .numerics import make_session

    (path,) = spec["models"]
    prefix = os.path.join(spec["profile_dir"], "ort_profile")
    sess = make_session(path, spec["provider"], threads=spec.get("threads"), profile_prefix=prefix)
    feeds = _feeds(spec, path, sess)
    for _ in range(spec["warmup"] + spec["repeats"]):
        sess.run(None, feeds)
    trace = sess.end_profiling()
    if not os.path.isabs(trace):
        trace = next(iter(glob.glob(prefix + "*.json")), trace)
    with open(trace) as f:
        events = json.load(f)
    per_node = parse_profile(events, skip_runs=spec["warmup"], rename=name_mapper(path))
    return [{"model": path, "node_us": {k: statistics.median(v) for k, v in per_node.items()}}]


if __name__ == "__main__":
    sys.exit(main())
