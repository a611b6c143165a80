"""The quadrature rules behind the solvers: step constants, the 2-D lattice rule, moments."""

from __future__ import annotations

import math

import numpy as np
import pytest

import meanfield as mf
from meanfield.core.gaussian import moments as E

from . import reference as ref

SMOOTH = ["tanh", "silu", "gelu", "sigmoid", "softplus"]


def _rec(name):
    return mf.get_activation(name).record


def _m1(rec, q, herm=None):
    return E.moments1(rec, q, np.empty(0) if herm is None else herm, True)


@pytest.mark.parametrize("name", SMOOTH)
def test_trapezoid_step_holds_against_a_four_times_finer_rule(name):
    """kappa = 2 pi d / 64 must give rounding-level moments for q from 1e-2 to 3e3."""
    rec = _rec(name)
    for q in np.geomspace(1e-2, 3e3, 12):
        coarse = _m1(rec, q)
        fine = _m1(rec._replace(kappa=rec.kappa / 4), q)
        for i in (1, 3):  # E phi^2, E phi'^2
            # ~1e-4 * q nodes are summed: allow their rounding, nothing more
            assert coarse[i] == pytest.approx(fine[i], rel=2e-14)


@pytest.mark.parametrize("name", SMOOTH)
def test_two_point_lattice_rule(name):
    """The lattice evaluation equals the per-pair rule, is converged in its step, and agrees
    with an independent rule (split Gauss-Legendre panels, itself good to ~1e-12)."""
    rec = _rec(name)
    far = np.array([1e9])  # a 'kink' outside the domain: plain panels, no split
    for q in (0.05, 1.0, 3.0, 30.0):
        for eps in (1e-7, 1e-3, 0.05, 0.4, 1.0, 1.6):
            lat = E._sum_difference_rule(rec, q, eps, True)
            half = E._sum_difference_rule(rec._replace(kappa=rec.kappa / 2), q, eps, True)
            pairs = E._sum_difference_rule(rec, q, eps, False)
            panels = E.kinked_rule(rec._replace(kinks=far, kappa=rec.kappa * 0.3), q, q, eps)
            scale = max(abs(half[0]), 1e-3 * q)  # D can vanish (odd phi at c = 0)
            assert lat[0] == pytest.approx(half[0], abs=5e-14 * scale)
            assert lat[0] == pytest.approx(pairs[0], abs=5e-14 * scale)
            assert lat[0] == pytest.approx(panels[0], abs=1e-11 * scale)
            for i in (1, 2):  # Delta and D' are positive
                assert lat[i] == pytest.approx(half[i], rel=2e-14)
                assert lat[i] == pytest.approx(pairs[i], rel=1e-13)
                assert lat[i] == pytest.approx(panels[i], rel=1e-11)


def test_density_derivative_moments():
    """E[phi^2 He_4]/(4 q^2) and E[phi'^2 He_2]/(2 q) are the q-derivatives they stand for."""
    f, df, kinks = ref.MP_ACTS["tanh"]
    q = 1.7
    m = _m1(_rec("tanh"), q)
    F = lambda t: ref.gauss1(lambda x: f(x) ** 2, t)  # noqa: E731
    G = lambda t: ref.gauss1(lambda x: df(x) ** 2, t)  # noqa: E731
    assert m[5] / (4 * q * q) == pytest.approx(float(ref.mp.diff(F, q, 2)), rel=1e-12)
    assert m[6] / (2 * q) == pytest.approx(float(ref.mp.diff(G, q)), rel=1e-12)


@pytest.mark.parametrize("name", ["erf", "sin"])
def test_closed_form_derivative_moments(name):
    f, df, _ = ref.MP_ACTS[name]
    q = 0.8
    m = _m1(_rec(name), q)
    F = lambda t: ref.gauss1(lambda x: f(x) ** 2, t)  # noqa: E731
    G = lambda t: ref.gauss1(lambda x: df(x) ** 2, t)  # noqa: E731
    assert m[5] / (4 * q * q) == pytest.approx(float(ref.mp.diff(F, q, 2)), rel=1e-12)
    assert m[6] / (2 * q) == pytest.approx(float(ref.mp.diff(G, q)), rel=1e-12)


