"""Tests of meanfield.kernels, ntk_metrics, two_point_kernels (NNGP/NTK on a data set; docs/theory.md "Kernels on a data set").

Three tiers: closed forms against a 40-digit mpmath recursion written here; quadrature
activations against an independent NumPy Gauss-Legendre rule in Cholesky coordinates;
invariants (symmetry, PSD, cross-kernel consistency) and the asymptotic claims.
"""

from __future__ import annotations

import argparse
import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from meanfield import analyze, critical_sw2, kernels, ntk_metrics, two_point_kernels
import meanfield as mf
from meanfield.cli.kernel import register as add_kernel_parser

from . import reference as ref


def _sphere(rng, n, d):
    X = rng.standard_normal((n, d))
    return X * np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)


def _unequal(rng, n, d):
    return _sphere(rng, n, d) * np.linspace(0.7, 1.3, n)[:, None]


# --------------------------------------------------------------------------- references
def _mp_recursion(X, sw2, sb2, L, expect):
    """The recursion in 40-digit arithmetic; expect(s11, s22, s12) -> (E phi phi, E phi' phi')."""
    mp.mp.dps = 40
    n, d = X.shape
    S = [[mp.mpf(sw2) * mp.fsum(mp.mpf(a) * mp.mpf(b) for a, b in zip(X[i], X[j])) / d + mp.mpf(sb2)
          for j in range(n)] for i in range(n)]
    T = [row[:] for row in S]
    outS, outT = [S], [T]
    for _ in range(L - 1):
        Sn = [[None] * n for _ in range(n)]
        Tn = [[None] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                D, Dp = expect(S[i][i], S[j][j], S[i][j])
                Sn[i][j] = sw2 * D + sb2
                Tn[i][j] = Sn[i][j] + sw2 * Dp * T[i][j]
        S, T = Sn, Tn
        outS.append(S)
        outT.append(T)
    return np.array(outS, dtype=float), np.array(outT, dtype=float)


def _mp_relu(s11, s22, s12):
    r = mp.sqrt(s11 * s22)
    c = s12 / r
    th = mp.acos(c) if abs(c) < 1 else (mp.mpf(0) if c > 0 else mp.pi)
    return r * (mp.sin(th) + (mp.pi - th) * c) / (2 * mp.pi), (mp.pi - th) / (2 * mp.pi)


def _mp_erf(s11, s22, s12):
    a = (1 + 2 * s11) * (1 + 2 * s22)
    return 2 / mp.pi * mp.asin(2 * s12 / mp.sqrt(a)), 4 / mp.pi / mp.sqrt(a - 4 * s12 ** 2)


_GL_N = 900

_PHIS = {
    "tanh": (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2),
    "gelu": (lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
             lambda x: 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)),
    "silu": (lambda x: x / (1 + np.exp(-x)),
             lambda x: (1 / (1 + np.exp(-x))) * (1 + x * (1 - 1 / (1 + np.exp(-x))))),
}


def _erf(x):
    from scipy.special import erf
    return erf(x)


def _gl_recursion(X, sw2, sb2, L, name):
    """The independent tensor Gauss-Legendre recursion of tests/reference.py."""
    return ref.gl_recursion(X, sw2, sb2, L, *_PHIS[name], _GL_N)


# --------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("act,expect,sw2,sb2", [
    ("relu", _mp_relu, 2.0, 0.0),     # critical
    ("relu", _mp_relu, 1.4, 0.3),     # ordered
    ("erf", _mp_erf, 0.7, 0.1),       # ordered
    ("erf", _mp_erf, 3.0, 0.05),      # chaotic
])
@pytest.mark.parametrize("norms", ["shared", "unequal"])
def test_closed_forms_match_mpmath(act, expect, sw2, sb2, norms):
    rng = np.random.default_rng(7)
    X = (_sphere if norms == "shared" else _unequal)(rng, 5, 6)
    X = np.abs(X)  # positive inputs keep every entry away from 0, where relative error is meaningless
    L = 12
    Sr, Tr = _mp_recursion(X, sw2, sb2, L, expect)
    ds = kernels(X, act, sw2, sb2, L)
    assert (ds.attrs["shared_norm"] == 1) == (norms == "shared")
    np.testing.assert_allclose(ds.nngp.values, Sr, rtol=1e-12, atol=0)
    np.testing.assert_allclose(ds.ntk.values, Tr, rtol=1e-12, atol=0)


