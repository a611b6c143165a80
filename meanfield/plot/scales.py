"""Depth scales xi_q, xi_c, xi_grad against sigma_w^2 at one sigma_b^2 (Schoenholz et al. 2017)."""

from __future__ import annotations

import math

import numpy as np

from ..core.critical import critical_sw2, crossing_along
from ..core.activation import activation_from_attrs
from .style import AXIS, LOG_VMAX, PALETTE, new_axes

def _critical_sw2_exact(ds, sb2, sw2):
    """mf.critical_sw2 for the dataset's activation (from its attributes), if inside the
    grid's sw2 range; None when the activation cannot be rebuilt or has no crossing there."""
    if float(ds.attrs.get("rho", 1.0)) != 1.0:
        return None
    try:
        sc = critical_sw2(activation_from_attrs(ds.attrs), sb2)
    except (ValueError, TypeError):  # e.g. a custom activation not registered in this session
        return None
    return sc if math.isfinite(sc) and sw2[0] <= sc <= sw2[-1] else None


def _critical_sw2_from_grid(sw2, chi1):
    """sw2 where chi_1 first crosses 1 on the grid (interpolated in log chi_1), or None."""
    xc = float(crossing_along(sw2, chi1))
    return xc if math.isfinite(xc) else None


def depth_scales(ds, *, sb2=None, ax=None):
    """xi_q, xi_c and |xi_grad| against sw2 at one sb2: xi_c diverges at the critical point.

    Parameters
    ----------
    ds : xarray.Dataset
        A phase diagram (:func:`meanfield.phase_diagram`, a sweep, a netCDF file) with
        variables xi_q, xi_c, xi_grad, chi1 over (sw2, sb2); typically a single sb2 value.
    sb2 : float, optional
        The bias variance to draw (nearest grid value); required when ``ds`` has several.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    xi_grad = -1/log chi_1 is negative in the chaotic phase (gradients grow backwards over
    |xi_grad| layers, docs/theory.md): there it is drawn dotted as |xi_grad|.
    """
    for v in ("xi_q", "xi_c", "xi_grad", "chi1"):
        if v not in ds:
            raise ValueError(f"dataset has no {v!r}: depth_scales needs xi_q, xi_c, xi_grad and chi1 "
                             "(the output of meanfield.phase_diagram)")
        if set(ds[v].dims) != {"sw2", "sb2"}:
            raise ValueError(f"{v!r} must be over (sw2, sb2), got dims {ds[v].dims}")
    if sb2 is None:
        if ds.sizes["sb2"] != 1:
            raise ValueError(f"the dataset has {ds.sizes['sb2']} sb2 values; pass sb2= to choose one")
        sub = ds.isel(sb2=0)
    else:
        sub = ds.sel(sb2=float(sb2), method="nearest")
    b = float(sub["sb2"])
    x = np.asarray(sub["sw2"].values, dtype=float)
    fig, ax = new_axes(ax, figsize=(6.4, 4.6))
    chi = np.asarray(sub["chi1"].values, dtype=float)
    xi_q = np.asarray(sub["xi_q"].values, dtype=float)
    xi_c = np.asarray(sub["xi_c"].values, dtype=float)
    xi_g = np.asarray(sub["xi_grad"].values, dtype=float)

    def pos(a):
        return np.where(np.isfinite(a) & (a > 0), a, np.nan)

    ax.semilogy(x, pos(xi_c), color=PALETTE[0], lw=2, label=r"$\xi_c$ (correlations)")
    ax.semilogy(x, pos(xi_q), color=PALETTE[1], lw=2, label=r"$\xi_q$ (lengths)")
    ax.semilogy(x, pos(xi_g), color=PALETTE[2], lw=1.5, ls="--",
                label=r"$\xi_\nabla$ (gradients vanish; $= \xi_c$ when ordered)")
    ax.semilogy(x, pos(-xi_g), color=PALETTE[2], lw=1.5, ls=":",
                label=r"$|\xi_\nabla|$, $\xi_\nabla < 0$ (gradients explode)")
    sc = _critical_sw2_exact(sub, b, x)
    if sc is None:
        sc = _critical_sw2_from_grid(x, chi)
    if sc is not None:
        ax.axvline(sc, color="k", lw=1, ls="-.", label=rf"critical $\sigma_w^2$ $\approx$ {sc:.3g} ($\chi_1$ = 1)")
        ax.text(0.02, 0.04, "ordered", transform=ax.transAxes, ha="left", va="bottom", weight="bold")
        ax.text(0.98, 0.04, "chaotic", transform=ax.transAxes, ha="right", va="bottom", weight="bold")
    finite = np.concatenate([pos(xi_c), pos(xi_q), pos(np.abs(xi_g))])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        # The peak on a finite grid is set by how close a node falls to the critical point:
        # cap the axis so the shape of the divergence, not that accident, sets the scale.
        ax.set_ylim(max(finite.min() * 0.5, 1e-2), min(finite.max() * 2, LOG_VMAX))
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel(AXIS["sw2"])
    ax.set_ylabel(r"depth scale $\xi$ (layers)")
    act = sub.attrs.get("activation", "")
    ax.set_title(rf"{act} depth scales at $\sigma_b^2$ = {b:g}".strip())
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.85)
    return fig
