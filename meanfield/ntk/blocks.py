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

import numba as nb
from numba import prange

from ..core.gaussian import closed
from ..core.gaussian.moments import moments2, pair

MODE_GENERAL = 0
MODE_SHARED_CLOSED = 1
MODE_SHARED_CHEB = 2
MODE_SHARED_QUAD = 3
MODE_GENERAL_CLOSED = 4

LayerPlan = namedtuple("LayerPlan", ["mode", "q", "q_next", "m_phi2", "coef1", "coef2", "n_coef",
                                     "q_rows", "q_cols"])
LayerPlan.__doc__ = """K layers of the recursion, one entry (or row) per layer k.

mode : int64[K]
    ``MODE_*`` of the layer.
q, q_next, m_phi2 : float64[K]
    Shared variance at depth l and l + 1, and E phi^2 at q (shared modes).
coef1, coef2 : float64[K, M]
    Closed-form constants (MODE_SHARED_CLOSED, in ``coef1``) or the Chebyshev coefficients
    of Delta/(1 - c) and E phi'phi' (MODE_SHARED_CHEB, the first ``n_coef[k]`` of each row).
q_rows, q_cols : float64[K, n]
    Per-point variances of the block's rows and columns (MODE_GENERAL).
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
_TILE = 64  # a 64 x 64 tile of the state (eps, Theta, Sigma) is 96 kB: it stays in L2


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
    ntr = (nr + _TILE - 1) // _TILE
    ntc = (nc + _TILE - 1) // _TILE
    ntiles = ntr * (ntr + 1) // 2 if sym else ntr * ntc
    for t in prange(ntiles):
        if sym:
            bi, bj = _tile_of(t, ntr)
        else:
            bi = t // ntc
            bj = t % ntc
        i0 = bi * _TILE
        i1 = min(nr, i0 + _TILE)
        j0 = bj * _TILE
        j1 = min(nc, j0 + _TILE)
        for k in range(S.shape[0]):
            n1 = plan.n_coef[k]
            mode = plan.mode[k]
            if mode == MODE_SHARED_CLOSED:
                _tile_closed(k, act, sw2, sb2, plan.q[k], plan.q_next[k], plan.m_phi2[k],
                             plan.coef1[k], th, eps, S, T, sym, i0, i1, j0, j1)
            elif mode == MODE_GENERAL_CLOSED:
                _tile_general_closed(k, act, sw2, sb2, plan.q_rows[k], plan.q_cols[k], sig, th,
                                     S, T, sym, i0, i1, j0, j1)
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
