"""The conv path's per-pixel Hermite tables on the core's quadrature and Mehler sum
(meanfield.ntk.conv_hermite on meanfield.core.gaussian.hermite): the parity shortcut, the
per-row term counts, and the shared trapezoid grid."""

import math

import numpy as np
import pytest

import meanfield as mf
from meanfield.core.gaussian import hermite
from meanfield.core.gaussian.moments import pair
from meanfield.ntk import conv_hermite as CH


@pytest.mark.parametrize("act,odd", [("tanh", True), ("sigmoid", True), ("silu", False),
                                     ("softplus", False)])
def test_parity_detected_and_odd_sum_matches_full_sum(act, odd):
    """sigmoid = 1/2 + an odd function counts as odd (only h_0 among the even terms); the
    odd-only Horner sum then agrees with the full one and with the 2-D rule."""
    a = mf.get_activation(act)
    q = np.array([0.05, 0.4, 1.3, 3.0])
    H, K, terms, is_odd = CH.depth_table(a, q, pack=False)
    assert is_odd == odd
    # the kernels' table: packed [h_0, h_1, h_3, ...] when odd, the same terms per row
    Hp, Kp, terms_p, odd_p = CH.depth_table(a, q)
    assert odd_p == odd and Kp == K and np.array_equal(terms_p, terms)
    if odd:
        assert Hp.shape == (q.size, 1 + K // 2)
        np.testing.assert_allclose(Hp, H[:, [0] + list(range(1, K, 2))], rtol=0,
                                   atol=1e-15 * np.abs(H).max())
    else:
        np.testing.assert_array_equal(Hp, H)
    for i in range(q.size):
        for j in range(q.size):
            for c in (-0.97, -0.2, 0.35, 0.9, 1.0):
                s12 = c * math.sqrt(q[i] * q[j])
                k = max(terms[i], terms[j])
                full = hermite.mehler_stein(H[i], H[j], k, q[i], q[j], s12, False, False)
                fast = hermite.mehler_stein(H[i], H[j], k, q[i], q[j], s12, False, is_odd)
                packed = CH.herm_pair(Hp[i], Hp[j], k, q[i], q[j], s12, False, odd_p)
                ref = pair(a.record, q[i], q[j], s12, False)
                for x, p, y, r in zip(fast, packed, full, ref):
                    assert abs(x - y) <= 1e-13 * max(1.0, abs(y))
                    assert abs(p - y) <= 1e-13 * max(1.0, abs(y))
                    assert abs(x - r) <= 1e-11 * max(1.0, abs(r))
                    assert abs(p - r) <= 1e-11 * max(1.0, abs(r))


def test_packed_table_falls_back_to_the_full_one(monkeypatch):
    """When the bounds on the unformed even coefficients do not pass the parity test (here:
    a tolerance of 0, which no rounding-level coefficient passes) the table is the full
    one, marked not odd, and the pair sums take every term."""
    a = mf.get_activation("tanh")
    q = np.array([0.05, 0.7, 2.0])
    monkeypatch.setattr(CH, "ODD_TOL", 0.0)
    H, K, terms, odd = CH.depth_table(a, q)
    assert not odd and H.shape == (q.size, K)
    for i in range(q.size):
        for c in (-0.6, 0.95):
            s12 = c * math.sqrt(q[i] * q[-1])
            got = CH.herm_pair(H[i], H[-1], max(terms[i], terms[-1]), q[i], q[-1], s12, False,
                               odd)
            ref = pair(a.record, q[i], q[-1], s12, False)
            for x, r in zip(got, ref):
                assert abs(x - r) <= 1e-11 * max(1.0, abs(r))


@pytest.mark.parametrize("J", [1, 2, 3, 6, 7])
def test_two_chain_odd_sum_is_the_series(J):
    """herm_pair's odd sum (two Horner chains in c^4) against the series summed term by term,
    for packed lengths whose parity starts either chain."""
    rng = np.random.default_rng(J)
    h = rng.normal(size=(2, J + 1))
    K = 2 * J  # packed entries j = 1..J, k = 2j - 1 <= K - 1
    a, b, c = 0.7, 1.9, 0.83
    r = math.sqrt(a * b)
    k = 2 * np.arange(1, J + 1) - 1
    t = h[0, 1:] * h[1, 1:]
    D0 = h[0, 0] * h[1, 0] + np.sum(t * c ** k)
    Dp0 = np.sum(k * t * c ** (k - 1)) / r
    D, Dp = CH.herm_pair(h[0], h[1], K, a, b, c * r, False, True)
    assert abs(D - D0) <= 1e-14 * np.sum(np.abs(t)) + 1e-15
    assert abs(Dp - Dp0) <= 1e-14 * np.sum(k * np.abs(t)) / r


def test_row_terms_is_the_tail_criterion():
    """row_terms against the definition: the fewest K whose omitted tails of h_k^2 and of
    k h_k^2 / q are within HERMITE_TAIL of the totals (one spare term, as _terms_needed)."""
    a = mf.get_activation("tanh")
    q = np.linspace(0.1, 4.0, 9)
    H, K, terms, _ = CH.depth_table(a, q, pack=False)
    k = np.arange(K)
    for row, qi, t in zip(H, q, terms):
        assert 2 < t < K
        bad = []
        for v in (row ** 2, k * row ** 2 / qi):
            tail = np.cumsum(v[::-1])[::-1]   # tail[m] = sum_{k >= m}
            assert tail[t - 1] <= CH.HERMITE_TAIL * v.sum()
            bad.append(tail[t - 2] > CH.HERMITE_TAIL * v.sum())
        assert any(bad)   # minimal: one term fewer breaks the criterion for one series
    assert terms[-1] > terms[0]   # larger variances need more terms


def test_grid_half_width_keeps_large_orders_finite():
    """The conv grid (|z| <= TRAP_Z) gives finite coefficients at K ~ 1000, where the fully
    connected default half-width 2 sqrt(K) + 4 overflows He_k; and for moderate K both
    grids give the same coefficients to rounding."""
    rec = mf.get_activation("tanh").record
    s = np.array([0.5, 1.5, 2.8])
    big = CH.node_coefficients(rec, s, 1024, 2.8)
    assert np.all(np.isfinite(big))
    z, H = hermite.hermite_grid(rec.kappa, 2.8 ** 2, 63)
    A = np.empty((64, s.size))
    B = np.empty_like(A)
    hermite.project(rec, s * s, z, H, A, B)
    small = CH.node_coefficients(rec, s, 64, 2.8)
    assert np.max(np.abs(small - A.T)) <= 1e-15 * np.max(np.abs(A))
