"""Where a report or a results file came from: package versions, the machine, and the source commit.

Every report's ``meta`` and every benchmark's results file records these, so a number can be traced to the code
that produced it and the CPU it ran on. Reads package metadata, ``/proc`` and (for a source checkout) ``git``;
imports no torch and initialises no CUDA.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

#: CPU flags that decide onnxruntime's kernels (conv channel blocks, INT8 dot products)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")

#: the checkout that holds the ``rene_onnx`` package, when it runs from source (an editable install)
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def environment_meta() -> dict[str, Any]:
    """``{"versions", "machine", "commit"}`` for ``Report.meta`` and results files.

    ``commit`` is :func:`source_commit` (None for an installed wheel)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for pkg in ("rene-onnx", "torch", "onnx", "onnxruntime-gpu", "onnxruntime", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"versions": versions, "machine": machine_meta(), "commit": source_commit()}


def machine_meta() -> dict[str, Any]:
    """Platform, CPU model and flags, logical CPUs (all and usable by this process), NVIDIA GPUs, and the 1 / 5 /
    15-minute load average (these machines are shared: a latency figure means more next to the load it ran under)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "usable_cpus": usable, "load_average": load, **cpu_and_gpus()}


def cpu_and_gpus() -> dict[str, Any]:
    """``{"cpu": model name, "cpu_flags": [the CPU_FLAGS it has], "gpus": [NVIDIA GPU models]}`` from /proc
    (Linux; empty where it cannot be read). No subprocess, no CUDA initialization."""
    from rene_onnx.validate.latency_aware import cpu_flags

    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((v.strip() for k, _, v in (ln.partition(":") for ln in f) if k.strip() == "model name"), None)
    except OSError:
        pass
    flags = set(cpu_flags())
    gpus = []
    root = "/proc/driver/nvidia/gpus"
    for bus in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, bus, "information"), encoding="utf-8") as f:
                gpus += [line.partition(":")[2].strip() for line in f if line.startswith("Model:")]
        except OSError:
            pass
    return {"cpu": cpu, "cpu_flags": [f for f in CPU_FLAGS if f in flags], "gpus": gpus}


def source_commit(root: Path | None = None) -> str | None:
    """The git HEAD of ``root`` (default: the checkout that holds ``rene_onnx``), with
    ``" (with uncommitted changes)"`` when tracked files differ from it; None outside a git checkout."""
    root = SOURCE_ROOT if root is None else Path(root)
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" (with uncommitted changes)" if dirty else "")
