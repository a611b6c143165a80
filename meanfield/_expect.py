"""Gaussian expectations of an activation, in Numba (float64).

Two families of kernels, each with closed forms first and quadrature as the fallback:

``moments1(q)``
    One input of variance q, x = sqrt(q) z, z ~ N(0, 1)::

        m_phi   = E[phi(x)]
        m_phi2  = E[phi(x)^2]                 (length map:  V(q) = sw2 * m_phi2 + sb2)
        m_phi2z = E[phi(x)^2 (z^2 - 1)]       (= 2 q dE[phi^2]/dq; V'(q) = sw2 * m_phi2z / (2q))
        m_dphi2 = E[phi'(x)^2]                (chi_1 = sw2 * m_dphi2)
        m_dphi  = E[phi'(x)]
        m_phi2h4  = E[phi(x)^2 He_4(z)]       (= 4 q^2 d^2 E[phi^2]/dq^2, He_4 = z^4 - 6 z^2 + 3)
        m_dphi2z  = E[phi'(x)^2 (z^2 - 1)]    (= 2 q dE[phi'^2]/dq)

    ``m_phi2z`` comes from differentiating the Gaussian density in q, so V'(q) needs no
    phi'' (a user who gives only phi loses no accuracy).

``moments2(q, eps)``
    Two inputs of equal variance q and correlation c = 1 - eps (eps carried
    directly so that 1 - c keeps all its digits near c = 1)::

        D     = E[phi(u1) phi(u2)]
        Delta = E[phi(u1)^2] - D = 1/2 E[(phi(u1) - phi(u2))^2]   (no cancellation)
        Dp    = E[phi'(u1) phi'(u2)]                              (dC/dc = sw2 * Dp)

Quadrature rules (``closed_form == CF_NONE``)
---------------------------------------------
* Smooth activations: the trapezoid rule in z on [-Z, Z].  For integrands analytic
  in a strip it converges like exp(-2 pi d / h) (THEORY.md, "Numerics"); the step is
  ``h = min(H_MAX, kappa / sqrt(q))`` with kappa from the activation.  In 2-D the
  variables are the sum and difference s, d (u1 = sqrt(q)(alpha s + beta d),
  u2 = sqrt(q)(alpha s - beta d), alpha^2 = 1 - eps/2, beta^2 = eps/2), each with its
  own step, so near c = 1 the d direction needs only a few nodes.
* Activations with kinks: composite 16-point Gauss-Legendre with panel boundaries at
  every kink (in 2-D: outer z1 split at the kinks, inner z2 split where u2 crosses a
  kink), because no rule converges fast across a kink.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .activations import CF_ERF, CF_LINEAR, CF_NONE, CF_RELU, phi

# Truncation of the standard-normal variable: beyond 9 the Gaussian weight is < 1e-18,
# so the moments lose < 1e-16 even with the z^2 growth of phi^2 for linear-growth phi.
# (E[phi^2 He_4], with z^4 more, loses ~1e-14; it only feeds an error estimate.)
Z1 = 9.0
# In 2-D the integrands are at most quadratic in (s, d); a disc of radius 9 leaves < 1e-17.
Z2 = 9.0
# Standing in for sqrt(q) in the q -> 0+ limit at a kink at 0: phi(x) ~ x there, so the
# moments it leaves (~1e-300) are zero in float64 while phi' is taken on the right side.
SQ_LIMIT = 1e-150
H_MAX = 0.5  # the trapezoid on exp(-z^2/2) alone is accurate to exp(-2 pi^2 / h^2) ~ 1e-34
PANELS_PER_STEP = 8.0  # a 16-point Gauss-Legendre panel spans 8 trapezoid steps
PANEL_MAX = 2.0
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_PI = math.pi


@nb.njit(cache=True)
def _step(kappa, var):
    """Trapezoid step in a standard-normal variable whose image has variance ``var``."""
    if var <= 0.0:
        return H_MAX
    return min(H_MAX, kappa / math.sqrt(var))


@nb.njit(cache=True)
def _pdf(z):
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z)


# --------------------------------------------------------------------------- closed forms
# sin t - t cos t = sum_k (-1)^(k+1) 2k t^(2k+1) / (2k+1)!, k >= 1.  For t < 0.5 the ninth
# term is below 1e-17 of the first, so eight terms in Horner form (no division in the
# kernels' innermost loop, where this runs once per pair and layer).
_SMTC = tuple((-1.0) ** (k + 1) * 2.0 * k / math.factorial(2 * k + 1) for k in range(1, 9))
_S1, _S2, _S3, _S4, _S5, _S6, _S7, _S8 = _SMTC


@nb.njit(cache=True)
def _sin_minus_theta_cos(theta):
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
def _closed1(cf, a, q):
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
def _closed2(cf, a, q, eps):
    c = 1.0 - eps
    if cf == CF_RELU:
        # Arc-cosine kernel (Cho & Saul 2009) with theta from eps directly.
        theta = 2.0 * math.asin(math.sqrt(0.5 * eps))
        k = (1.0 - a) * (1.0 - a)
        D = k * q * (math.sin(theta) + (_PI - theta) * c) / (2.0 * _PI) + a * q * c
        Delta = k * q * (_PI * eps - _sin_minus_theta_cos(theta)) / (2.0 * _PI) + a * q * eps
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


# --------------------------------------------------------------------------- 1-D quadrature
@nb.njit(cache=True)
def _acc1(kind, a, b, ufn, sq, z, w, acc):
    """Add one node's contribution to the 1-D moment sums; returns w * phi for Hermite sums."""
    p, dp = phi(kind, sq * z, a, b, ufn)
    wp = w * p
    z2 = z * z
    wdp2 = w * dp * dp
    acc[0] += wp
    acc[1] += wp * p
    acc[2] += wp * p * (z2 - 1.0)
    acc[3] += wdp2
    acc[4] += w * dp
    acc[5] += wp * p * ((z2 - 6.0) * z2 + 3.0)
    acc[6] += wdp2 * (z2 - 1.0)
    return wp


