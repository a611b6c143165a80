"""Tiling helpers shared by the Numba kernels that move blocks of kernel entries through
layers (:mod:`meanfield.ntk.blocks`, :mod:`meanfield.ntk.hermite_tile`,
:mod:`meanfield.ntk.conv_blocks`)."""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

TILE = 64  # a 64 x 64 tile of the state (eps, Theta, Sigma) is 96 kB: it stays in L2


@nb.njit(cache=True)
def upper_pair(t, n):
    """Pair number t -> (i, j), i <= j, row-major over the upper triangle of an n x n
    matrix (of tiles here, of images in the convolutional blocks)."""
    i = 0
    rem = t
    while rem >= n - i:
        rem -= n - i
        i += 1
    return i, i + rem


@nb.njit(cache=True, parallel=True)
def pair_extremes(sig, sr, sc, sym):
    """(max of sr_i sc_j - sig[i, j], max of |sig[i, j]| / (sr_i sc_j)) over the entries
    (i, j) of a block (j > i when ``sym``): with sr, sc the square roots of the rows' and
    columns' variances, its largest (1 - c) sqrt(q_i q_j) and largest |c| ((0, 0) for an
    empty block; a zero variance counts as c = 0)."""
    nr = sig.shape[0]
    gap = np.zeros(nr)
    cor = np.zeros(nr)
    for i in prange(nr):
        g = 0.0
        m = 0.0
        for j in range(i + 1 if sym else 0, sig.shape[1]):
            d = sr[i] * sc[j]
            g = max(g, d - sig[i, j])
            if d > 0.0:
                m = max(m, abs(sig[i, j]) / d)
        gap[i] = g
        cor[i] = m
    if nr == 0:
        return 0.0, 0.0
    return np.max(gap), np.max(cor)


@nb.njit(cache=True)
def mirror(k, S, T, i0, i1, j0, j1):
    """S[k, j, i] = S[k, i, j] and T likewise for the entries i < j of a tile
    [i0, i1) x [j0, j1) of a symmetric block, once the tile's upper entries are written.

    A tile mirrors its own rows when they are done: the column reads stay in cache (the
    tile was just written) and the writes are contiguous rows, where writing each (j, i)
    along with (i, j) strides through memory (measured: half the time of a Taylor layer).
    """
    for j in range(j0, j1):
        ie = min(i1, j)
        if ie <= i0:
            continue
        Sr = S[k, j, i0:ie]
        Tr = T[k, j, i0:ie]
        for t in range(ie - i0):
            Sr[t] = S[k, i0 + t, j]
            Tr[t] = T[k, i0 + t, j]
