"""moments2 at correlations so close to 1 that the 2-D rules cannot resolve u1 - u2.

Below EPS_TAYLOR / max(q, 1) (squared for kinked activations) moments2 switches to the
expansion about c = 1; these tests pin that it returns finite values with the right
first-order behaviour there (the 2-D rule used to return noise for Delta from eps ~ 1e-25
and to fail outright below eps ~ 1e-38), and that the switch is continuous with the rule.
"""

import numpy as np
import pytest

from meanfield import get_activation
from meanfield.core.gaussian import moments as E


@pytest.mark.parametrize("name", ["tanh", "softplus", "silu", "elu", "hard_tanh", "selu"])
@pytest.mark.parametrize("q", [1e-3, 1.0, 37.0])
def test_tiny_eps_expansion(name, q):
    rec = get_activation(name).record
    m1 = E.moments1(rec, q, np.empty(0), False)
    for eps in (1e-40, 1e-100, 1e-300, 5e-324):
        m = E.moments2(rec, q, eps)
        assert np.isfinite([m.D, m.Delta, m.Dp]).all()
        assert m.Delta == pytest.approx(q * eps * m1.dphi2, rel=1e-15, abs=0.0)
        assert m.D + m.Delta == pytest.approx(m1.phi2, rel=1e-15)
        assert m.Dp == pytest.approx(m1.dphi2, rel=1e-15)


@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_expansion_meets_the_rule(name):
    """Just above the threshold the 2-D rule and the expansion agree: D and Dp to rounding,
    Delta to the digits the rule still has there (its u1 - u2 is ~1e-8 of u1)."""
    rec = get_activation(name).record
    q = 1.0
    below = E.moments2(rec, q, E.EPS_TAYLOR * 0.999)
    above = E.moments2(rec, q, E.EPS_TAYLOR * 1.001)
    assert below.D == pytest.approx(above.D, rel=1e-15)
    assert below.Dp == pytest.approx(above.Dp, rel=1e-15)
    assert below.Delta == pytest.approx(above.Delta, rel=1e-7)


@pytest.mark.parametrize("name", ["elu", "selu", "hard_tanh", "relu_custom"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_pair_at_exact_alignment_with_unequal_variances(name, sign):
    """c = +-1 exactly with s11 != s22 (x' = 1.3 x or -0.7 x at sb2 = 0): a 1-D integral.
    The kinked rule used to divide by the zero smoothing width there."""
    import math

    from scipy import integrate

    import meanfield as mf
    if name == "relu_custom":
        act = mf.register_activation("relu_custom", lambda x: max(x, 0.0), lambda x: 1.0 if x > 0.0 else 0.0,
                                     kinks=(0.0,))
    else:
        act = get_activation(name)
    try:
        s11, s22 = 0.8, 0.8 * 1.69
        D, Dp = E.pair(act.record, s11, s22, sign * math.sqrt(s11 * s22), False)
        r1, r2 = math.sqrt(s11), sign * math.sqrt(s22)
        pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
        pts = sorted({k / r1 for k in act.kinks} | {k / r2 for k in act.kinks})
        f = lambda z: float(act(r1 * z) * act(r2 * z)) * pdf(z)  # noqa: E731
        g = lambda z: float(act.derivative(r1 * z) * act.derivative(r2 * z)) * pdf(z)  # noqa: E731
        Dr = integrate.quad(f, -12, 12, points=pts, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
        Dpr = integrate.quad(g, -12, 12, points=pts, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
        assert D == pytest.approx(Dr, rel=1e-12, abs=1e-14)
        assert Dp == pytest.approx(Dpr, rel=1e-12, abs=1e-14)
    finally:
        if name == "relu_custom":
            mf.unregister_activation("relu_custom")
