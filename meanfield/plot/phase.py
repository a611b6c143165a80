"""Phase diagrams: chi_1 (or any variable) over (sigma_w^2, sigma_b^2) with the critical line
and depth contours (Poole et al. 2016; Schoenholz et al. 2017, Fig. 1), faceted versions,
and the critical lines of several activations."""

from __future__ import annotations

import math

import numpy as np

from ..core.critical import critical_line
from ..core.vocabulary import DEPTH_CONSTANT, Phase
from .style import (AXIS, DIVERGING_CMAP, LABELS, LOG_VARS, LOG_VMAX, PALETTE, SEQUENTIAL_CMAP,
                    act_label, act_of, new_axes, plt, two_d, variances)

def phase_diagram(ds, var="chi1", *, ax=None, depth_levels=(10, 50, 200), cmap=None):
    """Heatmap of ``var`` over (sw2, sb2) with the critical line and max-depth contours.

    The critical line is the contour chi_1 = 1 (docs/theory.md, "Correlation map"); the dashed
    contours are the predicted maximum trainable depth depth_constant xi_c = L (Schoenholz et al. 2017).
    "ordered" (chi_1 < 1) and "chaotic" (chi_1 > 1) are written inside their regions.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`meanfield.phase_diagram` or a stored sweep / netCDF file, 2-D in
        (sw2, sb2) (select one activation or rho first, or use :func:`phase_diagram_facets`).
    var : str
        Variable to colour by.  ``chi1`` uses a diverging map centred on chi_1 = 1 (log
        scale, ticks in chi_1); xi_q, xi_c, max_depth and q_star a log scale; ``phase`` its
        CF flags; anything else a linear sequential map.
    ax : matplotlib Axes, optional
        Draw into this Axes (its figure gets the colour bar) instead of a new figure.
    depth_levels : sequence of float
        Contours of ``max_depth`` to draw (in layers).  Empty: none.
    cmap : str or Colormap, optional
        Override the colormap.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        ``var`` is not in the dataset or is not 2-D over (sw2, sb2).
    """
    values = two_d(ds, var)
    x = np.asarray(ds["sw2"].values, dtype=float)
    y = np.asarray(ds["sb2"].values, dtype=float)
    fig, ax = new_axes(ax)
    _colour_mesh(fig, ax, ds, var, x, y, values, cmap)
    rho = _dropout_rho(ds)
    lchi = None
    if "chi1" in ds and len(x) > 1 and len(y) > 1:
        chi = two_d(ds, "chi1")
        unbounded = _unbounded_mask(ds)
        if unbounded is not None and unbounded.any():
            # chi_1 there is the slope at q = inf: where it passes 1 the lengths diverge,
            # which is no edge of chaos, so the critical contour must not be drawn through it.
            chi = np.where(unbounded, np.nan, chi)
            _hatch_unbounded(ax, x, y, unbounded)
        lchi = _critical_contour(ax, x, y, chi, rho)
    if "max_depth" in ds and depth_levels and len(x) > 1 and len(y) > 1:
        _depth_contours(ax, x, y, two_d(ds, "max_depth"), depth_levels,
                        float(ds.attrs.get("depth_constant", DEPTH_CONSTANT)))
    if lchi is not None:
        _label_phases(ax, x, y, lchi)
    ax.set_xlabel(AXIS["sw2"])
    ax.set_ylabel(AXIS["sb2"])
    act = ds.attrs.get("activation", "")
    title = f"{act} phase diagram" if act else "phase diagram"
    if rho != 1.0:
        title += rf" (dropout $\rho$ = {rho:g})"
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    return fig


