"""Gaussian expectations of an activation: the one place the solvers and kernels get them.

Closed forms first (:mod:`.closed`), quadrature (:mod:`.quadrature`) otherwise.

:func:`moments1` -- one input of variance q, x = sqrt(q) z, z ~ N(0, 1)::

    phi     = E[phi(x)]
    phi2    = E[phi(x)^2]                 (length map:  V(q) = sw2 * phi2 + sb2)
    phi2z   = E[phi(x)^2 (z^2 - 1)]       (= 2 q dE[phi^2]/dq; V'(q) = sw2 * phi2z / (2q))
    dphi2   = E[phi'(x)^2]                (chi_1 = sw2 * dphi2)
    dphi    = E[phi'(x)]
    phi2h4  = E[phi(x)^2 He_4(z)]         (= 4 q^2 d^2 E[phi^2]/dq^2, He_4 = z^4 - 6 z^2 + 3)
    dphi2z  = E[phi'(x)^2 (z^2 - 1)]      (= 2 q dE[phi'^2]/dq)

  ``phi2z`` comes from differentiating the Gaussian density in q, so V'(q) needs no phi''.

:func:`moments2` -- two inputs of equal variance q and correlation c = 1 - eps (eps carried
directly so that 1 - c keeps all its digits near c = 1)::

    D     = E[phi(u1) phi(u2)]
    Delta = E[phi(u1)^2] - D = 1/2 E[(phi(u1) - phi(u2))^2]   (no cancellation)
    Dp    = E[phi'(u1) phi'(u2)]                              (dC/dc = sw2 * Dp)

:func:`pair` -- two inputs with a general covariance [[s11, s12], [s12, s22]]: (D, Dp).

Quadrature: smooth activations use the trapezoid rule; in 2-D the variables are the sum
and difference s, d (u1 = sqrt(q)(alpha s + beta d), u2 = sqrt(q)(alpha s - beta d),
alpha^2 = 1 - eps/2, beta^2 = eps/2), each with its own step, so near c = 1 the d
direction needs only a few nodes.  Kinked activations use composite Gauss-Legendre split
at every kink (in 2-D: outer z1 split at the kinks, inner z2 split where u2 crosses one).

Below ``EPS_TAYLOR`` (relative to 1/q) the 2-D rules are not used: there u1 - u2 is below
the rounding of u1 itself, so phi(u1) - phi(u2) is rounding noise (and the lattice's step
ratio overflows).  Instead Delta = q eps E[phi'^2] + O(q eps) relative, D = E[phi^2] - Delta
and Dp = E[phi'^2] + O(q eps) (Taylor expansion of phi(u1) - phi(u2) about the mean);
for phi' jumping at a kink the first correction is O(sqrt(q eps)), hence the squared
threshold for kinked activations.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np

from ..functions import CF_NONE, kink_at_zero, phi
from . import closed
from .kinked import (Q_SOFT, Pair, graded_breakpoints, graded_rule, kink_breakpoints,
                     kinked_rule, soft_kink)
from .quadrature import (PANEL_MAX, PANELS_PER_STEP, SQ_LIMIT, Z1, Z2,
                         gaussian_panels, hermite_sums, pdf, step)

Moments1 = namedtuple("Moments1", ["phi", "phi2", "phi2z", "dphi2", "dphi", "phi2h4", "dphi2z"])


# --------------------------------------------------------------------------- one point
@nb.njit(cache=True)
def _acc1(act, sq, z, w, acc):
    """Add one node's contribution to the 1-D moment sums; returns w * phi for Hermite sums."""
    p, dp = phi(act, sq * z)
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


@nb.njit(cache=True)
def _graded_sums(act, sq, pts, acc, want_herm, herm):
    """Accumulate the 1-D moments (and, if wanted, the Hermite sums) on Gauss-Legendre
    panels between ``pts``, no wider than PANEL_MAX."""
    nodes, weights = gaussian_panels(pts, PANEL_MAX)
    nn = nodes.shape[0]
    wps = np.empty(nn if want_herm else 0)
    for k in range(nn):
        wp = _acc1(act, sq, nodes[k], weights[k], acc)
        if want_herm:
            wps[k] = wp
    if want_herm:
        hermite_sums(nodes, wps, nn, herm)


