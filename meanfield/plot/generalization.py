"""The generalization phase diagram: test accuracy of the NNGP / NTK predictors over
(sigma_w^2, depth), with the critical sw2 and the xi_c, 6 xi_c depth curves."""

from __future__ import annotations

import numpy as np

from ..core.analysis import analyze
from .style import plt as pyplot

__all__ = ["plot_generalization"]

FINE = 300  # sw2 values on which the xi_c curves are drawn


def _edges(v, log=False):
    v = np.log(np.asarray(v, dtype=float)) if log else np.asarray(v, dtype=float)
    if v.size == 1:
        e = np.array([v[0] - 0.5, v[0] + 0.5])
    else:
        mid = 0.5 * (v[1:] + v[:-1])
        e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return np.exp(e) if log else e


def plot_generalization(ds):
    """One panel per predictor: accuracy over (sw2, depth), log depth axis.

    Grey cells: the training kernel is numerically singular at float64 (no
    prediction).  Overlays: the critical sw2 (dotted), xi_c and ``depth_constant`` xi_c
    (dashed, from :func:`meanfield.analyze` on a fine sw2 grid), and the measured first
    depth at chance (white crosses).

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`meanfield.experiments.generalization.generalization`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = pyplot()
    a = ds.attrs
    kinds = [str(k) for k in ds.kernel.values]
    w, L = ds.sw2.values, ds.depth.values
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.0 * len(kinds) + 0.8, 4.3),
                             layout="constrained", squeeze=False)
    wf = np.linspace(w.min(), w.max(), FINE)
    xi = np.array([analyze(a["activation"], s, a["sb2"], q0=s + a["sb2"]).xi_c for s in wf])
    C = a.get("depth_constant", 6.0)
    ew, eL = _edges(w), _edges(L, log=True)
    for ax, kind in zip(axes[0], kinds):
        acc = ds.accuracy.sel(kernel=kind).transpose("depth", "sw2").values
        ax.pcolormesh(ew, eL, np.where(np.isnan(acc), 1.0, np.nan), cmap="Greys", vmin=0, vmax=4,
                      shading="flat")
        mesh = ax.pcolormesh(ew, eL, acc, cmap="viridis", vmin=0.0, vmax=1.0, shading="flat")
        with np.errstate(invalid="ignore"):
            ax.plot(wf, xi, "w:", lw=1.4, label=r"$\xi_c$")
            ax.plot(wf, C * xi, "w--", lw=1.6, label=f"{C:g} $\\xi_c$")
        if np.isfinite(a.get("critical_sw2", np.nan)):
            ax.axvline(a["critical_sw2"], color="r", ls=":", lw=1.2,
                       label=f"critical $\\sigma_w^2$ = {a['critical_sw2']:.3g}")
        cd = ds.chance_depth.sel(kernel=kind).values
        ax.plot(w, cd, "wx", ms=6, mew=1.5, label=f"first depth at chance (acc $\\leq$ "
                                                   f"{a['chance_threshold']:.2f})")
        ax.set_yscale("log")
        ax.set_xlim(ew[0], ew[-1])
        ax.set_ylim(eL[0], eL[-1])
        ax.set_xlabel(r"$\sigma_w^2$")
        ax.set_ylabel("depth l")
        ax.set_title(f"{kind.upper()} predictor (t = inf)", fontsize=10)
        ax.legend(fontsize=7, loc="lower left", framealpha=0.6)
    fig.colorbar(mesh, ax=axes[0, -1], label="test accuracy")
    fig.suptitle(f"{a['activation']} on digits ({a['n_train']} train / {a['n_test']} test), "
                 f"$\\sigma_b^2$ = {a['sb2']:g}; grey: kernel singular at float64", fontsize=10)
    return fig
