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
    H, K, terms, is_odd = CH.depth_table(a, q)
    assert is_odd == odd
    for i in range(q.size):
        for j in range(q.size):
            for c in (-0.97, -0.2, 0.35, 0.9, 1.0):
                s12 = c * math.sqrt(q[i] * q[j])
                k = max(terms[i], terms[j])
                full = hermite.mehler_stein(H[i], H[j], k, q[i], q[j], s12, False, False)
                fast = hermite.mehler_stein(H[i], H[j], k, q[i], q[j], s12, False, is_odd)
                ref = pair(a.record, q[i], q[j], s12, False)
                for x, y, r in zip(fast, full, ref):
                    assert abs(x - y) <= 1e-13 * max(1.0, abs(y))
                    assert abs(x - r) <= 1e-11 * max(1.0, abs(r))


def test_row_terms_is_the_tail_criterion():
    """row_terms against the definition: the fewest K whose omitted tails of h_k^2 and of
    k h_k^2 / q are within HERMITE_TAIL of the totals (one spare term, as _terms_needed)."""
    a = mf.get_activation("tanh")
    q = np.linspace(0.1, 4.0, 9)
    H, K, terms, _ = CH.depth_table(a, q)
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
