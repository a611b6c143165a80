"""The Taylor series about c = 1 for raw-input kernels (meanfield.ntk.taylor, issue 14).

References are independent of the library: mpmath derivatives, and a tensor
Gauss-Legendre rule per pair with the Cholesky factor formed from c directly (no
cancellation as c -> 1).
"""

from __future__ import annotations

import dataclasses
import math

import mpmath as mp
import numpy as np
import pytest

import meanfield as mf
from meanfield import get_activation
from meanfield.ntk import taylor
from meanfield.ntk.recursion import Block, Recursion

from . import reference as ref


def _sp(x):
    return np.logaddexp(0.0, x)


def _sig(x):
    return np.exp(-np.logaddexp(0.0, -x))


@pytest.mark.parametrize("name", ["softplus", "sigmoid"])
def test_closed_form_derivatives_match_mpmath(name):
    mp.mp.dps = 40
    f = (lambda x: mp.log(1 + mp.exp(x))) if name == "softplus" else (lambda x: 1 / (1 + mp.exp(-x)))
    xs = np.array([-40.0, -6.0, -0.7, 0.0, 0.3, 2.5, 9.0, 40.0])
    got = get_activation(name).derivatives(xs, 17)
    for j, x in enumerate(xs):
        for k in range(18):
            want = float(mp.diff(f, mp.mpf(float(x)), k))
            # Scale: the size of phi^(k) near 0 (~ k! / pi^(k+1)); far out the value itself.
            scale = max(abs(want), math.factorial(k) / math.pi ** (k + 1) * math.exp(-abs(x)))
            assert abs(got[k, j] - want) <= 1e-12 * scale, (k, x, got[k, j], want)


def _gl_pair(q1, q2, c, n=900):
    """E softplus(u) softplus(v), E sigma(u) sigma(v), (u, v) ~ N(0, [[q1, s], [s, q2]])."""
    z, w = ref.gauss_legendre_normal(n)
    u = math.sqrt(q1) * z[:, None]
    v = math.sqrt(q2) * (c * z[:, None] + math.sqrt((1.0 - c) * (1.0 + c)) * z[None, :])
    W = np.outer(w, w)
    return float(np.sum(W * _sp(u) * _sp(v))), float(np.sum(W * _sig(u) * _sig(v)))


def _two_point(act, q1, q2, c):
    """One layer of the recursion at sw2 = 1, sb2 = 0 on two inputs: (D, Dp, recursion)."""
    s12 = c * math.sqrt(q1 * q2)
    sig1 = np.array([[q1, s12], [s12, q2]])
    idx = np.arange(2)
    rec = Recursion(act, 1.0, 0.0, np.array([q1, q2]), False, [Block(idx, idx, True, sig1, None)])
    S = np.empty((2, 2, 2))
    T = np.empty((2, 2, 2))
    rec.compute(2, [(S, T)])
    D = S[1, 0, 1]
    return D, (T[1, 0, 1] - D) / s12, rec


@pytest.mark.parametrize("q1", [4.0, 25.0])
@pytest.mark.parametrize("one_minus_c", [1e-4, 1e-6, 1e-9, 0.0])
def test_taylor_pairs_match_independent_rule(q1, one_minus_c):
    q2 = 1.13 * q1
    c = 1.0 - one_minus_c
    D, Dp, rec = _two_point(get_activation("softplus"), q1, q2, c)
    assert rec.fallback_pairs == 0
    if q1 > 10.0:  # past the Hermite series' reach: the path under test
        assert rec.taylor_pairs == 1
    Dr, Dpr = _gl_pair(q1, q2, c)
    assert abs(D - Dr) <= 1e-12 * Dr, (D, Dr)
    assert abs(Dp - Dpr) <= 1e-12 * Dpr, (Dp, Dpr)