def _colour_mesh(fig, ax, ds, var, x, y, values, cmap):
    """The coloured map of ``var`` and its colour bar, scaled for the kind of variable."""
    import matplotlib.colors as mcolors
    from matplotlib.ticker import FuncFormatter, NullFormatter

    finite = np.isfinite(values)
    if var == "chi1":
        pos = values[finite & (values > 0)]
        lo = float(pos.min()) if pos.size else 0.1
        hi = float(pos.max()) if pos.size else 10.0
        lo, hi = min(lo, 0.999), max(hi, 1.001)
        norm = mcolors.TwoSlopeNorm(vmin=np.log10(lo), vcenter=0.0, vmax=np.log10(hi))
        with np.errstate(divide="ignore", invalid="ignore"):
            shown = np.log10(values)
        mesh = ax.pcolormesh(x, y, shown, shading="auto", cmap=cmap or DIVERGING_CMAP, norm=norm)
        cbar = fig.colorbar(mesh, ax=ax)
        # Ticks at readable chi_1 values, placed on the log10 scale the colours use.
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.1, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
                 if lo <= t <= hi]
        cbar.set_ticks(np.log10(ticks))
        cbar.set_ticklabels([f"{t:g}" for t in ticks])
        cbar.set_label(r"$\chi_1$ (log scale; $\chi_1 = 1$ critical)")
    elif var == "phase" and "flag_meanings" in ds[var].attrs:
        flags = [int(v) for v in np.atleast_1d(ds[var].attrs.get("flag_values", []))]
        names = str(ds[var].attrs["flag_meanings"]).split()
        colours = {"ordered": PALETTE[0], "critical": "#000000", "chaotic": PALETTE[1],
                   "undetermined": "#BBBBBB", "unbounded": "#DDAA33"}
        cm = mcolors.ListedColormap([colours.get(n, "#BBBBBB") for n in names])
        norm = mcolors.BoundaryNorm(np.arange(min(flags) - 0.5, max(flags) + 1.5), cm.N)
        mesh = ax.pcolormesh(x, y, values, shading="auto", cmap=cmap or cm, norm=norm)
        cbar = fig.colorbar(mesh, ax=ax, ticks=flags)
        cbar.set_ticklabels(names)
        cbar.set_label("phase")
    elif var in LOG_VARS:
        pos = values[finite & (values > 0)]
        vmin = float(pos.min()) if pos.size else 1.0
        vmax = min(float(pos.max()), LOG_VMAX) if pos.size else 10.0
        shown = np.where(values > 0, values, np.nan)
        mesh = ax.pcolormesh(x, y, shown, shading="auto", cmap=cmap or SEQUENTIAL_CMAP,
                             norm=mcolors.LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10)))
        cbar = fig.colorbar(mesh, ax=ax, extend="max")
        cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        cbar.ax.yaxis.set_minor_formatter(NullFormatter())
        cbar.set_label(LABELS.get(var, var) + " (log scale)")
    else:
        mesh = ax.pcolormesh(x, y, np.where(finite, values, np.nan), shading="auto",
                             cmap=cmap or SEQUENTIAL_CMAP)
        cbar = fig.colorbar(mesh, ax=ax)
        cbar.set_label(LABELS.get(var, ds[var].attrs.get("long_name", var)))


def _unbounded_mask(ds):
    """Where the length map has no finite fixed point (q* = inf), or None if unknown."""
    if "q_star" in ds:
        return np.isinf(two_d(ds, "q_star"))
    if "phase" in ds:
        return two_d(ds, "phase") == int(Phase.UNBOUNDED)
    return None


