"""Per-pixel Hermite expansions: fast E[phi(u) phi(v)] for smooth activations without a
closed form in the convolutional kernels (docs/theory.md, "Convolutional networks",
"Hermite expansion of the pair expectations").

With u = sqrt(a) z1, v = sqrt(b) (c z1 + sqrt(1 - c^2) z2), c = s12 / sqrt(a b), Mehler's
formula gives::

    E[phi(u) phi(v)]   = sum_k h_k(a) h_k(b) c^k
    E[phi'(u) phi'(v)] = sum_k (k + 1) h_{k+1}(a) h_{k+1}(b) c^k / sqrt(a b)

with h_k(q) = E[phi(sqrt(q) z) He_k(z)] / sqrt(k!) (the second line is the derivative of
the first in s12; equivalently it uses E[phi'(sqrt(q) z) He_k(z)]/sqrt(k!) =
sqrt(k+1) h_{k+1}(q) / sqrt(q), Stein's lemma).  At every depth each image and pixel has
its own variance q = Sigma_pp(x, x), so the coefficients are computed once per image,
pixel and depth and every pixel pair then costs one pass over k, instead of a 2-D
quadrature per pair.  The coefficients' quadrature and the pair sum are those of the fully
connected kernels (:mod:`meanfield.core.gaussian.hermite`: :func:`hermite.hermite_grid`,
:func:`hermite.project`, :func:`hermite.mehler_stein`); this module chooses where to
compute them and how many terms to keep.

Per depth:

* h_k at Chebyshev nodes in s = sqrt(q) over [min s, max s] of that depth, all nodes on the
  one trapezoid grid of the largest variance, |z| <= TRAP_Z;
* the number of terms K: the smallest with sum_{k >= K} h_k^2 <= HERMITE_TAIL sum_k h_k^2
  and the same for the derivative's coefficients, at every node (the product terms obey
  |h_k(a) h_k(b)| <= (h_k(a)^2 + h_k(b)^2) / 2, so this bounds the truncation);
* the number of nodes M doubled until the interpolant reproduces freshly computed
  midpoints to CHEB_TOL (relative to max |h|), then evaluated at every pixel's s;
* each pixel's own number of terms by the same tail criterion on its row
  (:func:`row_terms`), and the parity: when every row's even coefficients h_k, k >= 2,
  carry at most ODD_TOL^2 of its sum h_k^2 and of its sum k h_k^2 (an odd phi plus a
  constant: tanh, sigmoid), the pair sums skip them (``odd`` of
  :func:`hermite.mehler_stein`), which drops at most ODD_TOL relative to
  sqrt(E phi(u)^2 E phi(v)^2) (Cauchy-Schwarz, as for the truncation) and halves the work.

Pixels of zero variance get no coefficients; their entries use
:func:`meanfield.core.gaussian.moments.pair`, which treats them in closed form.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..core.gaussian import hermite
from ..core.gaussian.hermite import C_POWER_TAIL, mehler_cut, mehler_stein

_LOG_C_TAIL = math.log(C_POWER_TAIL)

# Relative truncation of the series (bounds the relative error of E phi phi and E phi' phi'
# per entry); 1e-12 keeps the kernels well inside the 1e-9 accuracy asked of tanh-like
# activations after ten layers, and costs ~15% fewer terms than 1e-13.
HERMITE_TAIL = 1e-12
# Even coefficients below this relative size (in the root-sum-square sense above) make a
# table odd; an odd phi leaves them at rounding level, ~1e-17, on the symmetric grid.
ODD_TOL = 1e-13
# Half-width of the trapezoid grid in z: the integrand is below 1.09 |phi(s z)| e^(-z^2/4)
# for every order (see hermite.hermite_grid), ~1e-16 |phi| at 12; the fully connected
# default, 2 sqrt(K) + 4, would overflow He_k for the K ~ 1000 of large first-layer variances.
TRAP_Z = 12.0
K_START = 64
K_MAX = 2048
CHEB_M0 = 8
CHEB_MMAX = 512
CHEB_TOL = 1e-14


def node_coefficients(act, s, K, smax):
    """out[m, k] = E[phi(s_m z) He_k(z)] / sqrt(k!), k < K, shape (len(s), K): the trapezoid
    rule of :func:`hermite.hermite_grid` for s <= smax, by :func:`hermite.project`."""
    z, H = hermite.hermite_grid(act.kappa, smax * smax, K - 1, TRAP_Z)
    A = np.empty((K, s.size))
    B = np.empty((K, s.size))  # phi' coefficients: not needed here (Stein's lemma)
    hermite.project(act, np.ascontiguousarray(s * s), z, H, A, B)
    return np.ascontiguousarray(A.T)


def _terms_needed(hk, s):
    """Smallest K with the tails of h_k^2 and of (k+1) h_{k+1}^2 / s^2 (the derivative's
    coefficients squared) below HERMITE_TAIL of their sums at every node, or None when the
    table (hk.shape[1] terms) is too short to tell."""
    k = np.arange(hk.shape[1])
    need = 0
    for row, sm in zip(hk, s):
        for v in (row ** 2, (k[1:] * row[1:] ** 2) / sm ** 2):
            tail = np.cumsum(v[::-1])[::-1]
            ok = np.flatnonzero(tail <= HERMITE_TAIL * tail[0])
            if ok.size == 0 or ok[0] > v.size - 8:
                return None
            need = max(need, int(ok[0]) + 2)
    return need


def _cheb_points(lo, hi, M):
    x = np.cos(np.pi * np.arange(M + 1) / M)
    return x, 0.5 * (lo + hi) + 0.5 * (hi - lo) * x


def _cheb_matrix(x, M):
    """T_m(x) for m = 0..M, one row per x."""
    return np.cos(np.arange(M + 1)[None, :] * np.arccos(np.clip(x, -1.0, 1.0))[:, None])


def depth_table(act, q, pack=True):
    """Coefficients h_k(q) for every variance in ``q`` (any shape), shape q.shape + (K,).

    Returns (table, K, terms, odd): K the series' length, ``terms`` (shape of q) the terms
    each variance needs by the tail criterion (counted in k, whatever the storage), ``odd``
    whether the pair sums may skip the even terms k >= 2 (:func:`row_terms`); or
    (None, reason, None, False) when K_MAX terms or CHEB_MMAX nodes do not suffice (very
    large variances).  Zero variances get zero rows.

    With ``pack`` (the kernels' default) an odd table is stored packed, row
    [h_0, h_1, h_3, h_5, ...] of length 1 + K // 2, for :func:`herm_pair`: half the
    coefficients to interpolate, store and read.  Whether it is odd is then decided before
    the even columns are formed, from bounds on them (:func:`packed_row_terms`); when the
    bounds do not pass, the full table is built and returned with odd = False (exact, the
    pair sums then take every term).  Without ``pack`` the table is full and ``odd`` is
    the parity of its rows, for :func:`hermite.mehler_stein`.
    """
    rec = act.record
    qs = np.asarray(q, dtype=np.float64)
    pos = qs > 0.0
    out_shape = qs.shape
    if not np.any(pos):
        return np.zeros(out_shape + (1,)), 1, np.ones(out_shape, dtype=np.int64), False
    s = np.sqrt(qs[pos])
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 1e-12 * hi:
        lo, hi = lo * (1.0 - 1e-9), hi * (1.0 + 1e-9)
    K = K_START
    M = CHEB_M0
    vals = None
    while True:
        x, nodes = _cheb_points(lo, hi, M)
        if vals is None:
            vals = node_coefficients(rec, nodes, K, hi)
        need = _terms_needed(vals, nodes)
        if need is None:
            if K >= K_MAX:
                return None, f"more than {K_MAX} Hermite terms at q = {hi * hi:g}", None, False
            K = min(K_MAX, 2 * K)
            vals = None
            continue
        # Chebyshev coefficients in x of every h_k (a small linear solve)
        coef = np.linalg.solve(_cheb_matrix(x, M), vals)
        # The midpoints are the new nodes of the 2M-point Lobatto grid: checked here, reused
        # there (on the same grid, that of s = hi).
        xm = np.cos(np.pi * (np.arange(M) + 0.5) / M)
        vm = node_coefficients(rec, 0.5 * (lo + hi) + 0.5 * (hi - lo) * xm, K, hi)
        err = np.max(np.abs(_cheb_matrix(xm, M) @ coef - vm))
        if err <= CHEB_TOL * max(np.max(np.abs(vals)), 1e-300):
            break
        if M >= CHEB_MMAX:
            return None, (f"Chebyshev interpolation of the Hermite coefficients did not reach "
                          f"{CHEB_TOL:g} with {CHEB_MMAX} nodes"), None, False
        both = np.empty((2 * M + 1, K))
        both[0::2] = vals
        both[1::2] = vm
        vals = both
        M *= 2
    K = need
    xs = (2.0 * s - (lo + hi)) / (hi - lo)
    T = _cheb_matrix(xs, M)
    t = np.empty(s.size, dtype=np.int64)
    terms = np.zeros(out_shape, dtype=np.int64)
    if pack and K >= 3:
        # |T_m| <= 1, so no interpolated even coefficient exceeds sum_m |coef[m, k]| (the
        # factor covers the product's rounding, (M + 1) eps of the same sum): if these
        # bounds pass the parity test of every row, the even columns need not be formed.
        bound = (1.0 + 1e-10) * np.abs(coef[:, 2:K:2]).sum(axis=0)
        cols = np.concatenate([[0], np.arange(1, K, 2)])
        rows = np.ascontiguousarray(T @ coef[:, cols])
        if packed_row_terms(rows, s, bound, HERMITE_TAIL, ODD_TOL * ODD_TOL, t):
            table = np.zeros(out_shape + (cols.size,))
            table[pos] = rows
            terms[pos] = np.minimum(t, K)
            return table, K, terms, True
    # the exact method: every coefficient, parity checked on the rows themselves
    table = np.zeros(out_shape + (K,))
    rows = np.ascontiguousarray(T @ coef[:, :K])
    table[pos] = rows
    odd = row_terms(rows, s, HERMITE_TAIL, ODD_TOL * ODD_TOL, t)
    terms[pos] = t
    return table, K, terms, bool(odd) and not pack


@nb.njit(cache=True)
def row_terms(rows, s, tail, odd_tol, out):
    """out[i]: the K of :func:`_terms_needed` for row i (variance s[i]^2), capped by the
    rows' length: small variances need far fewer terms than the depth's largest.

    Returns whether every row is odd: sum_{even k >= 2} h_k^2 <= odd_tol sum_k h_k^2, and
    the same with the weights k (the derivative's series).
    """
    n, K = rows.shape
    odd = True
    for i in range(n):
        r = rows[i]
        w = 1.0 / (s[i] * s[i])
        tot0 = 0.0
        tot1 = 0.0
        ev0 = 0.0
        ev1 = 0.0
        for k in range(K):
            v = r[k] * r[k]
            tot0 += v
            tot1 += k * v * w
            if k >= 2 and k % 2 == 0:
                ev0 += v
                ev1 += k * v * w
        if ev0 > odd_tol * tot0 or ev1 > odd_tol * tot1:
            odd = False
        # The first k whose tail from k on is <= tail * total, scanning down from the end;
        # k + 2 terms then cover it (the derivative's series is shifted by one).
        need = 1
        t0 = 0.0
        for k in range(K - 1, -1, -1):
            t0 += r[k] * r[k]
            if t0 > tail * tot0:
                need = max(need, k + 2)
                break
        t1 = 0.0
        for k in range(K - 1, 0, -1):
            t1 += k * r[k] * r[k] * w
            if t1 > tail * tot1:
                need = max(need, k + 2)
                break
        out[i] = min(need, K)
    return odd


@nb.njit(cache=True)
def packed_row_terms(rows, s, bound, tail, odd_tol, out):
    """:func:`row_terms` on packed rows [h_0, h_1, h_3, ...] whose even coefficients
    h_k, k = 2, 4, ..., are not formed but bounded by ``bound[k // 2 - 1]``.

    Returns whether every row passes the parity test with the bounds in place of the even
    coefficients, sum_{even k >= 2} bound_k^2 <= odd_tol sum_{odd k, k = 0} h_k^2 and the
    same with the weights k / s^2; the row's totals without its even terms are lower bounds
    of the full ones, so a pass here is a pass of :func:`row_terms`.  ``out[i]``: the terms
    row i needs by the tail criterion, in k, on its odd coefficients (the even ones add at
    most odd_tol of the totals to any tail).
    """
    n, J = rows.shape
    e0 = 0.0
    e1 = 0.0
    for m in range(bound.shape[0]):
        e0 += bound[m] * bound[m]
        e1 += 2 * (m + 1) * bound[m] * bound[m]
    odd = True
    for i in range(n):
        r = rows[i]
        w = 1.0 / (s[i] * s[i])
        tot0 = 0.0
        tot1 = 0.0
        for j in range(J):
            v = r[j] * r[j]
            tot0 += v
            if j > 0:
                tot1 += (2 * j - 1) * v * w
        if e0 > odd_tol * tot0 or e1 * w > odd_tol * tot1:
            odd = False
        need = 1
        t0 = 0.0
        for j in range(J - 1, -1, -1):
            t0 += r[j] * r[j]
            if t0 > tail * tot0:
                need = max(need, (2 * j - 1 if j > 0 else 0) + 2)
                break
        t1 = 0.0
        for j in range(J - 1, 0, -1):
            t1 += (2 * j - 1) * r[j] * r[j] * w
            if t1 > tail * tot1:
                need = max(need, 2 * j + 1)
                break
        out[i] = need
    return odd


@nb.njit(cache=True)
def herm_pair(ha, hb, K, a, b, s12, same, odd):
    """(E phi(u) phi(v), E phi'(u) phi'(v)) from two rows of a :func:`depth_table`, first K
    terms (in k); the Mehler sums of :func:`hermite.mehler_stein`::

        E[phi(u) phi(v)]   = h_0(a) h_0(b) + c sum_{odd k} h_k(a) h_k(b) c^(k-1)
        E[phi'(u) phi'(v)] = sum_{odd k} k h_k(a) h_k(b) c^(k-1) / sqrt(a b)

    for ``odd`` (packed) rows [h_0, h_1, h_3, ...], and mehler_stein on full rows otherwise.
    The odd sums are polynomials in x = c^2, each evaluated as two Horner chains in
    y = x^2 (even and odd powers of x, S(x) = A(y) + x B(y)): one chain is a sequence of
    dependent multiply-adds, whose latency, not the arithmetic, bounds a single chain, so
    two run in the time of one.  Truncation as mehler_stein: |c|^k < C_POWER_TAIL.
    """
    if not odd:
        return mehler_stein(ha, hb, K, a, b, s12, same, False)
    r = math.sqrt(a * b)
    c, K = mehler_cut(K, a, b, s12, same)
    x = c * c
    y = x * x
    j = K // 2  # packed j = 1..K//2 holds k = 2j - 1 <= K - 1
    A = 0.0
    B = 0.0
    Ap = 0.0
    Bp = 0.0
    if j % 2 == 1:
        t = ha[j] * hb[j]
        A = t
        Ap = (2 * j - 1) * t
        j -= 1
    while j >= 2:
        te = ha[j] * hb[j]
        to = ha[j - 1] * hb[j - 1]
        B = B * y + te
        Bp = Bp * y + (2 * j - 1) * te
        A = A * y + to
        Ap = Ap * y + (2 * j - 3) * to
        j -= 2
    D = c * (A + x * B) + ha[0] * hb[0]
    return D, (Ap + x * Bp) / r
