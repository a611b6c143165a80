"""The CNN phase diagram along sigma_w^2: depth scales of spatial Fourier modes
(:func:`meanfield.conv_depth_scales`; Xiao et al. 2018)."""

from __future__ import annotations

import math

import numpy as np

from ..core.critical import critical_sw2
from ..ntk.conv_scales import conv_depth_scales
from .style import AXIS, LOG_VMAX, PALETTE, act_label, act_of, new_axes, scalar_variance


def conv_mode_depth_scales(activation, sb2, filter_size, image_shape, *, sw2=None, modes=None,
                           ax=None):
    """Depth scale xi(w) of a few spatial modes of a circular-padded CNN against sw2.

    The uniform mode w = 0 (the one the flatten and GAP readouts average) has the fully
    connected xi_c and diverges at the critical sw2; every other mode decays like
    (chi_c lambda(w))^l and stays finite there: -1/log|lambda(w)| layers at criticality.

    Parameters
    ----------
    activation : str or Activation
    sb2 : float
    filter_size : int
        Odd k.
    image_shape : (H, W)
    sw2 : array_like, optional
        Weight variances (default: 200 points from 0.2 to 2.5 times the critical sw2, or
        0.1..5 without one).
    modes : list of (a, b), optional
        Mode numbers (w = 2 pi (a/H, b/W)); default (0, 0), (1, 0), (1, 1), (H//4, 0) and the
        highest (H//2, W//2).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    act = act_of(activation)
    b = scalar_variance("sb2", sb2)
    H, W = int(image_shape[0]), int(image_shape[1])
    sc = critical_sw2(act, b)
    if sw2 is None:
        sw2 = (np.linspace(0.2 * sc, 2.5 * sc, 200) if math.isfinite(sc)
               else np.linspace(0.1, 5.0, 200))
    sw2 = np.asarray(sw2, dtype=float)
    if modes is None:
        modes = [(0, 0), (1, 0), (1, 1), (max(H // 4, 1), 0), (H // 2, W // 2)]
    modes = list(dict.fromkeys((int(a), int(c)) for a, c in modes))
    data = [conv_depth_scales(act, w, b, filter_size, (H, W)) for w in sw2]
    fig, ax = new_axes(ax, figsize=(7.0, 5.6))
    styles = ["-", "--", "-.", ":", (0, (5, 1, 1, 1))]
    finite = []
    for n, (a, c) in enumerate(modes):
        ya = (a + H // 2) % H - H // 2
        xb = (c + W // 2) % W - W // 2
        xi = np.array([float(d.xi.sel(mode_y=ya, mode_x=xb)) for d in data])
        lam = float(data[0].eigenvalue.sel(mode_y=ya, mode_x=xb))
        y = np.where(np.isfinite(xi) & (xi > 0), xi, np.nan)
        finite.append(y[np.isfinite(y)])
        label = (r"$\omega = 0$: uniform / readout mode, $\xi_c$ of the FC map" if (a, c) == (0, 0)
                 else rf"$\omega = 2\pi({a}/{H}, {c}/{W})$, $\lambda = {lam:.3g}$")
        ax.semilogy(sw2, y, color=PALETTE[n % len(PALETTE)], lw=2 if n == 0 else 1.6,
                    ls=styles[n % len(styles)], label=label)
    if math.isfinite(sc) and sw2[0] <= sc <= sw2[-1]:
        ax.axvline(sc, color="k", lw=1, ls="-.",
                   label=rf"critical $\sigma_w^2$ $\approx$ {sc:.3g} ($\chi_1$ = 1)")
        ax.text(0.02, 0.96, "ordered", transform=ax.transAxes, ha="left", va="top", weight="bold")
        ax.text(0.98, 0.96, "chaotic", transform=ax.transAxes, ha="right", va="top", weight="bold")
    f = np.concatenate(finite) if finite else np.array([])
    if f.size:
        ax.set_ylim(max(f.min() * 0.5, 1e-2), min(f.max() * 2, LOG_VMAX))
    ax.set_xlim(sw2[0], sw2[-1])
    ax.set_xlabel(AXIS["sw2"])
    ax.set_ylabel(r"depth scale $\xi(\omega) = -1/\log|\chi_c \lambda(\omega)|$ (layers)")
    ax.set_title(rf"{act_label(act)} CNN, {filter_size}$\times${filter_size} filters, "
                 rf"{H}$\times${W} circular, $\sigma_b^2$ = {b:g}")
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    return fig