def test_relu_near_identical_inputs():
    # 1 - c^1 ~ 1e-12: the carried eps = 1 - c keeps the NTK derivative term accurate.
    rng = np.random.default_rng(1)
    x = _sphere(rng, 1, 8)[0]
    y = x + 1e-6 * rng.standard_normal(8)
    y *= np.linalg.norm(x) / np.linalg.norm(y)
    X = np.array([x, y])
    Sr, Tr = _mp_recursion(X, 2.0, 0.0, 6, _mp_relu)
    ds = kernels(X, "relu", 2.0, 0.0, 6)
    np.testing.assert_allclose(ds.ntk.values, Tr, rtol=1e-12)
    np.testing.assert_allclose(ds.nngp.values, Sr, rtol=1e-12)


# --------------------------------------------------------------------------- quadrature
def _phase_points(name, sb2):
    crit = critical_sw2(name, sb2)
    assert np.isfinite(crit), (name, sb2)
    return [("ordered", 0.7 * crit), ("critical", crit), ("chaotic", 1.6 * crit)]


# gelu and silu have no critical point at small sb2 (chi_1 jumps across 1 there); at
# sb2 = 1 their critical line is sw2 = 2, where q* -> inf.
@pytest.mark.parametrize("name,sb2", [("tanh", 0.05), ("gelu", 1.0), ("silu", 1.0)])
@pytest.mark.parametrize("norms", ["shared", "unequal"])
def test_quadrature_activations_match_independent_rule(name, sb2, norms):
    rng = np.random.default_rng(11)
    X = (_sphere if norms == "shared" else _unequal)(rng, 3, 4)
    L = 3
    for phase, sw2 in _phase_points(name, sb2):
        ds = kernels(X, name, sw2, sb2, L)
        Sr, Tr = _gl_recursion(X, sw2, sb2, L, name)
        for got, want in ((ds.nngp.values, Sr), (ds.ntk.values, Tr)):
            err = np.max(np.abs(got - want)) / np.max(np.abs(want))
            assert err < 1e-9, (name, norms, phase, err)


# --------------------------------------------------------------------------- invariants
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 7), act=st.sampled_from(["relu", "erf", "tanh", "sin"]),
       sw2=st.floats(0.2, 3.0), sb2=st.floats(0.0, 0.5), shared=st.booleans())
def test_symmetric_psd(seed, n, act, sw2, sb2, shared):
    rng = np.random.default_rng(seed)
    X = (_sphere if shared else _unequal)(rng, n, 5)
    ds = kernels(X, act, sw2, sb2, 6)
    for v in (ds.nngp.values, ds.ntk.values):
        np.testing.assert_array_equal(v, np.swapaxes(v, 1, 2))
        for K in v:
            ev = np.linalg.eigvalsh(K)
            assert ev[0] >= -1e-12 * ev[-1]


@pytest.mark.parametrize("act", ["erf", "tanh"])
@pytest.mark.parametrize("shared", [True, False])
def test_cross_kernel_is_block_of_full_kernel(act, shared):
    rng = np.random.default_rng(3)
    X = (_sphere if shared else _unequal)(rng, 6, 4)
    full = kernels(X, act, 1.8, 0.1, 5)
    cross = kernels(X[:4], act, 1.8, 0.1, 5, X2=X[4:])
    assert cross.nngp.dims == ("depth", "i", "j") and cross.nngp.shape == (5, 2, 4)
    np.testing.assert_allclose(cross.nngp.values, full.nngp.values[:, 4:, :4], rtol=1e-13)
    np.testing.assert_allclose(cross.ntk.values, full.ntk.values[:, 4:, :4], rtol=1e-13)


def test_two_point_matches_data_kernel():
    x = np.array([1.2, -0.3, 0.5])
    y = np.array([0.4, 0.9, -0.2])
    y *= np.linalg.norm(x) / np.linalg.norm(y)
    sw2, sb2 = 1.7, 0.2
    ds = kernels(np.array([x, y]), "tanh", sw2, sb2, 6)
    q = sw2 * x @ x / 3 + sb2
    c = (sw2 * x @ y / 3 + sb2) / q
    tp = two_point_kernels("tanh", sw2, sb2, 6, q1=q, q2=q, c=c)
    np.testing.assert_allclose(tp.nngp_12.values, ds.nngp.values[:, 0, 1], rtol=1e-12)
    np.testing.assert_allclose(tp.ntk_12.values, ds.ntk.values[:, 0, 1], rtol=1e-12)
    np.testing.assert_allclose(tp.q1.values, ds.nngp.values[:, 0, 0], rtol=1e-14)


def test_attributes_self_describing():
    ds = kernels(np.eye(3), "relu", 2.0, 0.0, 2)
    for name in list(ds.variables):
        assert "long_name" in ds[name].attrs and "units" in ds[name].attrs, name


def test_two_point_correlation_map_fixed_point():
    # Deep layers: c^l -> c* of the correlation map, q^l -> q* (meanfield.analyze).
    res = analyze("erf", 3.0, 0.05)
    tp = two_point_kernels("erf", 3.0, 0.05, 250, q1=res.q_star, q2=res.q_star, c=0.9)  # xi_c = 6.5
    assert abs(float(tp.correlation[-1]) - res.c_star) < 1e-9
    assert abs(float(tp.q1[-1]) - res.q_star) < 1e-12 * res.q_star


