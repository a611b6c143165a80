"""One point and grids of points: :func:`analyze`, :func:`phase_diagram`, :func:`fixed_points`.

Conventions (docs/theory.md): ``sw2`` = sigma_w^2 and ``sb2`` = sigma_b^2 are *variances*;
the weights of a layer with fan-in N are drawn from N(0, sw2 / N).  Depth index l counts
pre-activation layers.  ``rho`` is the dropout keep probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import optimize

from .._version import __version__
from . import engine
from . import validate as V
from .activation import Activation, activation_attrs, get_activation
from .budget import check_memory
from .gaussian.moments import dphi2_at_zero, moments1, moments2
from .vocabulary import (CONVENTIONS, CRITICAL_TOL, DEPTH_CONSTANT, Q0, Phase, Status, attrs,
                         flag_attrs)

__all__ = ["Result", "analyze", "phase_diagram", "fixed_points"]

# Peak memory of phase_diagram per grid point (measured with tracemalloc: the meshgrid,
# the engine's outputs and the Dataset built from them), used to refuse oversized grids.
GRID_BYTES_PER_POINT = 200


@dataclass(frozen=True)
class Result:
    """Mean-field quantities at one initialization (all dimensionless; depths in layers).

    Attributes
    ----------
    activation : str
        Activation name (its parameters are in ``activation_params``).
    sw2, sb2 : float
        Weight and bias variances sigma_w^2, sigma_b^2.
    rho : float
        Dropout keep probability (1 = no dropout).
    q_star : float
        Length-map fixed point q* = V(q*) reached from ``q0``; ``inf`` if none exists.
    c_star : float
        Stable correlation fixed point: 1 in the ordered phase, c* < 1 when chaotic.
    chi1 : float
        chi_1 = sw2 E[phi'(sqrt(q*) z)^2], the slope of C at c = 1.
    chi_c : float
        Slope of the correlation map at c*.
    xi_q, xi_c, xi_grad : float
        Depth scales -1/log V'(q*), -1/log chi_c, -1/log chi_1 (with dropout the gradient
        slope is sw2/rho E[phi'^2]).  ``inf`` on the critical line; ``xi_grad < 0`` when
        gradients explode.
    phase : str
        ``"ordered"``, ``"critical"`` (|log chi_1| <= critical_tol) or ``"chaotic"``;
        ``"undetermined"`` only when chi_1 cannot be computed.
    max_depth : float
        ``depth_constant * xi_c``, the predicted maximum trainable depth.
    converged : bool
        Whether every solver converged; if not, ``status`` says why.
    status : str
        ``"converged"`` or the reason a quantity is NaN.
    """

    activation: str
    sw2: float
    sb2: float
    q_star: float
    c_star: float
    chi1: float
    chi_c: float
    xi_q: float
    xi_c: float
    xi_grad: float
    phase: str
    max_depth: float
    converged: bool
    status: str
    rho: float = 1.0
    depth_constant: float = DEPTH_CONSTANT
    activation_params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dict (JSON-friendly: inf/NaN stay floats)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __repr__(self):
        p = "".join(f", {k}={v:g}" for k, v in self.activation_params.items())
        lines = [
            f"meanfield.Result({self.activation}{p}: sw2={self.sw2:g}, sb2={self.sb2:g}"
            + (f", rho={self.rho:g}" if self.rho != 1.0 else "") + ")",
            f"  phase      {self.phase}",
            f"  q*         {self.q_star:.12g}",
            f"  c*         {self.c_star:.12g}",
            f"  chi_1      {self.chi1:.12g}",
            f"  chi_c      {self.chi_c:.12g}",
            f"  xi_q       {self.xi_q:.6g} layers",
            f"  xi_c       {self.xi_c:.6g} layers",
            f"  xi_grad    {self.xi_grad:.6g} layers",
            f"  max depth  {self.max_depth:.6g} layers ({self.depth_constant:g} xi_c)",
            f"  status     {self.status}",
        ]
        return "\n".join(lines)


def options(rho=1.0, q0=Q0, depth_constant=DEPTH_CONSTANT, critical_tol=CRITICAL_TOL) -> dict:
    """The validated solver options shared by a diagram (keyword arguments of compute_points)."""
    return dict(rho=V.keep_probability(rho), q0=V.scalar("q0", q0, minimum=0.0),
                depth_constant=V.scalar("depth_constant", depth_constant, minimum=0.0,
                                        inclusive=False),
                critical_tol=V.scalar("critical_tol", critical_tol, minimum=0.0))


def analyze(activation, sw2, sb2, *, rho=1.0, q0=Q0, depth_constant=DEPTH_CONSTANT,
            critical_tol=CRITICAL_TOL) -> Result:
    """Every mean-field quantity at one initialization.

    Solves the length map ``q = (sw2/rho) E[phi(sqrt(q) z)^2] + sb2`` for the fixed
    point reached from ``q0``, then the correlation map
    ``C(c) = [sw2 E phi(u1) phi(u2) + sb2] / q*`` for its stable fixed point c*, and
    derives chi_1, chi_c, the depth scales and the phase (docs/theory.md).

    Parameters
    ----------
    activation : str or Activation
        A name from :func:`meanfield.activations` or an :class:`Activation`.
    sw2, sb2 : float
        Weight and bias *variances* (not standard deviations), >= 0.
    rho : float, default 1
        Dropout keep probability in (0, 1].  With rho < 1, c = 1 is no longer a fixed
        point and xi_c stays finite (no critical line).
    q0 : float, default 1
        Starting length: the reported q* is the fixed point the iteration reaches from
        q0 (1 = inputs with unit per-coordinate variance).  See :func:`fixed_points`.
    depth_constant : float, default 6
        max_depth = depth_constant * xi_c.
    critical_tol : float, default 1e-3
        Points with |log chi_1| <= critical_tol are labelled ``"critical"``.

    Notes
    -----
    Edge cases, reported rather than smoothed over:

    * sb2 = 0 with phi(0) = 0 in the ordered phase: q* = 0 exactly (the length decays to
      zero); chi_1 = sw2 phi'(0)^2.  On the critical line itself the approach to q* is a
      power law, not exponential, which is why xi_q is infinite there.
    * No finite fixed point (ReLU with sw2 >= 2 and sb2 > 0; any map that grows past
      q = 1e8): ``q_star = inf``, ``converged = False``, and chi_1 is the q -> inf limit
      when the activation's asymptotic slopes are known.
    * Odd phi with sb2 = 0 in the chaotic phase: c* = 0 exactly.

    Raises
    ------
    ValueError
        Negative or non-finite variances, unknown activation, invalid options.
    """
    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    opts = options(rho, q0, depth_constant, critical_tol)
    res = engine.compute_points(act, np.array([sw2]), np.array([sb2]), parallel=False, **opts)
    st = Status(int(res["status"][0]))
    return Result(
        activation=act.name, sw2=sw2, sb2=sb2,
        **{k: float(res[k][0]) for k in engine.FIELDS},
        phase=Phase(int(res["phase"][0])).flag, converged=st == Status.OK, status=st.text,
        rho=opts["rho"], depth_constant=opts["depth_constant"], activation_params=act.parameters,
    )


def dataset_attrs(act: Activation, opts) -> dict:
    """Global attributes that make a phase-diagram dataset explain itself."""
    out = {
        "title": f"mean-field phase diagram: {act.name}",
        **activation_attrs(act),
        "rho": opts["rho"],
        "q0": opts["q0"],
        "depth_constant": opts["depth_constant"],
        "critical_tol": opts["critical_tol"],
        "meanfield_version": __version__,
        "conventions": CONVENTIONS,
    }
    return out


def to_dataset(res: dict, coords: dict, dims: tuple, act: Activation, opts) -> xr.Dataset:
    """Wrap compute_points output in a labelled xarray.Dataset."""
    data = {name: (dims, res[name], attrs(name)) for name in engine.FIELDS}
    data["phase"] = (dims, res["phase"], flag_attrs(Phase, "phase of the initialization"))
    data["status"] = (dims, res["status"], flag_attrs(Status, "solver status"))
    data["converged"] = (dims, res["status"] == int(Status.OK), attrs("converged"))
    return xr.Dataset(data, coords=coords, attrs=dataset_attrs(act, opts))


def phase_diagram(activation, sw2, sb2, *, rho=1.0, q0=Q0, depth_constant=DEPTH_CONSTANT,
                  critical_tol=CRITICAL_TOL, parallel=True) -> xr.Dataset:
    """All mean-field quantities over a (sw2, sb2) grid.

    Parameters
    ----------
    activation : str or Activation
    sw2, sb2 : array_like
        1-D, non-empty, finite, non-negative axes of the grid (variances).
    rho, q0, depth_constant, critical_tol
        As in :func:`analyze`.
    parallel : bool, default True
        Use all Numba threads (``numba.get_num_threads()``); results are identical bit
        for bit either way.

    Returns
    -------
    xarray.Dataset
        Dims ``(sw2, sb2)``; variables q_star, c_star, chi1, chi_c, xi_q, xi_c, xi_grad,
        max_depth (float64), phase and status (int8 with CF flag_values/flag_meanings) and
        converged (bool); every variable has ``long_name`` and ``units``.
    """
    act = get_activation(activation)
    w = V.variance_array("sw2", sw2)
    bb = V.variance_array("sb2", sb2)
    check_memory(GRID_BYTES_PER_POINT * float(w.size) * bb.size,
                 f"a grid of {w.size} sw2 x {bb.size} sb2 values")
    opts = options(rho, q0, depth_constant, critical_tol)
    W, B = np.meshgrid(w, bb, indexing="ij")
    res = engine.compute_points(act, W, B, parallel=parallel, **opts)
    coords = {"sw2": ("sw2", w, attrs("sw2")), "sb2": ("sb2", bb, attrs("sb2"))}
    return to_dataset(res, coords, ("sw2", "sb2"), act, opts)


def one_sided_dphi2_at_zero(act: Activation) -> float:
    """lim_{q->0+} E[phi'(sqrt(q) z)^2] (the one-sided mean square at a kink at 0)."""
    return float(dphi2_at_zero(act.record))


def length_map_values(act: Activation, sw2, sb2, q):
    """V(q) = sw2 E[phi(sqrt(q) z)^2] + sb2 at every q (docs/theory.md, "Length map")."""
    rec = act.record
    empty = np.empty(0)
    return np.array([sw2 * moments1(rec, float(qi), empty, False).phi2 + sb2
                     for qi in np.atleast_1d(q)])


def correlation_map_values(act: Activation, sw2, sb2, q_star, c):
    """C(c) = [sw2 E phi(u1) phi(u2) + sb2] / q* with both lengths at q* (docs/theory.md)."""
    rec = act.record
    # eps = 1 - c is what the expectations take, so c near 1 keeps its digits.
    return np.array([(sw2 * moments2(rec, q_star, float(1.0 - ci)).D + sb2) / q_star
                     for ci in np.atleast_1d(c)])


def fixed_points(activation, sw2, sb2, *, rho=1.0, q_min=1e-8, q_max=1e8, n_scan=400) -> list:
    """All fixed points of the length map in [q_min, q_max] (plus q = 0 when V(0) = 0).

    Scans g(q) = V(q) - q on a log grid of ``n_scan`` points and refines each sign change
    with Brent's method.  Returns a list of dicts ``{"q": q, "slope": V'(q), "stable": bool}``
    sorted by q.  :func:`analyze` reports the one reached from q0; this lists them all.
    """
    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    rho = V.keep_probability(rho)
    rec = act.record
    sw2d = sw2 / rho
    phi0, dphi2_0 = float(act(0.0)), one_sided_dphi2_at_zero(act)

    def g_and_slope(q):
        m = moments1(rec, q, np.empty(0), False)
        slope = sw2d * m.phi2z / (2 * q) if q > 0 else sw2d * dphi2_0
        return sw2d * m.phi2 + sb2 - q, slope

    out = []
    if sw2d * phi0 ** 2 + sb2 == 0.0:
        out.append(0.0)
    grid = np.geomspace(q_min, q_max, n_scan)
    vals = [g_and_slope(q)[0] for q in grid]
    for i in range(n_scan - 1):
        if vals[i] == 0.0:
            out.append(grid[i])
        elif vals[i] * vals[i + 1] < 0:
            out.append(optimize.brentq(lambda q: g_and_slope(q)[0], grid[i], grid[i + 1],
                                       xtol=1e-300, rtol=4 * np.finfo(float).eps))
    res = []
    for q in out:
        slope = g_and_slope(q)[1]
        res.append({"q": float(q), "slope": float(slope), "stable": bool(abs(slope) < 1)})
    return res
