"""Per-input Hermite expansions for two-point expectations on a general 2 x 2 covariance
(docs/theory.md, "Kernels on a data set").

With probabilists' Hermite polynomials He_n and, for an input of variance q::

    phi(sqrt(q) z)  = sum_n a_n(q) He_n(z) / sqrt(n!),   a_n(q) = E[phi(sqrt(q) z) He_n(z)] / sqrt(n!)
    phi'(sqrt(q) z) = sum_n b_n(q) He_n(z) / sqrt(n!),   b_n(q) = E[phi'(sqrt(q) z) He_n(z)] / sqrt(n!)

Mehler's formula gives, for (u, v) ~ N(0, [[q_i, s], [s, q_j]]) and c = s / sqrt(q_i q_j)::

    E[phi(u) phi(v)]   = sum_n a_n(q_i) a_n(q_j) c^n
    E[phi'(u) phi'(v)] = sum_n b_n(q_i) b_n(q_j) c^n

so each input costs one 1-D quadrature per depth (all n at once) and each pair a short
Horner sum.  The same coefficients serve the convolutional kernels per pixel
(:mod:`meanfield.ntk.conv_hermite`): :func:`hermite_grid` and :func:`project` are the
quadrature on a grid shared by many variances, and :func:`mehler_stein` the pair sum that
takes E phi' phi' from the a_n alone (Stein's lemma).  Truncated after n = N, the error is bounded by Cauchy-Schwarz::

    |sum_{n>N} a_n(q_i) a_n(q_j) c^n| <= |c|^(N+1) sqrt(T_i T_j),
    T_i = E[phi(sqrt(q_i) z)^2] - sum_{n<=N} a_n(q_i)^2,

with E phi^2 the exact 1-D moment (the length map's own value).  T is a difference of
nearly equal numbers: where the true tail is below rounding the computed one is noise of
either sign, so the bound uses max(T, 0) plus a floor ``TAIL_FLOOR`` (relative to
E phi^2) that dominates that noise.  Pairs for which the bound is not below ``RTOL``
(relative to sqrt(E phi_i^2 E phi_j^2), and likewise for phi') fall back to the exact 2-D
quadrature (:func:`meanfield.core.gaussian.moments.pair`): c near +-1 with slowly decaying
coefficients (large q, kinks).  The tails are stored at the truncation orders ``LADDER``
so that a tile of pairs can use the fewest terms its largest |c| allows.

The coefficients come from the trapezoid rule in z (Gauss-Legendre panels split at the
kinks for kinked phi), with a step small enough both for phi(sqrt(q) z)
(:func:`meanfield.core.gaussian.quadrature.step`) and for He_n(z) pdf(z) up to n = N:
the trapezoid error for He_n pdf at step h is ~ w^n e^{-w^2/2} / sqrt(n!), w = 2 pi / h,
below 1e-17 for h <= H_HERM / sqrt(N + 1).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from ..functions import phi
from .kinked import Q_SOFT, kink_breakpoints
from .moments import pair
from .quadrature import (PANEL_MAX, PANELS_PER_STEP, Z1, panel_count, panel_nodes,
                         pdf, step)

# Truncation orders at which tails are stored; a pair uses the first that meets RTOL.
# Consecutive orders differ by 4, 8, 16 or 32 (the kernel steps |c|^(N+1) up the ladder
# with the powers |c|^4 ... |c|^32).
LADDER = np.array([8, 12, 16, 24, 32, 48, 64, 96, 128], dtype=np.int64)
N_DEFAULT = 64
RTOL = 1e-13     # truncation bound per layer, relative to sqrt(E phi_i^2 E phi_j^2)
H_HERM = 2.4     # trapezoid step for He_n pdf up to n = N: h <= H_HERM / sqrt(N + 1)
# The two step limits combine as 1/h = 1/h_phi + sqrt(N + 1)/H_HERM, times this factor:
# measured against a step-0.01 reference (tanh, silu, softplus, sigmoid; q = 0.1..30;
# N = 64) the coefficients stay within 2e-16 of the largest at 1.5 (1e-15 at 2).
STEP_FACTOR = 1.5
_EPS = 2.220446049250313e-16
# |c|^n below this ends a Mehler series early (:func:`mehler_stein`); with the
# Cauchy-Schwarz bound this is a margin below the 1e-12 truncation of the conv tables.
C_POWER_TAIL = 1e-16
_LOG_C_TAIL = math.log(C_POWER_TAIL)


@nb.njit(cache=True)
def tail_floor(N):
    """Relative noise floor of a computed tail E phi^2 - sum_{n<=N} a_n^2.  Measured: where
    the true tail is zero the computed one is within +-2.2e-15 (tanh, silu, softplus,
    sigmoid, gelu, q in [0.01, 0.3], N = 128); the floor is above that with the sum's
    rounding at the largest order, (129) eps, on top.  The same floor for every N keeps
    the bounds non-increasing along the ladder, so the orders that fail form a prefix."""
    return 5e-15 + (LADDER[-1] + 1) * _EPS  # one floor for every N: tails then never grow with N


@nb.njit(cache=True)
def herm_step(kappa, q, N):
    """Trapezoid step resolving both phi(sqrt(q) z) and He_n(z) pdf(z), n <= N."""
    return STEP_FACTOR / (1.0 / step(kappa, q) + math.sqrt(N + 1.0) / H_HERM)


@nb.njit(cache=True)
def _nodes(act, q, N):
    """Nodes and weights (density included) in z for the coefficients at variance q."""
    sq = math.sqrt(q)
    h = herm_step(act.kappa, q, N)
    zmax = max(Z1, 2.0 * math.sqrt(N + 1.0) + 4.0)
    kinks = act.kinks
    if kinks.shape[0] == 0:
        K = int(zmax / h)
        zs = np.empty(2 * K + 1)
        ws = np.empty(2 * K + 1)
        for k in range(-K, K + 1):
            z = k * h
            zs[k + K] = z
            ws[k + K] = h * pdf(z)
        return zs, ws
    width = min(PANEL_MAX, PANELS_PER_STEP * h)
    pts, graded = kink_breakpoints(act, sq, width, zmax, q > Q_SOFT)
    if graded:
        # Away from the kinks the panels need only resolve He_N.
        width = min(PANEL_MAX, PANELS_PER_STEP * STEP_FACTOR * H_HERM / math.sqrt(N + 1.0))
    nmax = panel_count(pts, width)
    zs = np.empty(nmax)
    ws = np.empty(nmax)
    nn = panel_nodes(pts, width, zs, ws)
    for k in range(nn):
        ws[k] *= pdf(zs[k])
    return zs[:nn], ws[:nn]


@nb.njit(cache=True)
def coefficients_one(act, q, N, a, b):
    """a[n], b[n] (n <= N) of phi and phi' at variance q > 0."""
    zs, ws = _nodes(act, q, N)
    nn = zs.shape[0]
    sq = math.sqrt(q)
    wp = np.empty(nn)
    wd = np.empty(nn)
    for k in range(nn):
        p, dp = phi(act, sq * zs[k])
        wp[k] = ws[k] * p
        wd[k] = ws[k] * dp
    hm = np.zeros(nn)
    h = np.ones(nn)
    for n in range(N + 1):
        sa = 0.0
        sb = 0.0
        for k in range(nn):
            sa += wp[k] * h[k]
            sb += wd[k] * h[k]
        a[n] = sa
        b[n] = sb
        s = math.sqrt(n)
        r = 1.0 / math.sqrt(n + 1.0)
        for k in range(nn):
            hn = (zs[k] * h[k] - s * hm[k]) * r
            hm[k] = h[k]
            h[k] = hn


