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
GELU, ``phi(x) = x Phi(x)``
    With Delta_I = det(I + Sigma) = 1 + s11 + s22 + det Sigma, P = (1 + s11)(1 + s22) and
    theta = atan2(sqrt(Delta_I), -s12) = pi/2 + asin(s12 / sqrt(P)) (Sheppard's orthant
    formula for E[Phi(u) Phi(v)] = theta / 2 pi, Stein's lemma and Gaussian tilting by the
    density, derived in docs/theory.md, "Closed forms")::

        2 pi E[gelu(u) gelu(v)]   = s12 theta + (s11 s22 Delta_I + s12^2) / (P sqrt(Delta_I))
        2 pi E[gelu'(u) gelu'(v)] = theta + s12 (1/(1+s11) + 1/(1+s22) + 1/Delta_I) / sqrt(Delta_I)

    rewritten where terms cancel (s12 < 0, c -> 1; see the functions).

Each family gives the one-point moments (:func:`one_point`, the quantities of
:func:`meanfield.core.gaussian.moments.moments1`), the two-point values at equal variances
with eps = 1 - c carried exactly (:func:`equal_variance`: D, Delta = E phi^2 - D, Dp),
and the values on a general 2 x 2 covariance (:func:`general`: D, Dp).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..functions import CF_ERF, CF_GELU, CF_LINEAR, CF_RELU, CF_SIN, phi
from .elementary import _PIO2_HI, _PIO2_LO, acos_eps, asin_fast, asin_small, horner, x_minus_atan, x_minus_sin

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_PI = math.pi


# sin t - t cos t = sum_k (-1)^(k+1) 2k t^(2k+1) / (2k+1)!, k >= 1.  For t < 0.5 the ninth
# term is below 1e-17 of the first, so eight terms in Horner form (no division in the
# kernels' innermost loop, where this runs once per pair and layer).
_SMTC = tuple((-1.0) ** (k + 1) * 2.0 * k / math.factorial(2 * k + 1) for k in range(1, 9))


@nb.njit(cache=True)
def sin_minus_theta_cos(theta):
    """sin(t) - t cos(t) without cancellation for small t (series to t^17 below t = 0.5)."""
    if theta < 0.5:
        t2 = theta * theta
        return theta * t2 * horner(t2, _SMTC)
    return math.sin(theta) - theta * math.cos(theta)


# --------------------------------------------------------------------------- GELU
_SPLIT = 134217729.0  # 2**27 + 1 (Veltkamp splitter)
_INV_2PI = 1.0 / (2.0 * _PI)
_INV_PI = 1.0 / _PI


