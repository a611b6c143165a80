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

from ..core.gaussian import closed
from ..core.gaussian.hermite import RTOL as HERM_RTOL
from ..core.gaussian.moments import moments2, pair

MODE_GENERAL = 0
MODE_SHARED_CLOSED = 1
MODE_SHARED_CHEB = 2
MODE_SHARED_QUAD = 3
MODE_GENERAL_CLOSED = 4
MODE_GENERAL_HERMITE = 5

LayerPlan = namedtuple("LayerPlan", ["mode", "q", "q_next", "m_phi2", "coef1", "coef2", "n_coef",
                                     "q_rows", "q_cols", "herm_n", "ladder", "a_rows", "b_rows",
                                     "a_cols", "b_cols", "tau_rows", "tau_cols", "fg_rows",
                                     "fg_cols", "fallback"])
LayerPlan.__doc__ = """K layers of the recursion, one entry (or row) per layer k.

mode : int64[K]
    ``MODE_*`` of the layer.
q, q_next, m_phi2 : float64[K]
    Shared variance at depth l and l + 1, and E phi^2 at q (shared modes).
coef1, coef2 : float64[K, M]
    Closed-form constants (MODE_SHARED_CLOSED, in ``coef1``) or the Chebyshev coefficients
    of Delta/(1 - c) and E phi'phi' (MODE_SHARED_CHEB, the first ``n_coef[k]`` of each row).
q_rows, q_cols : float64[K, n]
    Per-point variances of the block's rows and columns (MODE_GENERAL*).
herm_n : int64[K]
    Highest Hermite order available at each layer (MODE_GENERAL_HERMITE).
ladder : int64[M]
    Truncation orders at which the tails are stored (:data:`hermite.LADDER`).
a_rows, b_rows, a_cols, b_cols : float64[K, N + 1, n]
    Hermite coefficients a_n, b_n of phi, phi' per row / column point
    (:func:`meanfield.core.gaussian.hermite.coefficients`).
tau_rows, tau_cols : float64[K, n, 2, M]
    Relative tail bounds of the phi and phi' series after ladder[m] terms.
fg_rows, fg_cols : float64[K, n, 2]
    Exact E phi^2, E phi'^2 per point (the diagonal).
fallback : int64[tiles]
    Out: pairs x layers of each tile computed by the exact 2-D rule (bound not met).
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
TILE = 64  # a 64 x 64 tile of the state (eps, Theta, Sigma) is 96 kB: it stays in L2


@nb.njit(cache=True)
def _tile_of(t, nt):
    """Tile pair number t -> (bi, bj), bi <= bj, row-major over the upper tile triangle."""
    bi = 0
    rem = t
    while rem >= nt - bi:
        rem -= nt - bi
        bi += 1
    return bi, bi + rem


@nb.njit(cache=True)
def _put(k, i, j, sv, tv, S, T, sym):
    S[k, i, j] = sv
    T[k, i, j] = tv
    if sym:
        S[k, j, i] = sv
        T[k, j, i] = tv


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
            _put(k, i, j, sv, tv, S, T, sym)


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
            _put(k, i, j, sv, tv, S, T, sym)


@nb.njit(cache=True)
def _tile_general_closed(k, act, sw2, sb2, qr, qc, sig, th, S, T, sym, i0, i1, j0, j1):
    for i in range(i0, i1):
        for j in range(max(i, j0) if sym else j0, j1):
            D, Dp = closed.pair(act, qr[i], qc[j], sig[i, j], sym and i == j)
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            sig[i, j] = sv
            th[i, j] = tv
            _put(k, i, j, sv, tv, S, T, sym)


@nb.njit(cache=True)
def _tile_max(tau, i0, i1, kind, m):
    t = 0.0
    for i in range(i0, i1):
        t = max(t, tau[i, kind, m])
    return t


@nb.njit(cache=True)
def _tile_hermite(k, act, sw2, sb2, plan, sig, th, S, T, sym, i0, i1, j0, j1, tile):
    """MODE_GENERAL_HERMITE: Mehler sums per pair (Horner in c, vectorized along a row of
    the tile), with the exact 2-D rule where the truncation bound is not met."""
    i0 = int(i0)
    i1 = int(i1)
    j0 = int(j0)
    j1 = int(j1)
    qr = plan.q_rows[k]
    qc = plan.q_cols[k]
    Ar = plan.a_rows[k]
    Br = plan.b_rows[k]
    Ac = plan.a_cols[k]
    Bc = plan.b_cols[k]
    tr = plan.tau_rows[k]
    tc = plan.tau_cols[k]
    fg = plan.fg_rows[k]
    ladder = plan.ladder
    nj = j1 - j0
    rc = np.empty(nj)
    for j in range(j0, j1):
        rc[j - j0] = 1.0 / math.sqrt(qc[j]) if qc[j] > 0.0 else 0.0
    # Largest |c| off the diagonal: the tile's truncation order is the first of the
    # ladder whose bound holds there for every row and column of the tile.
    cmax = 0.0
    for i in range(i0, i1):
        ri = 1.0 / math.sqrt(qr[i]) if qr[i] > 0.0 else 0.0
        for j in range(max(i, j0) if sym else j0, j1):
            if sym and i == j:
                continue
            cmax = max(cmax, abs(sig[i, j]) * ri * rc[j - j0])
    cmax = min(cmax, 1.0)
    mbest = -1
    for m in range(ladder.shape[0]):
        if ladder[m] > plan.herm_n[k]:
            break
        mbest = m
        N = ladder[m]
        ta = math.sqrt(_tile_max(tr, i0, i1, 0, m) * _tile_max(tc, j0, j1, 0, m))
        tb = math.sqrt(_tile_max(tr, i0, i1, 1, m) * _tile_max(tc, j0, j1, 1, m))
        cn = cmax ** (N + 1)
        if cn * ta <= HERM_RTOL and cn * tb <= HERM_RTOL:
            break
    N = ladder[mbest]
    ta = math.sqrt(_tile_max(tr, i0, i1, 0, mbest) * _tile_max(tc, j0, j1, 0, mbest))
    tb = math.sqrt(_tile_max(tr, i0, i1, 1, mbest) * _tile_max(tc, j0, j1, 1, mbest))
    # |c| <= clim meets the bound with the tile's largest tails (clim = 0: check each pair).
    clim = (HERM_RTOL / max(ta, tb)) ** (1.0 / (N + 1)) if max(ta, tb) > 0.0 else 1.0
    logtol = math.log(HERM_RTOL)
    cv = np.empty(nj)
    accd = np.empty(nj)
    accp = np.empty(nj)
    nfb = 0
    for i in range(i0, i1):
        jb = max(i, j0) if sym else j0
        ri = 1.0 / math.sqrt(qr[i]) if qr[i] > 0.0 else 0.0
        for jj in range(jb - j0, nj):
            cv[jj] = min(1.0, max(-1.0, sig[i, jj + j0] * ri * rc[jj]))
            accd[jj] = 0.0
            accp[jj] = 0.0
        for n in range(N, -1, -1):
            ai = Ar[n, i]
            bi = Br[n, i]
            for jj in range(jb - j0, nj):
                accd[jj] = accd[jj] * cv[jj] + ai * Ac[n, jj + j0]
                accp[jj] = accp[jj] * cv[jj] + bi * Bc[n, jj + j0]
        for j in range(jb, j1):
            jj = j - j0
            if sym and i == j:
                D = fg[i, 0]
                Dp = fg[i, 1]
            else:
                c = abs(cv[jj])
                ok = c <= clim and clim > 0.0
                if not ok:
                    lc = (N + 1) * math.log(c) if c > 0.0 else -math.inf
                    ok = (lc + 0.5 * (math.log(tr[i, 0, mbest]) + math.log(tc[j, 0, mbest])) <= logtol
                          and lc + 0.5 * (math.log(tr[i, 1, mbest]) + math.log(tc[j, 1, mbest]))
                          <= logtol)
                if ok:
                    D = accd[jj]
                    Dp = accp[jj]
                else:
                    D, Dp = pair(act, qr[i], qc[j], sig[i, j], False)
                    nfb += 1
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * th[i, j]
            sig[i, j] = sv
            th[i, j] = tv
            _put(k, i, j, sv, tv, S, T, sym)
    plan.fallback[tile] += nfb


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
            _put(k, i, j, sv, tv, S, T, sym)


@nb.njit(cache=True, parallel=True)
def advance(act, sw2, sb2, plan, state, S, T, sym):
    """Advance a block by K = S.shape[0] layers, writing layer k of Sigma/Theta to S[k], T[k].

    ``plan`` is the :class:`LayerPlan` of the K layers and ``state`` the block's
    :class:`BlockState`, updated in place (only its upper triangle is read when ``sym``).
    S and T may alias the state (K = 1, ``S = sig[None]``).

    The loop runs over tiles, and inside a tile over layers: a tile's state stays in
    cache for all K layers, so memory traffic is just the output.  Symmetric blocks are
    processed as tile pairs (I, J), I <= J, each upper entry written to (i, j) and (j, i).
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
            bi, bj = _tile_of(t, ntr)
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
                _tile_hermite(k, act, sw2, sb2, plan, sig, th, S, T, sym, i0, i1, j0, j1, t)
            elif mode == MODE_SHARED_CHEB:
                _tile_cheb(k, sw2, sb2, plan.q_next[k], plan.m_phi2[k], plan.coef1[k, :n1],
                           plan.coef2[k, :n1], th, eps, S, T, sym, i0, i1, j0, j1)
            else:
                _tile_quad(k, mode, act, sw2, sb2, plan.q[k], plan.q_next[k], plan.m_phi2[k],
                           plan.q_rows[k], plan.q_cols[k], sig, th, eps, S, T, sym,
                           i0, i1, j0, j1)


@nb.njit(cache=True, parallel=True)
def refine_eps(A, B, eps, scale, below):
    """Recompute eps_ij = scale |A_i - B_j|^2 / 2 by direct differences where eps_ij < below.

    The Gram-matrix value scale (|a|^2 + |b|^2 - 2 a.b)/2 loses digits for nearly equal
    inputs; only those few pairs pay for the O(d) direct sum.
    """
    for i in prange(A.shape[0]):
        for j in range(B.shape[0]):
            if eps[i, j] < below:
                s = 0.0
                for k in range(A.shape[1]):
                    t = A[i, k] - B[j, k]
                    s += t * t
                eps[i, j] = 0.5 * scale * s
