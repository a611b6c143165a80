"""Every mean-field quantity at one point, and over arrays of points, in Numba.

:func:`analyze_point` chains the length map (:mod:`.length_map`), chi_1, the correlation
map (:mod:`.correlation_map`) and the depth scales (docs/theory.md, "Depth scales")::

    chi_1 = sw2 E[phi'(sqrt(q*) z)^2],   xi_q = -1/log V'(q*),   xi_grad = -1/log chi_1,
    xi_c  = -1/log chi_c,                 max_depth = depth_constant * xi_c

and writes them into one output row (indices ``I_*``).  The grid loops call it per
point; each point depends only on its own inputs, so results do not depend on how a grid
is split (chunking, threads) bit for bit.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np

from .correlation_map import N_HERMITE, DualSeries, solve_c
from .functions import CF_NONE, CF_RELU, kink_at_zero
from .gaussian.moments import moments1
from .length_map import solve_q
from .near_one import relu_like
from .moment_table import (N_HERMITE_EXT, SUM_FLOOR, SUM_TOL, TABLE_TAIL_ROUNDING,
                           lookup_hermite, lookup_moments, lookup_tail_sums)
from .vocabulary import Phase, Status

OK = int(Status.OK)
NO_FIXED_POINT = int(Status.NO_FIXED_POINT)
NONFINITE = int(Status.NONFINITE)
C_UNDEFINED = int(Status.C_UNDEFINED)
C_UNSTABLE = int(Status.C_UNSTABLE)
PHASE_UNDETERMINED = int(Phase.UNDETERMINED)
PHASE_ORDERED = int(Phase.ORDERED)
PHASE_CRITICAL = int(Phase.CRITICAL)
PHASE_CHAOTIC = int(Phase.CHAOTIC)
PHASE_UNBOUNDED = int(Phase.UNBOUNDED)

# Indices of the point-result row.
I_Q, I_C, I_CHI1, I_CHIC, I_XIQ, I_XIC, I_XIG, I_DEPTH, I_PHASE, I_STATUS, I_VP, I_CHIG = range(12)
N_OUT = 12

# Relative uncertainty of a tail mass computed as E[phi^2] - sum_{n<N} a_n^2: both sides
# are accurate to ~1e-16 relative, their difference to a few times that.
TAIL_ROUNDING = 1e-15
# chi_1 this close above 1 counts as 1 for the correlation map (see analyze_point).
CHI1_RESOLUTION = 1e-12

Settings = namedtuple("Settings", ["rho", "q0", "depth_constant", "critical_tol"])
Settings.__doc__ = """Options shared by every point of a diagram (see :func:`meanfield.analyze`)."""


@nb.njit(cache=True)
def depth_scale(x):
    """Depth scale -1/log(x) for a slope x >= 0 (0 -> 0, 1 -> inf)."""
    if x == 1.0:
        return math.inf
    if x == 0.0:
        return 0.0
    return -1.0 / math.log(x)


@nb.njit(cache=True)
def classify(chi1, critical_tol):
    """Phase code from chi_1: critical within |log chi_1| <= critical_tol."""
    lc = math.log(chi1) if chi1 > 0.0 else -math.inf
    if lc < -critical_tol:
        return PHASE_ORDERED
    if lc > critical_tol:
        return PHASE_CHAOTIC
    return PHASE_CRITICAL


@nb.njit(cache=True)
def _unbounded(act, sw2, sw2d, out):
    """Row of a point whose length map has no finite fixed point: phase UNBOUNDED, and
    chi_1 its q -> inf limit from phi's asymptotic slopes (NaN when they are unknown)."""
    e_dphi2_inf = 0.5 * (act.slope_pos * act.slope_pos + act.slope_neg * act.slope_neg)
    out[I_CHI1] = sw2 * e_dphi2_inf
    out[I_CHIG] = sw2d * e_dphi2_inf
    out[I_XIG] = depth_scale(sw2d * e_dphi2_inf)
    out[I_PHASE] = PHASE_UNBOUNDED


