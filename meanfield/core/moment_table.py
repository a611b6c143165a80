"""Chebyshev tables of the 1-D Gaussian moments in log q, built once per activation.

Every 1-D moment of :func:`~meanfield.core.gaussian.moments.moments1` (and every
normalized Hermite coefficient a_n, n < N) is an analytic function of q > 0, whatever
phi's kinks: with x = sqrt(q) z,

    E f(sqrt(q) z) = int f(x) exp(-x^2 / (2 q)) / sqrt(2 pi q) dx,

and q enters only through the Gaussian.  In t = log q they are smooth on cells of width
1/CELLS_PER_DECADE decade, where a degree-DEGREE Chebyshev interpolant reproduces them to
rounding.  A phase diagram's points then need no quadrature for q*, chi_1, V'(q*), or the
dual-activation series: a lookup costs ~100 multiply-adds where a quadrature pass costs
~100 activation evaluations.

Nothing is trusted unverified.  Each cell is compared, when built, with fresh quadrature
at VERIFY_POINTS points between its Chebyshev nodes; a cell whose interpolant misses any
moment by more than VERIFY_TOL (relative, see :func:`_cell_error`) is marked unusable and
those q fall back to quadrature, as do q outside the table and q = 0.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np

from .functions import phi
from .gaussian.moments import Moments1, moments1
from .gaussian.quadrature import Z1, hermite_sums, pdf

# 4 cells per decade: the moments' nearest singularities in t = log q lie at |Im t| >= pi/2
# (q on the imaginary axis, where the Gaussian stops decaying), ~5 cell half-widths away,
# so the degree-16 interpolant's error is ~(2 * 5)^-16, below rounding.  Measured: 4 or 8
# cells per decade, degree 16 or 24 give the same verification errors (the quadrature's).
CELLS_PER_DECADE = 4
DEGREE = 16
# The table spans the length table's range (engine.TABLE_LOG10_RANGE) so that every
# Newton iterate of the length map inside the bracket is a lookup.
LOG10_RANGE = (-10, 4)
# Verification: quadrature at points between the nodes must agree to this relative
# tolerance.  The trapezoid rule is accurate to ~1e-15 (its step constant is chosen for
# that, activation.py) and varies from q to q at that level: interpolant and fresh
# quadrature differ by up to 2.5e-14 in E[phi^2 (z^2 - 1)] / E[phi^2] and ~1e-14 in the
# others for every built-in, whatever the cell width or degree.  A real interpolation
# failure shows as orders of magnitude more.
VERIFY_TOL = 1e-13
VERIFY_POINTS = 3
N_MOM = 7  # fields of Moments1
# Hermite coefficients: how many, and up to which q.  With 128 terms the dual series alone
# gives c* for most chaotic points of a diagram (tanh at q* ~ 2: a_n^2 ~ exp(-pi sqrt(2n/q)),
# so the tail past 128 is ~1e-15); its cost, and the table's, grow with N and sqrt(q).
N_HERMITE_TABLE = 128
HERMITE_LOG10_MAX = 2
HERMITE_H_MAX = 0.25
# The extension: a_n for N_HERMITE_TABLE <= n < N_HERMITE_EXT (q <= 10^HERMITE_EXT_LOG10_MAX),
# looked up only for the points whose c* the first 128 terms cannot prove (c* > ~0.9).  Their
# truncation bound is c^N tail: at N = 128 and c = 0.95 that is 1e-3 tail, at N = 512 it is
# 4e-12 tail.  Measured on the tanh diagram (q* <= 4.2): every chaotic point with c* < 0.99
# is then proven from the series alone, instead of one or two 2-D evaluations each.
N_HERMITE_EXT = 512
HERMITE_EXT_LOG10_MAX = 1
# A tail mass tabulated as E phi^2 - sum a_n^2 is known to this relative level (differences
# taken on the table's own nodes, then interpolated; measured within 1.1e-15 of the whole
# below zero, so bounds keep 4x that).
TABLE_TAIL_ROUNDING = 4e-15
# The tail of the N_HERMITE_TABLE-term series as a sum of positive terms instead of a
# difference: S0 = sum_{N<=n<N_EXT} a_n^2 and S1 = sum_{N<=n<N_EXT} n a_n^2, tabulated with the
# extension's tails past N_EXT.  As a difference the tail is known to TABLE_TAIL_ROUNDING of
# E phi^2 only, which keeps the 128-term series from proving c* in 0.5 < c* < 0.9 (it needs
# the tail to ~1e-15 E phi^2 there).  The sums are verified to SUM_VERIFY_TOL (S + SUM_FLOOR W),
# W = E phi^2 (resp. q E phi'^2), and bounds keep SUM_TOL = 100x that: 1e-8 S + 1e-18 W.
# That also covers the quadrature's own error in S, about 2 sqrt(384 S) 1e-16 sqrt(W)
# <= 4e-15 sqrt(S W) <= 2e-13 sqrt(S W) <= 1e-8 S + 1e-18 W (arithmetic-geometric mean).
SUM_VERIFY_TOL = 1e-10
SUM_TOL = 1e-8
SUM_FLOOR = 1e-10

MomentTable = namedtuple("MomentTable", ["t0", "inv_dt", "ok", "cm", "hok", "ch", "xok", "cx",
                                         "sok", "cs"])
MomentTable.__doc__ = """Piecewise Chebyshev interpolants in t = log q.

