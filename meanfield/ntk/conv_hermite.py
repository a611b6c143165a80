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
quadrature per pair.

How the coefficients are computed, per depth:

* h_k at Chebyshev nodes in s = sqrt(q) over [min s, max s] of that depth: a trapezoid
  rule on z in [-TRAP_Z, TRAP_Z] (the integrand is below exp(-z^2/4) there) with step
  min(TRAP_H, kappa / s_max) (the activation's quadrature step, docs/theory.md
  "Numerics"), He_k by the normalised three-term recurrence;
* the number of terms K: the smallest with sum_{k >= K} h_k^2 <= HERMITE_TAIL sum_k h_k^2
  and the same for the derivative's coefficients, at every node (the product terms obey
  |h_k(a) h_k(b)| <= (h_k(a)^2 + h_k(b)^2) / 2, so this bounds the truncation);
* the number of nodes M doubled until the interpolant reproduces freshly computed
  midpoints to CHEB_TOL (relative to max |h|), then evaluated at every pixel's s.

Pixels of zero variance get no coefficients; their entries use
:func:`meanfield.core.gaussian.moments.pair`, which treats them in closed form.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from ..core.functions import phi
from ..core.gaussian.quadrature import step

TRAP_Z = 12.0
TRAP_H = 0.05
# Relative truncation of the series (bounds the relative error of E phi phi and E phi' phi'
# per entry); 1e-12 keeps the kernels well inside the 1e-9 accuracy asked of tanh-like
# activations after ten layers, and costs ~15% fewer terms than 1e-13.
HERMITE_TAIL = 1e-12
K_START = 64
K_MAX = 2048
CHEB_M0 = 8
CHEB_MMAX = 512
CHEB_TOL = 1e-14


@nb.njit(cache=True, parallel=True)
def node_coefficients(act, s, h, K, out):
    """out[m, k] = E[phi(s_m z) He_k(z)] / sqrt(k!), k < K, by the trapezoid rule of step h."""
    nz = int(TRAP_Z / h)
    a = np.empty(K)  # He_{k+1} = z He_k - k He_{k-1}, normalised: a[k] = sqrt(k/(k+1)), b[k] = 1/sqrt(k+1)
    b = np.empty(K)
    for k in range(K):
        a[k] = math.sqrt(k / (k + 1.0))
        b[k] = 1.0 / math.sqrt(k + 1.0)
    for m in prange(s.shape[0]):
        for k in range(K):
            out[m, k] = 0.0
        for t in range(-nz, nz + 1):
            z = t * h
            w = h * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
            f, _ = phi(act, s[m] * z)
            fw = f * w
            p0 = 1.0
            p1 = z
            out[m, 0] += fw
            if K > 1:
                out[m, 1] += fw * z
            for k in range(1, K - 1):
                p2 = z * p1 * b[k] - a[k] * p0
                out[m, k + 1] += fw * p2
                p0 = p1
                p1 = p2


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


