"""Initialization advice: where to put (sigma_w^2, sigma_b^2) for a network of a given depth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from . import validate as V
from .activation import get_activation
from .analysis import analyze
from .critical import critical_sw2
from .functions import CF_LINEAR, CF_RELU
from .vocabulary import DEPTH_CONSTANT

# Default bias variances.  Homogeneous activations (ReLU family, linear) have their
# critical point at sb2 = 0 (He et al. 2015: sw2 = 2 for ReLU).  For the others sb2 = 0
# puts the critical point at q* = 0, where signals shrink to nothing, so we follow
# Schoenholz et al. (2017), whose experiments use sb2 = 0.05: small, but q* > 0.
DEFAULT_SB2_HOMOGENEOUS = 0.0
DEFAULT_SB2 = 0.05


@dataclass(frozen=True)
class Recommendation:
    """Initialization advice for a depth-``depth`` network.

    Attributes
    ----------
    activation : str
    depth : int
        Target number of layers L.
    sw2, sb2 : float
        Recommended weight and bias variances (on the critical line chi_1 = 1).
    sw2_interval : (float, float)
        Range of sw2 at this sb2 where the predicted max depth ``depth_constant * xi_c``
        is at least L (the trainable band around the critical line).  An end is ``0`` or
        ``inf`` when the band reaches it.
    weight_std_factor : float
        sqrt(sw2): draw weights with standard deviation ``weight_std_factor / sqrt(fan_in)``.
    bias_std : float
        sqrt(sb2).
    depth_constant : float
    q_star, c_star : float
        Fixed points at the recommended point.
    """

    activation: str
    depth: int
    sw2: float
    sb2: float
    sw2_interval: tuple
    weight_std_factor: float
    bias_std: float
    depth_constant: float
    q_star: float
    c_star: float

    def weight_std(self, fan_in: int) -> float:
        """Per-layer weight standard deviation sigma_w / sqrt(fan_in)."""
        return self.weight_std_factor / math.sqrt(fan_in)

    def __str__(self):
        lo, hi = self.sw2_interval
        return "\n".join([
            f"Initialization for a {self.depth}-layer {self.activation} network",
            f"  sigma_w^2 = {self.sw2:.6g}   (critical line chi_1 = 1 at sigma_b^2 = {self.sb2:g})",
            f"  sigma_b^2 = {self.sb2:.6g}",
            f"  trainable sigma_w^2 range for L = {self.depth}: [{lo:.6g}, {hi:.6g}]"
            f"  ({self.depth_constant:g} xi_c >= L)",
            f"  weights: std = {self.weight_std_factor:.6g} / sqrt(fan_in)"
            f"  (e.g. {self.weight_std(512):.6g} for fan_in = 512)",
            f"  biases:  std = {self.bias_std:.6g}",
            f"  PyTorch: nn.init.normal_(layer.weight, std={self.weight_std_factor:.6g} / "
            f"math.sqrt(layer.in_features)); nn.init.normal_(layer.bias, std={self.bias_std:.6g})",
        ])

    def __repr__(self):
        return (f"Recommendation(activation={self.activation!r}, depth={self.depth}, sw2={self.sw2:.10g}, "
                f"sb2={self.sb2:g}, sw2_interval=({self.sw2_interval[0]:.6g}, {self.sw2_interval[1]:.6g}))")


def _band_edge(f, x_crit, direction, limit):
    """Where f (= log(max_depth / L)) falls below 0 moving away from x_crit."""
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
        fx = f(x)
        if not fx >= 0:  # NaN (no fixed point) counts as untrainable
            lo, hi = sorted((x_in, x))
            g = (lambda y: f(y) if math.isfinite(f(y)) else -1.0)
            if g(lo) * g(hi) > 0:
                return x_in
            return optimize.brentq(g, lo, hi, xtol=1e-12 * x_crit)
        x_in = x
        step *= 2.0


def recommend(activation, depth, *, sb2=None, depth_constant=DEPTH_CONSTANT) -> Recommendation:
    """The (sigma_w^2, sigma_b^2) to initialize a depth-L network with.

    Picks sb2 (default: 0 for the ReLU family and linear, 0.05 otherwise, see
    ``DEFAULT_SB2``), puts sw2 on the critical line chi_1 = 1 where xi_c diverges
    (Schoenholz et al. 2017), and reports the band of sw2 around it in which
    ``depth_constant * xi_c >= depth``.

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
        Invalid depth, sb2 or activation, or no critical line at this sb2.
    """
    act = get_activation(activation)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    depth = int(depth)
    dc = V.scalar("depth_constant", depth_constant, minimum=0.0, inclusive=False)
    if sb2 is None:
        sb2 = DEFAULT_SB2_HOMOGENEOUS if act.closed_form in (CF_RELU, CF_LINEAR) else DEFAULT_SB2
    sb2 = V.variance("sb2", sb2)
    sw2c = critical_sw2(act, sb2)
    if not math.isfinite(sw2c):
        raise ValueError(f"sb2: {act.name} has no critical line at sb2 = {sb2:g} (chi_1 never "
                         f"equals 1 there; try another sb2)")

    def f(x):
        r = analyze(act, x, sb2, depth_constant=dc)
        return math.log(r.max_depth / depth) if r.max_depth > 0 else -math.inf

    lo = _band_edge(f, sw2c, -1, 0.0)
    hi = _band_edge(f, sw2c, +1, 1e4)
    at = analyze(act, sw2c, sb2, depth_constant=dc)
    return Recommendation(act.name, depth, sw2c, sb2, (lo, hi), math.sqrt(sw2c), math.sqrt(sb2), dc,
                          at.q_star, at.c_star)