@nb.njit(cache=True)
def dphi2_at_zero(act):
    """lim_{q -> 0+} E[phi'(sqrt(q) z)^2]: phi'(0)^2, or (phi'(0+)^2 + phi'(0-)^2) / 2 at a kink."""
    if kink_at_zero(act):
        _, dl = phi(act, -SQ_LIMIT)
        _, dr = phi(act, SQ_LIMIT)
        return 0.5 * (dl * dl + dr * dr)
    _, d = phi(act, 0.0)
    return d * d


@nb.njit(cache=True)
def moments1(act, q, herm, fold):
    """The seven 1-D moments at variance q (see module docstring), as a ``Moments1``.

    ``herm`` (length N, zeroed on entry, may be empty) receives the normalized Hermite
    coefficients a_n = E[phi(sqrt(q) z) He_n(z)] / sqrt(n!), n < N (quadrature path only).
    With ``fold`` the symmetry of an odd phi halves the nodes.
    """
    if act.family != CF_NONE:
        return Moments1(*closed.one_point(act, q))
    odd = act.odd and fold
    kinks = act.kinks
    acc = np.zeros(7)
    sq = math.sqrt(q)
    if q == 0.0 and kink_at_zero(act):
        # Report the q -> 0+ limit: on either side of a kink at 0, phi' keeps its one-sided
        # value (E[phi'^2] -> their mean square), which evaluating at 0 itself would miss.
        sq = SQ_LIMIT
    h = step(act.kappa, q)
    want_herm = herm.shape[0] > 0
    # He_n(z) sqrt(pdf) oscillates out to its turning point 2 sqrt(n) and only then decays;
    # stopping at Z1 would leave ~1e-12 in a_n for n ~ 30-60, so the Hermite pass runs past
    # the last turning point, where the weight is below e^-64.
    zmax = max(Z1, 2.0 * math.sqrt(herm.shape[0]) + 3.0) if want_herm else Z1
    if kinks.shape[0] == 0 and soft_kink(act, q):
        # At large q the trapezoid needs O(sqrt(q)) nodes (hours at q ~ 1e16); phi(sqrt(q) z)
        # is a kink at 0 rounded within ~1/sqrt(q), so panels graded away from 0 need O(log q).
        pts = graded_breakpoints(np.zeros(1), sq, 0.0, min(PANEL_MAX, PANELS_PER_STEP * h))
        pts[0] = -zmax
        pts[-1] = zmax
        _graded_sums(act, sq, pts, acc, want_herm, herm)
        if act.odd:
            # E[phi] and the even-n coefficients vanish exactly for an odd phi.
            acc[0] = 0.0
            for n in range(0, herm.shape[0], 2):
                herm[n] = 0.0
        return Moments1(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6])
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
                wp = _acc1(act, sq, z, (1.0 if k == 0 else 2.0) * h * pdf(z), acc)
                if want_herm:
                    zs[nn] = z
                    wps[nn] = wp
                    nn += 1
            acc[0] = 0.0  # E[phi] = 0 exactly
        else:
            for k in range(-K, K + 1):
                z = k * h
                wp = _acc1(act, sq, z, h * pdf(z), acc)
                if want_herm:
                    zs[nn] = z
                    wps[nn] = wp
                    nn += 1
    else:
        width = min(PANEL_MAX, PANELS_PER_STEP * h)
        pts, graded = kink_breakpoints(act, sq, width, zmax, q > Q_SOFT and not want_herm)
        if graded:
            width = PANEL_MAX
        nodes, weights = gaussian_panels(pts, width)
        nn = nodes.shape[0]
        zs = np.empty(nn if want_herm else 0)
        wps = np.empty(nn if want_herm else 0)
        for k in range(nn):
            z = nodes[k]
            wp = _acc1(act, sq, z, weights[k], acc)
            if want_herm:
                zs[k] = z
                wps[k] = wp
    if want_herm:
        hermite_sums(zs, wps, nn, herm)
        if odd and (kinks.shape[0] == 0 or sq == 0.0):
            # Folded sums: odd-n terms were doubled correctly; even-n coefficients are zero.
            for n in range(0, herm.shape[0], 2):
                herm[n] = 0.0
    return Moments1(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6])


