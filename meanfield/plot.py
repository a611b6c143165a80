"""Matplotlib figures of mean-field theory (THEORY.md conventions: sw2, sb2 are variances).

Every function returns a :class:`matplotlib.figure.Figure` and never shows it; the caller
saves or displays it.  Functions that take a dataset (:func:`phase_diagram`,
:func:`phase_diagram_facets`, :func:`depth_scales`, :func:`ntk_trainability`) work on
datasets computed in memory or loaded from disk (netCDF, zarr); the others compute what
they draw with the library.

Figures
-------
phase_diagram
    chi_1 (or any variable) over (sigma_w^2, sigma_b^2) with the critical line and
    max-depth contours (Poole et al. 2016; Schoenholz et al. 2017, Fig. 1).
phase_diagram_facets
    One phase diagram per value of an extra dimension (activation, dropout rho).
length_map, correlation_map
    q^{l+1}(q^l) and c^{l+1}(c^l) with their fixed points and cobwebs (Poole et al. 2016,
    Figs. 1 and 2).
depth_profiles
    q^l and c^l against depth, with the exponential approach exp(-l/xi) (Schoenholz et al.
    2017).
depth_scales
    xi_q, xi_c and xi_grad against sigma_w^2 at fixed sigma_b^2: xi_c diverges at the
    critical point.
ntk_trainability
    Per-depth NTK condition number and mean-predictor decay (Xiao, Pennington and
    Schoenholz 2020).
critical_lines
    Several activations' critical lines chi_1 = 1 on one plot.

Colours: the Okabe-Ito palette for lines and colour-blind-safe colormaps (RdBu_r, diverging
at chi_1 = 1; viridis, sequential).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["phase_diagram", "phase_diagram_facets", "length_map", "correlation_map",
           "depth_profiles", "depth_scales", "ntk_trainability", "critical_lines"]

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms of
# colour-vision deficiency.  Line styles vary too where many curves share a plot.
# The palette's yellow (#F0E442) is left out: it is illegible as a thin line on white.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DIVERGING_CMAP = "RdBu_r"  # ColorBrewer RdBu: colour-blind safe; red = chaotic, blue = ordered
SEQUENTIAL_CMAP = "viridis"

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
    "max_depth": r"max trainable depth $6\xi_c$ (layers)",
}
_AXIS = {"sw2": r"weight variance $\sigma_w^2$", "sb2": r"bias variance $\sigma_b^2$"}
# Depth scales span several decades and diverge on the critical line: a log colour scale.
_LOG_VARS = ("xi_q", "xi_c", "max_depth", "q_star")
# Colour range of the log-scaled depth variables: beyond 1e4 layers every value means
# "effectively critical", and letting the divergence set the range would wash out the rest.
_LOG_VMAX = 1e4


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _new_axes(ax, figsize=(6.4, 4.8)):
    if ax is None:
        fig, ax = _plt().subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _act_label(act) -> str:
    p = ", ".join(f"{k}={v:g}" for k, v in act.parameters.items())
    return f"{act.name}({p})" if p else act.name


def _values(name, values, *, allow_empty=False):
    """A 1-D float array of non-negative finite variances (ValueError otherwise)."""
    try:
        a = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a sequence of numbers, got {values!r}") from None
    if a.ndim != 1 or (a.size == 0 and not allow_empty):
        raise ValueError(f"{name} must be a scalar or a non-empty 1-D sequence, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {a.tolist()}")
    return a


def _two_d(ds, var):
    """ds[var] as a (sb2, sw2) array, after checking it is a 2-D (sw2, sb2) variable."""
    if var not in ds:
        raise ValueError(f"var: {var!r} is not in the dataset; choose one of {', '.join(map(str, ds.data_vars))}")
    da = ds[var]
    if set(da.dims) != {"sw2", "sb2"}:
        extra = [d for d in da.dims if d not in ("sw2", "sb2")]
        hint = (f"; select one value of {', '.join(extra)} first (ds.isel(...)) or use "
                f"phase_diagram_facets") if extra else ""
        raise ValueError(f"var: {var!r} must be 2-D over (sw2, sb2), got dims {da.dims}{hint}")
    return np.asarray(da.transpose("sb2", "sw2").values, dtype=float)


# --------------------------------------------------------------------------- phase diagram
def phase_diagram(ds, var="chi1", *, ax=None, depth_levels=(10, 50, 200), cmap=None):
    """Heatmap of ``var`` over (sw2, sb2) with the critical line and max-depth contours.

    The critical line is the contour chi_1 = 1 (THEORY.md, "Correlation map"); the dashed
    contours are the predicted maximum trainable depth 6 xi_c = L (Schoenholz et al. 2017).
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
    import matplotlib.colors as mcolors
    from matplotlib.ticker import FuncFormatter, NullFormatter

    values = _two_d(ds, var)
    x = np.asarray(ds["sw2"].values, dtype=float)
    y = np.asarray(ds["sb2"].values, dtype=float)
    fig, ax = _new_axes(ax)
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
                   "undetermined": "#BBBBBB"}
        cm = mcolors.ListedColormap([colours.get(n, "#BBBBBB") for n in names])
        norm = mcolors.BoundaryNorm(np.arange(min(flags) - 0.5, max(flags) + 1.5), cm.N)
        mesh = ax.pcolormesh(x, y, values, shading="auto", cmap=cmap or cm, norm=norm)
        cbar = fig.colorbar(mesh, ax=ax, ticks=flags)
        cbar.set_ticklabels(names)
        cbar.set_label("phase")
    elif var in _LOG_VARS:
        pos = values[finite & (values > 0)]
        vmin = float(pos.min()) if pos.size else 1.0
        vmax = min(float(pos.max()), _LOG_VMAX) if pos.size else 10.0
        shown = np.where(values > 0, values, np.nan)
        mesh = ax.pcolormesh(x, y, shown, shading="auto", cmap=cmap or SEQUENTIAL_CMAP,
                             norm=mcolors.LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10)))
        cbar = fig.colorbar(mesh, ax=ax, extend="max")
        cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        cbar.ax.yaxis.set_minor_formatter(NullFormatter())
        cbar.set_label(_LABELS.get(var, var) + " (log scale)")
    else:
        mesh = ax.pcolormesh(x, y, np.where(finite, values, np.nan), shading="auto",
                             cmap=cmap or SEQUENTIAL_CMAP)
        cbar = fig.colorbar(mesh, ax=ax)
        cbar.set_label(_LABELS.get(var, ds[var].attrs.get("long_name", var)))
    rho = ds.attrs.get("rho", 1.0)
    if "rho" in ds.coords and ds["rho"].ndim == 0:
        rho = float(ds["rho"])
    dropout = rho is not None and np.ndim(rho) == 0 and float(rho) != 1.0
    # Under dropout c = 1 is no longer a fixed point and xi_c stays finite (THEORY.md,
    # "Dropout"): chi_1 = 1 still separates the phases but is no critical line.
    line_label = (r"$\chi_1 = 1$ (dropout: $\xi_c$ stays finite)" if dropout
                  else r"critical line $\chi_1 = 1$")
    lchi = None
    if "chi1" in ds and len(x) > 1 and len(y) > 1:
        chi = _two_d(ds, "chi1")
        with np.errstate(divide="ignore", invalid="ignore"):
            lchi = np.log(chi)
        if np.nanmin(lchi) < 0 < np.nanmax(lchi):
            ax.contour(x, y, lchi, levels=[0.0], colors="k", linewidths=2)
            ax.plot([], [], "k-", lw=2, label=line_label)
    if "max_depth" in ds and depth_levels and len(x) > 1 and len(y) > 1:
        depth = _two_d(ds, "max_depth")
        levels = sorted(float(v) for v in depth_levels)
        if np.any(depth[np.isfinite(depth)] > levels[0]):
            # inf (on the critical line) is above every level: keep it out of the NaN holes
            # contour leaves, or the lines would break exactly where they matter.
            cs = ax.contour(x, y, np.where(np.isnan(depth), np.nan, np.minimum(depth, 1e30)),
                            levels=levels, colors="0.2", linewidths=0.9, linestyles="--")
            ax.clabel(cs, fmt=lambda v: f"L={v:g}", fontsize=8)
            ax.plot([], [], "--", color="0.2", lw=0.9, label=r"max depth $6\xi_c = L$")
    if lchi is not None:
        _label_phases(ax, x, y, lchi)
    ax.set_xlabel(_AXIS["sw2"])
    ax.set_ylabel(_AXIS["sb2"])
    act = ds.attrs.get("activation", "")
    title = f"{act} phase diagram" if act else "phase diagram"
    if dropout:
        title += rf" (dropout $\rho$ = {float(rho):g})"
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    return fig


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
    fig, axes = _plt().subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows), layout="constrained",
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


