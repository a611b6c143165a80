"""The correlation map and its stable fixed point c* (docs/theory.md, "Correlation map").

In eps = 1 - c, with both lengths at q* and dropout keep probability rho::

    1 - C(1 - eps) = sw2 * [(1/rho - 1) E phi^2 + Delta(eps)] / q*,
    Delta(eps) = E[phi(u1)^2] - E[phi(u1) phi(u2)]

C is convex on [0, 1] (its dual-activation series has non-negative coefficients) and
C(0) >= 0, so G(eps) = 1 - C(1 - eps) - eps is concave with G(1) <= 0: the stable fixed
point c* < 1 is its unique root in (0, 1].  It is found from the dual-activation series
D(c) = sum_n a_n^2 c^n when the series' proven tail bound shows it accurate, and
otherwise by safeguarded Newton on the 2-D quadrature started from the series' root.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np

from .functions import CF_NONE
from .gaussian.moments import moments2
from .near_one import curvature_start, hermite_step, relu_like, sqrt_step
from .moment_table import N_HERMITE_TABLE, TABLE_TAIL_ROUNDING, lookup_hermite_ext
from .vocabulary import Status

OK = int(Status.OK)
C_MAXITER = int(Status.C_MAXITER)
NONFINITE = int(Status.NONFINITE)

MAXIT_C = 200
# Consider accepting a Newton step below this size (relative) without a further evaluation.
NEWTON_ACCEPT = 1e-6
N_HERMITE = 24  # dual-activation terms: past ~24 the Hermite pass costs more than the 2-D polish it saves
SERIES_TOL = 1e-13  # accept the series when its proven error bound on eps*, chi_c is below this

DualSeries = namedtuple("DualSeries", ["coef", "tail", "tail1", "tail_lo"])
DualSeries.__doc__ = """Normalized Hermite coefficients a_n of phi(sqrt(q) z), n < N, upper bounds on
the tail masses sum_{n>=N} a_n^2 (``tail``) and sum_{n>=N} n a_n^2 (``tail1``), and a lower
bound on the first (``tail_lo``): each tail is a difference known to rounding only."""
CorrelationFixedPoint = namedtuple("CorrelationFixedPoint", ["c", "chi_c", "status", "iterations"])


@nb.njit(cache=True)
def _series_polys(herm):
    """Coefficients (S, W) of the two polynomials in c that the series solve evaluates.

    With D(c) = sum_{n<N} a_n^2 c^n and 1 - c^n = eps (1 + c + ... + c^(n-1))::

        sum_{n<N} a_n^2 (1 - c^n) = eps sum_{j=0}^{N-2} S_j c^j,   S_j = sum_{j<n<N} a_n^2
        D'(c)                     =     sum_{j=0}^{N-2} W_j c^j,   W_j = (j + 1) a_{j+1}^2

    Both have non-negative coefficients, so on 0 <= c <= 1 Horner's rule adds positive
    terms only and keeps full relative accuracy however small eps is.  Zero-padded to a
    multiple of 4 for :func:`_horner4`.
    """
    L = max(herm.shape[0] - 1, 0)
    Lp = (L + 3) // 4 * 4
    S = np.zeros(Lp)
    W = np.zeros(Lp)
    acc = 0.0
    for j in range(L - 1, -1, -1):
        a2 = herm[j + 1] * herm[j + 1]
        acc += a2
        S[j] = acc
        W[j] = (j + 1) * a2
    return S, W


@nb.njit(cache=True)
def _horner4(S, W, c):
    """(sum_j S_j c^j, sum_j W_j c^j), len(S) = len(W) a multiple of 4.

    Horner in c^4 on the four residues j mod 4 of both polynomials: eight independent
    chains, so the loop runs at the multiply-add throughput instead of one chain's latency
    (the series solve's whole cost; a single chain is ~4x slower).
    """
    c2 = c * c
    c4 = c2 * c2
    s0 = s1 = s2 = s3 = 0.0
    w0 = w1 = w2 = w3 = 0.0
    for i in range(S.shape[0] - 4, -1, -4):
        s0 = s0 * c4 + S[i]
        s1 = s1 * c4 + S[i + 1]
        s2 = s2 * c4 + S[i + 2]
        s3 = s3 * c4 + S[i + 3]
        w0 = w0 * c4 + W[i]
        w1 = w1 * c4 + W[i + 1]
        w2 = w2 * c4 + W[i + 2]
        w3 = w3 * c4 + W[i + 3]
    return (s0 + c * s1) + c2 * (s2 + c * s3), (w0 + c * w1) + c2 * (w2 + c * w3)


@nb.njit(cache=True)
def _series_delta(S, W, series, eps):
    """Dual-activation series: (Delta(eps), q D'(c), bound on the error of Delta), c = 1 - eps.

    Delta = sum_{n<N} a_n^2 (1 - c^n) + R with the tail R = sum_{n>=N} a_n^2 (1 - c^n), of
    which only bounds are known: 1 - c^n lies between 1 - c^N and min(1, n eps), so
    R >= (1 - c^N) tail_lo and R <= min(tail, tail1 / N, eps tail1) (sum n a_n^2 >= N sum a_n^2).
    The upper bound is used and the width returned: near c = 1 the tail1 bounds are the
    tight ones (a tail known only to rounding of E phi^2 would otherwise cost ~1e-11 in
    eps* at c* = 0.985), and as eps -> 0 the upper bound has the true slope tail1, so the
    truncated G keeps G'(0) = chi_1 - 1 (a midpoint, with a smaller slope, can put a
    spurious root at eps ~ 0 when the tail is large, as for silu at q* ~ 1e3).  The tail of q D' is dropped (at most c^(N-1) tail1, checked by
    the caller).  S, W from :func:`_series_polys`.
    """
    c = 1.0 - eps
    N = series.coef.shape[0]
    lo = (1.0 - c ** N) * series.tail_lo
    hi = max(min(series.tail, series.tail1 / max(N, 1), eps * series.tail1), lo)
    p, dp = _horner4(S, W, c)
    return hi + eps * p, dp, hi - lo


@nb.njit(cache=True)
def _series_root(S, W, series, sw2, rho, F, q, e0):
    """Root of the series version of G(eps) by Newton from eps = e0 (concave: from e0 = 1
    the iterates decrease monotonically; from below the root the first step overshoots
    above it, and from there they decrease)."""
    e = e0
    prev_step = math.inf
    for _ in range(MAXIT_C):
        dl, dpq, _ = _series_delta(S, W, series, e)
        G = sw2 * ((1.0 / rho - 1.0) * F + dl) / q - e
        Gp = sw2 * dpq / q - 1.0
        if G >= 0.0 and e == 1.0:
            return 1.0
        if Gp >= 0.0:
            return math.nan  # the truncated series has no interior root
        en = min(e - G / Gp, 1.0)
        if en <= 0.0 or not math.isfinite(en):
            return math.nan
        size = abs(en - e)
        # Converged at rounding level, or once the steps stop shrinking while tiny (G is
        # then rounding noise: without this test the last ulp can cycle to MAXIT_C).
        if size <= 4e-16 * e or (size >= prev_step and size <= 1e-12 * e):
            return en
        prev_step = size
        e = en
    return e


@nb.njit(cache=True)
def _series_fixed_point(series, sw2, rho, q, F, e0):
    """(c*, chi_c, eps*) from the dual-activation series, Newton started at eps = e0; c* is
    NaN unless its proven error bound is below SERIES_TOL, and eps* is the series' root (NaN
    when it has none)."""
    herm = series.coef
    S, W = _series_polys(herm)
    es = _series_root(S, W, series, sw2, rho, F, q, e0)
    if not (math.isfinite(es) and es > 0.0):
        return math.nan, math.nan, math.nan
    c = 1.0 - es
    # Proven truncation bounds: the tail of Delta from _series_delta, and for the
    # derivative series sum_{n>=N} n a_n^2 c^(n-1) <= c^(N-1) tail1.
    cN = c ** herm.shape[0]
    errDp = (cN / c if c > 0.0 else 0.0) * series.tail1
    dl, dpq, errD = _series_delta(S, W, series, es)
    chic = sw2 * dpq / q
    # The error bounds move the root of G by at most (sw2 errD / q) / |G'| and chi_c by
    # sw2 errDp / q; accept when both are below SERIES_TOL relative to eps* and to
    # 1 - chi_c (which sets xi_c = -1/log chi_c).
    if (sw2 * errD / q <= SERIES_TOL * es * abs(chic - 1.0)
            and sw2 * errDp / q <= SERIES_TOL * abs(1.0 - chic) * chic):
        return c, chic, es
    return math.nan, math.nan, es


@nb.njit(cache=True)
def _extended_series(table, series, q, F, dphi2):
    """``series`` continued by the table's extension coefficients (n < N_HERMITE_EXT) at q,
    or an empty series when q lies outside the extension's verified cells."""
    ext, t0, t1 = lookup_hermite_ext(table, q)
    N = series.coef.shape[0]
    if ext.shape[0] == 0 or N != N_HERMITE_TABLE:
        return DualSeries(np.zeros(0), 0.0, 0.0, 0.0)
    coef = np.empty(N + ext.shape[0])
    coef[:N] = series.coef
    coef[N:] = ext
    return DualSeries(coef, max(t0, 0.0) + TABLE_TAIL_ROUNDING * F,
                      max(t1, 0.0) + TABLE_TAIL_ROUNDING * q * dphi2,
                      max(t0 - TABLE_TAIL_ROUNDING * F, 0.0))


