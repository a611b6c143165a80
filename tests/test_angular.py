"""The angular table for the ELU family on raw inputs (meanfield.ntk.angular, issue 14).

References are independent of the module's method (a 1-D integral against closed-form
conditional expectations): the two-point expectations in polar coordinates, split at the
four rays where phi(u) or phi(v) has its kink, each arc a nested adaptive quadrature; and
whole kernels against the exact 2-D rule per pair (MODE_GENERAL), which shares no code
with the table.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate

import meanfield as mf
from meanfield import get_activation
from meanfield.ntk import angular
from meanfield.ntk import blocks as K
from meanfield.ntk.recursion import Block, Recursion, setup


def _phi(a, b, x):
    return b * x if x > 0.0 else b * a * math.expm1(x)


def _dphi(a, b, x):
    return b if x > 0.0 else b * a * math.exp(x)


def _polar(a, b, s1, s2, theta):
    with warnings.catch_warnings():
        # quad flags roundoff at tolerances near float64's; a poor value would fail the
        # comparison, never pass it.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return _polar_sums(a, b, s1, s2, theta)


def _polar_sums(a, b, s1, s2, theta):
    """(E phi(u) phi(v), E phi'(u) phi'(v)), u = s1 z.e_0, v = s2 z.e_theta, z ~ N(0, I_2):
    (1 / 2 pi) int da int r exp(-r^2 / 2) f(r cos a) g(r cos(a - theta)) dr, with the
    angle integral split where cos a = 0 or cos(a - theta) = 0."""
    cuts = sorted({(-math.pi / 2) % (2 * math.pi), (math.pi / 2) % (2 * math.pi),
                   (theta - math.pi / 2) % (2 * math.pi), (theta + math.pi / 2) % (2 * math.pi)})
    edges = [0.0] + cuts + [2 * math.pi]
    out = []
    for f in (_phi, _dphi):
        def radial(al, f=f):
            ca, cb = math.cos(al), math.cos(al - theta)
            # The exponential pieces decay over r ~ 1 / s: tell quad where.
            pts = [min(1.0, 1.0 / max(s1, s2))]
            val = integrate.quad(lambda r: r * math.exp(-0.5 * r * r) * f(a, b, s1 * r * ca)
                                 * f(a, b, s2 * r * cb), 0.0, 12.0, points=pts,
                                 epsabs=1e-16, epsrel=1e-14, limit=200)[0]
            return val
        tot = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi - lo > 1e-15:
                tot += integrate.quad(radial, lo, hi, epsabs=1e-15, epsrel=1e-14, limit=200)[0]
        out.append(tot / (2 * math.pi))
    return out


@pytest.mark.parametrize("name", ["elu", "selu"])
@pytest.mark.parametrize("s1,s2", [(1.0, 1.2), (0.3, 0.25), (4.0, 3.1), (20.0, 26.0),
                                   (300.0, 340.0)])
@pytest.mark.parametrize("theta", [0.0, 1e-3, 0.4, math.pi / 2, 2.6, math.pi])
def test_node_matches_polar_reference(name, s1, s2, theta):
    act = get_activation(name)
    a, b = act.params
    F, G = angular.node(a, b, s1, s2, theta)
    Fr, Gr = _polar(a, b, s1, s2, theta)
    assert abs(F - Fr) <= 1e-12 * b * b * (s1 * s2 + 1.0), (F, Fr)
    assert abs(G - Gr) <= 1e-12 * b * b * max(1.0, a * a), (G, Gr)


def _table_error(tab, s, theta_max, seed, lowest):
    """Largest |table - fresh node| of (F, G) at 200 random points of the table's domain
    (half the angles log-uniform down to theta_max 10^lowest: the graded panels near 0
    get their share), and the largest (F, G) there."""
    nt, ns, P = angular.dims(tab)
    rng = np.random.default_rng(seed)
    W = np.empty((P, 2, nt + 1, ns + 1))
    ready = np.zeros(P, dtype=bool)
    tb = np.empty(ns + 1)
    worst = np.zeros(2)
    for k in range(200):
        th = theta_max * (rng.uniform() if k % 2 else 10.0 ** rng.uniform(lowest, 0.0))
        s1, s2 = rng.choice(s, 2)
        ready[:] = False
        got = np.array(angular.evaluate(tab, W, ready, tb, s1, s2, math.cos(th)))
        worst = np.maximum(worst, np.abs(got - np.array(angular.node(1.0, 1.0, s1, s2, th))))
    return worst, angular.node(1.0, 1.0, s.max(), s.max(), 0.0)


@pytest.mark.parametrize("s0,spread,theta_max,graded", [(1.0, 0.15, 0.5, False),
                                                        (1.0, 0.15, math.pi, False),
                                                        (5.0, 0.3, 0.3, False),
                                                        (1.0, 0.0, 1.0, False),
                                                        (300.0, 0.1, 0.3, False),
                                                        (3000.0, 0.05, 0.2, True)])
def test_table_reproduces_fresh_nodes(s0, spread, theta_max, graded):
    act = get_activation("elu")
    s = s0 * (1.0 + spread * np.linspace(-1.0, 1.0, 40))
    tab = angular.build(act, s, theta_max, 10**6, seed=3)
    nt, ns, P = angular.dims(tab)
    assert nt > 0 and (ns == 0) == (spread == 0.0) and (P > 1) == graded
    worst, Fmax = _table_error(tab, s, theta_max, 11, -5.0)
    assert worst[0] <= 1e-12 * Fmax[0] and worst[1] <= 1e-12 * Fmax[1], worst


def test_table_at_the_rounding_floor_is_used_within_rtol_last(monkeypatch):
    # ELU past its unbounded point: s ~ 8000 with a +-25 % spread.  No degree reproduces
    # the check points to RTOL (the best miss by ~1.1 RTOL in the first graded panel), so
    # without RTOL_LAST the layer would go to the exact rule (~10 ms a pair); with it the
    # table is used, and it is within 1e-12 of fresh node values at 200 random points.
    act = get_activation("elu")
    s = 8000.0 * (1.0 + 0.25 * np.linspace(-1.0, 1.0, 40))
    tab = angular.build(act, s, 0.3, 10**6, seed=3)
    nt, ns, P = angular.dims(tab)
    assert nt > 0 and P > 1
    worst, Fmax = _table_error(tab, s, 0.3, 5, -6.0)
    assert worst[0] <= angular.RTOL_LAST * Fmax[0] and worst[1] <= angular.RTOL_LAST * Fmax[1]
    monkeypatch.setattr(angular, "RTOL_LAST", angular.RTOL)
    assert angular.build(act, s, 0.3, 10**6, seed=3).size == 0


def test_table_refused_when_it_cannot_be_checked(monkeypatch):
    act = get_activation("elu")
    s = np.linspace(0.9, 1.1, 10)
    assert angular.build(act, s, 1.0, 10).size == 0       # over the node budget
    assert angular.build(act, np.array([0.0, 1.0]), 1.0, 10**6).size == 0  # q = 0 input
    monkeypatch.setattr(angular, "NT_LADDER", (4,))      # too coarse to pass its check
    assert angular.build(act, s, math.pi, 10**6).size == 0
    assert not angular.applies(get_activation("tanh"))


def _inputs(n, d, rng, norms=True):
    X = rng.standard_normal((n, d))
    if norms:
        return X * (1.0 + 0.15 * rng.uniform(-1.0, 1.0, (n, 1)))
    return X / np.linalg.norm(X, axis=1, keepdims=True) * math.sqrt(d)


def _run(act, sw2, sb2, X, L, exact):
    n = X.shape[0]
    rec = setup(act, sw2, sb2, X, [(np.arange(n), np.arange(n), True)])
    if exact:
        rec.mode = K.MODE_GENERAL
    S = np.empty((L, n, n))
    T = np.empty((L, n, n))
    rec.compute(L, [(S, T)])
    return S, T, rec


def _rel(A, B):
    d = np.sqrt(np.einsum("lii->li", B))
    return float(np.max(np.abs(A - B) / (d[:, :, None] * d[:, None, :])))


# ordered, near the edge of chaos, chaotic (elu's chi_1 = 1 line passes sw2 ~ 1.8 at
# sb2 = 0.05), and q growing without bound at sw2 = 2
@pytest.mark.parametrize("name,sw2,sb2", [("elu", 1.0, 0.5), ("elu", 1.8, 0.05),
                                          ("elu", 2.0, 0.05), ("selu", 0.8, 0.3),
                                          ("selu", 1.5, 0.05)])
def test_raw_kernels_match_exact_rule(name, sw2, sb2):
    act = get_activation(name)
    X = _inputs(24, 20, np.random.default_rng(5))
    X[1] = X[0] * 1.07 + 1e-6 * X[2]  # nearly parallel, different norms: c -> 1
    L = 25
    S, T, rec = _run(act, sw2, sb2, X, L, exact=False)
    S0, T0, _ = _run(act, sw2, sb2, X, L, exact=True)
    assert rec.angular_pairs > 0 and rec.fallback_pairs == 0
    # Each layer's table meets RTOL = 1e-13 of its largest |G|, a few times that of a
    # pair's own; Theta sums the layers' errors (Theta^{l+1} = Sigma^{l+1} +
    # Sigmadot^{l+1} Theta^l): allow 4 RTOL per layer (measured worst: 1.3 RTOL).
    assert _rel(S, S0) <= 1e-12 and _rel(T, T0) <= 4 * angular.RTOL * L


def test_shared_norm_elu_takes_the_table_and_matches_the_shared_rule():
    act = get_activation("elu")
    rng = np.random.default_rng(2)
    X = _inputs(12, 20, rng, norms=False)
    X[1] = X[0] + 1e-6 * rng.standard_normal(20)
    X[1] *= math.sqrt(20) / np.linalg.norm(X[1])
    ds = mf.kernels(X, "elu", 1.5, 0.05, depth=20, progress=False)
    assert "angle" in ds.attrs["method"] and ds.attrs["pairs_exact_fallback"] == 0
    # The shared-norm 2-D rule per pair (what these inputs took before), carrying 1 - c.
    ref = setup(act, 1.5, 0.05, X, [(np.arange(12), np.arange(12), True)])
    old = Recursion(act, 1.5, 0.05, ref.qz, True, ref.blocks, hermite_series=False)
    assert old.mode == K.MODE_SHARED_QUAD
    S = np.empty((20, 12, 12))
    T = np.empty((20, 12, 12))
    old.compute(20, [(S, T)])
    assert _rel(ds["nngp"].values, S) <= 1e-12 and _rel(ds["ntk"].values, T) <= 1e-12


def test_without_table_the_exact_rule_takes_the_pairs(monkeypatch):
    act = get_activation("elu")
    X = _inputs(16, 10, np.random.default_rng(8))
    S1, T1, rec1 = _run(act, 1.0, 0.5, X, 12, exact=False)
    monkeypatch.setattr(angular, "build", lambda *args, **kw: np.empty(0))
    S2, T2, rec2 = _run(act, 1.0, 0.5, X, 12, exact=False)
    assert rec1.angular_pairs > 0 and rec2.angular_pairs == 0 and rec2.fallback_pairs > 0
    assert _rel(S1, S2) <= 1e-12 and _rel(T1, T2) <= 1e-12


def test_two_point_block_at_exact_alignment():
    """c = 1 exactly with unequal variances (x' = 1.3 x, sb2 = 0): theta = 0 is a node."""
    act = get_activation("elu")
    q1, q2 = 1.0, 1.69
    sig1 = np.array([[q1, 1.3], [1.3, q2]])
    idx = np.arange(2)
    rec = Recursion(act, 1.0, 0.0, np.array([q1, q2]), False, [Block(idx, idx, True, sig1, None)])
    rec.n_pairs = 10**4  # as if part of a large set: the table is built
    S = np.empty((2, 2, 2))
    T = np.empty((2, 2, 2))
    rec.compute(2, [(S, T)])
    Fr, Gr = _polar(1.0, 1.0, 1.0, 1.3, 0.0)
    assert abs(S[1, 0, 1] - Fr) <= 1e-12 * 1.3
    assert abs((T[1, 0, 1] - S[1, 0, 1]) / 1.3 - Gr) <= 1e-12


def test_layers_the_mehler_series_takes_whole_build_no_table_and_values_are_unchanged():
    # SELU at (1.5, 0.05) is chaotic (c* < 1): past the first layers the Mehler series
    # takes every pair, so those layers build no angular table.  The kernel must be the
    # same bit for bit as with a table at every layer (a pair takes the table only where
    # the series misses its bound), and through iterate().
    rng = np.random.default_rng(4)
    X = _inputs(40, 20, rng)
    idx = np.arange(40)
    act = get_activation("selu")
    out = []
    for lazy in (True, False):
        rec = setup(act, 1.5, 0.05, X, [(idx, idx, True)])
        rec.layer_major = lazy
        S = np.empty((25, 40, 40))
        T = np.empty((25, 40, 40))
        rec.compute(25, [(S, T)])
        out.append((S, T, rec.angular_skipped, rec.angular_pairs, rec.fallback_pairs))
    assert out[0][2] >= 10 and out[1][2] == 0 and out[0][3:] == out[1][3:]
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    rec = setup(act, 1.5, 0.05, X, [(idx, idx, True)])
    for _ in rec.iterate(25):
        pass
    assert rec.angular_skipped == out[0][2]
    np.testing.assert_array_equal(rec.blocks[0].th, out[0][1][-1])
