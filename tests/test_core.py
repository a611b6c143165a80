"""Mean-field core: closed forms, independent high-precision references, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meanfield as mf

from . import reference as ref

# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("sw2,sb2", [(0.5, 0.1), (1.0, 0.3), (1.9, 0.05), (1.5, 0.0)])
def test_relu_closed_form(sw2, sb2):
    r = mf.analyze("relu", sw2, sb2)
    assert r.q_star == pytest.approx(sb2 / (1 - sw2 / 2), rel=1e-15, abs=0)
    assert r.chi1 == pytest.approx(sw2 / 2, rel=1e-15)
    assert r.phase == "ordered" and r.c_star == 1.0
    assert r.xi_c == pytest.approx(-1 / math.log(sw2 / 2), rel=1e-14)
    assert r.max_depth == pytest.approx(6 * r.xi_c, rel=1e-15)
    assert r.converged


def test_relu_critical_point_and_unbounded_length():
    crit = mf.analyze("relu", 2.0, 0.0)
    assert crit.phase == "critical" and crit.chi1 == 1.0 and math.isinf(crit.xi_c)
    assert mf.critical_sw2("relu", 0.0) == 2.0
    r = mf.analyze("relu", 2.5, 0.1)
    assert math.isinf(r.q_star) and not r.converged and math.isnan(r.xi_c)
    assert "no finite fixed point" in r.status
    # chi_1 is the q -> inf limit sw2/2; the phase is "unbounded", not chaotic or critical.
    assert r.chi1 == pytest.approx(1.25) and r.phase == "unbounded"


def test_leaky_relu_closed_form():
    a = 0.2
    act = mf.get_activation("leaky_relu", slope=a)
    r = mf.analyze(act, 1.2, 0.3)
    slope = 1.2 * (1 + a * a) / 2
    assert r.q_star == pytest.approx(0.3 / (1 - slope), rel=1e-15)
    assert r.chi1 == pytest.approx(slope, rel=1e-15)


@pytest.mark.parametrize("sw2,sb2", [(0.3, 0.2), (0.9, 1.0)])
def test_linear_closed_form(sw2, sb2):
    r = mf.analyze("linear", sw2, sb2)
    assert r.q_star == pytest.approx(sb2 / (1 - sw2), rel=1e-15)
    assert r.chi1 == pytest.approx(sw2, rel=1e-15)
    assert r.xi_q == pytest.approx(-1 / math.log(sw2), rel=1e-14)


def _erf_reference(sw2, sb2):
    """q*, c*, chi_1, chi_c for erf from its arcsine kernel, solved with mpmath."""
    mp = ref.mp
    sw2, sb2 = mp.mpf(sw2), mp.mpf(sb2)
    V = lambda q: sw2 * 2 / mp.pi * mp.asin(2 * q / (1 + 2 * q)) + sb2  # noqa: E731
    q = mp.findroot(lambda q: V(q) - q, ref.q_star("erf", float(sw2), float(sb2)), verify=False)
    assert abs(V(q) - q) < mp.mpf(10) ** -25
    chi1 = sw2 * 4 / mp.pi / mp.sqrt(1 + 4 * q)
    C = lambda c: (sw2 * 2 / mp.pi * mp.asin(2 * q * c / (1 + 2 * q)) + sb2) / q  # noqa: E731
    if chi1 <= 1:
        return float(q), 1.0, float(chi1), float(chi1)
    # erf is odd: without bias C(0) = 0 and c* = 0.  Otherwise bisect in eps = 1 - c,
    # where h(eps) = 1 - C(1 - eps) - eps is > 0 near 0 and < 0 at eps = 1.
    if sb2 == 0:
        c = mp.mpf(0)
    else:
        h = lambda e: 1 - C(1 - e) - e  # noqa: E731
        lo, hi = mp.mpf(10) ** -15, mp.mpf(1)
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if h(mid) > 0 else (lo, mid)
        c = 1 - (lo + hi) / 2
    assert abs(C(c) - c) < mp.mpf(10) ** -25
    chic = sw2 * 4 / mp.pi / mp.sqrt((1 + 2 * q) ** 2 - 4 * q * q * c * c)
    return float(q), float(c), float(chi1), float(chic)


@pytest.mark.parametrize("sw2,sb2", [(0.8, 0.2), (1.5, 0.05), (3.0, 0.3), (1.2, 0.0)])
def test_erf_closed_form(sw2, sb2):
    q, c, chi1, chic = _erf_reference(sw2, sb2)
    r = mf.analyze("erf", sw2, sb2)
    assert r.q_star == pytest.approx(q, rel=1e-12)
    assert r.c_star == pytest.approx(c, rel=1e-12, abs=1e-15)
    assert r.chi1 == pytest.approx(chi1, rel=1e-12)
    assert r.chi_c == pytest.approx(chic, rel=1e-12)
    assert r.xi_c == pytest.approx(-1 / math.log(chic), rel=1e-11)


def test_erf_near_critical_keeps_one_minus_c():
    """Just inside the chaotic phase c* -> 1: 1 - c* must keep its relative digits."""
    sw2c = mf.critical_sw2("erf", 0.05)
    sw2 = sw2c * (1 + 1e-6)
    q, c, chi1, chic = _erf_reference(sw2, 0.05)
    r = mf.analyze("erf", sw2, 0.05)
    assert 0 < 1 - c < 1e-4
    assert (1 - r.c_star) == pytest.approx(1 - c, rel=1e-8)
    assert r.xi_c == pytest.approx(-1 / math.log(chic), rel=1e-8)


# --------------------------------------------------------------------------- quadrature vs mpmath


@pytest.mark.parametrize("name", ["tanh", "gelu", "silu", "softplus", "sigmoid", "elu", "selu",
                                  "hard_tanh"])
@pytest.mark.parametrize("q", [1e-3, 0.7, 4.0, 30.0, 300.0])
def test_one_point_moments_against_mpmath(name, q):
    from meanfield.core.gaussian.moments import moments1

    f, df, kinks = ref.MP_ACTS[name]
    m = moments1(mf.get_activation(name).record, q, np.empty(0), False)
    e_phi2 = float(ref.gauss1(lambda x: f(x) ** 2, q, kinks))
    e_dphi2 = float(ref.gauss1(lambda x: df(x) ** 2, q, kinks))
    assert m[1] == pytest.approx(e_phi2, rel=2e-14)
    assert m[3] == pytest.approx(e_dphi2, rel=2e-14)


# Points in the three phases and near the critical line, for smooth activations.
POINTS = {
    "tanh": [(1.3, 0.3), (2.5, 0.1), (4.0, 1.5), (2.1, 0.3)],
    "gelu": [(1.2, 0.1), (1.8, 0.5), (1.6, 0.2)],
    "silu": [(1.5, 0.2), (1.9, 0.05), (1.99, 0.5)],
}


@pytest.mark.parametrize("name,sw2,sb2", [(n, w, b) for n, pts in POINTS.items() for w, b in pts])
def test_point_against_high_precision(name, sw2, sb2):
    q, chi1, vprime = ref.one_point(name, sw2, sb2)
    r = mf.analyze(name, sw2, sb2)
    assert r.converged
    assert r.q_star == pytest.approx(q, rel=1e-10)
    assert r.chi1 == pytest.approx(chi1, rel=1e-10)
    assert r.xi_q == pytest.approx(-1 / math.log(abs(vprime)), rel=1e-9)
    assert r.xi_grad == pytest.approx(-1 / math.log(chi1), rel=1e-9)
    if chi1 > 1:
        c, chic = ref.c_star(name, sw2, sb2, q)
        assert r.c_star == pytest.approx(c, rel=1e-10)
        assert r.chi_c == pytest.approx(chic, rel=1e-10)
        assert r.xi_c == pytest.approx(-1 / math.log(chic), rel=1e-9)
    else:
        assert r.c_star == 1.0 and r.chi_c == r.chi1


@pytest.mark.parametrize("name,sw2,sb2", [("hard_tanh", 1.6, 0.1), ("selu", 1.3, 0.2)])
def test_kinked_chaotic_point_against_reference(name, sw2, sb2):
    q, chi1, _ = ref.one_point(name, sw2, sb2)
    r = mf.analyze(name, sw2, sb2)
    assert r.phase == "chaotic"
    assert r.q_star == pytest.approx(q, rel=1e-10)
    assert r.chi1 == pytest.approx(chi1, rel=1e-10)
    c, chic = ref.c_star(name, sw2, sb2, q)
    assert r.c_star == pytest.approx(c, rel=1e-9)
    assert r.chi_c == pytest.approx(chic, rel=1e-9)


# --------------------------------------------------------------------------- known facts, edges


def test_tanh_zero_bias_facts():
    assert mf.critical_sw2("tanh", 0.0) == pytest.approx(1.0, abs=1e-12)
    ordered = mf.analyze("tanh", 0.8, 0.0)
    assert ordered.q_star == 0.0 and ordered.chi1 == pytest.approx(0.8, rel=1e-15)
    chaotic = mf.analyze("tanh", 2.0, 0.0)
    assert chaotic.c_star == 0.0 and chaotic.phase == "chaotic"
    crit = mf.analyze("tanh", 1.0, 0.0)
    assert crit.q_star == 0.0 and crit.phase == "critical" and math.isinf(crit.xi_c)


def test_zero_length_limit_at_a_kink():
    # SELU with sb2 = 0: q -> 0 and phi' differs on the two sides of 0, so
    # chi_1 -> sw2 lambda^2 (1 + alpha^2) / 2 (the q -> 0+ limit), not sw2 phi'(0)^2.
    from meanfield.core.functions import SELU_ALPHA, SELU_LAMBDA

    d2 = SELU_LAMBDA ** 2 * (1.0 + SELU_ALPHA ** 2) / 2.0
    r = mf.analyze("selu", 0.3, 0.0)
    assert r.q_star == 0.0 and r.phase == "ordered"
    assert r.chi1 == pytest.approx(0.3 * d2, rel=1e-14)
    assert r.xi_q == pytest.approx(-1.0 / math.log(0.3 * d2), rel=1e-13)
    assert mf.critical_sw2("selu", 0.0) == pytest.approx(1.0 / d2, rel=1e-15)
    # ELU (alpha = 1) has phi' continuous at 0: chi_1 = sw2 on the q* = 0 branch.
    assert mf.analyze("elu", 0.7, 0.0).chi1 == pytest.approx(0.7, rel=1e-14)


def test_tanh_critical_line_against_reference():
    sb2 = 0.05
    got = mf.critical_sw2("tanh", sb2)
    f = lambda w: ref.one_point("tanh", w, sb2)[1] - 1  # noqa: E731
    from scipy.optimize import brentq

    want = brentq(f, 1.5, 2.0, xtol=1e-14, rtol=1e-14)
    assert got == pytest.approx(want, rel=1e-10)
    r = mf.analyze("tanh", got, sb2)
    assert r.chi1 == pytest.approx(1.0, abs=1e-12)
    assert r.max_depth > 1e6  # xi_c diverges on the critical line


def test_critical_line_dataarray():
    da = mf.critical_line("tanh", [0.0, 0.05, 0.5])
    assert da.dims == ("sb2",) and da.attrs["units"] == "1" and "long_name" in da.attrs
    assert np.all(np.diff(da.values) > 0)  # the critical sw2 grows with sb2 for tanh


def test_dropout_removes_the_critical_line():
    sw2c = mf.critical_sw2("tanh", 0.05)
    no_dropout = mf.analyze("tanh", sw2c, 0.05)
    with_dropout = mf.analyze("tanh", sw2c, 0.05, rho=0.95)
    assert no_dropout.max_depth > 1e6
    assert with_dropout.c_star < 1 and with_dropout.chi_c < 1
    assert math.isfinite(with_dropout.xi_c) and with_dropout.xi_c < 100


def test_dropout_at_zero_length():
    smooth = mf.analyze("tanh", 0.5, 0.0, rho=0.8)
    assert smooth.q_star == 0.0 and smooth.c_star == 0.0 and smooth.chi_c == 0.8
    kinked = mf.analyze("relu", 1.0, 0.0, rho=0.8)
    assert kinked.q_star == 0.0 and math.isnan(kinked.c_star) and not kinked.converged
    ds = mf.phase_diagram("erf", [0.1, 1.0], [0.0, 0.1], rho=0.9)
    assert bool(ds.converged.all())


def test_dropout_against_reference():
    sw2, sb2, rho = 1.5, 0.1, 0.9
    q = float(ref.q_star("tanh", sw2, sb2, rho=rho))
    c, chic = ref.c_star("tanh", sw2, sb2, q, rho=rho)
    r = mf.analyze("tanh", sw2, sb2, rho=rho)
    assert r.q_star == pytest.approx(q, rel=1e-10)
    assert r.c_star == pytest.approx(c, rel=1e-10)
    assert r.chi_c == pytest.approx(chic, rel=1e-10)


def test_q0_selects_the_fixed_point_and_fixed_points_lists_all():
    pts = mf.fixed_points("tanh", 0.8, 0.0)
    assert pts[0]["q"] == 0.0 and pts[0]["stable"]
    for p in mf.fixed_points("erf", 3.0, 0.3):
        assert p["q"] >= 0.3 - 1e-12
    r = mf.analyze("tanh", 1.5, 0.05, q0=0.01)
    assert r.q_star == pytest.approx(mf.analyze("tanh", 1.5, 0.05).q_star, rel=1e-12)


def test_gelu_large_q_near_critical():
    """Chaotic-phase q* over 100: the step shrinks with sqrt(q), accuracy must hold."""
    q, chi1, _ = ref.one_point("gelu", 1.99, 1.0)
    r = mf.analyze("gelu", 1.99, 1.0)
    assert q > 100
    assert r.q_star == pytest.approx(q, rel=1e-10)
    assert r.chi1 == pytest.approx(chi1, rel=1e-10)


@pytest.mark.parametrize("name", ["tanh", "gelu", "sin"])
def test_tiny_bias_converges(name):
    # Found by hypothesis: sb2 = 2.85e-262 hit the iteration cap (tanh) and divided by
    # q^2 = 0 (gelu).  With V'(0) = sw2 phi'(0)^2 < 1 the fixed point is ~ sb2 / (1 - V'(0)).
    sw2, sb2 = 0.8681790297665146, 2.851112776227314e-262
    r = mf.analyze(name, sw2, sb2)
    assert r.converged and r.phase == "ordered"
    if name != "gelu":  # phi'(0) = 1: q* = sb2 / (1 - sw2) to first order, exact here
        assert r.q_star == pytest.approx(sb2 / (1 - sw2), rel=1e-12)


def test_no_critical_point_where_chi1_jumps():
    # silu at sb2 = 0.05: the fixed point reached from q = 1 is ~0.2 with chi_1 ~ 0.78 up to
    # some sw2, then the map grows without bound (chi_1 -> sw2/2 ~ 1.08): chi_1 jumps across
    # 1 and never equals it.  Brent converges onto the jump; it must not be reported.
    assert math.isnan(mf.critical_sw2("silu", 0.05))
    cp = mf.critical_point("silu", 0.05)
    assert "diverges" in cp.reason and not any(c.direction == "up" for c in cp.crossings)
    # recommend moves to the nearest sb2 with an edge of chaos and says so.
    rec = mf.recommend("silu", depth=100, sb2=0.05)
    assert rec.requested_sb2 == 0.05 and rec.sb2 > 0.05 and "diverges" in rec.note
    assert abs(rec.chi1 - 1) < 1e-9 and math.isfinite(rec.q_star)


# --------------------------------------------------------------------------- custom activations


def test_custom_activation_complex_step_matches_builtin():
    import math as m

    def my_tanh(x):
        return (m.e ** (2 * x) - 1) / (m.e ** (2 * x) + 1) if False else np_tanh(x)

    import numba

    @numba.njit
    def np_tanh(x):
        return np.tanh(x)

    act = mf.register_activation("my_tanh", np_tanh, odd=True, overwrite=True)
    try:
        a = mf.analyze(act, 2.5, 0.1)
        b = mf.analyze("tanh", 2.5, 0.1)
        for k in ("q_star", "c_star", "chi1", "chi_c", "xi_q", "xi_c"):
            assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-12)
        assert "my_tanh" in mf.activations()
    finally:
        mf.unregister_activation("my_tanh")


def test_custom_activation_with_kink_needs_derivative():
    def myrelu(x):
        return x if x > 0 else 0.0

    with pytest.raises(ValueError, match="dphi"):
        mf.register_activation("myrelu_nodphi", myrelu)
    act = mf.register_activation("myrelu", myrelu, lambda x: 1.0 if x > 0 else 0.0, kinks=[0.0],
                                 slopes=(1.0, 0.0), overwrite=True)
    try:
        r = mf.analyze(act, 1.5, 0.2)
        assert r.q_star == pytest.approx(0.2 / (1 - 0.75), rel=1e-13)
        assert r.chi1 == pytest.approx(0.75, rel=1e-13)
    finally:
        mf.unregister_activation("myrelu")


# --------------------------------------------------------------------------- invariants

GRID_ACTS = ["tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "softplus", "sigmoid",
             "erf", "sin", "linear", "hard_tanh"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(GRID_ACTS), sw2=st.floats(0.05, 4.0), sb2=st.floats(0.0, 2.0))
def test_invariants(name, sw2, sb2):
    r = mf.analyze(name, sw2, sb2)
    if r.converged:
        assert r.q_star >= sb2 * (1 - 1e-14)
        assert -1.0 <= r.c_star <= 1.0
        assert r.xi_c >= 0
    if math.isinf(r.q_star):
        assert r.phase == "unbounded" and not r.converged
        return
    if math.isnan(r.chi1):
        assert r.phase == "undetermined" and not r.converged
        return
    lc = math.log(r.chi1) if r.chi1 > 0 else -math.inf
    expected = "ordered" if lc < -1e-3 else ("chaotic" if lc > 1e-3 else "critical")
    assert r.phase == expected
    if r.phase == "chaotic" and r.converged:
        assert r.c_star < 1 and 0 <= r.chi_c < 1 and r.xi_c > 0 and r.max_depth > 0


@settings(max_examples=8, deadline=None)
@given(name=st.sampled_from(["tanh", "erf", "relu"]), cut=st.integers(1, 6), cut2=st.integers(1, 4))
def test_chunking_does_not_change_a_bit(name, cut, cut2):
    sw2 = np.linspace(0.5, 4, 7)
    sb2 = np.linspace(0, 2, 5)
    full = mf.phase_diagram(name, sw2, sb2)
    serial = mf.phase_diagram(name, sw2, sb2, parallel=False)
    xr.testing.assert_identical(full, serial)
    parts = [mf.phase_diagram(name, w, b, parallel=False)
             for w in (sw2[:cut], sw2[cut:]) for b in (sb2[:cut2], sb2[cut2:])]
    joined = xr.combine_by_coords(parts, combine_attrs="override")
    for v in full.data_vars:
        np.testing.assert_array_equal(joined[v].values, full[v].values)


def test_phase_diagram_dataset_is_self_describing():
    ds = mf.phase_diagram("tanh", np.linspace(0.5, 4, 6), np.linspace(0, 2, 4))
    assert ds["q_star"].dims == ("sw2", "sb2")
    for name in ("q_star", "c_star", "chi1", "chi_c", "xi_q", "xi_c", "xi_grad", "max_depth",
                 "converged", "sw2", "sb2"):
        assert "long_name" in ds[name].attrs and "units" in ds[name].attrs
    assert ds.phase.attrs["flag_meanings"].split() == ["undetermined", "ordered", "critical",
                                                        "chaotic", "unbounded"]
    assert list(ds.phase.attrs["flag_values"]) == [-1, 0, 1, 2, 3]
    assert ds.attrs["activation"] == "tanh" and "meanfield_version" in ds.attrs
    point = mf.analyze("tanh", float(ds.sw2[3]), float(ds.sb2[2]))
    assert float(ds.q_star[3, 2]) == point.q_star


def test_netcdf_round_trip(tmp_path):
    ds = mf.phase_diagram("relu", [1.0, 2.5], [0.0, 0.5])
    ds.to_netcdf(tmp_path / "d.nc")
    back = xr.load_dataset(tmp_path / "d.nc")
    xr.testing.assert_identical(back, ds)


# --------------------------------------------------------------------------- recommender


def test_recommend_tanh():
    rec = mf.recommend("tanh", 200)
    assert rec.sb2 == 0.05
    assert rec.sw2 == pytest.approx(mf.critical_sw2("tanh", 0.05), rel=1e-14)
    lo, hi = rec.sw2_interval
    assert lo < rec.sw2 < hi
    for edge in (lo, hi):
        assert mf.analyze("tanh", edge, 0.05).max_depth == pytest.approx(200, rel=1e-6)
    assert mf.analyze("tanh", 0.5 * (lo + rec.sw2), 0.05).max_depth > 200
    assert rec.weight_std(400) == pytest.approx(math.sqrt(rec.sw2) / 20)
    assert "fan_in" in str(rec)


def test_recommend_relu_is_he_init():
    rec = mf.recommend("relu", 50)
    assert (rec.sw2, rec.sb2) == (2.0, 0.0)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs,param", [
    (dict(activation="tanh", sw2=-1.0, sb2=0.1), "sw2"),
    (dict(activation="tanh", sw2=1.0, sb2=float("nan")), "sb2"),
    (dict(activation="tanh", sw2=float("inf"), sb2=0.1), "sw2"),
    (dict(activation="nope", sw2=1.0, sb2=0.1), "activation"),
])
def test_analyze_rejects_bad_input(kwargs, param):
    with pytest.raises(ValueError, match=param):
        mf.analyze(**kwargs)


def test_bad_options_and_grids():
    with pytest.raises(ValueError, match="rho"):
        mf.analyze("tanh", 1.0, 0.1, rho=0.0)
    with pytest.raises(ValueError, match="sw2 is empty"):
        mf.phase_diagram("tanh", [], [0.1])
    with pytest.raises(ValueError, match="sb2"):
        mf.phase_diagram("tanh", [1.0], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="slope"):
        mf.get_activation("leaky_relu", slope="x")
    with pytest.raises(ValueError, match="unknown parameter"):
        mf.get_activation("tanh", slope=0.1)
    with pytest.raises(ValueError, match="depth"):
        mf.recommend("tanh", 0)


# --------------------------------------------------------------------------- edge of chaos

def _critical_reference(name, sb2, q_guess):
    """An independent critical point: chi_1 = 1 and q = V(q) together mean
    q = F(q) / G(q) + sb2 with F = E phi^2, G = E phi'^2 at variance q (then sw2 = 1/G),
    solved with mpmath at 30 digits from the library's q* (only a starting guess)."""
    mp = ref.mp
    f, df, kinks = ref.MP_ACTS[name]
    F = lambda q: ref.gauss1(lambda x: f(x) ** 2, q, kinks)  # noqa: E731
    G = lambda q: ref.gauss1(lambda x: df(x) ** 2, q, kinks)  # noqa: E731
    q = mp.findroot(lambda q: q - F(q) / G(q) - sb2, mp.mpf(q_guess), tol=mp.mpf(10) ** -24)
    return float(1 / G(q)), float(q)


