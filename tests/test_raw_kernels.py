"""Kernels on raw inputs (unequal norms) through the per-input Hermite series, and kinked
kernels as c -> 1 (issues 14 and 19).

References are computed here, independently of the library's quadrature: a 2-D
Gauss-Legendre rule in Cholesky coordinates for the smooth activations, and mpmath
(one outer quadrature over closed-form inner Gaussian expectations) for the kinked ones.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from scipy.special import erf, expit

from meanfield import critical_sw2, kernels, two_point_kernels

from . import reference as ref

_GL_N = 700

_PHIS = {
    "tanh": (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2),
    "silu": (lambda x: x * expit(x), lambda x: expit(x) * (1 + x * (1 - expit(x)))),
    "softplus": (lambda x: np.logaddexp(0.0, x), expit),
    "gelu": (lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
             lambda x: 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)),
}


def _gl_recursion(X, sw2, sb2, L, name):
    """The independent tensor Gauss-Legendre recursion of tests/reference.py."""
    return ref.gl_recursion(X, sw2, sb2, L, *_PHIS[name], _GL_N)


def _raw_inputs(seed, n=6, d=5):
    """Norms from 0.8 to 1.25, one near-duplicate pair (c^1 ~ 1 - 1e-7) and one nearly
    opposite pair (c^1 ~ -1 + 1e-6), so that pairs near c = +-1 are exercised."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X *= np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)
    X *= np.linspace(0.8, 1.25, n)[:, None]
    X[1] = 1.1 * X[0] + 3e-4 * rng.standard_normal(d)
    X[2] = -0.9 * X[0] + 1e-3 * rng.standard_normal(d)
    return X


