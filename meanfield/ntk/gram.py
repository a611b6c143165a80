"""Layer 1 of the kernels: the inputs' inner products (docs/theory.md, "Kernels on a data
set"), Sigma^1_ij = sw2 x_i.x_j / d + sb2, computed so that any block of the kernel is bit
for bit the same block of the whole (the store path relies on it), and eps_ij = 1 - c_ij
recomputed from direct differences where the inner products lose its digits.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

GRAM_ROWS = 32    # rows of A per task: their accumulators (32 x GRAM_COLS) stay in L2
GRAM_COLS = 256   # columns per tile: one row of accumulators (2 kB) stays in L1
GRAM_DEPTH = 128  # k per tile: the Bt tile (128 x 256, 256 kB) is reused by all 32 rows


@nb.njit(cache=True, parallel=True)
def gram(A, Bt, out):
    """out[i, j] = sum_k A[i, k] Bt[k, j], every entry summed in the order k = 0 .. d - 1.

    The value of an entry depends on its two inputs alone, not on the shapes of A and Bt:
    any block of the kernel is bit for bit the same block of the whole product.  BLAS gemm
    does not promise that: it splits its output among threads by size, and the rows at the
    end of a thread's share go through edge kernels that round differently (measured: a
    1024-by-700 sub-block of a 3000 x 3000 product differed in 2760 entries).  The loop over
    j vectorizes (no fastmath: each lane rounds as the scalar remainder does, no FMA).

    Tiled like a matrix product (``GRAM_ROWS`` x ``GRAM_COLS`` accumulators, ``GRAM_DEPTH``
    terms at a time) so that a tile of Bt is read from cache by many rows instead of
    streaming all of Bt from memory once per row; tiling in k keeps each entry's order,
    because an entry's accumulator carries over from one k tile to the next.
    """
    n, d = A.shape
    nc = Bt.shape[1]
    for t in prange((n + GRAM_ROWS - 1) // GRAM_ROWS):
        i0 = t * GRAM_ROWS
        i1 = min(n, i0 + GRAM_ROWS)
        acc = np.empty((i1 - i0, GRAM_COLS))
        for j0 in range(0, nc, GRAM_COLS):
            w = min(GRAM_COLS, nc - j0)
            acc[:, :] = 0.0
            for k0 in range(0, d, GRAM_DEPTH):
                for i in range(i1 - i0):
                    row = acc[i]
                    for k in range(k0, min(d, k0 + GRAM_DEPTH)):
                        a = A[i0 + i, k]
                        bk = Bt[k, j0:j0 + w]
                        for j in range(w):
                            row[j] += a * bk[j]
            out[i0:i1, j0:j0 + w] = acc[:, :w]


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
