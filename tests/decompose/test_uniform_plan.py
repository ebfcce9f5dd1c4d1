"""The uniform baseline (rene_onnx.decompose.uniform): one rank fraction sized to remove a parameter count."""
from __future__ import annotations

import pytest
import torch

from rene_onnx import models
from rene_onnx.decompose import ranks as R
from rene_onnx.decompose.uniform import uniform_plan
from rene_onnx.engine.profile import layer_shapes
from rene_onnx.errors import ConfigError


@pytest.fixture(scope="module")
def shapes():
    model = models.build("resnet20_fmnist").eval()
    return layer_shapes(model, torch.zeros(models.input_shape("resnet20_fmnist")))


def _removed(plan, shapes) -> int:
    return sum(R.dense_params(shapes[lp.name]) - R.factorized_params(lp.method, shapes[lp.name], lp.ranks)
               for lp in plan.factorized())


@pytest.mark.parametrize("target", range(150_000, 230_001, 8_000))
def test_uniform_plan_matches_the_removed_parameters_with_one_fraction(shapes, target):
    total = sum(R.dense_params(s) for s in shapes.values())
    plan, frac, removed = uniform_plan(shapes, target, keep_dense=("conv1",))
    assert removed == _removed(plan, shapes)
    assert abs(removed - target) <= 0.01 * (total - target)  # the kept parameters agree within 1%
    assert list(plan.layers) == list(shapes)  # model order, every layer
    assert plan.layers["conv1"].method == "dense" and "uniform" in plan.layers["conv1"].reason
    # one fraction: every factorized layer keeps about the same share of its parameters
    kept = [R.factorized_params(lp.method, shapes[lp.name], lp.ranks) / R.dense_params(shapes[lp.name])
            for lp in plan.factorized()]
    assert len(kept) == len(shapes) - 1
    assert max(abs(k - frac) for k in kept) < 0.1, kept
    assert 0.1 < frac < 0.5


def test_uniform_plan_without_exceptions_factorizes_the_stem(shapes):
    plan, _, _ = uniform_plan(shapes, 190_000)
    assert plan.layers["conv1"].method == "tt" and plan.layers["conv1"].ranks == (1, 1)


def test_uniform_plan_names_a_target_no_fraction_reaches(shapes):
    total = sum(R.dense_params(s) for s in shapes.values())
    with pytest.raises(ConfigError, match="no rank fraction removes"):
        uniform_plan(shapes, total)
