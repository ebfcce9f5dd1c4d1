"""Latency on onnxruntime, measured in a separate process without torch.

``measure_latency`` and ``profile_nodes`` run ``python -m
rene_onnx.validate.latency_worker`` in a subprocess (``sys.executable``)
with an environment stripped of OpenMP / MKL / torch thread settings: torch's
thread pool in the same process skewed onnxruntime timings by ~30% here.
The worker loads all models, warms each up, then interleaves the timed runs
(A, B, A, B, ... with the starting model rotating each round) so machine
noise hits every model alike. Ratios between models are what matter.

Node profiles (``profile_nodes``) come from onnxruntime's profiler with
graph optimization ``ORT_ENABLE_ALL``, which fuses nodes. Profiled names are
mapped back to the original graph's node names (``name_mapper``):

- ``<node>``: kept as is (unfused node, or a fusion that kept the name, as
  ``FusedConv`` = Conv + activation at the EXTENDED level);
- ``fused <node>`` / ``<node>/MatMulAddFusion`` (``FusedGemm``): ``<node>``;
- ``<tensor>_nchwc`` (the CPU NCHWc layout's Conv, possibly with a fused
  activation / Add): the node producing ``<tensor>``; if that is an
  activation or Add fused into the conv, the Conv / Gemm / MatMul feeding it,
  so the fused activation's time is counted in the conv's;
- ``_token_<n>`` suffixes (ORT's unique-name counter) are dropped first.

Nodes with no original counterpart (``ReorderInput`` / ``ReorderOutput``
layout conversions, ...) keep their profiled names.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from rene_onnx.errors import MissingDependencyError, UserError

from rene_onnx.graph import load_model, model_path
from .numerics import ProviderUnavailable, providers_for

WORKER_MODULE = "rene_onnx.validate.latency_worker"

#: environment variables (prefixes) that set thread pools; the worker runs without them
THREAD_ENV_PREFIXES = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "TORCH_", "PYTORCH_", "NUMEXPR_", "VECLIB_")

_MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_FUSIBLE = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "HardSwish", "Add", "Sum"}


@dataclass
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    provider: str
    min_ms: float | None = None
    model: str = ""

    @classmethod
    def from_samples(cls, samples_ms: Iterable[float], provider: str, model: str = "") -> "Latency":
        s = np.asarray(list(samples_ms), dtype=np.float64)
        if s.size == 0:
            raise ValueError("no latency samples")
        p10, med, p90 = np.percentile(s, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), int(s.size), provider, float(s.min()), model)

    def to_dict(self) -> dict:
        return asdict(self)


def measure_latency(
    model_paths: list[str | os.PathLike],
    feeds_npz: str | os.PathLike | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    provider: str = "cpu",
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    *,
    spinning: bool = False,
    device_io: bool = False,
    cuda_graph: bool = False,
    timeout_s: float | None = None,
    runtime: str = "onnxruntime",
    precision: str | None = None,
) -> list[Latency]:
    """Median / p10 / p90 latency of each model, measured interleaved in one worker process.

    Inputs come from ``feeds_npz`` (arrays keyed by input name; each model
    takes the ones it needs) or, without it, random data from
    ``input_shapes`` (seed 0, same data for every model). Raises
    ``ProviderUnavailable`` when ``provider`` is not really active.
    ``spinning`` (off by default): whether idle onnxruntime threads busy-wait.
    With several sessions in one process, the idle sessions' spinning
    threads compete with the running one; on 2 busy cores this gave 16 ms
    p90 tails for a 0.7 ms conv.
    ``device_io``: inputs copied to the provider's device once and outputs
    left there (onnxruntime I/O binding), so a GPU provider's timing holds
    the model alone, without ``run``'s host <-> device copies.
    ``cuda_graph`` (CUDA provider, implies ``device_io``): the first run is
    captured as a CUDA graph and replayed, so kernel-launch overhead drops out.
    ``runtime``: ``onnxruntime`` or another of ``rene_onnx.validate.runtimes`` (``openvino``: CPU,
    ``threads`` as its thread count, ``precision`` its inference precision hint, default f32);
    ``device_io`` / ``cuda_graph`` / ``spinning`` are onnxruntime's. The result's ``provider`` is
    then the runtime's name.
    """
    paths = [model_path(p) for p in model_paths]
    if not paths:
        raise ValueError("measure_latency needs at least one model path")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup} repeats={repeats}")
    providers_for(provider)
    spec = _spec("latency", paths, feeds_npz, input_shapes, provider, warmup, repeats, threads)
    spec["spinning"] = bool(spinning)
    if cuda_graph and provider != "cuda":
        raise ValueError(f"cuda_graph needs provider 'cuda', got {provider!r}")
    spec["device_io"] = bool(device_io or cuda_graph)
    spec["cuda_graph"] = bool(cuda_graph)
    spec["runtime"], spec["precision"] = runtime, precision
    if runtime != "onnxruntime":
        from .runtimes import check_runtime

        check_runtime(runtime, provider)
        if device_io or cuda_graph:
            raise ValueError(f"device_io / cuda_graph are onnxruntime options, not {runtime}'s")
    out = run_worker(spec, timeout_s=timeout_s)
    label = provider if runtime == "onnxruntime" else runtime
    return [Latency.from_samples(r["samples_ms"], label, r["model"]) for r in out["results"]]


def profile_nodes(
    model_path_: str | os.PathLike,
    feeds: Mapping[str, np.ndarray] | str | os.PathLike | None = None,
    provider: str = "cpu",
    repeats: int = 20,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    warmup: int = 3,
    threads: int | None = None,
    timeout_s: float | None = None,
) -> dict[str, float]:
    """Median kernel time (microseconds) per node over ``repeats`` profiled runs.

    Keys are the original graph's node names where the profiled (possibly
    fused) name maps back (see the module docstring), else the profiled name.
    ``feeds`` is a dict of arrays, an ``.npz`` path, or ``None`` for random
    inputs from ``input_shapes``. Runs in the torch-free worker process.
    """
    path = model_path(model_path_)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats} warmup={warmup}")
    providers_for(provider)
    with tempfile.TemporaryDirectory(prefix="rene-profile-") as tmp:
        npz = feeds
        if isinstance(feeds, Mapping):
            npz = os.path.join(tmp, "feeds.npz")
            np.savez(npz, **{k: np.asarray(v) for k, v in feeds.items()})
        spec = _spec("profile", [path], npz, input_shapes, provider, warmup, repeats, threads)
        spec["profile_dir"] = tmp
        out = run_worker(spec, timeout_s=timeout_s)
    return {k: float(v) for k, v in out["results"][0]["node_us"].items()}


def _spec(mode, paths, feeds_npz, input_shapes, provider, warmup, repeats, threads) -> dict:
    if feeds_npz is not None:
        feeds_npz = model_path(feeds_npz)
    return {
        "mode": mode,
        "models": [os.path.abspath(p) for p in paths],
        "feeds_npz": os.path.abspath(feeds_npz) if feeds_npz is not None else None,
        "input_shapes": {k: [int(d) for d in v] for k, v in (input_shapes or {}).items()},
        "provider": provider,
        "warmup": int(warmup),
        "repeats": int(repeats),
        "threads": None if threads is None else int(threads),
    }


def worker_env() -> dict[str, str]:
    """The current environment minus thread-pool settings (OMP_*, MKL_*, TORCH_*, ...)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(THREAD_ENV_PREFIXES)}


