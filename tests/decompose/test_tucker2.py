"""Tucker-2 (HOSVD) math: exact recovery at known ranks, the HOSVD factors, caps, counts, and how it compares to TT."""
from __future__ import annotations

import numpy as np
import pytest

from rene_onnx.decompose import TTTruncations, decompose, ranks as R, reconstruct, registry
from rene_onnx.decompose.grouped import infer_groups, split_groups
from rene_onnx.decompose.ranks import LayerShape
from rene_onnx.decompose.tucker2 import hosvd


def planted(cout, cin, kernel, r_out, r_in, seed=0, dtype=np.float64):
    """A weight of multilinear rank (r_out, r_in) in its channel modes: G x_0 U x_1 V."""
    g = np.random.default_rng(seed)
    k = int(np.prod(kernel))
    w = np.einsum("oa,abk,ib->oik", g.standard_normal((cout, r_out)), g.standard_normal((r_out, r_in, k)),
                  g.standard_normal((cin, r_in)))
    return w.reshape((cout, cin, *kernel)).astype(dtype)


def rel2(a, b):
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.sum(d * d) / np.sum(np.asarray(b, np.float64) ** 2))


@pytest.mark.parametrize("cout,cin,kernel,ranks", [
    (12, 10, (3, 3), (4, 3)), (8, 16, (3, 3), (2, 6)), (10, 6, (5,), (3, 3)), (7, 5, (3, 5), (5, 1)),
])
def test_exact_recovery_of_a_weight_with_known_tucker2_ranks(cout, cin, kernel, ranks):
    w = planted(cout, cin, kernel, *ranks)
    f = decompose("tucker2", w, ranks)
    assert f["first"].shape == (ranks[1], cin, *(1,) * len(kernel))
    assert f["core"].shape == (ranks[0], ranks[1], *kernel)
    assert f["last"].shape == (cout, ranks[0], *(1,) * len(kernel))
    assert all(a.dtype == np.float64 for a in f.values())
    assert rel2(reconstruct("tucker2", f, w.shape), w) < 1e-20
    # one rank short in either mode is not exact
    assert rel2(reconstruct("tucker2", decompose("tucker2", w, (ranks[0] - 1 or 1, ranks[1])), w.shape), w) > 1e-6 \
        or ranks[0] == 1
    if ranks[1] > 1:
        assert rel2(reconstruct("tucker2", decompose("tucker2", w, (ranks[0], ranks[1] - 1)), w.shape), w) > 1e-6


