"""Elementary functions for the closed forms, written so that they keep their digits
(no cancellation near 0) and, for the arcsine, vectorize (polynomials and selects only,
no libm call) inside the kernels' loops over pairs."""

from __future__ import annotations

import math

import numba as nb


@nb.njit(cache=True)
def x_minus_atan(x):
    """x - atan(x) for x >= 0 without cancellation."""
    if x < 0.4:
        x2 = x * x
        term = x * x2  # x^3
        s = 0.0
        k = 3.0
        sign = 1.0
        for _ in range(40):
            t = sign * term / k
            s += t
            if abs(t) <= 1e-18 * abs(s):
                break
            term *= x2
            k += 2.0
            sign = -sign
        return s
    return x - math.atan(x)


@nb.njit(cache=True)
def x_minus_sin(x):
    """x - sin(x) without cancellation (x >= 0)."""
    if x < 1.2:
        x2 = x * x
        term = x * x2 / 6.0  # x^3/3!
        s = 0.0
        k = 4.0
        for _ in range(30):
            s += term
            term *= -x2 / (k * (k + 1.0))
            if abs(term) <= 1e-18 * abs(s):
                break
            k += 2.0
        return s
    return x - math.sin(x)


# Chebyshev points of [0, 1/4] in 50-digit arithmetic (its leading terms are the Taylor
# coefficients 1/6, 3/40, 15/336, ...); max relative error of the double-precision
# evaluation 2.2e-16 on [0, 1/2].  Polynomials and selects only, so loops over pairs that
# use it vectorize (libm's asin does not).
_ASIN_P = (0.16666666666666666, 0.075, 0.04464285714285712, 0.03038194444444724,
           0.022372159090659902, 0.017352764436568628, 0.013964843267282673,
           0.011551812937585565, 0.009761392569162197, 0.008393225303176481,
           0.0072836847606360545, 0.006664242854780022, 0.004511064894630965,
           0.010332968518153606, -0.011210233762568108, 0.03805874055514752,
           -0.042045073764645675, 0.03570538689886428)
_PIO2_HI = 1.5707963267948966
_PIO2_LO = 6.123233995736766e-17


@nb.njit(cache=True, inline="always")
def horner(x, coeffs):
    """sum_k coeffs[k] x^k by Horner's rule; ``coeffs`` (lowest order first) is a tuple of
    constants, so the loop has a fixed trip count that LLVM unrolls: the polynomials stay
    branch-free in the vectorized kernel loops."""
    p = coeffs[-1]
    for k in range(len(coeffs) - 2, -1, -1):
        p = p * x + coeffs[k]
    return p


@nb.njit(cache=True, inline="always")
def asin_small(x):
    """asin(x) for |x| <= 1/2 (polynomial, see ``_ASIN_P``)."""
    t = x * x
    return x + x * (t * horner(t, _ASIN_P))


@nb.njit(cache=True, inline="always")
def asin_fast(x):
    """asin(x) on [-1, 1] without libm: asin|x| = pi/2 - 2 asin(sqrt((1 - |x|)/2)) above 1/2."""
    ax = abs(x)
    big = ax > 0.5
    y = math.sqrt(0.5 * (1.0 - ax)) if big else ax
    a = asin_small(y)
    r = ((_PIO2_HI - 2.0 * a) + _PIO2_LO) if big else a
    return r if x >= 0.0 else -r


@nb.njit(cache=True, inline="always")
def acos_eps(c, eps):
    """arccos(c) from c and eps = 1 - c (carried exactly where it matters), without libm."""
    hi = c > 0.5
    lo = c < -0.5
    y = math.sqrt(0.5 * eps) if hi else (math.sqrt(0.5 * (1.0 + c)) if lo else c)
    a = asin_small(y)
    if hi:
        return 2.0 * a
    if lo:
        return (2.0 * _PIO2_HI - 2.0 * a) + 2.0 * _PIO2_LO
    return (_PIO2_HI - a) + _PIO2_LO