# sqrt(n) and 1/sqrt(n+1) for the normalized Hermite recurrence, computed once.
_HERM_MAX = 512
_SQRT_N = np.sqrt(np.arange(_HERM_MAX, dtype=np.float64))
_INV_SQRT_N1 = 1.0 / np.sqrt(np.arange(1, _HERM_MAX + 1, dtype=np.float64))


@nb.njit(cache=True)
def _hermite_sums(zs, wps, nn, herm):
    """herm[n] = sum_k wps[k] He_n(zs[k]) / sqrt(n!) for n < len(herm), over nn nodes.

    The recurrence He_{n+1} = z He_n - n He_{n-1}, normalized, runs over all nodes at once
    so that the inner loop vectorizes.
    """
    hm = np.zeros(nn)
    h = np.ones(nn)
    for n in range(herm.shape[0]):
        sn = 0.0
        for k in range(nn):
            sn += wps[k] * h[k]
        herm[n] = sn
        s = _SQRT_N[n]
        r = _INV_SQRT_N1[n]
        for k in range(nn):
            hn = (zs[k] * h[k] - s * hm[k]) * r
            hm[k] = h[k]
            h[k] = hn


@nb.njit(cache=True)
def _breakpoints(kinks, scale, shift, lo, hi):
    """Sorted points (kinks[i] - shift) / scale that fall strictly inside (lo, hi), with lo, hi."""
    pts = np.empty(kinks.shape[0] + 2)
    pts[0] = lo
    n = 1
    for i in range(kinks.shape[0]):
        t = (kinks[i] - shift) / scale
        if lo < t < hi:
            pts[n] = t
            n += 1
    pts[n] = hi
    n += 1
    out = np.sort(pts[:n])
    return out


@nb.njit(cache=True)
def _kink_at_zero(kinks):
    for k in range(kinks.shape[0]):
        if kinks[k] == 0.0:
            return True
    return False


@nb.njit(cache=True)
def dphi2_at_zero(kind, a, b, ufn, kinks):
    """lim_{q -> 0+} E[phi'(sqrt(q) z)^2]: phi'(0)^2, or (phi'(0+)^2 + phi'(0-)^2) / 2 at a kink."""
    if _kink_at_zero(kinks):
        _, dl = phi(kind, -SQ_LIMIT, a, b, ufn)
        _, dr = phi(kind, SQ_LIMIT, a, b, ufn)
        return 0.5 * (dl * dl + dr * dr)
    _, d = phi(kind, 0.0, a, b, ufn)
    return d * d