def _hatch_unbounded(ax, x, y, mask):
    """Grey hatching over the points with q* = inf (the 'unbounded' phase)."""
    ax.contourf(x, y, mask.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"])
    ax.fill([], [], fill=False, hatch="////", lw=0, label=r"unbounded ($q^* = \infty$)")


def _dropout_rho(ds) -> float:
    """The dataset's dropout keep probability (1 without dropout or when it varies)."""
    rho = ds.attrs.get("rho", 1.0)
    if "rho" in ds.coords and ds["rho"].ndim == 0:
        rho = float(ds["rho"])
    return float(rho) if rho is not None and np.ndim(rho) == 0 else 1.0


def _critical_contour(ax, x, y, chi, rho):
    """The contour chi_1 = 1; returns log chi_1 on the grid."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lchi = np.log(chi)
    # Under dropout c = 1 is no longer a fixed point and xi_c stays finite (docs/theory.md,
    # "Dropout"): chi_1 = 1 still separates the phases but is no critical line.
    label = (r"$\chi_1 = 1$ (dropout: $\xi_c$ stays finite)" if rho != 1.0
             else r"critical line $\chi_1 = 1$")
    if np.nanmin(lchi) < 0 < np.nanmax(lchi):
        ax.contour(x, y, lchi, levels=[0.0], colors="k", linewidths=2)
        ax.plot([], [], "k-", lw=2, label=label)
    return lchi


def _depth_contours(ax, x, y, depth, depth_levels, constant):
    """Dashed contours max_depth = L at the requested depths."""
    levels = sorted(float(v) for v in depth_levels)
    if np.any(depth[np.isfinite(depth)] > levels[0]):
        # inf (on the critical line) is above every level: keep it out of the NaN holes
        # contour leaves, or the lines would break exactly where they matter.
        cs = ax.contour(x, y, np.where(np.isnan(depth), np.nan, np.minimum(depth, 1e30)),
                        levels=levels, colors="0.2", linewidths=0.9, linestyles="--")
        ax.clabel(cs, fmt=lambda v: f"L={v:g}", fontsize=8)
        ax.plot([], [], "--", color="0.2", lw=0.9, label=rf"max depth ${constant:g}\xi_c = L$")


def _label_phases(ax, x, y, lchi):
    """Write "ordered" / "chaotic" inside each region, on its own side of the critical line.

    The label goes at the point of the region farthest (in axes fraction) from the other
    region and from the frame, so it never sits on the critical line.
    """
    X, Y = np.meshgrid((x - x[0]) / (x[-1] - x[0]), (y - y[0]) / (y[-1] - y[0]))
    XX, YY = np.meshgrid(x, y)
    for mask, other, text in ((lchi < 0, lchi > 0, r"ordered ($\chi_1 < 1$)"),
                              (lchi > 0, lchi < 0, r"chaotic ($\chi_1 > 1$)")):
        if mask.sum() < 0.03 * mask.size:
            continue
        # Distance to the frame, shrunk vertically because the legend sits upper left.
        clear = np.minimum.reduce([X, 1 - X, Y, 0.8 - Y])
        if other.any():
            ox, oy = X[other], Y[other]
            step = max(1, ox.size // 4000)  # subsample: the distance only needs ~1e-2 accuracy
            ox, oy = ox[::step], oy[::step]
            px, py = X[mask], Y[mask]
            pstep = max(1, px.size // 4000)
            px, py = px[::pstep], py[::pstep]
            d = np.sqrt((px[:, None] - ox[None]) ** 2 + (py[:, None] - oy[None]) ** 2).min(axis=1)
            score = np.minimum(d, clear[mask][::pstep])
            k = int(np.argmax(score))
            lx, ly = XX[mask][::pstep][k], YY[mask][::pstep][k]
        else:
            lx, ly = float(np.median(XX[mask])), float(np.median(YY[mask]))
        ax.text(lx, ly, text, ha="center", va="center", fontsize=11, weight="bold", color="0.1",
                bbox=dict(boxstyle="round", fc="white", alpha=0.75, lw=0))


def phase_diagram_facets(ds, var="chi1", *, dim=None, ncols=None, depth_levels=(10, 50, 200),
                         cmap=None):
    """One :func:`phase_diagram` panel per value of an extra dimension of ``ds``.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep with dims (dim, sw2, sb2), e.g. ``activation`` or ``rho`` (a 2-D dataset
        gives one panel).
    var : str
        Variable to colour by (as in :func:`phase_diagram`).
    dim : str, optional
        The dimension to facet over; default: the only dimension besides sw2 and sb2.
    ncols : int, optional
        Panels per row (default: up to 3).
    depth_levels, cmap
        As in :func:`phase_diagram`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if var not in ds:
        raise ValueError(f"var: {var!r} is not in the dataset; choose one of {', '.join(map(str, ds.data_vars))}")
    extra = [d for d in ds[var].dims if d not in ("sw2", "sb2")]
    if dim is None:
        if len(extra) > 1:
            raise ValueError(f"var: {var!r} has several extra dims {extra}; pass dim= and select the others")
        dim = extra[0] if extra else None
    elif dim not in extra:
        raise ValueError(f"dim: {dim!r} is not a dimension of {var!r} besides sw2, sb2 (dims {ds[var].dims})")
    if dim is None:
        return phase_diagram(ds, var, depth_levels=depth_levels, cmap=cmap)
    if len(extra) > 1:
        raise ValueError(f"var: {var!r} has dims {extra} besides sw2, sb2; select all but {dim!r} first")
    n = ds.sizes[dim]
    ncols = int(ncols or min(n, 3))
    nrows = math.ceil(n / ncols)
    fig, axes = plt().subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), layout="constrained",
                                squeeze=False)
    for k in range(nrows * ncols):
        ax = axes.flat[k]
        if k >= n:
            ax.set_visible(False)
            continue
        sub = ds.isel({dim: k})
        label = sub[dim].values.item()
        if isinstance(label, bytes):
            label = label.decode()
        phase_diagram(sub, var, ax=ax, depth_levels=depth_levels, cmap=cmap)
        if dim == "rho":
            ax.set_title(rf"dropout keep probability $\rho$ = {float(label):g}")
        else:
            ax.set_title(f"{dim} = {label}")
    return fig