def run_worker(spec: dict, *, timeout_s: float | None = None) -> dict:
    """Run the worker on ``spec`` and return its JSON answer; errors are re-raised here."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", WORKER_MODULE],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            env=worker_env(),
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"latency worker timed out after {timeout_s} s") from e
    answer = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            answer = json.loads(line)
            break
    if answer is None:
        tail = proc.stderr.strip()[-2000:]
        raise RuntimeError(f"latency worker failed (exit code {proc.returncode}) without an answer:\n{tail}")
    if not answer.get("ok"):
        kind = {"ProviderUnavailable": ProviderUnavailable, "ValueError": ValueError, "UserError": UserError,
                "MissingDependencyError": MissingDependencyError}.get(answer.get("error_type"), RuntimeError)
        msg = answer.get("error", "latency worker failed")
        log = proc.stderr.strip()
        if log:  # onnxruntime's own log says why a provider failed to start
            msg += "\nonnxruntime log (tail):\n" + log[-1500:]
        raise kind(msg)
    return answer


# ---------------------------------------------------------------- profile parsing (used by the worker)


def parse_profile(
    events: list[dict], skip_runs: int = 0, rename: Callable[[str], str] | None = None
) -> dict[str, list[float]]:
    """Kernel time (us) per node name and per run, from an onnxruntime trace.

    Runs are delimited by the ``model_run`` session events; the first
    ``skip_runs`` runs (warm-up) are dropped. A node name is taken from
    ``args["node_name"]`` when present, else from the event name minus
    ``_kernel_time``, then passed through ``rename`` (times of nodes renamed
    alike are summed per run).
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    per_run: list[dict[str, float]] = [{} for _ in runs]
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        idx = next((i for i, (a, b) in enumerate(runs) if a <= e["ts"] <= b), None)
        if idx is None:
            continue
        name = (e.get("args") or {}).get("node_name") or e["name"][: -len("_kernel_time")]
        if rename is not None:
            name = rename(name)
        per_run[idx][name] = per_run[idx].get(name, 0.0) + float(e["dur"])
    out: dict[str, list[float]] = {}
    for run in per_run[skip_runs:]:
        for name, us in run.items():
            out.setdefault(name, []).append(us)
    return out


def name_mapper(model: onnx.ModelProto | str | os.PathLike) -> Callable[[str], str]:
    """A function: profiled node name -> original node name (or itself when nothing matches).

    See the module docstring for the rules.
    """
    model = load_model(model)
    nodes = {n.name: n for n in model.graph.node if n.name}
    producer = {o: n for n in model.graph.node for o in n.output}
    return lambda name: _map_one(name, nodes, producer)


def _map_one(name: str, nodes: dict, producer: dict) -> str:
    if name in nodes:
        return name
    base = re.sub(r"_token_\d+$", "", name)
    if base.startswith("fused "):
        base = base[len("fused "):]
    base = re.sub(r"/\w*Fusion$", "", base)
    if base in nodes:
        return base
    if base.endswith("_nchwc") and base[: -len("_nchwc")] in producer:
        node = producer[base[: -len("_nchwc")]]
        return _fused_anchor(node, producer).name or name
    return name


def _fused_anchor(node, producer: dict, depth: int = 3):
    """The Conv / Gemm / MatMul that ``node`` (an activation or Add) was fused into, else ``node``."""
    cur = node
    for _ in range(depth):
        if cur.op_type in _MAC_OPS or cur.op_type not in _FUSIBLE:
            return cur
        feeders = [producer[i] for i in cur.input if i in producer]
        mac = [p for p in feeders if p.op_type in _MAC_OPS]
        nxt = mac or [p for p in feeders if p.op_type in _FUSIBLE]
        if not nxt:
            return node
        cur = nxt[0]
    return cur if cur.op_type in _MAC_OPS else node
