"""Taylor expansion about c = 1 of the two-point expectations on a general 2 x 2 covariance
(docs/theory.md, "Kernels on a data set"), for pairs of raw inputs so nearly aligned that
the per-input Hermite series cannot meet its bound.

For (u, v) ~ N(0, [[q_i, s], [s, q_j]]), c = s / sqrt(q_i q_j) and fixed variances, Price's
theorem gives d^k/dc^k E[phi(u) phi(v)] = (q_i q_j)^(k/2) E[phi^(k)(u) phi^(k)(v)]; at c = 1
(u = sqrt(q_i) z, v = sqrt(q_j) z) that is the 1-D integral

    g_k(q_i, q_j) = E_z[phi^(k)(sqrt(q_i) z) phi^(k)(sqrt(q_j) z)],

so with x = (c - 1) sqrt(q_i q_j) <= 0::

    E[phi(u) phi(v)]   = sum_{k<K} x^k / k! g_k(q_i, q_j)     + R_K
    E[phi'(u) phi'(v)] = sum_{k<K} x^k / k! g_{k+1}(q_i, q_j) + R'_K

Lagrange's remainder is the K-th derivative at some c' in [c, 1], and by Cauchy-Schwarz
(the marginals do not depend on c') |E[phi^(K)(u) phi^(K)(v)]| <= sqrt(h_K(q_i) h_K(q_j)),
h_K(q) = g_K(q, q)::

    |R_K| <= |x|^K / K! sqrt(h_K(q_i) h_K(q_j)),   |R'_K| <= |x|^K / K! sqrt(h_{K+1}(q_i) h_{K+1}(q_j)).

At one depth the q_i lie in an interval [q_lo, q_hi]; each g_k is analytic there and is
replaced by a tensor Chebyshev interpolant of degree M - 1 in (q_i, q_j) (values on the
M x M first-kind Chebyshev grid, each a trapezoid rule in z at half the activation's
step), checked against fresh values on the M x M Chebyshev-Lobatto grid.  A pair then
costs (K + 1) dot products of length M: g_k(q_i, q_j) = sum_m U_k[m](q_i) T_m(y_j), with
U_k(q_i) = C_k T(y_i) per input and y the variance mapped to [-1, 1].

A pair uses the first K (<= ``KMAX``) for which the remainder plus the interpolants'
errors (the measured check error times ``SAFETY``, plus rounding) is below ``hermite.RTOL``
relative to sqrt(E phi_i^2 E phi_j^2), and likewise for phi'; otherwise the caller's exact
rule.  The table is built only for activations whose :class:`Activation` carries
``derivatives`` (closed-form phi^(k)).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..core.gaussian.hermite import RTOL
from ..core.gaussian.quadrature import Z1, step

KMAX = 16          # Taylor terms at most: orders 0..KMAX-1, remainder at KMAX
M_LADDER = (8, 12, 16, 24, 32)
# Stop raising M once every g_k interpolant reproduces the fresh nodes this closely
# (relative): the node values carry ~1e-15 of rounding, so past convergence the check
# error is rounding noise (measured 5e-15 to 2e-14 for M = 8..32) and more nodes only add
# to it; if no M reaches it, the M with the smallest check error is used.
TAB_RTOL = 5e-14
TAB_TERMS = 3
SAFETY = 2.0       # the check error on fresh nodes, times this, bounds the interpolant's
HEAD = 6           # table header: kmax, M, mid, half-width, min F, min G
_EPS = 2.220446049250313e-16
_EMPTY = np.empty(0)


def _gram(deriv, q, z, w, kk):
    """G[k, a, b] = sum_r w_r phi^(k)(sqrt(q_a) z_r) phi^(k)(sqrt(q_b) z_r), k < kk."""
    x = np.sqrt(q)[:, None] * z[None, :]
    P = deriv(x.reshape(-1), kk - 1).reshape(kk, q.size, z.size)
    return np.matmul(P * w, P.transpose(0, 2, 1))


def _cheb_matrix(M, y):
    """T_m(y_a), m < M, as an (M, len(y)) array."""
    return np.cos(np.arange(M)[:, None] * np.arccos(np.clip(y, -1.0, 1.0))[None, :])


def build_table(act, q, F, G):
    """The Taylor table of one depth as one flat vector (empty when unavailable).

    Parameters
    ----------
    act : Activation
        Must carry ``derivatives``.
    q, F, G : ndarray
        Every input's variance q_i and its exact E phi^2, E phi'^2 (the length map's values).

    Returns
    -------
    ndarray
        ``[KMAX, M, mid, w, min F, min G, E_0..E_{KMAX+1}, C]`` with C the
        (KMAX + 2, M, M) Chebyshev coefficients of g_k in y = (q - mid) / w and E_k the
        absolute error bound of the interpolant of g_k (check error x SAFETY + rounding).
    """
    deriv = getattr(act, "derivatives", None)
    if deriv is None or q.size == 0:
        return _EMPTY
    if not (np.all(np.isfinite(q)) and q.min() > 0.0 and F.min() > 0.0 and G.min() > 0.0):
        return _EMPTY
    qlo, qhi = float(q.min()), float(q.max())
    mid = 0.5 * (qlo + qhi)
    # A zero-width interval would make y = 0/0; a slightly wider one costs nothing.
    w = max(0.5 * (qhi - qlo), 1e-9 * qhi)
    kk = KMAX + 2
    # Half the activation's step: phi^(k) has poles of order k + 1 at the same distance as
    # phi's, so the trapezoid keeps its exp(-2 pi d / h) convergence with room to spare.
    h = 0.5 * step(act.quad_kappa, mid + w)
    R = int(Z1 / h)
    z = np.arange(-R, R + 1) * h
    wz = h * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    best = None
    for M in M_LADDER:
        ya = np.cos(np.pi * (np.arange(M) + 0.5) / M)
        Ta = _cheb_matrix(M, ya)
        C = (2.0 / M) ** 2 * np.einsum("ma,kab,nb->kmn", Ta, _gram(deriv, mid + w * ya, z, wz, kk), Ta)
        C[:, 0, :] *= 0.5
        C[:, :, 0] *= 0.5
        yb = np.cos(np.pi * np.arange(M) / (M - 1))  # Lobatto: the end points too; M even
        Tb = _cheb_matrix(M, yb)
        fresh = _gram(deriv, mid + w * yb, z, wz, kk)
        err = np.max(np.abs(np.einsum("ma,kmn,nb->kab", Tb, C, Tb) - fresh), axis=(1, 2))
        scale = np.max(np.abs(fresh), axis=(1, 2))
        # Only the leading terms need full relative accuracy: term k enters multiplied by
        # |x|^k / k!, and its own error still counts in every pair's bound (E below).
        worst = float(np.max((err / scale)[:TAB_TERMS]))
        if best is None or worst < best[0]:
            best = (worst, M, C, err)
        if worst <= TAB_RTOL:
            break
    _, M, C, err = best
    E = SAFETY * err + 2.0 * M * _EPS * np.sum(np.abs(C), axis=(1, 2))
    head = np.array([KMAX, M, mid, w, F.min(), G.min()], dtype=np.float64)
    return np.concatenate([head, E, C.reshape(-1)])


def table_dims(tab):
    """(kmax, M) of a table, (0, 0) for an empty one."""
    return (int(tab[0]), int(tab[1])) if tab.size else (0, 0)


@nb.njit(cache=True)
def point_data(tab, q, FG, U, T, sd, sp):
    """Per-input data of a table for the inputs of variance q (a block's rows or columns).

    U : float64[kmax + 1, M, n]
        Out: U_k(q_i) = C_k T(y_i), so that g_k(q_i, q_j) = U_k(q_i) . T(y_j).
    T : float64[M, n]
        Out: T_m(y_i).
    sd, sp : float64[kmax + 1, n]
        Out (row K >= 1): sqrt((h_K(q_i) + E_K) / E phi_i^2) and
        sqrt((h_{K+1}(q_i) + E_{K+1}) / E phi'_i^2), the per-input factors of the remainder
        bounds, h_K(q) = g_K(q, q) from the interpolant plus its error bound.

    Every input is computed in the same fixed order whatever the block, so a block's
    values equal the whole kernel's bit for bit.
    """
    kmax = int(tab[0])
    M = int(tab[1])
    mid = tab[2]
    w = tab[3]
    E = tab[HEAD:HEAD + kmax + 2]
    C = tab[HEAD + kmax + 2:].reshape((kmax + 2, M, M))
    tm = np.empty(M)
    for i in range(q.shape[0]):
        y = min(1.0, max(-1.0, (q[i] - mid) / w))
        tm[0] = 1.0
        if M > 1:
            tm[1] = y
        for m in range(2, M):
            tm[m] = 2.0 * y * tm[m - 1] - tm[m - 2]
        for m in range(M):
            T[m, i] = tm[m]
        sd[0, i] = 0.0
        sp[0, i] = 0.0
        for k in range(kmax + 2):
            hk = 0.0
            for a in range(M):
                u = 0.0
                for b in range(M):
                    u += C[k, a, b] * tm[b]
                if k <= kmax:
                    U[k, a, i] = u
                hk += u * tm[a]
            hk = max(hk + E[k], 0.0)
            if 1 <= k <= kmax:
                sd[k, i] = math.sqrt(hk / FG[i, 0])
            if k >= 2:
                sp[k - 1, i] = math.sqrt(hk / FG[i, 1])


@nb.njit(cache=True)
def covers(tab, q, FG, xmax):
    """Whether the table meets its bound for every pair of the inputs of variance q (and
    exact moments FG) whose |x| = (1 - c) sqrt(q_i q_j) is at most ``xmax``.

    A sufficient condition: at some order K <= kmax, the bound of :func:`row` with |x| =
    ``xmax`` and the largest per-input factors, |x|^K / K! max_i s_K(q_i)^2 plus the
    interpolants' error terms, is below RTOL for phi and phi'.  Each term grows with |x|
    and with the factors, so then every such pair meets its own bound at an order <= K.
    """
    kmax = int(tab[0])
    M = int(tab[1])
    n = q.shape[0]
    U = np.empty((kmax + 1, M, n))
    T = np.empty((M, n))
    sd = np.empty((kmax + 1, n))
    sp = np.empty((kmax + 1, n))
    point_data(tab, q, FG, U, T, sd, sp)
    E = tab[HEAD:HEAD + kmax + 2]
    pw = 1.0
    eds = 0.0
    eps_ = 0.0
    for K in range(1, kmax + 1):
        eds += pw * E[K - 1] / tab[4]
        eps_ += pw * E[K] / tab[5]
        pw = pw * xmax / K
        s1 = np.max(sd[K])
        s2 = np.max(sp[K])
        if (pw * s1 * s1 + eds <= RTOL) and (pw * s2 * s2 + eps_ <= RTOL):
            return True
    return False


@nb.njit(cache=True, error_model="numpy")
def row(kmax, M, Ui, sdi, spi, Tc, sdc, spc, eD, eP, x, want, kt, D, P, pw, eds, eps_, g, a, ap):
    """Taylor sums for the pairs (i, j_t) of one row with ``want[t]``: the first order K of
    1..kmax whose bounds (remainder + interpolant errors, relative) are below RTOL, written
    to ``kt[t]`` (-1: none), and the sums D, P at that order.

    Ui (kmax+1, M), sdi, spi (kmax+1,): row input's data; Tc (M, m), sdc, spc (kmax+1, m):
    the columns'; eD[k] = E_k / min F, eP[k] = E_{k+1} / min G; x[t] = (c - 1) sqrt(q_i q_j).
    The rest are work arrays of length m.  Every loop runs along the row (vectorizes); a
    pair's result depends on the pair alone (terms above its order enter as exact zeros).
    """
    mm = x.shape[0]
    for t in range(mm):
        kt[t] = -1
        pw[t] = 1.0
        eds[t] = 0.0
        eps_[t] = 0.0
    left = 0
    for t in range(mm):
        left += 1 if want[t] else 0
    for K in range(1, kmax + 1):
        if left == 0:
            break  # every pair has its order: the rest of the loop would change nothing
        inv = 1.0 / K
        ed = eD[K - 1]
        ep = eP[K - 1]
        s1 = sdi[K]
        s2 = spi[K]
        cd = sdc[K]
        cp = spc[K]
        for t in range(mm):
            eds[t] += pw[t] * ed
            eps_[t] += pw[t] * ep
            pw[t] = pw[t] * (-x[t]) * inv
            ok = ((pw[t] * s1 * cd[t] + eds[t] <= RTOL) & (pw[t] * s2 * cp[t] + eps_[t] <= RTOL)
                  & want[t] & (kt[t] < 0))
            kt[t] = K if ok else kt[t]
        for t in range(mm):
            left -= 1 if kt[t] == K else 0
    krow = -1
    for t in range(mm):
        krow = max(krow, kt[t])
        D[t] = 0.0
        P[t] = 0.0
        a[t] = 1.0
        ap[t] = 0.0
    for k in range(0, krow + 1):
        for t in range(mm):
            g[t] = 0.0
        for m in range(M):
            u = Ui[k, m]
            tc = Tc[m]
            for t in range(mm):
                g[t] += u * tc[t]
        inv = 1.0 / (k + 1)
        for t in range(mm):
            D[t] += (a[t] if k < kt[t] else 0.0) * g[t]
            P[t] += (ap[t] if (k >= 1) & (k <= kt[t]) else 0.0) * g[t]
            ap[t] = a[t]
            a[t] = a[t] * x[t] * inv
    return krow


@nb.njit(cache=True, error_model="numpy")
def row_in_tile(plan, k, i, jb, j1, cv, npair, sqi, sqc, diag, kt, wk, want):
    """The Taylor sums of layer k for the pairs (i, jb..j1-1) of a tile row with
    ``npair[t] < 0`` (no other method chosen yet; not the diagonal, ``diag``): kt[t] the order
    used (-1: none, the caller's exact rule), wk[1], wk[2] the sums E phi phi, E phi'phi'.

    The plan's Taylor fields (:class:`meanfield.ntk.blocks.LayerPlan`, layer k)::

        tay_k, tay_m     int64[K]                  kmax and M (0: no table at layer k)
        tay_u            float64[K, kmax+1, M, nr] U_k(q_i) of the rows   (point_data)
        tay_t            float64[K, M, nc]         T_m(y_j) of the columns
        tay_sdr, tay_spr float64[K, kmax+1, nr]    remainder factors of the rows
        tay_sdc, tay_spc float64[K, kmax+1, nc]    and of the columns
        tay_e            float64[K, 2, kmax+1]     E_k / min F and E_{k+1} / min G

    ``cv`` are the pairs' c, ``sqi`` = sqrt(q_i), ``sqc`` = sqrt(q_j); wk (9, m) and want
    (m,) are work arrays.
    """
    mm = cv.shape[0]
    kmx = plan.tay_k[k]
    nwant = 0
    if kmx > 0:
        for t in range(mm):
            want[t] = npair[t] < 0
            wk[0, t] = (cv[t] - 1.0) * sqi * sqc[t]
        if diag:
            want[0] = False
        for t in range(mm):
            nwant += 1 if want[t] else 0
    if nwant == 0:
        for t in range(mm):
            kt[t] = -1
        return
    row(kmx, plan.tay_m[k], plan.tay_u[k, :, :, i], plan.tay_sdr[k, :, i], plan.tay_spr[k, :, i],
        plan.tay_t[k, :, jb:j1], plan.tay_sdc[k, :, jb:j1], plan.tay_spc[k, :, jb:j1],
        plan.tay_e[k, 0], plan.tay_e[k, 1], wk[0], want, kt, wk[1], wk[2], wk[3], wk[4],
        wk[5], wk[6], wk[7], wk[8])
