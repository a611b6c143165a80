"""The MODE_GENERAL_HERMITE tile of :func:`meanfield.ntk.blocks.advance`: pairs of inputs of
unequal norms through one layer by per-input Hermite (Mehler) series, and where their
bound is not met by the Taylor series about c = 1 (:mod:`meanfield.ntk.taylor`), the
angular table (:mod:`meanfield.ntk.angular`) or the exact 2-D rule."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..core.gaussian.hermite import RTOL as HERM_RTOL
from ..core.gaussian.moments import pair
from . import angular as AN
from . import taylor as TY


@nb.njit(cache=True, error_model="numpy")
def hermite_layer(k, act, sw2, sb2, plan, sig, th, S, T, sym, i0, i1, j0, j1, tile):
    """MODE_GENERAL_HERMITE: per pair, the Taylor series about c = 1 if the layer has a
    table and its bound is met (:func:`taylor.row_in_tile`); else the Mehler sum, Horner in
    c vectorized along a row of the tile, truncated at the pair's own order (the terms
    above it enter as exact zeros); where no order of the ladder meets the bound, the
    angular table if the layer has one (``plan.coef2[k]``, :func:`angular.row_in_tile`)
    and it covers the pair's angle, else the exact 2-D rule.

    The loops run over row views indexed from 0 (see ``blocks._tile_general_fast``: an
    index ``j0 + t`` of unknown sign makes Numba's wraparound check gather element by
    element), with error_model="numpy" so no division check blocks vectorization."""
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
    nmax = plan.herm_n[k]
    nj = j1 - j0
    rc0 = np.empty(nj)
    qcv = qc[j0:j1]
    for t in range(nj):
        rc0[t] = 1.0 / math.sqrt(qcv[t]) if qcv[t] > 0.0 else 0.0
    cv0 = np.empty(nj)
    npair0 = np.empty(nj, dtype=np.int64)
    nfail0 = np.empty(nj, dtype=np.int64)
    pw0 = np.empty(nj)
    cinc0 = np.empty(nj)
    accd0 = np.empty(nj)
    accp0 = np.empty(nj)
    nfb = 0
    ntay = 0
    sqc0 = np.sqrt(np.maximum(qcv, 0.0))
    wk = np.empty((9, nj))  # Taylor: x, sums D and P, scratch
    want0 = np.empty(nj, dtype=np.bool_)
    skip0 = np.empty(nj, dtype=np.bool_)
    use0 = np.empty(nj, dtype=np.bool_)
    wa = np.empty((2, nj))  # the angular table's E phi phi, E phi'phi'
    nang = 0
    kt0 = np.empty(nj, dtype=np.int64)
    for i in range(i0, i1):
        jb = max(i, j0) if sym else j0
        b0 = jb - j0
        mm = j1 - jb
        srow = sig[i, jb:j1]
        trow = th[i, jb:j1]
        rc = rc0[b0:]
        cv = cv0[:mm]
        npair = npair0[:mm]
        nfail = nfail0[:mm]
        pw = pw0[:mm]
        cinc = cinc0[:mm]
        accd = accd0[:mm]
        accp = accp0[:mm]
        ri = 1.0 / math.sqrt(qr[i]) if qr[i] > 0.0 else 0.0
        nrow = -1
        for t in range(mm):
            c = min(1.0, max(-1.0, srow[t] * ri * rc[t]))
            cv[t] = c
            accd[t] = 0.0
            accp[t] = 0.0
        # The Taylor series about c = 1 first (when the layer has a table): a pair it takes
        # needs no Hermite order, and when it takes every pair of a layer the layer needs no
        # Hermite coefficients at all (Recursion skips them, see taylor.covers).
        kt = kt0[:mm]
        for t in range(mm):
            npair[t] = -1
        TY.row_in_tile(plan, k, i, jb, j1, cv, npair, math.sqrt(max(qr[i], 0.0)), sqc0[b0:],
                       sym and jb == i, kt, wk[:, :mm], want0[:mm])
        nleft = 0
        for t in range(mm):
            nleft += 1 if kt[t] < 0 else 0
        # Each other pair's order: the first of the ladder with |c|^(N+1) tau_i tau_j <= RTOL
        # for phi and phi' (tails are non-increasing along the ladder, so the failing orders
        # form a prefix and are counted branch-free).  Depends on the pair alone, so
        # results do not depend on the tiling.
        if nleft > 0 and nmax >= ladder[0]:
            for t in range(mm):
                ac = abs(cv[t])
                c4 = ac * ac
                c4 = c4 * c4
                pw[t] = c4 * c4 * ac  # |c|^(LADDER[0] + 1), LADDER[0] = 8
                cinc[t] = c4
                nfail[t] = 0
            inc_prev = 4
            mvalid = 0
            for m in range(ladder.shape[0]):
                if ladder[m] > nmax:
                    break
                mvalid = m + 1
                if m > 0:
                    inc = ladder[m] - ladder[m - 1]
                    while inc_prev < inc:
                        for t in range(mm):
                            cinc[t] = cinc[t] * cinc[t]
                        inc_prev *= 2
                    for t in range(mm):
                        pw[t] = pw[t] * cinc[t]
                tai = tr[0, m, i]
                tbi = tr[1, m, i]
                ta = tc[0, m, jb:j1]
                tb = tc[1, m, jb:j1]
                for t in range(mm):
                    okm = ((pw[t] * tai * ta[t] <= HERM_RTOL)
                           & (pw[t] * tbi * tb[t] <= HERM_RTOL))
                    nfail[t] += 0 if okm else 1
            for t in range(mm):
                f = nfail[t]
                npair[t] = ladder[f] if (f < mvalid) & (kt[t] < 0) else -1
                nrow = max(nrow, npair[t])
            if sym and jb == i:
                npair[0] = -1  # the diagonal: exact moments below
        skip = skip0[:mm]
        by_table = use0[:mm]
        for t in range(mm):
            skip[t] = (npair[t] >= 0) | (kt[t] >= 0)
        if sym and jb == i:
            skip[0] = True
        nang += AN.row_in_tile(plan.coef2[k], math.sqrt(max(qr[i], 0.0)), sqc0[b0:], cv, skip,
                               wa[:, :mm], by_table)
        for n in range(nrow, -1, -1):
            ai = Ar[n, i]
            bi = Br[n, i]
            an = Ac[n, jb:j1]
            bn = Bc[n, jb:j1]
            for t in range(mm):
                use = n <= npair[t]
                accd[t] = accd[t] * cv[t] + (ai * an[t] if use else 0.0)
                accp[t] = accp[t] * cv[t] + (bi * bn[t] if use else 0.0)
        for t in range(mm):
            j = jb + t
            if sym and i == j:
                D = fg[i, 0]
                Dp = fg[i, 1]
            elif kt[t] >= 0:
                D = wk[1, t]
                Dp = wk[2, t]
                ntay += 1
            elif npair[t] >= 0:
                D = accd[t]
                Dp = accp[t]
            elif by_table[t]:
                D = wa[0, t]
                Dp = wa[1, t]
            else:
                D, Dp = pair(act, qr[i], qc[j], srow[t], False)
                nfb += 1
            sv = sw2 * D + sb2
            tv = sv + sw2 * Dp * trow[t]
            srow[t] = sv
            trow[t] = tv
            S[k, i, j] = sv
            T[k, i, j] = tv
    plan.fallback[tile] += nfb
    plan.taylor[tile] += ntay
    plan.angular[tile] += nang
