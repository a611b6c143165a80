"""Independent reference implementations for the tests.

Nothing here imports meanfield's numerics: mpmath (30 digits) for one-dimensional
Gaussian integrals and fixed points, scipy's adaptive quad (nested) for the two-point
integrals.  They are slow and simple on purpose.
"""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
from scipy import integrate, optimize

mp.mp.dps = 30
SELU_L = mp.mpf("1.0507009873554804934193349852946")
SELU_A = mp.mpf("1.6732632423543772848170429916717")

# (phi, phi') as mpmath functions, and the points where they are not smooth.
MP_ACTS = {
    "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2, []),
    "gelu": (lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x), []),
    "silu": (lambda x: x / (1 + mp.exp(-x)),
             lambda x: 1 / (1 + mp.exp(-x)) + x * mp.exp(-x) / (1 + mp.exp(-x)) ** 2, []),
    "softplus": (lambda x: mp.log(1 + mp.exp(x)), lambda x: 1 / (1 + mp.exp(-x)), []),
    "sigmoid": (lambda x: 1 / (1 + mp.exp(-x)), lambda x: mp.exp(-x) / (1 + mp.exp(-x)) ** 2, []),
    "erf": (mp.erf, lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x), []),
    "sin": (mp.sin, mp.cos, []),
    "elu": (lambda x: x if x > 0 else mp.expm1(x), lambda x: 1 if x > 0 else mp.exp(x), [0]),
    "selu": (lambda x: SELU_L * x if x > 0 else SELU_L * SELU_A * mp.expm1(x),
             lambda x: SELU_L if x > 0 else SELU_L * SELU_A * mp.exp(x), [0]),
    "hard_tanh": (lambda x: max(min(x, 1), -1), lambda x: 1 if abs(x) < 1 else 0, [-1, 1]),
    "relu": (lambda x: max(x, 0), lambda x: 1 if x > 0 else 0, [0]),
}


_SL, _SA = float(SELU_L), float(SELU_A)


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# The same activations in plain floats, for the (double-precision) two-point references.
FLOAT_ACTS = {
    "tanh": (math.tanh, lambda x: 1.0 - math.tanh(x) ** 2),
    "gelu": (lambda x: 0.5 * x * math.erfc(-x / math.sqrt(2)),
             lambda x: 0.5 * math.erfc(-x / math.sqrt(2)) + x * math.exp(-0.5 * x * x)
             / math.sqrt(2 * math.pi)),
    "silu": (lambda x: x * _sig(x), lambda x: _sig(x) * (1 + x * (1 - _sig(x)))),
    "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
    "selu": (lambda x: _SL * x if x > 0 else _SL * _SA * math.expm1(x),
             lambda x: _SL if x > 0 else _SL * _SA * math.exp(x)),
    "hard_tanh": (lambda x: max(min(x, 1.0), -1.0), lambda x: 1.0 if abs(x) < 1 else 0.0),
    "softplus": (lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x))), _sig),
    "sigmoid": (_sig, lambda x: _sig(x) * _sig(-x)),
    "sin": (math.sin, math.cos),
    "elu": (lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(x)),
}
KINKS = {"selu": (0.0,), "elu": (0.0,), "hard_tanh": (-1.0, 1.0), "relu": (0.0,)}


def gauss1(f, q, kinks=()):
    """E[f(sqrt(q) z)] to ~25 digits, split at the kinks."""
    sq = mp.sqrt(q)
    pts = sorted({mp.mpf(k) / sq for k in kinks} | {-8, -4, -2, -1, 0, 1, 2, 4, 8})
    return mp.quad(lambda z: f(sq * z) * mp.npdf(z), [-mp.inf] + pts + [mp.inf])


