"""Runtimes that run an ONNX (or ORT-format) model: onnxruntime, and OpenVINO when it is installed.

A small interface, measured only (nothing here changes a model)::

    rt = get_runtime("openvino", threads=1)
    sess = rt.load("model.onnx")
    outputs = sess.run({"input": x})          # list of numpy arrays, graph output order

Latency is timed by :func:`rene_onnx.validate.latency.measure_latency` with ``runtime=``: the
torch-free worker process opens every model through :func:`get_runtime` and interleaves the runs.

- ``onnxruntime``: the project's sessions (:func:`~rene_onnx.validate.numerics.make_session`,
  ``ORT_ENABLE_ALL``), on the execution provider asked for. Reads ``.onnx`` and ``.ort`` files.
- ``openvino``: the ``openvino`` package (``pip install 'rene-onnx[openvino]'``) reads ONNX directly
  and compiles it for its CPU plugin. On CPUs with bf16 / AMX units OpenVINO's default inference
  precision is bf16; here it is ``f32`` unless ``precision`` says otherwise, so an FP32 model's
  numerics mean FP32 (a QDQ INT8 model still runs in INT8, an FP16 model's weights are upcast).
  It cannot read ``.ort`` files. ``threads`` sets ``INFERENCE_NUM_THREADS``; the performance hint is
  ``LATENCY`` (one stream).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rene_onnx.errors import MissingDependencyError, UserError

RUNTIMES = ("onnxruntime", "openvino")
#: the pip extra that installs each optional runtime
EXTRAS = {"openvino": "openvino"}


class Session(Protocol):
    input_names: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


class Runtime(Protocol):
    name: str

    def load(self, path: str | os.PathLike) -> Session: ...

    def describe(self) -> dict[str, Any]: ...


def available(name: str) -> bool:
    """Whether runtime ``name`` can be imported here."""
    if name == "onnxruntime":
        return True
    if name == "openvino":
        import importlib.util

        return importlib.util.find_spec("openvino") is not None
    return False


def check_runtime(name: str, provider: str = "cpu") -> None:
    """``UserError`` for an unknown runtime or provider; ``MissingDependencyError`` (naming the extra) when absent."""
    if name not in RUNTIMES:
        raise UserError(f"unknown runtime {name!r} (expected one of {', '.join(RUNTIMES)})", option="runtime")
    if name == "openvino" and provider != "cpu":
        raise UserError(f"the openvino runtime runs on the CPU here; provider {provider!r} is onnxruntime's",
                        option="provider")
    if not available(name):
        raise MissingDependencyError(
            f"{name} is not installed: pip install 'rene-onnx[{EXTRAS[name]}]' (or pip install {name})",
            option="runtime")


def get_runtime(name: str = "onnxruntime", *, provider: str = "cpu", threads: int | None = None,
                precision: str | None = None) -> Runtime:
    """The runtime ``name`` (see the module docstring); raises as :func:`check_runtime` does."""
    check_runtime(name, provider)
    if name == "openvino":
        return OpenVinoRuntime(threads=threads, precision=precision or "f32")
    return OrtRuntime(provider=provider, threads=threads)


@dataclass
class _OrtSession:
    sess: Any

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.sess.get_inputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        from .numerics import run_onnx

        return run_onnx(self.sess, feeds)


@dataclass
class OrtRuntime:
    provider: str = "cpu"
    threads: int | None = None
    spinning: bool = True
    name: str = field(default="onnxruntime", init=False)

    def load(self, path: str | os.PathLike) -> _OrtSession:
        from .numerics import make_session

        return _OrtSession(make_session(path, self.provider, threads=self.threads, spinning=self.spinning))

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"runtime": self.name, "version": ort.__version__, "provider": self.provider, "threads": self.threads}


@dataclass
class _OvSession:
    compiled: Any
    request: Any

    @property
    def input_names(self) -> list[str]:
        return [p.get_any_name() for p in self.compiled.inputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"feeds miss graph inputs {missing} (graph inputs: {self.input_names})")
        data = {}
        for port in self.compiled.inputs:
            v = np.ascontiguousarray(feeds[port.get_any_name()])
            want = port.get_element_type().to_dtype()
            data[port.get_any_name()] = v.astype(want) if v.dtype.kind == "f" and want.kind == "f" else v
        result = self.request.infer(data)
        return [np.array(result[o]) for o in self.compiled.outputs]


@dataclass
class OpenVinoRuntime:
    threads: int | None = None
    precision: str = "f32"
    name: str = field(default="openvino", init=False)

    def config(self) -> dict[str, str]:
        cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = str(int(self.threads))
        return cfg

    def load(self, path: str | os.PathLike) -> _OvSession:
        import openvino as ov

        path = os.fspath(path)
        if path.endswith(".ort"):
            raise UserError(f"{os.path.basename(path)}: OpenVINO cannot read ORT-format files (use the .onnx)",
                            option="runtime")
        core = ov.Core()
        compiled = core.compile_model(core.read_model(path), "CPU", self.config())
        return _OvSession(compiled, compiled.create_infer_request())

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        return {"runtime": self.name, "version": ov.__version__, "device": "CPU", "threads": self.threads,
                "config": self.config()}


def run_model(runtime: Runtime, path: str | os.PathLike, inputs: Mapping[str, np.ndarray],
              batch: int | None = None, limit: int | None = None, fixed_batch: bool = False) -> list[np.ndarray]:
    """All outputs of the model at ``path`` on ``inputs`` ((N, ...) arrays by input name), run ``batch`` at a time.

    ``batch`` defaults to all N at once; the outputs of the batches are concatenated along axis 0.
    ``limit`` caps N. ``fixed_batch``: the model takes exactly ``batch`` samples, so a short last
    batch is dropped (else it runs as it is).
    """
    sess = runtime.load(path)
    n = min(len(v) for v in inputs.values())
    if limit is not None:
        n = min(n, limit)
    bs = batch or n
    parts: list[list[np.ndarray]] = []
    for i in range(0, n - n % bs if fixed_batch else n, bs):
        parts.append(sess.run({k: np.ascontiguousarray(v[i:i + bs]) for k, v in inputs.items()}))
    if not parts:
        raise ValueError(f"no full batch of {bs} in {n} samples")
    return [np.concatenate(p) for p in zip(*parts)]
