"""Numba kernels that move blocks of NNGP/NTK entries through layers (docs/theory.md,
"Kernels on a data set").

One call of :func:`advance` moves a block of kernel entries through K layers::

    Sigma^{l+1}_ij = sw2 E[phi(u) phi(v)] + sb2
    Theta^{l+1}_ij = Sigma^{l+1}_ij + sw2 E[phi'(u) phi'(v)] Theta^l_ij,   (u, v) ~ N(0, Lambda^l_ij)

Modes (chosen per layer in :mod:`meanfield.ntk.recursion`):

``MODE_GENERAL``
    Every pair has its own 2x2 covariance (inputs of unequal norms):
    :func:`meanfield.core.gaussian.moments.pair` per entry.
``MODE_GENERAL_CLOSED``
    The same with a closed form (:func:`meanfield.core.gaussian.closed.general`), in its
    own loop so that no quadrature code sits beside it.
``MODE_SHARED_CLOSED`` / ``MODE_SHARED_CHEB`` / ``MODE_SHARED_QUAD``
    All inputs share one norm, so at each depth every pair shares one variance q and the
    state of a pair is eps = 1 - c, carried directly so that pairs near c = 1 keep their
    digits (docs/theory.md, "Numerics").  The expectations come from the closed forms, from
    a Chebyshev interpolant in c (smooth activations), or from ``moments2`` per pair
    (kinked activations without a closed form).

Work is split with ``prange`` over tiles (tile pairs of a symmetric block); each
iteration writes only its own entries.
"""

from __future__ import annotations

from collections import namedtuple

import math

import numba as nb
import numpy as np
from numba import prange

from ..core.functions import CF_ERF, CF_GELU, CF_RELU
from ..core.gaussian import closed
from ..core.gaussian.moments import moments2, pair
from . import hermite_tile
from .tiles import TILE, mirror, upper_pair  # noqa: F401  (upper_pair re-exported)

MODE_GENERAL = 0
MODE_SHARED_CLOSED = 1
MODE_SHARED_CHEB = 2
MODE_SHARED_QUAD = 3
MODE_GENERAL_CLOSED = 4
MODE_GENERAL_HERMITE = 5

LayerPlan = namedtuple("LayerPlan", ["mode", "q", "q_next", "m_phi2", "coef1", "coef2", "n_coef",
                                     "q_rows", "q_cols", "herm_n", "ladder", "a_rows", "b_rows",
                                     "a_cols", "b_cols", "tau_rows", "tau_cols", "fg_rows",
                                     "fg_cols", "fallback", "tay_k", "tay_m", "tay_u", "tay_t",
                                     "tay_sdr", "tay_spr", "tay_sdc", "tay_spc", "tay_e", "taylor",
                                     "angular"])
LayerPlan.__doc__ = """K layers of the recursion, one entry (or row) per layer k.

mode : int64[K]
    ``MODE_*`` of the layer.
q, q_next, m_phi2 : float64[K]
    Shared variance at depth l and l + 1, and E phi^2 at q (shared modes).
coef1, coef2 : float64[K, M]
    Closed-form constants (MODE_SHARED_CLOSED, in ``coef1``) or the Chebyshev coefficients
    of Delta/(1 - c) and E phi'phi' (MODE_SHARED_CHEB, the first ``n_coef[k]`` of each row);
    MODE_GENERAL_HERMITE: the Taylor table in ``coef1``, the angular table
    (:func:`meanfield.ntk.angular.build`, zeros without one) in ``coef2``.
q_rows, q_cols : float64[K, n]
    Per-point variances of the block's rows and columns (MODE_GENERAL*).
herm_n : int64[K]
    Highest Hermite order available at each layer (MODE_GENERAL_HERMITE).
ladder : int64[M]
    Truncation orders at which the tails are stored (:data:`hermite.LADDER`).
a_rows, b_rows, a_cols, b_cols : float64[K, N + 1, n]
    Hermite coefficients a_n, b_n of phi, phi' per row / column point
    (:func:`meanfield.core.gaussian.hermite.coefficients`).
tau_rows, tau_cols : float64[K, 2, M, n]
    Square roots of the relative tail bounds of the phi and phi' series after ladder[m]
    terms (+inf: the series may not be used for that point).
fg_rows, fg_cols : float64[K, n, 2]
    Exact E phi^2, E phi'^2 per point (the diagonal).
fallback : int64[tiles]
    Out: pairs x layers of each tile computed by the exact 2-D rule (bound not met).
tay_* : the Taylor data about c = 1 per layer, see :func:`meanfield.ntk.taylor.row_in_tile`.
taylor : int64[tiles]
    Out: pairs x layers of each tile computed by that Taylor series.
angular : int64[tiles]
    Out: pairs x layers of each tile computed by the angular table.
"""
BlockState = namedtuple("BlockState", ["sig", "th", "eps"])
BlockState.__doc__ = """Sigma^l, Theta^l and eps^l = 1 - c^l (shared modes) of a block, updated in place."""


