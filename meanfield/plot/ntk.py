"""NTK trainability and generalization per depth (Xiao, Pennington and Schoenholz 2020)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .style import PALETTE, plt

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
    fig, axes = plt().subplots(1, 3, figsize=(13.5, 4.3), layout="constrained", sharex=True)
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
