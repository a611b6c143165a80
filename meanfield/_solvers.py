"""Fixed points, slopes and depth scales of the mean-field maps, in Numba.

Everything here is pure numerics on scalars and arrays; validation, labels and I/O
live in :mod:`meanfield.api`.  Conventions are THEORY.md's: variances, not standard
deviations; ``sw2d = sw2 / rho`` is the weight variance seen by the diagonal (length)
map under dropout with keep probability rho.

Length map (THEORY.md, "Length map")::

    V(q) = sw2d * E[phi(sqrt(q) z)^2] + sb2,   q* = V(q*)

solved by safeguarded Newton on g(q) = V(q) - q, with V'(q) and V''(q) from the
q-derivatives of the Gaussian density (no phi'').  The root is the one the iteration
q^{l+1} = V(q^l) reaches from q^0 = ``q0``: g > 0 means the iterates increase, so the
bracket always keeps g(lo) >= 0 >= g(hi) around that root.  A per-activation table of
E[phi^2] on a log grid of q finds that bracket and a start good to ~1e-9, after which
one exact evaluation usually suffices (its quadratic-convergence error is known).

Correlation map (THEORY.md, "Correlation map"), in eps = 1 - c::

    1 - C(1 - eps) = sw2 * [(1/rho - 1) E phi^2 + Delta(eps)] / q*,
    Delta(eps) = E[phi(u1)^2] - E[phi(u1) phi(u2)]

C is convex on [0, 1] (its dual-activation series has non-negative coefficients) and
C(0) >= 0, so G(eps) = 1 - C(1 - eps) - eps is concave with G(1) <= 0: the stable
fixed point c* < 1 is its unique root in (0, 1].  It is found from the dual-activation
series  D(c) = sum_n a_n^2 c^n  when the series' tail bound proves it accurate, and
otherwise by safeguarded Newton on the 2-D quadrature started from the series' root.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._expect import dphi2_at_zero, moments1s, moments2
from .activations import CF_LINEAR, CF_NONE, CF_RELU, phi

# Status codes (first failure wins).  Kept in sync with api.STATUS_MEANINGS.
OK = 0
NO_FIXED_POINT = 1  # the length map grows past Q_MAX: no finite q* (or q* > Q_MAX)
Q_MAXITER = 2
C_MAXITER = 3
NONFINITE = 4  # phi or its moments produced inf/NaN
C_UNDEFINED = 5  # dropout with q* = 0 and a kink at 0: the correlation has no limit

Q_MAX = 1e8  # beyond this the length map is declared unbounded (documented in analyze())
Q_ASYMPTOTIC = 100.0  # q past which a linear-growth phi counts as asymptotically linear
Q_TINY = 1e-30  # below this, and with V(0) = 0, the fixed point is q* = 0 exactly
MAXIT_Q = 300
MAXIT_C = 200
# Consider accepting a Newton step below this size (relative) without a further
# evaluation; the quadratic-convergence error estimate then decides.
NEWTON_ACCEPT = 1e-6
N_HERMITE = 24  # dual-activation terms: past ~24 the Hermite pass costs more than the 2-D polish it saves
SERIES_TOL = 1e-13  # accept the series when its proven error bound on eps*, chi_c is below this

# Indices of the point-result vector.
I_Q, I_C, I_CHI1, I_CHIC, I_XIQ, I_XIC, I_XIG, I_DEPTH, I_PHASE, I_STATUS, I_VP, I_CHIG = range(12)
N_OUT = 12

PHASE_UNDETERMINED = -1
PHASE_ORDERED = 0
PHASE_CRITICAL = 1
PHASE_CHAOTIC = 2


@nb.njit(cache=True)
def _lin_slope(cf, a, sw2d):
    """V'(q) for the closed forms whose length map is linear in q."""
    if cf == CF_LINEAR:
        return sw2d
    return 0.5 * sw2d * (1.0 + a * a)


@nb.njit(cache=True)
def build_q_table(kind, a, b, ufn, cf, kinks, kappa, odd, tq):
    """E[phi^2] and q dE[phi^2]/dq at the table lengths ``tq`` (see :func:`solve_q`)."""
    n = tq.shape[0]
    tF = np.empty(n)
    tS = np.empty(n)
    empty = np.empty(0)
    for i in range(n):
        m = moments1s(kind, a, b, ufn, cf, kinks, kappa, odd, tq[i], empty)
        tF[i] = m[1]
        tS[i] = 0.5 * m[2]
    return tF, tS


