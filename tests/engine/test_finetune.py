"""Fine-tuning with distillation (rene_onnx.engine.finetune) and its DDP entry."""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rene_onnx.engine.finetune import (
    Distiller,
    FinetuneConfig,
    distillation_terms,
    evaluate,
    factorized_layers,
    finetune,
    split_batch,
)
from rene_onnx.engine.layers import factorize_
from rene_onnx.plan import LayerPlan, RankPlan
from rene_onnx.progress import listen

REPO = Path(__file__).resolve().parents[2]


def _net(bn: bool = False) -> nn.Sequential:
    """A tiny CNN for 1x8x8 digits; only standard modules, so it pickles for the DDP subprocess.

    Layer names: conv "0", conv "2" (after ReLU / BN), fc "6", fc "8" (without BN).
    """
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1)]
    layers += [nn.BatchNorm2d(16) if bn else nn.Identity(), nn.ReLU(), nn.Sequential(nn.MaxPool2d(2), nn.Flatten())]
    layers += [nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


def _plan(conv1=None, conv2=None, fc=None) -> RankPlan:
    plan = RankPlan()
    if conv1:
        plan.add(LayerPlan("0", "svd", conv1))
    if conv2:
        plan.add(LayerPlan("2", "tt", conv2))
    if fc:
        plan.add(LayerPlan("6", "svd", fc))
    return plan


def _student(teacher: nn.Module, plan: RankPlan) -> nn.Module:
    s = copy.deepcopy(teacher)
    factorize_(s, plan)
    return s


@pytest.fixture(scope="module")
def digits():
    """sklearn digits (bundled, no download) split train / val / test with a fixed seed."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return {"train": (x[:1000], y[:1000]), "val": (x[1000:1400], y[1000:1400]), "test": (x[1400:], y[1400:])}


def _loader(xy, shuffle=False, bs=64):
    return DataLoader(TensorDataset(*xy), batch_size=bs, shuffle=shuffle)


def _train(net: nn.Module, digits, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(epochs):
        for x, y in _loader(digits["train"], shuffle=True):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def teacher(digits):
    torch.set_num_threads(1)
    net = _train(_net(), digits, 10)
    assert evaluate(net, _loader(digits["val"])) > 0.9
    return net


# --------------------------------------------------------------------------- distillation terms


def test_terms_zero_at_full_rank_and_positive_when_damaged(teacher, digits):
    full = _student(teacher, _plan(conv1=(8,), conv2=(16, 8), fc=(32,)))
    assert factorized_layers(full) == ["0", "2", "6"]
    val = _loader(digits["val"])
    for norm in ("mse", "relative", "sum"):
        t = distillation_terms(full, teacher, val, FinetuneConfig(diss_norm=norm))
        assert t["weight"] < 1e-9 and t["output"] < 1e-7 and t["kd"] < 1e-6, (norm, t)
    damaged = _student(teacher, _plan(conv2=(1, 1), fc=(1,)))
    t = distillation_terms(damaged, teacher, val, FinetuneConfig(diss_norm="relative"))
    assert t["weight"] > 0.1 and t["output"] > 0.1 and t["kd"] > 0.1, t
    # the training loss at full rank is plain cross-entropy: the distillation terms add nothing
    res = finetune(full, teacher, val, None, FinetuneConfig(epochs=1, max_steps=1, lr=1e-9, device="cpu"))
    h = res.history[0]
    assert h["diss_weight"] < 1e-9 and h["diss_output"] < 1e-7
    assert h["loss"] == pytest.approx(h["ce"], abs=1e-6)


class _Shifted(nn.Linear):
    """A 'factorized' layer whose reconstructed weight is its own weight (exact differences)."""

    def reconstruct_weight(self):
        return self.weight


def test_distiller_normalizations_are_exact():
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    student = nn.Sequential(_Shifted(5, 4), _Shifted(4, 3))
    student.load_state_dict(teacher.state_dict())
    deltas = [torch.randn(4, 5) * 0.1, torch.randn(3, 4) * 0.1]
    with torch.no_grad():
        for m, d in zip(student, deltas):
            m.weight += d
    x = torch.randn(7, 5)
    with torch.no_grad():
        o = [teacher[0](x), teacher[1](teacher[0](x))]
        s = [student[0](x), student[1](student[0](x))]
    wt = [teacher[0].weight.detach(), teacher[1].weight.detach()]
    expect = {
        "mse": ([(d**2).mean() for d in deltas], [((a - b) ** 2).mean() for a, b in zip(o, s)]),
        "relative": ([(d**2).sum() / (w**2).sum() for d, w in zip(deltas, wt)],
                     [((a - b) ** 2).sum() / (a**2).sum() for a, b in zip(o, s)]),
        "sum": ([(d**2).sum() for d in deltas], [((a - b) ** 2).sum() for a, b in zip(o, s)]),
    }
    for norm, (ew, eo) in expect.items():
        with Distiller(student, teacher, norm=norm) as dist:
            assert dist.layers == ["0", "1"]
            with torch.no_grad():
                teacher(x)
                student(x)
            reduce = sum if norm == "sum" else (lambda t: sum(t) / len(t))
            assert float(dist.weight_loss().detach()) == pytest.approx(float(reduce(ew)), rel=1e-5)
            assert float(dist.output_loss()) == pytest.approx(float(reduce(eo)), rel=1e-5)
    # hooks are removed on close: a later forward records nothing
    teacher(x)
    assert not dist.t_out


def test_distiller_rejects_unknown_layer(teacher):
    with pytest.raises(ValueError, match="names no layer of the model"):
        Distiller(copy.deepcopy(teacher), teacher, layers=["nope"])


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_recovers_damaged_model(teacher, digits):
    student = _student(teacher, _plan(conv2=(3, 3), fc=(3,))).train()
    val, test = _loader(digits["val"]), _loader(digits["test"])
    before_val, before_test = evaluate(student, val), evaluate(student, test)
    cfg = FinetuneConfig(epochs=8, lr=0.02, device="cpu", log_every=8)
    events = []
    with listen(events.append):
        res = finetune(student, teacher, _loader(digits["train"], shuffle=True), val, cfg)
    calls = [(int(e.message.split()[1]), e.step, e.total, dict(e.info)) for e in events if e.stage == "finetune"]
    after_val, after_test = evaluate(student, val), evaluate(student, test)
    assert res.epochs_run == 8 and len(res.history) == 8 and res.steps == 8 * 16
    assert res.initial_val_top1 == pytest.approx(before_val)
    assert after_val >= before_val + 0.2, (before_val, after_val)
    assert after_test >= before_test + 0.2, (before_test, after_test)
    # the student holds the selected checkpoint, and its score is the best one seen on val
    assert after_val == pytest.approx(res.best_val_top1)
    assert res.best_val_top1 == max([res.initial_val_top1] + [h["val_top1"] for h in res.history])
    assert res.history[0]["ce"] > res.history[-1]["ce"] and all(h["labeled"] == 1.0 for h in res.history)
    assert all(h["diss_weight"] > 0 and h["diss_output"] > 0 for h in res.history)
    # progress: an initial val call, train calls every 8 steps, and a val call per epoch
    assert calls[0][:3] == (0, 0, 128) and calls[0][3]["phase"] == "val"
    assert sum(c[3]["phase"] == "train" for c in calls) == 16
    assert sum(c[3]["phase"] == "val" for c in calls) == 9
    assert student.training and not teacher.training  # modes restored


def test_selection_uses_val_not_test(teacher, digits):
    """A val split whose labels are the damaged model's own predictions makes epoch 0 the best.

    Training improves the real (test) accuracy, but the checkpoint is chosen on val,
    so the untouched student comes back; with ``select_on='last'`` the trained one stays.
    """
    damaged = _student(teacher, _plan(conv2=(3, 3), fc=(3,)))
    xv = digits["val"][0]
    with torch.no_grad():
        own = damaged.eval()(xv).argmax(1)
    rigged_val = _loader((xv, own))
    test = _loader(digits["test"])
    cfg = FinetuneConfig(epochs=4, lr=0.02, device="cpu")

    picked = copy.deepcopy(damaged)
    res = finetune(picked, teacher, _loader(digits["train"], shuffle=True), rigged_val, cfg)
    assert res.initial_val_top1 == 1.0 and res.best_epoch == 0 and res.selected_on == "calib"
    assert all(h["val_top1"] < 1.0 for h in res.history)
    for (k, a), b in zip(picked.state_dict().items(), damaged.state_dict().values()):
        assert torch.equal(a, b), k

    last = copy.deepcopy(damaged)
    res_last = finetune(last, teacher, _loader(digits["train"], shuffle=True), rigged_val,
                        FinetuneConfig(epochs=4, lr=0.02, device="cpu", select_on="last"))
    assert res_last.best_epoch == 4 and res_last.selected_on == "last"
    assert evaluate(last, rigged_val) == pytest.approx(res_last.history[-1]["val_top1"])
    assert evaluate(last, test) > evaluate(picked, test) + 0.1


def test_unlabeled_batches_distill_the_teacher(teacher, digits):
    student = _student(teacher, _plan(conv2=(3, 3), fc=(3,)))
    xs = digits["train"][0]
    train = [xs[i : i + 64] for i in range(0, len(xs), 64)]  # bare tensors: no labels
    val = [(digits["val"][0][i : i + 100],) for i in range(0, 400, 100)]  # 1-tuples: agreement with the teacher
    res = finetune(student, teacher, train, val, FinetuneConfig(epochs=6, lr=0.02, device="cpu"))
    assert all(h["ce"] == 0.0 and h["labeled"] == 0.0 and h["kd"] > 0 for h in res.history)
    assert res.history[-1]["kd"] < res.history[0]["kd"]
    assert res.best_val_top1 >= res.initial_val_top1 + 0.2, (res.initial_val_top1, res.best_val_top1)
    assert evaluate(student, val, teacher=teacher) == pytest.approx(res.best_val_top1)
    # labeled data with use_labels=False is distilled the same way (Dataset input, Adam)
    s2 = _student(teacher, _plan(conv2=(3, 3), fc=(3,)))
    cfg = FinetuneConfig(epochs=1, lr=1e-3, optimizer="adam", batch_size=100, use_labels=False, device="cpu")
    r2 = finetune(s2, teacher, TensorDataset(*digits["train"]), None, cfg)
    assert r2.steps == 10 and r2.history[0]["ce"] == 0.0 and r2.history[0]["kd"] > 0
    assert r2.best_val_top1 is None and r2.selected_on == "last"


def test_max_steps_and_divergence(teacher, digits):
    student = _student(teacher, _plan(conv2=(3, 3)))
    cfg = FinetuneConfig(epochs=5, max_steps=20, device="cpu", amp=True)  # bf16 autocast runs on CPU too
    res = finetune(student, teacher, _loader(digits["train"]), None, cfg)
    assert res.steps == 20 and res.epochs_run == 2 and res.best_epoch == 2
    assert res.history[-1]["loss"] < res.history[0]["loss"] and not student.training
    # a diverging run stops, says why, and keeps the last finite weights (here: the initial ones)
    bad = _student(teacher, _plan(conv2=(3, 3)))
    init = copy.deepcopy(bad.state_dict())
    res = finetune(bad, teacher, _loader(digits["train"]), _loader(digits["val"]),
                   FinetuneConfig(epochs=3, lr=1e8, momentum=0.0, device="cpu"))
    assert "non-finite" in res.stopped and res.epochs_run == 1 and res.best_epoch == 0
    assert all(torch.equal(a, b) for a, b in zip(bad.state_dict().values(), init.values()))


def test_inputs_are_checked(teacher):
    with pytest.raises(ValueError, match="optimizer"):
        FinetuneConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="select_on"):
        FinetuneConfig(select_on="test")
    with pytest.raises(ValueError, match="unknown FinetuneConfig"):
        FinetuneConfig.from_dict({"epochs": 1, "lr_decay": 2})
    assert FinetuneConfig.from_dict(FinetuneConfig(distill_layers=["0"]).to_dict()).distill_layers == ("0",)
    with pytest.raises(ValueError, match="different modules"):
        finetune(teacher, teacher, [torch.zeros(1, 1, 8, 8)])
    x = torch.zeros(2, 3)
    assert split_batch(x)[1] is None and split_batch((x,))[1] is None
    assert split_batch({"x": x, "label": torch.ones(2)})[1] is not None
    assert split_batch((x, torch.ones(2)), use_labels=False)[1] is None
    with pytest.raises(ValueError, match="no labels"):
        evaluate(teacher, [torch.zeros(2, 1, 8, 8)])


# --------------------------------------------------------------------------- DDP


def test_ddp_two_processes_gloo(tmp_path, digits):
    """torch.distributed.run with 2 CPU processes: the ranks agree and only rank 0 writes."""
    teacher = _train(_net(bn=True), digits, 6)
    student = _student(teacher, _plan(conv2=(3, 3), fc=(3,)))
    torch.save(teacher, tmp_path / "teacher.pt")
    torch.save(student, tmp_path / "student.pt")
    torch.save({"x": digits["train"][0][:512], "y": digits["train"][1][:512]}, tmp_path / "train.pt")
    torch.save({"x": digits["val"][0], "y": digits["val"][1]}, tmp_path / "val.pt")
    (tmp_path / "cfg.json").write_text(json.dumps({"epochs": 3, "lr": 0.02, "batch_size": 32, "device": "cpu"}))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rene_onnx.engine.distributed",
           "--student", str(tmp_path / "student.pt"), "--teacher", str(tmp_path / "teacher.pt"),
           "--train", str(tmp_path / "train.pt"), "--val", str(tmp_path / "val.pt"),
           "--config", str(tmp_path / "cfg.json"), "--out", str(out)]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    aborted = any(s in p.stderr for s in ("SIGABRT", "exitcode: -6", "terminate called without an active exception"))
    if p.returncode != 0 and aborted and "rene_onnx/" not in p.stderr:
        # a rank killed by a C++ abort at gloo teardown, with no Python error in a rank (the launcher then prints
        # its own traceback, from torch/distributed/run.py only): seen 3 times in ~30 runs on the loaded 2-core
        # box; one more try -- a real failure (an exception in a rank names rene_onnx's frames) is never retried
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stderr[-6000:] + p.stdout[-2000:]
    assert sorted(f.name for f in out.iterdir()) == ["result.json", "student.pt", "student_state.pt"]
    r = json.loads((out / "result.json").read_text())
    assert r["world_size"] == 2 and r["backend"] == "gloo"
    assert r["replica_param_max_diff"] == 0.0
    # each rank ran 512 / 2 / 32 = 8 steps per epoch
    assert r["steps"] == 24 and r["epochs_run"] == 3
    assert r["best_val_top1"] >= r["initial_val_top1"] + 0.1
    tuned = torch.load(out / "student.pt", weights_only=False)
    val = _loader(digits["val"])
    assert evaluate(tuned, val) == pytest.approx(r["best_val_top1"])  # the saved buffers are the evaluated ones
    assert math.isfinite(r["history"][-1]["loss"]) and r["history"][0]["diss_weight"] > 0
