"""ReLU-like activations just below sw2 = 2, where q* ~ 1e2 .. 1e4 and c* ~ 1 - 1/q.

The references are independent of meanfield's numerics: q* and chi_1 from mpmath (30 digits,
split where phi(sqrt(q) z) bends), c* from scipy's nested adaptive quad of
Delta = E[(phi(u) - phi(v))^2] / 2 (no cancellation), split at z1 = 0 and at multiples of
the scale 1/sqrt(q) on which phi(sqrt(q) z) bends, solved by the secant method in eps.
"""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
from scipy import integrate

import meanfield as mf
from meanfield.core import engine
from meanfield.core import point as P
from meanfield.core.correlation_map import solve_c
from meanfield.core.gaussian.kinked import graded_rule, soft_kink
from meanfield.core.gaussian.moments import TRAPEZOID_TERMS_MAX, _trapezoid_terms, moments2
from meanfield.core.length_map import solve_q
from meanfield.core.near_one import curvature_start, relu_like, sqrt_step

from . import reference as ref

mp.mp.dps = 30
BENDS = (1.0, 3.0, 10.0, 30.0)  # multiples of 1/sqrt(q) at which the references split


def _gauss1(f, q):
    """E[f(sqrt(q) z)] to ~25 digits, split where phi(sqrt(q) z) bends."""
    sq = mp.sqrt(q)
    pts = sorted({mp.mpf(s * b) / sq for b in BENDS for s in (-1, 1)} | {0, -8, -4, -2, -1, 1, 2, 4, 8})
    return mp.quad(lambda z: f(sq * z) * mp.npdf(z), [-mp.inf] + pts + [mp.inf])


def _one_point(name, sw2, sb2, guess):
    """(q*, chi_1) at 30 digits.  ``guess`` (the library's q*) only places the bracket, whose
    sign change is checked: g > 0 below, as on the way up from q0 = 1."""
    f, df, _ = ref.MP_ACTS[name]
    g = lambda q: sw2 * _gauss1(lambda x: f(x) ** 2, q) + sb2 - q  # noqa: E731
    lo, hi = mp.mpf(guess) * (1 - mp.mpf(1e-6)), mp.mpf(guess) * (1 + mp.mpf(1e-6))
    assert g(lo) > 0 > g(hi)
    q = mp.findroot(g, (lo, hi), solver="anderson", tol=mp.mpf(10) ** -26)
    return float(q), float(sw2 * _gauss1(lambda x: df(x) ** 2, q))


def _delta_dp(name, q, eps):
    """(Delta, Dp) at variance q, correlation 1 - eps: nested scipy quad, split at the bends."""
    f, df = ref.FLOAT_ACTS[name]
    sq = math.sqrt(q)
    c = 1.0 - eps
    s = math.sqrt(eps * (2.0 - eps))
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    bends = [0.0] + [sg * b / sq for b in BENDS for sg in (-1, 1)]

    def split(g, pts):
        edges = [-12.0] + sorted(p for p in set(pts) if -12 < p < 12) + [12.0]
        return sum(integrate.quad(g, a, b, epsabs=0.0, epsrel=1e-13, limit=500)[0]
                   for a, b in zip(edges[:-1], edges[1:]))

    def expect(h):
        # inner variable z2: v = sqrt(q) (c z1 + s z2) bends where c z1 + s z2 is at a bend
        inner = lambda z1: split(lambda z2: h(z1, sq * (c * z1 + s * z2)) * pdf(z2),  # noqa: E731
                                 [(b - c * z1) / s for b in bends])
        return split(lambda z1: inner(z1) * pdf(z1), bends)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        delta = 0.5 * expect(lambda z1, v: (f(sq * z1) - f(v)) ** 2)
        dp = expect(lambda z1, v: df(sq * z1) * df(v))
    return delta, dp


