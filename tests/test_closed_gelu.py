"""The GELU closed forms of meanfield.core.gaussian.closed against mpmath.

Reference values: tests/data/gelu_refs.json (made by tests/data/make_gelu_refs.py with
mpmath quadrature at 32-60 digits, tests/gelu_reference.py); a few references are
recomputed live here.
"""
import json
import math
import os

import numpy as np
import pytest

from meanfield.core.gaussian.closed import gelu_equal_variance as equal_variance
from meanfield.core.gaussian.closed import gelu_general as general
from meanfield.core.gaussian.closed import gelu_one_point as one_point

from . import gelu_reference as mpref

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "data", "gelu_refs.json")) as _f:
    REFS = json.load(_f)

ONE_NAMES = ["phi", "phi2", "phi2z", "dphi2", "dphi", "phi2h4", "dphi2z"]
RTOL = 1e-13


def _check(val, ref, rtol=RTOL, atol=1e-15, scale=1.0):
    """relative rtol; absolute atol*scale for values near a zero."""
    err = abs(val - ref)
    assert err <= max(rtol * abs(ref), atol * scale), (val, ref, err / max(abs(ref), 1e-300))


def _scale_D(a, b):
    # natural size of E[gelu(u) gelu(v)]: sqrt(E gelu(u)^2 E gelu(v)^2) <= sqrt(a b)/2
    return math.sqrt(a * b) if a * b > 0 else 0.0


# ---------------------------------------------------------------- one_point
@pytest.mark.parametrize("rec", REFS["one_point"], ids=lambda r: "q=%g" % r["q"])
def test_one_point_refs(rec):
    got = one_point(rec["q"])
    for i, n in enumerate(ONE_NAMES):
        _check(got[i], rec["ref"][n], scale=min(1.0, rec["q"]))


@pytest.mark.parametrize("q", [0.7, 1e5])
def test_one_point_live(q):
    ref = mpref.one_point_ref(q, dps=25)[0]
    got = one_point(q)
    for i, n in enumerate(ONE_NAMES):
        _check(got[i], ref[n])


@pytest.mark.parametrize("q", [1e-3, 0.3, 1.0, 4.0, 30.0, 1e3, 1e6])
def test_one_point_derivative_identities(q):
    """phi2z = 2q F', phi2h4 = 4 q^2 F'', dphi2z = 2q G' (F = phi2, G = dphi2),
    checked by Richardson-extrapolated central differences in log q."""
    def F(x):
        return one_point(x)[1]

    def G(x):
        return one_point(x)[3]

    def d1(f, h):  # d f / d(log q) = q f'
        return (f(q * math.exp(h)) - f(q * math.exp(-h))) / (2 * h)

    def d2(f, h):  # d^2 f / d(log q)^2 = q^2 f'' + q f'
        return (f(q * math.exp(h)) - 2 * f(q) + f(q * math.exp(-h))) / (h * h)

    def rich(d, f, h):
        return (4 * d(f, h / 2) - d(f, h)) / 3

    def Fp(x):  # F'(x) = phi2z / (2x), validated just above
        return one_point(x)[2] / (2 * x)

    h = 1e-2
    o = one_point(q)
    qF1 = rich(d1, F, h)
    qG1 = rich(d1, G, h)
    assert abs(o[2] - 2 * qF1) <= 1e-8 * abs(o[2]) + 1e-14
    assert abs(o[6] - 2 * qG1) <= 1e-8 * abs(o[6]) + 1e-14
    # 4 q^2 F'' = 4 q * (q dF'/dq); differentiating F' avoids the O(q) cancellation
    # of the second difference of F at large q
    # (for q >~ 1e5 the difference q F'' ~ q^-1.5 drowns in rounding of F' ~ 1/2;
    #  the direct quadrature test covers phi2h4 there)
    if q <= 1e3:
        q2F2 = q * rich(d1, Fp, h)
        assert abs(o[5] - 4 * q2F2) <= 1e-7 * abs(o[5]) + 1e-14
    # and a plain second difference of F for moderate q
    if q <= 30:
        q2F2b = rich(d2, F, h) - qF1
        assert abs(o[5] - 4 * q2F2b) <= 1e-6 * abs(o[5]) + 1e-12