# --------------------------------------------------------------------------- asymptotics
def _data(seed=5, n=10, m=4, d=12):
    rng = np.random.default_rng(seed)
    return _sphere(rng, n, d), rng.standard_normal(n), _sphere(rng, m, d)


def test_condition_number_tends_to_one_when_chaotic():
    X, y, Xt = _data()
    ds = ntk_metrics(X, y, Xt, "erf", 3.0, 0.0, 40)
    assert ds.attrs["phase"] == "chaotic"
    kappa = ds.condition_number.values
    assert kappa[-1] < 1.0 + 1e-3
    assert kappa[9] > 1.01  # it really approaches 1 (not 1 from the start)
    assert np.all(np.diff(kappa[5:]) <= 1e-12)


@pytest.mark.parametrize("act,sw2,sb2", [("erf", 0.7, 0.1), ("tanh", 0.8, 0.05)])
def test_condition_number_growth_rate_is_chi1_when_ordered(act, sw2, sb2):
    # kappa^l ~ chi_1^{-l} / l, so kappa^l / kappa^{l-1} * l/(l-1) -> 1/chi_1.
    X, y, Xt = _data()
    L = 30
    ds = ntk_metrics(X, y, Xt, act, sw2, sb2, L)
    assert ds.attrs["phase"] == "ordered"
    l = L
    ratio = float(ds.condition_ratio[-1]) * l / (l - 1)
    assert ratio == pytest.approx(1.0 / float(ds.chi1), rel=0.02)
    assert ratio == pytest.approx(float(ds.theory_condition_ratio), rel=0.02)


@pytest.mark.parametrize("act,sw2,sb2", [("erf", 3.0, 0.0), ("tanh", 2.5, 0.0)])
def test_mean_predictor_decay_rate_when_chaotic(act, sw2, sb2):
    # |P^l| ~ l (chi_c*/chi_1)^l: the local rate r^l = |dP^l| / |dP^(l-1)| is
    # (chi_c/chi_1) (1 + O(1/l)); correct the leading l/(l-1) factor.
    X, y, Xt = _data()
    L = 30
    ds = ntk_metrics(X, y, Xt, act, sw2, sb2, L)
    assert ds.attrs["phase"] == "chaotic"
    k = L - 2  # last depth with a rate
    l = k + 1
    rate = float(ds.decay_rate[k]) * l / (l + 1)
    theory = float(ds.chi_c) / float(ds.chi1)
    assert float(ds.theory_decay_rate) == pytest.approx(theory)
    assert rate == pytest.approx(theory, rel=0.03)
    assert float(ds.prediction_distance[-1]) < 1e-2 * float(ds.prediction_distance[2])


def test_mean_predictor_approach_is_algebraic_when_ordered():
    # Ordered: Theta^l - const shrinks like chi_1^l, but the predictor depends on its shape,
    # which converges like 1/l: the local rate is 1 - O(1/l), far above chi_1.
    X, y, Xt = _data()
    L = 160
    ds = ntk_metrics(X, y, Xt, "tanh", 1.4, 0.05, L)
    assert ds.attrs["phase"] == "ordered" and not bool(ds.singular.any())
    assert float(ds.theory_decay_rate) == 1.0
    r = ds.decay_rate.values
    k1, k2 = 79, L - 2  # depths 80 and L - 1
    assert r[k2] > float(ds.chi1) + 0.05
    p1, p2 = (1 - r[k1]) * (k1 + 1), (1 - r[k2]) * (k2 + 1)
    assert 0 < p2 and p1 == pytest.approx(p2, rel=0.3)  # 1 - r^l ~ p / l


def test_singular_kernel_is_flagged():
    X, y, Xt = _data()
    X = np.vstack([X, X[:1]])  # a duplicated input makes Theta exactly singular
    y = np.append(y, 0.0)
    ds = ntk_metrics(X, y, Xt, "erf", 1.5, 0.1, 4)
    assert bool(ds.singular.all())
    assert np.all(ds.status.values == 1)
    assert np.all(np.isnan(ds.prediction.values))
    assert np.all(ds.condition_number.values == np.inf)  # never a negative or finite ratio


