"""The bridge between activations and the Numba solvers: arrays in, arrays out.

``compute_points`` is the single function that both :func:`meanfield.phase_diagram`
and the sweep engine call, so in-memory and chunked results cannot drift apart; each
point depends only on its own inputs, which makes results independent of chunking
bit for bit.
"""

from __future__ import annotations

import numpy as np

from . import _solvers as S
from .activations import CF_LINEAR, CF_RELU, Activation


# Quantities returned per point, in the order of the solver's output vector.
FIELDS = {
    "q_star": S.I_Q,
    "c_star": S.I_C,
    "chi1": S.I_CHI1,
    "chi_c": S.I_CHIC,
    "xi_q": S.I_XIQ,
    "xi_c": S.I_XIC,
    "xi_grad": S.I_XIG,
    "max_depth": S.I_DEPTH,
}


def solver_args(act: Activation):
    """The activation's arguments for the Numba kernels, in their order."""
    return (int(act.kind), float(act.params[0]), float(act.params[1]), act.ufn,
            int(act.closed_form), np.asarray(act.kinks, dtype=np.float64), float(act.quad_kappa),
            bool(act.odd))


# The length-map table: E[phi^2] at q = 10^(k/64), k = -640..256 (1e-10 .. 1e4).  64 nodes
# per decade make the cubic-Hermite guess good to ~1e-9, so exact Newton converges in about
# two steps; q0 = 1 is a node.  Above 1e4 the quadrature cost grows like sqrt(q), and the
# solver simply continues by expansion from the last node.
TABLE_NODES_PER_DECADE = 64
TABLE_LOG10_RANGE = (-10, 4)
_TABLES: dict = {}


def q_table(act: Activation):
    """(tq, tF, tS) for the activation, built once per process (deterministically)."""
    if act.closed_form in (CF_RELU, CF_LINEAR):
        empty = np.empty(0)
        return empty, empty, empty
    key = (act.kind, act.params, act.kinks, act.quad_kappa, act.closed_form, id(act.ufn))
    table = _TABLES.get(key)
    if table is None:
        k = np.arange(TABLE_LOG10_RANGE[0] * TABLE_NODES_PER_DECADE,
                      TABLE_LOG10_RANGE[1] * TABLE_NODES_PER_DECADE + 1)
        tq = np.power(10.0, k / TABLE_NODES_PER_DECADE)
        tF, tS = S.build_q_table(*solver_args(act), tq)
        table = (tq, tF, tS)
        _TABLES[key] = table
    return table


def compute_points(act: Activation, sw2, sb2, *, rho=1.0, q0=1.0, depth_constant=6.0,
                   critical_tol=1e-3, parallel=True) -> dict:
    """Evaluate every quantity at the points (sw2[i], sb2[i]) (arrays of one shape).

    Returns a dict of arrays of that shape: the FIELDS, ``phase`` (int8), ``status`` (int8).
    Inputs are assumed validated.
    """
    sw2 = np.ascontiguousarray(sw2, dtype=np.float64)
    sb2 = np.ascontiguousarray(sb2, dtype=np.float64)
    shape = sw2.shape
    flat_w = sw2.reshape(-1)
    flat_b = sb2.reshape(-1)
    out = np.empty((flat_w.size, S.N_OUT))
    if parallel:
        # Cost per point varies tenfold between phases; analyze_grid_parallel interleaves
        # the points across threads so each gets its share of the expensive ones.
        S.analyze_grid_parallel(*solver_args(act), *q_table(act), float(act.slopes[0]),
                                float(act.slopes[1]),
                                flat_w, flat_b, float(rho), float(q0), float(depth_constant),
                                float(critical_tol), out)
    else:
        S.analyze_grid_serial(*solver_args(act), *q_table(act), float(act.slopes[0]),
                              float(act.slopes[1]),
                              flat_w, flat_b, float(rho), float(q0), float(depth_constant),
                              float(critical_tol), out)
    res = {name: out[:, i].reshape(shape).copy() for name, i in FIELDS.items()}
    res["phase"] = out[:, S.I_PHASE].astype(np.int8).reshape(shape)
    res["status"] = out[:, S.I_STATUS].astype(np.int8).reshape(shape)
    return res


def chi1(act: Activation, sw2, sb2, q0=1.0) -> float:
    """chi_1 at one point (used by root finders)."""
    return S.chi1_of_sw2(*solver_args(act), *q_table(act), float(act.slopes[0]),
                         float(act.slopes[1]),
                         float(sw2), float(sb2), float(q0))