def critical_lines(activations=("tanh", "erf", "relu", "selu", "gelu"), sb2=None, *, ax=None):
    """Critical lines chi_1 = 1 of several activations in the (sw2, sb2) plane.

    Each line is :func:`meanfield.critical_line`; left of a line its activation is
    ordered, right of it chaotic.  A line has a gap where chi_1 jumps across 1 instead of
    crossing it (gelu and silu at small sb2: q* jumps to infinity), since there is no
    edge of chaos there.

    Parameters
    ----------
    activations : sequence of str or Activation
        Names (``"tanh"``) or :class:`~meanfield.Activation` objects
        (``mf.get_activation("leaky_relu", slope=0.2)``).
    sb2 : array_like, optional
        Bias variances at which to solve (default 41 points on [0, 2]).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(activations, str):
        activations = [activations]
    acts = [act_of(a) for a in activations]
    if not acts:
        raise ValueError("activations is empty")
    if sb2 is None:
        # Critical lines leave sb2 = 0 steeply (tanh: sw2 = 1 at 0, 1.86 at 0.1): a log-spaced
        # run near 0 keeps that part from being drawn as a straight chord.
        sb2 = np.unique(np.concatenate([np.linspace(0.0, 2.0, 41), np.geomspace(1e-4, 0.05, 16)]))
    else:
        sb2 = np.unique(variances("sb2", sb2))
    fig, ax = new_axes(ax, figsize=(7.6, 4.8))
    styles = ("-", "--", "-.", ":")
    xmax = 0.0
    for k, act in enumerate(acts):
        line = critical_line(act, sb2)
        w = np.asarray(line.values, dtype=float)
        # Later lines are thinner, so coinciding lines (relu, and gelu/silu at large sb2,
        # all at sw2 = 2) stay visible as bands.
        ax.plot(w, line["sb2"].values, color=PALETTE[k % len(PALETTE)], lw=max(3.6 - 0.4 * k, 1.0),
                ls=styles[k % len(styles)],
                label=act_label(act))
        if np.isfinite(w).any():
            xmax = max(xmax, float(np.nanmax(w[np.isfinite(w)])))
    ax.set_xlim(0, xmax * 1.15 if xmax > 0 else 1.0)
    ax.set_ylim(float(sb2.min()), float(sb2.max()))
    ax.set_xlabel(AXIS["sw2"])
    ax.set_ylabel(AXIS["sb2"])
    ax.set_title("critical lines $\\chi_1 = 1$\n"
                 r"left of a line: ordered ($\chi_1 < 1$); right: chaotic ($\chi_1 > 1$)", fontsize=10)
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig
