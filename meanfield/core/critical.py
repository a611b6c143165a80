"""The critical line chi_1 = 1 (the edge of chaos), solved and read off a grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import optimize

from . import engine
from . import validate as V
from .activation import get_activation
from .analysis import one_sided_dphi2_at_zero
from .activation import activation_attrs
from .functions import CF_LINEAR, CF_RELU
from .vocabulary import Q0, attrs

__all__ = ["CriticalPoint", "Crossing", "critical_point", "critical_sw2", "critical_line",
           "crossing_along", "critical_line_from_data"]


# The scan that finds every crossing of chi_1 = 1: 16 points per doubling of sw2 from
# SW2_MIN to sw2_max.  Two crossings closer than ~4 % in sw2 could hide between nodes.
SCAN_PER_OCTAVE = 16
SW2_MIN = 1e-3
# A root of chi_1 - 1 is a crossing (not a jump of chi_1 across 1) when chi_1 - 1 stays
# below JUMP_CHI a relative step JUMP_STEP to either side; a jump moves chi_1 by O(1)
# however small the step.  (q* itself may leave 0 continuously but steeply, like
# 1/log(1/(sw2 - 1)) for hard_tanh at sb2 = 0, so only chi_1 is tested.)
JUMP_STEP = 1e-9
JUMP_CHI = 1e-6
# Approaching the sw2 where q* diverges: its place is bisected to EDGE_RTOL, then nodes
# at relative distances 2^-k of the last cell, k <= EDGE_STEPS, are scanned while q* stays
# below EDGE_Q_MAX (critical points of GELU and SiLU have q* ~ 10-1000; the quadrature
# cost grows like sqrt(q), and beyond 1e6 a crossing would need sb2 > 1e3).
EDGE_RTOL = 1e-7
EDGE_STEPS = 24
EDGE_Q_MAX = 1e6


@dataclass(frozen=True)
class Crossing:
    """A point where chi_1(sw2) = 1 at fixed sb2.

    Attributes
    ----------
    sw2 : float
        Weight variance where chi_1 = 1 (Brent, to the resolution of chi_1).
    direction : str
        ``"up"`` (ordered for smaller sw2, chaotic for larger) or ``"down"``.
    q_star : float
        The length fixed point there (``inf`` for the ReLU family at sb2 > 0).
    """

    sw2: float
    direction: str
    q_star: float


@dataclass(frozen=True)
class CriticalPoint:
    """The edge of chaos at one sigma_b^2, and everything the search found.

    Attributes
    ----------
    activation : str
        Name of the activation.
    sb2 : float
        The bias variance searched.
    sw2 : float
        The critical weight variance: the first crossing of chi_1 = 1 from below as sw2
        grows, with finite q* on the branch reached from q0.  NaN when there is none.
    q_star : float
        q* at ``sw2`` (NaN when there is no critical point).
    crossings : tuple of Crossing
        Every crossing found in (SW2_MIN, sw2_max], in order of sw2.
    reason : str
        Why ``sw2`` is NaN (empty when it is not); also notes when q* is infinite there.
    """

    activation: str
    sb2: float
    sw2: float
    q_star: float
    crossings: tuple
    reason: str


class _Diverges(Exception):
    """The length map has no finite fixed point inside a root-finding bracket."""


def _homogeneous_point(act, sb2):
    """ReLU family and linear: chi_1 = sw2 (1 + a^2)/2 (or sw2) does not depend on q*."""
    sw2 = 1.0 if act.closed_form == CF_LINEAR else 2.0 / (1.0 + act.params[0] ** 2)
    q, _ = engine.chi1(act, sw2, sb2)
    note = ("" if np.isfinite(q) else
            f"chi_1 does not depend on q* for {act.name}; q* is infinite at this point for "
            f"sb2 > 0 (the lengths grow without bound)")
    return CriticalPoint(act.name, sb2, sw2, q, (Crossing(sw2, "up", q),), note)


def _refine(act, sb2, q0, a, b, fa):
    """A root of chi_1 - 1 in [a, b] (Brent), or None when q* diverges inside."""
    def f(x):
        q, chi = engine.chi1(act, x, sb2, q0)
        if not (np.isfinite(q) and np.isfinite(chi)):
            raise _Diverges
        return chi - 1.0

    try:
        return optimize.brentq(f, a, b, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)
    except _Diverges:
        return None


def _is_crossing(act, sb2, q0, root):
    """A crossing has chi_1 continuous through the root (with finite q*); a jump does not."""
    d = JUMP_STEP * root
    ql, cl = engine.chi1(act, root - d, sb2, q0)
    qr, cr = engine.chi1(act, root + d, sb2, q0)
    if not all(np.isfinite(v) for v in (ql, cl, qr, cr)):
        return False
    return max(abs(cl - 1.0), abs(cr - 1.0)) <= JUMP_CHI


def _edge_nodes(act, sb2, q0, a, b):
    """Nodes from a (finite q*) towards the point in (a, b] where q* stops being finite.

    That point is bracketed by bisection on finiteness, then approached geometrically so
    that a crossing of chi_1 = 1 just before q* diverges is not missed.  Returns arrays
    (sw2, q*, chi_1) of nodes with finite q*, in increasing distance from a.
    """
    lo, hi = a, b
    while hi - lo > EDGE_RTOL * hi:
        mid = 0.5 * (lo + hi)
        if np.isfinite(engine.chi1(act, mid, sb2, q0)[0]):
            lo = mid
        else:
            hi = mid
    xs, qs, cs = [], [], []
    for x in np.concatenate([[a], lo - (lo - a) * np.exp2(-np.arange(1, EDGE_STEPS + 1.0))]):
        q, chi = engine.chi1(act, x, sb2, q0)
        if not (np.isfinite(q) and np.isfinite(chi)) or q > EDGE_Q_MAX:
            break
        xs.append(x)
        qs.append(q)
        cs.append(chi)
    return np.array(xs), np.array(qs), np.array(cs)


def _q0_branch_edge(act, sb2, root):
    """With sb2 = 0 and phi(0) = 0 the ordered side has q* = 0 and chi_1 = sw2 phi'(0)^2
    exactly, while on the chaotic side chi_1 - 1 is only quadratic in the distance (tanh:
    q* ~ (sw2 - 1)/2 cancels the first order), so Brent's bracket cannot shrink below
    ~sqrt(eps).  The edge of the q* = 0 branch is exact: use it when it is the root."""
    if sb2 == 0.0 and float(act(0.0)) == 0.0:
        d2 = one_sided_dphi2_at_zero(act)
        if d2 != 0.0 and abs(root * d2 - 1.0) < 1e-6:
            return 1.0 / d2
    return root


def critical_point(activation, sb2, *, q0=Q0, sw2_max=1e4) -> CriticalPoint:
    """The edge of chaos at one sigma_b^2: every crossing of chi_1 = 1 and the critical one.

    chi_1(sw2) - 1 is scanned on a geometric grid (``SCAN_PER_OCTAVE`` points per doubling,
    from 1e-3 to ``sw2_max``) with q* re-solved at every node from ``q0``; every sign
    change between nodes with finite q* is refined with Brent's method to full double
    precision and kept if chi_1 and q* are continuous through it (a *crossing*), not if
    they jump (q* leaving one fixed point for another).  The critical point is the first
    crossing from chi_1 < 1 to chi_1 > 1 (docs/theory.md, "Correlation map").

    There is none -- ``sw2`` is NaN and ``reason`` says why -- when chi_1 stays below 1,
    jumps across it, or reaches 1 only where q* diverges (GELU and SiLU at small sb2 > 0:
    the fixed point reached from q0 leaves for infinity before chi_1 reaches 1, a
    discontinuous transition with no edge of chaos).  The ReLU family and linear have
    chi_1 independent of q*: their critical point is 2/(1 + a^2) (resp. 1) at every sb2,
    with q* infinite there when sb2 > 0 (noted in ``reason``).
    """
    act = get_activation(activation)
    sb2 = V.variance("sb2", sb2)
    q0 = V.scalar("q0", q0, minimum=0.0)
    sw2_max = V.scalar("sw2_max", sw2_max, minimum=SW2_MIN, inclusive=False)
    if act.closed_form in (CF_RELU, CF_LINEAR):
        return _homogeneous_point(act, sb2)
    n = int(np.ceil(np.log2(sw2_max / SW2_MIN) * SCAN_PER_OCTAVE)) + 1
    grid = np.geomspace(SW2_MIN, sw2_max, n)
    q, chi = engine.chi1_along(act, grid, sb2, q0)
    f = chi - 1.0
    finite = np.isfinite(q) & np.isfinite(f)
    crossings, jumps = [], []
    for i in range(n - 1):
        if finite[i] and not finite[i + 1] and f[i] < 0:
            # q* diverges inside while chi_1 < 1: an edge of chaos may lie just before the
            # divergence, so scan up to it on geometrically finer nodes.
            x, _, c = _edge_nodes(act, sb2, q0, grid[i], grid[i + 1])
            pairs = [(x[k], x[k + 1], c[k] - 1.0, c[k + 1] - 1.0) for k in range(x.size - 1)]
        elif finite[i] and finite[i + 1]:
            pairs = [(grid[i], grid[i + 1], f[i], f[i + 1])]
        else:
            continue
        for a, b, fa, fb in pairs:
            if (fa < 0) == (fb < 0):
                continue
            root = _refine(act, sb2, q0, a, b, fa)
            if root is None:
                continue
            if _is_crossing(act, sb2, q0, root):
                root = _q0_branch_edge(act, sb2, root)
                crossings.append(Crossing(root, "up" if fa < 0 else "down",
                                          engine.chi1(act, root, sb2, q0)[0]))
            else:
                jumps.append(root)
    up = [c for c in crossings if c.direction == "up"]
    if up:
        return CriticalPoint(act.name, sb2, up[0].sw2, up[0].q_star, tuple(crossings), "")
    return CriticalPoint(act.name, sb2, math.nan, math.nan, tuple(crossings),
                         _no_edge_reason(grid, q, f, finite, jumps, sb2, sw2_max))


def _no_edge_reason(grid, q, f, finite, jumps, sb2, sw2_max):
    diverging = np.flatnonzero(finite[:-1] & np.isinf(q[1:]))
    if diverging.size:
        at = grid[diverging[0] + 1]
        return (f"no edge of chaos at sb2 = {sb2:g}: the length map diverges (q* = inf) from "
                f"sw2 ~ {at:.6g}, before chi_1 reaches 1 with a finite q*")
    if jumps:
        return (f"no edge of chaos at sb2 = {sb2:g}: chi_1 jumps across 1 at sw2 = "
                f"{jumps[0]:.12g}, where q* jumps between fixed points")
    if np.all(f[finite] < 0) and finite.all():
        return f"no edge of chaos at sb2 = {sb2:g}: chi_1 stays below 1 for sw2 up to {sw2_max:g}"
    bad = np.flatnonzero(~finite)
    if bad.size:
        return (f"no edge of chaos found at sb2 = {sb2:g}: chi_1 could not be computed from "
                f"sw2 ~ {grid[bad[0]]:.6g} on")
    return f"no edge of chaos at sb2 = {sb2:g}: chi_1 - 1 does not change sign from below"


def critical_sw2(activation, sb2, *, q0=Q0, sw2_max=1e4) -> float:
    """sigma_w^2 on the critical line chi_1 = 1 at the given sigma_b^2 (NaN if none).

    The critical weight variance of :func:`critical_point` (which also gives every
    crossing and, for NaN, the reason), to full double precision.
    """
    return critical_point(activation, sb2, q0=q0, sw2_max=sw2_max).sw2


def critical_line(activation, sb2, *, q0=Q0) -> xr.DataArray:
    """The critical line sw2(sb2) with chi_1 = 1, as a DataArray over ``sb2``.

    NaN where there is no edge of chaos; the coordinate ``reason`` (one string per sb2)
    says why (see :func:`critical_point`).
    """
    act = get_activation(activation)
    sb = V.variance_array("sb2", sb2)
    points = [critical_point(act, s, q0=q0) for s in sb]
    meta = activation_attrs(act)
    del meta["activation_formula"]
    return xr.DataArray(np.array([p.sw2 for p in points]), dims=("sb2",),
                        coords={"sb2": ("sb2", sb, attrs("sb2")),
                                "reason": ("sb2", np.array([p.reason for p in points], dtype=object),
                                           {"long_name": "why there is no critical point "
                                                         "(empty where there is one)"})},
                        name="sw2_critical",
                        attrs={"long_name": "critical weight variance (chi_1 = 1)", "units": "1",
                               **meta})


def crossing_along(x, chi1, axis=-1):
    """Where log chi_1 first crosses 0 from below along ``axis``: linear interpolation in
    log chi_1 between the neighbouring grid points (NaN where there is no crossing).

    ``chi1`` may hold NaN (or non-positive values) at points to ignore.
    """
    y = np.moveaxis(np.asarray(chi1, dtype=np.float64), axis, -1)
    ok = np.isfinite(y) & (y > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.where(ok, np.log(np.where(ok, y, 1.0)), np.nan)
    lo, hi = ly[..., :-1], ly[..., 1:]
    cross = (lo < 0) & (hi >= 0)
    first = np.argmax(cross, axis=-1)  # index of the first crossing
    has = np.take_along_axis(cross, first[..., None], axis=-1)[..., 0]
    l0 = np.take_along_axis(lo, first[..., None], axis=-1)[..., 0]
    l1 = np.take_along_axis(hi, first[..., None], axis=-1)[..., 0]
    x = np.asarray(x, dtype=np.float64)
    x0, x1 = x[first], x[np.minimum(first + 1, x.size - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(has, x0 + (0.0 - l0) * (x1 - x0) / (l1 - l0), np.nan)


def critical_line_from_data(ds: xr.Dataset, mask=None) -> xr.DataArray:
    """The critical line read off a computed grid: per sb2, the sw2 where chi_1 crosses 1.

    Along sw2, finds the first pair of neighbouring points with log chi_1 < 0 <= log chi_1
    (ordered to chaotic) and interpolates log chi_1 linearly in sw2 between them
    (:func:`crossing_along`).  Points outside ``mask`` (e.g. chunks not yet computed) or
    with non-finite chi_1 are ignored; NaN where no crossing is found.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep or :func:`meanfield.phase_diagram` dataset (needs ``chi1`` over ``sw2``).
    mask : array_like of bool, optional
        Same shape as ``ds.chi1``: which points to trust.

    Returns
    -------
    xarray.DataArray
        ``sw2_critical`` over the dims of ``chi1`` without ``sw2``.
    """
    chi = ds["chi1"].transpose(..., "sb2", "sw2")
    y = np.asarray(chi.values, dtype=np.float64)
    if mask is not None:
        m = xr.DataArray(np.asarray(mask, dtype=bool), dims=ds["chi1"].dims)
        y = np.where(m.transpose(*chi.dims).values, y, np.nan)
    xc = crossing_along(ds["sw2"].values, y, axis=-1)
    dims = tuple(d for d in chi.dims if d != "sw2")
    coords = {k: v for k, v in ds.coords.items() if set(v.dims) <= set(dims)}
    return xr.DataArray(xc, dims=dims, coords=coords, name="sw2_critical",
                        attrs={"long_name": "critical weight variance (chi_1 = 1), interpolated "
                                            "in log chi_1 along sw2", "units": "1"})
