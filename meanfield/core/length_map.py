"""The length map and its fixed point q* (docs/theory.md, "Length map"), in Numba.

::

    V(q) = sw2d * E[phi(sqrt(q) z)^2] + sb2,   q* = V(q*)

with ``sw2d = sw2 / rho`` the weight variance the diagonal sees under dropout.  Solved by
safeguarded Newton on g(q) = V(q) - q, with V'(q) and V''(q) from the q-derivatives of the
Gaussian density (no phi'').  The root is the one the iteration q^{l+1} = V(q^l) reaches
from q^0 = ``q0``: g > 0 means the iterates increase, so the bracket always keeps
g(lo) >= 0 >= g(hi) around that root.  A per-activation table of E[phi^2] on a log grid of
q (:class:`LengthTable`) finds that bracket and a start good to ~1e-9, after which one
exact evaluation usually suffices (its quadratic-convergence error is known).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np

from .functions import CF_LINEAR, CF_NONE, CF_RELU, phi
from .gaussian.moments import Moments1, dphi2_at_zero, moments1
from .moment_table import MomentTable, lookup_moments
from .vocabulary import Status

OK = int(Status.OK)
NO_FIXED_POINT = int(Status.NO_FIXED_POINT)
Q_MAXITER = int(Status.Q_MAXITER)
NONFINITE = int(Status.NONFINITE)
Q_RANGE = int(Status.Q_RANGE)

Q_MAX = 1e8  # beyond this the length map is declared unbounded (documented in analyze())
Q_ASYMPTOTIC = 100.0  # q past which a linear-growth phi counts as asymptotically linear
Q_TINY = 1e-30  # below this, and with V(0) = 0, the fixed point is q* = 0 exactly
MAXIT_Q = 300
# Consider accepting a Newton step below this size (relative) without a further
# evaluation; the quadratic-convergence error estimate then decides.
NEWTON_ACCEPT = 1e-6

# Flat (no nested tuple): Numba's parallel loops cannot pass a tuple holding a tuple.
LengthTable = namedtuple("LengthTable", ["q", "F", "S"] + list(MomentTable._fields))
LengthTable.__doc__ = """E[phi^2] (``F``) and q dE[phi^2]/dq (``S``) at the lengths ``q`` (log grid),
followed by the fields of the activation's
:class:`~meanfield.core.moment_table.MomentTable` (the lookups read those by name)."""
LengthFixedPoint = namedtuple("LengthFixedPoint", ["q", "status", "iterations", "moments"])


@nb.njit(cache=True)
def linear_slope(act, sw2d):
    """V'(q) for the closed forms whose length map is linear in q."""
    if act.family == CF_LINEAR:
        return sw2d
    return 0.5 * sw2d * (1.0 + act.a * act.a)


@nb.njit(cache=True)
def build_table(act, tq):
    """E[phi^2] and q dE[phi^2]/dq at the table lengths ``tq``."""
    n = tq.shape[0]
    tF = np.empty(n)
    tS = np.empty(n)
    empty = np.empty(0)
    for i in range(n):
        m = moments1(act, tq[i], empty, True)
        tF[i] = m.phi2
        tS[i] = 0.5 * m.phi2z
    return tF, tS


@nb.njit(cache=True)
def _hermite_cell_root(ga, gb, da, db):
    """Root in [0, 1] of the cubic Hermite interpolant with values ga, gb and slopes da, db."""
    # Safeguarded Newton from the secant estimate (the cubic is only a guess; exact
    # Newton on the map follows).
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
    return u


@nb.njit(cache=True)
def _node_index(tq, q0):
    """Index i with tq[i] == q0 in the increasing log grid ``tq``, or -1.

    Guessed from the grid's ratio and confirmed by equality (a scan of the ~900 nodes
    costs as much as a whole ordered point); a miss falls back to the scan.
    """
    n = tq.shape[0]
    if n >= 2 and q0 > 0.0:
        g = math.log(q0 / tq[0]) / math.log(tq[1] / tq[0])
        if 0.0 <= g < n:
            i = int(g + 0.5)
            if i < n and tq[i] == q0:
                return i
    for i in range(n):
        if tq[i] == q0:
            return i
    return -1


