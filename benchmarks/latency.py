"""Latency benchmark: does onnxruntime latency drop as much as the MACs do?

    .venv/bin/python benchmarks/latency.py                      # the full grid -> benchmarks/results/latency_cpu.json
    .venv/bin/python benchmarks/latency.py --models resnet18 --methods tt --ranks 0.25 --out /tmp/one.json

For each model (random init; 224x224, batch 1) x method x rank fraction x
rank multiple, the compressed ONNX is built through the pipeline's stages
(``load_model`` / ``layer_shapes`` / ``plan_ranks`` / factorize / ``rewrite``),
then the original and the compressed model (and, when it differs, the
latency-aware model) are timed interleaved in ONE torch-free worker run
(``measure_latency``) for every thread setting. Written per case: MACs and
parameter ratios (ONNX counts, before / after), the median latency ratio
(before / after) and ``latency_ratio / macs_ratio`` (1.0 = latency drops
exactly as much as the MACs).

Factorizing: the factors come from ``decompose.TTTruncations`` /
``SVDTruncations`` (one pair of SVDs per layer serves every rank, the same
truncations the search uses) and, for CP, ``cp_als`` with ``--cp-iters`` ALS
sweeps from a seeded random start (CP-ALS from the SVD start takes minutes
per 512x512 layer at the ranks of a 224 ResNet-18 on 2 cores; latency does
not depend on the factor values). The torch model is factorized with
``engine.factorize_`` from those arrays and rewritten with ``pipeline.rewrite``.

Latency-aware: every layer's dense node and factorized chain are profiled
(``validate.latency_aware.layer_latency``, ``--profile-threads`` threads)
and the layers whose chain is not faster (``slower_layers``) are planned
dense and rewritten again.

``--pack DIR`` also writes every model with its float weights stripped (a few
KB each) plus a manifest, and ``measure-pack DIR`` (no torch needed) refills
random weights and times the same pairs, e.g. on another machine:
``--provider cuda``, ``--batch N`` (the packed models' batch dim is dynamic),
``--device-io`` (inputs / outputs stay on the GPU) and ``--cuda-graph``;
``benchmarks/cuda_latency.sh`` runs those on a GPU machine, and ``merge``
joins the runs into one results file
(``benchmarks/results/latency_cuda_h200.json``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from rene_onnx.pack import refill_weights, strip_weights
from rene_onnx.passes.revert import revert_layers

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "latency_cpu.json"
GOAL = {"model": "resnet18", "method": "tt", "fraction": 0.25, "min_latency_over_macs": 0.8}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _csv(kind):
    return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def _threads(values: list[int]) -> list[int | None]:
    return [None if t == 0 else t for t in values]


def _tkey(t: int | None) -> str:
    return "default" if t is None else str(t)


# ----------------------------------------------------------------------------- factors


class FactorSource:
    """Factor arrays per (layer, method, ranks) from cached truncations (see the module docstring)."""

    def __init__(self, torch_model, cp_iters: int, seed: int = 0):
        self.mods = dict(torch_model.named_modules())
        self.cp_iters, self.seed = cp_iters, seed
        self._tt, self._svd = {}, {}

    def _weight(self, name: str) -> np.ndarray:
        return self.mods[name].weight.detach().cpu().numpy()

    def arrays(self, name: str, method: str, ranks: tuple[int, ...]) -> dict[str, np.ndarray]:
        from rene_onnx.decompose import SVDTruncations, TTTruncations, cp_als

        w = self._weight(name)
        if method == "tt":
            if name not in self._tt:
                self._tt[name] = TTTruncations(w)
            return self._tt[name].factors(*ranks)
        if method == "svd":
            if name not in self._svd:
                self._svd[name] = SVDTruncations(w.reshape(w.shape[0], -1))
            u, v = self._svd[name].factors(ranks[0])
            return {"U": u, "V": v}
        if method == "cp":
            (r,) = ranks
            rng = np.random.default_rng(self.seed)
            k = int(np.prod(w.shape[2:]))
            init = tuple(rng.standard_normal((d, r)) / np.sqrt(r) for d in (w.shape[0], w.shape[1], k))
            return cp_als(w, r, init=init, n_iter_max=self.cp_iters, seed=self.seed)
        raise ValueError(f"unknown method {method!r}")

    def factors(self, plan):
        from rene_onnx.plan import Factors, LayerFactors

        out = Factors()
        for lp in plan.factorized():
            out.add(LayerFactors(lp.name, lp.method, lp.ranks, self.arrays(lp.name, lp.method, lp.ranks)))
        return out


def build(handle, plan, source: FactorSource):
    """Factorize a copy of the torch model from ``source`` and rewrite the original ONNX graph (pipeline.rewrite)."""
    from rene_onnx import pipeline
    from rene_onnx.engine.layers import factorize_

    student = copy.deepcopy(handle.torch_model).eval()
    factorize_(student, plan, source.factors(plan))
    return pipeline.rewrite(handle, student)


def with_dense(plan, layers: list[str], why: str):
    from rene_onnx.plan import LayerPlan, RankPlan

    out = RankPlan(meta={**plan.meta, "latency_aware_dense": list(layers)})
    for name, lp in plan.layers.items():
        out.add(LayerPlan(name, "dense", (), why) if name in layers else lp)
    return out


# ----------------------------------------------------------------------------- measuring


def counts(model: onnx.ModelProto, shapes: dict) -> tuple[int, int]:
    from rene_onnx.validate.counts import count_onnx

    c = count_onnx(model, shapes)
    return int(c.macs), int(c.params)


def time_models(paths: list[str], feeds: str, threads: list[int | None], repeats: int, warmup: int,
                provider: str = "cpu", *, spinning: bool = False, separate: bool = False,
                device_io: bool = False, cuda_graph: bool = False) -> dict[str, list]:
    """{thread key: [Latency per path]}: all paths interleaved in one worker run per thread setting.

    ``spinning``: idle onnxruntime threads busy-wait (its default in a lone
    session; the worker turns it off since idle interleaved sessions would
    compete). ``separate``: one worker run per model, not interleaved (for
    ``spinning`` on a quiet machine).
    """
    from rene_onnx.validate.latency import measure_latency

    def run(ps, t):
        return measure_latency(ps, feeds, provider=provider, warmup=warmup, repeats=repeats, threads=t,
                               spinning=spinning, device_io=device_io, cuda_graph=cuda_graph)

    if separate:
        return {_tkey(t): [run([p], t)[0] for p in paths] for t in threads}
    return {_tkey(t): run(paths, t) for t in threads}


def ratios(before: tuple[int, int], after: tuple[int, int], lat: dict[str, list], i: int) -> dict:
    """Ratios of model ``i`` of the timed list (0 = the original) to the original, per thread setting.

    ``before`` / ``after``: (MACs, params) of the original / of model ``i``.
    """
    mr = before[0] / after[0]
    out = {"macs": {"before": before[0], "after": after[0], "ratio": round(mr, 4)},
           "params": {"before": before[1], "after": after[1], "ratio": round(before[1] / after[1], 4)},
           "latency": {}}
    for key, ls in lat.items():
        b, a = ls[0], ls[i]
        lr = b.median_ms / a.median_ms
        out["latency"][key] = {
            "before_ms": round(b.median_ms, 3), "after_ms": round(a.median_ms, 3),
            "after_p10_ms": round(a.p10_ms, 3), "after_p90_ms": round(a.p90_ms, 3),
            "ratio": round(lr, 4), "ratio_over_macs_ratio": round(lr / mr, 4),
        }
    return out


# ----------------------------------------------------------------------------- the grid


def run_model(name: str, args, work: Path, pack: Path | None) -> tuple[list[dict], dict | None]:
    from rene_onnx import pipeline
    from rene_onnx.config import CompressConfig, RewriteConfig
    from rene_onnx.validate.latency import profile_nodes
    from rene_onnx.validate.latency_aware import fastest, layer_latency, layer_nodes_from_records, slower_layers

    threads = _threads(args.threads)
    t0 = time.perf_counter()
    handle = pipeline.load_model(CompressConfig(model=name))
    shapes = pipeline.layer_shapes(handle)
    node_of = {n: ref.node for n, ref in handle.layer_map.items()}
    layer_of = {v: k for k, v in node_of.items()}
    log(f"{name}: loaded in {time.perf_counter() - t0:.1f}s, {len(shapes)} layers")
    orig = work / f"{name}.onnx"
    onnx.save(handle.onnx_model, orig)
    feeds = work / f"{name}_feeds.npz"
    np.savez(feeds, **{handle.input_name: handle.example_input(0).numpy()})
    in_shapes = {handle.input_name: handle.input_shape}
    base = counts(handle.onnx_model, in_shapes)
    if pack is not None:
        onnx.save(strip_weights(handle.onnx_model), pack / orig.name)
        np.savez(pack / feeds.name, **{handle.input_name: handle.example_input(0).numpy()})
    source = FactorSource(handle.torch_model, args.cp_iters)
    pt = _threads([args.profile_threads])[0]
    orig_us = sum(fastest([profile_nodes(orig, feeds, repeats=args.profile_repeats, threads=pt)
                           for _ in range(args.profile_rounds)]).values())
    cases, seen, study = [], {}, None
    for method in args.methods:
        for frac in args.ranks:
            for mult in args.multiples:
                tag = f"{name}_{method}_{frac}_m{mult}"
                plan = pipeline.plan_ranks(shapes, RewriteConfig(method=method, ranks=frac, rank_multiple=mult))
                key = tuple((lp.name, lp.method, lp.ranks) for lp in plan.layers.values())
                case = {"model": name, "method": method, "fraction": frac, "rank_multiple": mult}
                if key in seen:  # auto == tt where tt falls back to svd on 1x1 / Linear
                    case.update({k: v for k, v in seen[key].items() if k not in case})
                    case["same_plan_as"] = seen[key]["tag"]
                    case["tag"] = tag
                    cases.append(case)
                    log(f"{tag}: same plan as {seen[key]['tag']}")
                    continue
                t1 = time.perf_counter()
                rw = build(handle, plan, source)
                comp = work / f"{tag}.onnx"
                onnx.save(rw.model, comp)
                build_s = time.perf_counter() - t1
                models, labels = [str(orig), str(comp)], ["full"]
                nodes = layer_nodes_from_records(rw.records, layer_of)
                per_layer, slow = {}, []
                if args.latency_aware and nodes:
                    per_layer = layer_latency(orig, comp, nodes, feeds, repeats=args.profile_repeats, threads=pt,
                                              rounds=args.profile_rounds)
                    slow = slower_layers(per_layer)
                    if slow:
                        rw2 = build(handle, with_dense(plan, slow, "latency-aware: the factorized chain was not "
                                                              "faster than the dense node"), source)
                        comp2 = work / f"{tag}_la.onnx"
                        onnx.save(rw2.model, comp2)
                        models.append(str(comp2))
                        labels.append("latency_aware")
                lat = time_models(models, str(feeds), threads, args.repeats, args.warmup)
                case.update({
                    "tag": tag, "build_seconds": round(build_s, 1),
                    "ranks": {lp.name: list(lp.ranks) for lp in plan.factorized()},
                    "n_factorized": len(plan.factorized()),
                })
                variants = {}
                for i, label in enumerate(labels, start=1):
                    m = rw.model if label == "full" else rw2.model
                    variants[label] = ratios(base, counts(m, in_shapes), lat, i)
                if slow:
                    variants["latency_aware"]["kept_dense"] = slow
                case["variants"] = variants
                case["per_layer_us"] = {k: [_r(a), _r(b)] for k, (a, b) in per_layer.items()}
                if per_layer:
                    case["profile"] = explain(per_layer, plan, shapes, orig_us)
                if pack is not None:
                    case["layer_nodes"] = {k: [o, list(new)] for k, (o, new) in nodes.items()}
                    for p in models[1:]:
                        m = onnx.load(p)
                        onnx.save(strip_weights(m), pack / Path(p).name)
                    case["pack_models"] = [Path(p).name for p in models]
                seen[key] = case
                cases.append(case)
                log(_line(case))
    if args.study_multiples and name == GOAL["model"]:
        study = rank_multiple_study(handle, shapes, source, orig, feeds, base, in_shapes, args, work, pack)
    return cases, study


def rank_multiple_study(handle, shapes, source, orig, feeds, base, in_shapes, args, work, pack) -> dict:
    """The goal case at every ``--study-multiples`` value, all timed interleaved in one worker run."""
    from rene_onnx import pipeline
    from rene_onnx.config import RewriteConfig

    paths, per = [str(orig)], {}
    for mult in args.study_multiples:
        plan = pipeline.plan_ranks(shapes, RewriteConfig(method=GOAL["method"], ranks=GOAL["fraction"],
                                                         rank_multiple=mult))
        rw = build(handle, plan, source)
        p = work / f"study_m{mult}.onnx"
        onnx.save(rw.model, p)
        if pack is not None:
            onnx.save(strip_weights(rw.model), pack / p.name)
        paths.append(str(p))
        per[mult] = (counts(rw.model, in_shapes), {lp.name: list(lp.ranks) for lp in plan.factorized()})
    lat = time_models(paths, str(feeds), _threads(args.threads), args.repeats, args.warmup)
    out = {"model": GOAL["model"], "method": GOAL["method"], "fraction": GOAL["fraction"], "by_multiple": {}}
    for i, mult in enumerate(args.study_multiples, start=1):
        c, ranks = per[mult]
        out["by_multiple"][str(mult)] = {**ratios(base, c, lat, i), "ranks": ranks}
        log(f"study m{mult}: " + _ratio_line(out["by_multiple"][str(mult)]))
    if pack is not None:
        out["pack_models"] = [Path(p).name for p in paths]
    return out


def explain(per_layer: dict, plan, shapes: dict, original_us: float) -> dict:
    """Where the time goes (profile of the original, ``--profile-threads``):

    ``factorized_share``: the share of the original's kernel time spent in the
    layers that get factorized (the rest -- depthwise convs, pools, adds,
    layout reorders -- does not shrink); ``ideal_ratio``: the speed-up if every
    chain ran at its dense node's MAC throughput (Amdahl with the MAC ratio
    per layer, counted by ``decompose.ranks``); ``chains_ratio``: the profiled
    speed-up over the factorized layers alone (dense us / chain us, summed).
    """
    from rene_onnx.decompose.ranks import dense_macs, factorized_macs

    dense_sum = chain_sum = scaled = 0.0
    for name, (d, f) in per_layer.items():
        if d is None or f is None:
            continue
        lp = plan.layers[name]
        dense_sum += d
        chain_sum += f
        scaled += d * factorized_macs(lp.method, shapes[name], lp.ranks) / dense_macs(shapes[name])
    rest = max(original_us - dense_sum, 0.0)
    return {
        "original_us": round(original_us, 1), "factorized_share": round(dense_sum / original_us, 4),
        "consistent": dense_sum <= 1.05 * original_us,  # False: load bursts inflated the layers' dense profiles
        "ideal_ratio": round(original_us / (rest + scaled), 4),
        "chains_ratio": round(dense_sum / chain_sum, 4) if chain_sum else None,
    }


def _pack_counts(v: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """(MACs, params) before and after, from a variant written by :func:`ratios`."""
    return (v["macs"]["before"], v["params"]["before"]), (v["macs"]["after"], v["params"]["after"])


def _r(x):
    return None if x is None else round(float(x), 1)


def _ratio_line(v: dict) -> str:
    lat = "  ".join(f"t={k}: {x['ratio']:.2f}x ({x['ratio_over_macs_ratio']:.2f})" for k, x in v["latency"].items())
    return f"macs {v['macs']['ratio']:.2f}x params {v['params']['ratio']:.2f}x  latency {lat}"


def _line(case: dict) -> str:
    return f"{case['tag']}: " + " | ".join(f"{k}: {_ratio_line(v)}" for k, v in case["variants"].items())


def goal_summary(cases: list[dict]) -> dict:
    out = {**GOAL, "cases": []}
    for c in cases:
        if (c["model"], c["method"], c["fraction"]) != (GOAL["model"], GOAL["method"], GOAL["fraction"]):
            continue
        for label, v in c.get("variants", {}).items():
            out["cases"].append({
                "rank_multiple": c["rank_multiple"], "variant": label, "macs_ratio": v["macs"]["ratio"],
                "latency": {k: {"ratio": x["ratio"], "ratio_over_macs_ratio": x["ratio_over_macs_ratio"],
                                "met": x["ratio_over_macs_ratio"] >= GOAL["min_latency_over_macs"]}
                            for k, x in v["latency"].items()},
            })
    return out


# ----------------------------------------------------------------------------- pack measuring (no torch)


def latency_aware_variant(case: dict, paths: list[str], feeds: str, tmp: Path, args) -> dict | None:
    """Per-layer times of the packed pair on ``args.provider`` (isolated sub-models, the GPU method), and the
    pair's compressed model with the slower chains reverted to dense; ``None`` when every chain is faster."""
    from rene_onnx.validate.isolate import isolated_layer_latency
    from rene_onnx.validate.latency_aware import slower_layers

    nodes = {k: (o, new) for k, (o, new) in case["layer_nodes"].items()}
    orig, comp = onnx.load(paths[0]), onnx.load(paths[1])
    times = isolated_layer_latency(orig, comp, nodes, feeds, args.provider, args.repeats, warmup=args.warmup,
                                   threads=_threads(args.threads)[0])
    slow = slower_layers(times)
    per_layer = {k: [_r(a), _r(b)] for k, (a, b) in times.items()}
    log(f"{case['tag']}: {len(slow)} of {len(times)} chains not faster on {args.provider}: {slow}")
    if not slow:
        return None
    aware = revert_layers(orig, comp, case["layer_nodes"], slow)
    path = tmp / f"{case['tag']}_la_{args.provider}.onnx"
    onnx.save(aware, path)
    with np.load(feeds) as f:
        shapes = {k: (1, *f[k].shape[1:]) for k in f.files}  # counts are per sample (batch 1)
    (mb, pb), (ma, pa) = counts(orig, shapes), counts(aware, shapes)
    counted = {"macs": {"before": mb, "after": ma}, "params": {"before": pb, "after": pa}}
    return {"path": str(path), "kept_dense": slow, "per_layer_us": per_layer, "counts": counted}