t0, inv_dt : float
    Left edge of cell 0 in t, and cells per unit t.
ok : bool array (ncell,)
    Cell verified against fresh quadrature.
cm : float array (ncell, 7, DEGREE + 1)
    Chebyshev coefficients of the Moments1 fields.
hok : bool array (ncell_h,)
    Hermite cell verified (cells 0..ncell_h - 1 of the same grid).
ch : float array (ncell_h, DEGREE + 1, N + 2)
    Chebyshev coefficients of a_n(q), n < N, and of the two tail masses (see
    :func:`_hermite_row`); ncell_h = 0 when phi has kinks (its series converges slowly).
xok : bool array (ncell_x,)
    Extension cell verified (cells 0..ncell_x - 1 of the same grid).
cx : float array (ncell_x, DEGREE + 1, N_EXT - N + 2)
    Chebyshev coefficients of a_n(q), N <= n < N_EXT, and of the tail masses past N_EXT.
sok : bool array (ncell_x,)
    Extension cell whose tail sums are verified too.
cs : float array (ncell_x, DEGREE + 1, 4)
    Chebyshev coefficients of S0 = sum_{N<=n<N_EXT} a_n^2, S1 = sum_{N<=n<N_EXT} n a_n^2 and
    the two tail masses past N_EXT (the tail of the N-term series as positive sums).
