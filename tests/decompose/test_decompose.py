"""Decomposition math: exact recovery of planted low-rank weights, truncation tables, dispatch."""
import numpy as np
import pytest

from rene_onnx.decompose import (
    CPTruncations,
    SVDTruncations,
    TTTruncations,
    cp_als,
    cp_reconstruct,
    decompose,
    reconstruct,
    svd_factors,
    tt_reconstruct,
    tt_svd,
)
from rene_onnx.plan import LayerFactors


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _planted_tt(rng, cout, cin, kernel, r1, r2):
    first = rng.standard_normal((r2, cin) + (1,) * len(kernel))
    core = rng.standard_normal((r1, r2) + tuple(kernel))
    last = rng.standard_normal((cout, r1) + (1,) * len(kernel))
    return tt_reconstruct(first, core, last)


def _planted_cp(rng, cout, cin, kernel, r):
    a, b, c = (rng.standard_normal((n, r)) for n in (cout, cin, int(np.prod(kernel))))
    return np.einsum("or,ir,kr->oik", a, b, c).reshape((cout, cin) + tuple(kernel))


# ---------------------------------------------------------------- SVD


def test_svd_recovers_planted_rank():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((30, 5)) @ rng.standard_normal((5, 40))
    u, v = svd_factors(w, 5)
    assert u.shape == (30, 5) and v.shape == (5, 40)
    assert _rel(u @ v, w) < 1e-10
    # sqrt(s) on both sides: the factors have equal row / column norms
    np.testing.assert_allclose(np.linalg.norm(u, axis=0), np.linalg.norm(v, axis=1), rtol=1e-10)
    assert _rel(svd_factors(w, 4)[0] @ svd_factors(w, 4)[1], w) > 1e-3


def test_svd_truncations_errors_and_nesting():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((20, 12)).astype(np.float32)
    t = SVDTruncations(w)
    assert t.max_rank == 12 and t.errors.shape == (13,)
    np.testing.assert_allclose(t.errors[0], np.sum(w.astype(np.float64) ** 2), rtol=1e-6)
    assert t.errors[-1] < 1e-8 and np.all(np.diff(t.errors) <= 0)
    for r in (1, 5, 11):
        u, v = t.factors(r)
        assert u.dtype == np.float32 and v.dtype == np.float32
        brute = np.sum((w.astype(np.float64) - u.astype(np.float64) @ v) ** 2)
        np.testing.assert_allclose(t.error(r), brute, rtol=1e-4)
    np.testing.assert_allclose(t.error(np.array([1, 5])), t.errors[[1, 5]])
    u3, v3 = t.factors(3)
    u5, v5 = t.factors(5)
    np.testing.assert_array_equal(u3, u5[:, :3])
    np.testing.assert_array_equal(v3, v5[:3])


@pytest.mark.parametrize("rank", [0, 13])
def test_svd_bad_rank(rank):
    with pytest.raises(ValueError, match="rank"):
        svd_factors(np.ones((20, 12)), rank)


# ---------------------------------------------------------------- TT


@pytest.mark.parametrize("kernel", [(3, 3), (5,), (3, 1)])
def test_tt_svd_recovers_planted_tt(kernel):
    rng = np.random.default_rng(2)
    cout, cin, r1, r2 = 16, 12, 5, 4
    w = _planted_tt(rng, cout, cin, kernel, r1, r2)
    f = tt_svd(w.astype(np.float32), (r1, r2))
    ones = (1,) * len(kernel)
    assert f["first"].shape == (r2, cin) + ones
    assert f["core"].shape == (r1, r2) + kernel
    assert f["last"].shape == (cout, r1) + ones
    assert all(a.dtype == np.float32 for a in f.values())
    assert _rel(tt_reconstruct(**f), w) < 1e-5
    f64 = tt_svd(w, (r1, r2))
    assert _rel(tt_reconstruct(**f64), w) < 1e-12
    # one rank less in either mode cannot be exact
    assert _rel(tt_reconstruct(**tt_svd(w, (r1 - 1, r2))), w) > 1e-3
    assert _rel(tt_reconstruct(**tt_svd(w, (r1, r2 - 1))), w) > 1e-3


def test_tt_svd_bad_ranks():
    w = np.ones((8, 4, 3, 3))
    with pytest.raises(ValueError, match="r1"):
        tt_svd(w, (9, 2))
    with pytest.raises(ValueError, match="r2"):
        tt_svd(w, (8, 5))
    with pytest.raises(ValueError, match="conv weight"):
        tt_svd(np.ones((8, 4)), (2, 2))


def test_tt_truncations_exact_for_planted_ranks():
    rng = np.random.default_rng(3)
    w = _planted_tt(rng, 24, 16, (3, 3), 6, 5)
    t = TTTruncations(w.astype(np.float32))
    f = t.factors(6, 5)
    assert f["core"].shape == (6, 5, 3, 3) and f["first"].dtype == np.float32
    assert _rel(tt_reconstruct(**f), w) < 1e-5
    assert t.error(6, 5) / np.sum(w**2) < 1e-10
    assert t.error(5, 5) / np.sum(w**2) > 1e-4