def measure_pack(args) -> dict:
    """Time the packed pairs (weights refilled at random) on this machine; writes ``args.out``."""
    from rene_onnx.report.environment import environment_meta

    pack = Path(args.pack_dir)
    manifest = json.loads((pack / "manifest.json").read_text())
    threads = _threads(args.threads)
    mode = {"spinning": args.spinning, "separate": args.separate, "device_io": args.device_io or args.cuda_graph,
            "cuda_graph": args.cuda_graph}
    head = {"format": "rene-onnx/latency-benchmark/v1", "provider": args.provider, "batch": args.batch,
            "repeats": args.repeats, **mode,
            "warmup": args.warmup, "threads": [_tkey(t) for t in threads], "source": str(pack),
            "command": " ".join(shlex.quote(a) for a in sys.argv), **environment_meta(),
            "note": "weights refilled at random from a weight-stripped pack; MACs / params are the pack's ONNX counts"}
    with tempfile.TemporaryDirectory(prefix="rene-pack-") as tmp:
        def load(name):
            p = Path(tmp) / name
            if not p.exists():
                onnx.save(refill_weights(onnx.load(pack / name)), p)
            return str(p)

        def feeds_for(model):
            return batched_feeds(pack / f"{model}_feeds.npz", args.batch, Path(tmp))

        out_cases = []
        for c in manifest["cases"]:
            if "pack_models" not in c or c.get("same_plan_as") or (args.only and c["tag"] not in args.only):
                continue
            if c["model"] not in args.models:
                continue
            paths = [load(n) for n in c["pack_models"]]
            feeds = feeds_for(c["model"])
            aware = latency_aware_variant(c, paths[:2], feeds, Path(tmp), args) if args.latency_aware else None
            if aware is not None:
                paths = paths[:2] + [aware["path"]]
            lat = time_models(paths, feeds, threads, args.repeats, args.warmup, args.provider, **mode)
            labels = ["full", "latency_aware"][: len(paths) - 1]
            variants = {}
            for i, label in enumerate(labels, start=1):
                counted = aware["counts"] if aware is not None and label == "latency_aware" else c["variants"][label]
                variants[label] = ratios(*_pack_counts(counted), lat, i)
            row = {k: c[k] for k in ("model", "method", "fraction", "rank_multiple", "tag")}
            if aware is not None:
                variants["latency_aware"]["kept_dense"] = aware["kept_dense"]
                row["per_layer_us"] = aware["per_layer_us"]
            row["variants"] = variants
            out_cases.append(row)
            log(_line(row))
            _write_json(args.out, {**head, "partial": True, "cases": out_cases})
        study = manifest.get("rank_multiple_study") if args.study else None
        if study and "pack_models" in study and study["model"] in args.models:
            paths = [load(n) for n in study["pack_models"]]
            lat = time_models(paths, feeds_for(study["model"]), threads, args.repeats, args.warmup,
                              args.provider, **mode)
            by = {}
            for i, (mult, v) in enumerate(study["by_multiple"].items(), start=1):
                by[mult] = ratios(*_pack_counts(v), lat, i)
                log(f"study m{mult}: " + _ratio_line(by[mult]))
            study = {k: study[k] for k in ("model", "method", "fraction")} | {"by_multiple": by}
        else:
            study = None
    return {**head, "cases": out_cases, "rank_multiple_study": study, "goal": goal_summary(out_cases)}


