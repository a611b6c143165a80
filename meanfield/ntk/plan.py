"""The per-block :class:`~meanfield.ntk.blocks.LayerPlan` of a run of layers: the layers'
shared data (:class:`~meanfield.ntk.recursion.LayerStep`) restricted to one block's rows
and columns and packed into the arrays the Numba kernel reads."""

from __future__ import annotations

import numpy as np

from ..core.gaussian import hermite
from . import blocks as K
from . import taylor


def _herm_fields(steps, blk):
    """Hermite arrays of the plan for one block: (herm_n, a_r, b_r, a_c, b_c, tau_r, tau_c,
    fg_r, fg_c), zero-sized when no layer uses the Hermite mode."""
    n = len(steps)
    herm = [s for s in steps if s.mode == K.MODE_GENERAL_HERMITE]
    nl = hermite.LADDER.size
    nmax = max([s.herm_a.shape[0] for s in herm], default=0)
    nr = blk.rows.size if herm else 0
    nc = blk.cols.size if herm else 0
    hn = np.zeros(n, dtype=np.int64)
    a_r = np.zeros((n, nmax, nr))
    b_r = np.zeros((n, nmax, nr))
    tau_r = np.full((n, 2, nl, nr), np.inf)
    fg_r = np.zeros((n, nr, 2))
    same = blk.sym
    if same:
        a_c, b_c, tau_c, fg_c = a_r, b_r, tau_r, fg_r
    else:
        a_c = np.zeros((n, nmax, nc))
        b_c = np.zeros((n, nmax, nc))
        tau_c = np.full((n, 2, nl, nc), np.inf)
        fg_c = np.zeros((n, nc, 2))
    for k, s in enumerate(steps):
        if s.mode != K.MODE_GENERAL_HERMITE:
            continue
        N1 = s.herm_a.shape[0]
        hn[k] = N1 - 1
        a_r[k, :N1] = s.herm_a[:, blk.rows]
        b_r[k, :N1] = s.herm_b[:, blk.rows]
        tau_r[k] = s.herm_tau[blk.rows].transpose(1, 2, 0)
        fg_r[k] = s.herm_fg[blk.rows]
        if not same:
            a_c[k, :N1] = s.herm_a[:, blk.cols]
            b_c[k, :N1] = s.herm_b[:, blk.cols]
            tau_c[k] = s.herm_tau[blk.cols].transpose(1, 2, 0)
            fg_c[k] = s.herm_fg[blk.cols]
    return hn, a_r, b_r, a_c, b_c, tau_r, tau_c, fg_r, fg_c


def _taylor_fields(steps, blk):
    """Taylor arrays of the plan for one block (:func:`taylor.row_in_tile`): the per-input
    data of each layer's table at the block's rows and columns, zero-sized without tables."""
    n = len(steps)
    dims = [taylor.table_dims(s.coef1) if s.mode == K.MODE_GENERAL_HERMITE else (0, 0)
            for s in steps]
    kmax = max([d[0] for d in dims], default=0)
    M = max([d[1] for d in dims], default=0)
    nr, nc = (blk.rows.size, blk.cols.size) if kmax else (0, 0)
    tk = np.array([d[0] for d in dims], dtype=np.int64)
    tm = np.array([d[1] for d in dims], dtype=np.int64)
    U = np.zeros((n, kmax + 1, M, nr))
    T = np.zeros((n, M, nc))
    sd = [np.zeros((n, kmax + 1, m)) for m in (nr, nr, nc, nc)]
    E = np.zeros((n, 2, kmax + 1))
    for k, (s, (km, Mk)) in enumerate(zip(steps, dims)):
        if km == 0:
            continue
        tab = s.coef1
        for pts, a, b in ((blk.rows, 0, 1), (blk.cols, 2, 3)):
            Uk = np.empty((km + 1, Mk, pts.size))
            Tk = np.empty((Mk, pts.size))
            d1 = np.empty((km + 1, pts.size))
            d2 = np.empty((km + 1, pts.size))
            taylor.point_data(tab, s.q_points[pts], s.herm_fg[pts], Uk, Tk, d1, d2)
            if a == 0:
                U[k, :km + 1, :Mk] = Uk
            else:
                T[k, :Mk] = Tk
            sd[a][k, :km + 1] = d1
            sd[b][k, :km + 1] = d2
        h = taylor.HEAD
        E[k, 0, :km + 1] = tab[h:h + km + 1] / tab[4]
        E[k, 1, :km + 1] = tab[h + 1:h + km + 2] / tab[5]
    return tk, tm, U, T, sd[0], sd[1], sd[2], sd[3], E


def _n_tiles(blk):
    nr = (blk.rows.size + K.TILE - 1) // K.TILE
    nc = (blk.cols.size + K.TILE - 1) // K.TILE
    return nr * (nr + 1) // 2 if blk.sym else nr * nc


def layer_plan(steps, blk, general):
    """The :class:`~meanfield.ntk.blocks.LayerPlan` of ``steps`` for one block."""
    n = len(steps)
    width = max([max(s.coef1.size, s.coef2.size) for s in steps] + [1])
    c1 = np.zeros((n, width))
    c2 = np.zeros((n, width))
    lens = np.zeros(n, dtype=np.int64)
    for k, s in enumerate(steps):
        c1[k, :s.coef1.size] = s.coef1
        c2[k, :s.coef2.size] = s.coef2
        lens[k] = max(s.coef1.size, s.coef2.size)
    q_rows = np.array([s.q_points[blk.rows] for s in steps]) if general else np.zeros((n, 0))
    q_cols = np.array([s.q_points[blk.cols] for s in steps]) if general else np.zeros((n, 0))
    hf = _herm_fields(steps, blk)
    tf = _taylor_fields(steps, blk)
    return K.LayerPlan(np.array([s.mode for s in steps], dtype=np.int64),
                       np.array([s.q for s in steps]), np.array([s.q_next for s in steps]),
                       np.array([s.m_phi2 for s in steps]), c1, c2, lens, q_rows, q_cols,
                       hf[0], hermite.LADDER, *hf[1:], np.zeros(_n_tiles(blk), dtype=np.int64),
                       *tf, np.zeros(_n_tiles(blk), dtype=np.int64),
                       np.zeros(_n_tiles(blk), dtype=np.int64))