def test_one_point_zero():
    assert one_point(0.0) == (0.0, 0.0, 0.0, 0.25, 0.5, 0.0, 0.0)


# ---------------------------------------------------------------- general
@pytest.mark.parametrize("rec", REFS["general"],
                         ids=lambda r: "%g,%g,%.17g" % (r["s11"], r["s22"], r["s12"]))
def test_general_refs(rec):
    a, b, c = rec["s11"], rec["s22"], rec["s12"]
    D, Dp = general(a, b, c)
    _check(D, rec["ref"][0], scale=min(1.0, _scale_D(a, b)))
    _check(Dp, rec["ref"][1])


@pytest.mark.parametrize("a,b,cc", [(1.0, 1.0, 0.5), (0.5, 2.0, -0.9), (30.0, 30.0, -1.0),
                                    (1e6, 1e6, -0.9), (100.0, 0.01, 0.99)])
def test_general_live(a, b, cc):
    c = cc * math.sqrt(a * b)
    ref = mpref.general_ref(a, b, c, dps=25)
    D, Dp = general(a, b, c)
    _check(D, ref[0])
    _check(Dp, ref[1])


@pytest.mark.parametrize("a,b,cc", [(0.5, 2.0, 0.3), (1.0, 1.0, -0.7), (30.0, 4.0, 0.95)])
def test_general_live_2d_quadrature(a, b, cc):
    """Fully numerical 2-D quadrature (no conditional/closed formula at all):
    scipy dblquad in z-space (float64, so tolerance 1e-11)."""
    from scipy.integrate import dblquad
    from scipy.special import ndtr
    c = cc * math.sqrt(a * b)
    sa, k, sg = math.sqrt(a), c / math.sqrt(a), math.sqrt(b - c * c / a)
    pdf = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    g = lambda x: x * ndtr(x)
    gp = lambda x: ndtr(x) + x * pdf(x)
    D, Dp = general(a, b, c)
    for f, val in ((g, D), (gp, Dp)):
        tot = 0.0
        for lo1, hi1 in ((-10, 0), (0, 10)):
            tot += dblquad(lambda z2, z1: f(sa * z1) * f(k * z1 + sg * z2) * pdf(z1) * pdf(z2),
                           lo1, hi1, -10, 10, epsabs=1e-14, epsrel=1e-13)[0]
        assert abs(tot - val) <= 1e-11 * abs(val) + 1e-14


def test_general_monte_carlo():
    """Crude independent sanity check of the sign/normalisation conventions."""
    from scipy.special import ndtr
    rng = np.random.default_rng(1)
    a, b, c = 1.3, 0.4, -0.5
    L = np.linalg.cholesky(np.array([[a, c], [c, b]]))
    z = rng.standard_normal((2, 2_000_000))
    u, v = L @ z
    gu, gv = u * ndtr(u), v * ndtr(v)
    pdf = lambda x: np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    gpu, gpv = ndtr(u) + u * pdf(u), ndtr(v) + v * pdf(v)
    D, Dp = general(a, b, c)
    assert abs(np.mean(gu * gv) - D) < 5 * np.std(gu * gv) / math.sqrt(u.size)
    assert abs(np.mean(gpu * gpv) - Dp) < 5 * np.std(gpu * gpv) / math.sqrt(u.size)


@pytest.mark.parametrize("a,b", [(1e-6, 1e-6), (0.5, 2.0), (1.0, 1.0), (1e-3, 10.0),
                                 (100.0, 0.01), (1e6, 1e6), (1e8, 1e8), (1e8, 1e-6)])