@pytest.mark.parametrize("name,sb2", [("gelu", 0.3), ("gelu", 0.5), ("gelu", 1.0), ("gelu", 2.0),
                                      ("silu", 1.0), ("silu", 2.0), ("tanh", 0.05),
                                      ("selu", 0.1), ("hard_tanh", 0.3)])
def test_critical_point_against_high_precision(name, sb2):
    cp = mf.critical_point(name, sb2)
    assert not cp.reason and math.isfinite(cp.q_star)
    sw2, q = _critical_reference(name, sb2, cp.q_star)
    assert cp.sw2 == pytest.approx(sw2, rel=1e-12)
    assert cp.q_star == pytest.approx(q, rel=1e-9)
    # the crossing is a real one: ordered just below, chaotic (with finite q*) just above
    below, above = mf.analyze(name, cp.sw2 * (1 - 1e-6), sb2), mf.analyze(name, cp.sw2 * (1 + 1e-6), sb2)
    assert below.phase == "ordered" or below.chi1 < 1
    assert above.chi1 > 1 and math.isfinite(above.q_star)


def test_gelu_edge_of_chaos_is_not_the_slope_at_infinity():
    # The case: at sw2 = 2 the slope of the length map at q = inf equals 1, which is
    # no edge of chaos; the real one is at 1.95615862831943 with q* = 8.77.
    cp = mf.critical_point("gelu", 0.3)
    assert cp.sw2 == pytest.approx(1.9561586283194314, rel=1e-13)
    assert abs(mf.analyze("gelu", cp.sw2, 0.3).chi1 - 1) < 1e-12