@nb.njit(cache=True)
def _tighter_tails(table, q, F, qg, tail, tail1, tail_lo):
    """The tail bounds (tail, tail1, tail_lo) of the table's N_HERMITE_TABLE-term series,
    tightened by the tabulated tail sums where q lies in their verified cells.

    The tail is sum_{N<=n<N_EXT} a_n^2 (S0, a sum of positive terms known to
    SUM_TOL (S0 + SUM_FLOOR F)) plus the tail past N_EXT, at most min(t0x, t1x / N_EXT) up to
    rounding; likewise tail1 with S1.  Where the two descriptions of the same tail do not
    overlap, a table is wrong somewhere and the difference bounds are kept unchanged.
    """
    s0, s1, x0, x1 = lookup_tail_sums(table, q)
    if not (math.isfinite(s0) and math.isfinite(s1) and math.isfinite(x0)
            and math.isfinite(x1)):
        return tail, tail1, tail_lo
    d0 = SUM_TOL * (abs(s0) + SUM_FLOOR * F)
    d1 = SUM_TOL * (abs(s1) + SUM_FLOOR * qg)
    past1 = max(x1, 0.0) + TABLE_TAIL_ROUNDING * qg
    past = min(max(x0, 0.0) + TABLE_TAIL_ROUNDING * F, past1 / N_HERMITE_EXT)
    hi = s0 + d0 + past
    lo = max(s0 - d0, 0.0)
    hi1 = s1 + d1 + past1
    if not (lo <= tail and tail_lo <= hi):
        return tail, tail1, tail_lo
    return min(tail, hi), min(tail1, hi1), max(tail_lo, lo)


@nb.njit(cache=True)
def _dual_series(act, table, q, F, dphi2):
    """Hermite coefficients of phi(sqrt(q) z) and their exact tail masses.

    From the activation's moment table where it has verified Hermite cells (N_HERMITE_TABLE
    terms, no quadrature), else by quadrature (N_HERMITE terms).
    """
    if act.family != CF_NONE:
        return DualSeries(np.zeros(0), 0.0, 0.0, 0.0)
    herm, t0, t1 = lookup_hermite(table, q)
    if herm.shape[0] > 0:
        # Tabulated tails are known to TABLE_TAIL_ROUNDING of the whole (moment_table).
        qg = q * dphi2
        tail = max(t0, 0.0) + TABLE_TAIL_ROUNDING * F
        tail1 = max(t1, 0.0) + TABLE_TAIL_ROUNDING * qg
        tail_lo = max(t0 - TABLE_TAIL_ROUNDING * F, 0.0)
        tail, tail1, tail_lo = _tighter_tails(table, q, F, qg, tail, tail1, tail_lo)
        return DualSeries(herm, tail, tail1, tail_lo)
    herm = np.zeros(N_HERMITE)
    moments1(act, q, herm, True)
    s0 = 0.0
    s1 = 0.0
    for n in range(herm.shape[0]):
        s0 += herm[n] * herm[n]
        s1 += n * herm[n] * herm[n]
    # The tails are differences of two sums accurate to rounding: they are known only up
    # to a few ulps of the whole, so the bound keeps that much (a tail computed as 0 by
    # cancellation would otherwise "prove" a truncated series exact near c = 1).
    tail = max(F - s0, 0.0) + TAIL_ROUNDING * F
    tail1 = max(q * dphi2 - s1, 0.0) + TAIL_ROUNDING * q * dphi2  # sum n a_n^2 = q E[phi'^2]
    return DualSeries(herm, tail, tail1, max(F - s0 - TAIL_ROUNDING * F, 0.0))