@nb.njit(cache=True, parallel=True)
def coefficients(act, q, N, ladder, A, B, tau, FG):
    """Hermite data of every point at one depth.

    q : float64[n]
        Variances.
    A, B : float64[N + 1, n]
        Out: a_n(q_i), b_n(q_i) (column i).
    tau : float64[n, 2, len(ladder)]
        Out: square roots of the relative tail bounds of phi (0) and phi' (1) after
        ladder[m] terms, sqrt((max(T, 0) + floor) / E[.^2]); +inf where the series may
        not be used (q_i = 0, E phi^2 = 0, or ladder[m] > N).  A pair may use ladder[m]
        terms when |c|^(ladder[m] + 1) tau_i tau_j <= RTOL for phi and phi'.
    FG : float64[n, 2]
        Out: exact E phi^2, E phi'^2 at q_i, from :func:`moments.pair` with ``same`` (the
        values of the length map, bit for bit).
    """
    n = q.shape[0]
    nl = ladder.shape[0]
    for i in prange(n):
        qi = q[i]
        F, G = pair(act, qi, qi, qi, True)
        FG[i, 0] = F
        FG[i, 1] = G
        a = np.zeros(N + 1)
        b = np.zeros(N + 1)
        ok = qi > 0.0 and F > 0.0 and G > 0.0 and math.isfinite(qi)
        if ok:
            coefficients_one(act, qi, N, a, b)
        for m in range(N + 1):
            A[m, i] = a[m]
            B[m, i] = b[m]
        sa = 0.0
        sb = 0.0
        m = 0
        for l in range(nl):
            tau[i, 0, l] = math.inf
            tau[i, 1, l] = math.inf
        for nn in range(N + 1):
            sa += a[nn] * a[nn]
            sb += b[nn] * b[nn]
            while m < nl and ladder[m] < nn:
                m += 1
            if m < nl and ladder[m] == nn and ok:
                fl = tail_floor(nn)
                tau[i, 0, m] = math.sqrt(max(F - sa, 0.0) / F + fl)
                tau[i, 1, m] = math.sqrt(max(G - sb, 0.0) / G + fl)