def batched_feeds(npz: Path, batch: int, tmp: Path) -> str:
    """``npz`` itself for batch 1, else a copy in ``tmp`` with every array tiled to ``batch`` rows (dim 0)."""
    if batch == 1:
        return str(npz)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    with np.load(npz) as f:
        arrays = {k: np.repeat(f[k][:1], batch, axis=0) for k in f.files}
    out = tmp / f"{npz.stem}_b{batch}.npz"
    np.savez(out, **arrays)
    return str(out)


def merge_runs(paths: list[Path], extra: dict) -> dict:
    """One results file from several measure-pack outputs (e.g. one per model / batch / timing mode).

    ``runs`` keeps each file under ``<model>_b<batch>_<mode>`` (mode: host = ``run`` with host arrays,
    device = ``--device-io``, graph = ``--cuda-graph``); ``summary`` lists, per case tag, the MACs ratio
    and every run's median latency ratio (default threads), side by side.
    """
    runs, summary = {}, {}
    for p in paths:
        r = json.loads(Path(p).read_text())
        mode = "graph" if r.get("cuda_graph") else "device" if r.get("device_io") else "host"
        models = sorted({c["model"] for c in r["cases"]})
        key = f"{'+'.join(models)}_b{r.get('batch', 1)}_{mode}"
        runs[key] = r
        for c in r["cases"]:
            full = c["variants"]["full"]
            row = summary.setdefault(c["tag"], {"macs_ratio": full["macs"]["ratio"]})
            lat = full["latency"].get("default") or next(iter(full["latency"].values()))
            row[f"b{r.get('batch', 1)}_{mode}"] = lat["ratio"]
    return {"format": "rene-onnx/latency-benchmark/merged/v1", **extra, "summary": summary, "runs": runs}