def depth_table(act, q):
    """Coefficients h_k(q) for every variance in ``q`` (any shape), shape q.shape + (K,).

    Returns (table, K, terms): K the table's length and ``terms`` (shape of q) the terms
    each variance needs by the tail criterion; or (None, reason, None) when K_MAX terms or
    CHEB_MMAX nodes do not suffice (very large variances).  Zero variances get zero rows.
    """
    rec = act.record
    qs = np.asarray(q, dtype=np.float64)
    pos = qs > 0.0
    out_shape = qs.shape
    if not np.any(pos):
        return np.zeros(out_shape + (1,)), 1, np.ones(out_shape, dtype=np.int64)
    s = np.sqrt(qs[pos])
    lo, hi = float(s.min()), float(s.max())
    if hi - lo <= 1e-12 * hi:
        lo, hi = lo * (1.0 - 1e-9), hi * (1.0 + 1e-9)
    h = min(TRAP_H, step(act.quad_kappa, hi * hi))
    K = K_START
    M = CHEB_M0
    vals = None
    while True:
        x, nodes = _cheb_points(lo, hi, M)
        if vals is None:
            vals = np.empty((M + 1, K))
            node_coefficients(rec, nodes, h, K, vals)
        need = _terms_needed(vals, nodes)
        if need is None:
            if K >= K_MAX:
                return None, f"more than {K_MAX} Hermite terms at q = {hi * hi:g}", None
            K = min(K_MAX, 2 * K)
            vals = None
            continue
        # Chebyshev coefficients in x of every h_k (a small linear solve)
        coef = np.linalg.solve(_cheb_matrix(x, M), vals)
        # The midpoints are the new nodes of the 2M-point Lobatto grid: checked here, reused
        # there.
        xm = np.cos(np.pi * (np.arange(M) + 0.5) / M)
        vm = np.empty((M, K))
        node_coefficients(rec, 0.5 * (lo + hi) + 0.5 * (hi - lo) * xm, h, K, vm)
        err = np.max(np.abs(_cheb_matrix(xm, M) @ coef - vm))
        if err <= CHEB_TOL * max(np.max(np.abs(vals)), 1e-300):
            break
        if M >= CHEB_MMAX:
            return None, (f"Chebyshev interpolation of the Hermite coefficients did not reach "
                          f"{CHEB_TOL:g} with {CHEB_MMAX} nodes"), None
        both = np.empty((2 * M + 1, K))
        both[0::2] = vals
        both[1::2] = vm
        vals = both
        M *= 2
    K = need
    table = np.zeros(out_shape + (K,))
    xs = (2.0 * s - (lo + hi)) / (hi - lo)
    rows = _cheb_matrix(xs, M) @ coef[:, :K]
    table[pos] = rows
    terms = np.zeros(out_shape, dtype=np.int64)
    terms[pos] = _terms_per_row(rows, s)
    return table, K, terms


def _terms_per_row(rows, s):
    """The K of :func:`_terms_needed` for every row (one variance each), capped by the
    table's length: small variances need far fewer terms than the depth's largest."""
    K = rows.shape[1]
    k = np.arange(K)
    need = np.zeros(rows.shape[0], dtype=np.int64)
    for v, shift in ((rows ** 2, 1), (k[1:] * rows[:, 1:] ** 2 / (s * s)[:, None], 2)):
        tail = np.cumsum(v[:, ::-1], axis=1)[:, ::-1]
        ok = tail <= HERMITE_TAIL * tail[:, :1]
        first = np.where(ok.any(axis=1), np.argmax(ok, axis=1) + shift, K)
        need = np.maximum(need, first)
    return np.minimum(need, K)


# |c|^K below this ends the series early: the terms left are below it times
# sum |h_k(a) h_k(b)| <= sqrt(E phi(u)^2 E phi(v)^2) (Cauchy-Schwarz), and k |c|^(k-1) for the
# derivative's, hence the margin below the 1e-12 tail criterion.
C_POWER_TAIL = 1e-16
_LOG_C_TAIL = math.log(C_POWER_TAIL)


@nb.njit(cache=True)
def herm_pair(ha, hb, K, a, b, s12, same):
    """(E phi(u) phi(v), E phi'(u) phi'(v)) from the coefficient rows ha = h(a), hb = h(b)
    (first K used), Horner in c = s12 / sqrt(a b), clamped to [-1, 1]; c = 1 when ``same``.
    For |c| < 1 the series stops once |c|^k < C_POWER_TAIL."""
    r = math.sqrt(a * b)
    c = 1.0 if same else min(1.0, max(-1.0, s12 / r))
    ac = abs(c)
    if ac < 0.5:
        K = min(K, 2 + int(_LOG_C_TAIL / math.log(max(ac, 1e-300))))
    elif ac < 0.999:
        K = min(K, 2 + int(_LOG_C_TAIL / math.log(ac)))
    D = 0.0
    Dp = 0.0
    for k in range(K - 1, 0, -1):
        t = ha[k] * hb[k]
        D = D * c + t
        Dp = Dp * c + k * t
    D = D * c + ha[0] * hb[0]
    return D, Dp / r
