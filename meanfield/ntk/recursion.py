"""The layer-by-layer NNGP/NTK recursion on blocks of a point set (docs/theory.md,
"Kernels on a data set (NNGP and NTK, NTK parameterization)").

For inputs Z (n x d), with sw2 = sigma_w^2 and sb2 = sigma_b^2 *variances*::

    Sigma^1(x, x') = sw2 x.x'/d + sb2,                       Theta^1 = Sigma^1
    Sigma^{l+1}    = sw2 E_{(u,v)~N(0,Lambda^l)}[phi(u) phi(v)] + sb2
    Sigmadot^{l+1} = sw2 E_{(u,v)~N(0,Lambda^l)}[phi'(u) phi'(v)]
    Theta^{l+1}    = Sigma^{l+1} + Sigmadot^{l+1} * Theta^l            (entrywise)

with Lambda^l the 2x2 covariance [[Sigma^l(x,x), Sigma^l(x,x')], [., Sigma^l(x',x')]].

How the expectations are computed
---------------------------------
* Inputs of unequal norms: every pair keeps its full 2x2 covariance.  Closed forms for
  the ReLU family (arc-cosine kernel), erf, gelu, linear and sin.  Otherwise per-input
  Hermite expansions (:mod:`meanfield.core.gaussian.hermite`): at each depth every point
  gets the coefficients a_n(q_i), b_n(q_i) of phi(sqrt(q_i) z) and phi'(sqrt(q_i) z)
  from one 1-D quadrature, and a pair's E[phi phi], E[phi' phi'] are Mehler sums
  sum_n a_n(q_i) a_n(q_j) c^n, truncated at the first order N of ``hermite.LADDER`` whose
  Cauchy-Schwarz tail bound |c|^(N+1) sqrt(T_i T_j) is below ``hermite.RTOL`` relative
  to the pair's scale.  For activations with closed-form derivatives of every order (the
  logistic family) the Taylor series about c = 1 (:mod:`meanfield.ntk.taylor`: its
  coefficients are 1-D integrals at c = 1, interpolated in the two variances, with a
  Lagrange remainder bound) goes first, and the blocks go through the layers together:
  a layer where it takes every pair (checked from the blocks' largest (1 - c) sqrt(q_i q_j),
  :func:`taylor.covers`) computes no Hermite coefficients.  Pairs that no order of the
  ladder takes (c near +-1 with slowly decaying coefficients) take, for the ELU family
  (a kink only at 0, entire pieces), a Chebyshev table in the angle arccos c and the two
  variances
  (:mod:`meanfield.ntk.angular`, checked per depth, ``pairs_angular_table``); and where
  none applies, the exact 2-D quadrature (:func:`meanfield.core.gaussian.moments.pair`),
  counted in the dataset attribute ``pairs_exact_fallback``.
* All inputs of one norm (|x|^2/d equal to 1e-13 relative): at every depth all pairs
  share one variance q^l and each pair is described by eps = 1 - c, carried directly so
  that nearly equal inputs keep their digits.  Closed forms as above; for smooth
  activations without one, a Chebyshev interpolant in c of Delta(c)/(1 - c) and
  E[phi'(u) phi'(v)](c) per depth, with Delta = E phi^2 - E phi(u)phi(v), built on
  Chebyshev-Lobatto nodes c_k = cos(pi k / N) (each node a 2-D quadrature accurate to
  ~1e-15), N doubled until the interpolant reproduces the new nodes to ``CHEB_RTOL``;
  kinked activations use the 2-D rule per pair, except the ELU family, which takes the
  per-pair path above (its angular table is ~1e4 times faster than that rule).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from ..core.activation import Activation
from ..core.functions import CF_NONE
from ..core.gaussian import closed
from ..core.gaussian import hermite
from ..core.gaussian.moments import moments1
from . import angular
from . import blocks as K
from . import taylor
from .gram import gram, refine_eps
from .plan import layer_plan
from .tiles import pair_extremes

# Relative agreement between the norms |x|^2/d for the shared-norm path: treating norms
# that differ by this much as equal perturbs q^1 by less than the 1e-12 accuracy target.
SHARED_NORM_RTOL = 1e-13
# The Chebyshev interpolant must reproduce freshly computed nodes to this relative
# accuracy (against the largest value of each function) before it is used; the node
# values themselves are accurate to ~1e-15 (docs/theory.md, "Numerics").
CHEB_RTOL = 1e-13
CHEB_N0 = 16
CHEB_NMAX = 4096
# Node budget of an angular table per layer: each node (a 1-D quadrature, ~20 us) saves
# exact 2-D rules (~2-10 ms each) for ELU pairs near c = 1; no more than this many per
# pair of the point set, and never more than ANGULAR_NODES_MAX (~1 s on one core).
ANGULAR_NODES_PER_PAIR = 100
ANGULAR_NODES_MAX = 50000
# With a progress callback, Recursion.compute reports about this often (seconds).
PROGRESS_SECONDS = 0.5

_EMPTY = np.empty(0)
_EMPTY2 = np.empty((0, 0))
_EMPTY3 = np.empty((0, 0, 0))


class Block:
    """One rectangular block Z[rows] x Z[cols] of the kernel (symmetric if rows == cols)."""

    def __init__(self, rows, cols, sym, sig1, eps1):
        self.rows, self.cols, self.sym = rows, cols, sym
        self.sig = sig1
        self.th = sig1.copy()
        self.eps = eps1 if eps1 is not None else np.empty((0, 0))

    @property
    def state(self) -> K.BlockState:
        return K.BlockState(self.sig, self.th, self.eps)


@dataclass(frozen=True)
class LayerStep:
    """What one layer l -> l + 1 needs, computed once for all blocks.

    Attributes
    ----------
    mode : int
        ``MODE_*`` of :mod:`meanfield.ntk.blocks` for this layer.
    q, q_next : float
        Shared variance at depth l and l + 1 (NaN without a shared norm).
    m_phi2 : float
        E phi^2 at q (shared norm).
    coef1, coef2 : ndarray
        Closed-form constants, or Chebyshev coefficients of Delta/(1 - c) and E phi'phi';
        in MODE_GENERAL_HERMITE ``coef1`` is the Taylor table of the layer
        (:func:`meanfield.ntk.taylor.build_table`, empty without one), kept in this
        per-layer vector so that every path that stores or restricts steps keeps it.
    q_points, q_points_next : ndarray
        Per-point variances at depth l and l + 1 (unequal norms).
    herm_a, herm_b, herm_tau, herm_fg : ndarray
        Per-point Hermite data (MODE_GENERAL_HERMITE, see
        :func:`meanfield.core.gaussian.hermite.coefficients`): a_n, b_n (N + 1, n), tails
        (n, 2, len(LADDER)), exact (E phi^2, E phi'^2) (n, 2).
    """

    mode: int
    q: float
    q_next: float
    m_phi2: float
    coef1: np.ndarray
    coef2: np.ndarray
    q_points: np.ndarray
    q_points_next: np.ndarray
    herm_a: np.ndarray = field(default_factory=lambda: _EMPTY2)
    herm_b: np.ndarray = field(default_factory=lambda: _EMPTY2)
    herm_tau: np.ndarray = field(default_factory=lambda: _EMPTY3)
    herm_fg: np.ndarray = field(default_factory=lambda: _EMPTY2)


def _cheb_coef(v):
    """Chebyshev coefficients of the interpolant through v_k at x_k = cos(pi k / N)."""
    N = v.size - 1
    c = scipy.fft.dct(v, type=1) / N
    c[0] *= 0.5
    c[-1] *= 0.5
    return c


class Recursion:
    """Drives the per-layer Numba kernel over one or more blocks of a point set Z.

    ``qz`` holds Sigma^1(z, z) for every point, ``shared`` says whether they are all
    equal (then ``q`` is that value and each block carries eps = 1 - c).
    """

    def __init__(self, act: Activation, sw2, sb2, qz, shared, blocks, hermite_series=True):
        self.act, self.sw2, self.sb2 = act, float(sw2), float(sb2)
        self.rec = act.record
        self.qz = np.ascontiguousarray(qz, dtype=np.float64)
        # Shared norms with a kinked phi would take the 2-D rule per pair (~2 ms); for the
        # ELU family the per-pair path with its angular table is ~1e4 times faster.
        self.shared = bool(shared) and not (hermite_series and angular.applies(act))
        self.q = float(self.qz[0]) if self.shared else math.nan
        self.blocks = blocks
        # Pairs whose expectations each layer needs: an interpolant with more nodes than
        # this costs more 2-D quadratures than computing every pair directly.
        self.n_pairs = sum(b.rows.size * b.cols.size // (2 if b.sym else 1) for b in blocks)
        self.cheb_nodes = []  # Chebyshev nodes used per depth (shared smooth path)
        self.modes_used = set()
        self.warned = False
        self.fallback_pairs = 0  # pairs x layers computed by the exact rule (Hermite mode)
        self.taylor_pairs = 0  # pairs x layers computed by the Taylor series about c = 1
        self.angular_pairs = 0  # pairs x layers computed by the angular table (ELU family)
        self.hermite_terms = []  # Hermite orders N per depth (Hermite mode)
        if not self.shared:
            if act.closed_form != CF_NONE:
                self.mode = K.MODE_GENERAL_CLOSED
            elif hermite_series:
                self.mode = K.MODE_GENERAL_HERMITE
            else:
                self.mode = K.MODE_GENERAL
        elif act.closed_form != CF_NONE:
            self.mode = K.MODE_SHARED_CLOSED
        elif len(act.kinks) == 0:
            self.mode = K.MODE_SHARED_CHEB
        else:
            self.mode = K.MODE_SHARED_QUAD
        # With a Taylor or an angular table, all blocks go through the layers together, so
        # that a layer skips what none of its pairs needs: the Hermite coefficients where
        # the Taylor table takes every pair, the angular table where the Mehler series
        # does (see _general_step).  Without blocks (the layer table of a kernel store,
        # meanfield.ntk.blocked) the pairs are unknown and every layer keeps both.
        self.layer_major = (self.mode == K.MODE_GENERAL_HERMITE and len(blocks) > 0
                            and (act.derivatives is not None or angular.applies(act)))
        self.hermite_skipped = 0  # layers whose Taylor table took every pair
        self.angular_skipped = 0  # layers whose Mehler series took every pair (ELU family)

    def extra_attrs(self):
        """Method-specific global attributes of a kernel dataset."""
        if self.mode != K.MODE_GENERAL_HERMITE:
            return {}
        out = {"pairs_exact_fallback": int(self.fallback_pairs),
               "hermite_terms_max": int(max(self.hermite_terms, default=0))}
        if angular.applies(self.act):
            out["pairs_angular_table"] = int(self.angular_pairs)
        return out

    @property
    def method(self):
        """How the expectations were computed (every method some layer used)."""
        names = {K.MODE_GENERAL: "per-pair covariance: 2-D quadrature",
                 K.MODE_GENERAL_CLOSED: "per-pair covariance: closed form",
                 K.MODE_GENERAL_HERMITE: ("per-pair covariance: per-input Hermite (Mehler) "
                                          "series, " + ("Taylor series about c = 1 and "
                                                        if self.act.derivatives else "")
                                          + ("Chebyshev table in the angle arccos c and "
                                             if angular.applies(self.act) else "")
                                          + "exact 2-D quadrature where its bound is not met"),
                 K.MODE_SHARED_CLOSED: "shared norm: closed form",
                 K.MODE_SHARED_CHEB: "shared norm: Chebyshev interpolant in c of 2-D quadratures",
                 K.MODE_SHARED_QUAD: "shared norm: 2-D quadrature per pair"}
        return "; ".join(names[m] for m in sorted(self.modes_used or {self.mode}))

    # -- shared-norm helpers
    def _moments_at_one(self, q):
        """(E phi^2, E phi'^2) at variance q, from the same routine the pairs use."""
        if self.act.closed_form != CF_NONE:
            D, _, Dp = closed.equal_variance(self.rec, q, 0.0)
            return D, Dp
        m = moments1(self.rec, q, _EMPTY, False)
        return m.phi2, m.dphi2

    def _node_values(self, q, theta):
        eps = 2.0 * np.sin(0.5 * theta) ** 2
        out = np.empty((theta.size, 3))
        K.node_moments(self.rec, q, eps, out)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = out[:, 1] / eps
        return g, out[:, 2]

    def _chebyshev(self, q, m_dphi2, n_max):
        """Coefficients of g(c) = Delta(c)/(1 - c) and Dp(c) on [-1, 1] with at most
        ``n_max`` nodes, or None."""
        N = CHEB_N0
        theta = np.pi * np.arange(N + 1) / N
        g, dp = self._node_values(q, theta)
        g[0] = q * m_dphi2  # Delta/(1 - c) -> dE[phi phi]/dc = q E phi'^2 at c = 1
        while N < n_max:
            cg, cp = _cheb_coef(g), _cheb_coef(dp)
            tnew = np.pi * (2 * np.arange(N) + 1) / (2 * N)
            gn, dpn = self._node_values(q, tnew)
            xn = np.cos(tnew)
            eg = np.max(np.abs(np.polynomial.chebyshev.chebval(xn, cg) - gn))
            ep = np.max(np.abs(np.polynomial.chebyshev.chebval(xn, cp) - dpn))
            g2 = np.empty(2 * N + 1)
            d2 = np.empty(2 * N + 1)
            g2[0::2], g2[1::2] = g, gn
            d2[0::2], d2[1::2] = dp, dpn
            g, dp, N = g2, d2, 2 * N
            if (eg <= CHEB_RTOL * max(np.max(np.abs(g)), 1e-300)
                    and ep <= CHEB_RTOL * max(np.max(np.abs(dp)), 1e-300)):
                self.cheb_nodes.append(N + 1)
                return _cheb_coef(g), _cheb_coef(dp)
        return None

    def _shared_step(self, q):
        """The layer from the shared variance q to the next."""
        m_phi2, m_dphi2 = self._moments_at_one(q)
        q_next = self.sw2 * m_phi2 + self.sb2
        mode, c1, c2 = self.mode, _EMPTY, _EMPTY
        if mode == K.MODE_SHARED_CLOSED:
            c1 = closed.shared_constants(self.rec, q)
        elif mode == K.MODE_SHARED_CHEB and q > 0.0:
            coef = self._chebyshev(q, m_dphi2, min(CHEB_NMAX, self.n_pairs))
            if coef is None:
                if not self.warned and self.n_pairs > CHEB_NMAX:
                    warnings.warn(f"{self.act.name}: Chebyshev interpolant did not reach "
                                  f"{CHEB_RTOL:g} with {CHEB_NMAX} nodes at q = {q:g}; "
                                  "using the 2-D rule per pair (slower, same accuracy)",
                                  RuntimeWarning, stacklevel=5)
                    self.warned = True
                mode = K.MODE_SHARED_QUAD
            else:
                c1, c2 = coef
        elif mode == K.MODE_SHARED_CHEB:
            mode = K.MODE_SHARED_QUAD  # q = 0: moments2 handles it without nodes
        return LayerStep(mode, q, q_next, m_phi2, c1, c2, self.qz, self.qz)

    def _general_step(self, qz, reach=None):
        """The layer from the per-point variances qz to the next.

        ``reach`` (layer-major runs): (xmax, cmax), the largest (1 - c) sqrt(q_i q_j) and
        the largest |c| over the pairs of every block at this depth.  When the layer's
        Taylor table meets its bound for every pair up to xmax (:func:`taylor.covers`),
        no pair can reach the Mehler sums and their coefficients (the costliest part of a
        step) are not computed; when the Mehler series meets its bound for every |c| up to
        cmax, no pair reaches the angular table and it is not built.
        """
        if self.mode == K.MODE_GENERAL_HERMITE:
            n = qz.size
            xmax, cmax = reach if reach is not None else (None, None)
            if xmax is not None and self.act.derivatives is not None:
                fg = np.empty((n, 2))
                hermite.exact_moments(self.rec, qz, fg)
                tab = taylor.build_table(self.act, qz, fg[:, 0], fg[:, 1])
                if tab.size and taylor.covers(tab, qz, fg, xmax):
                    self.hermite_skipped += 1
                    self.hermite_terms.append(0)
                    tau = np.full((n, 2, hermite.LADDER.size), np.inf)
                    return LayerStep(self.mode, self.q, 0.0, 0.0, tab, _EMPTY, qz,
                                     self.sw2 * fg[:, 0] + self.sb2, np.zeros((1, n)),
                                     np.zeros((1, n)), tau, fg)
            # With closed-form derivatives the Taylor series takes the pairs near c = 1, but
            # only once |x| = (1 - c) sqrt(q_i q_j) is small (its remainder grows like
            # K! (|x| / pi^2)^K for the logistic family); the longest series of the ladder
            # covers the layers in between (measured, softplus at (2, 0.05): N = 64 leaves
            # every pair of depths 5-8 to the exact rule, N = 128 none).
            N = hermite.LADDER[-1] if self.act.derivatives is not None else hermite.N_DEFAULT
            A = np.empty((N + 1, n))
            B = np.empty((N + 1, n))
            tau = np.empty((n, 2, hermite.LADDER.size))
            fg = np.empty((n, 2))
            # At N = 128 the default grid reaches |z| = 2 sqrt(N + 1) + 4 = 26.7; by Cramer's
            # inequality (hermite.hermite_grid) the integrand past |z| = 14 is below
            # (sqrt(q) |z| + 1) e^(-z^2 / 4) < 1e-19 for the logistic family (|phi| grows at
            # most linearly), so the shorter grid halves the cost at no loss.
            zmax = 14.0 if N > hermite.N_DEFAULT else None
            hermite.coefficients_fast(self.rec, qz, N, hermite.LADDER, A, B, tau, fg, zmax)
            self.hermite_terms.append(N)
            # sw2 E phi^2 + sb2 from the same value as diag_step: the length map bit for bit.
            qzn = self.sw2 * fg[:, 0] + self.sb2
            if xmax is None or self.act.derivatives is None:
                tab = taylor.build_table(self.act, qz, fg[:, 0], fg[:, 1])
            return LayerStep(self.mode, self.q, 0.0, 0.0, tab, self._angular(qz, N, tau, cmax),
                             qz, qzn, A, B, tau, fg)
        qzn = np.empty_like(qz)
        K.diag_step(self.rec, self.sw2, self.sb2, qz, qzn, np.empty_like(qz))
        return LayerStep(self.mode, self.q, 0.0, 0.0, _EMPTY, _EMPTY, qz, qzn)

    def _reach(self, qz):
        """(xmax, cmax): the largest (1 - c) sqrt(q_i q_j) and |c| over every block's pairs
        at the current depth (``qz`` its variances), widened to cover the rounding of each
        pair's own x and c."""
        sq = np.sqrt(np.maximum(qz, 0.0))
        ext = [pair_extremes(b.sig, sq[b.rows], sq[b.cols], b.sym) for b in self.blocks]
        x = max([e[0] for e in ext] + [0.0])
        c = max([e[1] for e in ext] + [0.0])
        return x * (1.0 + 1e-6) + 1e-12 * float(np.max(qz, initial=0.0)), c + 1e-12

    def _angular(self, qz, N, tau, cmax=None):
        """The angular table of a layer (ELU family), over the angles where some pair may
        miss the Hermite bound; empty when it does not apply or cannot be built, or when
        every pair's |c| is below ``cmax`` < the Mehler bound's reach."""
        if not angular.applies(self.act):
            return _EMPTY
        # Every pair with |c| <= c_m meets the bound at ladder order m (worst inputs).
        c_pass = 0.0
        with np.errstate(divide="ignore", over="ignore"):
            for m, order in enumerate(hermite.LADDER):
                worst = float(np.max(tau[:, :, m]))
                if order <= N and worst > 0.0 and np.isfinite(worst):
                    c_pass = max(c_pass, min(1.0, (hermite.RTOL / worst ** 2) ** (1.0 / (order + 1))))
        if cmax is not None and cmax < c_pass:
            self.angular_skipped += 1
            return _EMPTY
        theta_max = math.pi if c_pass < 0.5 else min(math.pi, 1.02 * math.acos(c_pass))
        budget = min(ANGULAR_NODES_MAX, ANGULAR_NODES_PER_PAIR * self.n_pairs)
        return angular.build(self.act, np.sqrt(qz), theta_max, budget)

    def _step(self, q, qz):
        if self.shared:
            s = self._shared_step(q)
        else:
            s = self._general_step(qz, self._reach(qz) if self.layer_major else None)
        self.modes_used.add(s.mode)
        return s

    def _advance(self, steps, blk, S, T):
        """Run the Numba kernel for the given layers on one block."""
        plan = layer_plan(steps, blk, not self.shared)
        K.advance(self.rec, self.sw2, self.sb2, plan, blk.state, S, T, blk.sym)
        self.fallback_pairs += int(plan.fallback.sum())
        self.taylor_pairs += int(plan.taylor.sum())
        self.angular_pairs += int(plan.angular.sum())

    def compute(self, depth, store, progress=None):
        """Fill ``store`` = [(Sigma (L, nr, nc), Theta (L, nr, nc)) per block] for depths 1..L.

        The scalar (or per-point) length recursion runs first; then one kernel call per
        block goes through all layers tile by tile.  With ``progress`` (a callable taking
        a number of layers done) the layers go in chunks sized to report about every
        PROGRESS_SECONDS; values are the same bit for bit (the block state is carried in
        place from chunk to chunk).
        """
        if self.layer_major:
            for blk, (S, T) in zip(self.blocks, store):
                S[0], T[0] = blk.sig, blk.th
            # Layer by layer: each step looks at the blocks' state (see _general_step).  A
            # layer of this mode costs far more than its tile's trip through memory.
            q, qz = self.q, self.qz
            for l in range(2, depth + 1):
                s = self._step(q, qz)
                for blk, (S, T) in zip(self.blocks, store):
                    self._advance([s], blk, S[l - 1:l], T[l - 1:l])
                    if progress is not None:
                        progress(1)
                q, qz = s.q_next, s.q_points_next
            return
        steps = []
        q, qz = self.q, self.qz
        for _ in range(2, depth + 1):
            s = self._step(q, qz)
            steps.append(s)
            q, qz = s.q_next, s.q_points_next
        for blk, (S, T) in zip(self.blocks, store):
            S[0], T[0] = blk.sig, blk.th
            done = 0
            chunk = len(steps) if progress is None else 1
            while done < len(steps):
                k = min(chunk, len(steps) - done)
                t0 = time.perf_counter()
                self._advance(steps[done:done + k], blk, S[1 + done:1 + done + k],
                              T[1 + done:1 + done + k])
                done += k
                if progress is not None:
                    progress(k)
                    # Many layers per call keep a tile in cache across them (a call per
                    # layer costs 2-3x for erf); grow the chunk to the reporting interval.
                    per_layer = max((time.perf_counter() - t0) / k, 1e-9)
                    chunk = max(1, int(PROGRESS_SECONDS / per_layer))

    def iterate(self, depth):
        """Yield l = 1..depth with every block's ``sig``/``th`` at depth l, updated in place
        (a few n x n arrays whatever the depth)."""
        yield 1
        q, qz = self.q, self.qz
        for l in range(2, depth + 1):
            s = self._step(q, qz)
            for blk in self.blocks:
                self._advance([s], blk, blk.sig[None], blk.th[None])
            q, qz = s.q_next, s.q_points_next
            yield l


def setup(act, sw2, sb2, Z, blocks) -> Recursion:
    """Layer-1 kernels for blocks [(rows, cols, sym)] of the point set Z (n_z x d)."""
    d = Z.shape[1]
    sq = np.einsum("ij,ij->i", Z, Z) / d
    nbar = float(np.mean(sq))
    shared = bool(np.all(np.abs(sq - nbar) <= SHARED_NORM_RTOL * nbar)) and nbar > 0.0
    qz = sw2 * (np.full_like(sq, nbar) if shared else sq) + sb2
    out = []
    for rows, cols, sym in blocks:
        A, B = Z[rows], Z[cols]
        # x.x' in a fixed order per entry (not BLAS): a block of the kernel computed on its
        # own (meanfield.kernels_to_store) then equals the whole kernel's bit for bit.
        G = np.empty((A.shape[0], B.shape[0]))
        gram(A, np.ascontiguousarray(B.T), G)
        sig1 = sw2 * G / d + sb2
        eps1 = None
        if shared:
            # For equal norms 1 - c^1 = sw2 |x - x'|^2 / (2 d q^1): no cancellation.
            scale = sw2 / (d * qz[0])
            eps1 = scale * (0.5 * (sq[rows][:, None] + sq[cols][None, :]) * d - G)
            # Where 1 - c < 1e-2 the Gram form above has lost up to 2 of its digits to
            # cancellation: those pairs are recomputed from x - x' directly.
            refine_eps(A, B, eps1, scale, 1e-2)
            np.clip(eps1, 0.0, 2.0, out=eps1)
            if sym:
                np.fill_diagonal(eps1, 0.0)
                np.fill_diagonal(sig1, qz[0])
        if sym and not shared:
            np.fill_diagonal(sig1, qz[rows])
            sig1 = 0.5 * (sig1 + sig1.T)  # exact already (gram sums x_i.x_j as x_j.x_i)
        out.append(Block(rows, cols, sym, np.ascontiguousarray(sig1), eps1))
    return Recursion(act, sw2, sb2, qz, shared, out)