# --------------------------------------------------------------------------- shared grid
@nb.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def project(act, q, z, H, A, B):
    """A[n, i] = sum_k H[n, k] phi(sqrt(q_i) z_k), B likewise with phi' (parallel over i;
    BLAS here would fight the Numba threads for the two cores)."""
    M = z.shape[0]
    for i in prange(q.shape[0]):
        sq = math.sqrt(q[i]) if q[i] > 0.0 else 0.0
        P = np.empty(M)
        dP = np.empty(M)
        for k in range(M):
            p, dp = phi(act, sq * z[k])
            P[k] = p
            dP[k] = dp
        for n in range(H.shape[0]):
            sa = 0.0
            sb = 0.0
            for k in range(M):
                sa += H[n, k] * P[k]
                sb += H[n, k] * dP[k]
            A[n, i] = sa
            B[n, i] = sb


@nb.njit(cache=True, parallel=True)
def _moments_tails(act, q, N, ladder, A, B, tau, FG):
    """FG (exact 1-D moments) and tau from the coefficients A, B (see :func:`coefficients`)."""
    nl = ladder.shape[0]
    for i in prange(q.shape[0]):
        qi = q[i]
        F, G = pair(act, qi, qi, qi, True)
        FG[i, 0] = F
        FG[i, 1] = G
        ok = qi > 0.0 and F > 0.0 and G > 0.0 and math.isfinite(qi)
        for l in range(nl):
            tau[i, 0, l] = math.inf
            tau[i, 1, l] = math.inf
        if not ok:
            for m in range(N + 1):
                A[m, i] = 0.0
                B[m, i] = 0.0
            continue
        sa = 0.0
        sb = 0.0
        m = 0
        for nn in range(N + 1):
            sa += A[nn, i] * A[nn, i]
            sb += B[nn, i] * B[nn, i]
            while m < nl and ladder[m] < nn:
                m += 1
            if m < nl and ladder[m] == nn:
                fl = tail_floor(nn)
                tau[i, 0, m] = math.sqrt(max(F - sa, 0.0) / F + fl)
                tau[i, 1, m] = math.sqrt(max(G - sb, 0.0) / G + fl)


@nb.njit(cache=True, parallel=True)
def exact_moments(act, q, FG):
    """FG[i] = (E phi(sqrt(q_i) z)^2, E phi'(sqrt(q_i) z)^2) by the exact rule: the values
    :func:`coefficients` and :func:`coefficients_fast` return in their FG, bit for bit."""
    for i in prange(q.shape[0]):
        F, G = pair(act, q[i], q[i], q[i], True)
        FG[i, 0] = F
        FG[i, 1] = G


def hermite_grid(kappa, qmax, N, zmax=None):
    """The trapezoid rule of the coefficients, shared by all variances up to ``qmax``.

    Returns (z, H) with z_k = k h, |z_k| <= zmax (default max(Z1, 2 sqrt(N + 1) + 4), past
    the oscillatory range of He_N; for N in the hundreds He_n(zmax) overflows there, and
    a caller may pass a smaller zmax: by Cramer's inequality
    |He_n(z)| / sqrt(n!) <= 1.09 e^(z^2 / 4), so the integrand is below
    1.09 |phi(sqrt(q) z)| e^(-z^2 / 4) / sqrt(2 pi) whatever n), h = :func:`herm_step`
    (kappa, qmax, N), and
    H[n, k] = w_k He_n(z_k) / sqrt(n!), w_k = h pdf(z_k), so that for any variance
    q <= qmax::

        a_n(q) = E[phi(sqrt(q) z) He_n(z)] / sqrt(n!) ~= sum_k H[n, k] phi(sqrt(q) z_k)

    (:func:`project`).  He_n / sqrt(n!) by the normalised three-term recurrence.
    """
    h = herm_step(kappa, qmax, N)
    if zmax is None:
        zmax = max(Z1, 2.0 * math.sqrt(N + 1.0) + 4.0)
    K = int(zmax / h)
    z = np.arange(-K, K + 1) * h
    w = h * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    H = np.empty((N + 1, z.size))
    hm = np.zeros_like(z)
    hc = np.ones_like(z)
    for n in range(N + 1):
        H[n] = w * hc
        hm, hc = hc, (z * hc - math.sqrt(n) * hm) / math.sqrt(n + 1.0)
    return z, H