# --------------------------------------------------------------------------- iterated maps
def _act(activation):
    from .activations import get_activation

    return get_activation(activation)


def _length_map_values(act, sw2, sb2, q):
    """V(q) = sw2 E[phi(sqrt(q) z)^2] + sb2 at every q (THEORY.md, "Length map")."""
    from ._engine import solver_args
    from ._expect import moments1

    kind, a, b, ufn, cf, kinks, kappa, _ = solver_args(act)
    empty = np.empty(0)
    return np.array([sw2 * moments1(kind, a, b, ufn, cf, kinks, kappa, float(qi), empty)[1] + sb2
                     for qi in np.atleast_1d(q)])


def _correlation_map_values(act, sw2, sb2, q_star, c):
    """C(c) = [sw2 E phi(u1) phi(u2) + sb2] / q* with both lengths at q* (THEORY.md)."""
    from ._engine import solver_args
    from ._expect import moments2

    args = solver_args(act)
    # eps = 1 - c is what the kernels take, so c near 1 keeps its digits.
    return np.array([(sw2 * moments2(*args, q_star, float(1.0 - ci))[0] + sb2) / q_star
                     for ci in np.atleast_1d(c)])


def _cobweb(ax, f, x0, n_steps, colour):
    """Staircase x -> f(x) -> (f(x), f(x)) of the iterates of ``f`` from ``x0``."""
    xs, ys = [x0], [x0]
    x = x0
    for _ in range(n_steps):
        fx = float(f(x))
        if not math.isfinite(fx):
            break
        xs += [x, fx]
        ys += [fx, fx]
        x = fx
    ax.plot(xs, ys, color=colour, lw=0.8, alpha=0.8)
    ax.plot([x0], [x0], "o", ms=3, color=colour)