@nb.njit(cache=True)
def _two_prod(a, b):
    """p + e == a*b exactly (Dekker), valid for |a|,|b| << 1e150."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


@nb.njit(cache=True)
def _det(a, b, c):
    """a*b - c*c, accurately (exact products), clamped at 0 (PSD)."""
    p1, e1 = _two_prod(a, b)
    p2, e2 = _two_prod(c, c)
    w = (p1 - p2) + (e1 - e2)
    if w < 0.0:
        w = 0.0
    return w


@nb.njit(cache=True)
def _gelu_core(a, b, c, w):
    """(D, Dp) given variances a, b, covariance c and w = a*b - c^2 >= 0."""
    opa = 1.0 + a
    opb = 1.0 + b
    P = opa * opb
    Dl = (1.0 + a + b) + w          # det(I + Sigma) = P - c^2 >= 1
    s = math.sqrt(Dl)
    theta = math.atan2(s, -c)       # = pi/2 + asin(c / sqrt(P)) in [0, pi]
    if c >= 0.0 or s >= -c:
        twopiD = c * theta + (a * b * Dl + c * c) / (P * s)
    else:
        # c < 0 and x = s/|c| < 1: remove the O(sqrt(q)) cancellation
        ac = -c
        h = x_minus_atan(s / ac)
        twopiD = (c * c - (1.0 + a + b) * Dl) / (P * s) + ac * h
        # theta + c K / s with theta = atan(x) = x - h(x), and the exact
        # polynomial identity P^2 - c^2 (P + 2 + a + b) = M (all terms >= 0)
        M = (1.0 + 2.0 * a + 2.0 * b + a * a + b * b + a * b
             + w * (3.0 + 2.0 * a + 2.0 * b + a * b))
        twopiDp = (M / P - c * c / Dl) / (ac * s) - h
        return twopiD * _INV_2PI, twopiDp * _INV_2PI
    twopiDp = theta + c * (1.0 / opa + 1.0 / opb + 1.0 / Dl) / s
    return twopiD * _INV_2PI, twopiDp * _INV_2PI


@nb.njit(cache=True)
def gelu_general(s11, s22, s12):
    """D = E[gelu(u) gelu(v)], Dp = E[gelu'(u) gelu'(v)],
    (u, v) ~ N(0, [[s11, s12], [s12, s22]])."""
    w = _det(s11, s22, s12)
    return _gelu_core(s11, s22, s12, w)


@nb.njit(cache=True)
def _gelu_F(q):
    """E[gelu(sqrt(q) z)^2]."""
    s1 = math.sqrt(1.0 + 2.0 * q)
    th1 = math.atan2(s1, -q)
    return (q * th1 + 2.0 * q * q / ((1.0 + q) * s1)) * _INV_2PI


@nb.njit(cache=True)
def gelu_equal_variance(q, eps):
    """s11 = s22 = q, s12 = q (1 - eps).  Returns (D, Delta, Dp) with
    Delta = E[gelu(u)^2] - D computed without cancellation."""
    r = 1.0 - eps
    c = q * r
    d = q * q * (eps * (2.0 - eps))       # = det(Sigma) = q^2 (1 - r^2)
    D, Dp = _gelu_core(q, q, c, d)
    if eps > 1.0:
        return D, _gelu_F(q) - D, Dp
    opq = 1.0 + q
    s1sq = 1.0 + 2.0 * q
    s1 = math.sqrt(s1sq)
    sr = math.sqrt(s1sq + d)
    sd = d / (s1 + sr)                     # sr - s1
    beta1 = math.atan2(s1, -q)
    # dbeta = asin(q/(1+q)) - asin(q r/(1+q)), via atan2 (any size)
    dbeta = math.atan2(q * (sd + eps * s1), s1 * sr + q * q * r)
    sh = math.sin(0.5 * dbeta)
    twopiDelta = (q * beta1 * eps
                  + q * r * x_minus_sin(dbeta)
                  - 2.0 * sr * sh * sh
                  + sd * (2.0 / opq + 1.0 / (s1 * sr)))
    return D, twopiDelta * _INV_2PI, Dp


@nb.njit(cache=True)
def gelu_one_point(q):
    """x = sqrt(q) z.  Returns
    phi    = E[gelu(x)]
    phi2   = E[gelu(x)^2]
    phi2z  = E[gelu(x)^2 (z^2 - 1)]
    dphi2  = E[gelu'(x)^2]
    dphi   = E[gelu'(x)]            (= 1/2)
    phi2h4 = E[gelu(x)^2 He4(z)]
    dphi2z = E[gelu'(x)^2 (z^2 - 1)]
    """
    opq = 1.0 + q
    t = 1.0 + 2.0 * q
    s = math.sqrt(t)
    th = math.atan2(s, -q)                 # pi/2 + asin(q/(1+q))
    phi = q * _INV_SQRT_2PI / math.sqrt(opq)
    phi2 = (q * th + 2.0 * q * q / (opq * s)) * _INV_2PI
    u = q / opq                             # q/(1+q), in [0,1)
    v = 1.0 / opq
    # q^2 (5 + 11 q + 4 q^2) / ((1+q)^2 t^1.5) = u^2 (5 + 11q + 4q^2)/t^1.5
    phi2z = q * th * _INV_PI + u * u * (5.0 + q * (11.0 + 4.0 * q)) / (t * s) * _INV_PI
    dphi2 = (th + q * (3.0 + 5.0 * q) / (opq * t * s)) * _INV_2PI
    dphi = 0.5
    # 2 q^2 (6 + 18q + 11q^2 - 5q^3) / (pi (1+q)^3 t^2.5)
    t25 = t * t * s
    phi2h4 = 2.0 * u * u * v * (6.0 + q * (18.0 + q * (11.0 - 5.0 * q))) / t25 * _INV_PI
    # q (4 + 12q + 9q^2 - q^3) / (pi (1+q)^2 t^2.5)
    dphi2z = u * v * (4.0 + q * (12.0 + q * (9.0 - q))) / t25 * _INV_PI
    return phi, phi2, phi2z, dphi2, dphi, phi2h4, dphi2z


# --------------------------------------------------------------------------- dispatch
@nb.njit(cache=True)
def one_point(act, q):
    """The seven one-point moments of moments1 at variance q, in closed form."""
    cf = act.family
    a = act.a
    if cf == CF_GELU:
        return gelu_one_point(q)
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
    if cf == CF_GELU:
        return gelu_equal_variance(q, eps)
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
    if cf == CF_GELU:
        return gelu_general(s11, s22, s12)
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
    # s12 can exceed sqrt(s11 s22) by rounding (a test input equal to a training input):
    # eps = 1 - c must not go negative, or asin(sqrt(eps/2)) is NaN.
    theta = theta_of(c, max(0.0, (r - s12) / r))
    D = k * r * (math.sin(theta) + (_PI - theta) * c) / (2.0 * _PI) + a * s12
    Dp = a + k * (_PI - theta) / (2.0 * _PI)
    return D, Dp


# asin(x) = x + x t P(t), t = x^2, on |x| <= 1/2: P fitted here by least squares at 60
@nb.njit(cache=True, inline="always")
def erf_general_pre(s11, s22, s12, u1, u2, a1):
    """:func:`general` for erf with u_k = 1/sqrt(1 + 2 s_kk) and a1 = 1 + 2 s11 given."""
    r = 2.0 * s12 * u1 * u2
    r = min(1.0, max(-1.0, r))
    det = max(s11 * s22 - s12 * s12, 0.0)
    big = a1 + 2.0 * s22 + 4.0 * det
    return (2.0 / _PI) * asin_fast(r), (4.0 / _PI) / math.sqrt(big)


@nb.njit(cache=True, inline="always")
def relu_general_pre(a, s12, r):
    """:func:`general` for the ReLU family with r = sqrt(s11) sqrt(s22) > 0 given."""
    k = (1.0 - a) * (1.0 - a)
    c = min(1.0, max(-1.0, s12 / r))
    eps = max(0.0, min(2.0, (r - s12) / r))
    theta = acos_eps(c, eps)
    sin_t = math.sqrt(eps * (2.0 - eps))
    D = k * r * (sin_t + (_PI - theta) * c) * (0.5 / _PI) + a * s12
    Dp = a + k * (_PI - theta) * (0.5 / _PI)
    return D, Dp


@nb.njit(cache=True, inline="always")
def gelu_general_pre(s11, s22, s12, i1, i2, r1, r2):
    """:func:`gelu_general` without libm calls, for loops over pairs that vectorize.

    Given i_k = 1/(1 + s_kk) and r_k = 1/sqrt(1 + s_kk) (per input, hoisted), with
    Delta_I = det(I + Sigma) = 1 + s11 + s22 + det Sigma and P = (1 + s11)(1 + s22)::

        2 pi D  = s12 theta + (s11 s22 Delta_I + s12^2) / (P sqrt(Delta_I))
        2 pi Dp = theta + s12 (1/(1+s11) + 1/(1+s22) + 1/Delta_I) / sqrt(Delta_I)
        theta   = pi/2 + asin(rho) = arccos(-rho),   rho = s12 / sqrt(P)

    The angle comes from the arcsine polynomial of :mod:`.elementary` instead of libm's
    atan2 (which cost ~20 ns a pair, most of the closed form, and blocks vectorization).
    Near |rho| = 1 it uses arccos(x) = 2 asin(sqrt((1 - x)/2)) with
    1 - x = (1 - x^2)/(1 + x) = Delta_I/(P (1 + x)): Delta_I is exact (Dekker products),
    so theta keeps its relative digits as it goes to 0.

    Returns (D, Dp, ok); ok is False where s12 < 0 and sqrt(Delta_I) < -s12, where the
    terms above cancel and :func:`gelu_general`'s rewritten branch must be used instead.
    """
    w = _det(s11, s22, s12)
    Dl = (1.0 + s11 + s22) + w
    rs = 1.0 / math.sqrt(Dl)
    ii = i1 * i2
    x = abs(s12) * (r1 * r2)
    big = x > 0.5
    y = math.sqrt(0.5 * Dl * ii / (1.0 + x)) if big else x
    g = asin_small(y)
    # g -> arccos(x) in [0, pi/2]; theta = arccos(-rho) = arccos(x) (s12 < 0) or pi - arccos(x).
    acx = 2.0 * g if big else (_PIO2_HI - g) + _PIO2_LO
    theta = acx if s12 < 0.0 else (_PI - acx)
    twopiD = s12 * theta + (s11 * s22 * Dl + s12 * s12) * (ii * rs)
    twopiDp = theta + s12 * (i1 + i2 + rs * rs) * rs
    ok = s12 >= 0.0 or Dl >= s12 * s12
    return twopiD * _INV_2PI, twopiDp * _INV_2PI, ok


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
