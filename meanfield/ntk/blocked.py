"""The NNGP/NTK recursion one block of the pair space at a time (docs/theory.md, "Kernels
on a data set"), for kernels too large to hold: the layer table is computed once from all
inputs, then any block I x J of

    Sigma^{l+1}_ij = sw2 E[phi(u) phi(v)] + sb2
    Theta^{l+1}_ij = Sigma^{l+1}_ij + sw2 E[phi'(u) phi'(v)] Theta^l_ij,   (u, v) ~ N(0, Lambda^l_ij)

is moved through the layers on its own, by the same Numba kernel
(:func:`meanfield.ntk.blocks.advance`) that :func:`meanfield.kernels` runs on the whole
n x n block.

Why the values agree with :func:`meanfield.kernels` bit for bit: every entry (i, j) of the
kernel depends only on the pair's own layer-1 entries and on the per-input data of each
layer (the variances q_i^l, and for the Hermite and Chebyshev paths the coefficients built
from all inputs at once), and the kernel computes it with the same arithmetic whatever
block or tile holds it.  So the table (:func:`layer_steps`) is built exactly as
``Recursion.compute`` builds it, from every input, and a block only takes the entries of
its own rows and columns from it (``POINT_AXIS`` says where they are).  Off-diagonal
blocks are computed for I < J only, in the orientation of the upper triangle that
:func:`meanfield.kernels` computes; the block J x I is their transpose.
"""

from __future__ import annotations

import numpy as np

from .recursion import Block, Recursion, setup

__all__ = ["POINT_AXIS", "table_recursion", "layer_steps", "first_block", "cross_block",
           "run_block"]

# Fields of a LayerStep that hold one entry per input point, and the axis of the points
# (the other fields are per layer: scalars and coefficient vectors shared by all pairs).
POINT_AXIS = {"q_points": 0, "q_points_next": 0, "herm_a": 1, "herm_b": 1, "herm_tau": 0,
              "herm_fg": 0}


def table_recursion(act, sw2, sb2, X, m=None) -> Recursion:
    """The recursion over all inputs of X without any block: it supplies the layer table.

    The Chebyshev interpolant's node cap depends on how many pairs the recursion serves;
    it is set to that of :func:`meanfield.kernels`' single block so that the interpolants,
    and with them the values, are the same: n^2 / 2 for the symmetric n x n block, m n for
    the cross-kernel of ``kernels(X[:n], ..., X2=X[n:])`` (``m`` = number of X2 rows,
    stacked after the n rows of X as :func:`meanfield.kernels` stacks them).
    """
    rec = setup(act, sw2, sb2, X, [])
    if m is None:
        n = X.shape[0]
        rec.n_pairs = n * n // 2
    else:
        rec.n_pairs = m * (X.shape[0] - m)
    return rec


def layer_steps(rec: Recursion, depth: int):
    """Yield the :class:`~meanfield.ntk.recursion.LayerStep` of each layer l -> l + 1,
    l = 1..depth - 1: the length map q_i^{l+1} = sw2 E phi(sqrt(q_i^l) z)^2 + sb2 per input
    (or the shared q^l) and what the pair kernel needs at that layer, computed once."""
    q, qz = rec.q, rec.qz
    for _ in range(2, depth + 1):
        s = rec._step(q, qz)  # the very step Recursion.compute takes (no copy of its logic)
        yield s
        q, qz = s.q_next, s.q_points_next


def first_block(act, sw2, sb2, Z, shared, rows, cols):
    """Layer 1 of the block Z[rows] x Z[cols] exactly as :func:`meanfield.kernels` has it.

    Sigma^1(x, x') = sw2 x.x'/d + sb2 = Theta^1.  ``rows`` and ``cols`` are equal (a diagonal
    block, symmetric) or disjoint with rows before cols (an upper off-diagonal block).
    Returns ``(block, points, qz)``: the block, indexed locally into ``points`` (the
    inputs it touches, rows then columns), and the layer-1 variances of those points.

    The norms that decide the shared-norm path (and its shared q^1) are those of all of Z,
    so ``setup`` sees the whole Z.  Each x.x' is summed in a fixed order whatever the block
    (:func:`meanfield.ntk.gram.gram`), so the block's layer 1 is that of the whole kernel
    bit for bit; the whole kernel's symmetrization (S + S^T)/2 changes nothing off the
    diagonal, since x_i.x_j and x_j.x_i are the same sum.
    """
    sym = rows is cols or np.array_equal(rows, cols)
    if sym:
        rec = setup(act, sw2, sb2, Z, [(rows, rows, True)])
        blk = rec.blocks[0]
        local = np.arange(rows.size)
        return Block(local, local, True, blk.sig, blk.eps if shared else None), rows, rec.qz[rows]
    return _off_diagonal(act, sw2, sb2, Z, shared, rows, cols)


def cross_block(act, sw2, sb2, Z, shared, rows, cols):
    """Layer 1 of the block Z[rows] x Z[cols] of the cross-kernel exactly as
    ``meanfield.kernels(Z[:n], ..., X2=Z[n:])`` has it: Sigma^1 = sw2 x2.x/d + sb2 = Theta^1
    with rows among the X2 inputs (n..len(Z) - 1) and cols among those of X (0..n - 1).
    Returns ``(block, points, qz)`` as :func:`first_block`."""
    return _off_diagonal(act, sw2, sb2, Z, shared, rows, cols)


def _off_diagonal(act, sw2, sb2, Z, shared, rows, cols):
    rec = setup(act, sw2, sb2, Z, [(rows, cols, False)])
    b = rec.blocks[0]
    local_r = np.arange(rows.size)
    local_c = rows.size + np.arange(cols.size)
    points = np.concatenate([rows, cols])
    return (Block(local_r, local_c, False, b.sig, b.eps if shared else None), points,
            rec.qz[points])


def run_block(act, sw2, sb2, qz, shared, blk: Block, step_at, keep, emit) -> int:
    """Move ``blk`` through the layers 1..max(keep), calling ``emit(k, Sigma, Theta)`` at
    each kept depth keep[k] with the block's arrays (overwritten by the next layer).

    ``qz`` are the layer-1 variances of the block's points, ``step_at(s)`` returns the
    restricted LayerStep of layer s + 1 -> s + 2.  Memory: the block's state (Sigma, Theta
    and 1 - c), whatever the number of kept depths.  Returns the number of pairs x layers
    computed by the exact 2-D rule (Hermite path), as ``pairs_exact_fallback`` counts them.
    """
    rec = Recursion(act, sw2, sb2, qz, shared, [blk])
    slot = {int(d): k for k, d in enumerate(keep)}
    for l in range(1, int(keep[-1]) + 1):
        if l > 1:
            rec._advance([step_at(l - 2)], blk, blk.sig[None], blk.th[None])
        if l in slot:
            emit(slot[l], blk.sig, blk.th)
    return int(rec.fallback_pairs)
