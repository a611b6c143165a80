"""Iterated maps and signal propagation with depth: the length and correlation maps with
their fixed points and cobwebs (Poole et al. 2016, Figs. 1-2), and q^l, c^l against depth
(Schoenholz et al. 2017)."""

from __future__ import annotations

import math

import numpy as np

from ..core.analysis import analyze, correlation_map_values, fixed_points, length_map_values
from ..ntk import two_point_kernels
from .style import PALETTE, act_label, act_of, new_axes, plt, scalar_variance, variances


def _curves_of(activation, sw2, sb2):
    """(activation, weight variances one per curve, the one bias variance), validated."""
    return act_of(activation), variances("sw2", sw2), scalar_variance("sb2", sb2)

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


def _frame(ax, limits, quantity, symbol, unstable, title, fontsize):
    """Square axes x^l -> x^{l+1} over ``limits`` with the stable/unstable marker legend."""
    ax.plot([], [], "o", color="0.3", ms=7, label=rf"stable ${symbol}^*$")
    ax.plot([], [], "o", mfc="white", mec="0.3", ms=7, label=unstable)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(rf"{quantity} ${symbol}^l$ (layer $l$)")
    ax.set_ylabel(rf"{quantity} ${symbol}^{{l+1}}$ (layer $l+1$)")
    ax.set_title(title)
    ax.legend(fontsize=fontsize, loc="upper left", framealpha=0.85)


def length_map(activation, sw2=(1.0, 4.0, 9.0, 16.0), sb2=0.09, *, q0=None, q_max=None, n_steps=8,
               ax=None):
    """The length map q^{l+1} = V(q^l) for several sw2, with fixed points and cobwebs.

    ``V(q) = sw2 E[phi(sqrt(q) z)^2] + sb2`` (docs/theory.md, "Length map"); its fixed points
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
    act, sw2s, sb2 = _curves_of(activation, sw2, sb2)
    fps = [fixed_points(act, w, sb2) for w in sw2s]
    if q_max is None:
        qs = [p["q"] for fp in fps for p in fp if math.isfinite(p["q"])]
        q_max = max([1.0] + [1.3 * v for v in qs])
    q_max = float(variances("q_max", q_max)[0])
    if q_max <= 0:
        raise ValueError(f"q_max must be > 0, got {q_max}")
    q0 = 0.8 * q_max if q0 is None else float(variances("q0", q0)[0])
    fig, ax = new_axes(ax, figsize=(5.6, 5.0))
    q = np.linspace(0.0, q_max, 241)
    ax.plot(q, q, color="0.3", lw=1, ls=":", label=r"$q^{l+1} = q^l$")
    for k, (w, fp) in enumerate(zip(sw2s, fps)):
        colour = PALETTE[k % len(PALETTE)]
        ax.plot(q, length_map_values(act, w, sb2, q), color=colour, lw=2,
                label=rf"$\sigma_w^2$ = {w:g}")
        if n_steps > 0:
            _cobweb(ax, lambda v: length_map_values(act, w, sb2, v)[0], q0, int(n_steps), colour)
        for p in fp:
            if p["q"] <= q_max:
                ax.plot([p["q"]], [p["q"]], "o", ms=7, mec=colour, mew=1.5,
                        mfc=colour if p["stable"] else "white", zorder=5)
    _frame(ax, (0.0, q_max), "squared length", "q", r"unstable $q^*$",
           rf"{act_label(act)} length map, $\sigma_b^2$ = {sb2:g}", fontsize=8)
    return fig


def correlation_map(activation, sw2=(1.0, 4.0, 9.0, 16.0), sb2=0.09, *, c0=0.1, n_steps=8, ax=None):
    """The correlation map c^{l+1} = C(c^l) at q = q* for several sw2, with fixed points.

    ``C(c) = [sw2 E phi(u1) phi(u2) + sb2] / q*`` with both inputs at the length fixed
    point q* (docs/theory.md, "Correlation map"); c = 1 is always a fixed point, stable when
    chi_1 < 1; the chaotic phase has a stable c* < 1.  q*, c* and chi_1 come from
    :func:`meanfield.analyze`.  Defaults as in Poole et al. (2016), Fig. 2 (tanh,
    sigma_b = 0.3, sigma_w = 1 ... 4).

    Parameters
    ----------
    activation : str or Activation
        A built-in or registered activation, by name or as an :class:`Activation`.
    sw2 : float or sequence of float
        Weight variances, one curve each.
    sb2 : float
        Bias variance.  The map needs q* > 0: sb2 = 0 in the ordered phase of an activation
        with phi(0) = 0 has q* = 0 and raises ValueError.
    c0 : float
        Starting correlation of the cobweb, in [-1, 1].
    n_steps : int
        Iterates of the correlation map drawn from ``c0`` for each curve (0: none).
    ax : matplotlib Axes, optional
        Axes to draw into; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding ``ax``.
    """
    act, sw2s, sb2 = _curves_of(activation, sw2, sb2)
    c0 = float(c0)
    if not -1.0 <= c0 <= 1.0:
        raise ValueError(f"c0 must be in [-1, 1], got {c0}")
    results = [analyze(act, w, sb2) for w in sw2s]
    for r in results:
        if not (math.isfinite(r.q_star) and r.q_star > 0):
            raise ValueError(f"correlation map undefined at sw2={r.sw2:g}, sb2={sb2:g}: q* = {r.q_star} "
                             f"(needs a finite q* > 0; {r.status})")
    fig, ax = new_axes(ax, figsize=(5.6, 5.0))
    lo = 0.0 if c0 >= 0 and sb2 >= 0 else -1.0
    c = np.linspace(lo, 1.0, 201)
    ax.plot(c, c, color="0.3", lw=1, ls=":", label=r"$c^{l+1} = c^l$")
    for k, r in enumerate(results):
        colour = PALETTE[k % len(PALETTE)]
        ax.plot(c, correlation_map_values(act, r.sw2, sb2, r.q_star, c), color=colour, lw=2,
                label=rf"$\sigma_w^2$ = {r.sw2:g} ($\chi_1$ = {r.chi1:.2f}, {r.phase})")
        if n_steps > 0:
            _cobweb(ax, lambda v, r=r: correlation_map_values(act, r.sw2, sb2, r.q_star, v)[0],
                    c0, int(n_steps), colour)
        # Stable markers on top: every curve shares the point c = 1.
        ax.plot([1.0], [1.0], "o", ms=7, mec=colour, mew=1.5,
                mfc=colour if r.chi1 <= 1.0 else "white", zorder=6 if r.chi1 <= 1.0 else 5,
                clip_on=False)
        if math.isfinite(r.c_star) and r.c_star < 1.0:
            ax.plot([r.c_star], [r.c_star], "o", ms=7, color=colour, zorder=5)
    _frame(ax, (lo, 1.0), "correlation", "c", r"unstable $c^* = 1$",
           rf"{act_label(act)} correlation map, $\sigma_b^2$ = {sb2:g}", fontsize=7.5)
    return fig


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
    :func:`meanfield.analyze`; docs/theory.md, "Depth scales"), matched at the deepest resolved
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
    act, sw2s, sb2 = _curves_of(activation, sw2, sb2)
    fig, axes = plt().subplots(2, 2, figsize=(9.6, 7.4), layout="constrained")
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
    fig.suptitle(rf"{act_label(act)}: signal propagation with depth, $\sigma_b^2$ = {sb2:g}")
    return fig