@pytest.mark.parametrize("name,sb2", [("gelu", 0.01), ("silu", 0.3), ("softplus", 0.5)])
def test_no_edge_of_chaos_where_lengths_diverge_first(name, sb2):
    cp = mf.critical_point(name, sb2)
    assert math.isnan(cp.sw2) and "diverges" in cp.reason
    line = mf.critical_line(name, [sb2])
    assert math.isnan(float(line[0])) and "diverges" in str(line.reason.values[0])


# Points 1e-3 and 1e-4 (relative in sw2) on the chaotic side of the critical line, where c*
# is within ~1e-3 .. 1e-5 of 1: c* from an independent solve in eps = 1 - c.
NEAR_CRITICAL = [("selu", 0.980817, 0.1), ("hard_tanh", 1.26404, 0.1), ("elu", 1.61, 0.1)] + [
    (name, None, sb2, 1e-4) for name, sb2 in (("selu", 0.1), ("elu", 0.1), ("hard_tanh", 0.1),
                                              ("tanh", 0.1), ("gelu", 0.5), ("silu", 1.0))] + [
    (name, None, 0.1, 1e-3) for name in ("sigmoid", "erf", "sin", "tanh")]


@pytest.mark.parametrize("case", NEAR_CRITICAL, ids=lambda c: "-".join(f"{v}" for v in c if v))
def test_near_critical_chaotic_against_reference(case):
    if case[1] is None:
        name, _, sb2, k = case
        sw2 = mf.critical_sw2(name, sb2) * (1 + k)
    else:
        name, sw2, sb2 = case
    r = mf.analyze(name, sw2, sb2)
    assert r.converged and r.phase in ("chaotic", "critical")
    if name in ref.MP_ACTS:
        q, chi1, _ = ref.one_point(name, sw2, sb2)
        assert r.q_star == pytest.approx(q, rel=1e-12)
        assert r.chi1 == pytest.approx(chi1, rel=1e-12)
    c, chic = ref.c_star_near_one(name, sw2, sb2, r.q_star, 1 - r.c_star)
    assert 1 - r.c_star == pytest.approx(1 - c, rel=1e-9)
    assert r.chi_c == pytest.approx(chic, rel=1e-10)
    assert 0 <= r.chi_c < 1 and r.xi_c > 0 and r.max_depth > 0


