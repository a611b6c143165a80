"""Test accuracy on digits of the CNN-GP / CNTK by depth, beside the fully connected kernels
and trained finite CNNs (:func:`meanfield.experiments.cntk_digits.cntk_digits`)."""

from __future__ import annotations

import numpy as np

from .style import PALETTE
from .style import plt as pyplot

__all__ = ["plot_cntk_digits"]

# (architecture, colour, label) of each line family
FAMILIES = (("fc", PALETTE[6], "fully connected"), ("conv flatten", PALETTE[0], "CNN flatten"),
            ("conv gap", PALETTE[1], "CNN GAP"))


def plot_cntk_digits(ds):
    """Two panels: the kernel predictors at t = inf (NNGP dashed, NTK solid) per depth; and,
    at the depths where finite CNNs were trained, the CNTK mean predictor and the expected
    accuracy of one infinitely wide network at the finite network's training time t (open
    markers) beside the trained network (filled).  Missing points: the training
    kernel is singular at float64 (depth 1: the linear kernel of 200 images in 64 pixels).

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`meanfield.experiments.cntk_digits.cntk_digits`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.4), layout="constrained", sharey=True)
    d = ds.depth.values
    for arch, colour, label in FAMILIES:
        acc = ds.accuracy.sel(architecture=arch)
        axes[0].plot(d, acc.sel(predictor="ntk"), "-o", color=colour, label=f"{label}: NTK")
        axes[0].plot(d, acc.sel(predictor="nngp"), "--s", color=colour, mfc="none",
                     label=f"{label}: NNGP")
        if arch == "fc":
            continue
        at_t = acc.sel(predictor="ntk at t").values
        fin = acc.sel(predictor="finite").values
        ok = np.isfinite(at_t) | np.isfinite(fin)
        axes[1].plot(d[ok], at_t[ok], ":o", color=colour, mfc="none",
                     label=f"{label}: CNTK mean at the same t")
        if "one net at t" in ds.predictor.values:
            one = acc.sel(predictor="one net at t").values
            axes[1].plot(d[ok], one[ok], "-.^", color=colour, mfc="none",
                         label=f"{label}: one infinitely wide net at t")
        axes[1].plot(d[ok], fin[ok], "-D", color=colour,
                     label=f"{label}: finite ({ds.attrs['width']} channels)")
    for ax, title in zip(axes, ("kernel predictors, t = inf",
                                f"{ds.attrs['steps']} gradient-descent steps")):
        ax.axhline(ds.attrs["chance_threshold"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("depth l (layers of weights)")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel(f"test accuracy ({ds.attrs['n_test']} digits)")
    fig.suptitle(f"{ds.attrs['activation']}, $\\sigma_w^2$ = {ds.attrs['sw2']:g}, "
                 f"$\\sigma_b^2$ = {ds.attrs['sb2']:g}, {ds.attrs['filter_size']}x"
                 f"{ds.attrs['filter_size']} circular convolutions, {ds.attrs['n_train']} "
                 f"training images")
    return fig