def _c_star(name, sw2, q, eps0):
    """(eps*, chi_c): secant on h(eps) = sw2 Delta(eps) - q eps from eps0 (a guess only)."""
    h = lambda e: sw2 * _delta_dp(name, q, e)[0] - q * e  # noqa: E731
    e0, e1 = eps0 * 0.999, eps0
    h0, h1 = h(e0), h(e1)
    for _ in range(30):
        if h1 == h0:
            break
        e2 = e1 - h1 * (e1 - e0) / (h1 - h0)
        if abs(e2 - e1) < 1e-14 * e2:
            e1 = e2
            break
        e0, h0, e1, h1 = e1, h1, e2, h(e2)
    return e1, sw2 * _delta_dp(name, q, e1)[1]


# sw2 in the band 1.99 .. 1.9999 (1.9995 is the 1000 x 1000 benchmark's row), q* from ~3e2
# to ~2e4 (past the moment tables' 1e4 at 1.9999), and an ordinary chaotic point (q* ~ 50).
# softplus is ordered there (E sigmoid^2 < 1/2): its q* and chi_1 are checked.
BAND = [("silu", 1.9995, 1.0), ("silu", 1.9995, 1.9), ("silu", 1.9999, 1.0), ("silu", 1.99, 1.5),
        ("gelu", 1.9995, 1.0), ("silu", 1.98, 1.0), ("softplus", 1.9995, 1.0),
        ("softplus", 1.99, 0.5)]


@pytest.mark.parametrize("name,sw2,sb2", BAND)
def test_near_two_against_references(name, sw2, sb2):
    r = mf.analyze(name, sw2, sb2)
    q, chi1 = _one_point(name, sw2, sb2, r.q_star)
    assert r.converged
    assert r.q_star == pytest.approx(q, rel=1e-10)
    assert r.chi1 == pytest.approx(chi1, rel=1e-10)
    if name == "softplus":
        assert r.phase == "ordered" and r.c_star == 1.0
        return
    assert r.phase == "chaotic"
    eps, chic = _c_star(name, sw2, q, 1.0 - r.c_star)
    # G'(eps*) = chi_c - 1 ~ -1e-3 here, so a 1e-13 error in Delta moves eps* by ~1e-10:
    # c* is checked to 1e-12 (eps* to ~1e-8 of itself), chi_c at the usual 1e-10.
    assert r.c_star == pytest.approx(1.0 - eps, rel=1e-12)
    assert (1.0 - r.c_star) == pytest.approx(eps, rel=1e-8)
    assert r.chi_c == pytest.approx(chic, rel=1e-10)
    assert r.xi_c == pytest.approx(-1.0 / math.log(chic), rel=1e-8)


@pytest.mark.parametrize("name", ["silu"])
def test_sqrt_newton_iterations_and_start(name):
    """The start lands within 30 % of eps* and the polish takes at most 4 evaluations
    (9 with Newton in eps from the series' root before)."""
    act = mf.get_activation(name)
    rec, tab = act.record, engine.length_table(act)
    for sb2 in (0.8, 1.4, 1.95):
        fp = solve_q(rec, 1.9995, sb2, 1.0, tab)
        q, m = fp.q, fp.moments
        assert relu_like(rec, q, 1.0) and not relu_like(rec, q, 0.9)
        series = P.DualSeries(np.zeros(0), 0.0, 0.0, 0.0)
        cf = solve_c(rec, 1.9995, sb2, 1.0, q, m.phi2, series, tab, m.dphi2)
        eps = 1.0 - cf.c
        assert cf.iterations <= 2
        e0 = curvature_start(rec, 1.9995, q, m.dphi2)
        assert 0.7 * eps < e0 < 1.3 * eps
        # The exact Newton step in eps, taken from the converged point, is below rounding.
        d = moments2(rec, q, eps)
        G = 1.9995 * d.Delta / q - eps
        assert abs(G / (1.9995 * d.Dp - 1.0)) < 1e-12 * eps


def test_tanh_is_not_relu_like():
    for name in ("tanh", "sigmoid", "gelu", "relu"):
        assert not relu_like(mf.get_activation(name).record, 1e3, 1.0)


