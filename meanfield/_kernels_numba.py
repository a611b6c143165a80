"""Numba kernels for the NNGP / NTK recursion on a data set (THEORY.md, "Kernels on a data set").

One call of :func:`advance` moves a block of kernel entries through K layers::

    Sigma^{l+1}_ij = sw2 E[phi(u) phi(v)] + sb2
    Theta^{l+1}_ij = Sigma^{l+1}_ij + sw2 E[phi'(u) phi'(v)] Theta^l_ij,   (u, v) ~ N(0, Lambda^l_ij)

Modes (chosen in Python, see ``meanfield/kernels.py``):

``MODE_GENERAL``
    Every pair has its own 2x2 covariance (inputs of unequal norms).  Closed forms for
    the ReLU family, erf, linear and sin with general Sigma11, Sigma22; otherwise a 2-D
    quadrature per pair (trapezoid in sum/difference variables for smooth phi, composite
    Gauss-Legendre split at the kinks otherwise).
``MODE_SHARED_CLOSED`` / ``MODE_SHARED_CHEB`` / ``MODE_SHARED_QUAD``
    All inputs share one norm, so at each depth every pair shares one variance q and the
    state of a pair is eps = 1 - c, carried directly so that pairs near c = 1 keep their
    digits (THEORY.md, "Numerics").  The expectations come from the closed forms of
    ``_expect._closed2``, from a Chebyshev interpolant in c (smooth activations), or from
    ``_expect.moments2`` per pair (kinked activations without a closed form).

Work is split with ``prange`` over tiles (tile pairs of a symmetric block); each
iteration writes only its own entries.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from .activations import CF_ERF, CF_LINEAR, CF_NONE, CF_RELU, CF_SIN, phi
from ._expect import (PANEL_MAX, PANELS_PER_STEP, Z1, Z2, _GL_W, _GL_X, _breakpoints, _closed2,
                      _pdf, _sin_minus_theta_cos, _step, moments1, moments2)

MODE_GENERAL = 0
MODE_SHARED_CLOSED = 1
MODE_SHARED_CHEB = 2
MODE_SHARED_QUAD = 3

_PI = math.pi


# --------------------------------------------------------------------------- general covariance
@nb.njit(cache=True)
def _theta_of(c, eps):
    """Angle arccos(c) from eps = 1 - c, stable near c = 1 (arccos' is infinite there)."""
    if c > 0.0:
        return 2.0 * math.asin(math.sqrt(0.5 * eps))
    return math.acos(c)


@nb.njit(cache=True)
def _closed_general(cf, a, s11, s22, s12):
    """(E phi(u)phi(v), E phi'(u)phi'(v)) for a closed-form family, (u, v) ~ N(0, [[s11, s12], [s12, s22]])."""
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
    theta = _theta_of(c, (r - s12) / r)
    D = k * r * (math.sin(theta) + (_PI - theta) * c) / (2.0 * _PI) + a * s12
    Dp = a + k * (_PI - theta) / (2.0 * _PI)
    return D, Dp


@nb.njit(cache=True)
def _smooth_general(kind, a, b, ufn, kappa, odd, s11, s22, eps):
    """2-D trapezoid for smooth phi with unequal variances.

    u = sqrt(s11) (alpha s + beta d), v = sqrt(s22) (alpha s - beta d) with
    alpha^2 = 1 - eps/2, beta^2 = eps/2 (so corr(u, v) = 1 - eps); steps as in
    ``_expect._moments2_smooth`` with the larger variance, on the disc of radius Z2.
    For odd phi the integrand is even under (s, d) -> (-s, -d): half the plane.
    """
    alpha = math.sqrt(1.0 - 0.5 * eps)
    beta = math.sqrt(0.5 * eps)
    r1 = math.sqrt(s11)
    r2 = math.sqrt(s22)
    smax = max(s11, s22)
    hs = _step(kappa, smax * alpha * alpha)
    hd = _step(kappa, smax * beta * beta)
    Ks = int(Z2 / hs)
    Kd = int(Z2 / hd)
    rr = Z2 * Z2
    D = 0.0
    Dp = 0.0
    j0 = 0 if odd else -Ks
    for j in range(j0, Ks + 1):
        s = j * hs
        ws = hs * _pdf(s)
        if odd and j > 0:
            ws *= 2.0
        rs = 0.0
        rp = 0.0
        for k in range(-Kd, Kd + 1):
            d = k * hd
            if s * s + d * d > rr:
                continue
            w = hd * _pdf(d)
            p1, dp1 = phi(kind, r1 * (alpha * s + beta * d), a, b, ufn)
            p2, dp2 = phi(kind, r2 * (alpha * s - beta * d), a, b, ufn)
            rs += w * p1 * p2
            rp += w * dp1 * dp2
        D += ws * rs
        Dp += ws * rp
    return D, Dp


@nb.njit(cache=True)
def _merge(p, q):
    out = np.empty(p.shape[0] + q.shape[0])
    out[:p.shape[0]] = p
    out[p.shape[0]:] = q
    return np.unique(out)


@nb.njit(cache=True)
def _kinked_general(kind, a, b, ufn, kinks, kappa, s11, s22, c):
    """Composite 16-point Gauss-Legendre, u = sqrt(s11) z1, v = sqrt(s22)(c z1 + sqrt(1-c^2) z2).

    Panels end at every kink of phi(u) (outer variable) and, for each z1, at every z2
    where v crosses a kink, as in ``_expect._moments2_kinked``.
    """
    sq1 = math.sqrt(s11)
    sq2 = math.sqrt(s22)
    sc = math.sqrt(max(0.0, (1.0 - c) * (1.0 + c)))
    w1 = min(PANEL_MAX, PANELS_PER_STEP * _step(kappa, max(s11, s22 * c * c)))
    w2 = min(PANEL_MAX, PANELS_PER_STEP * _step(kappa, s22 * sc * sc))
    outer = _breakpoints(kinks, sq1, 0.0, -Z1, Z1)
    if sc == 0.0:
        # v = c sqrt(s22) z1 exactly: a 1-D integral, split also where v crosses a kink.
        outer = _merge(outer, _breakpoints(kinks, sq2 * c, 0.0, -Z1, Z1))
    ng = _GL_X.shape[0]
    D = 0.0
    Dp = 0.0
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
                f1, df1 = phi(kind, sq1 * z1, a, b, ufn)
                if sc == 0.0:
                    f2, df2 = phi(kind, sq2 * c * z1, a, b, ufn)
                    D += wz1 * f1 * f2
                    Dp += wz1 * df1 * df2
                    continue
                inner = _breakpoints(kinks, sq2 * sc, sq2 * c * z1, -Z1, Z1)
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
                            f2, df2 = phi(kind, sq2 * (c * z1 + sc * z2), a, b, ufn)
                            D += w * f1 * f2
                            Dp += w * df1 * df2
    return D, Dp


@nb.njit(cache=True)
def pair_general(kind, a, b, ufn, cf, kinks, kappa, odd, s11, s22, s12, same):
    """(E phi(u)phi(v), E phi'(u)phi'(v)) for (u, v) ~ N(0, [[s11, s12], [s12, s22]]).

    ``same`` marks u = v (a diagonal entry): then the 1-D moments are used, exactly as
    for the length map, so diagonals agree bit for bit between blocks.
    """
    if same or (s11 == s22 and s12 == s11):
        D, _, Dp = moments2(kind, a, b, ufn, cf, kinks, kappa, odd, s11, 0.0)
        return D, Dp
    if s11 == 0.0 or s22 == 0.0:
        # One input is identically zero: E phi(0) phi(v) = phi(0) E phi(v).
        p0, dp0 = phi(kind, 0.0, a, b, ufn)
        if s11 == 0.0 and s22 == 0.0:
            return p0 * p0, dp0 * dp0
        m = moments1(kind, a, b, ufn, cf, kinks, kappa, max(s11, s22), np.empty(0))
        return p0 * m[0], dp0 * m[4]
    if cf != CF_NONE:
        return _closed_general(cf, a, s11, s22, s12)
    r = math.sqrt(s11 * s22)
    c = min(1.0, max(-1.0, s12 / r))
    eps = (r - s12) / r
    if s11 == s22:
        D, _, Dp = moments2(kind, a, b, ufn, cf, kinks, kappa, odd, s11, max(0.0, min(2.0, eps)))
        return D, Dp
    if kinks.shape[0] == 0:
        return _smooth_general(kind, a, b, ufn, kappa, odd, s11, s22, max(0.0, min(2.0, eps)))
    return _kinked_general(kind, a, b, ufn, kinks, kappa, s11, s22, c)


@nb.njit(cache=True, parallel=True)
def diag_step(kind, a, b, ufn, cf, kinks, kappa, odd, sw2, sb2, q, qnext, dnext):
    """Length map per point: qnext_i = sw2 E phi(sqrt(q_i) z)^2 + sb2; dnext_i = sw2 E phi'^2."""
    for i in prange(q.shape[0]):
        D, Dp = pair_general(kind, a, b, ufn, cf, kinks, kappa, odd, q[i], q[i], q[i], True)
        qnext[i] = sw2 * D + sb2
        dnext[i] = sw2 * Dp


# --------------------------------------------------------------------------- shared norm
@nb.njit(cache=True)
def _clenshaw2(cg, cp, x):
    """Two Chebyshev series sum_m c_m T_m(x) at one x, in one Clenshaw loop."""
    b1g = 0.0
    b2g = 0.0
    b1p = 0.0
    b2p = 0.0
    x2 = 2.0 * x
    for m in range(cg.shape[0] - 1, 0, -1):
        tg = x2 * b1g - b2g + cg[m]
        tp = x2 * b1p - b2p + cp[m]
        b2g = b1g
        b1g = tg
        b2p = b1p
        b1p = tp
    return x * b1g - b2g + cg[0], x * b1p - b2p + cp[0]


@nb.njit(cache=True)
def shared_constants(cf, a, q):
    """Per-depth constants of the fast shared-norm closed forms (see ``_closed_shared``)."""
    cst = np.zeros(4)
    if cf == CF_ERF:
        r = 2.0 * q / (1.0 + 2.0 * q)
        cst[0] = r
        cst[1] = math.sqrt(1.0 + 4.0 * q) / (1.0 + 2.0 * q)  # sqrt(1 - r^2), no cancellation
        cst[2] = (2.0 / _PI) * math.asin(r)  # E erf^2, as _closed2 computes it
        cst[3] = 1.0 + 2.0 * q
    return cst


# Above this correlation Delta = E phi^2 - E phi(u)phi(v) would lose digits to
# cancellation, so the erf closed form evaluates Delta by its own arcsine identity and D
# by subtraction; below it, the other way round.  Either way the subtraction loses less
# than a factor 3 and each pair costs one arcsine.
_ERF_DELTA_SPLIT = 0.5


@nb.njit(cache=True)
def _closed_shared(cf, a, q, e, cst):
    """(D, Delta, Dp) at variance q and correlation 1 - e: ``_expect._closed2`` with the
    per-depth constants hoisted and the fewest transcendental functions per pair."""
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
            smtc = _sin_minus_theta_cos(theta)
        else:
            smtc = sin_t - theta * c
        Delta = k * q * (_PI * e - smtc) / (2.0 * _PI) + a * q * e
        Dp = a + k * (_PI - theta) / (2.0 * _PI)
        return D, Delta, Dp
    return _closed2(cf, a, q, e)


@nb.njit(cache=True, parallel=True)
def node_moments(kind, a, b, ufn, cf, kinks, kappa, odd, q, eps, out):
    """moments2 at variance q and every eps[k] (Chebyshev nodes), in parallel."""
    for k in prange(eps.shape[0]):
        D, Dl, Dp = moments2(kind, a, b, ufn, cf, kinks, kappa, odd, q, eps[k])
        out[k, 0] = D
        out[k, 1] = Dl
        out[k, 2] = Dp


# --------------------------------------------------------------------------- layers of a block
_TILE = 64  # a 64 x 64 tile of the state (eps, Theta, Sigma) is 96 kB: it stays in L2


@nb.njit(cache=True)
def _tile_of(t, nt):
    """Tile pair number t -> (bi, bj), bi <= bj, row-major over the upper tile triangle."""
    bi = 0
    rem = t
    while rem >= nt - bi:
        rem -= nt - bi
        bi += 1
    return bi, bi + rem


@nb.njit(cache=True)
def _put(k, i, j, sv, tv, S, T, sym):
    S[k, i, j] = sv
    T[k, i, j] = tv
    if sym:
        S[k, j, i] = sv
        T[k, j, i] = tv


# One function per mode: a single function with every mode's branch inside the pair loop
# ran the closed forms at half speed (the quadrature code inlined next to them spoils
# the loop's register allocation).
@nb.njit(cache=True)
def _tile_closed(k, cf, a, sw2, sb2, q, qnext, m_phi2, cst, th, eps, S, T, sym, i0, i1, j0, j1):
    scale = sw2 / qnext if qnext > 0.0 else 0.0
    for i in range(i0, i1):
        for j in range(max(i, j0) if sym else j0, j1):
            D, Dl, Dp = _closed_shared(cf, a, q, eps[i, j], cst)
            if sym and i == j:
                D = m_phi2  # the diagonal is the length map itself, bit for bit
            # eps^{l+1} = 1 - Sigma^{l+1}/q^{l+1} = sw2 Delta / q^{l+1}: no cancellation.
            eps[i, j] = scale * Dl
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            th[i, j] = tv
            _put(k, i, j, sv, tv, S, T, sym)


@nb.njit(cache=True)
def _tile_cheb(k, sw2, sb2, qnext, m_phi2, cg, cp, th, eps, S, T, sym, i0, i1, j0, j1):
    scale = sw2 / qnext if qnext > 0.0 else 0.0
    for i in range(i0, i1):
        for j in range(max(i, j0) if sym else j0, j1):
            e = eps[i, j]
            g, Dp = _clenshaw2(cg, cp, 1.0 - e)
            Dl = e * g
            D = m_phi2 if (sym and i == j) else m_phi2 - Dl
            eps[i, j] = scale * Dl
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            th[i, j] = tv
            _put(k, i, j, sv, tv, S, T, sym)


@nb.njit(cache=True)
def _tile_quad(k, mode, kind, a, b, ufn, cf, kinks, kappa, odd, sw2, sb2, q, qnext, m_phi2,
               qr, qc, sig, th, eps, S, T, sym, i0, i1, j0, j1):
    scale = sw2 / qnext if qnext > 0.0 else 0.0
    for i in range(i0, i1):
        for j in range(max(i, j0) if sym else j0, j1):
            diag = sym and i == j
            if mode == MODE_GENERAL:
                D, Dp = pair_general(kind, a, b, ufn, cf, kinks, kappa, odd, qr[i], qc[j], sig[i, j],
                                     diag)
            else:
                D, Dl, Dp = moments2(kind, a, b, ufn, cf, kinks, kappa, odd, q, eps[i, j])
                if diag:
                    D = m_phi2
                eps[i, j] = scale * Dl
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            sig[i, j] = sv
            th[i, j] = tv
            _put(k, i, j, sv, tv, S, T, sym)


@nb.njit(cache=True, parallel=True)
def advance(modes, kind, a, b, ufn, cf, kinks, kappa, odd, sw2, sb2, qs, qnexts, mphi2s,
            C1, C2, lens, Qr, Qc, sig, th, eps, S, T, sym):
    """Advance a block by K = S.shape[0] layers, writing layer k of Sigma/Theta to S[k], T[k].

    Per layer k: ``modes[k]``, the shared variance ``qs[k]`` -> ``qnexts[k]``, E phi^2
    ``mphi2s[k]``, the closed-form constants (``C1[k]``, MODE_SHARED_CLOSED) or the
    Chebyshev coefficients ``C1[k, :lens[k]]``, ``C2[k, :lens[k]]`` of Delta/(1-c) and
    E phi'phi' (MODE_SHARED_CHEB), and the per-point variances ``Qr[k]``, ``Qc[k]``
    (MODE_GENERAL).  The state ``th``, ``sig`` (MODE_GENERAL) and ``eps`` (shared modes)
    is updated in place; only its upper triangle is read when ``sym``.  S and T may
    alias the state (K = 1, ``S = sig[None]``).

    The loop runs over tiles, and inside a tile over layers: a tile's state stays in
    cache for all K layers, so memory traffic is just the output.  Symmetric blocks are
    processed as tile pairs (I, J), I <= J, each upper entry written to (i, j) and (j, i).
    """
    nr = sig.shape[0]
    nc = sig.shape[1]
    ntr = (nr + _TILE - 1) // _TILE
    ntc = (nc + _TILE - 1) // _TILE
    ntiles = ntr * (ntr + 1) // 2 if sym else ntr * ntc
    for t in prange(ntiles):
        if sym:
            bi, bj = _tile_of(t, ntr)
        else:
            bi = t // ntc
            bj = t % ntc
        i0 = bi * _TILE
        i1 = min(nr, i0 + _TILE)
        j0 = bj * _TILE
        j1 = min(nc, j0 + _TILE)
        for k in range(S.shape[0]):
            n1 = lens[k]
            mode = modes[k]
            if mode == MODE_SHARED_CLOSED:
                _tile_closed(k, cf, a, sw2, sb2, qs[k], qnexts[k], mphi2s[k], C1[k], th, eps, S, T,
                             sym, i0, i1, j0, j1)
            elif mode == MODE_SHARED_CHEB:
                _tile_cheb(k, sw2, sb2, qnexts[k], mphi2s[k], C1[k, :n1], C2[k, :n1], th, eps, S, T,
                           sym, i0, i1, j0, j1)
            else:
                _tile_quad(k, mode, kind, a, b, ufn, cf, kinks, kappa, odd, sw2, sb2, qs[k],
                           qnexts[k], mphi2s[k], Qr[k], Qc[k], sig, th, eps, S, T, sym,
                           i0, i1, j0, j1)


@nb.njit(cache=True, parallel=True)
def refine_eps(A, B, eps, scale, below):
    """Recompute eps_ij = scale |A_i - B_j|^2 / 2 by direct differences where eps_ij < below.

    The Gram-matrix value scale (|a|^2 + |b|^2 - 2 a.b)/2 loses digits for nearly equal
    inputs; only those few pairs pay for the O(d) direct sum.
    """
    for i in prange(A.shape[0]):
        for j in range(B.shape[0]):
            if eps[i, j] < below:
                s = 0.0
                for k in range(A.shape[1]):
                    t = A[i, k] - B[j, k]
                    s += t * t
                eps[i, j] = 0.5 * scale * s


@nb.njit(cache=True, parallel=True)
def half_sq_dist(A, B, out):
    """out_ij = |A_i - B_j|^2 / 2, summed directly (no |a|^2 + |b|^2 - 2 a.b cancellation)."""
    for i in prange(A.shape[0]):
        for j in range(B.shape[0]):
            s = 0.0
            for k in range(A.shape[1]):
                t = A[i, k] - B[j, k]
                s += t * t
            out[i, j] = 0.5 * s