# ----------------------------------------------------------------------------- main


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    p.add_argument("--models", type=_csv(str), default=["resnet18", "mobilenet_v2"])
    p.add_argument("--methods", type=_csv(str), default=["tt", "cp", "svd", "auto"])
    p.add_argument("--ranks", type=_csv(float), default=[0.25, 0.5], help="parameter fractions kept per layer")
    p.add_argument("--multiples", type=_csv(int), default=[1, 16], help="rank multiples (1 = no rounding)")
    p.add_argument("--study-multiples", type=_csv(int), default=[1, 4, 8, 16, 32],
                   help="rank multiples timed together for the goal case (resnet18 tt 0.25); empty to skip")
    p.add_argument("--threads", type=_csv(int), default=[0, 1], help="intra-op threads; 0 = onnxruntime's default")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--profile-repeats", type=int, default=10)
    p.add_argument("--profile-threads", type=int, default=1, help="threads for the per-layer profile (0 = default)")
    p.add_argument("--profile-rounds", type=int, default=2, help="alternating profile rounds (fastest kept per node)")
    p.add_argument("--no-latency-aware", dest="latency_aware", action="store_false")
    p.add_argument("--cp-iters", type=int, default=1, help="CP-ALS sweeps from a random start")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--pack", type=Path, default=None, help="also write weight-stripped models + manifest here")
    m = sub.add_parser("measure-pack", help="time a pack written by --pack (no torch needed; --models filters)")
    m.add_argument("pack_dir")
    m.add_argument("--threads", type=_csv(int), default=[0, 1])
    m.add_argument("--repeats", type=int, default=30)
    m.add_argument("--warmup", type=int, default=5)
    m.add_argument("--provider", default="cpu", help="cpu | cuda | tensorrt")
    m.add_argument("--batch", type=int, default=1, help="batch size (the packed models' batch dim is dynamic)")
    m.add_argument("--spinning", action="store_true", help="idle ORT threads busy-wait (ORT's own default)")
    m.add_argument("--separate", action="store_true", help="one worker run per model (no interleaving)")
    m.add_argument("--device-io", action="store_true",
                   help="inputs / outputs stay on the provider's device (I/O binding): no host copies in the timing")
    m.add_argument("--cuda-graph", action="store_true",
                   help="CUDA provider: capture each model as a CUDA graph and replay it (implies --device-io)")
    m.add_argument("--latency-aware", action="store_true",
                   help="also time each case with the chains that are not faster on --provider kept dense "
                        "(per-layer times from isolated sub-models)")
    m.add_argument("--only", type=_csv(str), default=None, help="case tags to time (default: all)")
    m.add_argument("--no-study", dest="study", action="store_false")
    m.add_argument("--out", type=Path, required=True)
    g = sub.add_parser("merge", help="merge measure-pack outputs into one results file with a summary table")
    g.add_argument("files", nargs="+", type=Path)
    g.add_argument("--meta", type=Path, default=None, help="JSON object merged in at the top (device, notes, ...)")
    g.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.cmd == "measure-pack":
        result = measure_pack(args)
    elif args.cmd == "merge":
        result = merge_runs(args.files, json.loads(args.meta.read_text()) if args.meta else {})
    else:
        result = run_grid(args)
    _write_json(args.out, result)
    log(f"wrote {args.out}")
    return 0


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def run_grid(args) -> dict:
    from rene_onnx.report.environment import environment_meta

    t0 = time.perf_counter()
    env = environment_meta()  # at the start: the code that ran
    if args.pack is not None:
        args.pack.mkdir(parents=True, exist_ok=True)
    cases, study = [], None
    with tempfile.TemporaryDirectory(prefix="rene-latbench-") as tmp:
        for name in args.models:
            c, s = run_model(name, args, Path(tmp), args.pack)
            cases += c
            study = study or s
    result = {
        "format": "rene-onnx/latency-benchmark/v1", "provider": "cpu", "batch": 1,
        "repeats": args.repeats, "warmup": args.warmup, "threads": [_tkey(t) for t in _threads(args.threads)],
        "profile_threads": _tkey(_threads([args.profile_threads])[0]), "profile_rounds": args.profile_rounds,
        "cp_iters": args.cp_iters,
        "command": " ".join(shlex.quote(a) for a in sys.argv), **env,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "definitions": {
            "macs.ratio": "MACs before / after (ONNX counts of Conv / Gemm / MatMul, batch 1)",
            "params.ratio": "parameters before / after (ONNX initializers)",
            "latency.<threads>.ratio": "median latency before / after, interleaved in one worker run",
            "ratio_over_macs_ratio": "latency ratio / MACs ratio (1.0: latency drops as much as MACs)",
            "variants.full": "every planned layer factorized",
            "variants.latency_aware": "layers whose chain profiled slower than the dense node kept dense",
            "per_layer_us": "layer -> [dense node us, factorized chain us] (median, reorders attributed)",
            "profile": "see explain(): factorized_share, ideal_ratio (chains at dense MAC throughput), chains_ratio; "
                       "a share > 1 means load bursts on a shared machine inflated dense profiles (not interleaved)",
        },
        "cases": cases, "rank_multiple_study": study, "goal": goal_summary(cases),
    }
    if args.pack is not None:
        (args.pack / "manifest.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(main())