def coefficients_fast(act, q, N, ladder, A, B, tau, FG, zmax=None):
    """:func:`coefficients` for a smooth phi (no kinks) on one trapezoid grid shared by all
    points, the step set by the largest variance (:func:`hermite_grid`, with its ``zmax``):
    the Hermite recurrence runs once, and each point's coefficients are dot products
    A[:, i] = H phi_i."""
    if act.kinks.shape[0] > 0:
        coefficients(act, q, N, ladder, A, B, tau, FG)
        return
    qmax = float(np.max(q)) if q.size else 0.0
    z, H = hermite_grid(act.kappa, qmax, N, zmax)
    project(act, q, z, H, A, B)
    _moments_tails(act, q, N, ladder, A, B, tau, FG)


# --------------------------------------------------------------------------- Mehler sums
@nb.njit(cache=True)
def mehler_cut(K, a, b, s12, same):
    """(c, terms): the pair's correlation c = s12 / sqrt(a b) (1 when ``same``) and the
    number of Mehler terms, at most K, after which |c|^n < C_POWER_TAIL (|c| < 0.999)."""
    c = 1.0 if same else min(1.0, max(-1.0, s12 / math.sqrt(a * b)))
    ac = abs(c)
    if ac < 0.5:
        K = min(K, 2 + int(_LOG_C_TAIL / math.log(max(ac, 1e-300))))
    elif ac < 0.999:
        K = min(K, 2 + int(_LOG_C_TAIL / math.log(ac)))
    return c, K


@nb.njit(cache=True)
def mehler_stein(ha, hb, K, a, b, s12, same, odd):
    """(E phi(u) phi(v), E phi'(u) phi'(v)) for (u, v) ~ N(0, [[a, s12], [s12, b]]) from the
    coefficient rows ha = a_n(a), hb = a_n(b) alone (first K used)::

        E[phi(u) phi(v)]   = sum_n a_n(a) a_n(b) c^n
        E[phi'(u) phi'(v)] = sum_{n>=1} n a_n(a) a_n(b) c^(n-1) / sqrt(a b)

    with c = s12 / sqrt(a b) clamped to [-1, 1] (c = 1 when ``same``); the second line is
    the derivative of the first in s12 (Stein's lemma: b_n = sqrt(n + 1) a_{n+1} / sqrt(q)),
    so phi' needs no coefficients of its own.  Horner in c; with ``odd`` (a_n = 0 for every
    even n >= 2, e.g. an odd phi plus a constant) only n = 0 and the odd n are summed, Horner
    in c^2.  For |c| < 0.999 the series stops once |c|^n < C_POWER_TAIL: the terms left are
    below that times sum |a_n(a) a_n(b)| <= sqrt(E phi(u)^2 E phi(v)^2) (Cauchy-Schwarz), and
    n |c|^(n-1) times the same for phi'.
    """
    r = math.sqrt(a * b)
    c, K = mehler_cut(K, a, b, s12, same)
    D = 0.0
    Dp = 0.0
    if odd:
        c2 = c * c
        k = K - 1 if (K - 1) % 2 == 1 else K - 2
        while k >= 1:
            t = ha[k] * hb[k]
            D = D * c2 + t
            Dp = Dp * c2 + k * t
            k -= 2
    else:
        for k in range(K - 1, 0, -1):
            t = ha[k] * hb[k]
            D = D * c + t
            Dp = Dp * c + k * t
    D = D * c + ha[0] * hb[0]
    return D, Dp / r


assert LADDER[0] == 8 and set(np.diff(LADDER)) <= {4, 8, 16, 32} and np.all(np.diff(np.diff(LADDER)) >= 0)
