"""The bridge between activations and the Numba solvers: arrays in, arrays out.

:func:`compute_points` is the single function that both :func:`meanfield.phase_diagram`
and the sweep engine call, so in-memory and chunked results cannot drift apart; each
point depends only on its own inputs, which makes results independent of chunking bit
for bit.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from . import point as P
from .activation import Activation
from .functions import CF_LINEAR, CF_NONE, CF_RELU
from .length_map import LengthTable, build_table
from .moment_table import build_moment_table, empty_table
from .vocabulary import CRITICAL_TOL, DEPTH_CONSTANT, Q0

# Quantities returned per point, in the order of the solver's output row.
FIELDS = {
    "q_star": P.I_Q,
    "c_star": P.I_C,
    "chi1": P.I_CHI1,
    "chi_c": P.I_CHIC,
    "xi_q": P.I_XIQ,
    "xi_c": P.I_XIC,
    "xi_grad": P.I_XIG,
    "max_depth": P.I_DEPTH,
}

# The length-map table: E[phi^2] at q = 10^(k/64), k = -640..256 (1e-10 .. 1e4).  64 nodes
# per decade make the cubic-Hermite guess good to ~1e-9, so exact Newton converges in about
# two steps; q0 = 1 is a node.  Above 1e4 the quadrature cost grows like sqrt(q), and the
# solver simply continues by expansion from the last node.
TABLE_NODES_PER_DECADE = 64
TABLE_LOG10_RANGE = (-10, 4)
_TABLES: dict = {}
_EMPTY_TABLE = LengthTable(np.empty(0), np.empty(0), np.empty(0), *empty_table())


def length_table(act: Activation) -> LengthTable:
    """The activation's :class:`~meanfield.core.length_map.LengthTable`, built once per process
    (deterministically, so every process and chunk starts its solves from the same table)."""
    if act.closed_form in (CF_RELU, CF_LINEAR):
        return _EMPTY_TABLE
    key = (act.kind, act.params, act.kinks, act.quad_kappa, act.closed_form, id(act.ufn))
    table = _TABLES.get(key)
    if table is None:
        k = np.arange(TABLE_LOG10_RANGE[0] * TABLE_NODES_PER_DECADE,
                      TABLE_LOG10_RANGE[1] * TABLE_NODES_PER_DECADE + 1)
        tq = np.power(10.0, k / TABLE_NODES_PER_DECADE)
        tF, tS = build_table(act.record, tq)
        mt = build_moment_table(act.record) if act.closed_form == CF_NONE \
            else empty_table()
        table = LengthTable(tq, tF, tS, *mt)
        _TABLES[key] = table
    return table


def compute_points(act: Activation, sw2, sb2, *, rho=1.0, q0=Q0, depth_constant=DEPTH_CONSTANT,
                   critical_tol=CRITICAL_TOL, parallel=True) -> dict:
    """Evaluate every quantity at the points (sw2[i], sb2[i]) (arrays of one shape).

    Returns a dict of arrays of that shape: the FIELDS, ``phase`` (int8), ``status`` (int8).
    Inputs are assumed validated.
    """
    sw2 = np.ascontiguousarray(sw2, dtype=np.float64)
    sb2 = np.ascontiguousarray(sb2, dtype=np.float64)
    shape = sw2.shape
    flat_w = sw2.reshape(-1)
    flat_b = sb2.reshape(-1)
    out = np.empty((flat_w.size, P.N_OUT))
    settings = P.Settings(float(rho), float(q0), float(depth_constant), float(critical_tol))
    table = length_table(act)
    nthreads = min(numba.get_num_threads(), -(-flat_w.size // P.BLOCK)) if parallel else 1
    if nthreads <= 1:
        P.analyze_blocks(act.record, table, flat_w, flat_b, settings, out, 0, 1)
    else:
        # Cost per point varies tenfold between phases and a grid's expensive points sit
        # together: thread t takes the blocks t, t + nthreads, ... so each gets its share.
        with ThreadPoolExecutor(nthreads) as pool:
            jobs = [pool.submit(P.analyze_blocks, act.record, table, flat_w, flat_b, settings,
                                out, t, nthreads) for t in range(nthreads)]
            for job in jobs:
                job.result()
    res = {name: out[:, i].reshape(shape).copy() for name, i in FIELDS.items()}
    res["phase"] = out[:, P.I_PHASE].astype(np.int8).reshape(shape)
    res["status"] = out[:, P.I_STATUS].astype(np.int8).reshape(shape)
    return res


def chi1(act: Activation, sw2, sb2, q0=Q0):
    """(q*, chi_1) at one point (used by root finders); q* = inf where the map diverges."""
    return P.chi1_at(act.record, length_table(act), float(sw2), float(sb2), float(q0))


def chi1_along(act: Activation, sw2, sb2, q0=Q0):
    """(q*, chi_1) at every sw2 of a 1-D array, at one sb2."""
    sw2 = np.ascontiguousarray(sw2, dtype=np.float64)
    q = np.empty_like(sw2)
    chi = np.empty_like(sw2)
    P.chi1_scan(act.record, length_table(act), sw2, float(sb2), float(q0), q, chi)
    return q, chi