# --------------------------------------------------------------------------- two points, equal variance
# Past Q_SOFT the graded rule costs ~70k phi evaluations whatever (q, eps) (~6 ms); near
# c = 1 the lattice trapezoid has far fewer node pairs (q ~ 5e3, eps ~ 2e-4: 9e4 pairs,
# 0.5 ms), and both are exact rules (they agree to ~5e-15 there), so moments2 keeps the
# trapezoid while its pairs are below this (measured: ~2 ms at 5e5 pairs).
TRAPEZOID_TERMS_MAX = 5e5
EPS_TAYLOR = 1e-16  # below it (times max(q, 1)) moments2 expands about c = 1 (module docstring)

@nb.njit(cache=True)
def _d_weights(Kd, hd):
    """Trapezoid weights of the difference variable d = k hd, k = 0..Kd: the integrand is
    even in d (d -> -d swaps u1 and u2), so nodes d > 0 count twice."""
    wd = np.empty(Kd + 1)
    for k in range(Kd + 1):
        wd[k] = hd * pdf(k * hd) * (1.0 if k == 0 else 2.0)
    return wd


@nb.njit(cache=True)
def _s_weight(s, hs, doubled):
    """Trapezoid weight of the sum variable s; ``doubled`` for s > 0 when phi is odd (the
    d-symmetrized integrand is then even in s and only s >= 0 is summed)."""
    ws = hs * pdf(s)
    return 2.0 * ws if doubled else ws


@nb.njit(cache=True)
def _row_sums(wd, p1, p2, dp1, dp2, kmax):
    """sum_k wd_k (p1 p2, (p1 - p2)^2, p1' p2') over k = 0..kmax: one row s_j of the rule."""
    rs = 0.0
    rl = 0.0
    rp = 0.0
    for k in range(kmax + 1):
        diff = p1[k] - p2[k]
        rs += wd[k] * p1[k] * p2[k]
        rl += wd[k] * diff * diff
        rp += wd[k] * dp1[k] * dp2[k]
    return rs, rl, rp


@nb.njit(cache=True)
def _lattice_row_sums(wd, lat, dlat, base, Q, kmax):
    """:func:`_row_sums` with u1 = delta (P j + Q k), u2 = delta (P j - Q k) read from the
    lattice at base +- Q k: the same terms in the same order, so the same bits, but without
    building four strided views per row (rows near c = 1 have ~20 terms, and the views
    cost more than the sums: 3x on the whole rule at q ~ 5e3, eps ~ 2e-4)."""
    rs = 0.0
    rl = 0.0
    rp = 0.0
    for k in range(kmax + 1):
        a = lat[base + Q * k]
        b = lat[base - Q * k]
        diff = a - b
        rs += wd[k] * a * b
        rl += wd[k] * diff * diff
        rp += wd[k] * dlat[base + Q * k] * dlat[base - Q * k]
    return rs, rl, rp


