"""Figures of the experiments: finite-width Monte Carlo beside the theory, and the
trainability of networks trained with SGD (``meanfield.experiments``)."""

from __future__ import annotations

import numpy as np

from ..core.analysis import analyze
from ..experiments.trainability import PREDICTED_CONSTANT, fit_depth_constant
from .style import plt as pyplot

def plot_simulation(ds):
    """q^l, c^l, E[(delta^l)^2] (and Theta^l if measured) against depth: Monte Carlo
    means with 2-SE error bars beside the mean-field theory.  Returns the Figure."""
    plt = pyplot()

    panels = [("q", "input"), ("correlation", None), ("grad", "input")]
    if np.any(np.isfinite(ds["ntk"].values)):
        panels.append(("ntk", "pair"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), layout="constrained")
    depth = ds.depth.values
    for ax, (name, dim) in zip(np.atleast_1d(axes), panels):
        keys = ds[dim].values if dim else [None]
        for j, key in enumerate(keys):
            sel = {dim: key} if dim else {}
            m, se, th = (ds[f"{name}{s}"].sel(sel).values for s in ("", "_se", "_theory"))
            lab = f" ({key})" if key is not None else ""
            ax.errorbar(depth, m, yerr=2 * se, fmt="o", ms=3, color=f"C{j}", capsize=2,
                        label=f"N={ds.attrs['width']}{lab}")
            ax.plot(depth, th, "-", color=f"C{j}", lw=1, label=f"theory{lab}")
        if name == "grad":
            ax.set_yscale("log")
        ax.set_xlabel("layer l")
        ax.set_title(ds[name].attrs["long_name"].split(":")[0].split(" =")[0], fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(f"{ds.attrs['activation']}, $\\sigma_w^2$={ds.attrs['sw2']:g}, "
                 f"$\\sigma_b^2$={ds.attrs['sb2']:g}, {ds.attrs['networks']} networks "
                 f"(error bars 2 SE)", fontsize=10)
    return fig


def plot_width_convergence(ds, depths=None):
    """Log-log |q-hat - q| and |Theta-hat - Theta| against width with an N^{-1/2} guide.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`width_convergence`.
    depths : sequence of int, optional
        Layers to draw (default: up to four spread over the depths).

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = pyplot()

    all_depths = ds.depth.values
    if depths is None:
        depths = np.unique(all_depths[np.linspace(0, len(all_depths) - 1, min(4, len(all_depths)))
                                      .round().astype(int)])
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6), layout="constrained")
    N = ds.width.values.astype(float)
    for ax, name, lab in ((axes[0], "q", r"RMS $|\hat q^l - q^l|$"),
                          (axes[1], "ntk", r"RMS $|\hat\Theta^l - \Theta^l|$")):
        for j, l in enumerate(depths):
            e = ds[f"{name}_error"].sel(depth=l).values
            s = ds[f"{name}_error_se"].sel(depth=l).values
            p = float(ds[f"{name}_error_exponent"].sel(depth=l))
            ax.errorbar(N, e, yerr=2 * s, fmt="o-", ms=3, color=f"C{j}", capsize=2,
                        label=f"l={l} (slope {p:.2f})")
        ref = ds[f"{name}_error"].sel(depth=depths[-1]).values[0]
        ax.plot(N, ref * np.sqrt(N[0] / N), "k--", lw=1, label=r"$\propto N^{-1/2}$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width N")
        ax.set_ylabel(lab)
        ax.legend(fontsize=7)
    fig.suptitle(f"{ds.attrs['activation']}, $\\sigma_w^2$={ds.attrs['sw2']:g}, "
                 f"$\\sigma_b^2$={ds.attrs['sb2']:g}: finite width vs mean field "
                 f"({ds.attrs['networks']} networks per width)", fontsize=10)
    return fig


def plot_trainability(ds, fit=None):
    """Heatmap of training accuracy over (sw2, L) with the 6 xi_c curve and the fitted boundary.

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`trainability`.
    fit : xarray.Dataset, optional
        Output of :func:`fit_depth_constant` (computed if not given).

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = pyplot()

    if fit is None:
        fit = fit_depth_constant(ds)
    w = ds.sw2.values
    L = ds.depth.values
    fig, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")

    def edges(v):
        v = np.asarray(v, dtype=float)
        mid = 0.5 * (v[1:] + v[:-1])
        if len(v) == 1:
            return np.array([v[0] - 0.5, v[0] + 0.5])
        return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])

    order = np.argsort(L)
    mesh = ax.pcolormesh(edges(w), edges(L[order]), ds.accuracy.transpose("depth", "sw2").values[order],
                         cmap="viridis", vmin=0.0, vmax=1.0, shading="flat")
    fig.colorbar(mesh, ax=ax, label="training accuracy")
    wf = np.linspace(w.min(), w.max(), 400)
    xi = np.array([analyze(ds.attrs["activation"], s, ds.attrs["sb2"]).xi_c for s in wf])
    c0 = ds.attrs.get("depth_constant", PREDICTED_CONSTANT)
    ax.plot(wf, c0 * xi, "w--", lw=1.5, label=f"{c0:g} $\\xi_c$ (mean field)")
    C = float(fit.constant)
    if np.isfinite(C):
        ax.plot(wf, C * xi, "r-", lw=1.2, label=f"fit: {C:.2f} $\\xi_c$")
        ax.plot(w, fit.boundary_depth.values, "r.", ms=5,
                label=f"boundary (accuracy {float(fit.threshold):.2f})")
    ax.set_ylim(edges(L[order])[0], edges(L[order])[-1])
    ax.set_xlim(edges(w)[0], edges(w)[-1])
    ax.set_xlabel(r"$\sigma_w^2$")
    ax.set_ylabel("depth L (hidden layers)")
    a = ds.attrs
    ax.set_title(f"{a['activation']} on digits, $\\sigma_b^2$={a['sb2']:g}, N={a['width']}, "
                 f"{a['steps']} SGD steps (lr {a['learning_rate']:g})", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return fig
