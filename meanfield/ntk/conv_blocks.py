"""Numba kernels of the convolutional NNGP/NTK recursion (docs/theory.md, "Convolutional
networks").

Pixels are flattened, p = h W + w.  ``nbr[p, d]`` is the pixel p + delta_d under the
padding (wrapped modulo H, W for "circular"; -1 when it falls outside the image for
"same", and then the term is absent while the divisor stays k^2).  With
``s = sw2 / k^2`` one layer is::

    Sigma^{l+1}_{pp'} = s sum_d K^l_{p+d, p'+d} + sb2
    Theta^{l+1}_{pp'} = Sigma^{l+1}_{pp'} + s sum_d Kdot^l_{p+d, p'+d} Theta^l_{p+d, p'+d}

with K, Kdot = E[phi(u) phi(v)], E[phi'(u) phi'(v)] on the 2x2 covariance
[[Sigma_pp(x,x), Sigma_pp'(x,x')], [., Sigma_p'p'(x',x')]] of each entry.

Two shapes of state per pair of images:

* the pixel diagonal p = p' (vector of H W entries): enough for the flatten readout, since
  the diagonal at depth l + 1 needs only the diagonals at depth l;
* the full pixel-pixel matrix (H W x H W): needed by the global-average-pool readout.

The variances Sigma_pp(x, x) of every image and depth are computed first
(:func:`self_diagonals`); then :func:`pair_kernels` runs over pairs of images in parallel,
each pair's state living only in the work arrays of its chunk (a chunk of pairs reuses
them), so memory is the output plus a few (H W)^2 arrays per thread.

The per-entry expectation is chosen once per call (``mode``) and each mode has its own
loop (:func:`_expect_vec`), so a faster rule can be added as one more loop:
``EXPECT_CLOSED`` uses :func:`meanfield.core.gaussian.closed.pair` (ReLU family, erf, gelu,
sin, linear), ``EXPECT_QUAD`` :func:`meanfield.core.gaussian.moments.pair` (any activation,
the 2-D rules of docs/theory.md, "Numerics"), ``EXPECT_HERMITE`` the per-pixel Hermite
expansions of :mod:`meanfield.ntk.conv_hermite` (smooth activations without a closed form),
whose coefficient tables ``H[image, depth, pixel, k]`` are passed in (a dummy otherwise).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from ..core.gaussian import closed
from ..core.gaussian.moments import pair as quad_pair
from .conv_hermite import herm_pair
from .blocks import upper_pair

EXPECT_CLOSED = 0
EXPECT_QUAD = 1
EXPECT_HERMITE = 2

READ_FLATTEN = 0
READ_GAP = 1

# Which pairs of images :func:`pair_kernels` visits.
PAIRS_ALL = 0    # every (row image, column image)
PAIRS_UPPER = 1  # rows are the columns: i <= j, mirrored (a symmetric kernel)
PAIRS_DIAG = 2   # rows are the columns: (i, i) only (the test variances of predictions)


def neighbours(H, W, k, circular):
    """``nbr[p, d]``: flat index of pixel p + delta_d (d over the k x k offsets, row-major),
    wrapped for circular padding, -1 outside the image for "same" padding."""
    r = k // 2
    off = [(a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)]
    nbr = np.empty((H * W, k * k), dtype=np.int64)
    for h in range(H):
        for w in range(W):
            for d, (a, b) in enumerate(off):
                hh, ww = h + a, w + b
                if circular:
                    nbr[h * W + w, d] = (hh % H) * W + (ww % W)
                elif 0 <= hh < H and 0 <= ww < W:
                    nbr[h * W + w, d] = hh * W + ww
                else:
                    nbr[h * W + w, d] = -1
    return nbr


# --------------------------------------------------------------------------- expectations
@nb.njit(cache=True)
def _expect_vec(mode, act, v1, v2, s, same, K, Kd, Ha, Hb, ka, kb, odd):
    """K[e], Kd[e] = E[phi phi], E[phi' phi'] on [[v1[e], s[e]], [s[e], v2[e]]] for every e.

    ``same[e]`` marks u = v (the same image and pixel); Ha[e], Hb[e] are the Hermite rows of
    the two variances (EXPECT_HERMITE, first max(ka[e], kb[e]) used; ``odd``: the table's even
    terms k >= 2 vanish and its rows are packed, see :func:`conv_hermite.depth_table`).
    One loop per mode: a single loop with every branch inside runs the closed forms at half
    speed (see ntk/blocks.py).
    """
    if mode == EXPECT_CLOSED:
        for e in range(s.shape[0]):
            K[e], Kd[e] = closed.pair(act, v1[e], v2[e], s[e], same[e])
    elif mode == EXPECT_HERMITE:
        for e in range(s.shape[0]):
            if v1[e] > 0.0 and v2[e] > 0.0:
                K[e], Kd[e] = herm_pair(Ha[e], Hb[e], max(ka[e], kb[e]), v1[e], v2[e],
                                        s[e], same[e], odd)
            else:
                K[e], Kd[e] = quad_pair(act, v1[e], v2[e], s[e], same[e])
    else:
        for e in range(s.shape[0]):
            K[e], Kd[e] = quad_pair(act, v1[e], v2[e], s[e], same[e])


@nb.njit(cache=True)
def _expect_full(mode, act, vr, vc, S, self_pair, K, Kd, Hr, Hc, kr, kc, odd):
    """The same on a full H W x H W matrix S (variances vr[p], vc[p'], Hermite rows Hr[p],
    Hc[p'])."""
    P = S.shape[0]
    if mode == EXPECT_HERMITE:
        for p in range(P):
            a = vr[p]
            for q in range(P):
                b = vc[q]
                same = self_pair and p == q
                if a > 0.0 and b > 0.0:
                    K[p, q], Kd[p, q] = herm_pair(Hr[p], Hc[q], max(kr[p], kc[q]), a, b,
                                                  S[p, q], same, odd)
                else:
                    K[p, q], Kd[p, q] = quad_pair(act, a, b, S[p, q], same)
    elif mode == EXPECT_CLOSED:
        for p in range(P):
            for q in range(P):
                K[p, q], Kd[p, q] = closed.pair(act, vr[p], vc[q], S[p, q], self_pair and p == q)
    else:
        for p in range(P):
            for q in range(P):
                K[p, q], Kd[p, q] = quad_pair(act, vr[p], vc[q], S[p, q], self_pair and p == q)


# --------------------------------------------------------------------------- layer 1
@nb.njit(cache=True)
def _layer1_diag(A, B, nbr, scale, sb2, S):
    """S[p] = scale sum_d A[p+d] . B[p+d] + sb2 (scale = sw2 / (C k^2))."""
    P, nd = nbr.shape
    C = A.shape[1]
    g = np.empty(P)
    for p in range(P):
        t = 0.0
        for c in range(C):
            t += A[p, c] * B[p, c]
        g[p] = t
    for p in range(P):
        t = 0.0
        for d in range(nd):
            q = nbr[p, d]
            if q >= 0:
                t += g[q]
        S[p] = scale * t + sb2


@nb.njit(cache=True)
def _layer1_full(A, B, nbr, scale, sb2, G, S):
    """S[p, p'] = scale sum_d A[p+d] . B[p'+d] + sb2, through the Gram matrix G (work)."""
    P, nd = nbr.shape
    C = A.shape[1]
    for p in range(P):
        for q in range(P):
            t = 0.0
            for c in range(C):
                t += A[p, c] * B[q, c]
            G[p, q] = t
    _shift_sum(G, G, G, nbr, scale, np.full((1, 1), sb2), S, False)


@nb.njit(cache=True)
def _shift_sum(K, Kd, Th, nbr, scale, add, out, with_theta):
    """out[p, p'] = scale sum_d K[p+d, p'+d] + add, or with ``with_theta``
    scale sum_d Kd[p+d, p'+d] Th[p+d, p'+d] + add[p, p'] (terms with a pixel outside are absent).

    ``add`` is a scalar (sb2) without theta and the matrix Sigma^{l+1} with it; ``out`` must
    not alias K, Kd or Th.
    """
    P, nd = nbr.shape
    for p in range(P):
        for q in range(P):
            t = 0.0
            for d in range(nd):
                a = nbr[p, d]
                b = nbr[q, d]
                if a >= 0 and b >= 0:
                    if with_theta:
                        t += Kd[a, b] * Th[a, b]
                    else:
                        t += K[a, b]
            if with_theta:
                out[p, q] = scale * t + add[p, q]
            else:
                out[p, q] = scale * t + add[0, 0]


# --------------------------------------------------------------------------- per image
@nb.njit(cache=True, parallel=True)
def self_layer1(Z, nbr, sw2, sb2, k2, C, V0):
    """V0[i, p] = Sigma^1_pp(x_i, x_i) for images Z (N, P, C)."""
    for i in prange(Z.shape[0]):
        s = np.empty(V0.shape[1])
        _layer1_diag(Z[i], Z[i], nbr, sw2 / (C * k2), sb2, s)
        V0[i] = s


@nb.njit(cache=True, parallel=True)
def self_step(mode, act, H, kp, odd, nbr, sw2, sb2, k2, v, t, vn, tn):
    """One layer of the pixel-diagonal recursion of every pair (x, x), u = v on every entry:
    (v, t) = (Sigma^l_pp, Theta^l_pp)(x, x) of shape (N, P) -> (vn, tn) at depth l + 1.
    H : (N, P, K) Hermite rows of depth l and kp (N, P) the terms each needs
    (EXPECT_HERMITE only), ``odd`` the table's parity (:func:`_expect_vec`)."""
    N, P = v.shape
    for i in prange(N):
        K = np.empty(P)
        Kd = np.empty(P)
        same = np.ones(P, dtype=np.bool_)
        _expect_vec(mode, act, v[i], v[i], v[i], same, K, Kd, H[i], H[i], kp[i], kp[i], odd)
        _filter_step(K, Kd, t[i], nbr, sw2, sb2, k2, vn[i], tn[i])


@nb.njit(cache=True)
def _filter_step(K, Kd, th, nbr, sw2, sb2, k2, sn, tn):
    """One layer of the pixel diagonal: sn_p = sw2/k^2 sum_d K_{p+d} + sb2 and
    tn_p = sn_p + sw2/k^2 sum_d Kd_{p+d} th_{p+d} (absent neighbours, nbr < 0, are zeros)."""
    for p in range(nbr.shape[0]):
        a = 0.0
        b = 0.0
        for d in range(nbr.shape[1]):
            q = nbr[p, d]
            if q >= 0:
                a += K[q]
                b += Kd[q] * th[q]
        sn[p] = sw2 / k2 * a + sb2
        tn[p] = sn[p] + sw2 / k2 * b


# --------------------------------------------------------------------------- pairs of images
@nb.njit(cache=True)
def _table(Hflat, offs, Ks, N, P, l):
    """Depth l's Hermite table (N, P, Ks[l]) inside the flat storage (one block per depth,
    each padded only to its own depth's length)."""
    return Hflat[offs[l]:offs[l] + N * P * Ks[l]].reshape((N, P, Ks[l]))


@nb.njit(cache=True)
def _readout_and_rows(l, S, Th, out_s, out_t, tab, P, ii, jj):
    """The step every layer l of a pair starts with, for both readouts: out_*[l] = the mean
    of S, Th (the pixel diagonal, or all pixel pairs), and depth l's Hermite rows of table
    images ii, jj with the table's parity (the last depth, l = L - 1, has no table and
    returns the first depth's; the callers ignore them there)."""
    out_s[l] = np.mean(S)
    out_t[l] = np.mean(Th)
    lt = l if l < tab[2].shape[0] else 0
    Tl = _table(tab[0], tab[1], tab[2], tab[3], P, lt)
    return Tl[ii], Tl[jj], tab[4][lt]


@nb.njit(cache=True)
def _pair_diag(mode, act, x, y, vx, vy, tab, ii, jj, kx, ky, same_img, nbr, sw2, sb2, k2, C, out_s,
               out_t):
    """Flatten readout of one pair: mean_p of the pixel-diagonal Sigma^l, Theta^l, l = 1..L."""
    L = out_s.shape[0]
    P = nbr.shape[0]
    s = np.empty(P)
    _layer1_diag(x, y, nbr, sw2 / (C * k2), sb2, s)
    th = s.copy()
    K = np.empty(P)
    Kd = np.empty(P)
    sn = np.empty(P)
    tn = np.empty(P)
    same = np.zeros(P, dtype=np.bool_)
    if same_img:
        same[:] = True
    for l in range(L - 1):
        Ha, Hb, odd = _readout_and_rows(l, s, th, out_s, out_t, tab, P, ii, jj)
        _expect_vec(mode, act, vx[l], vy[l], s, same, K, Kd, Ha, Hb, kx[l], ky[l], odd)
        _filter_step(K, Kd, th, nbr, sw2, sb2, k2, sn, tn)
        s[:] = sn  # not before the loop ends: every p reads the old values at p + d
        th[:] = tn
    _readout_and_rows(L - 1, s, th, out_s, out_t, tab, P, ii, jj)


@nb.njit(cache=True)
def _pair_full(mode, act, x, y, vx, vy, tab, ii, jj, kx, ky, same_img, nbr, sw2, sb2, k2, C, out_s,
               out_t, work):
    """Global-average-pool readout of one pair: mean over p, p' of Sigma^l, Theta^l."""
    L = out_s.shape[0]
    P = nbr.shape[0]
    S, Th, K, Kd, Tn = work[0], work[1], work[2], work[3], work[4]
    b2 = np.full((1, 1), sb2)
    _layer1_full(x, y, nbr, sw2 / (C * k2), sb2, K, S)
    Th[:, :] = S
    for l in range(L - 1):
        Ha, Hb, odd = _readout_and_rows(l, S, Th, out_s, out_t, tab, P, ii, jj)
        _expect_full(mode, act, vx[l], vy[l], S, same_img, K, Kd, Ha, Hb, kx[l], ky[l], odd)
        _shift_sum(K, Kd, Th, nbr, sw2 / k2, b2, S, False)   # Sigma^{l+1} (K no longer needs S)
        _shift_sum(K, Kd, Th, nbr, sw2 / k2, S, Tn, True)    # Theta^{l+1}
        Th[:, :] = Tn
    _readout_and_rows(L - 1, S, Th, out_s, out_t, tab, P, ii, jj)


@nb.njit(cache=True, parallel=True)
def pair_kernels(mode, readout, act, Zr, Zc, Vr, Vc, tab, base_r, base_c, Kr, Kc, nbr, sw2, sb2, k2, C,
                 pairs, slot, chunk, out_s, out_t):
    """NNGP/NTK readouts of pairs (Zr[i], Zc[j]) at the kept depths into out_*[:, i, j].

    Zr, Zc : (Nr, P, C), (Nc, P, C) images; Vr, Vc : (N*, L, P) their Sigma^l_pp(x, x);
    tab : (Hflat, offs, Ks, N, odd) the Hermite tables of all N images (see :func:`_table`)
    and their parities per depth;
    row image i is table image base_r + i, column image j is base_c + j; Kr, Kc
    (N*, L - 1, P) the terms each row needs (EXPECT_HERMITE; otherwise never read).
    ``pairs``: PAIRS_ALL every (i, j); PAIRS_UPPER (Zr is Zc) only i <= j, mirrored;
    PAIRS_DIAG (Zr is Zc) only (i, i), written to out_*[:, i, 0].  ``slot[l]`` (length L,
    the depth the recursion runs to) is the row of out_* that keeps depth l + 1, or -1:
    each pair runs through every layer, but only kept depths reach the output, so the
    output holds K x Nr x Nc doubles for K kept depths.  Pairs are processed in chunks of
    ``chunk`` consecutive pair numbers, one chunk per parallel iteration, each with its own
    work arrays.
    """
    L = slot.shape[0]
    nr = Zr.shape[0]
    nc = Zc.shape[0]
    P = nbr.shape[0]
    if pairs == PAIRS_UPPER:
        npairs = nr * (nr + 1) // 2
    elif pairs == PAIRS_DIAG:
        npairs = nr
    else:
        npairs = nr * nc
    nchunks = (npairs + chunk - 1) // chunk
    for ch in prange(nchunks):
        ts = np.empty(L)
        tt = np.empty(L)
        if readout == READ_GAP:
            work = np.empty((5, P, P))
        else:
            work = np.empty((5, 1, 1))
        for t in range(ch * chunk, min(npairs, (ch + 1) * chunk)):
            if pairs == PAIRS_UPPER:
                i, j = upper_pair(t, nr)
            elif pairs == PAIRS_DIAG:
                i = t
                j = t
            else:
                i = t // nc
                j = t % nc
            same_img = pairs != PAIRS_ALL and i == j
            if readout == READ_GAP:
                _pair_full(mode, act, Zr[i], Zc[j], Vr[i], Vc[j], tab, base_r + i, base_c + j,
                           Kr[i], Kc[j], same_img, nbr, sw2, sb2, k2, C, ts, tt, work)
            else:
                _pair_diag(mode, act, Zr[i], Zc[j], Vr[i], Vc[j], tab, base_r + i, base_c + j,
                           Kr[i], Kc[j], same_img, nbr, sw2, sb2, k2, C, ts, tt)
            jo = 0 if pairs == PAIRS_DIAG else j
            for l in range(L):
                k = slot[l]
                if k < 0:
                    continue
                out_s[k, i, jo] = ts[l]
                out_t[k, i, jo] = tt[l]
                if pairs == PAIRS_UPPER:
                    out_s[k, j, i] = ts[l]
                    out_t[k, j, i] = tt[l]