@nb.njit(cache=True)
def analyze_point(act, table, sw2, sb2, settings, out):
    """Every mean-field quantity at one (sw2, sb2); fills ``out`` (length N_OUT)."""
    for i in range(N_OUT):
        out[i] = math.nan
    rho = settings.rho
    sw2d = sw2 / rho
    fp = solve_q(act, sw2d, sb2, settings.q0, table)
    q = fp.q
    m = fp.moments
    out[I_Q] = q
    out[I_STATUS] = fp.status
    out[I_PHASE] = PHASE_UNDETERMINED
    if fp.status == NO_FIXED_POINT:
        _unbounded(act, sw2, sw2d, out)
        return
    if fp.status != OK:
        return

    if q > 0.0:
        vprime = sw2d * m.phi2z / (2.0 * q)
    else:
        vprime = sw2d * m.dphi2  # phi(0) = 0 here, so V'(0+) = sw2d lim E[phi'^2] (m is that limit)
    chi1 = sw2 * m.dphi2
    chig = sw2d * m.dphi2
    out[I_VP] = vprime
    out[I_CHI1] = chi1
    out[I_CHIG] = chig
    out[I_XIQ] = depth_scale(abs(vprime))
    out[I_XIG] = depth_scale(chig)
    if not math.isfinite(chi1):
        out[I_STATUS] = NONFINITE
        return
    out[I_PHASE] = classify(chi1, settings.critical_tol)

    if rho == 1.0 and (chi1 <= 1.0 + CHI1_RESOLUTION or q == 0.0):
        # c = 1 is the stable fixed point (ordered side, or the critical line itself: within
        # CHI1_RESOLUTION of 1 the fixed point below c = 1 would sit at 1 - c ~ 1e-12, at
        # the rounding level of C(c), where no solver can separate it from c = 1).
        out[I_C] = 1.0
        out[I_CHIC] = chi1
        # chi_1 within CHI1_RESOLUTION above 1 counts as 1 here too: xi_c is infinite, not a
        # huge negative number from one ulp of rounding.
        xic = depth_scale(min(chi1, 1.0))
    elif q == 0.0:
        # Dropout with q* = 0 (sb2 = 0, phi(0) = 0): lengths vanish and c = q_ab / q is a
        # 0/0 limit.  Linearizing a phi that is smooth at 0 gives c^{l+1} = rho c^l exactly,
        # so c* = 0 and chi_c = rho; with a kink at 0 there is no such limit to report.
        if act.family == CF_RELU or kink_at_zero(act):
            out[I_STATUS] = C_UNDEFINED
            return
        out[I_C] = 0.0
        out[I_CHIC] = rho
        xic = depth_scale(rho)
    else:
        # The dual-activation coefficients are needed only here, so ordered points skip them;
        # so do ReLU-like points past the Hermite table, whose c* ~ 1 - O(1/q) no 24-term
        # series proves (solve_c starts those from the map's curvature instead).
        if relu_like(act, q, rho) and act.kinks.shape[0] == 0:
            series = DualSeries(np.zeros(0), 0.0, 0.0, 0.0)
        else:
            series = _dual_series(act, table, q, m.phi2, m.dphi2)
        # E phi' at q itself (m may carry the length solve's last moments to q to first
        # order, which leaves E phi' one Newton step behind): c* = 0 needs only it.
        dphi = lookup_moments(act, table, q).dphi if (act.odd and sb2 == 0.0) else math.nan
        cf = solve_c(act, sw2, sb2, rho, q, m.phi2, series, table, m.dphi2, dphi)
        if cf.status != OK:
            out[I_C] = cf.c
            out[I_CHIC] = cf.chi_c
            out[I_STATUS] = cf.status
            return
        if not (0.0 <= cf.chi_c < 1.0):
            # A stable fixed point below c = 1 has 0 <= chi_c < 1 (C is convex and
            # increasing on [0, 1]); anything else is a failure, never a depth scale.
            out[I_STATUS] = C_UNSTABLE
            return
        out[I_C] = cf.c
        out[I_CHIC] = cf.chi_c
        xic = depth_scale(cf.chi_c)
    out[I_XIC] = xic
    out[I_DEPTH] = settings.depth_constant * xic


# Points per block of :func:`analyze_blocks`: big enough that threads never write to the same
# cache line of ``out``, small enough that a grid's expensive points (chaotic, near-critical,
# sitting together at large sw2) are dealt out evenly across threads.
BLOCK = 64


@nb.njit(cache=True, nogil=True)
def analyze_blocks(act, table, sw2, sb2, settings, out, first, step):
    """analyze_point over flat arrays sw2, sb2 (same length; out has shape (n, N_OUT)) in
    blocks of BLOCK points: the blocks first, first + step, first + 2 step, ...

    Releases the GIL, so ``step`` threads with ``first = 0 .. step - 1`` share a grid
    (:func:`meanfield.core.engine.compute_points`); each writes only its own rows.  Plain
    threads instead of ``prange`` because a parallel loop around this call tree costs
    about a fifth more compile time on the first call, and its idle worker threads spin.
    """
    n = sw2.shape[0]
    for b in range(first, (n + BLOCK - 1) // BLOCK, step):
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            analyze_point(act, table, sw2[i], sb2[i], settings, out[i])


@nb.njit(cache=True)
def chi1_at(act, table, sw2, sb2, q0):
    """(q*, chi_1 = sw2 E[phi'(sqrt(q*) z)^2]) as a function of sw2 (for the critical line).

    Where the length map has no finite fixed point q* is inf and chi_1 its q -> inf limit
    (NaN when phi's asymptotic slopes are unknown); NaN both when a solver fails.
    """
    fp = solve_q(act, sw2, sb2, q0, table)
    if fp.status == NO_FIXED_POINT:
        e_dphi2_inf = 0.5 * (act.slope_pos * act.slope_pos + act.slope_neg * act.slope_neg)
        return math.inf, sw2 * e_dphi2_inf
    if fp.status != OK:
        return math.nan, math.nan
    return fp.q, sw2 * fp.moments.dphi2


@nb.njit(cache=True)
def chi1_scan(act, table, sw2, sb2, q0, q_out, chi_out):
    """:func:`chi1_at` at every element of the array ``sw2``."""
    for i in range(sw2.shape[0]):
        q_out[i], chi_out[i] = chi1_at(act, table, sw2[i], sb2, q0)
