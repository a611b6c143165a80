"""The critical line chi_1 = 1 (the edge of chaos), solved and read off a grid."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from scipy import optimize

from . import engine
from . import validate as V
from .activation import get_activation
from .analysis import one_sided_dphi2_at_zero
from .activation import activation_attrs
from .vocabulary import Q0, attrs

__all__ = ["critical_sw2", "critical_line", "crossing_along", "critical_line_from_data"]


def _chi1_minus_one(act, sb2, q0):
    return lambda x: engine.chi1(act, x, sb2, q0) - 1.0


def critical_sw2(activation, sb2, *, q0=Q0, sw2_max=1e4) -> float:
    """sigma_w^2 on the critical line chi_1 = 1 at the given sigma_b^2.

    Brent's method on chi_1(sw2) - 1 with q* re-solved at every step, to full double
    precision (xtol 1e-15).  The bracket is found by doubling from the first sw2 at which
    chi_1 < 1.  For the ReLU family chi_1 = sw2 (1 + a^2)/2 does not depend on q*, so
    the answer is 2/(1 + a^2) for every sb2 (though for sb2 > 0 q* is infinite there).

    Returns NaN if chi_1 never equals 1 for sw2 in (0, sw2_max]: it stays on one side (e.g.
    sigmoid at large sb2), is NaN inside the bracket, or jumps across 1 because q* jumps
    there (gelu and silu at small sb2 > 0: the fixed point reached from q0 leaves a finite
    branch for q* = inf, a discontinuous transition with no edge of chaos).
    """
    act = get_activation(activation)
    sb2 = V.variance("sb2", sb2)
    q0 = V.scalar("q0", q0, minimum=0.0)
    f = _chi1_minus_one(act, sb2, q0)
    lo = 1e-3
    flo = f(lo)
    if not (flo < 0):
        return math.nan
    hi = lo
    while True:
        hi *= 2.0
        fhi = f(hi)
        if fhi >= 0 or hi > sw2_max:
            break
        lo, flo = hi, fhi
    if not fhi >= 0:
        return math.nan
    if fhi == 0.0:
        return hi
    try:
        root = optimize.brentq(f, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)
    except ValueError:  # brentq refuses a NaN chi_1 met inside the bracket
        return math.nan
    # Brent also converges onto a jump of chi_1 across 1; a crossing has chi_1 - 1 at the
    # rounding level next to the root (chi_1 is at worst quadratic there), a jump does not.
    d = 1e-9 * root
    if min(abs(f(root - d)), abs(f(root + d))) > 1e-6:
        return math.nan
    # With sb2 = 0 and phi(0) = 0 the ordered side has q* = 0 and chi_1 = sw2 phi'(0)^2
    # exactly, while on the chaotic side chi_1 - 1 is only quadratic in the distance
    # (tanh: q* ~ (sw2 - 1)/2 cancels the first order), so Brent's bracket cannot shrink
    # below ~sqrt(eps).  The edge of the q* = 0 branch is exact: use it when it is the root.
    if sb2 == 0.0 and float(act(0.0)) == 0.0:
        d2 = one_sided_dphi2_at_zero(act)
        if d2 != 0.0 and abs(root * d2 - 1.0) < 1e-6:
            return 1.0 / d2
    return root


def critical_line(activation, sb2, *, q0=Q0) -> xr.DataArray:
    """The critical line sw2(sb2) with chi_1 = 1, as a DataArray over ``sb2``."""
    act = get_activation(activation)
    sb = V.variance_array("sb2", sb2)
    vals = np.array([critical_sw2(act, s, q0=q0) for s in sb])
    meta = activation_attrs(act)
    del meta["activation_formula"]
    return xr.DataArray(vals, dims=("sb2",), coords={"sb2": ("sb2", sb, attrs("sb2"))},
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
