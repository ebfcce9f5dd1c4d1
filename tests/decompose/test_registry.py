"""The method registries are the one place methods are listed: a toy method registered here shows up in every
choice (plan.METHODS / FACTOR_KEYS, choose.METHOD_CHOICES, SearchConfig, the CLI's --method) and goes again."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rene_onnx.decompose import ranks as R
from rene_onnx.decompose import registry
from rene_onnx.decompose.choose import auto_methods, pick_by_error, plan_from_fraction
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.decompose.svd import SVD
from rene_onnx.decompose.tt import TT

ROOT = Path(__file__).resolve().parents[2]


class Toy(SVD):
    """A toy method: SVD's rules under another name, and two keys of its own."""

    name = "toy"
    factor_keys = ("U", "V")


@pytest.fixture
def toy():
    registry.register(Toy())
    try:
        yield "toy"
    finally:
        registry.unregister("toy")


def test_the_registry_lists_the_builtin_methods_in_preference_order():
    assert registry.names()[:4] == ("tt", "cp", "svd", "tucker2")
    assert registry.get("tucker2").n_ranks == 2 and registry.get("svd").factor_keys == ("U", "V")
    with pytest.raises(ValueError, match="unknown method 'nope'.*tt, cp, svd, tucker2"):
        registry.get("nope")
    with pytest.raises(ValueError, match="registered already"):
        registry.register(TT())
    for reserved in ("dense", "auto"):
        bad = Toy()
        bad.name = reserved
        with pytest.raises(ValueError, match="reserved"):
            registry.register(bad)


def test_a_registered_method_appears_in_every_choice_and_goes_again(toy):
    from click.testing import CliRunner

    from rene_onnx import plan
    from rene_onnx.cli.main import cli
    from rene_onnx.config import SearchConfig
    from rene_onnx.decompose import choose

    assert "toy" in plan.METHODS and plan.FACTOR_KEYS["toy"] == ("U", "V")
    assert "toy" in choose.METHOD_CHOICES and choose.METHOD_CHOICES[-1] == "auto"
    assert SearchConfig(method="toy").method == "toy"
    plan.LayerPlan("x", "toy", (2,))  # a valid plan entry
    help_text = CliRunner().invoke(cli, ["compress", "--help"]).output
    assert re.search(r"--method \[auto\|tt\|cp\|svd\|tucker2\|toy\]", help_text), help_text
    # the numpy rules alone plan it (counting, caps, fallback to auto's choice where it does not apply)
    shapes = {"fc": LayerShape(10, 64), "conv": LayerShape(16, 8, (3, 3))}
    p = plan_from_fraction(shapes, "toy", 0.5)
    assert p.layers["fc"].method == "toy" and p.layers["conv"].method == "toy"
    assert R.factorized_params("toy", shapes["fc"], (3,)) == R.factorized_params("svd", shapes["fc"], (3,))
    registry.unregister("toy")
    assert "toy" not in plan.METHODS and "toy" not in choose.METHOD_CHOICES
    with pytest.raises(ValueError, match="method must be one of"):
        SearchConfig(method="toy")
    with pytest.raises(ValueError, match="unknown method"):
        plan.LayerPlan("x", "toy", (2,))
    assert "toy" not in CliRunner().invoke(cli, ["compress", "--help"]).output


def test_no_other_module_lists_the_methods():
    """Outside the registrations, no source file spells out two method names in a row (a hard-coded list)."""
    pattern = re.compile(r"""["'](tt|cp|svd|tucker2)["']\s*,\s*["'](tt|cp|svd|tucker2)["']""")
    allowed = {("rene_onnx/decompose/__init__.py", 'METHOD_MODULES = ("tt", "cp", "svd", "tucker2")'),
               ("rene_onnx/engine/layers.py", 'methods = ("tt", "cp")')}  # the classes LowRankConv builds
    found = []
    for top in ("rene_onnx", "passes"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for line in path.read_text().splitlines():
                if pattern.search(line) and (str(path.relative_to(ROOT)), line.strip()) not in allowed:
                    found.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not found, "\n".join(found)


class BetterTT(TT):
    """A toy auto candidate registered after Tucker-2: TT-SVD under another name (so better than HOSVD)."""

    name = "better"


def test_auto_picks_by_error_at_equal_cost_ties_go_to_the_earlier_method():
    g = np.random.default_rng(0)
    w = g.standard_normal((16, 12, 3, 3)).astype(np.float32) * np.linspace(2, 0.2, 16)[:, None, None, None]
    shape = LayerShape(16, 12, (3, 3))
    assert auto_methods(shape) == ("tt", "tucker2") and auto_methods(LayerShape(16, 12, (1, 1))) == ("svd",)
    method, ranks, errors = pick_by_error(shape, w, "tt", (4, 4), auto_methods(shape))
    assert method == "tt" and ranks == (4, 4) and errors["tt"] <= errors["tucker2"]
    # at full rank both are exact: a tie, which the earlier method (tt) keeps
    method, _, errors = pick_by_error(shape, w, "tt", (16, 12), auto_methods(shape))
    assert method == "tt" and max(errors.values()) < 1e-10
    # a later method wins a layer only by being more accurate at no higher cost
    method, ranks, errors = pick_by_error(shape, w, "tucker2", (4, 4), ("tucker2", "tt"))
    assert method == "tt" and ranks == (4, 4) and errors["tt"] < errors["tucker2"]
    registry.register(BetterTT())
    try:
        assert auto_methods(shape) == ("tt", "tucker2", "better")
        method, _, _ = pick_by_error(shape, w, "tucker2", (4, 4), ("tucker2", "better"))
        assert method == "better"
        # a candidate with another cost function is compared at ranks that cost no more
        method, ranks, errors = pick_by_error(shape, w, "tt", (4, 4), ("tt", "svd"))
        assert R.factorized_params("svd", shape, ranks if method == "svd" else (1,)) <= \
            R.factorized_params("tt", shape, (4, 4))
        assert set(errors) == {"tt", "svd"}
    finally:
        registry.unregister("better")


class SVDForConvs(SVD):
    """A toy auto candidate for k x k convs with another cost function (SVD of the unfolded conv)."""

    name = "svdk"

    def auto_candidate(self, shape) -> bool:
        return not shape.is_matrix


def test_auto_weighs_every_candidate_at_no_higher_cost():
    g = np.random.default_rng(1)
    shape = LayerShape(32, 8, (3, 3))
    w = g.standard_normal((32, 8, 3, 3)).astype(np.float32)
    registry.register(SVDForConvs())
    try:
        cands = auto_methods(shape)
        assert cands[0] == "tt" and cands[-1] == "svdk"
        for ranks in ((2, 2), (6, 6), (8, 8)):
            method, picked, errors = pick_by_error(shape, w, "tt", ranks, cands)
            assert set(errors) == set(cands) and errors[method] == min(errors.values())
            for key in (R.factorized_params, R.factorized_macs):
                assert key(method, shape, picked) <= key("tt", shape, ranks)
        # planners without weights take the first candidate
        assert plan_from_fraction({"c": shape}, "auto", 0.5).layers["c"].method == "tt"
    finally:
        registry.unregister("svdk")
