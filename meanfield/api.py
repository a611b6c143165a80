"""Public mean-field API: one point, grids, the critical line and initialization advice.

Conventions (THEORY.md): ``sw2`` = sigma_w^2 and ``sb2`` = sigma_b^2 are *variances*;
the weights of a layer with fan-in N are drawn from N(0, sw2 / N).  Depth index l
counts pre-activation layers.  ``rho`` is the dropout keep probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import optimize

from . import _engine, _solvers as S
from . import _validate as V
from ._version import __version__
from .activations import Activation, get_activation

PHASES = {S.PHASE_UNDETERMINED: "undetermined", S.PHASE_ORDERED: "ordered",
          S.PHASE_CRITICAL: "critical", S.PHASE_CHAOTIC: "chaotic"}
STATUS_MEANINGS = {
    S.OK: "converged",
    S.NO_FIXED_POINT: "no_finite_fixed_point",
    S.Q_MAXITER: "length_map_iteration_cap",
    S.C_MAXITER: "correlation_map_iteration_cap",
    S.NONFINITE: "non_finite_expectation",
    S.C_UNDEFINED: "correlation_undefined_at_zero_length",
}
STATUS_TEXT = {
    S.OK: "converged",
    S.NO_FIXED_POINT: (f"no finite fixed point: the length map grows without bound "
                       f"(or q* > {S.Q_MAX:g}); q*, c*, xi_q, xi_c and max_depth are undefined"),
    S.Q_MAXITER: "the length-map solver hit its iteration cap",
    S.C_MAXITER: "the correlation-map solver hit its iteration cap",
    S.NONFINITE: "the activation produced a non-finite Gaussian expectation",
    S.C_UNDEFINED: ("q* = 0 under dropout and phi has a kink at 0: the correlation q_ab/q is 0/0 "
                    "with no limit, so c*, chi_c and xi_c are undefined"),
}

DEFAULT_DEPTH_CONSTANT = 6.0  # Schoenholz et al. (2017): networks train when L <~ 6 xi_c
# Points with |log chi_1| <= CRITICAL_TOL are labelled critical: their gradient depth
# scale 1/|log chi_1| exceeds 1000 layers, deeper than any network the rule is used for.
DEFAULT_CRITICAL_TOL = 1e-3

_ATTRS = {
    "sw2": ("weight variance sigma_w^2", "1"),
    "sb2": ("bias variance sigma_b^2", "1"),
    "q_star": ("length-map fixed point q*", "1"),
    "c_star": ("correlation-map fixed point c*", "1"),
    "chi1": ("slope of the correlation map at c = 1, chi_1", "1"),
    "chi_c": ("slope of the correlation map at c*, chi_c", "1"),
    "xi_q": ("length depth scale xi_q", "layers"),
    "xi_c": ("correlation depth scale xi_c", "layers"),
    "xi_grad": ("gradient depth scale xi_grad (negative: gradients grow backwards)", "layers"),
    "max_depth": ("predicted maximum trainable depth", "layers"),
    "converged": ("every solver at this point converged", "1"),
}


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
    depth_constant: float = DEFAULT_DEPTH_CONSTANT
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


def _options(rho, q0, depth_constant, critical_tol):
    return dict(rho=V.keep_probability(rho), q0=V.scalar("q0", q0, minimum=0.0),
                depth_constant=V.scalar("depth_constant", depth_constant, minimum=0.0,
                                        inclusive=False),
                critical_tol=V.scalar("critical_tol", critical_tol, minimum=0.0))


def analyze(activation, sw2, sb2, *, rho=1.0, q0=1.0, depth_constant=DEFAULT_DEPTH_CONSTANT,
            critical_tol=DEFAULT_CRITICAL_TOL) -> Result:
    """Every mean-field quantity at one initialization.

    Solves the length map ``q = (sw2/rho) E[phi(sqrt(q) z)^2] + sb2`` for the fixed
    point reached from ``q0``, then the correlation map
    ``C(c) = [sw2 E phi(u1) phi(u2) + sb2] / q*`` for its stable fixed point c*, and
    derives chi_1, chi_c, the depth scales and the phase (THEORY.md).

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
    opts = _options(rho, q0, depth_constant, critical_tol)
    res = _engine.compute_points(act, np.array([sw2]), np.array([sb2]), parallel=False, **opts)
    st = int(res["status"][0])
    return Result(
        activation=act.name, sw2=sw2, sb2=sb2,
        **{k: float(res[k][0]) for k in _engine.FIELDS},
        phase=PHASES[int(res["phase"][0])], converged=st == S.OK, status=STATUS_TEXT[st],
        rho=opts["rho"], depth_constant=opts["depth_constant"], activation_params=act.parameters,
    )