@nb.njit(cache=True, parallel=True)
def diag_step(act, sw2, sb2, q, qnext, dnext):
    """Length map per point: qnext_i = sw2 E phi(sqrt(q_i) z)^2 + sb2; dnext_i = sw2 E phi'^2."""
    for i in prange(q.shape[0]):
        D, Dp = pair(act, q[i], q[i], q[i], True)
        qnext[i] = sw2 * D + sb2
        dnext[i] = sw2 * Dp


@nb.njit(cache=True)
def _clenshaw2(cg, cp, x):
    """Two Chebyshev series sum_m c_m T_m(x) at one x, in one Clenshaw loop."""
    b1g = 0.0
    b2g = 0.0
    b1p = 0.0
    b2p = 0.0
    x2 = 2.0 * x
    for m in range(cg.shape[0] - 1, 0, -1):
        tg = x2 * b1g - b2g + cg[m]
        tp = x2 * b1p - b2p + cp[m]
        b2g = b1g
        b1g = tg
        b2p = b1p
        b1p = tp
    return x * b1g - b2g + cg[0], x * b1p - b2p + cp[0]


@nb.njit(cache=True, parallel=True)
def node_moments(act, q, eps, out):
    """moments2 at variance q and every eps[k] (Chebyshev nodes), in parallel."""
    for k in prange(eps.shape[0]):
        m = moments2(act, q, eps[k])
        out[k, 0] = m.D
        out[k, 1] = m.Delta
        out[k, 2] = m.Dp


# --------------------------------------------------------------------------- layers of a block
# One function per mode: a single function with every mode's branch inside the pair loop
# ran the closed forms at half speed (the quadrature code inlined next to them spoils
# the loop's register allocation).
@nb.njit(cache=True)
def _tile_closed(k, act, sw2, sb2, q, qnext, m_phi2, cst, th, eps, S, T, sym, i0, i1, j0, j1):
    scale = sw2 / qnext if qnext > 0.0 else 0.0
    for i in range(i0, i1):
        for j in range(max(i, j0) if sym else j0, j1):
            D, Dl, Dp = closed.equal_variance_fast(act, q, eps[i, j], cst)
            if sym and i == j:
                D = m_phi2  # the diagonal is the length map itself, bit for bit
            # eps^{l+1} = 1 - Sigma^{l+1}/q^{l+1} = sw2 Delta / q^{l+1}: no cancellation.
            eps[i, j] = scale * Dl
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            th[i, j] = tv
            S[k, i, j] = sv
            T[k, i, j] = tv


@nb.njit(cache=True)
def _tile_cheb(k, sw2, sb2, qnext, m_phi2, cg, cp, th, eps, S, T, sym, i0, i1, j0, j1):
    scale = sw2 / qnext if qnext > 0.0 else 0.0
    for i in range(i0, i1):
        for j in range(max(i, j0) if sym else j0, j1):
            e = eps[i, j]
            g, Dp = _clenshaw2(cg, cp, 1.0 - e)
            Dl = e * g
            D = m_phi2 if (sym and i == j) else m_phi2 - Dl
            eps[i, j] = scale * Dl
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            th[i, j] = tv
            S[k, i, j] = sv
            T[k, i, j] = tv