def length_map(activation, sw2=(1.0, 4.0, 9.0, 16.0), sb2=0.09, *, q0=None, q_max=None, n_steps=8,
               ax=None):
    """The length map q^{l+1} = V(q^l) for several sw2, with fixed points and cobwebs.

    ``V(q) = sw2 E[phi(sqrt(q) z)^2] + sb2`` (THEORY.md, "Length map"); its fixed points
    come from :func:`meanfield.fixed_points` (filled: stable, open: unstable); the
    staircase shows ``n_steps`` iterates from ``q0``.  The defaults are those of Poole et
    al. (2016), Fig. 1: tanh with sigma_b = 0.3 and sigma_w = 1, 2, 3, 4 (as variances
    sb2 = 0.09 and sw2 = 1, 4, 9, 16).

    Parameters
    ----------
    activation : str or Activation
    sw2 : float or sequence of float
        Weight variances, one curve each.
    sb2 : float
        Bias variance.
    q0 : float, optional
        Starting length of the cobweb (default: 0.8 q_max, so it approaches from above).
    q_max : float, optional
        Right end of the q axis (default: 1.3 times the largest finite fixed point, >= 1).
    n_steps : int
        Iterates drawn in each cobweb (0: none).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .api import fixed_points

    act = _act(activation)
    sw2s = _values("sw2", sw2)
    sb2 = _scalar_variance("sb2", sb2)
    fps = [fixed_points(act, w, sb2) for w in sw2s]
    if q_max is None:
        qs = [p["q"] for fp in fps for p in fp if math.isfinite(p["q"])]
        q_max = max([1.0] + [1.3 * v for v in qs])
    q_max = float(_values("q_max", q_max)[0])
    if q_max <= 0:
        raise ValueError(f"q_max must be > 0, got {q_max}")
    q0 = 0.8 * q_max if q0 is None else float(_values("q0", q0)[0])
    fig, ax = _new_axes(ax, figsize=(5.6, 5.0))
    q = np.linspace(0.0, q_max, 241)
    ax.plot(q, q, color="0.3", lw=1, ls=":", label=r"$q^{l+1} = q^l$")
    for k, (w, fp) in enumerate(zip(sw2s, fps)):
        colour = PALETTE[k % len(PALETTE)]
        ax.plot(q, _length_map_values(act, w, sb2, q), color=colour, lw=2,
                label=rf"$\sigma_w^2$ = {w:g}")
        if n_steps > 0:
            _cobweb(ax, lambda v: _length_map_values(act, w, sb2, v)[0], q0, int(n_steps), colour)
        for p in fp:
            if p["q"] <= q_max:
                ax.plot([p["q"]], [p["q"]], "o", ms=7, mec=colour, mew=1.5,
                        mfc=colour if p["stable"] else "white", zorder=5)
    ax.plot([], [], "o", color="0.3", ms=7, label=r"stable $q^*$")
    ax.plot([], [], "o", mfc="white", mec="0.3", ms=7, label=r"unstable $q^*$")
    ax.set_xlim(0, q_max)
    ax.set_ylim(0, q_max)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(r"squared length $q^l$ (layer $l$)")
    ax.set_ylabel(r"squared length $q^{l+1}$ (layer $l+1$)")
    ax.set_title(rf"{_act_label(act)} length map, $\sigma_b^2$ = {sb2:g}")
    ax.legend(fontsize=8, loc="upper left", framealpha=0.85)
    return fig


def _scalar_variance(name, value):
    """One non-negative finite variance as a float (ValueError otherwise)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a single number, got {value!r}")
    return float(_values(name, value)[0])


