"""finetune for unlabeled embedding models: output-matching losses, selection metric, multi-input batches."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rene_onnx.engine.finetune import FinetuneConfig, finetune, output_agreement_sums, output_match_loss
from rene_onnx.engine.layers import factorize_
from rene_onnx.plan import LayerPlan, RankPlan
from rene_onnx.progress import listen


class Embedder(nn.Module):
    """Two inputs (features, mask) -> an L2-normalized embedding."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 24)
        self.fc2 = nn.Linear(24, 8)

    def forward(self, features, mask):
        h = torch.tanh(self.fc1(features)) * mask
        return nn.functional.normalize(self.fc2(h), dim=-1)


def _pair(rank=3):
    torch.manual_seed(0)
    teacher = Embedder().eval()
    student = copy.deepcopy(teacher)
    factorize_(student, RankPlan({"fc1": LayerPlan("fc1", "svd", (rank,))}))
    return teacher, student


def _batches(n=6, bs=16, seed=0, kind="tuple"):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x, m = torch.randn(bs, 12, generator=g), torch.ones(bs, 1)
        out.append(((x, m),) if kind == "tuple" else {"features": x, "mask": m})
    return out


def _mean_cos(student, teacher, batches):
    s, n = output_agreement_sums(student, teacher, batches, "cosine")
    return s / n


def test_output_match_losses():
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    s = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert output_match_loss(s, t, "cosine").item() == pytest.approx(0.5)  # cos 0 and 1
    assert output_match_loss(s, t, "mse").item() == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert output_match_loss(t, t, "kd").item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="output_loss"):
        FinetuneConfig(output_loss="l1")
    with pytest.raises(ValueError, match="select_metric"):
        FinetuneConfig(select_metric="auc")


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_unlabeled_two_input_embedder_distills_with_cosine_loss_and_selection(kind):
    teacher, student = _pair(rank=6)
    train, val = _batches(n=12, kind=kind), _batches(n=2, seed=1, kind=kind)
    before = _mean_cos(student, teacher, val)
    cfg = FinetuneConfig(epochs=4, lr=3e-3, optimizer="adam", weight_decay=0.0, lambda_diss=0.0, logit_kd=1.0,
                         output_loss="cosine", select_metric="cosine", use_labels=False, device="cpu")
    events = []
    with listen(events.append):
        res = finetune(student, teacher, train, val, cfg)
    seen = [dict(e.info) for e in events if e.stage == "finetune"]
    after = _mean_cos(student, teacher, val)
    assert res.metric == "cosine" and res.best_val_top1 is None
    assert res.initial_val_metric == pytest.approx(before, abs=1e-6)
    assert after > before + 0.01, (before, after)
    assert res.best_val_metric == pytest.approx(after, abs=1e-6)  # the kept weights are the selected epoch's
    assert res.best_val_metric == max([res.initial_val_metric] + [h["val_metric"] for h in res.history])
    assert any(i.get("phase") == "val" and i["metric"] == "cosine" for i in seen)


def test_selection_keeps_the_untuned_student_when_training_only_hurts():
    teacher, student = _pair(rank=6)
    val = _batches(n=2, seed=1)
    ref = {k: v.clone() for k, v in student.state_dict().items()}
    # a huge lr on an MSE objective wrecks the student: the epoch-0 weights must be kept
    cfg = FinetuneConfig(epochs=2, lr=5.0, optimizer="sgd", weight_decay=0.0, lambda_diss=0.0, logit_kd=1.0,
                         output_loss="mse", select_metric="mse", use_labels=False, device="cpu")
    res = finetune(student, teacher, _batches(), val, cfg)
    assert res.best_epoch == 0
    for k, v in student.state_dict().items():
        torch.testing.assert_close(v, ref[k])