def test_hosvd_is_orthonormal_bases_and_the_projected_core():
    g = np.random.default_rng(1)
    w = g.standard_normal((16, 12, 3, 3))
    f = hosvd(w, (6, 5))
    u_out, u_in = f["last"].reshape(16, 6), f["first"].reshape(5, 12).T
    np.testing.assert_allclose(u_out.T @ u_out, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(u_in.T @ u_in, np.eye(5), atol=1e-12)
    # the bases are the leading left singular vectors of the two unfoldings (up to sign)
    lo = np.linalg.svd(w.reshape(16, -1))[0][:, :6]
    li = np.linalg.svd(w.transpose(1, 0, 2, 3).reshape(12, -1))[0][:, :5]
    np.testing.assert_allclose(np.abs(np.sum(lo * u_out, 0)), 1, atol=1e-9)
    np.testing.assert_allclose(np.abs(np.sum(li * u_in, 0)), 1, atol=1e-9)
    core = np.einsum("oa,oikl,ib->abkl", u_out, w, u_in)
    np.testing.assert_allclose(f["core"], core, atol=1e-12)
    # deterministic (never random): the same factors twice, and the same the search's truncations give
    again = hosvd(w, (6, 5))
    assert all(np.array_equal(f[k], again[k]) for k in f)
    tr = TTTruncations(w)
    assert rel2(reconstruct("tucker2", f, w.shape), w) == pytest.approx(tr.error(6, 5) / np.sum(w * w), rel=1e-9)
    np.testing.assert_allclose(reconstruct("tucker2", f, w.shape), reconstruct("tt", tr.factors(6, 5), w.shape),
                               atol=1e-10)


def test_float32_in_float32_out_and_bad_ranks():
    w = planted(8, 6, (3, 3), 3, 2, dtype=np.float32)
    f = decompose("tucker2", w, 3)  # one rank means r_out = r_in
    assert f["core"].shape == (3, 3, 3, 3) and all(a.dtype == np.float32 for a in f.values())
    with pytest.raises(ValueError, match="r_in"):
        hosvd(w, (3, 7))
    with pytest.raises(ValueError, match="r_out"):
        hosvd(w, (0, 2))
    with pytest.raises(ValueError, match="conv weight"):
        hosvd(np.ones((4, 4), np.float32), 2)
    with pytest.raises(ValueError, match="does not apply"):
        decompose("tucker2", np.ones((4, 4, 1, 1), np.float32), 2)
    with pytest.raises(ValueError, match="unexpected options"):
        decompose("tucker2", w, 2, seed=0)


def test_tt_svd_is_never_worse_than_hosvd_at_equal_ranks():
    """The honest comparison: same chain, same counts; TT-SVD's second basis is optimal given the first."""
    g = np.random.default_rng(2)
    for trial in range(6):
        w = g.standard_normal((12, 10, 3, 3)) * np.linspace(2, 0.1, 12)[:, None, None, None]
        shape = LayerShape(12, 10, (3, 3))
        for ranks in ((3, 3), (6, 4), (2, 8), (12, 10)):
            tt = rel2(reconstruct("tt", decompose("tt", w, ranks), w.shape), w)
            tk = rel2(reconstruct("tucker2", decompose("tucker2", w, ranks), w.shape), w)
            assert tt <= tk * (1 + 1e-9) + 1e-15
            assert R.factorized_params("tt", shape, ranks) == R.factorized_params("tucker2", shape, ranks)
            assert R.factorized_macs("tt", shape, ranks) == R.factorized_macs("tucker2", shape, ranks)
    assert tk < 1e-20 and tt < 1e-20  # full rank: both exact


def test_caps_counts_and_break_even():
    s = LayerShape(64, 3, (3, 3), in_positions=1024, out_positions=1024)  # a stem conv
    assert R.check_ranks("tucker2", s, 1000) == (27, 3)  # r_in <= Cin, r_out <= min(Cout, Cin*K)
    assert R.check_ranks("tucker2", s, (40, 1)) == (9, 1)  # r_out <= r_in * K: more is never useful
    assert R.check_ranks("tucker2", s, (1, 3)) == (1, 3)
    assert R.max_rank("tucker2", s) == 3 and R.n_ranks("tucker2") == 2
    s = LayerShape(32, 16, (3, 3), in_positions=100, out_positions=25)
    assert R.check_ranks("tucker2", s, 8) == (8, 8)
    assert R.factorized_params("tucker2", s, (5, 4)) == 4 * 16 + 5 * 4 * 9 + 32 * 5 + 32
    assert R.factorized_macs("tucker2", s, (5, 4)) == 4 * 16 * 100 + (5 * 4 * 9 + 32 * 5) * 25
    assert R.break_even_rank("tucker2", s) == R.break_even_rank("tt", s) > 0
    assert R.round_ranks("tucker2", s, (5, 3), 4) == (4, 4)
    assert R.supported_methods(LayerShape(8, 8, (1, 1))) == ("svd",)
    assert "tucker2" in R.supported_methods(s)


def test_per_group():
    g = np.random.default_rng(3)
    blocks = [planted(4, 3, (3, 3), 2, 2, seed=j) for j in range(3)]
    w = np.concatenate(blocks, 0)  # Conv2d(9, 12, 3, groups=3): per-group weights (4, 3, 3, 3)
    f = decompose("tucker2", w, (2, 2), groups=3)
    assert f["first"].shape == (6, 3, 1, 1) and f["core"].shape == (6, 2, 3, 3) and f["last"].shape == (12, 2, 1, 1)
    assert infer_groups("tucker2", f) == 3 and registry.get("tucker2").ranks_of(f, 3) == (2, 2)
    assert rel2(reconstruct("tucker2", f, w.shape, groups=3), w) < 1e-20
    noisy = w + 0.1 * g.standard_normal(w.shape)
    stacked = decompose("tucker2", noisy, (2, 1), groups=3)
    for j, wj in enumerate(split_groups(noisy, 3)):  # every group's block is that group's own HOSVD
        own = decompose("tucker2", wj, (2, 1))
        for k, a in own.items():
            n = a.shape[0]
            np.testing.assert_allclose(stacked[k][j * n:(j + 1) * n], a, atol=1e-12)
    s = LayerShape(12, 9, (3, 3), groups=3)
    assert R.check_ranks("tucker2", s, 100) == (4, 3)  # per-group caps
    assert R.factorized_params("tucker2", s, (2, 2)) == 2 * 9 + 3 * 2 * 2 * 9 + 12 * 2 + 12