def q_star(name, sw2, sb2, q0=1.0, rho=1.0):
    """Fixed point of V(q) = sw2/rho E phi^2 + sb2 by bracketing from q0 (bisection + secant)."""
    f, _, kinks = MP_ACTS[name]
    g = lambda q: sw2 / rho * gauss1(lambda x: f(x) ** 2, q, kinks) + sb2 - q  # noqa: E731
    q0 = mp.mpf(q0)
    g0 = g(q0)
    if g0 > 0:
        lo, hi = q0, q0 * 2
        while g(hi) > 0:
            lo, hi = hi, hi * 2
    else:
        lo, hi = q0 / 2, q0
        while g(lo) < 0:
            lo, hi = lo / 2, lo
    return mp.findroot(g, (lo, hi), solver="anderson", tol=mp.mpf(10) ** -26)


def one_point(name, sw2, sb2, rho=1.0):
    """q*, chi_1, V'(q*) at 30 digits."""
    f, df, kinks = MP_ACTS[name]
    q = q_star(name, sw2, sb2, rho=rho)
    chi1 = sw2 * gauss1(lambda x: df(x) ** 2, q, kinks)
    # V'(q) = sw2/rho E[phi'^2 + phi phi''] written with the density derivative (independent
    # of the library's formula only in the sense that mpmath differentiates V numerically).
    vprime = mp.diff(lambda t: sw2 / rho * gauss1(lambda x: f(x) ** 2, t, kinks) + sb2, q)
    return float(q), float(chi1), float(vprime)


def two_point(name, q, c):
    """(E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)]) at variance q, correlation c (nested scipy quad)."""
    kinks = MP_ACTS[name][2]
    ff, dff = FLOAT_ACTS[name]
    sq = math.sqrt(q)
    s = math.sqrt(max(1 - c * c, 0.0))
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    pts1 = sorted(k / sq for k in kinks) or None

    def outer(g):
        def inner(z1):
            m = c * z1
            pts2 = sorted(t for t in ((k / sq - m) / s for k in kinks if s > 0) if -12 < t < 12) or None
            val, _ = integrate.quad(lambda z2: g(sq * (m + s * z2)) * pdf(z2), -12, 12,
                                    points=pts2, epsabs=1e-15, epsrel=1e-13, limit=400)
            return val

        return inner

    res = []
    # quad warns when it reaches rounding level before its (deliberately tight) tolerance.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for g in (ff, dff):
            res.append(_nested(g, outer, sq, pts1, pdf))
    return res[0], res[1]


def _nested(g, outer, sq, pts1, pdf):
    inner = outer(g)
    val, _ = integrate.quad(lambda z1: g(sq * z1) * inner(z1) * pdf(z1), -12, 12, points=pts1,
                            epsabs=1e-15, epsrel=1e-13, limit=400)
    return val


def c_star(name, sw2, sb2, q, rho=1.0):
    """Stable c* < 1 of C(c) = [sw2 E phi phi + sb2] / q by Brent on [0, 0.99] (nested quad loses the kinks closer to c = 1)."""
    h = lambda c: (sw2 * two_point(name, q, c)[0] + sb2) / q - c  # noqa: E731
    c = optimize.brentq(h, 0.0, 0.99, xtol=1e-14, rtol=1e-14)
    return c, sw2 * two_point(name, q, c)[1]


# --------------------------------------------------------------------------- near c = 1

def _split_quad(g, pts, lo=-12.0, hi=12.0):
    """quad of g over [lo, hi] with the interval split at pts (each piece separately, so a
    kink on a piece's edge costs nothing)."""
    edges = [lo] + sorted(p for p in set(pts) if lo < p < hi) + [hi]
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        total += integrate.quad(g, a, b, epsabs=0.0, epsrel=1e-13, limit=500)[0]
    return total


