"""Issue 9, "Never destroy a user's file, never run code from a data file": every hostile input, as a user runs it.

Each refused case runs the CLI in-process from a scratch folder and checks what the user sees and what is left:
exactly one stderr line starting with ``error:`` (no traceback), the exit code (2 bad input, 1 failed stage),
nothing new in the folder (no output, no ``*.tmp``, no ``.onnx.data``), and every input byte-identical and still
loadable. Then the cases that must succeed (a run-time conv weight, same seed -> same plan bytes, external data
saves), and the rule itself (:func:`rene_onnx.files.check_io`).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from cli_inproc import cli

PLAN_FORMAT = "rene-onnx/rank-plan/v1"
FAST = ["--epochs", "0", "--no-latency"]
FACTORIES = '''
import torch.nn as nn

def exits():
    raise SystemExit(0)

def rgb_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
'''


# ----------------------------------------------------------------------------------------------- assets


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """a.onnx (a small conv net, torch.onnx.export), r20.pt (a resnet20 state dict), hostile_factories.py."""
    from rene_onnx import models as zoo

    d = tmp_path_factory.mktemp("assets")
    torch.onnx.export(_tiny_net(), torch.randn(1, 3, 8, 8), d / "a.onnx", dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    torch.manual_seed(0)
    torch.save(zoo.build("resnet20").state_dict(), d / "r20.pt")
    (d / "py").mkdir()
    (d / "py" / "hostile_factories.py").write_text(FACTORIES)
    return d


@pytest.fixture
def scratch(tmp_path, assets, monkeypatch) -> Path:
    """A scratch folder holding a copy of the assets (factories importable, no __pycache__ written, 16 MiB of arrays)."""
    for name in ("a.onnx", "r20.pt"):
        shutil.copy(assets / name, tmp_path / name)
    monkeypatch.syspath_prepend(str(assets / "py"))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr("rene_onnx.files.memory_limit", lambda: 16 << 20)  # a 48 MiB array is a bomb here
    yield tmp_path
    sys.modules.pop("hostile_factories", None)


def save_external(model: onnx.ModelProto, path: Path, location: str) -> None:
    """``path`` with every tensor in ``location`` beside it."""
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location,
              size_threshold=0)


def plan_file(d: Path, layers) -> str:
    (d / "plan.json").write_text(json.dumps({"format": PLAN_FORMAT, "layers": layers}))
    return "plan.json"


class Evil:
    """A pickled object whose loading runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_cifar(d: Path, benign_train: bool = False) -> str:
    """A CIFAR-10 folder whose ``test_batch`` (protocol 5) and ``data_batch_1`` (protocol 2) run code when unpickled.

    ``benign_train``: data_batch_1 is a real-format batch, so only reading test_batch can be the trap.
    """
    folder = d / "evil_dir"
    folder.mkdir()
    train = {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))} if benign_train else \
        {b"data": Evil(d / "MARKER"), b"labels": [0]}
    for name, obj, proto in (("data_batch_1", train, 2), ("test_batch", {b"data": Evil(d / "MARKER")}, 5)):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=proto)
    return "evil_dir"


def image_folder_with_a_corrupt_image(d: Path) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", 3), ("val", 1)):
        for c in range(10):
            folder = d / "imgs" / part / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(folder / f"{i}.png")
    (d / "imgs" / "val" / "c3" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return "imgs"


def zip_bomb(d: Path) -> str:
    """An .npz whose only member declares a 10^12-element float64 array (and holds a few bytes)."""
    import io

    from numpy.lib import format as npf

    header = io.BytesIO()
    npf.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)})
    with zipfile.ZipFile(d / "bomb.npz", "w") as z:
        z.writestr("x.npy", header.getvalue() + b"\x00" * 64)
    return "bomb.npz"