# error_model="numpy": a division then cannot raise ZeroDivisionError, whose check is a
# branch that keeps LLVM from vectorizing the loops over pairs (4 doubles per AVX2 op).
@nb.njit(cache=True, error_model="numpy")
def _tile_general_fast(k, act, sw2, sb2, qr, qc, sig, th, S, T, sym, i0, i1, j0, j1):
    """erf, GELU and the ReLU family on a general covariance, one row of a tile at a time:
    per-point constants hoisted out of the pair loop and libm-free arcsine/arccosine, so
    the loops along a row vectorize (the closed form; the updates and row writes, each
    in its own loop).  The few pairs the
    vectorized form does not cover are redone by :func:`closed.pair` in between: the
    diagonal (the length map, bit for bit), zero ReLU variances, and GELU's cancelling
    branch (:func:`closed.gelu_general_pre` returns ok = False).

    Every loop runs over row views indexed from 0: an index like ``j0 + t`` may be
    negative as far as Numba knows, and its wraparound check turns contiguous vector loads
    into element-by-element gathers (measured: GELU 3x slower per pair)."""
    nj = j1 - j0
    fam = act.family
    erf = fam == CF_ERF
    gelu = fam == CF_GELU
    a = act.a
    qcv = qc[j0:j1]
    pc = np.empty(nj)   # erf: 1/sqrt(1 + 2 q_j); relu: sqrt(q_j); gelu: 1/(1 + q_j)
    pc2 = np.empty(nj)  # gelu: 1/sqrt(1 + q_j)
    for t in range(nj):
        if gelu:
            pc[t] = 1.0 / (1.0 + qcv[t])
            pc2[t] = 1.0 / math.sqrt(1.0 + qcv[t])
        else:
            pc[t] = 1.0 / math.sqrt(1.0 + 2.0 * qcv[t]) if erf else math.sqrt(qcv[t])
    dd0 = np.empty(nj)
    dp0 = np.empty(nj)
    ok0 = np.ones(nj, dtype=np.bool_)
    for i in range(i0, i1):
        jb = max(i, j0) if sym else j0
        b0 = jb - j0
        m = j1 - jb
        s11 = qr[i]
        srow = sig[i, jb:j1]
        trow = th[i, jb:j1]
        qv = qcv[b0:]
        p1 = pc[b0:]
        p2 = pc2[b0:]
        dd = dd0[:m]
        dp = dp0[:m]
        okv = ok0[:m]
        if erf:
            u1 = 1.0 / math.sqrt(1.0 + 2.0 * s11)
            a1 = 1.0 + 2.0 * s11
            for t in range(m):
                dd[t], dp[t] = closed.erf_general_pre(s11, qv[t], srow[t], u1, p1[t], a1)
        elif gelu:
            g1 = 1.0 / (1.0 + s11)
            h1 = 1.0 / math.sqrt(1.0 + s11)
            for t in range(m):
                dd[t], dp[t], okv[t] = closed.gelu_general_pre(s11, qv[t], srow[t], g1, p1[t],
                                                               h1, p2[t])
        else:
            r1 = math.sqrt(s11)
            for t in range(m):
                r = r1 * p1[t]
                okv[t] = r > 0.0
                dd[t], dp[t] = closed.relu_general_pre(a, srow[t], r if r > 0.0 else 1.0)
        diag = sym and jb == i  # the first entry of the row is the diagonal
        if diag:
            okv[0] = False
        if not erf or diag:
            for t in range(m):
                if not okv[t]:
                    dd[t], dp[t] = closed.pair(act, s11, qv[t], srow[t], diag and t == 0)
                    okv[t] = True
        Srow = S[k, i, jb:j1]
        Trow = T[k, i, jb:j1]
        for t in range(m):
            sv = sw2 * dd[t] + sb2
            tv = sv + sw2 * dp[t] * trow[t]
            srow[t] = sv
            trow[t] = tv
            Srow[t] = sv
            Trow[t] = tv


