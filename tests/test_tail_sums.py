"""The tabulated tail sums S0, S1 of the 128-term dual series (moment_table.lookup_tail_sums)
and the tighter tail bounds they give point._dual_series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from . import reference as ref


def _setup(name):
    from meanfield.core import engine
    from meanfield.core.activation import get_activation

    act = get_activation(name)
    return act, engine.length_table(act)


@pytest.mark.parametrize("name", ["tanh", "silu"])
def test_tail_sums_bound_the_true_tail(name):
    """Between the Chebyshev nodes the tail sums agree with fresh quadrature of the full
    512-term row within their stated error, and the tightened bounds of the 128-term series
    contain the tail sum_{n>=128} a_n^2 while being far narrower than the difference bounds
    (TABLE_TAIL_ROUNDING E phi^2 on either side)."""
    from meanfield.core import point
    from meanfield.core.moment_table import (N_HERMITE_EXT, SUM_FLOOR, SUM_TOL,
                                             TABLE_TAIL_ROUNDING, _hermite_row,
                                             lookup_moments, lookup_tail_sums)

    act, table = _setup(name)
    rng = np.random.default_rng(5)
    used = 0
    for q in np.exp(rng.uniform(np.log(0.05), np.log(9.0), 10)):
        s0, s1, x0, x1 = lookup_tail_sums(table, q)
        if math.isnan(s0):
            continue  # outside the verified cells: the difference bounds stay
        used += 1
        row = np.zeros(N_HERMITE_EXT + 2)
        _hermite_row(act.record, q, row)
        a2 = row[:N_HERMITE_EXT] ** 2
        F = a2.sum() + row[N_HERMITE_EXT]
        qg = (np.arange(N_HERMITE_EXT) * a2).sum() + row[N_HERMITE_EXT + 1]
        S0 = a2[128:].sum()
        S1 = (np.arange(128, N_HERMITE_EXT) * a2[128:]).sum()
        assert abs(s0 - S0) <= SUM_TOL * (S0 + SUM_FLOOR * F)
        assert abs(s1 - S1) <= SUM_TOL * (S1 + SUM_FLOOR * qg)
        m = lookup_moments(act.record, table, q)
        series = point._dual_series(act.record, table, q, m.phi2, m.dphi2)
        # The true tail is S0 plus the tail past 512, which the fresh row knows to rounding.
        past = row[N_HERMITE_EXT]
        assert series.tail_lo <= S0 + past + TABLE_TAIL_ROUNDING * F
        assert S0 + past - TABLE_TAIL_ROUNDING * F <= series.tail
        assert series.tail - series.tail_lo <= 1e-2 * TABLE_TAIL_ROUNDING * (F + qg) + 1e-7 * S0
        assert series.tail1 >= S1
    assert used >= 8


def test_inconsistent_tail_sums_are_not_used():
    """A tail-sum table that contradicts the tabulated difference (here S0 shifted by 1e-10
    E phi^2) leaves the difference bounds in force: every fast path keeps its check."""
    from meanfield.core import point
    from meanfield.core.moment_table import lookup_hermite, lookup_moments

    act, table = _setup("tanh")
    q = 2.0
    m = lookup_moments(act.record, table, q)
    good = point._dual_series(act.record, table, q, m.phi2, m.dphi2)
    cs = table.cs.copy()
    cs[:, 0, 0] += 1e-10 * m.phi2  # degree-0 coefficient of S0 in every cell
    bad = point._dual_series(act.record, table._replace(cs=cs), q, m.phi2, m.dphi2)
    _, t0, t1 = lookup_hermite(table, q)
    assert bad.tail == pytest.approx(max(t0, 0.0) + 4e-15 * m.phi2, rel=1e-15)
    assert bad.tail_lo == pytest.approx(t0 - 4e-15 * m.phi2, rel=1e-15)
    assert good.tail - good.tail_lo < 1e-2 * (bad.tail - bad.tail_lo)
    sok = np.zeros_like(table.sok)  # no verified cell: the same
    none = point._dual_series(act.record, table._replace(sok=sok), q, m.phi2, m.dphi2)
    assert (none.tail, none.tail1, none.tail_lo) == (bad.tail, bad.tail1, bad.tail_lo)


@pytest.mark.parametrize("sw2, sb2", [(3.8, 0.6), (4.0, 0.5)])
def test_short_series_proves_mid_c(sw2, sb2):
    """Chaotic tanh points with 0.5 < c* < 0.9: the 128-term series with the tail sums proves
    c* by itself (no extension, no 2-D rule), and agrees with the exact 2-D solve and with
    the independent nested-quad reference (tests/reference.c_star_near_one) to 1e-12."""
    from meanfield.core import point
    from meanfield.core.correlation_map import DualSeries, _series_fixed_point, solve_c
    from meanfield.core.length_map import solve_q

    act, table = _setup("tanh")
    fp = solve_q(act.record, sw2, sb2, 1.0, table)
    m = fp.moments
    series = point._dual_series(act.record, table, fp.q, m.phi2, m.dphi2)
    assert series.coef.size == 128
    c, chic, _ = _series_fixed_point(series, sw2, 1.0, fp.q, m.phi2, 1.0)
    assert 0.5 < c < 0.9
    none = DualSeries(np.zeros(0), 0.0, 0.0, 0.0)
    exact = solve_c(act.record, sw2, sb2, 1.0, fp.q, m.phi2, none, table, m.dphi2)
    assert c == pytest.approx(exact.c, rel=1e-13)
    assert chic == pytest.approx(exact.chi_c, rel=1e-13)
    c_ref, chic_ref = ref.c_star_near_one("tanh", sw2, sb2, fp.q, 1.0 - c)
    assert c == pytest.approx(c_ref, rel=1e-12)
    assert chic == pytest.approx(chic_ref, rel=1e-10)
    r = point.analyze_point  # the whole point takes the same value
    out = np.empty(point.N_OUT)
    r(act.record, table, sw2, sb2, point.Settings(1.0, 1.0, 6.0, 1e-3), out)
    assert out[point.I_C] == c and out[point.I_CHIC] == chic
    assert math.isfinite(out[point.I_XIC])