def real_bomb(d: Path, member: str = "x.npy") -> str:
    """48 MiB of zeros in a 49 kB .npz (the scratch fixture lowers the memory limit to 16 MiB)."""
    zeros = np.zeros((1 << 16, 3, 8, 8), np.float32)
    if member.endswith(".npy"):
        np.savez_compressed(d / "zeros.npz", **{member[:-4]: zeros})
    else:  # numpy hands a member that is not an array over as its (uncompressed) bytes
        with zipfile.ZipFile(d / "zeros.npz", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(member, zeros.tobytes())
    return "zeros.npz"


def object_npy(d: Path) -> str:
    np.save(d / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return "obj.npy"


def ext_model_dir(d: Path, data_name: str) -> str:
    """dir/model.onnx with its weights in dir/<data_name>."""
    (d / "dir").mkdir()
    save_external(onnx.load(d / "a.onnx"), d / "dir" / "model.onnx", data_name)
    return "dir/model.onnx"


def data_outside_folder(d: Path) -> str:
    """dir/model.onnx whose tensors point at ../w.data (an existing file outside the model's folder)."""
    ext_model_dir(d, "w.data")
    shutil.move(d / "dir" / "w.data", d / "w.data")
    m = onnx.load(d / "dir" / "model.onnx", load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../w.data"
    onnx.save(m, d / "dir" / "model.onnx")
    return "dir/model.onnx"


def nan_weights(d: Path) -> str:
    state = torch.load(d / "r20.pt", weights_only=True)
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, d / "nan.pt")
    return "nan.pt"


def checkpoint_dir(d: Path, stage1: str) -> str:
    (d / "ck").mkdir()
    (d / "ck" / "stage1.json").write_text(stage1)
    return "ck"


def link(d: Path, kind: str) -> str:
    if kind == "sym":
        os.symlink("a.onnx", d / "l.onnx")
    else:
        os.link(d / "a.onnx", d / "l.onnx")
    return "l.onnx"


COMPRESS_A = ["compress", "a.onnx", "--data-free", "--ranks", "0.5", *FAST]
SEARCH_A = ["search", "a.onnx", "--data-free", "--target-params", "0.5"]
R20 = ["compress", "resnet20", "--ranks", "0.5", *FAST, "-o", "out.onnx"]

# id -> (setup(scratch) -> argv, exit code, substrings of the error line)
CASES = {
    # 1-3: a write over a read, or over another write
    "output-over-input": (lambda d: [*COMPRESS_A, "-o", "a.onnx"], 2, ["a.onnx", "overwrite"]),
    "report-over-input": (lambda d: [*COMPRESS_A, "-o", "b.onnx", "--report", "a.onnx"], 2, ["--report", "a.onnx"]),
    "report-over-output": (lambda d: [*COMPRESS_A, "-o", "out.onnx", "--report", "out.onnx"], 2, ["out.onnx"]),
    "report-over-plan": (lambda d: ["compress", "a.onnx", "--ranks", plan_file(d, []), *FAST, "-o", "out.onnx",
                                    "--report", "plan.json"], 2, ["--report", "would overwrite ranks plan.json"]),
    "validate-report-over-model": (lambda d: shutil.copy(d / "a.onnx", d / "b.onnx") and
                                   ["validate", "a.onnx", "b.onnx", "--no-latency", "--report", "b.onnx"], 2,
                                   ["--report", "would overwrite compressed b.onnx"]),
    "output-is-a-folder": (lambda d: (d / "out.onnx").mkdir() or [*COMPRESS_A, "-o", "out.onnx"], 2, ["out.onnx"]),
    "export-artifact-over-model": (
        lambda d: shutil.copy(d / "a.onnx", d / "a.fp16.onnx") and
        ["export", "a.fp16.onnx", "--to", "fp16", "-o", ".", "--name", "a", "--no-latency", "--no-layer-errors"], 2,
        ["--output-dir", "a.fp16.onnx (the fp16 file) would overwrite model"]),
    "export-artifact-over-original": (
        lambda d: shutil.copy(d / "a.onnx", d / "b.int8.onnx") and
        ["export", "a.onnx", "--to", "int8", "-o", ".", "--name", "b", "--original", "b.int8.onnx", "--no-latency"],
        2, ["b.int8.onnx (the int8 file) would overwrite original"]),
    # 4: the output's external data file is the input's
    "output-data-over-input-data": (
        lambda d: ["compress", ext_model_dir(d, "small.onnx.data"), "--data-free", "--ranks", "0.5", *FAST,
                   "-o", "dir/small.onnx"], 2, ["-o/--output", "(its external data file) would overwrite model file dir/small.onnx.data"]),
    # 5-6: search's plan over its input
    "search-plan-over-onnx": (lambda d: [*SEARCH_A, "-o", "a.onnx"], 2, ["a.onnx"]),
    "search-plan-over-weights": (
        lambda d: ["search", "resnet20", "--weights", "r20.pt", "--data-free", "--target-params", "0.5",
                   "-o", "r20.pt"], 2, ["r20.pt", "would overwrite weights"]),
    # 7: links to the input are the input
    "output-symlink-to-input": (lambda d: [*COMPRESS_A, "-o", link(d, "sym")], 2, ["l.onnx", "overwrite"]),
    "output-hardlink-to-input": (lambda d: [*COMPRESS_A, "-o", link(d, "hard")], 2, ["l.onnx", "overwrite"]),
    "input-symlink-output-target": (
        lambda d: ["compress", link(d, "sym"), "--data-free", "--ranks", "0.5", *FAST, "-o", "a.onnx"], 2,
        ["a.onnx", "overwrite"]),
    # 8: a CIFAR folder whose pickles run code
    "evil-cifar-compress": (lambda d: [*R20, "--data", evil_cifar(d)], 2, ["posix.system", "refusing"]),
    "evil-cifar-validate": (lambda d: ["validate", "a.onnx", "a.onnx", "--data", evil_cifar(d), "--no-latency"], 2,
                            ["data_batch_1", "posix.system", "refusing"]),
    "evil-cifar-test-batch": (lambda d: ["validate", "a.onnx", "a.onnx", "--data", evil_cifar(d, benign_train=True),
                                         "--no-latency"], 2, ["test_batch", "posix.system", "refusing"]),
    # 9: files and values that must be refused
    "weights-empty": (lambda d: (d / "w.pt").touch() or [*R20, "--weights", "w.pt"], 2, ["--weights", "empty"]),
    "weights-dev-zero": (lambda d: [*R20, "--weights", "/dev/zero"], 2, ["--weights", "not a regular file"]),
    "weights-nan": (lambda d: [*R20, "--weights", nan_weights(d)], 2, ["--weights", "NaN"]),
    "plan-layers-garbage": (lambda d: ["compress", "a.onnx", "--ranks", plan_file(d, "garbage"), *FAST,
                                       "-o", "out.onnx"], 2, ["--ranks", "'layers' must be a list"]),
    "plan-rank-infinity": (
        lambda d: ["compress", "a.onnx", "--ranks", plan_file(d, [{"name": "0/Conv", "method": "tt",
                                                                   "ranks": [float("inf"), 2]}]),
                   *FAST, "-o", "out.onnx"], 2, ["--ranks", "must be an integer", "inf"]),
    "plan-rank-2.5": (
        lambda d: ["compress", "a.onnx", "--ranks", plan_file(d, [{"name": "6/Gemm", "method": "svd", "ranks": [2.5]}]),
                   *FAST, "-o", "out.onnx"], 2, ["--ranks", "must be an integer", "2.5"]),
    "mapping-rank-2.5": (
        lambda d: (d / "m.json").write_text(json.dumps({"6/Gemm": 2.5})) and
        ["compress", "a.onnx", "--ranks", "m.json", *FAST, "-o", "out.onnx"], 2, ["6/Gemm", "2.5"]),
    "mapping-rank-2.5-names-option-and-file": (
        lambda d: (d / "m.json").write_text(json.dumps({"6/Gemm": 2.5})) and
        ["compress", "a.onnx", "--ranks", "m.json", *FAST, "-o", "out.onnx"], 2, ["--ranks", "m.json", "2.5"]),
    "input-shape-huge": (lambda d: [*COMPRESS_A, "--input-shape", "1,3,99999999999999999999,2", "-o", "out.onnx"], 2,
                         ["--input-shape"]),
    "factory-not-callable": (lambda d: ["compress", "math:pi", "--input-shape", "1,3,8,8", "--ranks", "0.5", *FAST,
                                        "-o", "out.onnx"], 2, ["math:pi", "not a callable"]),
    "factory-system-exit": (lambda d: ["compress", "hostile_factories:exits", "--input-shape", "1,3,8,8", "--ranks",
                                       "0.5", *FAST, "-o", "out.onnx"], 2, ["SystemExit"]),
    "factory-wrong-channels": (lambda d: ["compress", "hostile_factories:rgb_net", "--input-shape", "1,1,8,8",
                                          "--ranks", "0.5", *FAST, "-o", "out.onnx"], 2, ["--input-shape", "1, 1, 8, 8", "3 channels"]),
    "validate-report-missing-folder": (
        lambda d: ["validate", "a.onnx", "a.onnx", "--no-latency", "--report", "missing/dir/r.json"], 2,
        ["--report", "does not exist"]),
    "output-in-proc": (lambda d: [*COMPRESS_A, "-o", "/proc/x.onnx"], 2, ["-o/--output", "/proc"]),
    "plan-into-checkpoint-dir": (
        lambda d: [*SEARCH_A, "-o", "ck/stage1.json", "--checkpoint-dir", checkpoint_dir(d, "{}")], 2,
        ["-o/--output", "a file in checkpoint dir ck"]),
    "checkpoint-garbage": (lambda d: [*SEARCH_A, "-o", "plan.json", "--checkpoint-dir", checkpoint_dir(d, "garbage{")],
                           2, ["stage1.json", "--fresh"]),
    "checkpoint-no-fingerprint": (
        lambda d: [*SEARCH_A, "-o", "plan.json", "--checkpoint-dir",
                   checkpoint_dir(d, json.dumps({"format": PLAN_FORMAT, "layers": []}))], 2,
        ["stage1.json", "fingerprint", "--fresh"]),
    "imagefolder-corrupt-image": (lambda d: ["compress", "digits_resnet", "--data", image_folder_with_a_corrupt_image(d),
                                             "--ranks", "0.5", *FAST, "-o", "out.onnx"], 2, ["0.png", "image"]),
    "calib-garbage-npz": (lambda d: (d / "g.npz").write_bytes(os.urandom(300)) and
                          [*COMPRESS_A, "--calib", "g.npz", "-o", "out.onnx"], 2, ["g.npz"]),
    "calib-zip-bomb": (lambda d: [*COMPRESS_A, "--calib", zip_bomb(d), "-o", "out.onnx"], 2, ["bomb.npz", "GiB"]),
    "calib-zip-bomb-deflated": (lambda d: [*COMPRESS_A, "--calib", real_bomb(d), "-o", "out.onnx"], 2,
                                ["zeros.npz", "more than"]),
    "calib-zip-bomb-raw-member": (lambda d: [*COMPRESS_A, "--calib", real_bomb(d, "x.bin"), "-o", "out.onnx"], 2,
                                  ["zeros.npz", "more than"]),
    "export-calib-zip-bomb": (lambda d: ["export", "a.onnx", "--to", "fp16", "--calib", real_bomb(d), "-o", "edge",
                                         "--no-latency", "--no-layer-errors"], 2, ["--calib", "zeros.npz", "more than"]),
    "export-calib-object-npy": (lambda d: ["export", "a.onnx", "--to", "fp16", "--calib", object_npy(d), "-o", "edge",
                                           "--no-latency"], 2, ["--calib", "Python objects"]),
    "external-data-outside-folder": (lambda d: ["compress", data_outside_folder(d), "--ranks", "0.5", *FAST,
                                                "-o", "out.onnx"], 2, ["../w.data", "outside"]),
    "export-external-data-outside-folder": (lambda d: ["export", data_outside_folder(d), "--to", "fp16", "-o", "edge",
                                                       "--no-latency"], 2, ["../w.data", "outside"]),
    "calib-object-npy": (lambda d: [*COMPRESS_A, "--calib", object_npy(d), "-o", "out.onnx"], 2,
                         ["obj.npy", "Python objects"]),
    "target-params-unreachable": (lambda d: ["search", "resnet20", "--data-free", "--target-params", "0.02",
                                             "-o", "plan.json"], 2, ["--target-params", "cannot be met", "0.10"]),
    "usage-bogus-option": (lambda d: [*COMPRESS_A, "--bogus", "-o", "out.onnx"], 2, ["--bogus"]),
    "usage-bad-method": (lambda d: [*COMPRESS_A, "--method", "xx", "-o", "out.onnx"], 2, ["--method", "xx"]),
}

#: cases whose fix belongs to the files being restructured (pipeline.py, cli/, load*.py, config.py)
XFAIL: dict[str, str] = {}


def _params():
    for name, case in CASES.items():
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
        yield pytest.param(*case, id=name, marks=marks)


# ----------------------------------------------------------------------------------------------- checks


def snapshot(d: Path) -> dict[str, str]:
    """Every path under ``d`` -> its content hash (a file), ``dir``, or its link target."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def loadable(d: Path) -> set[str]:
    """The files under ``d`` that load as what their suffix says (never unpickles anything)."""
    ok = set()
    for p in d.rglob("*"):
        try:
            if p.suffix == ".onnx":
                onnx.checker.check_model(onnx.load(p), full_check=True)
            elif p.suffix == ".pt":
                torch.load(p, weights_only=True)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix in (".npy", ".npz"):
                np.load(p, allow_pickle=False)
            else:
                continue
        except Exception:
            continue
        ok.add(p.relative_to(d).as_posix())
    return ok


def refused(r, code: int, needles=()) -> str:
    """The one error line of a refused run (exit ``code``, no traceback)."""
    lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("setup, code, needles", list(_params()))
def test_hostile_input_is_refused_and_nothing_is_touched(scratch, setup, code, needles):
    args = setup(scratch)
    before, ok_before = snapshot(scratch), loadable(scratch)
    r = cli(*args, cwd=scratch)
    refused(r, code, needles)
    assert not (scratch / "MARKER").exists(), "a data file ran code"
    assert snapshot(scratch) == before  # nothing new (no output, *.tmp, .onnx.data), every input byte-identical
    assert loadable(scratch) == ok_before


def test_usage_errors_have_the_project_format(scratch):
    for args in (["compress", "--bogus"], ["search", "--method", "xx"], ["validate"], ["nosuchcommand"]):
        line = refused(cli(*args, cwd=scratch), 2)
        assert "Usage:" not in line


# ----------------------------------------------------------------------------------------------- real data still loads


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_real_format_cifar10_folder_loads(tmp_path, protocol):
    from rene_onnx.data import load_dataset

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(protocol)

    def dump(name, obj):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)

    for i in range(1, 3):
        dump(f"data_batch_{i}", {b"batch_label": b"training batch %d of 5" % i,
                                 b"labels": [j % 10 for j in range(20)],
                                 b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                                 b"filenames": [b"img_%d.png" % j for j in range(20)]})
    test = rng.integers(0, 256, (10, 3072), dtype=np.uint8)
    dump("test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": list(range(10)), b"data": test,
                        b"filenames": [b"t_%d.png" % j for j in range(10)]})
    dump("batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                                           b"horse", b"ship", b"truck"], b"num_cases_per_batch": 20})
    d = load_dataset(tmp_path)
    assert d.name == "cifar10" and d.num_classes == 10 and d.classes[0] == "airplane"
    assert len(d.train) + len(d.calib) == 40 and len(d.test) == 10
    x, y = d.test.tensors()
    assert tuple(x.shape) == (10, 3, 32, 32) and y.tolist() == list(range(10))


def test_the_restricted_unpickler_refuses_any_callable(tmp_path):
    from rene_onnx.data.safe_pickle import load_data_pickle
    from rene_onnx.errors import UnsafeFileError

    for obj, what in ((Evil(tmp_path / "MARKER"), "posix.system"), (np.array([None], dtype=object), "objects"),
                      (nn.Linear(1, 1), "torch")):
        (tmp_path / "p").write_bytes(pickle.dumps({b"data": obj}, protocol=2))
        with pytest.raises(UnsafeFileError, match=what):
            load_data_pickle(tmp_path / "p")
    assert not (tmp_path / "MARKER").exists()


# ----------------------------------------------------------------------------------------------- what must succeed


def runtime_weight_model() -> onnx.ModelProto:
    """Conv -> Relu -> Conv whose weight is Mul(w, 2) -> GlobalAveragePool -> Flatten -> MatMul + Add."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Mul", ["w2", "two"], ["w2x"], name="scale_w2"),
             helper.make_node("Conv", ["r1", "w2x"], ["c2"], name="dyn_conv", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "wfc"], ["m"], name="fc"),
             helper.make_node("Add", ["m", "bfc"], ["y"], name="fc_bias")]
    graph = helper.make_graph(
        nodes, "runtime_weight", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [init("w1", 16, 3, 3, 3), init("b1", 16), init("w2", 16, 16, 3, 3),
         numpy_helper.from_array(np.array(2.0, np.float32), "two"), init("wfc", 16, 10), init("bfc", 10)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def test_a_conv_with_a_run_time_weight_stays_dense_and_says_why(tmp_path):
    onnx.save(runtime_weight_model(), tmp_path / "rt.onnx")
    r = cli("compress", "rt.onnx", "--data-free", "--ranks", "0.5", *FAST, "-o", "out.onnx", "--report", "r.json",
            cwd=tmp_path)
    assert r.exit_code == 0, r.stderr
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"), full_check=True)
    layers = {l["name"]: l for l in json.loads((tmp_path / "r.json").read_text())["layers"]}
    dyn = [l for n, l in layers.items() if "dyn_conv" in n]
    assert len(dyn) == 1 and dyn[0]["status"] == "dense" and "run time" in dyn[0]["reason"], layers
    assert sum(l["status"] == "factorized" for l in layers.values()) >= 2  # the normal Conv and the MatMul


def test_the_same_seed_writes_the_same_plan_bytes(tmp_path, assets):
    plans = []
    for run in ("one", "two"):
        d = tmp_path / run
        d.mkdir()
        shutil.copy(assets / "a.onnx", d / "a.onnx")
        r = cli(*SEARCH_A, "--seed", "0", "--search-steps", "10", "-o", "plan.json", cwd=d)
        assert r.exit_code == 0, r.stderr
        plans.append((d / "plan.json").read_bytes())
    assert plans[0] == plans[1]
    assert json.loads(plans[0])["format"] == PLAN_FORMAT


def test_external_data_output_mode_and_stale_temps(tmp_path):
    from rene_onnx.files import STALE_TEMP_SECONDS, default_file_mode

    torch.onnx.export(_tiny_net(), torch.randn(1, 3, 8, 8), tmp_path / "plain.onnx", dynamo=False,
                      input_names=["x"], output_names=["y"])
    (tmp_path / "in").mkdir()
    save_external(onnx.load(tmp_path / "plain.onnx"), tmp_path / "in" / "model.onnx", "model.onnx.data")
    inputs = {p: p.read_bytes() for p in (tmp_path / "in").iterdir()}
    old = time.time() - STALE_TEMP_SECONDS - 600
    stale_dir, stale_file = tmp_path / ".out.onnx.k1ll3d.tmp", tmp_path / ".out.onnx.x9z8y7.tmp"
    stale_dir.mkdir()
    (stale_dir / "out.onnx.data").write_bytes(b"half written")
    stale_file.write_bytes(b"half written")
    young = tmp_path / ".out.onnx.running.tmp"  # another run's, still in progress: left alone
    young.write_bytes(b"")
    for p in (stale_dir / "out.onnx.data", stale_dir, stale_file):
        os.utime(p, (old, old))
    r = cli("compress", "in/model.onnx", "--data-free", "--ranks", "0.5", *FAST, "-o", "out.onnx", cwd=tmp_path)
    assert r.exit_code == 0, r.stderr
    out, data = tmp_path / "out.onnx", tmp_path / "out.onnx.data"
    assert data.is_file() and data.stat().st_size > 0
    assert data.stat().st_mode & 0o777 == out.stat().st_mode & 0o777 == default_file_mode()
    onnx.checker.check_model(str(out), full_check=True)
    assert not stale_dir.exists() and not stale_file.exists() and young.exists()
    assert {p: p.read_bytes() for p in (tmp_path / "in").iterdir()} == inputs
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".out.onnx.running.tmp", "in", "out.onnx", "out.onnx.data", "plain.onnx"])