def test_general_identities(a, b):
    """gelu(u) = u + gelu(-u)  =>  D(c) - D(-c) = c/2 ;  gelu'(-u) = 1 - gelu'(u)
    => Dp(c) + Dp(-c) = 1/2 ; symmetry in (s11, s22)."""
    for cc in np.linspace(-1, 1, 41):
        c = cc * math.sqrt(a * b)
        D1, Dp1 = general(a, b, c)
        D2, Dp2 = general(a, b, -c)
        D3, Dp3 = general(b, a, c)
        assert math.isfinite(D1) and math.isfinite(Dp1)
        sc = math.sqrt(a * b)
        assert abs(D1 - D2 - c / 2) <= 4e-16 * (abs(D1) + abs(D2) + abs(c) / 2) + 1e-300
        assert abs(Dp1 + Dp2 - 0.5) <= 2e-15
        assert abs(D1 - D3) <= 2e-15 * abs(D1) + 1e-16 * sc
        assert abs(Dp1 - Dp3) <= 2e-15


def test_general_branch_continuity():
    """The c<0 branch switches at sqrt(det(I+S)) = -c; check continuity there."""
    for q in [3.0, 10.0, 1e4]:
        # boundary: 1 + 2q + q^2 - c^2 = c^2  ->  c = -sqrt((1+q)^2/2)
        cb = -(1 + q) / math.sqrt(2.0)
        cs = [cb * (1 + k * 1e-14) for k in (3, 1, -1, -3)]   # 2 points each side
        vals = [general(q, q, c) for c in cs]
        for j in range(2):  # D, Dp: jump across the boundary ~ step on either side
            left = vals[0][j] - vals[1][j]
            jump = vals[1][j] - vals[2][j]
            right = vals[2][j] - vals[3][j]
            tol = 1e-14 * max(abs(vals[1][j]), 1e-3)  # c-grid granularity ~ 45 ulp
            assert abs(jump - 0.5 * (left + right)) <= tol, (q, j, left, jump, right)


def test_general_degenerate_and_huge():
    assert general(0.0, 5.0, 0.0) == (0.0, 0.25)
    assert general(0.0, 0.0, 0.0) == (0.0, 0.25)
    for q in [1e8, 1e12]:
        for cc in [-1.0, 0.0, 1.0]:
            D, Dp = general(q, q, cc * q)
            assert math.isfinite(D) and math.isfinite(Dp)
    # relu limit for huge q: E[relu(u)^2] = q/2, E[step^2] = 1/2
    D, Dp = general(1e8, 1e8, 1e8)
    assert abs(D / 5e7 - 1) < 1e-3 and abs(Dp - 0.5) < 1e-3
    # s12 slightly outside PSD (rounding) is clamped, not NaN
    D, Dp = general(2.0, 3.0, math.sqrt(6.0) * (1 + 1e-16))
    assert math.isfinite(D) and math.isfinite(Dp)


# ---------------------------------------------------------------- equal_variance
@pytest.mark.parametrize("rec", REFS["equal_variance"], ids=lambda r: "q=%g,eps=%g" % (r["q"], r["eps"]))
def test_equal_variance_refs(rec):
    q, eps = rec["q"], rec["eps"]
    D, Delta, Dp = equal_variance(q, eps)
    rD, rDelta, rDp = rec["ref"]
    _check(D, rD, scale=min(1.0, q))
    _check(Dp, rDp)
    if eps == 0.0:
        assert Delta == 0.0
    else:
        _check(Delta, rDelta, rtol=1e-12 if eps < 1e-3 else RTOL, atol=0.0)


@pytest.mark.parametrize("q,eps", [(1e3, 1e-8), (0.3, 1e-12), (4.0, 0.3)])
def test_equal_variance_live(q, eps):
    ref = mpref.equal_variance_ref(q, eps, dps=45)
    got = equal_variance(q, eps)
    for k in range(3):
        _check(got[k], ref[k], rtol=1e-12 if k == 1 else RTOL)