def test_without_derivatives_the_exact_rule_runs_and_agrees():
    # The same pairs with the derivatives removed take the exact 2-D rule (the code before
    # the Taylor path): the two must agree to the accuracy target.
    sp = get_activation("softplus")
    bare = dataclasses.replace(sp, derivatives=None)
    for q1, omc in ((9.0, 1e-4), (20.0, 1e-6)):
        D, Dp, rec = _two_point(sp, q1, 1.1 * q1, 1.0 - omc)
        D0, Dp0, rec0 = _two_point(bare, q1, 1.1 * q1, 1.0 - omc)
        assert rec.taylor_pairs == 1 and rec0.taylor_pairs == 0 and rec0.fallback_pairs == 1
        assert abs(D - D0) <= 1e-12 * D0 and abs(Dp - Dp0) <= 1e-12 * Dp0


def test_no_table_without_derivatives_or_with_zero_variance():
    q = np.array([1.0, 2.0])
    F = np.array([0.5, 1.0])
    assert taylor.build_table(get_activation("tanh"), q, F, F).size == 0
    assert taylor.build_table(get_activation("softplus"), np.array([0.0, 1.0]), F, F).size == 0
    assert taylor.build_table(get_activation("softplus"), q, F, F).size > 0


def test_row_refuses_pairs_whose_bound_fails():
    # A table whose interpolant errors are large, or pairs far from c = 1: no order is
    # accepted and the caller's exact rule runs (kt = -1).
    sp = get_activation("softplus")
    q = np.array([9.0, 9.5, 10.0])
    F = np.array([4.6, 4.85, 5.1])
    G = np.array([0.38, 0.38, 0.39])
    tab = taylor.build_table(sp, q, F, G)
    km, M = taylor.table_dims(tab)
    U = np.empty((km + 1, M, 3))
    T = np.empty((M, 3))
    sd = np.empty((km + 1, 3))
    sp_ = np.empty((km + 1, 3))
    taylor.point_data(tab, q, np.stack([F, G], axis=1), U, T, sd, sp_)
    h = taylor.HEAD
    eD = tab[h:h + km + 1] / tab[4]
    eP = tab[h + 1:h + km + 2] / tab[5]

    def kt_of(x, eD, eP):
        m = x.size
        kt = np.empty(m, dtype=np.int64)
        wk = np.zeros((8, m))
        taylor.row(km, M, U[:, :, 0], sd[:, 0], sp_[:, 0], T[:, 1:], sd[:, 1:], sp_[:, 1:],
                   eD, eP, x, np.ones(m, dtype=np.bool_), kt, *wk[:8])
        return kt

    x = np.array([-1e-4, -3.0])
    kt = kt_of(x, eD, eP)
    assert kt[0] >= 1 and kt[1] == -1
    assert np.all(kt_of(x, eD + 1e-12, eP) == -1)


def _deep_inputs(seed, n=40, d=30):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.85, 1.15, size=(n, 1))
    X[3] = 1.07 * X[10] + 1e-9 * rng.standard_normal(d)  # c^1 ~ 1 - 1e-19, norms differ
    return X


def test_store_equals_kernels_bit_for_bit(tmp_path):
    # The Taylor table travels in the layer's coef1 vector: the block-by-block store
    # (restricted layer tables) gives the very same values as the whole kernel.
    X = _deep_inputs(1, n=24)
    ref_ds = mf.kernels(X, "softplus", 2.0, 0.05, 14)
    assert ref_ds.attrs["pairs_exact_fallback"] == 0
    ds = mf.kernels_to_store(X, "softplus", 2.0, 0.05, 14, tmp_path / "k.zarr", block=7,
                             workers=1, progress=False)
    np.testing.assert_array_equal(ds.nngp.values, ref_ds.nngp.values)
    np.testing.assert_array_equal(ds.ntk.values, ref_ds.ntk.values)


