"""Quadrature rules for Gaussian expectations of activations without a closed form.

Smooth activations: the trapezoid rule in the standard-normal variable z on [-Z, Z].  For
integrands analytic in a strip of half-width d it converges like exp(-2 pi d / h)
(docs/theory.md, "Numerics"); the step is ``h = min(H_MAX, kappa / sqrt(var))`` with kappa
from the activation record.

Activations with kinks: composite 16-point Gauss-Legendre with panel boundaries at every
kink (:func:`breakpoints`), because no rule that straddles a kink converges fast.

Everything here is a building block of :mod:`meanfield.core.gaussian.moments`.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

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
GL_X, GL_W = np.polynomial.legendre.leggauss(16)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# sqrt(n) and 1/sqrt(n+1) for the normalized Hermite recurrence, computed once.
_HERM_MAX = 512
_SQRT_N = np.sqrt(np.arange(_HERM_MAX, dtype=np.float64))
_INV_SQRT_N1 = 1.0 / np.sqrt(np.arange(1, _HERM_MAX + 1, dtype=np.float64))


@nb.njit(cache=True)
def step(kappa, var):
    """Trapezoid step in a standard-normal variable whose image has variance ``var``."""
    if var <= 0.0:
        return H_MAX
    return min(H_MAX, kappa / math.sqrt(var))


@nb.njit(cache=True)
def pdf(z):
    """Standard normal density."""
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z)


@nb.njit(cache=True)
def breakpoints(kinks, scale, shift, lo, hi):
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
def panel_count(pts, width):
    """Number of Gauss-Legendre nodes :func:`panel_nodes` places on the breakpoints ``pts``."""
    n = 0
    for s in range(pts.shape[0] - 1):
        n += max(1, int(math.ceil((pts[s + 1] - pts[s]) / width)))
    return n * GL_X.shape[0]


@nb.njit(cache=True)
def panel_nodes(pts, width, z, w):
    """Composite Gauss-Legendre nodes between consecutive breakpoints ``pts``.

    Each interval is cut into equal panels no wider than ``width``; node k of a panel of
    width pw centred at mid is ``z = mid + pw/2 GL_X[k]`` with weight ``pw/2 GL_W[k]``
    (without the Gaussian density, which the caller multiplies in).  Writes ``z`` and ``w``
    (length at least :func:`panel_count`) and returns the number of nodes.
    """
    n = 0
    ng = GL_X.shape[0]
    for s in range(pts.shape[0] - 1):
        lo = pts[s]
        hi = pts[s + 1]
        npan = max(1, int(math.ceil((hi - lo) / width)))
        pw = (hi - lo) / npan
        for p in range(npan):
            mid = lo + (p + 0.5) * pw
            for i in range(ng):
                z[n] = mid + 0.5 * pw * GL_X[i]
                w[n] = 0.5 * pw * GL_W[i]
                n += 1
    return n


@nb.njit(cache=True)
def gaussian_panels(pts, width):
    """Nodes z_k and weights w_k pdf(z_k) of :func:`panel_nodes` on the breakpoints ``pts``,
    so that sum_k w_k f(z_k) approximates the integral of f(z) pdf(z) over [pts[0], pts[-1]]."""
    z = np.empty(panel_count(pts, width))
    w = np.empty(z.shape[0])
    n = panel_nodes(pts, width, z, w)
    for k in range(n):
        w[k] *= pdf(z[k])
    return z[:n], w[:n]


@nb.njit(cache=True)
def hermite_sums(zs, wps, nn, herm):
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