@nb.njit(cache=True)
def moments1(kind, a, b, ufn, cf, kinks, kappa, q, herm):
    """The five 1-D moments at variance q (see module docstring).

    ``herm`` (length N, zeroed on entry, may be empty) receives the normalized Hermite
    coefficients a_n = E[phi(sqrt(q) z) He_n(z)] / sqrt(n!), n < N (quadrature path only).
    """
    return moments1s(kind, a, b, ufn, cf, kinks, kappa, False, q, herm)


@nb.njit(cache=True)
def moments1s(kind, a, b, ufn, cf, kinks, kappa, odd, q, herm):
    """:func:`moments1` that uses the symmetry of an odd phi (half the nodes) when ``odd``."""
    if cf != CF_NONE:
        return _closed1(cf, a, q)
    acc = np.zeros(7)
    sq = math.sqrt(q)
    if q == 0.0 and _kink_at_zero(kinks):
        # Report the q -> 0+ limit: on either side of a kink at 0, phi' keeps its one-sided
        # value (E[phi'^2] -> their mean square), which evaluating at 0 itself would miss.
        sq = SQ_LIMIT
    h = _step(kappa, q)
    want_herm = herm.shape[0] > 0
    # He_n(z) sqrt(pdf) oscillates out to its turning point 2 sqrt(n) and only then decays;
    # stopping at Z1 would leave ~1e-12 in a_n for n ~ 30-60, so the Hermite pass runs past
    # the last turning point, where the weight is below e^-64.
    zmax = max(Z1, 2.0 * math.sqrt(herm.shape[0]) + 3.0) if want_herm else Z1
    if kinks.shape[0] == 0 or sq == 0.0:
        K = int(zmax / h)
        nmax = 2 * K + 1
        zs = np.empty(nmax if want_herm else 0)
        wps = np.empty(nmax if want_herm else 0)
        nn = 0
        if odd:
            # phi^2, phi'^2, phi' and phi He_n (n odd) are even in z: fold z < 0 onto z > 0.
            for k in range(0, K + 1):
                z = k * h
                wp = _acc1(kind, a, b, ufn, sq, z, (1.0 if k == 0 else 2.0) * h * _pdf(z), acc)
                if want_herm:
                    zs[nn] = z
                    wps[nn] = wp
                    nn += 1
            acc[0] = 0.0  # E[phi] = 0 exactly
        else:
            for k in range(-K, K + 1):
                z = k * h
                wp = _acc1(kind, a, b, ufn, sq, z, h * _pdf(z), acc)
                if want_herm:
                    zs[nn] = z
                    wps[nn] = wp
                    nn += 1
    else:
        width = min(PANEL_MAX, PANELS_PER_STEP * h)
        pts = _breakpoints(kinks, sq, 0.0, -zmax, zmax)
        npan_total = 0
        for s in range(pts.shape[0] - 1):
            npan_total += max(1, int(math.ceil((pts[s + 1] - pts[s]) / width)))
        nmax = npan_total * _GL_X.shape[0]
        zs = np.empty(nmax if want_herm else 0)
        wps = np.empty(nmax if want_herm else 0)
        nn = 0
        for s in range(pts.shape[0] - 1):
            lo = pts[s]
            hi = pts[s + 1]
            npan = max(1, int(math.ceil((hi - lo) / width)))
            pw = (hi - lo) / npan
            for p in range(npan):
                mid = lo + (p + 0.5) * pw
                for i in range(_GL_X.shape[0]):
                    z = mid + 0.5 * pw * _GL_X[i]
                    wp = _acc1(kind, a, b, ufn, sq, z, 0.5 * pw * _GL_W[i] * _pdf(z), acc)
                    if want_herm:
                        zs[nn] = z
                        wps[nn] = wp
                        nn += 1
    if want_herm:
        _hermite_sums(zs, wps, nn, herm)
        if odd and (kinks.shape[0] == 0 or sq == 0.0):
            # Folded sums: odd-n terms were doubled correctly; even-n coefficients are zero.
            for n in range(0, herm.shape[0], 2):
                herm[n] = 0.0
    return acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6]