"""


def empty_table() -> MomentTable:
    """A table with no cells: every lookup falls back to quadrature."""
    return MomentTable(0.0, 1.0, np.zeros(0, dtype=np.bool_), np.zeros((0, N_MOM, DEGREE + 1)),
                       np.zeros(0, dtype=np.bool_), np.zeros((0, DEGREE + 1, 2)),
                       np.zeros(0, dtype=np.bool_), np.zeros((0, DEGREE + 1, 2)),
                       np.zeros(0, dtype=np.bool_), np.zeros((0, DEGREE + 1, 4)))


@nb.njit(cache=True)
def _moment_row(act, q, row):
    """The Moments1 fields at q, into ``row``."""
    m = moments1(act, q, np.empty(0), True)
    row[0] = m.phi
    row[1] = m.phi2
    row[2] = m.phi2z
    row[3] = m.dphi2
    row[4] = m.dphi
    row[5] = m.phi2h4
    row[6] = m.dphi2z


@nb.njit(cache=True)
def _hermite_row(act, q, row):
    """a_0..a_{N-1} at q, then the tails sum_{n>=N} a_n^2 and sum_{n>=N} n a_n^2, into
    ``row`` (length N + 2), for a phi without kinks.

    Its own trapezoid rule, finer than :func:`moments1`'s: He_n(z) grows like
    exp(sqrt(2n) |Im z|) off the real axis, which multiplies the rule's error
    exp(-2 pi d / h) (d: phi's singularity distance in z), so the step is halved; and the
    Gaussian times He_n alone aliases unless 2 pi / h >> sqrt(n) (h <= 1/4: error
    < 1e-60 for n < 128).  The tails come from E phi^2 and q E phi'^2 = sum_n n a_n^2 on
    the same nodes, so their difference is a rounding-level cancellation only.
    """
    N = row.shape[0] - 2
    sq = math.sqrt(q)
    h = 0.5 * min(HERMITE_H_MAX, act.kappa / sq)
    zmax = max(Z1, 2.0 * math.sqrt(N) + 3.0)  # past He_n's last turning point (moments1)
    K = int(zmax / h)
    odd = act.odd
    k0 = 0 if odd else -K
    nn = K + 1 - k0
    zs = np.empty(nn)
    wps = np.empty(nn)
    F = 0.0
    G = 0.0
    for i in range(nn):
        z = (k0 + i) * h
        w = h * pdf(z)
        if odd and i > 0:
            w *= 2.0  # phi He_n (n odd), phi^2 and phi'^2 are even: fold z < 0 onto z > 0
        p, dp = phi(act, sq * z)
        zs[i] = z
        wps[i] = w * p
        F += w * p * p
        G += w * dp * dp
    herm = np.zeros(N)
    hermite_sums(zs, wps, nn, herm)
    s0 = 0.0
    s1 = 0.0
    for n in range(N):
        if odd and n % 2 == 0:
            herm[n] = 0.0
        row[n] = herm[n]
        s0 += herm[n] * herm[n]
        s1 += n * herm[n] * herm[n]
    row[N] = F - s0
    row[N + 1] = q * G - s1


@nb.njit(cache=True, parallel=True)
def _rows(act, qs, nh):
    """Moment rows (nh = 0) or Hermite rows (nh = N) at every q of ``qs``; each iteration
    writes only its row."""
    out = np.empty((qs.shape[0], N_MOM if nh == 0 else nh + 2))
    for i in nb.prange(qs.shape[0]):
        if nh == 0:
            _moment_row(act, qs[i], out[i])
        else:
            _hermite_row(act, qs[i], out[i])
    return out


def _moment_error(interp, exact):
    """Error of interpolated moment rows relative to each moment's own scale.

    E phi^2 and its q-derivatives are measured against E phi^2, E phi'^2 and its
    derivative against E phi'^2, E phi against sqrt(E phi^2), E phi' against
    sqrt(E phi'^2): the scales on which the solvers combine them.  E[phi^2 He_4] only
    feeds an error estimate and is not checked.
    """
    F = np.abs(exact[..., 1:2])
    G = np.abs(exact[..., 3:4])
    scale = np.concatenate([np.sqrt(F), F, F, G, np.sqrt(G), np.full_like(F, np.inf), G], axis=-1)
    return _relative(interp, exact, scale)


def _hermite_error(interp, exact):
    """Error of interpolated Hermite rows: a_n against sqrt(E phi^2) (= sqrt(sum a_n^2)), the
    tails against E phi^2 and q E phi'^2 (recovered from the row itself)."""
    N = exact.shape[-1] - 2
    a2 = exact[..., :N] ** 2
    F = a2.sum(axis=-1, keepdims=True) + np.abs(exact[..., N:N + 1])
    qG = (np.arange(N) * a2).sum(axis=-1, keepdims=True) + np.abs(exact[..., N + 1:N + 2])
    scale = np.concatenate([np.repeat(np.sqrt(F), N, axis=-1), F, qG], axis=-1)
    return _relative(interp, exact, scale)


def _relative(interp, exact, scale):
    diff = np.abs(interp - exact)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(diff == 0.0, 0.0, diff / scale)
    return np.where(np.isfinite(err), err, np.inf)


def _chebyshev_cells(record, t0, dt, ncell, nh, error, derive=None):
    """Chebyshev coefficients (ncell, nfield, DEGREE + 1) of the rows of ``_rows(.., nh)`` on
    cells [t0 + i dt, t0 + (i + 1) dt] of t = log q, each cell's verified flag, and its
    largest verification error per field.  ``derive`` (optional) maps rows to the fields
    that are interpolated and verified instead."""
    m = DEGREE + 1
    x = np.cos(np.pi * (np.arange(m) + 0.5) / m)  # Chebyshev points of the first kind
    cells = np.arange(ncell)
    tn = t0 + (cells[:, None] + 0.5 * (x[None, :] + 1.0)) * dt
    derive = derive or (lambda rows: rows)
    vals = derive(_rows(record, np.exp(tn).ravel(), nh)).reshape(ncell, m, -1)
    # Coefficients by the discrete cosine transform at first-kind points.
    T = np.cos(np.outer(np.arange(m), np.arccos(x)))  # T[j, k] = T_j(x_k)
    coef = np.einsum("jk,ckf->cfj", T, vals) * (2.0 / m)
    coef[:, :, 0] *= 0.5
    # Verification points: midway between neighbouring nodes (where the interpolation error
    # peaks) at both ends and in the middle of the cell.
    xv = np.array([0.5 * (x[0] + x[1]), 0.5 * (x[m // 2 - 1] + x[m // 2]),
                   0.5 * (x[-2] + x[-1])])[:VERIFY_POINTS]
    tv = t0 + (cells[:, None] + 0.5 * (xv[None, :] + 1.0)) * dt
    exact = derive(_rows(record, np.exp(tv).ravel(), nh)).reshape(ncell, xv.size, -1)
    Tv = np.cos(np.outer(np.arange(m), np.arccos(xv)))  # (m, nv)
    interp = np.einsum("cfj,jv->cvf", coef, Tv)
    err = error(interp, exact).max(axis=1)
    ok = (err.max(axis=1) <= VERIFY_TOL) & np.isfinite(coef).all(axis=(1, 2))
    return np.ascontiguousarray(coef), ok, err


def build_moment_table(record) -> MomentTable:
    """Tabulate and verify the moments (and, for phi without kinks, the dual series) of the
    activation ``record``."""
    return _build(record)[0]


def _build(record):
    """(table, verification errors of the moment cells, of the Hermite cells)."""
    dt = math.log(10.0) / CELLS_PER_DECADE
    k0 = LOG10_RANGE[0] * CELLS_PER_DECADE
    t0 = k0 * dt
    cm, ok, err = _chebyshev_cells(record, t0, dt, LOG10_RANGE[1] * CELLS_PER_DECADE - k0, 0,
                                   _moment_error)
    nh = 0 if record.kinks.shape[0] > 0 else HERMITE_LOG10_MAX * CELLS_PER_DECADE - k0
    empty = np.zeros((0, DEGREE + 1, 2)), np.zeros(0, dtype=np.bool_), np.zeros((0, 1))
    if nh > 0:
        ch, hok, herr = _chebyshev_cells(record, t0, dt, nh, N_HERMITE_TABLE, _hermite_error)
        # Degree-major, so that a lookup's inner loop runs over n (and vectorizes).
        ch = np.ascontiguousarray(ch.transpose(0, 2, 1))
        # The extension is verified on its full rows (a_0 .. a_{N_EXT - 1} and the tails,
        # against the scales of the whole series) and keeps the columns from N on; the
        # tail sums (S0, S1) ride along as four more fields, verified on their own scale.
        nx = HERMITE_EXT_LOG10_MAX * CELLS_PER_DECADE - k0
        cx, _, xerr = _chebyshev_cells(record, t0, dt, nx, N_HERMITE_EXT, _extension_error,
                                       _with_tail_sums)
        nf = N_HERMITE_EXT + 2
        xok = (xerr[:, :nf].max(axis=1) <= VERIFY_TOL) & np.isfinite(cx[:, :nf]).all(axis=(1, 2))
        sok = xok & (xerr[:, nf:].max(axis=1) <= SUM_VERIFY_TOL) \
            & np.isfinite(cx[:, nf:]).all(axis=(1, 2))
        cs = np.ascontiguousarray(cx[:, nf:, :].transpose(0, 2, 1))
        cx = np.ascontiguousarray(cx[:, N_HERMITE_TABLE:nf, :].transpose(0, 2, 1))
    else:
        ch, hok, herr = empty
        cx, xok, _ = empty
        sok, cs = np.zeros(0, dtype=np.bool_), np.zeros((0, DEGREE + 1, 4))
    return MomentTable(float(t0), float(1.0 / dt), ok, cm, hok, ch, xok, cx, sok, cs), err, herr


def _with_tail_sums(rows):
    """Extension rows (a_0 .. a_{N_EXT - 1}, two tails) followed by S0, S1 (sums over
    N_HERMITE_TABLE <= n < N_EXT of a_n^2 and n a_n^2) and the two tails past N_EXT again."""
    N = N_HERMITE_EXT
    a2 = rows[:, N_HERMITE_TABLE:N] ** 2
    n = np.arange(N_HERMITE_TABLE, N)
    return np.concatenate([rows, a2.sum(axis=1, keepdims=True), (n * a2).sum(axis=1, keepdims=True),
                           rows[:, N:N + 2]], axis=1)


def _extension_error(interp, exact):
    """:func:`_hermite_error` of the extension rows, then the error of the tail sums S0, S1
    relative to each sum plus SUM_FLOOR of its whole (E phi^2, q E phi'^2), then that of the
    tails past N_EXT (as in the head, rescaled to SUM_VERIFY_TOL)."""
    nf = N_HERMITE_EXT + 2
    head = _hermite_error(interp[..., :nf], exact[..., :nf])
    a2 = exact[..., :N_HERMITE_EXT] ** 2
    F = a2.sum(axis=-1, keepdims=True) + np.abs(exact[..., N_HERMITE_EXT:N_HERMITE_EXT + 1])
    qG = (np.arange(N_HERMITE_EXT) * a2).sum(axis=-1, keepdims=True) + np.abs(exact[..., nf - 1:nf])
    floor = SUM_FLOOR * np.concatenate([F, qG], axis=-1)
    sums = _relative(interp[..., nf:nf + 2], exact[..., nf:nf + 2],
                     np.abs(exact[..., nf:nf + 2]) + floor)
    # The tails past N_EXT again: rounding-level differences, bounded with
    # TABLE_TAIL_ROUNDING as in the extension itself (same interpolant, same check).
    past = head[..., nf - 2:nf] * VERIFY_TOL / SUM_VERIFY_TOL
    return np.concatenate([head, sums, past], axis=-1)


@nb.njit(cache=True)
def _locate(tab, ok, q):
    """(cell, x in [-1, 1]) of q, or (-1, 0) when q is outside the cells verified in ``ok``."""
    if not (q > 0.0):
        return -1, 0.0
    u = (math.log(q) - tab.t0) * tab.inv_dt
    if not (u >= 0.0 and u < ok.shape[0]):
        return -1, 0.0
    i = int(u)
    if not ok[i]:
        return -1, 0.0
    return i, 2.0 * (u - i) - 1.0


@nb.njit(cache=True)
def _clenshaw(c, x):
    """sum_j c[j] T_j(x)."""
    b1 = 0.0
    b2 = 0.0
    x2 = 2.0 * x
    for j in range(c.shape[0] - 1, 0, -1):
        b1, b2 = x2 * b1 - b2 + c[j], b1
    return x * b1 - b2 + c[0]


@nb.njit(cache=True)
def lookup_moments(act, tab, q):
    """:func:`moments1` at q (without Hermite coefficients): from the table when q lies in a
    verified cell, by quadrature otherwise."""
    i, x = _locate(tab, tab.ok, q)
    if i < 0:
        return moments1(act, q, np.empty(0), True)
    c = tab.cm[i]
    return Moments1(_clenshaw(c[0], x), _clenshaw(c[1], x), _clenshaw(c[2], x),
                    _clenshaw(c[3], x), _clenshaw(c[4], x), _clenshaw(c[5], x),
                    _clenshaw(c[6], x))


@nb.njit(cache=True)
def lookup_hermite(tab, q):
    """(a_n(q) for n < N, sum_{n>=N} a_n^2, sum_{n>=N} n a_n^2) from the table; an empty
    array when q lies outside its verified Hermite cells (the caller uses quadrature)."""
    return _lookup_series(tab, tab.hok, tab.ch, q)


@nb.njit(cache=True)
def lookup_hermite_ext(tab, q):
    """(a_n(q) for N <= n < N_EXT, sum_{n>=N_EXT} a_n^2, sum_{n>=N_EXT} n a_n^2) from the
    table's extension; an empty array when q lies outside its verified cells."""
    return _lookup_series(tab, tab.xok, tab.cx, q)


@nb.njit(cache=True)
def lookup_tail_sums(tab, q):
    """(S0, S1, tail past N_EXT, n-weighted tail past N_EXT) at q: the tail of the
    N_HERMITE_TABLE-term series as positive sums (S0, S1 known to SUM_TOL (S + SUM_FLOOR W),
    the tails past N_EXT to TABLE_TAIL_ROUNDING W, with W = E phi^2 resp. q E phi'^2), or
    four NaN outside their verified cells."""
    s, t0, t1 = _lookup_series(tab, tab.sok, tab.cs, q)
    if s.shape[0] == 0:
        return math.nan, math.nan, math.nan, math.nan
    return s[0], s[1], t0, t1


@nb.njit(cache=True)
def _lookup_series(tab, ok, cells, q):
    """Interpolated coefficients and the two tails of the Hermite cells ``cells``."""
    i, x = _locate(tab, ok, q)
    if i < 0:
        return np.empty(0), 0.0, 0.0
    c = cells[i]
    nf = c.shape[1]
    out = np.zeros(nf)
    # sum_j c_j T_j(x) for all fields at once: T_j by its recurrence, fields innermost.
    t_prev = 1.0
    t_cur = x
    for n in range(nf):
        out[n] = c[0, n] + x * c[1, n]
    for j in range(2, c.shape[0]):
        t_prev, t_cur = t_cur, 2.0 * x * t_cur - t_prev
        for n in range(nf):
            out[n] += t_cur * c[j, n]
    N = nf - 2
    return out[:N], out[N], out[N + 1]
