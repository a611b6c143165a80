"""Initialization advice: where to put (sigma_w^2, sigma_b^2) for a network of a given depth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from . import engine
from . import validate as V
from .activation import get_activation
from .analysis import analyze
from .critical import critical_point
from .functions import CF_LINEAR, CF_RELU
from .vocabulary import DEPTH_CONSTANT, MEASURED_DEPTH_CONSTANT

__all__ = ["Recommendation", "recommend"]

# Default bias variances.  Homogeneous activations (ReLU family, linear) have their
# critical point at sb2 = 0 (He et al. 2015: sw2 = 2 for ReLU).  For the others sb2 = 0
# puts the critical point at q* = 0, where signals shrink to nothing, so we follow
# Schoenholz et al. (2017), whose experiments use sb2 = 0.05: small, but q* > 0.
DEFAULT_SB2_HOMOGENEOUS = 0.0
DEFAULT_SB2 = 0.05
# Where the requested sb2 has no edge of chaos, these are tried (nearest first).
SB2_CANDIDATES = np.unique(np.concatenate([[0.0], np.geomspace(1e-3, 100.0, 31)]))
# A recommended point must be on the critical line to this accuracy.
CHI1_TOL = 1e-9
# Band search: beyond this q* the lengths are treated as unbounded (untrainable).
BAND_Q_MAX = 1e6
SW2_MAX = 1e4


@dataclass(frozen=True)
class Recommendation:
    """Initialization advice for a depth-``depth`` network.

    Attributes
    ----------
    activation : str
        Name of the activation.
    depth : int
        Target number of layers L.
    sw2, sb2 : float
        Recommended weight and bias variances, on the critical line chi_1 = 1 (to 1e-9).
    requested_sb2 : float
        The sb2 asked for (or the default); differs from ``sb2`` when it has no edge of
        chaos, and ``note`` then says why.
    sw2_interval : (float, float)
        Range of sw2 at this sb2 where the predicted max depth ``depth_constant * xi_c``
        is at least L (the trainable band around the critical line).  An end is ``0`` or
        ``inf`` when the band reaches it.
    sw2_interval_measured : (float, float)
        The same band with the depth constant this project measured by training tanh
        networks on digits (``MEASURED_DEPTH_CONSTANT``, see ``figures/trainability.py``).
    weight_std_factor : float
        sqrt(sw2): draw weights with standard deviation ``weight_std_factor / sqrt(fan_in)``.
    bias_std : float
        sqrt(sb2).
    depth_constant, measured_depth_constant : float
        C in max depth = C xi_c: the paper's (6) and this project's measured one.
    q_star, c_star, chi1 : float
        Fixed points and chi_1 at the recommended point.
    note : str
        Why ``sb2`` differs from ``requested_sb2``, or that q* is infinite there.
    """

    activation: str
    depth: int
    sw2: float
    sb2: float
    requested_sb2: float
    sw2_interval: tuple
    sw2_interval_measured: tuple
    weight_std_factor: float
    bias_std: float
    depth_constant: float
    measured_depth_constant: float
    q_star: float
    c_star: float
    chi1: float
    note: str = ""

    def weight_std(self, fan_in: int) -> float:
        """Per-layer weight standard deviation sigma_w / sqrt(fan_in)."""
        return self.weight_std_factor / math.sqrt(fan_in)

    def __str__(self):
        lo, hi = self.sw2_interval
        mlo, mhi = self.sw2_interval_measured
        lines = [f"Initialization for a {self.depth}-layer {self.activation} network"]
        if self.note:
            lines.append(f"  note: {self.note}")
        lines += [
            f"  sigma_w^2 = {self.sw2:.6g}   (critical line chi_1 = 1 at sigma_b^2 = {self.sb2:g})",
            f"  sigma_b^2 = {self.sb2:.6g}",
            f"  trainable sigma_w^2 range for L = {self.depth}: [{lo:.6g}, {hi:.6g}]"
            f"  ({self.depth_constant:g} xi_c >= L, Schoenholz et al. 2017)",
            f"                                 measured: [{mlo:.6g}, {mhi:.6g}]"
            f"  ({self.measured_depth_constant:g} xi_c >= L, this project's SGD experiment)",
            f"  weights: std = {self.weight_std_factor:.6g} / sqrt(fan_in)"
            f"  (e.g. {self.weight_std(512):.6g} for fan_in = 512)",
            f"  biases:  std = {self.bias_std:.6g}",
            f"  PyTorch: nn.init.normal_(layer.weight, std={self.weight_std_factor:.6g} / "
            f"math.sqrt(layer.in_features)); nn.init.normal_(layer.bias, std={self.bias_std:.6g})",
        ]
        return "\n".join(lines)

    def __repr__(self):
        return (f"Recommendation(activation={self.activation!r}, depth={self.depth}, sw2={self.sw2:.10g}, "
                f"sb2={self.sb2:g}, sw2_interval=({self.sw2_interval[0]:.6g}, {self.sw2_interval[1]:.6g}))")


def _log_depth_ratio(act, sb2, depth, constant):
    """x -> log(constant xi_c(x) / L); -1 where q* is infinite or huge (lengths blow up)."""
    def f(x):
        q, _ = engine.chi1(act, x, sb2)
        if not (np.isfinite(q) and q <= BAND_Q_MAX):
            return -1.0
        r = analyze(act, x, sb2, depth_constant=constant)
        if not r.max_depth > 0:  # NaN: a solver failed; 0: no depth at all
            return -1.0
        return math.log(r.max_depth / depth)
    return f


def _band_edge(f, x_crit, direction, limit):
    """Where f falls below 0 moving away from x_crit (steps doubling from 1e-3 x_crit)."""
    x_in = x_crit
    step = 1e-3 * x_crit
    while True:
        x = x_crit + direction * step
        if direction < 0 and x <= limit:
            if f(limit) >= 0:
                return limit
            x = limit
        if direction > 0 and x >= limit:
            return math.inf
        if not f(x) >= 0:
            lo, hi = sorted((x_in, x))
            if f(lo) * f(hi) > 0:
                return x_in
            edge = optimize.brentq(f, lo, hi, xtol=1e-12 * x_crit)
            # A band that ends where q* diverges (the ReLU family just above its critical
            # point) ends at the critical point itself, not a rounding step beyond it.
            return x_crit if abs(edge - x_crit) <= 1e-9 * x_crit else edge
        x_in = x
        step *= 2.0


def _band(act, sb2, depth, constant, sw2c):
    f = _log_depth_ratio(act, sb2, depth, constant)
    return _band_edge(f, sw2c, -1, 0.0), _band_edge(f, sw2c, +1, SW2_MAX)


def _edge_of_chaos(act, sb2):
    """(critical point, note): at sb2, or at the nearest sb2 that has one."""
    cp = critical_point(act, sb2)
    if math.isfinite(cp.sw2):
        return cp, cp.reason
    order = np.argsort(np.abs(np.log1p(SB2_CANDIDATES) - math.log1p(sb2)))
    found = None
    for s in SB2_CANDIDATES[order]:
        c = critical_point(act, float(s))
        if math.isfinite(c.sw2):
            found = c
            break
    if found is None:
        why = cp.reason.split(": ", 1)[-1]
        raise ValueError(f"{act.name} has no edge of chaos at any sb2 in [0, {SB2_CANDIDATES[-1]:g}], "
                         f"so no initialization is critical (at sb2 = {sb2:g}: {why})")
    # The boundary of the sb2 range with an edge of chaos, between sb2 and found.sb2, to
    # ~5 % (it is only quoted in the note; each step is a full critical-point search).
    lo, hi = sorted((sb2, found.sb2))
    for _ in range(6):
        mid = math.sqrt(lo * hi) if lo > 0 else 0.5 * hi
        ok = math.isfinite(critical_point(act, mid).sw2)
        if (ok and found.sb2 > sb2) or (not ok and found.sb2 < sb2):
            hi = mid
        else:
            lo = mid
    boundary = hi if found.sb2 > sb2 else lo
    side = "from" if found.sb2 > sb2 else "up to"
    return found, (f"{cp.reason}; edges of chaos exist {side} sb2 ~ {boundary:.3g}, so the "
                   f"nearest checked sb2 with one, {found.sb2:g}, is used (pass sb2= to choose)")


def recommend(activation, depth, *, sb2=None, depth_constant=DEPTH_CONSTANT) -> Recommendation:
    """The (sigma_w^2, sigma_b^2) to initialize a depth-L network with.

    Picks sb2 (default: 0 for the ReLU family and linear, 0.05 otherwise, see
    ``DEFAULT_SB2``), puts sw2 on the critical line chi_1 = 1 where xi_c diverges
    (Schoenholz et al. 2017; :func:`meanfield.critical_point`), and reports the band of sw2
    around it in which ``depth_constant * xi_c >= depth``, beside the band for the depth
    constant this project measured.  Where the requested sb2 has no edge of chaos (GELU
    and SiLU at small sb2: q* diverges first), the nearest sb2 that has one is used and
    ``note`` says so; an activation without any edge of chaos (softplus) raises.

    Parameters
    ----------
    activation : str or Activation
    depth : int
        Number of layers L >= 1.
    sb2 : float, optional
        Bias variance to use instead of the default.
    depth_constant : float, default 6

    Raises
    ------
    ValueError
        Invalid depth, sb2 or activation, or no edge of chaos for any sb2 checked.
    """
    act = get_activation(activation)
    depth = V.depth(depth)
    dc = V.scalar("depth_constant", depth_constant, minimum=0.0, inclusive=False)
    if sb2 is None:
        sb2 = DEFAULT_SB2_HOMOGENEOUS if act.closed_form in (CF_RELU, CF_LINEAR) else DEFAULT_SB2
    requested = V.variance("sb2", sb2)
    cp, note = _edge_of_chaos(act, requested)
    sw2c, sb2 = cp.sw2, cp.sb2
    at = analyze(act, sw2c, sb2, depth_constant=dc)
    if not abs(at.chi1 - 1.0) <= CHI1_TOL:
        raise ValueError(f"{act.name}: the critical point found at sb2 = {sb2:g} has chi_1 = "
                         f"{at.chi1!r}, not 1 to {CHI1_TOL:g}; no recommendation")
    return Recommendation(act.name, depth, sw2c, sb2, requested, _band(act, sb2, depth, dc, sw2c),
                          _band(act, sb2, depth, MEASURED_DEPTH_CONSTANT, sw2c), math.sqrt(sw2c),
                          math.sqrt(sb2), dc, MEASURED_DEPTH_CONSTANT, at.q_star, at.c_star,
                          at.chi1, note)