# --------------------------------------------------------------------------- 2-D quadrature
@nb.njit(cache=True)
def _moments2_smooth(kind, a, b, ufn, kappa, odd, q, eps):
    alpha = math.sqrt(1.0 - 0.5 * eps)
    beta = math.sqrt(0.5 * eps)
    A = math.sqrt(q) * alpha
    B = math.sqrt(q) * beta
    hs = _step(kappa, q * alpha * alpha)
    hd = _step(kappa, q * beta * beta)
    # Make the two steps commensurate: with A hs = P delta and B hd = Q delta (P, Q integers)
    # every argument A s_j +- B d_k = delta (P j +- Q k) lies on one lattice, so phi is
    # evaluated once per lattice point instead of twice per node pair.  Uncapped steps
    # already satisfy A hs = B hd = kappa; shrinking a step only makes the rule finer.
    xs = A * hs
    xd = B * hd
    if xs == 0.0 or xd == 0.0:
        return _moments2_pairs(kind, a, b, ufn, kappa, odd, q, eps)  # c = -1: no lattice
    if xs >= xd:
        delta = xd
        P = max(1, int(xs / delta * (1.0 + 1e-12)))
        Q = 1
        hs = P * delta / A
    else:
        delta = xs
        P = 1
        Q = max(1, int(xd / delta * (1.0 + 1e-12)))
        hd = Q * delta / B
    Ks = int(Z2 / hs)
    Kd = int(Z2 / hd)
    M = P * Ks + Q * Kd
    if M + 1 > 2 * (Ks + 1) * (Kd + 1):
        return _moments2_pairs(kind, a, b, ufn, kappa, odd, q, eps)
    # phi and phi' on the lattice m delta, m = -M..M (odd phi: m >= 0 and symmetry).
    lat = np.empty(2 * M + 1)
    dlat = np.empty(2 * M + 1)
    for m in range(0 if odd else -M, M + 1):
        p, dp = phi(kind, m * delta, a, b, ufn)
        lat[m + M] = p
        dlat[m + M] = dp
    if odd:
        for m in range(1, M + 1):
            lat[M - m] = -lat[M + m]
            dlat[M - m] = dlat[M + m]
    wd = np.empty(Kd + 1)
    for k in range(Kd + 1):
        # the integrand is even in d (d -> -d swaps u1 and u2): nodes d > 0 count twice
        wd[k] = hd * _pdf(k * hd) * (1.0 if k == 0 else 2.0)
    r2 = Z2 * Z2
    D = 0.0
    Dl = 0.0
    Dp = 0.0
    j0 = 0 if odd else -Ks
    for j in range(j0, Ks + 1):
        s = j * hs
        ws = hs * _pdf(s)
        if odd and j > 0:
            ws *= 2.0  # phi odd: the d-symmetrized integrand is even in s
        rs = 0.0
        rl = 0.0
        rp = 0.0
        base = P * j + M
        for k in range(Kd + 1):
            d = k * hd
            if s * s + d * d > r2:
                break
            i1 = base + Q * k
            i2 = base - Q * k
            p1 = lat[i1]
            p2 = lat[i2]
            diff = p1 - p2
            rs += wd[k] * p1 * p2
            rl += wd[k] * diff * diff
            rp += wd[k] * dlat[i1] * dlat[i2]
        D += ws * rs
        Dl += ws * 0.5 * rl
        Dp += ws * rp
    return D, Dl, Dp