# ----------------------------------------------------------------------------------------------- the rule


def test_check_io_the_rule(tmp_path):
    from rene_onnx.errors import PathConflictError, UserError
    from rene_onnx.files import check_io

    a = tmp_path / "a.onnx"
    a.write_bytes(b"model")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "batch").write_bytes(b"x")
    os.symlink(a, tmp_path / "sym.onnx")
    os.link(a, tmp_path / "hard.onnx")

    def refuses(reads, writes, *needles):
        with pytest.raises(PathConflictError) as e:
            check_io(reads, writes)
        assert isinstance(e.value, UserError) and e.value.exit_code == 2
        for needle in needles:
            assert needle in str(e.value), str(e.value)

    refuses({"model": a}, {"output": a}, "output:", "would overwrite model")
    refuses({"model": [a, None]}, {"output": tmp_path / "b.onnx", "report": tmp_path / "b.onnx"}, "report:", "output")
    refuses({"model": a}, {"output": tmp_path / "sym.onnx"}, "model")
    refuses({"model": tmp_path / "sym.onnx"}, {"output": a}, "model")
    refuses({"model": a}, {"output": tmp_path / "hard.onnx"}, "model")
    refuses({"data": tmp_path / "data"}, {"report": tmp_path / "data" / "batch"}, "a file in data")
    refuses({"data": tmp_path / "data"}, {"report": tmp_path / "data"}, "would overwrite data")
    refuses({}, {"report": tmp_path / "data"}, "is a folder")
    refuses({}, {"output": tmp_path / "no" / "such" / "x.onnx"}, "does not exist")
    refuses({}, {"output": "/proc/x.onnx"}, "cannot write in /proc")
    refuses({}, {"output": tmp_path / "a.onnx" / "x.onnx"}, "does not exist")  # a file in place of the folder
    before = sorted(os.listdir(tmp_path))
    check_io({"model": a, "weights": None, "data": tmp_path / "data"},
             {"output": tmp_path / "b.onnx", "report": tmp_path / "data" / "new.json", "plots": None})
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "data") == ["batch"]  # probes removed


def test_export_refuses_by_the_file_names_it_writes(tmp_path, assets):
    """The names the export checks before its work are the names it writes (so the early refusal is the real one)."""
    from rene_onnx.export import export_model
    from rene_onnx.export.orchestrator import ExportConfig, planned_files

    shutil.copy(assets / "a.onnx", tmp_path / "a.onnx")
    kw = dict(to=("int8", "fp16", "ort"), quantization="dynamic", opset=17, latency=False, layer_errors=False)
    res = export_model(tmp_path / "a.onnx", output_dir=tmp_path / "edge", **kw)
    planned = planned_files("a", kw["to"], ExportConfig(**{k: v for k, v in kw.items() if k != "to"}), {})
    assert sorted(p.name for p in (tmp_path / "edge").iterdir()) == sorted(planned.values())
    assert {Path(p).name for p in res.paths.values()} == set(planned.values())
