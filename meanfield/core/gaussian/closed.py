"""Closed-form Gaussian expectations, one family at a time (docs/theory.md, "Closed forms").

Families (the ``family`` field of the activation record):

ReLU family, ``phi(x) = x (x > 0), a x (x <= 0)``
    The arc-cosine kernel (Cho & Saul 2009): with theta = arccos(c),
    ``E[relu(u) relu(v)] = sqrt(s11 s22) (sin theta + (pi - theta) cos theta) / (2 pi)`` and
    ``E[step(u) step(v)] = (pi - theta) / (2 pi)``; phi = (1 - a) relu + a x adds a s12.
erf
    ``E[erf(u) erf(v)] = (2/pi) asin(2 s12 / sqrt((1 + 2 s11)(1 + 2 s22)))`` and
    ``E[erf'(u) erf'(v)] = (4/pi) / sqrt((1 + 2 s11)(1 + 2 s22) - 4 s12^2)``.
sin
    ``E[sin u sin v] = exp(-(s11 + s22)/2) sinh(s12)``, ``E[cos u cos v]`` with cosh.
linear
    ``E[u v] = s12``, ``E[1] = 1``.

Each family gives the one-point moments (:func:`one_point`, the quantities of
:func:`meanfield.core.gaussian.moments.moments1`), the two-point values at equal variances
with eps = 1 - c carried exactly (:func:`equal_variance`: D, Delta = E phi^2 - D, Dp),
and the values on a general 2 x 2 covariance (:func:`general`: D, Dp).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..functions import CF_ERF, CF_LINEAR, CF_RELU, CF_SIN, phi

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_PI = math.pi


# sin t - t cos t = sum_k (-1)^(k+1) 2k t^(2k+1) / (2k+1)!, k >= 1.  For t < 0.5 the ninth
# term is below 1e-17 of the first, so eight terms in Horner form (no division in the
# kernels' innermost loop, where this runs once per pair and layer).
_SMTC = tuple((-1.0) ** (k + 1) * 2.0 * k / math.factorial(2 * k + 1) for k in range(1, 9))
_S1, _S2, _S3, _S4, _S5, _S6, _S7, _S8 = _SMTC


@nb.njit(cache=True)
def sin_minus_theta_cos(theta):
    """sin(t) - t cos(t) without cancellation for small t (series to t^17 below t = 0.5)."""
    if theta < 0.5:
        t2 = theta * theta
        p = _S8
        p = p * t2 + _S7
        p = p * t2 + _S6
        p = p * t2 + _S5
        p = p * t2 + _S4
        p = p * t2 + _S3
        p = p * t2 + _S2
        p = p * t2 + _S1
        return theta * t2 * p
    return math.sin(theta) - theta * math.cos(theta)


@nb.njit(cache=True)
def one_point(act, q):
    """The seven one-point moments of moments1 at variance q, in closed form."""
    cf = act.family
    a = act.a
    if cf == CF_RELU:
        # E phi^2 and E phi'^2 are linear / constant in q: the q-derivative moments vanish.
        return ((1.0 - a) * math.sqrt(q) * _INV_SQRT_2PI, 0.5 * q * (1.0 + a * a),
                q * (1.0 + a * a), 0.5 * (1.0 + a * a), 0.5 * (1.0 + a), 0.0, 0.0)
    if cf == CF_LINEAR:
        return 0.0, q, 2.0 * q, 1.0, 1.0, 0.0, 0.0
    if cf == CF_ERF:
        r = 2.0 * q / (1.0 + 2.0 * q)
        s = math.sqrt(1.0 + 4.0 * q)
        u = 1.0 + 2.0 * q
        dF = (4.0 / _PI) / (u * s)
        d2F = -(8.0 / _PI) / (u * s) * (1.0 / u + 1.0 / (s * s))
        ddphi2 = -(8.0 / _PI) / (s * s * s)
        return (0.0, (2.0 / _PI) * math.asin(r), 2.0 * q * dF, (4.0 / _PI) / s,
                (2.0 / math.sqrt(_PI)) / math.sqrt(u), 4.0 * q * q * d2F, 2.0 * q * ddphi2)
    # CF_SIN: E sin^2 = (1 - e^{-2q})/2, E cos^2 = (1 + e^{-2q})/2, E cos = e^{-q/2}
    e2 = math.exp(-2.0 * q)
    return (0.0, -0.5 * math.expm1(-2.0 * q), 2.0 * q * e2, 0.5 * (1.0 + e2), math.exp(-0.5 * q),
            -8.0 * q * q * e2, -2.0 * q * e2)


@nb.njit(cache=True)
def equal_variance(act, q, eps):
    """(D, Delta, Dp) at variance q and correlation c = 1 - eps, in closed form."""
    cf = act.family
    a = act.a
    c = 1.0 - eps
    if cf == CF_RELU:
        # Arc-cosine kernel (Cho & Saul 2009) with theta from eps directly.
        theta = 2.0 * math.asin(math.sqrt(0.5 * eps))
        k = (1.0 - a) * (1.0 - a)
        D = k * q * (math.sin(theta) + (_PI - theta) * c) / (2.0 * _PI) + a * q * c
        Delta = k * q * (_PI * eps - sin_minus_theta_cos(theta)) / (2.0 * _PI) + a * q * eps
        Dp = a + k * (_PI - theta) / (2.0 * _PI)
        return D, Delta, Dp
    if cf == CF_LINEAR:
        return q * c, q * eps, 1.0
    if cf == CF_ERF:
        one_m_c2 = eps * (2.0 - eps)
        big = 1.0 + 4.0 * q + 4.0 * q * q * one_m_c2  # (1+2q)^2 - 4 q^2 c^2
        D = (2.0 / _PI) * math.asin(2.0 * q * c / (1.0 + 2.0 * q))
        if c >= 0.0:
            # asin(r) - asin(r c) = asin(r (1 - c^2) / (sqrt(1 - r^2 c^2) + c sqrt(1 - r^2)))
            Delta = (2.0 / _PI) * math.asin(
                2.0 * q * one_m_c2 / (math.sqrt(big) + c * math.sqrt(1.0 + 4.0 * q)))
        else:
            Delta = (2.0 / _PI) * math.asin(2.0 * q / (1.0 + 2.0 * q)) - D
        return D, Delta, (4.0 / _PI) / math.sqrt(big)
    # CF_SIN: E sin(u) sin(v) = e^{-q} sinh(q c), E cos(u) cos(v) = e^{-q} cosh(q c)
    e = math.exp(-q)
    return (e * math.sinh(q * c), 2.0 * e * math.cosh(0.5 * q * (2.0 - eps)) * math.sinh(0.5 * q * eps),
            e * math.cosh(q * c))


@nb.njit(cache=True)
def theta_of(c, eps):
    """Angle arccos(c) from eps = 1 - c, stable near c = 1 (arccos' is infinite there)."""
    if c > 0.0:
        return 2.0 * math.asin(math.sqrt(0.5 * eps))
    return math.acos(c)


@nb.njit(cache=True)
def general(act, s11, s22, s12):
    """(E phi(u)phi(v), E phi'(u)phi'(v)) for (u, v) ~ N(0, [[s11, s12], [s12, s22]])."""
    cf = act.family
    a = act.a
    if cf == CF_LINEAR:
        return s12, 1.0
    if cf == CF_ERF:
        a1 = 1.0 + 2.0 * s11
        a2 = 1.0 + 2.0 * s22
        # (1+2 s11)(1+2 s22) - 4 s12^2 = 1 + 2 s11 + 2 s22 + 4 (s11 s22 - s12^2) >= 1: no cancellation.
        det = max(s11 * s22 - s12 * s12, 0.0)
        big = 1.0 + 2.0 * (s11 + s22) + 4.0 * det
        r = 2.0 * s12 / math.sqrt(a1 * a2)
        r = min(1.0, max(-1.0, r))
        return (2.0 / _PI) * math.asin(r), (4.0 / _PI) / math.sqrt(big)
    if cf == CF_SIN:
        # e^{-(s11+s22)/2} sinh(s12) written with the exponent shift inside, so neither
        # factor overflows for large variances.
        m = 0.5 * (s11 + s22)
        ep = math.exp(s12 - m)
        em = math.exp(-s12 - m)
        return 0.5 * (ep - em), 0.5 * (ep + em)
    # CF_RELU: phi = (1 - a) relu + a x, so E phi phi = (1-a)^2 K_relu + a s12.
    k = (1.0 - a) * (1.0 - a)
    r = math.sqrt(s11 * s22)
    if r == 0.0:
        # One input is identically zero: phi(0) = 0, and phi'(0) = a by the registry's
        # convention (x > 0 is false at 0).
        if s11 == 0.0 and s22 == 0.0:
            return 0.0, a * a
        return 0.0, a * (0.5 * (1.0 + a))
    c = min(1.0, max(-1.0, s12 / r))
    theta = theta_of(c, (r - s12) / r)
    D = k * r * (math.sin(theta) + (_PI - theta) * c) / (2.0 * _PI) + a * s12
    Dp = a + k * (_PI - theta) / (2.0 * _PI)
    return D, Dp


@nb.njit(cache=True)
def shared_constants(act, q):
    """Per-depth constants of the fast shared-norm closed forms (see :func:`equal_variance_fast`)."""
    cf = act.family
    cst = np.zeros(4)
    if cf == CF_ERF:
        r = 2.0 * q / (1.0 + 2.0 * q)
        cst[0] = r
        cst[1] = math.sqrt(1.0 + 4.0 * q) / (1.0 + 2.0 * q)  # sqrt(1 - r^2), no cancellation
        cst[2] = (2.0 / _PI) * math.asin(r)  # E erf^2, as equal_variance computes it
        cst[3] = 1.0 + 2.0 * q
    return cst


# Above this correlation Delta = E phi^2 - E phi(u)phi(v) would lose digits to
# cancellation, so the erf closed form evaluates Delta by its own arcsine identity and D
# by subtraction; below it, the other way round.  Either way the subtraction loses less
# than a factor 3 and each pair costs one arcsine.
_ERF_DELTA_SPLIT = 0.5


@nb.njit(cache=True)
def equal_variance_fast(act, q, e, cst):
    """(D, Delta, Dp) at variance q and correlation 1 - e: :func:`equal_variance` with the
    per-depth constants hoisted and the fewest transcendental functions per pair."""
    cf = act.family
    a = act.a
    c = 1.0 - e
    if cf == CF_ERF:
        r = cst[0]
        rc = r * c
        one_m_c2 = e * (2.0 - e)
        # 1 - r^2 c^2 = (1 - r^2) + r^2 (1 - c^2): both terms >= 0, no cancellation.
        s = math.sqrt(cst[1] * cst[1] + r * r * one_m_c2)
        if c >= _ERF_DELTA_SPLIT:
            # asin(r) - asin(r c) = asin(r (1 - c^2) / (sqrt(1 - r^2 c^2) + c sqrt(1 - r^2)));
            # D = E erf^2 - Delta keeps its digits here since D > E erf^2 / 3.
            Delta = (2.0 / _PI) * math.asin(r * one_m_c2 / (s + c * cst[1]))
            D = cst[2] - Delta
        else:
            D = (2.0 / _PI) * math.asin(rc)
            Delta = cst[2] - D
        return D, Delta, (4.0 / _PI) / (cst[3] * s)
    if cf == CF_RELU:
        theta = 2.0 * math.asin(math.sqrt(0.5 * e))
        sin_t = math.sqrt(e * (2.0 - e))
        k = (1.0 - a) * (1.0 - a)
        D = k * q * (sin_t + (_PI - theta) * c) / (2.0 * _PI) + a * q * c
        if theta < 0.5:
            smtc = sin_minus_theta_cos(theta)
        else:
            smtc = sin_t - theta * c
        Delta = k * q * (_PI * e - smtc) / (2.0 * _PI) + a * q * e
        Dp = a + k * (_PI - theta) / (2.0 * _PI)
        return D, Delta, Dp
    return equal_variance(act, q, e)




@nb.njit(cache=True)
def pair(act, s11, s22, s12, same):
    """:func:`meanfield.core.gaussian.moments.pair` for a closed-form family, with no
    quadrature code reachable (so a kernel loop calling it compiles as tight as the
    closed form itself).  Same cases, same values, bit for bit."""
    if same or (s11 == s22 and s12 == s11):
        D, _, Dp = equal_variance(act, s11, 0.0)
        return D, Dp
    if s11 == 0.0 or s22 == 0.0:
        p0, dp0 = phi(act, 0.0)
        if s11 == 0.0 and s22 == 0.0:
            return p0 * p0, dp0 * dp0
        m = one_point(act, max(s11, s22))
        return p0 * m[0], dp0 * m[4]
    return general(act, s11, s22, s12)