def test_tt_truncations_error_matches_brute_force_and_is_nested():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((12, 10, 3, 3))
    t = TTTruncations(w)
    assert t.max_ranks == (12, 10)
    np.testing.assert_allclose(t.error(0, 0), np.sum(w**2))
    for r1, r2 in [(1, 1), (4, 3), (12, 10), (7, 10)]:
        brute = np.sum((w - tt_reconstruct(**t.factors(r1, r2))) ** 2)
        np.testing.assert_allclose(t.error(r1, r2), brute, rtol=1e-8, atol=1e-8)
    errs = t.error(np.arange(1, 11))  # r1 = r2 = 1..10, vectorized
    assert errs.shape == (10,) and np.all(np.diff(errs) < 0)
    a, b = t.factors(3, 2), t.factors(5, 4)
    np.testing.assert_array_equal(a["last"], b["last"][:, :3])
    np.testing.assert_array_equal(a["first"], b["first"][:2])
    np.testing.assert_array_equal(a["core"], b["core"][:3, :2])
    with pytest.raises(ValueError, match="TT ranks"):
        t.factors(13, 2)


# ---------------------------------------------------------------- CP


def test_cp_recovers_planted_cp():
    rng = np.random.default_rng(5)
    w = _planted_cp(rng, 12, 10, (3, 3), 4)
    f = cp_als(w.astype(np.float32), 4, seed=0)
    assert f["first"].shape == (4, 10, 1, 1)
    assert f["core"].shape == (4, 1, 3, 3)
    assert f["last"].shape == (12, 4, 1, 1)
    assert all(a.dtype == np.float32 for a in f.values())
    assert _rel(cp_reconstruct(**f), w) < 1e-3
    # first / core rows are unit norm (weights folded into last), strongest component first
    np.testing.assert_allclose(np.linalg.norm(f["first"].reshape(4, -1), axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f["core"].reshape(4, -1), axis=1), 1, rtol=1e-5)
    strength = np.linalg.norm(f["last"].reshape(12, 4), axis=0)
    assert np.all(np.diff(strength) <= 0)


def test_cp_conv1d_and_seed_determinism():
    rng = np.random.default_rng(6)
    w = _planted_cp(rng, 8, 6, (5,), 3)
    f1 = cp_als(w, 3, seed=1)
    f2 = cp_als(w, 3, seed=1)
    assert f1["core"].shape == (3, 1, 5)
    assert _rel(cp_reconstruct(**f1), w) < 1e-3
    for k in f1:
        np.testing.assert_array_equal(f1[k], f2[k])


def test_cp_warm_start():
    rng = np.random.default_rng(7)
    w = _planted_cp(rng, 10, 8, (3, 3), 3)
    exact = cp_als(w, 3)
    # from a converged solution, one sweep stays exact
    f = cp_als(w, 3, init=exact, n_iter_max=1)
    assert _rel(cp_reconstruct(**f), w) < 1e-6
    # warm start at a lower rank takes the strongest components of a larger one
    t = CPTruncations(w, 5, seed=0, refine_iter=20)
    assert t.factors(2)["first"].shape == (2, 8, 1, 1)
    assert t.error(3) / np.sum(w**2) < 1e-3
    assert t.error(1) > t.error(2) > t.error(3)
    with pytest.raises(ValueError, match="fewer than rank"):
        cp_als(w, 4, init=exact)


# ---------------------------------------------------------------- dispatch


def test_decompose_dispatch_shapes_dtypes_and_roundtrip():
    rng = np.random.default_rng(8)
    wc = _planted_tt(rng, 16, 8, (3, 3), 6, 4).astype(np.float32)
    for method, ranks, keys in [("tt", (6, 4), ("first", "core", "last")), ("svd", 6, ("U", "V"))]:
        arrays = decompose(method, wc, ranks)
        assert all(a.dtype == np.float32 for a in arrays.values())
        LayerFactors("x", method, (1,), arrays)  # contract keys present
        assert set(arrays) == set(keys)
        assert reconstruct(method, arrays, wc.shape).shape == wc.shape
    svd = decompose("svd", wc, 6)
    assert svd["U"].shape == (16, 6) and svd["V"].shape == (6, 8 * 9)
    assert _rel(reconstruct("tt", decompose("tt", wc, (6, 4)), wc.shape), wc) < 1e-5
    # TT rank 1 value means r1 = r2; ranks above the cap are capped (check_ranks)
    assert decompose("tt", wc, 3)["core"].shape == (3, 3, 3, 3)
    assert decompose("tt", wc, (100, 100))["core"].shape == (16, 8, 3, 3)
    wl = rng.standard_normal((7, 9)).astype(np.float32)
    a = decompose("svd", wl, 7)
    assert _rel(reconstruct("svd", a, wl.shape), wl) < 1e-5
    cp = decompose("cp", _planted_cp(rng, 6, 5, (3, 3), 2), 2, seed=0, n_iter_max=50)
    assert cp["core"].shape == (2, 1, 3, 3) and cp["core"].dtype == np.float64


def test_decompose_rejects_bad_input():
    w = np.ones((8, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="unknown method"):
        decompose("tucker", w, 2)
    with pytest.raises(ValueError, match="does not apply"):
        decompose("tt", np.ones((8, 4, 1, 1), np.float32), 2)
    with pytest.raises(ValueError, match="positive"):
        decompose("svd", w, 0)
    with pytest.raises(ValueError, match="unexpected options"):
        decompose("svd", w, 2, seed=1)
    with pytest.raises(ValueError, match="floating"):
        decompose("svd", np.ones((4, 4), np.int64), 2)
    with pytest.raises(ValueError, match="does not fit"):
        reconstruct("svd", {"U": np.ones((4, 2)), "V": np.ones((2, 3))}, (4, 5))
