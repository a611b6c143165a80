"""Tiling helpers shared by the Numba kernels that move blocks of kernel entries through
layers (:mod:`meanfield.ntk.blocks`, :mod:`meanfield.ntk.hermite_tile`,
:mod:`meanfield.ntk.conv_blocks`)."""

from __future__ import annotations

import numba as nb

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


@nb.njit(cache=True)
def put(k, i, j, sv, tv, S, T, sym):
    """Write layer k's Sigma and Theta of entry (i, j), and of (j, i) in a symmetric block."""
    S[k, i, j] = sv
    T[k, i, j] = tv
    if sym:
        S[k, j, i] = sv
        T[k, j, i] = tv
