"""Run an ONNX model in onnxruntime and compare its outputs with a reference.

No torch here. Sessions use graph optimization level ``ORT_ENABLE_ALL``.
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from rene_onnx.graph import example_array, graph_inputs, index_ranges, load_model, model_path, resolve_input_shapes

#: provider name -> onnxruntime providers list (in priority order)
PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class ProviderUnavailable(RuntimeError):
    """The requested onnxruntime execution provider is not active in the session."""


_PRELOAD_LOG: list[str] = []  # what onnxruntime.preload_dlls printed (run once per process)


def preload_gpu_libraries() -> str:
    """Load CUDA / cuDNN the way onnxruntime-gpu finds them in pip's ``nvidia-*`` packages; once per process.

    ``import torch`` loads them as a side effect, so the CUDA provider may work
    in a process with torch and fail in one without (like the latency worker)
    unless they are on the loader's path. ``onnxruntime.preload_dlls`` (1.21+)
    loads them from the nvidia site packages, else the default paths. Returns
    what it printed (failures), kept for error messages.
    """
    if not _PRELOAD_LOG:
        import onnxruntime as ort

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                if hasattr(ort, "preload_dlls"):
                    ort.preload_dlls(cuda=True, cudnn=True, msvc=False)
            except Exception as e:  # a missing library must not break the CPU path
                print(f"preload_dlls failed: {e}")
        _PRELOAD_LOG.append(buf.getvalue().strip())
    return _PRELOAD_LOG[0]


def providers_for(provider: str) -> list[str]:
    try:
        return list(PROVIDERS[provider])
    except KeyError:
        raise ValueError(f"unknown provider {provider!r} (expected one of {sorted(PROVIDERS)})") from None


def make_session(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    provider: str = "cpu",
    *,
    threads: int | None = None,
    profile_prefix: str | None = None,
    spinning: bool = True,
    provider_options: Mapping[str, str] | None = None,
):
    """An ``onnxruntime.InferenceSession`` on ``provider`` (cpu | cuda | tensorrt).

    onnxruntime-gpu lists CUDA / TensorRT even where their libraries or the
    GPU are missing and silently falls back to CPU; this checks the session's
    active providers and raises ``ProviderUnavailable`` instead.
    ``threads`` sets intra-op threads (default: onnxruntime's choice);
    ``profile_prefix`` turns on onnxruntime's profiler writing there;
    ``spinning=False`` stops idle intra-op threads from busy-waiting;
    ``provider_options`` go to the requested provider (e.g. CUDA's
    ``{"enable_cuda_graph": "1"}``).
    """
    import onnxruntime as ort

    wanted = providers_for(provider)
    if wanted[0] not in ort.get_available_providers():
        raise ProviderUnavailable(
            f"provider {provider!r} ({wanted[0]}) is not in this onnxruntime build "
            f"(available: {ort.get_available_providers()})"
        )
    preloaded = preload_gpu_libraries() if provider != "cpu" else ""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    if isinstance(model_or_path, onnx.ModelProto):
        source = model_or_path.SerializeToString()
    else:
        source = model_path(model_or_path)
    try:
        providers = [(wanted[0], dict(provider_options)), *wanted[1:]] if provider_options else wanted
        sess = ort.InferenceSession(source, so, providers=providers)
    except Exception as e:
        if provider != "cpu" and any(w in str(e) for w in ("CUDA", "cuDNN", "TensorRT", "ExecutionProvider", "EP Error")):
            raise ProviderUnavailable(f"provider {provider!r} could not start: {e}") from e
        raise
    active = sess.get_providers()
    if not active or active[0] != wanted[0]:
        hint = f"; loading the GPU libraries said: {' | '.join(preloaded.splitlines()[:3])}" if preloaded else ""
        raise ProviderUnavailable(
            f"provider {provider!r} requested but onnxruntime fell back to {active} "
            f"(no usable GPU, or the CUDA / cuDNN / TensorRT libraries are missing; see onnxruntime's log{hint})"
        )
    return sess


_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def check_feeds(sess, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds restricted to the session's inputs; ``ValueError`` if one is missing.

    A float feed is cast to the input's float type where they differ (an FP16 model with float16
    inputs takes the same float32 data).
    """
    inputs = sess.get_inputs()
    names = [i.name for i in inputs]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise ValueError(f"feeds miss graph inputs {missing} (graph inputs: {names}, given: {sorted(feeds)})")
    out = {}
    for i in inputs:
        v = np.asarray(feeds[i.name])
        want = _FLOAT_TYPES.get(getattr(i, "type", ""))
        out[i.name] = v.astype(want) if want is not None and v.dtype.kind == "f" and v.dtype != want else v
    return out


def run_onnx(
    model_or_path,
    feeds: Mapping[str, np.ndarray],
    provider: str = "cpu",
) -> list[np.ndarray]:
    """Run the model once (or an existing ``InferenceSession``) and return all outputs.

    Feeds not named as graph inputs are ignored (so one feed dict serves an
    original and a rewritten model).
    """
    sess = model_or_path if hasattr(model_or_path, "get_inputs") else make_session(model_or_path, provider)
    return [np.asarray(o) for o in sess.run(None, check_feeds(sess, feeds))]


@dataclass
class Numerics:
    """How far ``actual`` outputs are from ``reference`` ones (over all outputs).

    ``max_rel_diff`` is the max abs difference of each output divided by that
    output's max |reference| (an elementwise ratio explodes near zero), the
    max over outputs. ``cosine`` is the cosine similarity of all outputs
    flattened and concatenated. ``top1_agreement`` is the fraction of rows
    whose argmax agrees, for the first output shaped like logits (N, C), C > 1;
    ``None`` when no output is. ``mean_sample_cosine`` is the mean over the
    rows (samples, axis 0) of the first output of each row's cosine similarity
    -- the fidelity measure of an embedding model; ``None`` for a 0-d output.
    ``top5_overlap`` is, for that logits output when it has C >= 10 classes, the mean
    over rows of |top-5(reference) & top-5(actual)| / 5; else ``None``.
    """

    max_abs_diff: float
    max_rel_diff: float
    mean_abs_diff: float
    cosine: float
    top1_agreement: float | None = None
    mean_sample_cosine: float | None = None
    top5_overlap: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compare(reference: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> Numerics:
    """Compare two lists of outputs (same count, same shapes)."""
    reference, actual = list(reference), list(actual)
    if len(reference) != len(actual):
        raise ValueError(f"reference has {len(reference)} outputs, actual has {len(actual)}")
    if not reference:
        raise ValueError("no outputs to compare")
    refs = [np.asarray(r, dtype=np.float64) for r in reference]
    acts = [np.asarray(a, dtype=np.float64) for a in actual]
    for i, (r, a) in enumerate(zip(refs, acts)):
        if r.shape != a.shape:
            raise ValueError(f"output {i}: reference shape {r.shape} != actual shape {a.shape}")
    diffs = [np.abs(a - r) for r, a in zip(refs, acts)]
    n = sum(d.size for d in diffs)
    max_abs = max((float(d.max()) for d in diffs if d.size), default=0.0)
    rel = []
    for r, d in zip(refs, diffs):
        if d.size:
            scale = float(np.abs(r).max())
            rel.append(float(d.max()) / scale if scale > 0 else (0.0 if float(d.max()) == 0 else float("inf")))
    mean_abs = float(sum(d.sum() for d in diffs) / n) if n else 0.0
    rf = np.concatenate([r.ravel() for r in refs])
    af = np.concatenate([a.ravel() for a in acts])
    nr, na = float(np.linalg.norm(rf)), float(np.linalg.norm(af))
    if nr == 0 and na == 0:
        cosine = 1.0
    elif nr == 0 or na == 0:
        cosine = 0.0
    else:
        cosine = float(np.dot(rf, af) / (nr * na))
    top1 = top5 = None
    for r, a in zip(refs, acts):
        if r.ndim == 2 and r.shape[0] >= 1 and r.shape[1] > 1:
            top1 = float(np.mean(np.argmax(r, axis=1) == np.argmax(a, axis=1)))
            if r.shape[1] >= 10:
                tr, ta = np.argsort(-r, axis=1)[:, :5], np.argsort(-a, axis=1)[:, :5]
                top5 = float(np.mean([len(set(x) & set(y)) / 5 for x, y in zip(tr, ta)]))
            break
    return Numerics(max_abs, max(rel, default=0.0), mean_abs, cosine, top1, _mean_row_cosine(refs[0], acts[0]), top5)


def _mean_row_cosine(r: np.ndarray, a: np.ndarray) -> float | None:
    """Mean over axis-0 rows of the rows' cosine similarity (two all-zero rows count as 1, one as 0)."""
    if r.ndim == 0 or r.shape[0] == 0:
        return None
    r, a = r.reshape(len(r), -1), a.reshape(len(a), -1)
    nr, na = np.linalg.norm(r, axis=1), np.linalg.norm(a, axis=1)
    both = (nr > 0) & (na > 0)
    cos = np.where(both, (r * a).sum(1) / np.where(both, nr * na, 1.0), np.where((nr == 0) & (na == 0), 1.0, 0.0))
    return float(cos.mean())


def compare_on_inputs(
    original: onnx.ModelProto | str | os.PathLike,
    compressed: onnx.ModelProto | str | os.PathLike,
    inputs: Mapping[str, np.ndarray],
    provider: str = "cpu",
    limit: int | None = 64,
    batch_size: int | None = None,
) -> Numerics | None:
    """Both models' outputs on real inputs (``(N, ...)`` arrays by graph input name), compared.

    At most ``limit`` samples, in batches of ``batch_size`` (default: the
    graph's batch dim when it is fixed, else all at once); a fixed batch that
    does not divide the samples drops the rest. ``None`` when no sample is left.
    """
    sessions = [make_session(original, provider), make_session(compressed, provider)]
    n = min(len(v) for v in inputs.values()) if inputs else 0
    if limit is not None:
        n = min(n, limit)
    first = sessions[0].get_inputs()[0].shape
    fixed = first[0] if first and isinstance(first[0], int) else None
    bs = batch_size or fixed or n
    n -= n % bs if bs else n
    if n <= 0:
        return None
    outs: list[list[list[np.ndarray]]] = [[], []]
    for i in range(0, n, bs):
        feeds = {k: np.ascontiguousarray(v[i:i + bs]) for k, v in inputs.items()}
        for sess, out in zip(sessions, outs):
            out.append(run_onnx(sess, feeds))
    joined = [[np.concatenate(parts) for parts in zip(*out)] for out in outs]
    return compare(joined[0], joined[1])


def input_feeds(
    model: onnx.ModelProto | str | os.PathLike,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Example inputs for the graph inputs, dtype from the graph (see ``_graph.example_array``).

    Float inputs are standard normal; an integer input that indexes an
    embedding table (``_graph.index_ranges``) is uniform in ``[0, rows)``,
    other integer inputs are ones (a full attention mask), bool inputs True.
    A symbolic batch dim is 1; other symbolic dims need ``input_shapes``.
    """
    model = load_model(model)
    shapes = resolve_input_shapes(model, input_shapes, strict=True)
    ranges = index_ranges(model)
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in graph_inputs(model):
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        shape = tuple(int(d) for d in shapes[vi.name])
        try:
            feeds[vi.name] = example_array(dtype, shape, rng, ranges.get(vi.name))
        except ValueError as e:
            raise ValueError(f"input {vi.name!r}: {e}") from None
    return feeds


def feeds_from(
    source: Mapping[str, np.ndarray] | str | os.PathLike | None,
    model: onnx.ModelProto | str | os.PathLike,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Inputs by name from ``source``: a dict, an ``.npz`` path, or ``None`` for :func:`input_feeds` (seed 0)."""
    if source is None:
        return input_feeds(model, input_shapes, seed=0)
    if isinstance(source, Mapping):
        return dict(source)
    with np.load(source) as z:
        return {k: z[k] for k in z.files}