def test_deep_taylor_kernels_do_not_depend_on_tiling():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((150, 20)) * rng.uniform(0.85, 1.15, size=(150, 1))
    full = mf.kernels(X, "softplus", 2.0, 0.05, 30)
    # the Taylor path carries the deep layers (a few hundred pairs of the layers where
    # neither series reaches, of 3e5 pair-layers, take the exact rule)
    assert "Taylor" in full.attrs["method"]
    assert full.attrs["pairs_exact_fallback"] < 1e-2 * 150 * 149 / 2 * 29
    perm = rng.permutation(150)
    fullp = mf.kernels(X[perm], "softplus", 2.0, 0.05, 30)
    cross = mf.kernels(X[:90], "softplus", 2.0, 0.05, 30, X2=X[90:])
    for v in ("nngp", "ntk"):
        F = full[v].values
        atol = 1e-14 * np.max(np.abs(F))
        np.testing.assert_allclose(fullp[v].values, F[:, perm][:, :, perm], rtol=1e-13, atol=atol)
        np.testing.assert_allclose(cross[v].values, F[:, 90:, :90], rtol=1e-13, atol=atol)


def _softplus_table(q):
    sp = get_activation("softplus")
    FG = np.empty((q.size, 2))
    from meanfield.core.gaussian import hermite
    hermite.exact_moments(sp.record, q, FG)
    return taylor.build_table(sp, q, FG[:, 0], FG[:, 1]), FG


def test_covers_is_a_sufficient_condition_for_every_pair():
    # covers(tab, q, FG, X): every pair of these inputs with |x| <= X meets the bound of
    # row() at some order.  Checked on all pairs at |x| = X (the worst case: the bound
    # grows with |x|), and the condition must fail for |x| large enough.
    q = np.linspace(9.0, 10.0, 12)
    tab, FG = _softplus_table(q)
    km, M = taylor.table_dims(tab)
    n = q.size
    U = np.empty((km + 1, M, n))
    T = np.empty((M, n))
    sd = np.empty((km + 1, n))
    sp_ = np.empty((km + 1, n))
    taylor.point_data(tab, q, FG, U, T, sd, sp_)
    h = taylor.HEAD
    eD = tab[h:h + km + 1] / tab[4]
    eP = tab[h + 1:h + km + 2] / tab[5]
    reach = [X for X in (1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.3, 1.0, 3.0) if taylor.covers(tab, q, FG, X)]
    assert 1e-4 in reach and 3.0 not in reach
    X = max(reach)
    for i in range(n):
        x = np.full(n - 1, -X)
        kt = np.empty(n - 1, dtype=np.int64)
        wk = np.zeros((8, n - 1))
        cols = [j for j in range(n) if j != i]
        taylor.row(km, M, U[:, :, i], sd[:, i], sp_[:, i], T[:, cols], sd[:, cols],
                   sp_[:, cols], eD, eP, x, np.ones(n - 1, dtype=np.bool_), kt, *wk)
        assert np.all(kt >= 1), (i, X, kt)


def test_layers_taylor_takes_whole_skip_hermite_and_values_are_unchanged():
    # Softplus at (2, 0.05) is unbounded: past depth ~9 every pair is near c = 1 and the
    # Taylor table takes them all, so those layers compute no Hermite coefficients.  The
    # kernel must be the same bit for bit as with the coefficients at every layer (each
    # pair's method depends on the pair alone), in one block and through iterate().
    from meanfield.ntk import recursion as R
    rng = np.random.default_rng(11)
    X = rng.standard_normal((60, 30)) * rng.uniform(0.85, 1.15, size=(60, 1))
    idx = np.arange(60)
    act = get_activation("softplus")
    out = []
    for lazy in (True, False):
        rec = R.setup(act, 2.0, 0.05, X, [(idx, idx, True)])
        rec.layer_major = lazy
        S = np.empty((30, 60, 60))
        T = np.empty((30, 60, 60))
        rec.compute(30, [(S, T)])
        out.append((S, T, rec.hermite_skipped, rec.fallback_pairs, rec.taylor_pairs))
    assert out[0][2] >= 15 and out[1][2] == 0 and out[0][3:] == out[1][3:]
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    rec = R.setup(act, 2.0, 0.05, X, [(idx, idx, True)])
    for _ in rec.iterate(30):
        pass
    assert rec.hermite_skipped == out[0][2]
    np.testing.assert_array_equal(rec.blocks[0].sig, out[0][0][-1])
    np.testing.assert_array_equal(rec.blocks[0].th, out[0][1][-1])