def correlation_map(activation, sw2=(1.0, 4.0, 9.0, 16.0), sb2=0.09, *, c0=0.1, n_steps=8, ax=None):
    """The correlation map c^{l+1} = C(c^l) at q = q* for several sw2, with fixed points.

    ``C(c) = [sw2 E phi(u1) phi(u2) + sb2] / q*`` with both inputs at the length fixed
    point q* (THEORY.md, "Correlation map"); c = 1 is always a fixed point, stable when
    chi_1 < 1; the chaotic phase has a stable c* < 1.  q*, c* and chi_1 come from
    :func:`meanfield.analyze`.  Defaults as in Poole et al. (2016), Fig. 2 (tanh,
    sigma_b = 0.3, sigma_w = 1 ... 4).

    Parameters
    ----------
    activation : str or Activation
    sw2 : float or sequence of float
        Weight variances, one curve each.
    sb2 : float
        Bias variance.  The map needs q* > 0: sb2 = 0 in the ordered phase of an activation
        with phi(0) = 0 has q* = 0 and raises ValueError.
    c0 : float
        Starting correlation of the cobweb, in [-1, 1].
    n_steps : int
        Iterates drawn in each cobweb (0: none).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .api import analyze

    act = _act(activation)
    sw2s = _values("sw2", sw2)
    sb2 = _scalar_variance("sb2", sb2)
    c0 = float(c0)
    if not -1.0 <= c0 <= 1.0:
        raise ValueError(f"c0 must be in [-1, 1], got {c0}")
    results = [analyze(act, w, sb2) for w in sw2s]
    for r in results:
        if not (math.isfinite(r.q_star) and r.q_star > 0):
            raise ValueError(f"correlation map undefined at sw2={r.sw2:g}, sb2={sb2:g}: q* = {r.q_star} "
                             f"(needs a finite q* > 0; {r.status})")
    fig, ax = _new_axes(ax, figsize=(5.6, 5.0))
    lo = 0.0 if c0 >= 0 and sb2 >= 0 else -1.0
    c = np.linspace(lo, 1.0, 201)
    ax.plot(c, c, color="0.3", lw=1, ls=":", label=r"$c^{l+1} = c^l$")
    for k, r in enumerate(results):
        colour = PALETTE[k % len(PALETTE)]
        ax.plot(c, _correlation_map_values(act, r.sw2, sb2, r.q_star, c), color=colour, lw=2,
                label=rf"$\sigma_w^2$ = {r.sw2:g} ($\chi_1$ = {r.chi1:.2f}, {r.phase})")
        if n_steps > 0:
            _cobweb(ax, lambda v, r=r: _correlation_map_values(act, r.sw2, sb2, r.q_star, v)[0],
                    c0, int(n_steps), colour)
        # Stable markers on top: every curve shares the point c = 1.
        ax.plot([1.0], [1.0], "o", ms=7, mec=colour, mew=1.5,
                mfc=colour if r.chi1 <= 1.0 else "white", zorder=6 if r.chi1 <= 1.0 else 5,
                clip_on=False)
        if math.isfinite(r.c_star) and r.c_star < 1.0:
            ax.plot([r.c_star], [r.c_star], "o", ms=7, color=colour, zorder=5)
    ax.plot([], [], "o", color="0.3", ms=7, label=r"stable $c^*$")
    ax.plot([], [], "o", mfc="white", mec="0.3", ms=7, label=r"unstable $c^* = 1$")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.0)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(r"correlation $c^l$ (layer $l$)")
    ax.set_ylabel(r"correlation $c^{l+1}$ (layer $l+1$)")
    ax.set_title(rf"{_act_label(act)} correlation map, $\sigma_b^2$ = {sb2:g}")
    ax.legend(fontsize=7.5, loc="upper left", framealpha=0.85)
    return fig


# --------------------------------------------------------------------------- depth
# Deviations below this fraction of the fixed point are rounding noise (c^l is computed
# from float64 kernels, 1 - c resolves ~1e-16): they are not drawn.
_DEVIATION_FLOOR = 1e-13


def _reference_line(ax, depth, dev, xi, colour):
    """Dashed A exp(-l/xi), matched to ``dev`` at the deepest point well above the floor."""
    # A depth scale longer than the plotted depth (near the critical point) says only that
    # the approach is slower than exponential here: a nearly flat line would mislead.
    if not (math.isfinite(xi) and 0 < xi <= depth[-1]):
        return
    good = np.flatnonzero(np.isfinite(dev) & (dev > 1e3 * _DEVIATION_FLOOR))
    if good.size < 2:
        return
    k = good[-1]
    amp = dev[k] * math.exp(depth[k] / xi)
    l = depth[: good[-1] + 1 + max(3, good.size // 4)]
    ax.plot(l, amp * np.exp(-l / xi), ls=(0, (4, 3)), color="k", lw=0.9, alpha=0.8, zorder=4)


def depth_profiles(activation, sw2=(1.5, 1.76, 2.5), sb2=0.05, *, depth=60, q1=3.0, c1=0.2):
    """q^l and c^l against depth, and their exponential approach to q*, c* (Schoenholz 2017).

    Top row: the length q^l of one input started at q^1 = ``q1``, and the correlation c^l
    of two inputs started at lengths q* and correlation c^1 = ``c1``
    (:func:`meanfield.two_point_kernels`).  Bottom row: |q^l - q*| and |c^l - c*| on a log
    scale with dashed lines A exp(-l/xi_q) and A exp(-l/xi_c) (xi from
    :func:`meanfield.analyze`; THEORY.md, "Depth scales"), matched at the deepest resolved
    depth.  At the critical point xi_c is infinite and the approach is slower than any
    exponential (no dashed line is drawn when xi exceeds the plotted depth).

    Parameters
    ----------
    activation : str or Activation
    sw2 : float or sequence of float
        Weight variances, one colour each.  The defaults are an ordered point, the tanh
        critical point at sb2 = 0.05 (sw2 = 1.76) and a chaotic point.
    sb2 : float
        Bias variance.  Needs q* > 0 (see :func:`correlation_map`).
    depth : int
        Number of layers L.
    q1 : float
        Length at layer 1 of the single input.
    c1 : float
        Correlation at layer 1 of the input pair, in [-1, 1].

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ._kernels import two_point_kernels
    from .api import analyze

    act = _act(activation)
    sw2s = _values("sw2", sw2)
    sb2 = _scalar_variance("sb2", sb2)
    fig, axes = _plt().subplots(2, 2, figsize=(9.6, 7.4), layout="constrained")
    for k, w in enumerate(sw2s):
        colour = PALETTE[k % len(PALETTE)]
        r = analyze(act, w, sb2)
        if not (math.isfinite(r.q_star) and r.q_star > 0):
            raise ValueError(f"depth profiles need a finite q* > 0; at sw2={w:g}, sb2={sb2:g} "
                             f"q* = {r.q_star} ({r.status})")
        lab = rf"$\sigma_w^2$ = {w:g} ({r.phase}, $\xi_q$ = {r.xi_q:.3g}, $\xi_c$ = {r.xi_c:.3g})"
        tq = two_point_kernels(act, w, sb2, depth, q1=q1, q2=q1, c=0.0)
        tc = two_point_kernels(act, w, sb2, depth, q1=r.q_star, q2=r.q_star, c=c1)
        l = tq["depth"].values.astype(float)
        q = tq["q1"].values
        c = tc["correlation"].values
        axes[0, 0].plot(l, q, color=colour, lw=1.8, label=lab)
        axes[0, 0].axhline(r.q_star, color=colour, lw=0.8, ls=":")
        axes[0, 1].plot(l, c, color=colour, lw=1.8)
        axes[0, 1].axhline(r.c_star, color=colour, lw=0.8, ls=":")
        for ax, dev, xi, scale in ((axes[1, 0], np.abs(q - r.q_star), r.xi_q, r.q_star),
                                   (axes[1, 1], np.abs(c - r.c_star), r.xi_c, 1.0)):
            dev = np.where(dev > _DEVIATION_FLOOR * scale, dev / scale, np.nan)
            ax.semilogy(l, dev, color=colour, lw=1.8, marker=".", ms=3)
            _reference_line(ax, l, dev, xi, colour)
    axes[0, 0].set_ylabel(r"squared length $q^l$")
    axes[0, 0].set_title(rf"length from $q^1$ = {q1:g} (dotted: $q^*$)")
    axes[0, 1].set_ylabel(r"correlation $c^l$")
    axes[0, 1].set_title(rf"correlation from $c^1$ = {c1:g} at $q^*$ (dotted: $c^*$)")
    axes[1, 0].set_ylabel(r"relative deviation $|q^l - q^*| / q^*$")
    axes[1, 0].set_title(r"dashed: $\propto e^{-l/\xi_q}$")
    axes[1, 1].set_ylabel(r"deviation $|c^l - c^*|$")
    axes[1, 1].set_title(r"dashed: $\propto e^{-l/\xi_c}$")
    for ax in axes.flat:
        ax.set_xlabel(r"depth $l$ (layers)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7.5, loc="upper right", framealpha=0.85)
    fig.suptitle(rf"{_act_label(act)}: signal propagation with depth, $\sigma_b^2$ = {sb2:g}")
    return fig


def _critical_sw2_from_grid(sw2, chi1):
    """sw2 where log chi_1 changes sign (linear interpolation in log chi_1), or None."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lc = np.log(chi1)
    ok = np.isfinite(lc)
    s, lc = sw2[ok], lc[ok]
    idx = np.flatnonzero(np.sign(lc[:-1]) * np.sign(lc[1:]) <= 0)
    if idx.size == 0:
        return None
    i = idx[0]
    if lc[i + 1] == lc[i]:
        return float(s[i])
    return float(s[i] - lc[i] * (s[i + 1] - s[i]) / (lc[i + 1] - lc[i]))


def _critical_sw2_exact(ds, sb2, sw2):
    """mf.critical_sw2 for the dataset's activation (from its attributes), if inside the
    grid's sw2 range; None when the activation cannot be rebuilt or has no crossing there."""
    from .activations import get_activation
    from .api import critical_sw2

    name = ds.attrs.get("activation")
    if not isinstance(name, str) or float(ds.attrs.get("rho", 1.0)) != 1.0:
        return None
    prefix = "activation_"
    params = {k[len(prefix):]: float(v) for k, v in ds.attrs.items()
              if k.startswith(prefix) and k not in ("activation_formula", "activation_parameters")}
    try:
        sc = critical_sw2(get_activation(name, **params), sb2)
    except (ValueError, TypeError):  # e.g. a custom activation not registered in this session
        return None
    return sc if math.isfinite(sc) and sw2[0] <= sc <= sw2[-1] else None


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
    |xi_grad| layers, THEORY.md): there it is drawn dotted as |xi_grad|.
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
    fig, ax = _new_axes(ax, figsize=(6.4, 4.6))
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
        ax.set_ylim(max(finite.min() * 0.5, 1e-2), min(finite.max() * 2, _LOG_VMAX))
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel(_AXIS["sw2"])
    ax.set_ylabel(r"depth scale $\xi$ (layers)")
    act = sub.attrs.get("activation", "")
    ax.set_title(rf"{act} depth scales at $\sigma_b^2$ = {b:g}".strip())
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=8, loc="upper right", framealpha=0.85)
    return fig