@nb.njit(cache=True)
def _table_bracket(sw2d, sb2, q0, table):
    """Bracket and initial guess for the root reached from q0, from the tabulated map.

    Scans g_i = sw2d F(q_i) + sb2 - q_i from q0 (a table node) in the direction the
    iteration moves until g changes sign; inside that cell g is a cubic Hermite
    interpolant in t = log q (dg/dt = sw2d q F' - q), whose root is the initial guess.
    Returns (lo, hi, x0), or (-1, -1, q) to fall back to expansion from the table's end q.
    """
    tq, tF, tS = table.q, table.F, table.S
    n = tq.shape[0]
    i0 = _node_index(tq, q0)
    if i0 < 0:
        return -1.0, -1.0, q0
    g0 = sw2d * tF[i0] + sb2 - tq[i0]
    if g0 == 0.0:
        return -1.0, -1.0, q0
    direction = 1 if g0 > 0.0 else -1
    i = i0
    while True:
        j = i + direction
        if j < 0 or j >= n:
            return -1.0, -1.0, tq[i]  # no root inside the table: continue from its end
        gj = sw2d * tF[j] + sb2 - tq[j]
        if (gj <= 0.0) if direction > 0 else (gj >= 0.0):
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
    u = _hermite_cell_root(ga, gb, da, db)
    x0 = math.exp(ta + u * (tb - ta))
    lo = tq[il] if ga > 0.0 else tq[ih]
    hi = tq[ih] if ga > 0.0 else tq[il]
    return min(lo, hi), max(lo, hi), min(max(x0, tq[il]), tq[ih])


@nb.njit(cache=True)
def _linear_fixed_point(act, sw2d, sb2, q0):
    """V(q) = slope * q + sb2 exactly: the closed-form fixed point (docs/theory.md)."""
    nan_m = Moments1(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    slope = linear_slope(act, sw2d)
    if slope < 1.0:
        q = sb2 / (1.0 - slope)
    elif slope == 1.0 and sb2 == 0.0:
        q = q0  # every q is fixed: the iteration stays at q0
    elif sb2 == 0.0 and q0 == 0.0:
        q = 0.0
    else:
        return LengthFixedPoint(math.inf, NO_FIXED_POINT, 0, nan_m)
    return LengthFixedPoint(q, OK, 0, moments1(act, q, np.empty(0), True))


@nb.njit(cache=True)
def _accept_newton(m, x, xn, sw2d, gp):
    """Moments carried to the Newton iterate xn when its error is provably below rounding.

    Quadratic convergence: after the step the error is g'' step^2 / (2 |g'|), with
    g'' = sw2d F''(q) = sw2d E[phi^2 He_4] / (4 q^2) known exactly.  When that is below
    rounding, xn is accepted and the moments are carried to it to first order (their
    q-derivatives are the density-derivative moments), saving an evaluation.
    Returns (accepted, moments at xn).
    """
    dq = xn - x
    gpp = sw2d * m.phi2h4 / (4.0 * x) / x
    if abs(gpp) * dq * dq <= 2e-16 * x * abs(gp):
        f2 = m.phi2 + m.phi2z / (2.0 * x) * dq
        dF = m.phi2z / (2.0 * x) + m.phi2h4 / (4.0 * x) / x * dq
        d2 = m.dphi2 + m.dphi2z / (2.0 * x) * dq
        return True, Moments1(m.phi, f2, 2.0 * xn * dF, d2, m.dphi, m.phi2h4, m.dphi2z)
    return False, m


@nb.njit(cache=True)
def _diverges_at_node(table, x, sw2d, sb2, expands_at_infinity):
    """The divergence test of :func:`solve_q` at the table's last node x, from its tabulated
    values instead of a fresh quadrature.

    g(x) = sw2d F(x) + sb2 - x > 0,  g'(x) = sw2d S(x) / x - 1 > 0  (S = q dF/dq)

    with x >= Q_ASYMPTOTIC and V'(inf) > 1: the same test the Newton loop applies to its
    first iterate, on the same exact moments (the table's nodes are :func:`moments1` at
    those q), so a diverging point needs no quadrature just past the tables (half a
    chaotic-side silu or gelu diagram; ~20 us each otherwise).  False when x is not that
    node or the test does not decide: the loop then runs as before.
    """
    n = table.q.shape[0]
    if n == 0 or x != table.q[n - 1] or not expands_at_infinity or x < Q_ASYMPTOTIC:
        return False
    g = sw2d * table.F[n - 1] + sb2 - x
    gp = sw2d * table.S[n - 1] / x - 1.0
    return g > 0.0 and gp > 0.0


@nb.njit(cache=True)
def solve_q(act, sw2d, sb2, q0, table):
    """Fixed point of the length map reached from q0.

    ``table`` is the activation's :class:`LengthTable` (empty arrays: none); when q0 is a
    table node it brackets the root, so Newton needs about two exact evaluations.

    Returns
    -------
    LengthFixedPoint
        ``q`` is ``inf`` with status NO_FIXED_POINT when the map grows without bound;
        ``moments`` are :func:`moments1` at ``q`` (NaN when it is not finite).
    """
    nan_m = Moments1(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    empty = np.empty(0)
    if act.family == CF_RELU or act.family == CF_LINEAR:
        return _linear_fixed_point(act, sw2d, sb2, q0)

    # lim E[phi(sqrt(q) z)^2]/q = (phi'(+inf)^2 + phi'(-inf)^2)/2 for linearly growing phi.
    v_slope_inf = 0.5 * (act.slope_pos * act.slope_pos + act.slope_neg * act.slope_neg)
    expands_at_infinity = sw2d * v_slope_inf > 1.0  # False when the slope is unknown (NaN)
    # A bounded phi (both asymptotic slopes 0) has V(q) <= sw2 sup phi^2 + sb2: a finite
    # fixed point always exists, however large.  Past Q_MAX it is solved where that is
    # cheap (closed forms; odd phi, whose chaotic c* the dual series gives) and otherwise
    # reported as out of range, since the 2-D rule's cost grows like q.
    bounded = act.slope_pos == 0.0 and act.slope_neg == 0.0
    affordable = act.family != CF_NONE or act.odd
    p0, _ = phi(act, 0.0)
    zero_is_fixed = (sw2d * p0 * p0 + sb2) == 0.0  # V(0) = 0
    vp0 = sw2d * dphi2_at_zero(act)  # V'(0+) when phi(0) = 0
    lo = 0.0
    hi = math.inf
    x = q0
    if table.q.shape[0] > 0:
        tlo, thi, x = _table_bracket(sw2d, sb2, q0, table)
        if tlo >= 0.0:
            lo = tlo
            hi = thi
        elif x < q0:
            hi = x  # the root lies below the table
        elif _diverges_at_node(table, x, sw2d, sb2, expands_at_infinity):
            return LengthFixedPoint(math.inf, NO_FIXED_POINT, 0, nan_m)
    prev_step = math.inf
    for it in range(MAXIT_Q):
        # The Chebyshev table where it is verified: no quadrature between the bracket's ends.
        m = lookup_moments(act, table, x)
        V = sw2d * m.phi2 + sb2
        if not math.isfinite(V):
            return LengthFixedPoint(math.nan, NONFINITE, it, nan_m)
        g = V - x
        if x > 0.0:
            gp = sw2d * m.phi2z / (2.0 * x) - 1.0
        else:
            gp = vp0 - 1.0
        if g == 0.0:
            # V(q) = q to rounding.  Near 0 with V(0) = 0 and V'(0) <= 1 this is the map
            # q - O(q^2) being indistinguishable from the identity: the fixed point is 0.
            if zero_is_fixed and x < 1e-8 * max(q0, 1.0) and vp0 <= 1.0:
                return LengthFixedPoint(0.0, OK, it, moments1(act, 0.0, empty, True))
            return LengthFixedPoint(x, OK, it, m)
        if g > 0.0:
            lo = x
        else:
            hi = x
        if zero_is_fixed and hi < Q_TINY:
            return LengthFixedPoint(0.0, OK, it, moments1(act, 0.0, empty, True))
        if g > 0.0 and x > Q_MAX and bounded and not affordable:
            return LengthFixedPoint(math.nan, Q_RANGE, it, nan_m)
        if g > 0.0 and ((x > Q_MAX and not bounded)
                        or (x >= Q_ASYMPTOTIC and gp > 0.0 and expands_at_infinity)):
            # Beyond Q_ASYMPTOTIC a linearly growing phi is in its asymptotic regime: with
            # V > q, V' > 1 and V'(inf) > 1 the iterates grow without bound.
            return LengthFixedPoint(math.inf, NO_FIXED_POINT, it, nan_m)
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
        size = abs(xn - x)
        # Converged when the step is at rounding level, or no longer shrinks once small
        # (g is then rounding noise amplified by 1/|V' - 1|).
        if size <= 4e-16 * x or (size >= prev_step and size <= 1e-12 * x):
            return LengthFixedPoint(x, OK, it, m)
        if size <= NEWTON_ACCEPT * x and x > 0.0 and lo < xn < hi:
            accepted, mn = _accept_newton(m, x, xn, sw2d, gp)
            if accepted:
                return LengthFixedPoint(xn, OK, it, mn)
        prev_step = size
        x = xn
    return LengthFixedPoint(x, Q_MAXITER, MAXIT_Q, nan_m)