@nb.njit(cache=True)
def _series_curvature(series, c):
    """(sum_{n<N} n (n-1) a_n^2 c^(n-2), upper bound on the rest): D''(c) = q^2 E[phi'' phi''].

    For n >= N, (n - 1) c^(n-2) is at most its maximum over real n >= N, so the rest is at
    most that maximum times tail1 = sum_{n>=N} n a_n^2.
    """
    herm = series.coef
    N = herm.shape[0]
    d2 = 0.0
    cn2 = 1.0  # c^(n-2)
    for n in range(2, N):
        d2 += n * (n - 1) * herm[n] * herm[n] * cn2
        cn2 *= c
    if c <= 0.0:
        return d2, 0.0
    L = -math.log(c)
    xs = 1.0 + 1.0 / L if L > 0.0 else math.inf  # where (x - 1) c^(x-2) peaks
    if xs <= N:
        M = (N - 1) * c ** (N - 2)
    else:
        M = math.exp(-1.0) / (L * c)
    return d2, M * series.tail1


@nb.njit(cache=True)
def _accept_first_step(series, sw2, q, e, en, Gp, Dp):
    """(accepted, D' at en) for the Newton step e -> en of the first 2-D evaluation.

    The error left after the step is |G''| step^2 / (2 |G'|) (G'' = -sw2 D''(c) / q), with
    D'' bounded from above by the dual series and its tail (:func:`_series_curvature`, taken
    at the largest c the step touches: D'' grows with c).  When it is below rounding, en is
    the root and D' is carried to it with the series' D''; the carry's uncertainty (the tail
    bound times the step) must be below rounding too.  Saves the 2-D evaluation that the
    two-slope curvature estimate would need.
    """
    step = abs(en - e)
    cmax = 1.0 - max(min(e, en) - step, 0.0)
    d2, d2_rest = _series_curvature(series, cmax)
    if not (math.isfinite(d2) and math.isfinite(d2_rest)):
        return False, Dp
    gpp = sw2 * (d2 + d2_rest) / q
    # (2 step)^2: the distance from e to the root is at most twice the step when the
    # step's own error is below it.
    if gpp * 4.0 * step * step > 2e-16 * e * abs(Gp):
        return False, Dp
    if d2_rest * step / q > 1e-16 * abs(Dp):
        return False, Dp
    d2n, _ = _series_curvature(series, 1.0 - 0.5 * (e + en))
    return True, Dp + d2n / q * (e - en)  # dDp/dc = D''(c) / q