def test_equal_variance_consistency():
    """D, Dp agree with general(); Delta = F - D where no cancellation; Delta
    is continuous across the eps = 1 branch switch; Delta >= 0."""
    for q in [1e-6, 0.3, 1.0, 30.0, 1e6, 1e8]:
        F = one_point(q)[1]
        for eps in [1e-12, 1e-6, 0.1, 0.5, 0.9, 1.0, 1.5, 2.0]:
            D, Delta, Dp = equal_variance(q, eps)
            if eps >= 0.1:  # (for tiny eps the rounded s12 = q(1-eps) changes det(S))
                Dg, Dpg = general(q, q, q * (1 - eps))
                assert abs(D - Dg) <= 1e-14 * abs(D) + 1e-16 * q
                assert abs(Dp - Dpg) <= 1e-14
            assert Delta >= 0.0
            if eps >= 0.1:
                assert abs(Delta - (F - D)) <= 2e-15 * F / max(eps, 0.1) * 10
        a = equal_variance(q, 1.0 - 1e-15)[1]
        b = equal_variance(q, 1.0 + 1e-15)[1]
        assert abs(a - b) <= 1e-14 * abs(a)
        assert equal_variance(q, 0.0)[1] == 0.0


def test_equal_variance_small_eps_linear():
    """Delta ~ eps * q * E[gelu'(x)^2] as eps -> 0 (Price: dD/dc = Dp)."""
    for q in [1e-6, 1.0, 1e6]:
        for eps in [1e-12, 1e-14]:
            Delta = equal_variance(q, eps)[1]
            lin = eps * q * one_point(q)[3]
            assert abs(Delta / lin - 1) < 1e3 * eps * max(1.0, math.sqrt(q)) + 1e-14


# ---------------------------------------------------------------- general, vectorized form
def _pre(a, b, c):
    """gelu_general_pre with its per-input constants, as the kernel loop forms them."""
    from meanfield.core.gaussian.closed import gelu_general_pre
    i1, i2 = 1.0 / (1.0 + a), 1.0 / (1.0 + b)
    return gelu_general_pre(a, b, c, i1, i2, 1.0 / math.sqrt(1.0 + a), 1.0 / math.sqrt(1.0 + b))


@pytest.mark.parametrize("rec", REFS["general"],
                         ids=lambda r: "%g,%g,%.17g" % (r["s11"], r["s22"], r["s12"]))
def test_general_pre_refs(rec):
    """The libm-free form the raw-input kernels use, against the same mpmath references;
    where it declines (ok False) the kernels use gelu_general (tested above)."""
    a, b, c = rec["s11"], rec["s22"], rec["s12"]
    D, Dp, ok = _pre(a, b, c)
    if c >= 0.0:
        assert ok  # only anti-correlated pairs may need the rewritten branch
    if ok:
        _check(D, rec["ref"][0], scale=min(1.0, _scale_D(a, b)))
        _check(Dp, rec["ref"][1])


@pytest.mark.parametrize("a,b", [(0.3, 0.5), (0.1245, 0.13), (7.0, 3.0), (40.0, 60.0)])
@pytest.mark.parametrize("cc", [1 - 1e-8, 1 - 1e-4, 0.999, 0.7, 0.1, -0.3, -0.8, -(1 - 1e-8)])
def test_general_pre_live(a, b, cc):
    """Unequal variances, c from -1 + 1e-8 to 1 - 1e-8 (where the angle goes to 0 or pi
    and its polynomial form has to keep the digits), against 40-digit mpmath."""
    c = cc * math.sqrt(a * b)
    D, Dp, ok = _pre(a, b, c)
    if not ok:
        # the cancelling branch (c < 0, sqrt(det(I + S)) < -c): not the vectorized form's job
        assert c < 0.0 and 1.0 + a + b + (a * b - c * c) < c * c
        return
    w = a * b * (1.0 - cc) * (1.0 + cc)  # det, formed without cancellation
    ref = mpref.general_ref(a, b, c, w=w, dps=40)
    _check(D, ref[0], scale=min(1.0, _scale_D(a, b)))
    _check(Dp, ref[1])
    E, Ep = general(a, b, c)
    assert abs(D - E) <= 2e-15 * max(abs(E), 1e-16 * _scale_D(a, b)) + 1e-16 * _scale_D(a, b)
    assert abs(Dp - Ep) <= 2e-15 * abs(Ep)