@nb.njit(cache=True)
def _sum_difference_rule(act, q, eps, use_lattice):
    """Sum/difference trapezoid for smooth phi at equal variances (see module docstring).

    u1,2 = A s +- B d with A = sqrt(q (1 - eps/2)), B = sqrt(q eps/2).  Where the two
    steps can be made commensurate, A hs = P delta and B hd = Q delta with integers P, Q,
    every argument A s_j +- B d_k = delta (P j +- Q k) lies on one lattice and phi is
    evaluated once per lattice point instead of twice per node pair.  Where it cannot (c = -1,
    or a lattice with more points than there are node pairs: B small makes delta tiny) phi
    is evaluated at every node pair.  Either way it is the same rule, so the two agree to
    rounding; shrinking a step only makes the rule finer (uncapped steps already satisfy
    A hs = B hd = kappa).  ``use_lattice=False`` forces the per-pair evaluation.
    """
    odd = act.odd
    kappa = act.kappa
    alpha = math.sqrt(1.0 - 0.5 * eps)
    beta = math.sqrt(0.5 * eps)
    A = math.sqrt(q) * alpha
    B = math.sqrt(q) * beta
    hs = step(kappa, q * alpha * alpha)
    hd = step(kappa, q * beta * beta)
    xs = A * hs
    xd = B * hd
    lattice = use_lattice and xs != 0.0 and xd != 0.0
    P = 0
    Q = 0
    delta = 0.0
    if lattice:
        hs_l = hs
        hd_l = hd
        if xs >= xd:
            delta = xd
            P = max(1, int(xs / delta * (1.0 + 1e-12)))
            Q = 1
            hs_l = P * delta / A
        else:
            delta = xs
            P = 1
            Q = max(1, int(xd / delta * (1.0 + 1e-12)))
            hd_l = Q * delta / B
        Ks_l = int(Z2 / hs_l)
        Kd_l = int(Z2 / hd_l)
        lattice = P * Ks_l + Q * Kd_l + 1 <= 2 * (Ks_l + 1) * (Kd_l + 1)
        if lattice:
            hs = hs_l
            hd = hd_l
    Ks = int(Z2 / hs)
    Kd = int(Z2 / hd)
    M = P * Ks + Q * Kd if lattice else 0
    # phi and phi' on the lattice m delta, m = -M..M (odd phi: m >= 0 and symmetry).
    lat = np.empty(2 * M + 1)
    dlat = np.empty(2 * M + 1)
    if lattice:
        for m in range(0 if odd else -M, M + 1):
            p, dp = phi(act, m * delta)
            lat[m + M] = p
            dlat[m + M] = dp
        if odd:
            for m in range(1, M + 1):
                lat[M - m] = -lat[M + m]
                dlat[M - m] = dlat[M + m]
    wd = _d_weights(Kd, hd)
    r2 = Z2 * Z2
    D = 0.0
    Dl = 0.0
    Dp = 0.0
    j0 = 0 if odd else -Ks
    p1 = np.empty(Kd + 1)
    p2 = np.empty(Kd + 1)
    dp1 = np.empty(Kd + 1)
    dp2 = np.empty(Kd + 1)
    for j in range(j0, Ks + 1):
        s = j * hs
        ws = _s_weight(s, hs, odd and j > 0)
        kmax = -1  # the last d_k inside the disc s^2 + d^2 <= Z2^2
        while kmax < Kd:
            d = (kmax + 1) * hd
            if s * s + d * d > r2:
                break
            kmax += 1
        if lattice:
            rs, rl, rp = _lattice_row_sums(wd, lat, dlat, P * j + M, Q, kmax)
        else:
            As = A * s
            for k in range(kmax + 1):
                d = k * hd
                p1[k], dp1[k] = phi(act, As + B * d)
                p2[k], dp2[k] = phi(act, As - B * d)
            rs, rl, rp = _row_sums(wd, p1, p2, dp1, dp2, kmax)
        D += ws * rs
        Dl += ws * 0.5 * rl
        Dp += ws * rp
    return Pair(D, Dl, Dp)


@nb.njit(cache=True)
def _trapezoid_terms(act, q, eps):
    """Node pairs (s_j, d_k) of :func:`_sum_difference_rule` at (q, eps), halved for odd phi:
    its work, up to the lattice's phi evaluations (at most twice as many, by construction)."""
    alpha2 = 1.0 - 0.5 * eps
    # In floats: at q ~ 1e16 the integer product would overflow.
    Ks = math.floor(Z2 / step(act.kappa, q * alpha2))
    Kd = math.floor(Z2 / step(act.kappa, q * 0.5 * eps))
    n = (2.0 * Ks + 1.0) * (Kd + 1.0)
    return 0.5 * n if act.odd else n