def _attrs(name):
    long_name, units = _ATTRS[name]
    return {"long_name": long_name, "units": units}


def dataset_attrs(act: Activation, opts) -> dict:
    """Global attributes that make a dataset explain itself."""
    attrs = {
        "title": f"mean-field phase diagram: {act.name}",
        "activation": act.name,
        "activation_formula": act.formula,
        "rho": opts["rho"],
        "q0": opts["q0"],
        "depth_constant": opts["depth_constant"],
        "critical_tol": opts["critical_tol"],
        "meanfield_version": __version__,
        "conventions": "THEORY.md: sw2, sb2 are variances; W ~ N(0, sw2/fan_in)",
    }
    for k, v in act.parameters.items():
        attrs[f"activation_{k}"] = v
    return attrs


def to_dataset(res: dict, coords: dict, dims: tuple, act: Activation, opts) -> xr.Dataset:
    """Wrap compute_points output in a labelled xarray.Dataset."""
    data = {}
    for name in _engine.FIELDS:
        data[name] = (dims, res[name], _attrs(name))
    data["phase"] = (dims, res["phase"], {
        "long_name": "phase of the initialization",
        "flag_values": np.array(sorted(PHASES), dtype=np.int8),
        "flag_meanings": " ".join(PHASES[k] for k in sorted(PHASES)),
    })
    data["status"] = (dims, res["status"], {
        "long_name": "solver status",
        "flag_values": np.array(sorted(STATUS_MEANINGS), dtype=np.int8),
        "flag_meanings": " ".join(STATUS_MEANINGS[k] for k in sorted(STATUS_MEANINGS)),
    })
    data["converged"] = (dims, res["status"] == S.OK, _attrs("converged"))
    ds = xr.Dataset(data, coords=coords, attrs=dataset_attrs(act, opts))
    return ds