@nb.njit(cache=True)
def _table_bracket(sw2d, sb2, q0, tq, tF, tS):
    """Bracket and initial guess for the root reached from q0, from the tabulated map.

    Scans g_i = sw2d F(q_i) + sb2 - q_i from q0 (a table node) in the direction the
    iteration moves until g changes sign; inside that cell g is a cubic Hermite
    interpolant in t = log q (dg/dt = sw2d q F' - q), whose root is the initial guess.
    Returns (lo, hi, x0), or (-1, -1, q) to fall back to expansion from the table's end q.
    """
    n = tq.shape[0]
    i0 = -1
    for i in range(n):
        if tq[i] == q0:
            i0 = i
            break
    if i0 < 0:
        return -1.0, -1.0, q0
    g0 = sw2d * tF[i0] + sb2 - tq[i0]
    if g0 == 0.0:
        return -1.0, -1.0, q0
    step = 1 if g0 > 0.0 else -1
    i = i0
    while True:
        j = i + step
        if j < 0 or j >= n:
            return -1.0, -1.0, tq[i]  # no root inside the table: continue from its end
        gj = sw2d * tF[j] + sb2 - tq[j]
        if (gj <= 0.0) if step > 0 else (gj >= 0.0):
            break
        i = j
    il = min(i, j)
    ih = max(i, j)
    ta = math.log(tq[il])
    tb = math.log(tq[ih])
    ga = sw2d * tF[il] + sb2 - tq[il]
    gb = sw2d * tF[ih] + sb2 - tq[ih]
    da = (sw2d * tS[il] - tq[il]) * (tb - ta)
    db = (sw2d * tS[ih] - tq[ih]) * (tb - ta)
    # Root of the cubic Hermite interpolant on u in [0, 1], safeguarded Newton from the
    # secant estimate (the cubic is only a guess; exact Newton follows).
    u = ga / (ga - gb) if ga != gb else 0.5
    for _ in range(8):
        h00 = 2 * u ** 3 - 3 * u ** 2 + 1
        h10 = u ** 3 - 2 * u ** 2 + u
        h01 = -2 * u ** 3 + 3 * u ** 2
        h11 = u ** 3 - u ** 2
        p = h00 * ga + h10 * da + h01 * gb + h11 * db
        dp = (6 * u ** 2 - 6 * u) * ga + (3 * u ** 2 - 4 * u + 1) * da \
            + (-6 * u ** 2 + 6 * u) * gb + (3 * u ** 2 - 2 * u) * db
        if dp == 0.0:
            break
        un = u - p / dp
        if not (0.0 <= un <= 1.0):
            break
        u = un
    x0 = math.exp(ta + u * (tb - ta))
    lo = tq[il] if ga > 0.0 else tq[ih]
    hi = tq[ih] if ga > 0.0 else tq[il]
    return min(lo, hi), max(lo, hi), min(max(x0, tq[il]), tq[ih])


@nb.njit(cache=True)
def solve_q(kind, a, b, ufn, cf, kinks, kappa, odd, sw2d, sb2, q0, v_slope_inf, tq, tF, tS):
    """Fixed point of the length map reached from q0.

    ``v_slope_inf`` = lim E[phi(sqrt(q) z)^2]/q = (phi'(+inf)^2 + phi'(-inf)^2)/2 for
    linearly growing phi (NaN when unknown or phi is bounded).  ``tq, tF, tS`` is the
    activation's table of E[phi^2] on a log grid of q (empty arrays: no table); when q0
    is a table node it brackets the root, so Newton needs about two exact evaluations.

    Returns
    -------
    (q_star, status, iterations, moments)
        ``q_star`` is ``inf`` with status NO_FIXED_POINT when the map grows without bound;
        ``moments`` are :func:`moments1` at ``q_star`` (NaN when it is not finite).
    """
    nan5 = (math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    empty = np.empty(0)
    if cf == CF_RELU or cf == CF_LINEAR:
        # V(q) = slope * q + sb2 exactly: closed-form fixed point (THEORY.md, closed forms).
        slope = _lin_slope(cf, a, sw2d)
        if slope < 1.0:
            q = sb2 / (1.0 - slope)
        elif slope == 1.0 and sb2 == 0.0:
            q = q0  # every q is fixed: the iteration stays at q0
        elif sb2 == 0.0 and q0 == 0.0:
            q = 0.0
        else:
            return math.inf, NO_FIXED_POINT, 0, nan5
        return q, OK, 0, moments1s(kind, a, b, ufn, cf, kinks, kappa, odd, q, empty)

    expands_at_infinity = sw2d * v_slope_inf > 1.0  # False when the slope is unknown (NaN)
    p0, _ = phi(kind, 0.0, a, b, ufn)
    zero_is_fixed = (sw2d * p0 * p0 + sb2) == 0.0  # V(0) = 0
    vp0 = sw2d * dphi2_at_zero(kind, a, b, ufn, kinks)  # V'(0+) when phi(0) = 0
    lo = 0.0
    hi = math.inf
    x = q0
    if tq.shape[0] > 0:
        tlo, thi, x = _table_bracket(sw2d, sb2, q0, tq, tF, tS)
        if tlo >= 0.0:
            lo = tlo
            hi = thi
        elif x < q0:
            hi = x  # the root lies below the table
    prev_step = math.inf
    for it in range(MAXIT_Q):
        m = moments1s(kind, a, b, ufn, cf, kinks, kappa, odd, x, empty)
        V = sw2d * m[1] + sb2
        if not math.isfinite(V):
            return math.nan, NONFINITE, it, nan5
        g = V - x
        if x > 0.0:
            gp = sw2d * m[2] / (2.0 * x) - 1.0
        else:
            gp = vp0 - 1.0
        if g == 0.0:
            # V(q) = q to rounding.  Near 0 with V(0) = 0 and V'(0) <= 1 this is the map
            # q - O(q^2) being indistinguishable from the identity: the fixed point is 0.
            if zero_is_fixed and x < 1e-8 * max(q0, 1.0) and vp0 <= 1.0:
                return 0.0, OK, it, moments1s(kind, a, b, ufn, cf, kinks, kappa, odd, 0.0, empty)
            return x, OK, it, m
        if g > 0.0:
            lo = x
        else:
            hi = x
        if zero_is_fixed and hi < Q_TINY:
            return 0.0, OK, it, moments1s(kind, a, b, ufn, cf, kinks, kappa, odd, 0.0, empty)
        if g > 0.0 and (x > Q_MAX or (x >= Q_ASYMPTOTIC and gp > 0.0 and expands_at_infinity)):
            # Beyond Q_ASYMPTOTIC a linearly growing phi is in its asymptotic regime: with
            # V > q, V' > 1 and V'(inf) > 1 the iterates grow without bound.
            return math.inf, NO_FIXED_POINT, it, nan5
        # Newton candidate; fall back to expansion (no upper bracket yet) or bisection.
        xn = x - g / gp if gp != 0.0 else math.nan
        if not (lo < xn < hi) or not math.isfinite(xn):
            if hi == math.inf:
                xn = 4.0 * x if x > 0.0 else 1.0
            elif lo > 0.0:
                xn = math.sqrt(lo * hi)
            elif xn <= 0.0:
                # Newton's root is below the rounding level of g at x (a tiny sb2 with
                # V'(0) < 1): the root is at most ~1e-16 x, so step down by 1e-12 at once.
                xn = 1e-12 * hi
            else:
                xn = 0.25 * hi
        step = abs(xn - x)
        # Converged when the step is at rounding level, or no longer shrinks once small
        # (g is then rounding noise amplified by 1/|V' - 1|).
        if step <= 4e-16 * x or (step >= prev_step and step <= 1e-12 * x):
            return x, OK, it, m
        if step <= NEWTON_ACCEPT * x and x > 0.0 and lo < xn < hi:
            # Quadratic convergence: after this step the error is g'' step^2 / (2 |g'|), with
            # g'' = sw2d F''(q) = sw2d E[phi^2 He_4] / (4 q^2) known exactly.  When that is
            # below rounding, accept xn and carry the moments to it to first order (their
            # q-derivatives are the density-derivative moments), saving an evaluation.
            gpp = sw2d * m[5] / (4.0 * x) / x
            if abs(gpp) * step * step <= 2e-16 * x * abs(gp):
                dq = xn - x
                f2 = m[1] + m[2] / (2.0 * x) * dq
                dF = m[2] / (2.0 * x) + m[5] / (4.0 * x) / x * dq
                d2 = m[3] + m[6] / (2.0 * x) * dq
                return xn, OK, it, (m[0], f2, 2.0 * xn * dF, d2, m[4], m[5], m[6])
        prev_step = step
        x = xn
    return x, Q_MAXITER, MAXIT_Q, nan5


@nb.njit(cache=True)
def _series_delta(herm, tail, eps):
    """Dual-activation series: (Delta(eps), q D'(c)) with c = 1 - eps in [0, 1], tail dropped.

    Delta = sum_{n<N} a_n^2 (1 - c^n) + tail - sum_{n>=N} a_n^2 c^n; the last sum is dropped
    (it is at most c^N tail).  1 - c^n = eps (1 + c + ... + c^(n-1)) is a sum of positive
    terms, so it keeps full relative accuracy however small eps is.
    """
    c = 1.0 - eps
    dl = 0.0
    dp = 0.0
    geo = 0.0  # 1 + c + ... + c^(n-1)
    cn1 = 1.0  # c^(n-1)
    for n in range(1, herm.shape[0]):
        a2 = herm[n] * herm[n]
        geo = geo * c + 1.0
        dl += a2 * geo
        dp += n * a2 * cn1
        cn1 *= c
    return tail + eps * dl, dp


@nb.njit(cache=True)
def _series_root(herm, tail, sw2, rho, F, q):
    """Root of the series version of G(eps) by Newton from eps = 1 (concave: monotone)."""
    e = 1.0
    for _ in range(MAXIT_C):
        dl, dpq = _series_delta(herm, tail, e)
        G = sw2 * ((1.0 / rho - 1.0) * F + dl) / q - e
        Gp = sw2 * dpq / q - 1.0
        if G >= 0.0 and e == 1.0:
            return 1.0
        if Gp >= 0.0:
            return math.nan  # the truncated series has no interior root
        en = e - G / Gp
        if en <= 0.0 or not math.isfinite(en):
            return math.nan
        if abs(en - e) <= 2e-16 * e:
            return en
        e = en
    return e


@nb.njit(cache=True)
def solve_c(kind, a, b, ufn, cf, kinks, kappa, odd, sw2, sb2, rho, q, F, herm, tail, tail1):
    """Stable correlation fixed point below c = 1 (chaotic phase or dropout).

    Parameters ``F = E phi^2`` at q, ``herm`` its Hermite coefficients, ``tail`` and
    ``tail1`` the exact tail masses sum_{n>=N} a_n^2 and sum_{n>=N} n a_n^2.

    Returns
    -------
    (c_star, chi_c, status, iterations)
    """
    if odd and sb2 == 0.0 and rho == 1.0:
        # C(0) = 0 exactly for odd phi without bias: c* = 0, chi_c = sw2 (E phi')^2.
        m = moments2(kind, a, b, ufn, cf, kinks, kappa, odd, q, 1.0)
        return 0.0, sw2 * m[2], OK, 0

    lo = 0.0
    hi = 1.0
    e = 1.0
    if cf == CF_NONE and herm.shape[0] > 0:
        es = _series_root(herm, tail, sw2, rho, F, q)
        if math.isfinite(es) and es > 0.0:
            c = 1.0 - es
            # Proven truncation bounds: |sum_{n>=N} a_n^2 c^n| <= c^N tail, and the same
            # for the derivative series with n a_n^2 c^(n-1) <= c^(N-1) tail1.
            cN = c ** herm.shape[0]
            errD = cN * tail
            errDp = (cN / c if c > 0.0 else 0.0) * tail1
            dl, dpq = _series_delta(herm, tail, es)
            chic = sw2 * dpq / q
            # The error bounds move the root of G by at most (sw2 errD / q) / |G'| and chi_c
            # by sw2 errDp / q; accept when both are below SERIES_TOL relative to eps* and
            # to 1 - chi_c (which sets xi_c = -1/log chi_c).
            if (sw2 * errD / q <= SERIES_TOL * es * abs(chic - 1.0)
                    and sw2 * errDp / q <= SERIES_TOL * abs(1.0 - chic) * chic):
                return c, chic, OK, 0
            e = es
    it = 0
    prev_step = math.inf
    e_prev = math.nan
    gp_prev = math.nan
    dp_prev = math.nan
    for it in range(MAXIT_C):
        D, Dl, Dp = moments2(kind, a, b, ufn, cf, kinks, kappa, odd, q, e)
        G = sw2 * ((1.0 / rho - 1.0) * F + Dl) / q - e
        Gp = sw2 * Dp - 1.0
        if not (math.isfinite(G) and math.isfinite(Gp)):
            return math.nan, math.nan, NONFINITE, it
        if G == 0.0:
            return 1.0 - e, sw2 * Dp, OK, it
        if G > 0.0:
            lo = e
        else:
            hi = e
        en = e - G / Gp if Gp != 0.0 else math.nan
        if not (lo < en < hi) or not math.isfinite(en):
            en = math.sqrt(lo * hi) if lo > 0.0 else 0.25 * hi
        step = abs(en - e)
        if step <= 4e-16 * e or (step >= prev_step and step <= 1e-12 * e):
            return 1.0 - e, sw2 * Dp, OK, it
        if it > 0 and step <= NEWTON_ACCEPT * e:
            # Newton converges quadratically: the root is at en up to |G''| step^2 / (2|G'|).
            # With G'' from the last two slopes, accept en when that error is below rounding
            # (saves a 2-D evaluation) and carry D' to en to first order.
            curv = abs((Gp - gp_prev) / (e - e_prev))
            if curv * step * step <= 2e-16 * e * abs(Gp):
                dp_new = Dp + (Dp - dp_prev) / (e - e_prev) * (en - e)
                return 1.0 - en, sw2 * dp_new, OK, it
        e_prev = e
        gp_prev = Gp
        dp_prev = Dp
        prev_step = step
        e = en
    return 1.0 - e, math.nan, C_MAXITER, MAXIT_C


@nb.njit(cache=True)
def _neg_inv_log(x):
    """Depth scale -1/log(x) for a slope x >= 0 (0 -> 0, 1 -> inf)."""
    if x == 1.0:
        return math.inf
    if x == 0.0:
        return 0.0
    return -1.0 / math.log(x)


@nb.njit(cache=True)
def analyze_point(kind, a, b, ufn, cf, kinks, kappa, odd, tq, tF, tS, slope_p, slope_m, sw2, sb2,
                  rho, q0, depth_const, crit_tol, out):
    """Every mean-field quantity at one (sw2, sb2); fills ``out`` (length N_OUT)."""
    for i in range(N_OUT):
        out[i] = math.nan
    sw2d = sw2 / rho
    e_dphi2_inf = 0.5 * (slope_p * slope_p + slope_m * slope_m)
    q, st, _, m = solve_q(kind, a, b, ufn, cf, kinks, kappa, odd, sw2d, sb2, q0, e_dphi2_inf, tq, tF,
                              tS)
    out[I_Q] = q
    out[I_STATUS] = st
    out[I_PHASE] = PHASE_UNDETERMINED
    if st == NO_FIXED_POINT:
        # chi_1 in the limit q -> inf, from the asymptotic slopes of phi (if known).
        chi1 = sw2 * e_dphi2_inf
        out[I_CHI1] = chi1
        out[I_CHIG] = sw2d * e_dphi2_inf
        out[I_XIG] = _neg_inv_log(sw2d * e_dphi2_inf)
        if math.isfinite(chi1):
            lc = math.log(chi1) if chi1 > 0.0 else -math.inf
            out[I_PHASE] = PHASE_ORDERED if lc < -crit_tol else (
                PHASE_CHAOTIC if lc > crit_tol else PHASE_CRITICAL)
        return
    if st != OK:
        return

    kink_at_zero = cf == CF_RELU
    for k in range(kinks.shape[0]):
        if kinks[k] == 0.0:
            kink_at_zero = True
    if q > 0.0:
        vprime = sw2d * m[2] / (2.0 * q)
    else:
        vprime = sw2d * m[3]  # phi(0) = 0 here, so V'(0+) = sw2d lim E[phi'^2] (m is that limit)
    chi1 = sw2 * m[3]
    chig = sw2d * m[3]
    out[I_VP] = vprime
    out[I_CHI1] = chi1
    out[I_CHIG] = chig
    out[I_XIQ] = _neg_inv_log(abs(vprime))
    out[I_XIG] = _neg_inv_log(chig)
    lc = math.log(chi1) if chi1 > 0.0 else -math.inf
    if not math.isfinite(chi1):
        out[I_STATUS] = NONFINITE
        return
    phase = PHASE_ORDERED if lc < -crit_tol else (PHASE_CHAOTIC if lc > crit_tol else PHASE_CRITICAL)
    out[I_PHASE] = phase

    if rho == 1.0 and (chi1 <= 1.0 or q == 0.0):
        # c = 1 is the stable fixed point (ordered side, or the critical line itself).
        out[I_C] = 1.0
        out[I_CHIC] = chi1
        xic = _neg_inv_log(chi1)
    elif q == 0.0:
        # Dropout with q* = 0 (sb2 = 0, phi(0) = 0): lengths vanish and c = q_ab / q is a
        # 0/0 limit.  Linearizing a phi that is smooth at 0 gives c^{l+1} = rho c^l exactly,
        # so c* = 0 and chi_c = rho; with a kink at 0 there is no such limit to report.
        if kink_at_zero:
            out[I_STATUS] = C_UNDEFINED
            return
        out[I_C] = 0.0
        out[I_CHIC] = rho
        xic = _neg_inv_log(rho)
    else:
        F = m[1]
        tail = 0.0
        tail1 = 0.0
        # The dual-activation coefficients are needed only here, so ordered points skip them.
        herm = np.zeros(N_HERMITE if cf == CF_NONE else 0)
        if herm.shape[0] > 0:
            moments1s(kind, a, b, ufn, cf, kinks, kappa, odd, q, herm)
            s0 = 0.0
            s1 = 0.0
            for n in range(herm.shape[0]):
                s0 += herm[n] * herm[n]
                s1 += n * herm[n] * herm[n]
            tail = max(F - s0, 0.0)
            tail1 = max(q * m[3] - s1, 0.0)  # sum n a_n^2 = q E[phi'^2]
        c, chic, stc, _ = solve_c(kind, a, b, ufn, cf, kinks, kappa, odd, sw2, sb2, rho, q, F, herm,
                                  tail, tail1)
        out[I_C] = c
        out[I_CHIC] = chic
        if stc != OK:
            out[I_STATUS] = stc
            return
        xic = _neg_inv_log(chic)
    out[I_XIC] = xic
    out[I_DEPTH] = depth_const * xic


@nb.njit(cache=True)
def analyze_grid_serial(kind, a, b, ufn, cf, kinks, kappa, odd, tq, tF, tS, slope_p, slope_m, sw2, sb2,
                        rho, q0,
                        depth_const, crit_tol, out):
    """analyze_point over flat arrays sw2, sb2 (same length); out has shape (n, N_OUT)."""
    for i in range(sw2.shape[0]):
        analyze_point(kind, a, b, ufn, cf, kinks, kappa, odd, tq, tF, tS, slope_p, slope_m, sw2[i],
                      sb2[i], rho, q0, depth_const, crit_tol, out[i])


_GRID_STRIDE = 4096


@nb.njit(cache=True, parallel=True)
def analyze_grid_parallel(kind, a, b, ufn, cf, kinks, kappa, odd, tq, tF, tS, slope_p, slope_m, sw2, sb2,
                        rho, q0,
                          depth_const, crit_tol, out):
    """Parallel variant of :func:`analyze_grid_serial`; each iteration writes only its rows.

    prange splits its range into one contiguous block per thread, and a grid's chaotic
    points (5-10x the work of ordered ones) sit together at large sw2: iteration k takes
    the points k, k + STRIDE, k + 2 STRIDE, ... so every thread gets a fair sample.
    """
    n = sw2.shape[0]
    stride = min(n, _GRID_STRIDE)
    for k in nb.prange(stride):
        for i in range(k, n, stride):
            analyze_point(kind, a, b, ufn, cf, kinks, kappa, odd, tq, tF, tS, slope_p, slope_m,
                          sw2[i], sb2[i], rho, q0, depth_const, crit_tol, out[i])


@nb.njit(cache=True)
def chi1_of_sw2(kind, a, b, ufn, cf, kinks, kappa, odd, tq, tF, tS, slope_p, slope_m, sw2, sb2, q0):
    """chi_1 = sw2 E[phi'(sqrt(q*) z)^2] as a function of sw2 (for the critical line)."""
    e_dphi2_inf = 0.5 * (slope_p * slope_p + slope_m * slope_m)
    q, st, _, m = solve_q(kind, a, b, ufn, cf, kinks, kappa, odd, sw2, sb2, q0, e_dphi2_inf, tq, tF,
                              tS)
    if st == NO_FIXED_POINT:
        return sw2 * e_dphi2_inf
    if st != OK:
        return math.nan
    return sw2 * m[3]