# --------------------------------------------------------------------------- moment tables
@pytest.mark.parametrize("name", ["tanh", "silu", "elu"])
def test_moment_table_matches_quadrature(name):
    """Table lookups between the Chebyshev nodes agree with fresh quadrature (the rule the
    solvers used before the table), and the dual series with the first coefficients."""
    from meanfield.core import engine
    from meanfield.core.activation import get_activation
    from meanfield.core.gaussian.moments import moments1
    from meanfield.core.moment_table import lookup_hermite, lookup_moments

    act = get_activation(name)
    table = engine.length_table(act)
    rng = np.random.default_rng(1)
    for q in np.exp(rng.uniform(np.log(1e-3), np.log(1e3), 25)):
        herm = np.zeros(24)
        m = moments1(act.record, q, herm, True)
        t = lookup_moments(act.record, table, q)
        assert t.phi2 == pytest.approx(m.phi2, rel=1e-13)
        assert t.dphi2 == pytest.approx(m.dphi2, rel=1e-13)
        assert t.phi2z == pytest.approx(m.phi2z, rel=1e-13)
        assert abs(t.dphi - m.dphi) <= 1e-13 * math.sqrt(m.dphi2)
        th, tail, tail1 = lookup_hermite(table, q)
        if th.size:  # smooth phi at q <= 1e2
            assert th.size == 128
            # moments1's coarser rule aliases in the highest of its 24 coefficients at small q
            # (a_23 of tanh at q = 0.095 is 5e-14 off; the table's is exact, see below).
            np.testing.assert_allclose(th[:12], herm[:12], rtol=0, atol=1e-13 * math.sqrt(m.phi2))
            assert tail >= -4e-15 * m.phi2 and tail1 >= -4e-15 * q * m.dphi2  # TABLE_TAIL_ROUNDING
            assert (th ** 2).sum() + tail == pytest.approx(m.phi2, rel=1e-13)
            assert (np.arange(128) * th ** 2).sum() + tail1 == pytest.approx(q * m.dphi2, rel=1e-13)