def test_hermite_coefficients_against_mpmath():
    f, _, _ = ref.MP_ACTS["tanh"]
    rec = _rec("tanh")
    q = 2.0
    herm = np.zeros(12)
    _m1(rec, q, herm)
    sq = ref.mp.sqrt(q)
    for n in (1, 3, 7, 11):
        want = ref.mp.quad(lambda z: f(sq * z) * ref.mp.hermite(n, z / ref.mp.sqrt(2))
                           * 2 ** (-ref.mp.mpf(n) / 2) * ref.mp.npdf(z), [-ref.mp.inf, 0, ref.mp.inf])
        want /= ref.mp.sqrt(ref.mp.factorial(n))
        assert herm[n] == pytest.approx(float(want), rel=1e-12, abs=1e-16)
    assert np.all(herm[0::2] == 0.0)  # tanh is odd
    # Coefficients near n = 64 need the range past their turning point 2 sqrt(n) = 16:
    # compare with mpmath there too.
    full = np.zeros(64)
    _m1(rec, q, full)
    for n in (41, 63):
        want = ref.mp.quad(lambda z: f(sq * z) * ref.mp.hermite(n, z / ref.mp.sqrt(2))
                           * 2 ** (-ref.mp.mpf(n) / 2) * ref.mp.npdf(z),
                           [-ref.mp.inf, -16, -8, 0, 8, 16, ref.mp.inf])
        want /= ref.mp.sqrt(ref.mp.factorial(n))
        assert full[n] == pytest.approx(float(want), abs=1e-15)
    # Parseval: sum a_n^2 -> E phi^2
    full = np.zeros(64)
    m = _m1(rec, 0.3, full)
    assert math.fsum(full ** 2) == pytest.approx(m[1], rel=1e-12)


@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_two_point_rule_at_c_minus_one_also_in_parallel_code(name):
    """c = -1 makes the sum variable vanish (A = 0); parallel Numba code divides by zero
    silently (NumPy error model), so this edge must be handled before any division."""
    from meanfield.ntk import blocks as K

    rec = _rec(name)
    q = 1.3
    eps = np.array([1.9, 2.0])
    out = np.empty((2, 3))
    K.node_moments(rec, q, eps, out)
    for row, e in zip(out, eps):
        want = E._sum_difference_rule(rec, q, e, False)
        np.testing.assert_allclose(row, want, rtol=1e-13)
    # at c = -1: E[phi(u) phi(-u)] and Delta = E phi^2 - that
    m = _m1(rec, q)
    assert out[1, 1] == pytest.approx(m[1] - out[1, 0], rel=1e-13)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "silu"])
def test_one_point_moments_at_huge_variance(name):
    """Above Q_SOFT the 1-D rule grades panels around 0 (O(log q) nodes; the trapezoid would
    need O(sqrt(q)) and hang at q ~ 1e16): E phi^2 and E phi'^2 against mpmath, split at
    the scale 1/sqrt(q) on which phi(sqrt(q) z) turns."""
    f, df, _ = ref.MP_ACTS[name]
    rec = _rec(name)
    for q in (3.1e3, 1e6, 1e12, 1e16):
        m = _m1(rec, q, np.zeros(0))
        sq = ref.mp.sqrt(q)
        pts = [-ref.mp.inf, -50 / sq, -1 / sq, 0, 1 / sq, 50 / sq, ref.mp.inf]
        phi2 = ref.mp.quad(lambda z: f(sq * z) ** 2 * ref.mp.npdf(z), pts)
        dphi2 = ref.mp.quad(lambda z: df(sq * z) ** 2 * ref.mp.npdf(z), pts)
        assert m[1] == pytest.approx(float(phi2), rel=1e-13), q
        assert m[3] == pytest.approx(float(dphi2), rel=1e-12, abs=1e-300), q


def test_chaotic_point_at_huge_weight_variance_is_fast_and_right():
    """tanh at sw2 = 1e16: q* = sw2 E tanh(sqrt(q*) z)^2 + sb2 with E tanh^2 = 1 - O(q^-1/2)."""
    r = mf.analyze("tanh", 1e16, 0.1)
    assert r.status == "converged" and r.phase == "chaotic"
    m = _m1(_rec("tanh"), r.q_star, np.zeros(0))
    assert r.q_star == pytest.approx(1e16 * m[1] + 0.1, rel=1e-14)