def delta_two_point(name, q, eps):
    """(Delta, Dp) at variance q and correlation c = 1 - eps by nested double quad, with
    Delta = E[phi(u)^2] - E[phi(u)phi(v)] = E[(phi(u) - phi(v))^2] / 2 integrated as that
    square, so it keeps its relative digits as eps -> 0 (no cancellation anywhere); every
    kink of phi (and of the inner integrand, at the images of the kinks) is a split point.
    """
    f, df = FLOAT_ACTS[name]
    kinks = KINKS.get(name, ())
    sq = math.sqrt(q)
    c = 1.0 - eps
    s = math.sqrt(eps * (2.0 - eps))
    pdf = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
    # z1 where u or v (at z2 = 0 and a few widths s around it) meets a kink
    outer_pts = [k / sq for k in kinks] + [k / (c * sq) for k in kinks]
    outer_pts += [k / (c * sq) + j * s / c for k in kinks for j in (-8, -3, -1, 1, 3, 8)]

    def inner(g, z1):
        pts = [(k / sq - c * z1) / s for k in kinks]
        return _split_quad(lambda z2: g(z1, sq * (c * z1 + s * z2)) * pdf(z2), pts)

    def expect(g):
        return _split_quad(lambda z1: inner(g, z1) * pdf(z1), outer_pts)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        delta = 0.5 * expect(lambda z1, v: (f(sq * z1) - f(v)) ** 2)
        dp = expect(lambda z1, v: df(sq * z1) * df(v))
    return delta, dp


def c_star_near_one(name, sw2, sb2, q, eps0):
    """(c*, chi_c) of a chaotic point whose c* is close to 1, solving in eps = 1 - c.

    With q = sw2 E phi^2 + sb2 the fixed-point equation C(c) = c is exactly
    h(eps) = sw2 Delta(eps) - q eps = 0, both terms computed without cancellation.  Secant
    iterations from eps0 (a starting guess only: the root is that of h, evaluated here
    independently of the library) until the step is below 1e-13 eps.
    """
    h = lambda e: sw2 * delta_two_point(name, q, e)[0] - q * e  # noqa: E731
    e0, e1 = eps0, eps0 * (1 + 1e-3)
    h0, h1 = h(e0), h(e1)
    for _ in range(20):
        if h1 == h0:  # both at the root to rounding
            break
        e2 = e1 - h1 * (e1 - e0) / (h1 - h0)
        if abs(e2 - e1) < 1e-13 * abs(e2):
            e1 = e2
            break
        e0, h0, e1, h1 = e1, h1, e2, h(e2)
    return 1.0 - e1, sw2 * delta_two_point(name, q, e1)[1]


def gauss_legendre_normal(n, half_width=11.0):
    """Nodes z and weights w (Gaussian density included) of n-point Gauss-Legendre on
    [-half_width, half_width]: sum w f(z) = E f(Z), Z ~ N(0, 1), for smooth f."""
    z, w = np.polynomial.legendre.leggauss(n)
    z = z * half_width
    return z, w * half_width * np.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)


def gl_recursion(X, sw2, sb2, L, f, df, n_nodes):
    """Independent NNGP/NTK recursion (docs/theory.md) with every pair's expectations by
    tensor Gauss-Legendre in z1, z2 with u = l11 z1, v = l21 z1 + l22 z2 (the Cholesky
    factor of the pair's covariance).  Returns (Sigma, Theta) of shape (L, n, n)."""
    z, w = gauss_legendre_normal(n_nodes)
    W2 = np.outer(w, w)
    n, d = X.shape
    S = sw2 * (X @ X.T) / d + sb2
    T = S.copy()
    outS, outT = [S], [T]
    z1 = z[:, None]
    z2 = z[None, :]
    for _ in range(L - 1):
        Sn = np.empty_like(S)
        Dp = np.empty_like(S)
        for i in range(n):
            for j in range(i, n):
                l11 = math.sqrt(S[i, i])
                l21 = S[i, j] / l11
                l22 = math.sqrt(max(S[j, j] - l21 * l21, 0.0))
                u = l11 * z1
                v = l21 * z1 + l22 * z2
                Sn[i, j] = Sn[j, i] = sw2 * np.sum(W2 * f(u) * f(v)) + sb2
                Dp[i, j] = Dp[j, i] = sw2 * np.sum(W2 * df(u) * df(v))
        S, T = Sn, Sn + Dp * T
        outS.append(S)
        outT.append(T)
    return np.array(outS), np.array(outT)