def test_moment_table_falls_back_and_rejects():
    """Outside the table (q = 0, q > 1e4) lookups are the quadrature itself; cells whose
    interpolant fails verification are not used (sigmoid's Hermite tails at q ~ 1e-10 lose
    digits to cancellation against E phi^2 ~ 1/4, and verification catches it)."""
    from meanfield.core import engine
    from meanfield.core.activation import get_activation
    from meanfield.core.gaussian.moments import moments1
    from meanfield.core.moment_table import lookup_hermite, lookup_moments

    act = get_activation("sigmoid")
    table = engine.length_table(act)
    for q in (0.0, 3e4):
        assert lookup_moments(act.record, table, q) == moments1(act.record, q, np.empty(0), True)
    assert table.ok.all()
    assert not table.hok[0] and table.hok[-1]
    assert lookup_hermite(table, 1.5e-10)[0].size == 0
    assert lookup_hermite(table, 1e3)[0].size == 0  # past the Hermite range


@pytest.mark.parametrize("name", ["tanh", "silu"])
def test_moment_table_extension_matches_quadrature(name):
    """The Hermite extension (a_128 .. a_511 and the tails past 512) between the Chebyshev
    nodes agrees with fresh quadrature of the full 512-term row."""
    from meanfield.core import engine
    from meanfield.core.activation import get_activation
    from meanfield.core.moment_table import N_HERMITE_EXT, _hermite_row, lookup_hermite_ext

    act = get_activation(name)
    table = engine.length_table(act)
    rng = np.random.default_rng(2)
    used = 0
    for q in np.exp(rng.uniform(np.log(1e-2), np.log(10.0), 12)):
        ext, tail, tail1 = lookup_hermite_ext(table, q)
        if not ext.size:
            continue
        used += 1
        row = np.zeros(N_HERMITE_EXT + 2)
        _hermite_row(act.record, q, row)
        F = (row[:N_HERMITE_EXT] ** 2).sum() + row[N_HERMITE_EXT]
        assert ext.size == N_HERMITE_EXT - 128
        np.testing.assert_allclose(ext, row[128:N_HERMITE_EXT], rtol=0, atol=1e-13 * math.sqrt(F))
        assert abs(tail - row[N_HERMITE_EXT]) <= 1e-14 * F
        assert tail1 >= -4e-15 * F * 100  # TABLE_TAIL_ROUNDING of q E phi'^2 (<= 100 F here)
    assert lookup_hermite_ext(table, 50.0)[0].size == 0  # past the extension's range
    assert used >= 10