@nb.njit(cache=True)
def _moments2_pairs(kind, a, b, ufn, kappa, odd, q, eps):
    """The same sum/difference rule evaluating phi at every node pair (no lattice).

    Used when the lattice would be finer than the node pairs are many (B small: the
    capped d step makes delta tiny).  Same trapezoid rule, so both paths agree to rounding.
    """
    alpha = math.sqrt(1.0 - 0.5 * eps)
    beta = math.sqrt(0.5 * eps)
    A = math.sqrt(q) * alpha
    B = math.sqrt(q) * beta
    hs = _step(kappa, q * alpha * alpha)
    Ks = int(Z2 / hs)
    hd = _step(kappa, q * beta * beta)
    Kd = int(Z2 / hd)
    dd = np.empty(Kd + 1)
    wd = np.empty(Kd + 1)
    for k in range(Kd + 1):
        dd[k] = k * hd
        wd[k] = hd * _pdf(k * hd) * (1.0 if k == 0 else 2.0)
    r2 = Z2 * Z2
    D = 0.0
    Dl = 0.0
    Dp = 0.0
    j0 = 0 if odd else -Ks
    for j in range(j0, Ks + 1):
        s = j * hs
        ws = hs * _pdf(s)
        if odd and j > 0:
            ws *= 2.0
        As = A * s
        rs = 0.0
        rl = 0.0
        rp = 0.0
        for k in range(dd.shape[0]):
            d = dd[k]
            if s * s + d * d > r2:
                break
            p1, dp1 = phi(kind, As + B * d, a, b, ufn)
            p2, dp2 = phi(kind, As - B * d, a, b, ufn)
            diff = p1 - p2
            rs += wd[k] * p1 * p2
            rl += wd[k] * diff * diff
            rp += wd[k] * dp1 * dp2
        D += ws * rs
        Dl += ws * 0.5 * rl
        Dp += ws * rp
    return D, Dl, Dp


@nb.njit(cache=True)
def _moments2_kinked(kind, a, b, ufn, kinks, kappa, q, eps):
    sq = math.sqrt(q)
    c = 1.0 - eps
    sc = math.sqrt(eps * (2.0 - eps))
    w1 = min(PANEL_MAX, PANELS_PER_STEP * _step(kappa, q))
    w2 = min(PANEL_MAX, PANELS_PER_STEP * _step(kappa, q * sc * sc))
    outer = _breakpoints(kinks, sq, 0.0, -Z1, Z1)
    D = 0.0
    Dl = 0.0
    Dp = 0.0
    ng = _GL_X.shape[0]
    for s1 in range(outer.shape[0] - 1):
        lo1 = outer[s1]
        hi1 = outer[s1 + 1]
        np1 = max(1, int(math.ceil((hi1 - lo1) / w1)))
        pw1 = (hi1 - lo1) / np1
        for p1i in range(np1):
            mid1 = lo1 + (p1i + 0.5) * pw1
            for i in range(ng):
                z1 = mid1 + 0.5 * pw1 * _GL_X[i]
                wz1 = 0.5 * pw1 * _GL_W[i] * _pdf(z1)
                f1, df1 = phi(kind, sq * z1, a, b, ufn)
                inner = _breakpoints(kinks, sq * sc, sq * c * z1, -Z1, Z1)
                for s2 in range(inner.shape[0] - 1):
                    lo2 = inner[s2]
                    hi2 = inner[s2 + 1]
                    np2 = max(1, int(math.ceil((hi2 - lo2) / w2)))
                    pw2 = (hi2 - lo2) / np2
                    for p2i in range(np2):
                        mid2 = lo2 + (p2i + 0.5) * pw2
                        for j in range(ng):
                            z2 = mid2 + 0.5 * pw2 * _GL_X[j]
                            w = wz1 * 0.5 * pw2 * _GL_W[j] * _pdf(z2)
                            f2, df2 = phi(kind, sq * (c * z1 + sc * z2), a, b, ufn)
                            D += w * f1 * f2
                            diff = f1 - f2
                            Dl += w * 0.5 * diff * diff
                            Dp += w * df1 * df2
    return D, Dl, Dp


@nb.njit(cache=True)
def moments2(kind, a, b, ufn, cf, kinks, kappa, odd, q, eps):
    """(D, Delta, Dp) at variance q and correlation c = 1 - eps (see module docstring)."""
    if cf != CF_NONE:
        return _closed2(cf, a, q, eps)
    if eps == 0.0 or q == 0.0:
        m = moments1(kind, a, b, ufn, cf, kinks, kappa, q, np.empty(0))
        if q == 0.0:
            p0, dp0 = phi(kind, 0.0, a, b, ufn)
            return p0 * p0, 0.0, dp0 * dp0
        return m[1], 0.0, m[3]
    if kinks.shape[0] == 0:
        return _moments2_smooth(kind, a, b, ufn, kappa, odd, q, eps)
    return _moments2_kinked(kind, a, b, ufn, kinks, kappa, q, eps)