@nb.njit(cache=True)
def solve_c(act, sw2, sb2, rho, q, F, series, table, dphi2, dphi=math.nan):
    """Stable correlation fixed point below c = 1 (chaotic phase or dropout).

    ``F = E phi^2`` and ``dphi2 = E phi'^2`` at q, ``series`` the :class:`DualSeries` of
    phi(sqrt(q) z) (empty coefficients: none), ``table`` the activation's moment table
    (its Hermite extension continues a series that cannot prove c*); ``dphi = E phi'`` at
    q when known (NaN: not known).

    Returns
    -------
    CorrelationFixedPoint
    """
    if act.odd and sb2 == 0.0 and rho == 1.0:
        # C(0) = 0 exactly for odd phi without bias: c* = 0, chi_c = sw2 (E phi')^2.
        if math.isfinite(dphi):
            return CorrelationFixedPoint(0.0, sw2 * dphi * dphi, OK, 0)
        m = moments2(act, q, 1.0)
        return CorrelationFixedPoint(0.0, sw2 * m.Dp, OK, 0)

    lo = 0.0
    hi = 1.0
    e = 1.0
    from_series = False
    if act.family == CF_NONE and series.coef.shape[0] > 0:
        c, chic, es = _series_fixed_point(series, sw2, rho, q, F, 1.0)
        if math.isfinite(c):
            return CorrelationFixedPoint(c, chic, OK, 0)
        # Too close to c = 1 for N terms: continue the series (a 4x longer one, whose bound
        # c^N tail is ~c^384 times smaller), polishing the short series' root.
        longer = _extended_series(table, series, q, F, dphi2)
        if longer.coef.shape[0] > 0:
            c, chic, el = _series_fixed_point(longer, sw2, rho, q, F,
                                              es if math.isfinite(es) else 1.0)
            if math.isfinite(c):
                return CorrelationFixedPoint(c, chic, OK, 0)
            if math.isfinite(el):
                # Its root is the better start, and its tail bound the tighter curvature
                # bound for accepting the first 2-D Newton step.
                es = el
                series = longer
        if math.isfinite(es):
            e = es
            from_series = True
    sqrt_newton = relu_like(act, q, rho)
    if sqrt_newton and act.kinks.shape[0] == 0:
        # ReLU-like at large q: the series' root is a poor start (module near_one).
        e_t = curvature_start(act, sw2, q, dphi2)
        if math.isfinite(e_t):
            e = e_t
    prev_step = math.inf
    e_prev = math.nan
    gp_prev = math.nan
    G_prev = math.nan
    dp_prev = math.nan
    for it in range(MAXIT_C):
        m = moments2(act, q, e)
        G = sw2 * ((1.0 / rho - 1.0) * F + m.Delta) / q - e
        Gp = sw2 * m.Dp - 1.0
        if not (math.isfinite(G) and math.isfinite(Gp)):
            return CorrelationFixedPoint(math.nan, math.nan, NONFINITE, it)
        if G == 0.0:
            return CorrelationFixedPoint(1.0 - e, sw2 * m.Dp, OK, it)
        if G > 0.0:
            lo = e
        else:
            hi = e
        en = e - G / Gp if Gp != 0.0 else math.nan
        if not (lo < en < hi) or not math.isfinite(en):
            en = math.sqrt(lo * hi) if lo > 0.0 else 0.25 * hi
        size = abs(en - e)
        if size <= 4e-16 * e or (size >= prev_step and size <= 1e-12 * e):
            return CorrelationFixedPoint(1.0 - e, sw2 * m.Dp, OK, it)
        if it == 0 and from_series and size <= NEWTON_ACCEPT * e and lo < en < hi:
            accepted, dp_new = _accept_first_step(series, sw2, q, e, en, Gp, m.Dp)
            if accepted:
                return CorrelationFixedPoint(1.0 - en, sw2 * dp_new, OK, it)
        if it > 0 and size <= NEWTON_ACCEPT * e:
            # Newton converges quadratically: the root is at en up to |G''| step^2 / (2|G'|).
            # With G'' from the last two slopes, accept en when that error is below rounding
            # (saves a 2-D evaluation) and carry D' to en to first order.
            curv = abs((Gp - gp_prev) / (e - e_prev))
            if curv * size * size <= 2e-16 * e * abs(Gp):
                dp_new = m.Dp + (m.Dp - dp_prev) / (e - e_prev) * (en - e)
                return CorrelationFixedPoint(1.0 - en, sw2 * dp_new, OK, it)
        if sqrt_newton and size > NEWTON_ACCEPT * e:
            # Far from the root: in u = sqrt(eps), the root of G/eps's cubic Hermite
            # interpolant through the last two evaluations when they bracket it, else
            # Newton on G/eps (near_one).
            eu = hermite_step(e_prev, G_prev, gp_prev, e, G, Gp) if it > 0 else math.nan
            if not (lo < eu < hi):
                eu = sqrt_step(e, G, Gp)
            if lo < eu < hi:
                en = eu
        G_prev = G
        e_prev = e
        gp_prev = Gp
        dp_prev = m.Dp
        prev_step = size
        e = en
    return CorrelationFixedPoint(1.0 - e, math.nan, C_MAXITER, MAXIT_C)
