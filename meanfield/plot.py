"""Matplotlib figures of mean-field datasets.  Functions return the Figure and never show it."""

from __future__ import annotations

import numpy as np

_LABELS = {
    "sw2": r"$\sigma_w^2$",
    "sb2": r"$\sigma_b^2$",
    "chi1": r"$\chi_1$",
    "chi_c": r"$\chi_c$",
    "q_star": r"$q^*$",
    "c_star": r"$c^*$",
    "xi_q": r"$\xi_q$ (layers)",
    "xi_c": r"$\xi_c$ (layers)",
    "xi_grad": r"$\xi_\nabla$ (layers)",
    "max_depth": r"max trainable depth (layers)",
}


def phase_diagram(ds, var="chi1", *, ax=None, depth_levels=(10, 50, 200), cmap=None):
    """Heatmap of ``var`` over (sw2, sb2) with the critical line and max-depth contours.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`meanfield.phase_diagram` or a stored sweep (2-D in sw2, sb2).
    var : str
        Variable to colour by.  chi1 uses a diverging map centred on chi_1 = 1 (log scale).
    ax : matplotlib Axes, optional
    depth_levels : sequence of float
        Contours of ``max_depth`` to draw (predicted trainable depth, Schoenholz et al. 2017).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    if var not in ds:
        raise ValueError(f"var: {var!r} is not in the dataset; choose one of {', '.join(ds.data_vars)}")
    missing = {"sw2", "sb2"} - set(ds[var].dims)
    if missing or ds[var].ndim != 2:
        raise ValueError(f"var: {var!r} must be 2-D over (sw2, sb2), got dims {ds[var].dims}")
    da = ds[var].transpose("sb2", "sw2")
    x = ds["sw2"].values
    y = ds["sb2"].values
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
    else:
        fig = ax.figure
    values = np.asarray(da.values, dtype=float)
    if var == "chi1":
        finite = values[np.isfinite(values) & (values > 0)]
        lo = float(finite.min()) if finite.size else 0.1
        hi = float(finite.max()) if finite.size else 10.0
        lo, hi = min(lo, 0.999), max(hi, 1.001)
        norm = mcolors.TwoSlopeNorm(vmin=np.log10(lo), vcenter=0.0, vmax=np.log10(hi))
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.log10(values)
        mesh = ax.pcolormesh(x, y, shown, shading="auto", cmap=cmap or "RdBu_r", norm=norm)
        cbar = fig.colorbar(mesh, ax=ax)
        cbar.set_label(r"$\log_{10}\chi_1$")
    else:
        mesh = ax.pcolormesh(x, y, values, shading="auto", cmap=cmap or "viridis")
        cbar = fig.colorbar(mesh, ax=ax)
        cbar.set_label(_LABELS.get(var, var))
    if "chi1" in ds and len(x) > 1 and len(y) > 1:
        chi = np.asarray(ds["chi1"].transpose("sb2", "sw2").values, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            lchi = np.log(chi)
        if np.nanmin(lchi) < 0 < np.nanmax(lchi):
            cs = ax.contour(x, y, lchi, levels=[0.0], colors="k", linewidths=2)
            ax.plot([], [], "k-", lw=2, label=r"critical line $\chi_1 = 1$")
        _label_phases(ax, x, y, lchi)
    if "max_depth" in ds and depth_levels and len(x) > 1 and len(y) > 1:
        depth = np.asarray(ds["max_depth"].transpose("sb2", "sw2").values, dtype=float)
        levels = sorted(float(v) for v in depth_levels)
        if np.nanmax(np.where(np.isfinite(depth), depth, np.nan)) > levels[0]:
            cs = ax.contour(x, y, np.where(np.isfinite(depth), depth, 1e30), levels=levels,
                            colors="0.25", linewidths=0.9, linestyles="--")
            ax.clabel(cs, fmt=lambda v: f"L={v:g}", fontsize=8)
            ax.plot([], [], "--", color="0.25", lw=0.9, label=r"max depth $6\xi_c$ = L")
    ax.set_xlabel(_LABELS["sw2"] + " (weight variance)")
    ax.set_ylabel(_LABELS["sb2"] + " (bias variance)")
    act = ds.attrs.get("activation", "")
    ax.set_title(f"{act} phase diagram" if act else "phase diagram")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    return fig


def _label_phases(ax, x, y, lchi):
    """Write 'ordered' / 'chaotic' at the centre of mass of each region."""
    X, Y = np.meshgrid(x, y)
    for mask, text in ((lchi < 0, "ordered"), (lchi > 0, "chaotic")):
        if mask.sum() > 0.05 * mask.size:
            ax.text(float(np.median(X[mask])), float(np.median(Y[mask])), text, ha="center",
                    va="center", fontsize=12, weight="bold", color="0.1",
                    bbox=dict(boxstyle="round", fc="white", alpha=0.7, lw=0))