# --------------------------------------------------------------------------- NTK
def ntk_trainability(metrics, *, labels=None):
    """Per-depth NTK condition number and mean-predictor decay (Xiao et al. 2020).

    Three panels against depth l: the condition number kappa^l of Theta^l on the training
    set (ordered: grows like chi_1^{-l}/l, the network becomes untrainable; chaotic: -> 1);
    the RMS distance of the NTK mean predictor to its infinite-depth limit (chaotic: the
    prediction decays to 0, the network stops generalizing); and the fitted decay rate of
    the predictor with the mean-field prediction (dashed: chi_c*/chi_1 chaotic; 1 ordered
    and critical, where the approach is algebraic).

    Parameters
    ----------
    metrics : xarray.Dataset or sequence of Dataset
        Outputs of :func:`meanfield.ntk_metrics` (in memory or reloaded from netCDF),
        typically an ordered, a critical and a chaotic initialization.
    labels : sequence of str, optional
        Legend entries; default from the datasets' attributes (phase, sw2, sb2).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import xarray as xr

    if isinstance(metrics, xr.Dataset):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty: pass one or more datasets from meanfield.ntk_metrics")
    for m in metrics:
        missing = [v for v in ("condition_number", "prediction_distance", "decay_rate") if v not in m]
        if missing or not isinstance(m, xr.Dataset):
            raise ValueError(f"each entry must be a dataset from meanfield.ntk_metrics (missing {missing})")
    if labels is not None and len(labels) != len(metrics):
        raise ValueError(f"labels has {len(labels)} entries for {len(metrics)} datasets")
    fig, axes = _plt().subplots(1, 3, figsize=(13.5, 4.3), layout="constrained", sharex=True)
    for k, m in enumerate(metrics):
        colour = PALETTE[k % len(PALETTE)]
        a = m.attrs
        lab = labels[k] if labels is not None else (
            rf"{a.get('phase', '')}: $\sigma_w^2$ = {float(a.get('sw2', np.nan)):.3g}, "
            rf"$\sigma_b^2$ = {float(a.get('sb2', np.nan)):g}")
        l = m["depth"].values
        kappa = np.asarray(m["condition_number"].values, dtype=float)
        axes[0].semilogy(l, np.where(kappa > 0, kappa, np.nan), color=colour, lw=1.8, label=lab)
        dist = np.asarray(m["prediction_distance"].values, dtype=float)
        axes[1].semilogy(l, np.where(dist > 0, dist, np.nan), color=colour, lw=1.8)
        axes[2].plot(l, m["decay_rate"].values, color=colour, lw=1.8)
        if "theory_decay_rate" in m and np.isfinite(float(m["theory_decay_rate"])):
            axes[2].axhline(float(m["theory_decay_rate"]), color=colour, lw=1, ls="--")
    axes[0].set_ylabel(r"NTK condition number $\kappa^l = \lambda_{max}/\lambda_{min}$")
    axes[0].set_title("trainability (small is trainable)")
    axes[1].set_ylabel(r"$\| P(\Theta^l) Y - P(\Theta^\infty) Y \|_{rms}$ (units of $y$)")
    axes[1].set_title("mean predictor: distance to its deep limit")
    axes[2].set_ylabel(r"decay rate $|P^{l+1} - P^l| / |P^l - P^{l-1}|$")
    axes[2].set_title("decay rate (dashed: mean-field prediction)")
    axes[2].set_ylim(0, 1.1)
    for ax in axes:
        ax.set_xlabel(r"depth $l$ (layers)")
        ax.grid(alpha=0.3, which="both", lw=0.5)
    axes[0].legend(fontsize=8, loc="upper left", framealpha=0.85)
    act = metrics[0].attrs.get("activation", "")
    fig.suptitle(f"{act} NTK trainability and generalization per depth".strip())
    return fig


# --------------------------------------------------------------------------- critical lines
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
    from .api import critical_line

    if isinstance(activations, str):
        activations = [activations]
    acts = [_act(a) for a in activations]
    if not acts:
        raise ValueError("activations is empty")
    if sb2 is None:
        # Critical lines leave sb2 = 0 steeply (tanh: sw2 = 1 at 0, 1.86 at 0.1): a log-spaced
        # run near 0 keeps that part from being drawn as a straight chord.
        sb2 = np.unique(np.concatenate([np.linspace(0.0, 2.0, 41), np.geomspace(1e-4, 0.05, 16)]))
    else:
        sb2 = np.unique(_values("sb2", sb2))
    fig, ax = _new_axes(ax, figsize=(7.6, 4.8))
    styles = ("-", "--", "-.", ":")
    xmax = 0.0
    for k, act in enumerate(acts):
        line = critical_line(act, sb2)
        w = np.asarray(line.values, dtype=float)
        # Later lines are thinner, so coinciding lines (relu, and gelu/silu at large sb2,
        # all at sw2 = 2) stay visible as bands.
        ax.plot(w, line["sb2"].values, color=PALETTE[k % len(PALETTE)], lw=max(3.6 - 0.4 * k, 1.0),
                ls=styles[k % len(styles)],
                label=_act_label(act))
        if np.isfinite(w).any():
            xmax = max(xmax, float(np.nanmax(w[np.isfinite(w)])))
    ax.set_xlim(0, xmax * 1.15 if xmax > 0 else 1.0)
    ax.set_ylim(float(sb2.min()), float(sb2.max()))
    ax.set_xlabel(_AXIS["sw2"])
    ax.set_ylabel(_AXIS["sb2"])
    ax.set_title("critical lines $\\chi_1 = 1$\n"
                 r"left of a line: ordered ($\chi_1 < 1$); right: chaotic ($\chi_1 > 1$)", fontsize=10)
    ax.grid(alpha=0.3, lw=0.5)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig
