"""The two-point rule for activations with kinks: composite Gauss-Legendre split at every
kink, in eps = 1 - c, with panels graded geometrically away from the kinks (docs/theory.md,
"Numerics").  Used by :mod:`meanfield.core.gaussian.moments`."""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np

from ..functions import K_ELU, K_HARD_TANH, K_SIGMOID, K_SILU, K_SOFTPLUS, K_TANH, phi
from .quadrature import (GL_X, PANEL_MAX, PANELS_PER_STEP, Z1, breakpoints, panel_count,
                         panel_nodes, pdf, step)

Pair = namedtuple("Pair", ["D", "Delta", "Dp"])


@nb.njit(cache=True)
def graded_only(act):
    """True when phi is linear, constant or exponential between its kinks (elu, selu,
    hard_tanh): at any variance its only features are at the kinks, so panels graded away
    from them suffice.  A custom phi may have features anywhere: it keeps uniform panels."""
    return act.kind == K_ELU or act.kind == K_HARD_TANH


# Above this variance a smooth built-in phi(sqrt(q) z) is, at the scale of the Gaussian,
# a kink at 0 rounded off within ~1/sqrt(q) (its complex singularities sit at distance
# ~1/sqrt(q) above z = 0 only), so panels graded away from 0 integrate it in O(log q)
# nodes, where the trapezoid rule needs O(sqrt(q)) per axis.
Q_SOFT = 3e3  # callers pass np.zeros(1) as the kink: a mutable array, so the rules compile once


@nb.njit(cache=True)
def soft_kink(act, q):
    """True when the two-point rule should grade around 0 instead of using a uniform step:
    a smooth built-in whose singularities lie only on the imaginary axis (tanh, the logistic
    family, softplus), at variance above Q_SOFT."""
    return q > Q_SOFT and (act.kind == K_TANH or act.kind == K_SIGMOID
                           or act.kind == K_SOFTPLUS or act.kind == K_SILU)


@nb.njit(cache=True)
def _grade(pts, n, centre, base):
    """Append centre and centre +- base 2^j (j >= 0, up to PANEL_MAX) inside (-Z1, Z1)."""
    if -Z1 < centre < Z1:
        pts[n] = centre
        n += 1
    width = base
    while True:
        for side in (-1.0, 1.0):
            t = centre + side * width
            if -Z1 < t < Z1:
                pts[n] = t
                n += 1
        if width >= PANEL_MAX:
            return n
        width *= 2.0


@nb.njit(cache=True)
def _levels(base):
    """How many doublings take base to PANEL_MAX (the size of one _grade call is 2 + 2 x this)."""
    return 1 + (int(math.ceil(math.log2(PANEL_MAX / base))) if base < PANEL_MAX else 0)


@nb.njit(cache=True)
def graded_breakpoints(kinks, scale, shift, base):
    """Breakpoints in z of phi(scale z + shift) on [-Z1, Z1]: every kink, with panels graded
    geometrically away from it from width ``base`` (the scale on which phi varies there)."""
    nk = kinks.shape[0]
    pts = np.empty(2 + nk * (1 + 2 * _levels(base)))
    pts[0] = -Z1
    pts[1] = Z1
    n = 2
    for k in range(nk):
        n = _grade(pts, n, (kinks[k] - shift) / scale, base)
    return np.unique(pts[:n])


@nb.njit(cache=True)
def kink_breakpoints(act, sq, width, zmax, grade):
    """(pts, graded): breakpoints in z on [-zmax, zmax] for phi(sq z), phi with kinks.

    With ``grade`` (callers pass q > Q_SOFT) and an activation whose only features are its
    kinks (:func:`graded_only`: elu, selu, hard_tanh), the panels are graded away from the
    kinks from ``width``: phi(sq z) changes only within ~1/sq of them, so the cost is
    O(log q) where uniform panels of width ~1/sq cost O(sqrt(q)) (elu at q = 1e8: 36 ms
    -> 0.14 ms a point, and 3e-16 against mpmath where the uniform panels were 2.5e-13
    off).  Otherwise just the kinks, for uniform panels of ``width``."""
    if grade and graded_only(act):
        pts = graded_breakpoints(act.kinks, sq, 0.0, width)
        pts[0] = -zmax
        pts[-1] = zmax
        return pts, True
    return breakpoints(act.kinks, sq, 0.0, -zmax, zmax), False


@nb.njit(cache=True)
def _kinked_breakpoints(kinks, r1, r2, c, s, w1):
    """Outer breakpoints in z1 of the kinked two-point rule (see :func:`_kinked_rule`).

    Besides phi(u1)'s own kinks at z1 = k/r1, the inner integral over z2 is a Gaussian
    smoothing of a kinked function: near z1* = k/(c r2), where u2's kink crosses z2 = 0,
    it varies on the scale sigma = s/|c| only.  Panels are graded geometrically away from
    both, starting at sigma / 8 (resp. the step w1 on which phi(u1) varies), so every
    panel is no wider than the distance at which the integrand stays analytic, and
    Gauss-Legendre converges on each.
    """
    nk = kinks.shape[0]
    sigma = s / abs(c) if c != 0.0 else math.inf
    # s = 0 (c = +-1 with unequal variances, e.g. x' = 2x at sb2 = 0): no smoothing, the
    # integral is 1-D and u2's kink is just a breakpoint.
    base = min(0.125 * sigma, w1) if sigma > 0.0 else w1
    pts = np.empty(2 + nk * (2 + 2 * (_levels(w1) + _levels(base))))
    pts[0] = -Z1
    pts[1] = Z1
    n = 2
    for k in range(nk):
        n = _grade(pts, n, kinks[k] / r1, w1)
        if c != 0.0:
            n = _grade(pts, n, kinks[k] / (c * r2), base)
    return np.unique(pts[:n])


@nb.njit(cache=True)
def kinked_rule(act, s11, s22, eps):
    """:func:`graded_rule` at phi's kinks (uniform panels too, unless :func:`graded_only`)."""
    return graded_rule(act, act.kinks, graded_only(act), s11, s22, eps)


@nb.njit(cache=True)
def graded_rule(act, kinks, graded, s11, s22, eps):
    """Composite Gauss-Legendre for a kinked phi on a general covariance, in eps = 1 - c.

    u1 = r1 z1, u2 = r2 (c z1 + s z2), r_i = sqrt(s_ii), c = 1 - eps, s = sqrt(eps (2 - eps)).
    The inner integral over z2 splits where u2 crosses a kink; the outer one splits at
    phi(u1)'s kinks and is graded where the inner kink crosses z2 = 0
    (:func:`_kinked_breakpoints`), so the rule keeps full accuracy as c -> 1.  Returns
    ``Pair(D, Delta, Dp)`` with Delta = 1/2 E[(phi(u1) - phi(u2))^2], summed from
    differences (no cancellation when u1 and u2 nearly coincide).
    """
    kappa = act.kappa
    r1 = math.sqrt(s11)
    r2 = math.sqrt(s22)
    c = 1.0 - eps
    s = math.sqrt(eps * (2.0 - eps))
    w1 = min(PANEL_MAX, PANELS_PER_STEP * step(kappa, max(s11, s22 * c * c)))
    outer = _kinked_breakpoints(kinks, r1, r2, c, s, w1)
    # Graded panels already follow phi's only features: no uniform subdivision (the cost
    # then grows like log q, not q).
    u1 = PANEL_MAX if graded else w1
    n1 = panel_count(outer, u1)
    z1s = np.empty(n1)
    w1s = np.empty(n1)
    n1 = panel_nodes(outer, u1, z1s, w1s)
    D = 0.0
    Dl = 0.0
    Dp = 0.0
    if s == 0.0:
        # u2 = c r2 z1 exactly: a 1-D integral, already split where u2 crosses a kink.
        for i in range(n1):
            w = w1s[i] * pdf(z1s[i])
            f1, df1 = phi(act, r1 * z1s[i])
            f2, df2 = phi(act, r2 * c * z1s[i])
            D += w * f1 * f2
            diff = f1 - f2
            Dl += w * 0.5 * diff * diff
            Dp += w * df1 * df2
        return Pair(D, Dl, Dp)
    w2 = min(PANEL_MAX, PANELS_PER_STEP * step(kappa, s22 * s * s))
    u2 = PANEL_MAX if graded else w2
    # Each interval between inner breakpoints adds at most one partial panel.
    nb2 = kinks.shape[0] * (1 + 2 * _levels(w2)) + 2 if graded else kinks.shape[0] + 2
    cap = (int(2.0 * Z1 / u2) + nb2) * GL_X.shape[0]
    z2s = np.empty(cap)
    w2s = np.empty(cap)
    for i in range(n1):
        z1 = z1s[i]
        wz1 = w1s[i] * pdf(z1)
        f1, df1 = phi(act, r1 * z1)
        if graded:
            inner = graded_breakpoints(kinks, r2 * s, r2 * c * z1, w2)
        else:
            inner = breakpoints(kinks, r2 * s, r2 * c * z1, -Z1, Z1)
        n2 = panel_nodes(inner, u2, z2s, w2s)
        rs = 0.0
        rl = 0.0
        rp = 0.0
        for j in range(n2):
            w = w2s[j] * pdf(z2s[j])
            f2, df2 = phi(act, r2 * (c * z1 + s * z2s[j]))
            rs += w * f2
            diff = f1 - f2
            rl += w * diff * diff
            rp += w * df2
        D += wz1 * f1 * rs
        Dl += wz1 * 0.5 * rl
        Dp += wz1 * df1 * rp
    return Pair(D, Dl, Dp)
