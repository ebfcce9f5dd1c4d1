"""Activation-aware (whitened) truncated SVD: output error, exactness at full rank, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from rene_onnx.decompose.svd import SVDTruncations, WhitenedSVDTruncations, whitening_factor


def _low_dim_inputs(n_in=32, dim=4, n=800, noise=1e-3, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((n_in, dim))
    return (basis @ rng.standard_normal((dim, n))).T + noise * rng.standard_normal((n, n_in))


def _out_err(w, u, v, x):
    return np.linalg.norm((w - u @ v) @ x.T) ** 2 / np.linalg.norm(w @ x.T) ** 2


def test_whitened_truncation_beats_plain_svd_on_low_dim_inputs_and_is_exact_at_full_rank():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((24, 32)).astype(np.float32)
    x = _low_dim_inputs()
    c = x.T @ x / len(x)
    wt, plain = WhitenedSVDTruncations(w, c, eps=1e-6), SVDTruncations(w)
    for r in (4, 6):
        u, v = wt.factors(r)
        up, vp = plain.factors(r)
        assert u.dtype == np.float32 and u.shape == (24, r) and v.shape == (r, 32)
        e_w, e_p = _out_err(w, u, v, x), _out_err(w, up, vp, x)
        assert e_w < 1e-3 and e_p > 0.1, (e_w, e_p)  # the inputs span 4 directions: rank 4 is (almost) exact
        # the error curve is the relative output error (of the damped moment)
        assert wt.errors[r] / wt.errors[0] == pytest.approx(e_w, rel=0.2, abs=1e-5)
    u, v = wt.factors(wt.max_rank)
    np.testing.assert_allclose(u.astype(np.float64) @ v, w, atol=1e-4)
    assert wt.errors[wt.max_rank] == 0.0 and np.all(np.diff(wt.errors) <= 1e-9)


def test_whitening_with_identity_moment_is_plain_svd():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((10, 12))
    wt, plain = WhitenedSVDTruncations(w, np.eye(12), eps=1e-9), SVDTruncations(w)
    np.testing.assert_allclose(wt.errors / wt.errors[0], plain.errors / plain.errors[0], atol=1e-8)
    u, v = wt.factors(5)
    up, vp = plain.factors(5)
    np.testing.assert_allclose(u @ v, up @ vp, atol=1e-7)


def test_whitening_bad_input():
    with pytest.raises(ValueError, match="square"):
        whitening_factor(np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        whitening_factor(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="zero"):
        whitening_factor(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="eps"):
        whitening_factor(np.eye(3), eps=0.0)
    with pytest.raises(ValueError, match="does not match"):
        WhitenedSVDTruncations(np.ones((4, 5)), np.eye(6))
    # rank-deficient moment: the damping keeps the Cholesky factor finite
    lower = whitening_factor(np.ones((4, 4)))
    assert np.all(np.isfinite(lower)) and np.all(np.diag(lower) > 0)