@nb.njit(cache=True)
def _tile_general_closed(k, act, sw2, sb2, qr, qc, sig, th, S, T, sym, i0, i1, j0, j1):
    if act.family == CF_ERF or act.family == CF_RELU or act.family == CF_GELU:
        _tile_general_fast(k, act, sw2, sb2, qr, qc, sig, th, S, T, sym, int(i0), int(i1),
                           int(j0), int(j1))
        return
    for i in range(i0, i1):
        for j in range(max(i, j0) if sym else j0, j1):
            D, Dp = closed.pair(act, qr[i], qc[j], sig[i, j], sym and i == j)
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            sig[i, j] = sv
            th[i, j] = tv
            S[k, i, j] = sv
            T[k, i, j] = tv


@nb.njit(cache=True)
def _tile_quad(k, mode, act, sw2, sb2, q, qnext, m_phi2, qr, qc, sig, th, eps, S, T, sym,
               i0, i1, j0, j1):
    scale = sw2 / qnext if qnext > 0.0 else 0.0
    for i in range(i0, i1):
        for j in range(max(i, j0) if sym else j0, j1):
            diag = sym and i == j
            if mode == MODE_GENERAL:
                D, Dp = pair(act, qr[i], qc[j], sig[i, j], diag)
            else:
                m = moments2(act, q, eps[i, j])
                D = m.D
                Dp = m.Dp
                if diag:
                    D = m_phi2
                eps[i, j] = scale * m.Delta
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            sig[i, j] = sv
            th[i, j] = tv
            S[k, i, j] = sv
            T[k, i, j] = tv


@nb.njit(cache=True, parallel=True)
def advance(act, sw2, sb2, plan, state, S, T, sym):
    """Advance a block by K = S.shape[0] layers, writing layer k of Sigma/Theta to S[k], T[k].

    ``plan`` is the :class:`LayerPlan` of the K layers and ``state`` the block's
    :class:`BlockState`, updated in place (only its upper triangle is read when ``sym``).
    S and T may alias the state (K = 1, ``S = sig[None]``).

    The loop runs over tiles, and inside a tile over layers: a tile's state stays in
    cache for all K layers, so memory traffic is just the output.  Symmetric blocks are
    processed as tile pairs (I, J), I <= J: a tile writes its upper entries (i, j), then
    copies them to (j, i) (:func:`tiles.mirror`).
    """
    sig = state.sig
    th = state.th
    eps = state.eps
    nr = sig.shape[0]
    nc = sig.shape[1]
    ntr = (nr + TILE - 1) // TILE
    ntc = (nc + TILE - 1) // TILE
    ntiles = ntr * (ntr + 1) // 2 if sym else ntr * ntc
    for t in prange(ntiles):
        if sym:
            bi, bj = upper_pair(t, ntr)
        else:
            bi = t // ntc
            bj = t % ntc
        i0 = bi * TILE
        i1 = min(nr, i0 + TILE)
        j0 = bj * TILE
        j1 = min(nc, j0 + TILE)
        for k in range(S.shape[0]):
            n1 = plan.n_coef[k]
            mode = plan.mode[k]
            if mode == MODE_SHARED_CLOSED:
                _tile_closed(k, act, sw2, sb2, plan.q[k], plan.q_next[k], plan.m_phi2[k],
                             plan.coef1[k], th, eps, S, T, sym, i0, i1, j0, j1)
            elif mode == MODE_GENERAL_CLOSED:
                _tile_general_closed(k, act, sw2, sb2, plan.q_rows[k], plan.q_cols[k], sig, th,
                                     S, T, sym, i0, i1, j0, j1)
            elif mode == MODE_GENERAL_HERMITE:
                hermite_tile.hermite_layer(k, act, sw2, sb2, plan, sig, th, S, T, sym, i0, i1, j0, j1, t)
            elif mode == MODE_SHARED_CHEB:
                _tile_cheb(k, sw2, sb2, plan.q_next[k], plan.m_phi2[k], plan.coef1[k, :n1],
                           plan.coef2[k, :n1], th, eps, S, T, sym, i0, i1, j0, j1)
            else:
                _tile_quad(k, mode, act, sw2, sb2, plan.q[k], plan.q_next[k], plan.m_phi2[k],
                           plan.q_rows[k], plan.q_cols[k], sig, th, eps, S, T, sym,
                           i0, i1, j0, j1)
            if sym:
                mirror(k, S, T, i0, i1, j0, j1)
