"""Rank-plan rules: method resolution, dense-with-reason, fractions, mappings, rounding."""
import pytest

from rene_onnx.decompose import ranks as R
from rene_onnx.decompose.choose import plan_from_fraction, plan_from_mapping
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.plan import RankPlan

SHAPES = {
    "stem": LayerShape(32, 3, (3, 3), in_positions=1024, out_positions=1024),
    "conv": LayerShape(64, 64, (3, 3), in_positions=256, out_positions=64),
    "pw": LayerShape(128, 64, (1, 1), in_positions=64, out_positions=64),
    "dw": LayerShape(64, 64, (3, 3), groups=64, in_positions=64, out_positions=64),
    "c1d": LayerShape(48, 32, (5,), in_positions=100, out_positions=96),
    "fc": LayerShape(10, 256, (), bias=True),
}


def test_auto_picks_tt_for_kxk_and_svd_for_matrices():
    plan = plan_from_fraction(SHAPES, "auto", 0.3)
    assert plan.layers["conv"].method == "tt"
    assert plan.layers["c1d"].method == "tt"
    assert plan.layers["pw"].method == "svd"
    dw = plan.layers["dw"]
    assert dw.method == "dense" and "depthwise" in dw.reason and "groups=64" in dw.reason
    assert list(plan.layers) == list(SHAPES)  # model order kept, every layer present


def test_tt_or_cp_on_matrix_layers_falls_back_to_svd():
    for method in ("tt", "cp"):
        plan = plan_from_fraction({"pw": SHAPES["pw"], "fc": LayerShape(64, 256)}, method, 0.25)
        for lp in plan.layers.values():
            assert lp.method == "svd" and f"{method} does not apply" in lp.reason
    plan = plan_from_fraction({"conv": SHAPES["conv"]}, "cp", 0.25)
    assert plan.layers["conv"].method == "cp"
    plan = plan_from_fraction({"conv": SHAPES["conv"]}, "svd", 0.25)
    assert plan.layers["conv"].method == "svd"


def test_dense_when_nothing_is_saved():
    # 10x256 Linear: svd rank r costs r*266+10 params vs 2570 dense; fraction 1.5 can't save anything
    plan = plan_from_fraction(SHAPES, "auto", 1.5)
    for name in ("fc", "conv", "pw"):
        lp = plan.layers[name]
        assert lp.method == "dense", name
        assert "nothing saved" in lp.reason and str(R.dense_params(SHAPES[name])) in lp.reason
    # the stem (3 input channels) cannot save at tt rank ~ fraction 0.5 of 896 params
    stem = plan_from_fraction({"stem": SHAPES["stem"]}, "tt", 0.5).layers["stem"]
    shape = SHAPES["stem"]
    if stem.method == "dense":
        assert "nothing saved" in stem.reason
    else:
        assert R.factorized_params("tt", shape, stem.ranks) < R.dense_params(shape)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.6])
def test_fraction_keeps_about_that_share_of_params(fraction):
    plan = plan_from_fraction(SHAPES, "auto", fraction)
    for name, lp in plan.layers.items():
        if lp.method == "dense":
            continue
        shape = SHAPES[name]
        kept = R.factorized_params(lp.method, shape, lp.ranks) / R.dense_params(shape)
        step = R.factorized_params(lp.method, shape, tuple(r + 1 for r in lp.ranks)) / R.dense_params(shape) - kept
        if max(lp.ranks) < R.max_rank(lp.method, shape):
            assert abs(kept - fraction) <= step, (name, kept, fraction)
        else:  # the stem (3 input channels) tops out below the fraction
            assert kept < fraction
        assert lp.ranks == R.rank_for_fraction(lp.method, shape, fraction)
    assert plan.meta["fraction"] == fraction and plan.meta["method"] == "auto"


def test_rank_multiple_rounds_ranks():
    plan = plan_from_fraction(SHAPES, "auto", 0.3, rank_multiple=8)
    factorized = plan.factorized()
    assert factorized
    for lp in factorized:
        shape = SHAPES[lp.name]
        if R.break_even_rank(lp.method, shape) < 16:  # too narrow for multiples of 8: not rounded
            assert R.layer_multiple(lp.method, shape, 8) == 1
            continue
        caps = (shape.out_features, shape.in_features) if lp.method == "tt" else (R.max_rank(lp.method, shape),)
        assert all(r % 8 == 0 or r == cap for r, cap in zip(lp.ranks, caps)), lp
    assert plan.layers["conv"].ranks[0] % 8 == 0 and R.layer_multiple("tt", SHAPES["conv"], 8) == 8
    unrounded = plan_from_fraction(SHAPES, "auto", 0.3)
    assert plan.layers["fc"].ranks == unrounded.layers["fc"].ranks  # break-even rank 9: not rounded to 8
    assert plan.layers["stem"].ranks == unrounded.layers["stem"].ranks
    plan = plan_from_mapping(SHAPES, "auto", {"conv": [13, 11], "fc": 5}, rank_multiple=4)
    assert plan.layers["conv"].ranks == (12, 12)
    assert plan.layers["fc"].ranks == (4,)
    with pytest.raises(ValueError, match="rank_multiple"):
        plan_from_fraction(SHAPES, "auto", 0.3, rank_multiple=0)


def test_mapping_ranks_and_unnamed_layers():
    plan = plan_from_mapping(SHAPES, "auto", {"conv": [16, 8], "pw": 12, "c1d": 6, "dw": 4})
    assert plan.layers["conv"].method == "tt" and plan.layers["conv"].ranks == (16, 8)
    assert plan.layers["pw"].method == "svd" and plan.layers["pw"].ranks == (12,)
    assert plan.layers["c1d"].ranks == (6, 6)  # one TT rank means r1 = r2
    assert plan.layers["dw"].method == "dense" and "depthwise" in plan.layers["dw"].reason
    assert plan.layers["fc"].method == "dense" and plan.layers["fc"].reason == "no rank given"
    # huge ranks are capped to the algebraic maximum, which then saves nothing
    big = plan_from_mapping(SHAPES, "tt", {"conv": 1000})
    assert big.layers["conv"].method == "dense" and "nothing saved" in big.layers["conv"].reason
    # plans round-trip through JSON
    again = RankPlan.from_dict(plan.to_dict())
    assert again.layers == plan.layers


def test_mapping_errors_name_the_layer():
    with pytest.raises(ValueError, match="'nope'"):
        plan_from_mapping(SHAPES, "auto", {"conv": 4, "nope": 3})
    with pytest.raises(ValueError, match="'conv'.*positive"):
        plan_from_mapping(SHAPES, "auto", {"conv": 0})
    with pytest.raises(ValueError, match="'pw'.*positive"):
        plan_from_mapping(SHAPES, "auto", {"pw": -2})
    with pytest.raises(ValueError, match="'fc'"):
        plan_from_mapping(SHAPES, "auto", {"fc": [4, 4]})
    with pytest.raises(ValueError, match="'fc'"):
        plan_from_mapping(SHAPES, "auto", {"fc": "many"})
    with pytest.raises(ValueError, match="unknown method"):
        plan_from_mapping(SHAPES, "tucker", {"fc": 4})
    with pytest.raises(ValueError, match="positive"):
        plan_from_fraction(SHAPES, "auto", 0.0)