def _scaled_err(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# tanh: critical line at small sb2; silu, gelu at sb2 = 1 (their critical point at sw2 = 2);
# softplus has a finite critical point at sb2 = 0.5 only through its chi_1: use sb2 = 1.
@pytest.mark.parametrize("name,sb2", [("tanh", 0.05), ("silu", 1.0), ("softplus", 0.3), ("gelu", 1.0)])
@pytest.mark.parametrize("phase", ["ordered", "critical", "chaotic"])
def test_raw_inputs_match_independent_rule(name, sb2, phase):
    crit = critical_sw2(name, sb2)
    if not np.isfinite(crit):
        crit = 1.0
    sw2 = {"ordered": 0.7, "critical": 1.0, "chaotic": 1.6}[phase] * crit
    X = _raw_inputs(3)
    L = 6
    ds = kernels(X, name, sw2, sb2, L)
    assert ds.attrs["shared_norm"] == 0
    Sr, Tr = _gl_recursion(X, sw2, sb2, L, name)
    for got, want in ((ds.nngp.values, Sr), (ds.ntk.values, Tr)):
        err = _scaled_err(got, want)
        assert err < 1e-9, (name, phase, sw2, err)
    if name != "gelu":
        assert "Hermite" in ds.attrs["method"]
        assert ds.attrs["pairs_exact_fallback"] >= 0


def test_fallback_triggers_near_c_one_and_stays_accurate():
    # tanh at large q* (sw2 = 4, sb2 = 0.5): its Hermite coefficients decay slowly, so the
    # near-duplicate pair (c ~ 1) cannot meet the tail bound and takes the 2-D rule.
    X = _raw_inputs(5)
    ds = kernels(X, "tanh", 4.0, 0.5, 5)
    assert ds.attrs["pairs_exact_fallback"] > 0
    Sr, Tr = _gl_recursion(X, 4.0, 0.5, 5, "tanh")
    assert _scaled_err(ds.nngp.values, Sr) < 1e-9
    assert _scaled_err(ds.ntk.values, Tr) < 1e-9
    # Small q: the series converges even at c = 1 and no pair falls back.
    ds = kernels(X * 0.3, "tanh", 0.8, 0.01, 5)
    assert ds.attrs["pairs_exact_fallback"] == 0


def test_softplus_unbounded_phase_deep_matches_independent_rule():
    # The point of issue 14's benchmark, (2, 0.05): softplus is in its unbounded phase
    # (mf.analyze: q^l grows without bound, c^l -> 1), so past a few layers every pair sits
    # at c ~ 1 - 1e-4 (depth 20) to 1 - 1e-5 (depth 50) with q ~ 10-26, where the Mehler
    # series' bound fails; the Taylor series about c = 1 takes them (before it, the exact
    # 2-D rule ran for every such pair).
    X = _raw_inputs(4)
    L = 50
    ds = kernels(X, "softplus", 2.0, 0.05, L)
    assert ds.attrs["shared_norm"] == 0
    # At most a pair or two in the layers between the two series' reach (measured: one,
    # at depth 9 with c = 0.977, too far from 1 for the Taylor bound and too close for the
    # Mehler one) takes the exact rule; before the Taylor path every pair of every layer
    # from depth ~6 did (over 600 of the 735 pair-layers).
    assert "Taylor" in ds.attrs["method"] and ds.attrs["pairs_exact_fallback"] <= 2
    S = ds.nngp.values[19]
    c = S / np.sqrt(np.outer(np.diag(S), np.diag(S)))
    # the regime the test is about (whatever method a faster path uses there)
    assert np.min(c) > 0.999 and np.min(np.diag(S)) > 8.0
    S = ds.nngp.values[-1]
    assert np.min(S / np.sqrt(np.outer(np.diag(S), np.diag(S)))) > 1 - 1e-4
    Sr, Tr = _gl_recursion(X, 2.0, 0.05, L, "softplus")
    assert _scaled_err(ds.nngp.values, Sr) < 1e-9
    assert _scaled_err(ds.ntk.values, Tr) < 1e-9
    # every depth on its own scale, not only the deepest (which dominates the max)
    for l in (5, 10, 20, 35):
        assert _scaled_err(ds.nngp.values[l], Sr[l]) < 1e-9
        assert _scaled_err(ds.ntk.values[l], Tr[l]) < 1e-9


def _near_inputs(seed, n=5, d=6, spread=1e-6):
    """Nearly equal directions: one base vector scaled to norms 0.8..1.25 (inputs differing
    in norm only) plus perturbations of relative size ``spread``."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(d)
    X = base[None, :] * np.linspace(0.8, 1.25, n)[:, None]
    return X + spread * rng.standard_normal((n, d))


# Depth 50 in the three phases of softplus at sb2 = 0.3 (ordered: c^l -> 1 at a finite q*,
# pairs near c = 1 as deep as in the unbounded phase), and inputs differing only in norm.
@pytest.mark.parametrize("phase", ["ordered", "critical", "chaotic"])
@pytest.mark.parametrize("inputs", ["raw", "near"])
def test_softplus_depth_50_three_phases(phase, inputs):
    sb2 = 0.3
    crit = critical_sw2("softplus", sb2)
    if not np.isfinite(crit):
        crit = 1.0
    sw2 = {"ordered": 0.7, "critical": 1.0, "chaotic": 1.6}[phase] * crit
    X = _raw_inputs(6) if inputs == "raw" else _near_inputs(6)
    L = 50
    ds = kernels(X, "softplus", sw2, sb2, L)
    Sr, Tr = _gl_recursion(X, sw2, sb2, L, "softplus")
    for l in (1, 4, 12, 30, 49):
        assert _scaled_err(ds.nngp.values[l], Sr[l]) < 1e-9, (phase, l)
        assert _scaled_err(ds.ntk.values[l], Tr[l]) < 1e-9, (phase, l)


@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_raw_kernels_do_not_depend_on_tiling(name):
    # n = 150 spans three 64-wide tiles; the cross-kernel tiles the same pairs differently
    # and in another row order.  Each pair's truncation order depends on the pair alone.
    rng = np.random.default_rng(2)
    X = rng.standard_normal((150, 20)) * rng.uniform(0.85, 1.15, size=(150, 1))
    X[7] = X[100] * 1.05
    full = kernels(X, name, 1.5, 0.1, 5)
    cross = kernels(X[:90], name, 1.5, 0.1, 5, X2=X[90:])
    perm = rng.permutation(150)
    fullp = kernels(X[perm], name, 1.5, 0.1, 5)
    for v in ("nngp", "ntk"):
        F = full[v].values
        # Rounding only: c = s / sqrt(q_i q_j) is formed in another order in the other layouts.
        atol = 1e-14 * np.max(np.abs(F))
        np.testing.assert_allclose(cross[v].values, F[:, 90:, :90], rtol=1e-13, atol=atol)
        np.testing.assert_allclose(fullp[v].values, F[:, perm][:, :, perm], rtol=1e-13, atol=atol)


# --------------------------------------------------------------------------- kinked, c -> 1
def _ncdf(x):
    return mp.ncdf(x)


def _npdf(x):
    return mp.npdf(x)


def _inner(name, m, s):
    """(E phi(w), E phi'(w)) for w ~ N(m, s^2), in closed form."""
    if name in ("elu", "selu"):
        lam, al = (mp.mpf(1), mp.mpf(1)) if name == "elu" else (
            mp.mpf("1.0507009873554804934193349852946"), mp.mpf("1.6732632423543772848170429916717"))
        pos = _ncdf(m / s)
        wpos = m * pos + s * _npdf(m / s)
        ew = mp.exp(m + s * s / 2) * _ncdf((-m - s * s) / s)
        return lam * (wpos + al * (ew - _ncdf(-m / s))), lam * (pos + al * ew)
    # hard_tanh = clip(w, -1, 1)
    a = (-1 - m) / s
    b = (1 - m) / s
    mid = _ncdf(b) - _ncdf(a)
    return (-_ncdf(a) + (1 - _ncdf(b)) + m * mid + s * (_npdf(a) - _npdf(b))), mid


def _phi_mp(name, x):
    if name == "hard_tanh":
        return max(-1, min(1, x)), (1 if -1 < x < 1 else 0)
    lam, al = (1, 1) if name == "elu" else (mp.mpf("1.0507009873554804934193349852946"),
                                            mp.mpf("1.6732632423543772848170429916717"))
    return (lam * x, lam) if x > 0 else (lam * al * mp.expm1(x), lam * al * mp.exp(x))


def _mp_pair(name, q1, q2, c):
    """E phi(u) phi(v), E phi'(u) phi'(v): outer mpmath quadrature in z1 (u = r1 z1), inner
    expectation over v | z1 ~ N(r2 c z1, r2^2 (1 - c^2)) in closed form."""
    mp.mp.dps = 30
    r1, r2 = mp.sqrt(q1), mp.sqrt(q2)
    c = mp.mpf(c)
    s = r2 * mp.sqrt((1 - c) * (1 + c))
    kinks = [0] if name != "hard_tanh" else [-1, 1]
    pts = sorted({mp.mpf(-14), mp.mpf(14)} | {mp.mpf(k) / r1 for k in kinks}
                 | {mp.mpf(k) / (r2 * c) + t * s / (r2 * c) for k in kinks for t in (-4, -1, 0, 1, 4)})

    def fD(z):
        p, _ = _phi_mp(name, r1 * z)
        e, _ = _inner(name, r2 * c * z, s)
        return mp.npdf(z) * p * e

    def fP(z):
        _, dp = _phi_mp(name, r1 * z)
        _, de = _inner(name, r2 * c * z, s)
        return mp.npdf(z) * dp * de

    return float(mp.quad(fD, pts)), float(mp.quad(fP, pts))


def _two_point_expectations(name, q1, q2, c):
    """E phi phi and E phi' phi' from depth 2 of two_point_kernels at sw2 = 1, sb2 = 0."""
    ds = two_point_kernels(name, 1.0, 0.0, 2, q1=q1, q2=q2, c=c)
    s12 = c * math.sqrt(q1 * q2)
    D = float(ds.nngp_12[1])
    Dp = (float(ds.ntk_12[1]) - D) / s12
    return D, Dp


def test_selu_dphi_near_c_one_issue_19():
    _, Dp = _two_point_expectations("selu", 1.0, 1.0, 0.99999)
    assert abs(Dp - 1.0712185858523963) < 1e-9 * 1.0712185858523963


@pytest.mark.parametrize("name", ["elu", "selu", "hard_tanh"])
@pytest.mark.parametrize("one_minus_c", [1e-3, 1e-5, 1e-7, 1e-8])
@pytest.mark.parametrize("q2", [1.0, 1.3])
def test_kinked_kernels_near_c_one(name, one_minus_c, q2):
    c = 1.0 - one_minus_c
    D, Dp = _two_point_expectations(name, 1.0, q2, c)
    Dr, Dpr = _mp_pair(name, 1.0, q2, c)
    assert abs(D - Dr) <= 1e-9 * abs(Dr), (D, Dr)
    assert abs(Dp - Dpr) <= 1e-9 * abs(Dpr), (Dp, Dpr)
