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