@nb.njit(cache=True)
def moments2(act, q, eps):
    """(D, Delta, Dp) at variance q and correlation c = 1 - eps (see module docstring)."""
    if act.family != CF_NONE:
        return Pair(*closed.equal_variance(act, q, eps))
    taylor = EPS_TAYLOR if act.kinks.shape[0] == 0 else EPS_TAYLOR * EPS_TAYLOR
    if eps * max(q, 1.0) < taylor or q == 0.0:
        if q == 0.0:
            p0, dp0 = phi(act, 0.0)
            return Pair(p0 * p0, 0.0, dp0 * dp0)
        m = moments1(act, q, np.empty(0), True)
        delta = q * eps * m.dphi2
        return Pair(m.phi2 - delta, delta, m.dphi2)
    if act.kinks.shape[0] == 0:
        graded = soft_kink(act, q) and _trapezoid_terms(act, q, eps) > TRAPEZOID_TERMS_MAX
        if graded:
            return graded_rule(act, np.zeros(1), graded, q, q, eps)
        return _sum_difference_rule(act, q, eps, True)
    return kinked_rule(act, q, q, eps)


# --------------------------------------------------------------------------- general covariance
@nb.njit(cache=True)
def _smooth_general(act, s11, s22, eps):
    """2-D trapezoid for smooth phi with unequal variances.

    u = sqrt(s11) (alpha s + beta d), v = sqrt(s22) (alpha s - beta d) with
    alpha^2 = 1 - eps/2, beta^2 = eps/2 (so corr(u, v) = 1 - eps); steps as in the
    equal-variance rule with the larger variance, on the disc of radius Z2.
    For odd phi the integrand is even under (s, d) -> (-s, -d): half the plane.
    """
    odd = act.odd
    kappa = act.kappa
    alpha = math.sqrt(1.0 - 0.5 * eps)
    beta = math.sqrt(0.5 * eps)
    r1 = math.sqrt(s11)
    r2 = math.sqrt(s22)
    smax = max(s11, s22)
    hs = step(kappa, smax * alpha * alpha)
    hd = step(kappa, smax * beta * beta)
    Ks = int(Z2 / hs)
    Kd = int(Z2 / hd)
    rr = Z2 * Z2
    D = 0.0
    Dp = 0.0
    j0 = 0 if odd else -Ks
    for j in range(j0, Ks + 1):
        s = j * hs
        ws = hs * pdf(s)
        if odd and j > 0:
            ws *= 2.0
        rs = 0.0
        rp = 0.0
        for k in range(-Kd, Kd + 1):
            d = k * hd
            if s * s + d * d > rr:
                continue
            w = hd * pdf(d)
            p1, dp1 = phi(act, r1 * (alpha * s + beta * d))
            p2, dp2 = phi(act, r2 * (alpha * s - beta * d))
            rs += w * p1 * p2
            rp += w * dp1 * dp2
        D += ws * rs
        Dp += ws * rp
    return D, Dp


@nb.njit(cache=True)
def pair(act, s11, s22, s12, same):
    """(E phi(u)phi(v), E phi'(u)phi'(v)) for (u, v) ~ N(0, [[s11, s12], [s12, s22]]).

    ``same`` marks u = v (a diagonal entry): then the 1-D moments are used, exactly as
    for the length map, so diagonals agree bit for bit between blocks.
    """
    if same or (s11 == s22 and s12 == s11):
        m = moments2(act, s11, 0.0)
        return m.D, m.Dp
    if s11 == 0.0 or s22 == 0.0:
        # One input is identically zero: E phi(0) phi(v) = phi(0) E phi(v).
        p0, dp0 = phi(act, 0.0)
        if s11 == 0.0 and s22 == 0.0:
            return p0 * p0, dp0 * dp0
        m1 = moments1(act, max(s11, s22), np.empty(0), True)
        return p0 * m1.phi, dp0 * m1.dphi
    if act.family != CF_NONE:
        return closed.general(act, s11, s22, s12)
    r = math.sqrt(s11 * s22)
    eps = max(0.0, min(2.0, (r - s12) / r))
    if s11 == s22:
        m = moments2(act, s11, eps)
        return m.D, m.Dp
    if act.kinks.shape[0] == 0:
        graded = soft_kink(act, max(s11, s22))
        if graded:
            m = graded_rule(act, np.zeros(1), graded, s11, s22, eps)
            return m.D, m.Dp
        return _smooth_general(act, s11, s22, eps)
    m = kinked_rule(act, s11, s22, eps)
    return m.D, m.Dp