def test_rank_deficient_first_layer_is_singular_not_negative():
    """n > d: Theta^1 = sw2 X X^T / d + sb2 has rank <= d + 1."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 10))
    ds = ntk_metrics(X, np.sign(X[:, 0]), X[:5], "tanh", 1.5, 0.05, 3)
    assert bool(ds.singular[0]) and ds.condition_number[0] == np.inf
    assert np.all(ds.condition_number.values[~ds.singular.values] >= 1.0)


def test_multi_output_prediction_and_memory_shape():
    X, y, Xt = _data()
    Y = np.stack([y, -2 * y], axis=1)
    ds = ntk_metrics(X, Y, Xt, "relu", 1.5, 0.1, 5)
    assert ds.prediction.dims == ("depth", "test", "output")
    np.testing.assert_allclose(ds.prediction.values[:, :, 1], -2 * ds.prediction.values[:, :, 0],
                               rtol=1e-12, atol=1e-14)
    # The predictor solves against Theta: on the training inputs it reproduces y.
    ds2 = ntk_metrics(X, y, X, "relu", 1.5, 0.1, 5)
    np.testing.assert_allclose(ds2.prediction.values[-1], y, rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------- errors
def test_value_errors_name_the_argument():
    X = np.ones((3, 2))
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        kernels(bad, "relu", 2.0, 0.0, 3)
    with pytest.raises(ValueError, match="X2 has 3 features"):
        kernels(X, "relu", 2.0, 0.0, 3, X2=np.ones((2, 3)))
    with pytest.raises(ValueError, match="depth"):
        kernels(X, "relu", 2.0, 0.0, 0)
    with pytest.raises(ValueError, match="depth"):
        kernels(X, "relu", 2.0, 0.0, 2.5)
    with pytest.raises(ValueError, match="X must be two-dimensional"):
        kernels(np.ones(3), "relu", 2.0, 0.0, 2)
    with pytest.raises(ValueError, match="y_train has 2 rows"):
        ntk_metrics(X, np.ones(2), X, "relu", 2.0, 0.0, 2)
    with pytest.raises(ValueError, match="X_test has 3 features"):
        ntk_metrics(X, np.ones(3), np.ones((2, 3)), "relu", 2.0, 0.0, 2)
    with pytest.raises(ValueError, match="sw2"):
        kernels(X, "relu", -1.0, 0.0, 2)
    with pytest.raises(ValueError, match="c must be"):
        two_point_kernels("relu", 2.0, 0.0, 2, c=1.5)


def test_cli_kernel(tmp_path, capsys):
    X, y, Xt = _data()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    p = argparse.ArgumentParser()
    add_kernel_parser(p.add_subparsers())
    out = tmp_path / "out.nc"
    a = p.parse_args(["kernel", "erf", "--sw2", "1.5", "--sb2", "0.1", "--depth", "4", "--data",
                      str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "-o", str(out)])
    assert a.func(a) == 0
    text = capsys.readouterr().out
    assert "phase=chaotic" in text or "phase=" in text
    assert len([ln for ln in text.splitlines() if ln.strip().startswith(("1 ", "2 ", "3 ", "4 "))]) == 4
    assert out.exists()
    a = p.parse_args(["kernel", "erf", "--sw2", "1.5", "--sb2", "0.1", "--depth", "4", "--data",
                      str(tmp_path / "missing.npy")])
    with pytest.raises(ValueError, match="--data: no such file"):
        a.func(a)


def test_ntk_metrics_rate_with_biased_labels():
    # tanh (2.0, 0.05) is chaotic with c* != 0: the kernel's off-diagonal tends to a
    # constant while its diagonal grows like chi_1^l, so the predictor's label-mean
    # component decays like 1/chi_1 and the rest like chi_c/chi_1 (faster).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 10))
    X *= np.sqrt(10) / np.linalg.norm(X, axis=1, keepdims=True)
    Xt = rng.normal(size=(5, 10))
    Xt *= np.sqrt(10) / np.linalg.norm(Xt, axis=1, keepdims=True)
    y = rng.normal(size=40)
    y -= y.mean()
    r = mf.analyze("tanh", 2.0, 0.05)
    biased = mf.ntk_metrics(X, y + 0.2, Xt, "tanh", 2.0, 0.05, 200)
    assert float(biased.theory_decay_rate) == pytest.approx(1 / r.chi1, rel=1e-12)
    assert float(biased.decay_rate[-2]) == pytest.approx(float(biased.theory_decay_rate), abs=1e-3)
    centred = mf.ntk_metrics(X, y, Xt, "tanh", 2.0, 0.05, 200)
    assert float(centred.theory_decay_rate) == pytest.approx(r.chi_c / r.chi1, rel=1e-12)
    assert float(centred.theory_decay_rate_mean) == pytest.approx(1 / r.chi1, rel=1e-12)
    # the centred rate is approached like 1 + O(1/l): 7e-3 away at depth 200
    assert float(centred.decay_rate[-2]) == pytest.approx(r.chi_c / r.chi1, abs=1e-2)
    assert float(centred.decay_rate[-2]) < float(biased.decay_rate[-2]) - 0.02
