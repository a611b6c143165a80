"""Chebyshev tables in the angle theta = arccos c for the ELU family on a general 2 x 2
covariance (docs/theory.md, "Kernels on a data set"), for the pairs of raw inputs whose
per-input Hermite series cannot meet its bound.

ELU's Hermite coefficients decay only algebraically (phi'' jumps at 0), so near c = +-1
the Mehler sum needs more terms than any order of the ladder, and those pairs used to
take the exact 2-D rule (~2 ms each).  But with a kink only at 0 and entire pieces, the
two-point expectations are analytic in the angle: for (u, v) = (s1 z1, s2 w),
w = cos(theta) z1 + sin(theta) z2, write z = r (cos a, sin a); phi(s1 r cos a) is analytic
in a except where cos a = 0, phi(s2 r cos(a - theta)) except where cos(a - theta) = 0.
On each of the four arcs between those points both factors are entire and the arcs'
end points move linearly with theta, so on [0, pi]

    F(s1, s2, theta) = E[phi(u) phi(v)],   G(s1, s2, theta) = E[phi'(u) phi'(v)]

are (restrictions of) entire functions of theta, and analytic in s1, s2 > 0.  A
tensor Chebyshev interpolant in (theta, s1, s2) over [0, theta_max] x [s_lo, s_hi]^2
converges spectrally.  Its node values are 1-D integrals: given z1, v is normal with
mean mu = s2 c z1 and standard deviation tau = s2 sin(theta), and for
phi(x) = lam x (x > 0), lam alpha (e^x - 1) (x <= 0)::

    E[phi(v) | z1]  = lam (mu Phi(r) + tau pdf(r)) + lam alpha (E1 - Phi(-r))
    E[phi'(v) | z1] = lam Phi(r) + lam alpha E1,     r = mu / tau = c z1 / sin(theta)
    E1 = E[e^v 1{v < 0} | z1] = exp(mu + tau^2 / 2) Phi(-(r + tau))

so F = E[phi(s1 z1) E[phi(v) | z1]] is a Gauss-Legendre sum over panels split at z1 = 0
and graded geometrically towards it (the conditional expectations change over
|z1| ~ tan(theta), the exponential pieces over 1/s); node values agree with the exact
2-D rule to ~1e-14.

The degrees come from probes against fresh midpoints, and the finished table is accepted
only if it reproduces fresh node values at random points of its domain to ``RTOL`` of
the largest |F| (|G|) there, or if no degree does, to ``RTOL_LAST`` (:func:`build`);
otherwise the layer keeps the exact rule.
At large q the functions change over theta ~ 1/sqrt(q) near 0, and theta is split into
panels graded towards 0.  A pair then costs (N_theta + 1)(N_s + 1) multiply-adds:
W_i[k, b] = sum_a C[p, k, a, b] T_a(x_i) once per row input and panel p, then
F = sum_k T_k(t) sum_b W_i[k, b] T_b(x_j).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import scipy.fft
from numba import prange

from ..core.functions import K_ELU

RTOL = 1e-13
# Degrees tried (Lobatto intervals) in theta and in s = sqrt(q).
NT_LADDER = (8, 12, 16, 24, 32, 48, 64, 96, 128)
NS_LADDER = (2, 3, 4, 6, 8, 12, 16, 24)
N_CHECK = 48  # random points at which a finished table is checked
PANEL_RATIO = 4.0  # graded panels in theta: each this much wider than the last
NT_ONE_PANEL = 32  # above this degree on one panel, graded panels are tried too
RETRIES = 2
# When no rung reaches RTOL (measured: ELU past its unbounded point, s = sqrt(q) > ~4000,
# where the best tables miss by 1.1 RTOL in the first graded panel), the table closest
# to it is still used if it reproduces the check points to this: 1e3 below the 1e-9 the
# kernels of activations without a closed form are held to, where the exact rule it
# would leave the layer to costs ~10 ms a pair.
RTOL_LAST = 1e-12
# Relative spread of s below which the table is constant in s: a pair's q then moves
# F by < 1e-15 relative.
S_FLAT = 1e-15
HEAD = 6  # header: N_theta, N_s, theta_max, s mid, s half-width, panels P
GL_X, GL_W = np.polynomial.legendre.leggauss(12)
ZMAX = 9.0  # past |z| = 9 the Gaussian weight (< 1e-18) times phi^2 leaves < 1e-16
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_EMPTY = np.empty(0)


def applies(act) -> bool:
    """True for the activations this table is built for (the ELU family: elu, selu)."""
    return int(act.kind) == K_ELU


@nb.njit(cache=True)
def _tilted_tail(r, tau):
    """exp(r tau + tau^2 / 2) Phi(-(r + tau)) without overflow (both factors may be
    out of range on their own): with y = (r + tau)/sqrt(2) >= 0 it equals
    erfcx(y) exp(-r^2 / 2) / 2, and past y = 26, where erfc underflows, erfcx comes from
    its asymptotic series (8 terms: < 1e-16 relative there)."""
    y = (r + tau) / _SQRT2
    if y < 26.0:
        # y < 0: r tau + tau^2/2 < -tau^2/2 <= 0; 0 <= y < 26: the exponent is
        # y^2 - r^2/2 < 676 while erfc(y) > 1e-296, so the product is representable.
        return 0.5 * math.erfc(y) * math.exp(r * tau + 0.5 * tau * tau)
    iy2 = 1.0 / (2.0 * y * y)
    s = 1.0
    t = 1.0
    for n in range(1, 8):
        t *= -(2 * n - 1) * iy2
        s += t
    return 0.5 * s * _INV_SQRT_PI / y * math.exp(-0.5 * r * r)


@nb.njit(cache=True)
def _conditional(a, b, s2, c, sg, z):
    """(E[phi(v) | z1 = z], E[phi'(v) | z1 = z]), v = s2 (c z + sg z2), phi ELU(alpha=a) x b."""
    if sg == 0.0:
        x = s2 * c * z
        if x > 0.0:
            return b * x, b
        e = math.expm1(x)
        return b * a * e, b * a * (e + 1.0)
    tau = s2 * sg
    r = c * z / sg
    P = 0.5 * math.erfc(-r / _SQRT2)
    Q = 0.5 * math.erfc(r / _SQRT2)
    e1 = _tilted_tail(r, tau)
    m = b * (r * tau * P + tau * _INV_SQRT_2PI * math.exp(-0.5 * r * r)) + b * a * (e1 - Q)
    return m, b * P + b * a * e1


@nb.njit(cache=True)
def node(a, b, s1, s2, theta):
    """(F, G) = (E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for u = s1 z1, v = s2 w,
    corr(z1, w) = cos(theta), phi the ELU family (alpha = a, scale lam = b); s1, s2 > 0."""
    c = math.cos(theta)
    sg = math.sin(theta) if 0.0 < theta < math.pi else 0.0
    if theta >= math.pi:
        c = -1.0
    # First panel: the narrowest feature at z = 0 (conditional mean over tan(theta), the
    # exponential pieces over 1/s); panels then double up to width 1, then unit panels.
    h = min(1.0, 1.0 / s1)
    if c != 0.0:
        h = min(h, 1.0 / (s2 * abs(c)))
        if sg > 0.0:
            h = min(h, sg / abs(c))
    F = 0.0
    G = 0.0
    for side in (1.0, -1.0):
        lo = 0.0
        hi = h
        while lo < ZMAX:
            mid = 0.5 * (lo + hi)
            hw = 0.5 * (hi - lo)
            for k in range(GL_X.shape[0]):
                z = side * (mid + hw * GL_X[k])
                w = hw * GL_W[k] * _INV_SQRT_2PI * math.exp(-0.5 * z * z)
                m, mp = _conditional(a, b, s2, c, sg, z)
                x = s1 * z
                if x > 0.0:
                    p = b * x
                    dp = b
                else:
                    e = math.expm1(x)
                    p = b * a * e
                    dp = b * a * (e + 1.0)
                F += w * p * m
                G += w * dp * mp
            lo = hi
            hi = min(ZMAX, 2.0 * hi if hi < 1.0 else hi + 1.0)
    return F, G


@nb.njit(cache=True, parallel=True)
def _nodes(a, b, s1, s2, th, out):
    for k in prange(s1.shape[0]):
        out[k, 0], out[k, 1] = node(a, b, s1[k], s2[k], th[k])


def _lobatto(n):
    return np.cos(np.pi * np.arange(n + 1) / n) if n > 0 else np.zeros(1)


def _midpoints(n):
    return np.cos(np.pi * (2 * np.arange(n) + 1) / (2 * n))


def _coef(v, axis):
    """Chebyshev coefficients along ``axis`` of values at Lobatto nodes (DCT-I)."""
    n = v.shape[axis] - 1
    if n == 0:
        return v.copy()
    c = scipy.fft.dct(v, type=1, axis=axis) / n
    head = [slice(None)] * v.ndim
    head[axis] = 0
    c[tuple(head)] *= 0.5
    head[axis] = -1
    c[tuple(head)] *= 0.5
    return c


def _cheb(x, n):
    """T_m(x_p), m <= n, as an (n + 1, len(x)) array."""
    return np.cos(np.arange(n + 1)[:, None] * np.arccos(np.clip(x, -1.0, 1.0))[None, :])


def _sym_values(a, b, th, s):
    """F, G at every (th_k, s_p, s_q), computed for p <= q and mirrored (F is symmetric
    in the two variances): shape (2, len(th), len(s), len(s))."""
    iu, ju = np.triu_indices(s.size)
    T = np.repeat(th, iu.size)
    out = np.empty((T.size, 2))
    _nodes(a, b, np.tile(s[iu], th.size), np.tile(s[ju], th.size), T, out)
    V = np.empty((2, th.size, s.size, s.size))
    V[:, :, iu, ju] = out.T.reshape(2, th.size, iu.size)
    V[:, :, ju, iu] = V[:, :, iu, ju]
    return V


def _pairs(a, b, th, s1, s2):
    """F, G at the points (th_k, s1_k, s2_k): shape (2, len(th))."""
    out = np.empty((th.size, 2))
    _nodes(a, b, np.asarray(s1, dtype=np.float64), np.asarray(s2, dtype=np.float64),
           np.asarray(th, dtype=np.float64), out)
    return out.T


def _misfit(exact, approx, ref):
    """The largest |approx - exact| of F (of G) in units of RTOL times the largest |F|
    (|G|) of ``ref``: at most 1 when approx matches to RTOL."""
    scale = RTOL * np.max(np.abs(ref).reshape(2, -1), axis=1)
    err = np.max(np.abs(approx - exact).reshape(2, -1), axis=1)
    return float(np.max(np.where(err == 0.0, 0.0, err / np.maximum(scale, 1e-300))))


def _fits(exact, approx, ref):
    """True when approx matches exact to RTOL of the largest |F| (|G|) of ``ref``."""
    return _misfit(exact, approx, ref) <= 1.0


def _panel_edges(theta_max, s_hi, graded):
    """Panel edges in theta: one panel, or (``graded``) panels growing by PANEL_RATIO from
    a first one of width ~2 / s_hi, where the functions change over ~1 / s."""
    if not graded:
        return np.array([0.0, theta_max])
    P = 1 + max(1, math.ceil(math.log(theta_max * s_hi / 2.0) / math.log(PANEL_RATIO)))
    e1 = theta_max / PANEL_RATIO ** (P - 1)
    return np.concatenate([[0.0], e1 * PANEL_RATIO ** np.arange(P - 1), [theta_max]])


def _theta_degree(a, b, edges, s_probe):
    """The first N of NT_LADDER whose 1-D interpolant in theta reproduces the midpoints on
    every panel, at the probe variances (pairs of s); 0 if none."""
    for n in NT_LADDER:
        t, tm = _lobatto(n), _midpoints(n)
        ok = True
        for lo, hi in zip(edges[:-1], edges[1:]):
            for s1, s2 in s_probe:
                th = lo + 0.5 * (hi - lo) * (1.0 + np.concatenate([t, tm]))
                v = _pairs(a, b, th, np.full(th.size, s1), np.full(th.size, s2))
                approx = np.einsum("fk,kp->fp", _coef(v[:, :n + 1], 1), _cheb(tm, n))
                ok = ok and _fits(v[:, n + 1:], approx, v)
                if not ok:
                    break
            if not ok:
                break
        if ok:
            return n
    return 0


def _s_degree(a, b, th_probe, mid, half):
    """The first M of NS_LADDER whose tensor interpolant in (s1, s2) reproduces the
    midpoint grid at the probe angles; 0 if none."""
    for m in NS_LADDER:
        x, xm = _lobatto(m), _midpoints(m)
        V = _sym_values(a, b, th_probe, mid + half * x)
        Vm = _sym_values(a, b, th_probe, mid + half * xm)
        C = _coef(_coef(V, 2), 3)
        Tm = _cheb(xm, m)
        approx = np.einsum("fkab,ap,bq->fkpq", C, Tm, Tm)
        if _fits(Vm, approx, V):
            return m
    return 0


def build(act, s_points, theta_max, max_nodes, seed=0):
    """The table of one depth as one flat vector (empty when it cannot be built within
    ``max_nodes`` node values or its check fails).

    One Chebyshev panel in theta, or where that does not converge (large q: the functions
    change over theta ~ 1/sqrt(q) near 0), panels graded geometrically towards 0, each
    with the same degree.  The degree in theta comes from 1-D probes at the extreme
    variances on every panel, the degree in s from 2-D probes at a few angles (each the
    first of a ladder that reproduces fresh midpoints to ``RTOL``); the full table is then
    checked at ``N_CHECK`` random points of its domain (half of them log-uniform in theta)
    against fresh node values, and accepted only if every one agrees to ``RTOL`` of the
    largest |F| (|G|) there (else one rung more, ``RETRIES`` times; if none does, the
    closest of them if it agrees to ``RTOL_LAST``).

    Parameters
    ----------
    act : Activation
        An activation for which :func:`applies`.
    s_points : ndarray
        sqrt(q_i) of every input at this depth (> 0).
    theta_max : float
        The table covers theta in [0, theta_max] (<= pi).
    max_nodes : int
        Node budget of the full table (each node a 1-D quadrature of ~20 us).
    seed : int
        Seed of the random check points.

    Returns
    -------
    ndarray
        ``[N_theta, N_s, theta_max, s_mid, s_half, P, edges (P + 1), C]``, C the
        (P, 2, N_theta + 1, N_s + 1, N_s + 1) Chebyshev coefficients of F and G per panel.
    """
    if s_points.size == 0 or not np.all(np.isfinite(s_points)) or s_points.min() <= 0.0:
        return _EMPTY
    a, b = float(act.params[0]), float(act.params[1])
    lo, hi = float(s_points.min()), float(s_points.max())
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    flat = half <= S_FLAT * hi
    probe = [(mid, mid)] if flat else [(lo, lo), (lo, hi), (hi, hi)]
    edges = _panel_edges(theta_max, hi, False)
    nt = _theta_degree(a, b, edges, probe)
    if (nt == 0 or nt > NT_ONE_PANEL) and theta_max * hi > 2.0 * PANEL_RATIO:
        # Fewer nodes in all if the graded panels need a lower degree each.
        graded = _panel_edges(theta_max, hi, True)
        ng = _theta_degree(a, b, graded, probe)
        if ng and (nt == 0 or (graded.size - 1) * (ng + 1) < nt + 1):
            edges, nt = graded, ng
    if nt == 0:
        return _EMPTY
    P = edges.size - 1
    ns = 0
    if not flat:
        ns = _s_degree(a, b, np.unique([0.0, edges[1], edges[P // 2 + 1], theta_max]), mid, half)
        if ns == 0:
            return _EMPTY
    rng = np.random.default_rng(seed)
    th = theta_max * rng.uniform(0.0, 1.0, N_CHECK)
    if P > 1:
        th[::2] = edges[1] * (theta_max / edges[1]) ** rng.uniform(-0.5, 1.0, th[::2].size)
    th = np.minimum(th, theta_max)
    s1, s2 = rng.uniform(lo, hi, (2, N_CHECK))
    exact = _pairs(a, b, th, s1, s2)
    # A probe that passes at the edge of RTOL may leave the full table just short of it:
    # then one rung more in each direction, RETRIES times at most.
    best = (math.inf, _EMPTY)
    for _ in range(1 + RETRIES):
        if P * (nt + 1) * (ns + 1) * (ns + 2) // 2 > max_nodes:
            break
        tab = _table(a, b, nt, ns, edges, mid, half)
        W = np.empty((P, 2, nt + 1, ns + 1))
        ready = np.zeros(P, dtype=np.bool_)
        tb = np.empty(ns + 1)
        approx = np.empty_like(exact)
        for p in range(N_CHECK):
            ready[:] = False
            approx[:, p] = evaluate(tab, W, ready, tb, s1[p], s2[p], math.cos(th[p]))
        m = _misfit(exact, approx, exact)
        if m <= 1.0:
            return tab
        prev = best[0]
        best = min(best, (m, tab), key=lambda b: b[0])
        if m * RTOL <= RTOL_LAST and prev <= 2.0 * m:
            break  # a rung more did not halve the error: it is at its floor
        nt = _next(NT_LADDER, nt)
        ns = _next(NS_LADDER, ns) if ns else 0
        if nt == 0 or (ns == 0 and not flat):
            break
    return best[1] if best[0] * RTOL <= RTOL_LAST else _EMPTY


def _next(ladder, n):
    """The rung after n, 0 past the top."""
    up = [m for m in ladder if m > n]
    return up[0] if up else 0


def _table(a, b, nt, ns, edges, mid, half):
    """Node values on each panel's Lobatto grids and their tensor Chebyshev coefficients,
    packed with the header."""
    t, x = _lobatto(nt), _lobatto(ns)
    C = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        V = _sym_values(a, b, lo + 0.5 * (hi - lo) * (1.0 + t), mid + half * x)
        C.append(_coef(_coef(_coef(V, 1), 2), 3).reshape(-1))
    P = edges.size - 1
    head = [nt, ns, edges[-1], mid, half if ns else 1.0, P]
    return np.concatenate([head, edges] + C)


def dims(tab):
    """(N_theta, N_s, panels) of a table, (0, 0, 0) for an empty one (or a zero-padded
    plan row)."""
    return (int(tab[0]), int(tab[1]), int(tab[5])) if tab.size and tab[0] > 0 else (0, 0, 0)


@nb.njit(cache=True)
def _row_weights(tab, p, s, W):
    """W[f, k, b] = sum_a C_f[p, k, a, b] T_a(x(s)) on panel p: the row input's part."""
    nt = int(tab[0])
    ns = int(tab[1])
    P = int(tab[5])
    x = min(1.0, max(-1.0, (s - tab[3]) / tab[4]))
    n1 = ns + 1
    size = (nt + 1) * n1 * n1
    ta = np.empty(n1)
    ta[0] = 1.0
    if ns > 0:
        ta[1] = x
    for m in range(2, n1):
        ta[m] = 2.0 * x * ta[m - 1] - ta[m - 2]
    for f in range(2):
        base = HEAD + P + 1 + (2 * p + f) * size
        for k in range(nt + 1):
            for bb in range(n1):
                W[f, k, bb] = 0.0
            for aa in range(n1):
                off = base + (k * n1 + aa) * n1
                w = ta[aa]
                for bb in range(n1):
                    W[f, k, bb] += w * tab[off + bb]


@nb.njit(cache=True)
def evaluate(tab, W, ready, tb, si, sj, c):
    """(F, G) of a pair (s_i, s_j, c), theta = arccos c <= theta_max.  W (P, 2, N_theta + 1,
    N_s + 1) holds the row input's weights per panel, computed on first use (``ready``);
    tb is work space of length N_s + 1."""
    nt = int(tab[0])
    ns = int(tab[1])
    P = int(tab[5])
    th = math.acos(c)
    p = 0
    while p < P - 1 and th > tab[HEAD + p + 1]:
        p += 1
    lo = tab[HEAD + p]
    hi = tab[HEAD + p + 1]
    if not ready[p]:
        _row_weights(tab, p, si, W[p])
        ready[p] = True
    x = min(1.0, max(-1.0, (sj - tab[3]) / tab[4]))
    t = min(1.0, max(-1.0, 2.0 * (th - lo) / (hi - lo) - 1.0))
    tb[0] = 1.0
    if ns > 0:
        tb[1] = x
    for m in range(2, ns + 1):
        tb[m] = 2.0 * x * tb[m - 1] - tb[m - 2]
    Wp = W[p]
    # Clenshaw in t over u_k = sum_b W[f, k, b] T_b(x), for F and G together.
    b1f = 0.0
    b2f = 0.0
    b1g = 0.0
    b2g = 0.0
    for k in range(nt, 0, -1):
        uf = 0.0
        ug = 0.0
        for m in range(ns + 1):
            uf += Wp[0, k, m] * tb[m]
            ug += Wp[1, k, m] * tb[m]
        nf = 2.0 * t * b1f - b2f + uf
        ng = 2.0 * t * b1g - b2g + ug
        b2f = b1f
        b1f = nf
        b2g = b1g
        b1g = ng
    uf = 0.0
    ug = 0.0
    for m in range(ns + 1):
        uf += Wp[0, 0, m] * tb[m]
        ug += Wp[1, 0, m] * tb[m]
    return t * b1f - b2f + uf, t * b1g - b2g + ug


@nb.njit(cache=True)
def row_in_tile(tab, sqi, sqc, cv, skip, out, use):
    """The table's (F, G) for the pairs (i, j_t) of a tile row with ``skip[t]`` False
    and theta = arccos c within the table, written to out[0, t], out[1, t] with
    ``use[t]`` True; returns how many.  sqi = sqrt(q_i), sqc[t] = sqrt(q_j)."""
    mm = cv.shape[0]
    n = 0
    if tab.shape[0] == 0 or tab[0] == 0.0:
        for t in range(mm):
            use[t] = False
        return 0
    nt, ns, P = int(tab[0]), int(tab[1]), int(tab[5])
    cmin = math.cos(tab[2])
    W = np.empty((0, 2, nt + 1, ns + 1))
    ready = np.zeros(P, dtype=np.bool_)
    tb = np.empty(ns + 1)
    for t in range(mm):
        use[t] = (not skip[t]) and cv[t] >= cmin
        if use[t]:
            if W.shape[0] == 0:
                W = np.empty((P, 2, nt + 1, ns + 1))
            out[0, t], out[1, t] = evaluate(tab, W, ready, tb, sqi, sqc[t], cv[t])
            n += 1
    return n