@pytest.mark.parametrize("sw2, sb2, eps_ref, proven", [
    # 1 - c* by the independent nested-quad solve tests/reference.c_star_near_one (secant in
    # eps on sw2 Delta(eps) = q eps, Delta = E(phi(u) - phi(v))^2 / 2, scipy quad 1e-13).
    (3.76271186440678, 1.11864406779661, 0.029712874613301077, True),
    (3.76271186440678, 1.2203389830508475, 0.014871615569574836, False),
])
def test_long_series_proves_c_near_one(sw2, sb2, eps_ref, proven):
    """tanh points with c* = 0.97 and 0.985: the 128-term series cannot prove them; the
    512-term one proves the first (no 2-D evaluation) but not the second, whose tail bound
    (rounding of the tabulated tails) is too wide at 1 - chi_c = 0.018, so 2-D Newton
    polishes it.  Either way eps* agrees with the exact 2-D solve and the reference to the
    condition 1/|1 - chi_c| times rounding."""
    from meanfield.core import engine, point
    from meanfield.core.activation import get_activation
    from meanfield.core.correlation_map import (DualSeries, _extended_series,
                                                _series_fixed_point, solve_c)
    from meanfield.core.length_map import solve_q

    act = get_activation("tanh")
    table = engine.length_table(act)
    fp = solve_q(act.record, sw2, sb2, 1.0, table)
    m = fp.moments
    series = point._dual_series(act.record, table, fp.q, m.phi2, m.dphi2)
    assert series.coef.size == 128
    assert math.isnan(_series_fixed_point(series, sw2, 1.0, fp.q, m.phi2, 1.0)[0])
    longer = _extended_series(table, series, fp.q, m.phi2, m.dphi2)
    assert longer.coef.size == 512
    c_long = _series_fixed_point(longer, sw2, 1.0, fp.q, m.phi2, 1.0)[0]
    assert math.isfinite(c_long) == proven
    cf = solve_c(act.record, sw2, sb2, 1.0, fp.q, m.phi2, series, table, m.dphi2)
    none = DualSeries(np.zeros(0), 0.0, 0.0, 0.0)
    exact = solve_c(act.record, sw2, sb2, 1.0, fp.q, m.phi2, none, table, m.dphi2)
    assert exact.iterations > 2
    if proven:
        assert abs((1 - cf.c) / (1 - c_long) - 1) <= 1e-14
    scale = abs(1.0 - exact.chi_c)  # eps* carries the error of Delta divided by |1 - chi_c|
    assert abs((1 - cf.c) / (1 - exact.c) - 1) * scale <= 1e-14
    assert abs((1 - cf.c) / eps_ref - 1) * scale <= 1e-14
    assert cf.chi_c == pytest.approx(exact.chi_c, rel=1e-13)


def test_moment_table_hermite_against_reference():
    """A high Hermite coefficient from the table against an independent 40-digit value
    (mpmath quadrature of tanh(sqrt(q) z) He_23(z) / sqrt(23!) against the Gaussian)."""
    from meanfield.core import engine
    from meanfield.core.activation import get_activation
    from meanfield.core.moment_table import lookup_hermite

    table = engine.length_table(get_activation("tanh"))
    herm, _, _ = lookup_hermite(table, 0.09514594829923426)
    assert herm[23] == pytest.approx(-1.290767961324052227297e-08, rel=1e-12)