def phase_diagram(activation, sw2, sb2, *, rho=1.0, q0=1.0, depth_constant=DEFAULT_DEPTH_CONSTANT,
                  critical_tol=DEFAULT_CRITICAL_TOL, parallel=True) -> xr.Dataset:
    """All mean-field quantities over a (sw2, sb2) grid.

    Parameters
    ----------
    activation : str or Activation
    sw2, sb2 : array_like
        1-D, non-empty, finite, non-negative axes of the grid (variances).
    rho, q0, depth_constant, critical_tol
        As in :func:`analyze`.
    parallel : bool, default True
        Use all cores (Numba ``prange``); results are identical bit for bit either way.

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
    opts = _options(rho, q0, depth_constant, critical_tol)
    W, B = np.meshgrid(w, bb, indexing="ij")
    res = _engine.compute_points(act, W, B, parallel=parallel, **opts)
    coords = {"sw2": ("sw2", w, _attrs("sw2")), "sb2": ("sb2", bb, _attrs("sb2"))}
    return to_dataset(res, coords, ("sw2", "sb2"), act, opts)


# --------------------------------------------------------------------------- critical line
def _chi1_minus_one(act, sb2, q0):
    return lambda x: _engine.chi1(act, x, sb2, q0) - 1.0


def critical_sw2(activation, sb2, *, q0=1.0, sw2_max=1e4) -> float:
    """sigma_w^2 on the critical line chi_1 = 1 at the given sigma_b^2.

    Brent's method on chi_1(sw2) - 1 with q* re-solved at every step, to full double
    precision (xtol 1e-15).  The bracket is found by doubling from the first sw2 at which
    chi_1 < 1.  For the ReLU family chi_1 = sw2 (1 + a^2)/2 does not depend on q*, so
    the answer is 2/(1 + a^2) for every sb2 (though for sb2 > 0 q* is infinite there).

    Returns NaN if chi_1 never equals 1 for sw2 in (0, sw2_max]: it stays on one side (e.g.
    sigmoid at large sb2), is NaN inside the bracket, or jumps across 1 because q* jumps
    there (gelu and silu at small sb2 > 0: the fixed point reached from q0 leaves a finite
    branch for q* = inf, a discontinuous transition with no edge of chaos).
    """
    act = get_activation(activation)
    sb2 = V.variance("sb2", sb2)
    q0 = V.scalar("q0", q0, minimum=0.0)
    f = _chi1_minus_one(act, sb2, q0)
    lo = 1e-3
    flo = f(lo)
    if not (flo < 0):
        return math.nan
    hi = lo
    while True:
        hi *= 2.0
        fhi = f(hi)
        if fhi >= 0 or hi > sw2_max:
            break
        lo, flo = hi, fhi
    if not fhi >= 0:
        return math.nan
    if fhi == 0.0:
        return hi
    try:
        root = optimize.brentq(f, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=200)
    except ValueError:  # brentq refuses a NaN chi_1 met inside the bracket
        return math.nan
    # Brent also converges onto a jump of chi_1 across 1; a crossing has chi_1 - 1 at the
    # rounding level next to the root (chi_1 is at worst quadratic there), a jump does not.
    d = 1e-9 * root
    if min(abs(f(root - d)), abs(f(root + d))) > 1e-6:
        return math.nan
    # With sb2 = 0 and phi(0) = 0 the ordered side has q* = 0 and chi_1 = sw2 phi'(0)^2
    # exactly, while on the chaotic side chi_1 - 1 is only quadratic in the distance
    # (tanh: q* ~ (sw2 - 1)/2 cancels the first order), so Brent's bracket cannot shrink
    # below ~sqrt(eps).  The edge of the q* = 0 branch is exact: use it when it is the root.
    if sb2 == 0.0 and float(act(0.0)) == 0.0:
        d2 = _dphi2_at_zero(act)
        if d2 != 0.0 and abs(root * d2 - 1.0) < 1e-6:
            return 1.0 / d2
    return root


def _dphi2_at_zero(act):
    """lim_{q->0+} E[phi'(sqrt(q) z)^2] (the one-sided mean square at a kink at 0)."""
    from ._expect import dphi2_at_zero

    kind, a, b, ufn, _, kinks, _, _ = _engine.solver_args(act)
    return float(dphi2_at_zero(kind, a, b, ufn, kinks))


def critical_line(activation, sb2, *, q0=1.0) -> xr.DataArray:
    """The critical line sw2(sb2) with chi_1 = 1, as a DataArray over ``sb2``."""
    act = get_activation(activation)
    sb = V.variance_array("sb2", sb2)
    vals = np.array([critical_sw2(act, s, q0=q0) for s in sb])
    return xr.DataArray(vals, dims=("sb2",), coords={"sb2": ("sb2", sb, _attrs("sb2"))},
                        name="sw2_critical",
                        attrs={"long_name": "critical weight variance (chi_1 = 1)", "units": "1",
                               "activation": act.name, **{f"activation_{k}": v for k, v in
                                                          act.parameters.items()}})


def fixed_points(activation, sw2, sb2, *, rho=1.0, q_min=1e-8, q_max=1e8, n_scan=400) -> list:
    """All fixed points of the length map in [q_min, q_max] (plus q = 0 when V(0) = 0).

    Scans g(q) = V(q) - q on a log grid of ``n_scan`` points and refines each sign change
    with Brent's method.  Returns a list of dicts ``{"q": q, "slope": V'(q), "stable": bool}``
    sorted by q.  :func:`analyze` reports the one reached from q0; this lists them all.
    """
    from ._expect import moments1

    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    rho = V.keep_probability(rho)
    kind, a, b, ufn, cf, kinks, kappa, _ = _engine.solver_args(act)
    sw2d = sw2 / rho
    phi0, dphi2_0 = float(act(0.0)), _dphi2_at_zero(act)

    def g_and_slope(q):
        m = moments1(kind, a, b, ufn, cf, kinks, kappa, q, np.empty(0))
        slope = sw2d * m[2] / (2 * q) if q > 0 else sw2d * dphi2_0
        return sw2d * m[1] + sb2 - q, slope

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
