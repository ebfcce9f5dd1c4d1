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
    import numpy as np

    from .numerics import check_feeds, input_feeds

    if spec.get("feeds_npz"):
        with np.load(spec["feeds_npz"]) as z:
            feeds = {k: z[k] for k in z.files}
    else:
        feeds = input_feeds(path, spec.get("input_shapes") or None, seed=0)
    return check_feeds(sess, feeds)


def _latency(spec: dict) -> list[dict]:
    from .numerics import make_session

    paths = spec["models"]
    sessions = [make_session(p, spec["provider"], threads=spec.get("threads"), spinning=spec.get("spinning", False))
                for p in paths]
    feeds = [_feeds(spec, p, s) for p, s in zip(paths, sessions)]
    for s, f in zip(sessions, feeds):
        for _ in range(spec["warmup"]):
            s.run(None, f)
    samples: list[list[float]] = [[] for _ in paths]
    n = len(paths)
    for r in range(spec["repeats"]):
        for j in range(n):
            i = (r + j) % n  # rotate the starting model each round
            t0 = time.perf_counter_ns()
            sessions[i].run(None, feeds[i])
            samples[i].append((time.perf_counter_ns() - t0) / 1e6)
    return [{"model": p, "samples_ms": s} for p, s in zip(paths, samples)]


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