def test_sqrt_step_solves_the_arc_cosine_form():
    """On H = a - b u (G = a eps - b eps^(3/2)) one step from anywhere lands on the root."""
    a, b = 2e-3, 0.3
    root = (a / b) ** 2
    for e in (1e-2, 3e-3, 1e-5):
        G = a * e - b * e ** 1.5
        Gp = a - 1.5 * b * math.sqrt(e)
        assert sqrt_step(e, G, Gp) == pytest.approx(root, rel=1e-12)
    assert math.isnan(sqrt_step(1e-3, 1.0, 1000.0))  # H' = 0: no step


@pytest.mark.parametrize("name", ["silu", "softplus", "tanh"])
@pytest.mark.parametrize("q,eps", [(3.5e3, 3e-4), (7.5e3, 1.3e-4), (2e4, 1e-4), (1e5, 1e-5)])
def test_trapezoid_past_q_soft_agrees_with_graded_rule(name, q, eps):
    """moments2 takes the lattice trapezoid past Q_SOFT when it is cheaper: two independent
    exact rules, which agree to the rounding of their ~1e5-term sums."""
    rec = mf.get_activation(name).record
    if name == "tanh" and q == 1e5:
        eps = 1e-6  # tanh's kappa is half silu's: at 1e-5 the rule has 8e5 node pairs
    assert soft_kink(rec, q) and _trapezoid_terms(rec, q, eps) <= TRAPEZOID_TERMS_MAX
    m = moments2(rec, q, eps)
    g = graded_rule(rec, np.zeros(1), True, q, q, eps)
    assert m.Delta == pytest.approx(g.Delta, rel=2e-14)
    assert m.Dp == pytest.approx(g.Dp, rel=2e-14)
    assert m.D == pytest.approx(g.D, rel=2e-14)
    # Where the trapezoid has too many node pairs the graded rule is used, bit for bit.
    far = moments2(rec, q, 0.5)
    assert far == graded_rule(rec, np.zeros(1), True, q, q, 0.5)


@pytest.mark.parametrize("name", ["silu", "gelu", "softplus"])
def test_divergence_decided_at_table_end_matches_quadrature(name):
    """Past sw2 = 2 the unbounded points are decided from the length table's last node;
    the decision is the one the exact moments there give."""
    act = mf.get_activation(name)
    rec, tab = act.record, engine.length_table(act)
    from meanfield.core.gaussian.moments import moments1
    x = tab.q[-1]
    m = moments1(rec, x, np.empty(0), True)
    assert tab.F[-1] == m.phi2 and tab.S[-1] == 0.5 * m.phi2z
    g = lambda sw2, sb2: sw2 * m.phi2 + sb2 - x  # noqa: E731
    gp = lambda sw2: sw2 * m.phi2z / (2.0 * x) - 1.0  # noqa: E731
    for sw2 in (2.003, 2.5, 4.0):
        for sb2 in (0.0, 0.5, 2.0):
            fp = solve_q(rec, sw2, sb2, 1.0, tab)
            if fp.status == P.NO_FIXED_POINT:
                assert fp.q == math.inf and g(sw2, sb2) > 0 and gp(sw2) > 0
            elif sb2 > 0.0:
                pytest.fail(f"sw2 = {sw2}, sb2 = {sb2}: not unbounded ({fp})")
    r = mf.analyze(name, 2.5, 1.0)
    assert r.phase == "unbounded" and r.q_star == math.inf


def test_parallel_grid_equals_serial_bit_for_bit():
    act = mf.get_activation("silu")
    sw2 = np.linspace(1.98, 2.01, 7)
    sb2 = np.linspace(0.0, 2.0, 40)  # 280 points: several blocks, so threads share them
    W, B = np.meshgrid(sw2, sb2, indexing="ij")
    assert W.size > 2 * P.BLOCK
    a = engine.compute_points(act, W, B, parallel=True)
    b = engine.compute_points(act, W, B, parallel=False)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
