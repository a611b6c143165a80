"""Newton's start and steps for the correlation fixed point of a ReLU-like phi at large q.

For phi = ReLU + a localized remainder (silu, softplus), c* sits at eps* = 1 - c* ~ 1/q
once q* exceeds the Hermite table (silu just below sw2 = 2: q* ~ 5e3, eps* ~ 1.5e-4), and
the correlation map's series cannot prove it: :func:`~meanfield.core.correlation_map.solve_c`
polishes by Newton on the 2-D rule, G(eps) = sw2 Delta(eps) / q - eps.  Two facts make
that cheap (docs/theory.md, "Numerics"):

* a start from the map's curvature at c = 1: with Delta = q eps E phi'^2 - (q eps)^2
  E phi''^2 / 2 + ..., G / eps = 0 at eps0 = 2 (chi_1 - 1) / (sw2 q E phi''^2);
* steps in u = sqrt(eps) on H(u) = G / eps, which is nearly linear in u where the map is
  the arc-cosine kernel's.

Neither decides the answer: both only choose where the exact rule is evaluated next, and
convergence is tested on the exact Newton step in eps as for every other phi.
"""

from __future__ import annotations

import math

import numba as nb

from .functions import CF_NONE, phi
from .gaussian.quadrature import GL_W, GL_X, pdf
from .moment_table import HERMITE_LOG10_MAX

# Above the Hermite table's q the series' root is a poor start (eps ~ 20x the root on silu
# at q ~ 5e3) and the 2-D Newton takes the steps of this module.
SQRT_NEWTON_Q = 10.0 ** HERMITE_LOG10_MAX
# E phi''^2 is integrated over |x| <= CURV_X in panels of CURV_PANEL: phi''^2 of a ReLU-like
# built-in decays like x^2 e^-2|x| (below 1e-20 of its peak past 30) and is analytic in the
# strip |Im x| < pi (16-point panels of width 5: error ~1e-14), far more than a start needs.
CURV_X = 30.0
CURV_PANEL = 5.0
CURV_H = 1e-5  # central difference of phi': error ~1e-10 relative, ample for a start


@nb.njit(cache=True)
def relu_like(act, q, rho):
    """True where solve_c's 2-D Newton uses :func:`sqrt_step`: no dropout (G(0) = 0), phi
    without a closed form that grows linearly on exactly one side, and q > SQRT_NEWTON_Q."""
    return (rho == 1.0 and act.family == CF_NONE and q > SQRT_NEWTON_Q
            and math.isfinite(act.slope_pos) and math.isfinite(act.slope_neg)
            and (act.slope_pos == 0.0) != (act.slope_neg == 0.0))


@nb.njit(cache=True)
def sqrt_step(e, G, Gp):
    """Newton step on H(u) = G(eps) / eps in u = sqrt(eps), returned as eps (NaN if undefined).

    Where phi is ReLU plus a localized remainder, for q eps >~ 1 the map is close to the
    arc-cosine kernel's, Delta(eps) / q = eps / 2 - (sin t - t cos t) / (2 pi),
    t = arccos(1 - eps), = eps / 2 - (2 eps)^(3/2) / (6 pi) + ...: H is nearly linear in u,
    while G ~ -eps^(3/2) far above the root, where Newton in eps only divides the distance
    by ~3 per step.  dH/du = (2 / u) (G'(eps) - G / eps) comes from the same evaluation.
    """
    u = math.sqrt(e)
    H = G / e
    Hp = 2.0 / u * (Gp - H)
    if not (Hp != 0.0 and math.isfinite(Hp)):
        return math.nan
    un = u - H / Hp
    if not un > 0.0:
        return math.nan
    return un * un


@nb.njit(cache=True)
def hermite_step(ea, Ga, Gpa, eb, Gb, Gpb):
    """Root, as eps, of the cubic Hermite interpolant in u = sqrt(eps) of H = G / eps through
    two evaluations (eps, G, G') that bracket it (H of opposite signs); NaN otherwise.

    H is smooth in u, so once Newton's first step has crossed the root the interpolant
    carries its curvature too: measured on silu at q = 1e2 .. 7.5e3 (starts from
    :func:`curvature_start`), 1e-12 .. 1e-9 from eps* where Newton from the newer point
    is 1e-7 .. 1e-6 off, so the next evaluation's step is accepted (3 evaluations, not 4).
    """
    if not (ea > 0.0 and eb > 0.0 and ea != eb):
        return math.nan
    Ha = Ga / ea
    Hb = Gb / eb
    if not (Ha * Hb < 0.0):
        return math.nan
    ua = math.sqrt(ea)
    ub = math.sqrt(eb)
    w = ub - ua
    da = 2.0 / ua * (Gpa - Ha) * w  # dH/du, scaled to the interval (t = (u - ua) / w)
    db = 2.0 / ub * (Gpb - Hb) * w
    if not (math.isfinite(da) and math.isfinite(db)):
        return math.nan
    # Newton from the secant on p(t), kept in [0, 1] (a start only: the caller checks the
    # bracket and evaluates there).
    t = Ha / (Ha - Hb)
    for _ in range(20):
        t2 = t * t
        t3 = t2 * t
        p = (2 * t3 - 3 * t2 + 1) * Ha + (t3 - 2 * t2 + t) * da + (-2 * t3 + 3 * t2) * Hb \
            + (t3 - t2) * db
        dp = (6 * t2 - 6 * t) * Ha + (3 * t2 - 4 * t + 1) * da + (-6 * t2 + 6 * t) * Hb \
            + (3 * t2 - 2 * t) * db
        if dp == 0.0:
            return math.nan
        tn = t - p / dp
        if not (0.0 <= tn <= 1.0):
            return math.nan
        if abs(tn - t) <= 1e-15:
            t = tn
            break
        t = tn
    u = ua + t * w
    return u * u


@nb.njit(cache=True)
def curvature_start(act, sw2, q, dphi2):
    """eps0 = 2 (chi_1 - 1) / (sw2 q E[phi''(sqrt(q) z)^2]), chi_1 = sw2 dphi2: the root of
    G(eps) / eps truncated after its linear term in eps (the Taylor series of Delta about
    c = 1, D''(1) = q^2 E phi''^2).  NaN when it is not a usable start (not in (0, 1)).

    A start only: phi'' by a central difference of phi', integrated in x = sqrt(q) z over
    |x| <= CURV_X against the N(0, q) density.  Measured on silu at q = 1e2 .. 7.5e3: within
    10-20 % of eps*, where the series' root is 2-20x off, and the first (most expensive,
    largest-eps) 2-D evaluation is saved.
    """
    chi1 = sw2 * dphi2
    if not (chi1 > 1.0 and q > 0.0):
        return math.nan
    sq = math.sqrt(q)
    npan = int(2.0 * CURV_X / CURV_PANEL)
    half = 0.5 * CURV_PANEL
    acc = 0.0
    for p in range(npan):
        mid = -CURV_X + (p + 0.5) * CURV_PANEL
        for i in range(GL_X.shape[0]):
            x = mid + half * GL_X[i]
            _, d1 = phi(act, x + CURV_H)
            _, d0 = phi(act, x - CURV_H)
            d2 = (d1 - d0) / (2.0 * CURV_H)
            acc += half * GL_W[i] * pdf(x / sq) / sq * d2 * d2
    e0 = 2.0 * (chi1 - 1.0) / (sw2 * q * acc)
    if not (0.0 < e0 < 1.0):
        return math.nan
    return e0
