"""NNGP and NTK kernels of a deep fully connected network on a data set (THEORY.md,
"Kernels on a data set (NNGP and NTK, NTK parameterization)").

For inputs X (n x d), with sw2 = sigma_w^2 and sb2 = sigma_b^2 *variances*::

    Sigma^1(x, x') = sw2 x.x'/d + sb2,                       Theta^1 = Sigma^1
    Sigma^{l+1}    = sw2 E_{(u,v)~N(0,Lambda^l)}[phi(u) phi(v)] + sb2
    Sigmadot^{l+1} = sw2 E_{(u,v)~N(0,Lambda^l)}[phi'(u) phi'(v)]
    Theta^{l+1}    = Sigma^{l+1} + Sigmadot^{l+1} * Theta^l            (entrywise)

with Lambda^l the 2x2 covariance [[Sigma^l(x,x), Sigma^l(x,x')], [., Sigma^l(x',x')]].

How the expectations are computed
---------------------------------
* Inputs of unequal norms: every pair keeps its full 2x2 covariance.  Closed forms for
  the ReLU family (arc-cosine kernel), erf, linear and sin; otherwise a 2-D quadrature
  per pair (``meanfield/_kernels_numba.py``).
* All inputs of one norm (|x|^2/d equal to 1e-13 relative): at every depth all pairs
  share one variance q^l and each pair is described by eps = 1 - c, carried directly so
  that nearly equal inputs keep their digits.  Closed forms as above; for smooth
  activations without one, a Chebyshev interpolant in c of Delta(c)/(1 - c) and
  E[phi'(u) phi'(v)](c) per depth, with Delta = E phi^2 - E phi(u)phi(v), built on
  Chebyshev-Lobatto nodes c_k = cos(pi k / N) (each node a 2-D quadrature accurate to
  ~1e-15, ``_expect.moments2``), N doubled until the interpolant reproduces the new
  nodes to ``CHEB_RTOL``; kinked activations use the 2-D rule per pair.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.fft
import scipy.linalg
import xarray as xr

from . import _kernels_numba as K
from . import _validate as V
from ._engine import solver_args
from ._expect import _closed2, moments1
from ._version import __version__
from .activations import CF_NONE, Activation, get_activation

__all__ = ["kernels", "ntk_metrics", "two_point_kernels"]

# Relative agreement between the norms |x|^2/d for the shared-norm path: treating norms
# that differ by this much as equal perturbs q^1 by less than the 1e-12 accuracy target.
SHARED_NORM_RTOL = 1e-13
# The Chebyshev interpolant must reproduce freshly computed nodes to this relative
# accuracy (against the largest value of each function) before it is used; the node
# values themselves are accurate to ~1e-15 (THEORY.md, "Numerics").
CHEB_RTOL = 1e-13
CHEB_N0 = 16
CHEB_NMAX = 4096

_EMPTY = np.empty(0)


# --------------------------------------------------------------------------- validation
def _matrix(name, X):
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array") from None
    if A.ndim != 2:
        raise ValueError(f"{name} must be two-dimensional (samples x features), got shape {A.shape}")
    if A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {A.shape})")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(A)


def _depth(depth):
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)):
        try:
            ok = float(depth).is_integer()
        except (TypeError, ValueError):
            ok = False
        if not ok or isinstance(depth, bool):
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth}")
    return depth


def _labels(y, n):
    try:
        Y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("y_train must be a numeric array") from None
    if Y.ndim not in (1, 2):
        raise ValueError(f"y_train must be 1-D or 2-D (samples[, outputs]), got shape {Y.shape}")
    if Y.shape[0] != n:
        raise ValueError(f"y_train has {Y.shape[0]} rows but X_train has {n} samples")
    if Y.size == 0 or not np.all(np.isfinite(Y)):
        raise ValueError("y_train is empty or contains NaN or infinite values")
    return np.ascontiguousarray(Y)


# --------------------------------------------------------------------------- the recursion
class _Block:
    """One rectangular block Z[rows] x Z[cols] of the kernel (symmetric if rows == cols)."""

    def __init__(self, rows, cols, sym, sig1, eps1):
        self.rows, self.cols, self.sym = rows, cols, sym
        self.sig = sig1
        self.th = sig1.copy()
        self.eps = eps1 if eps1 is not None else np.empty((0, 0))


class _Recursion:
    """Drives the per-layer Numba kernel over one or more blocks of a point set Z.

    ``qz`` holds Sigma^1(z, z) for every point, ``shared`` says whether they are all
    equal (then ``q`` is that value and each block carries eps = 1 - c).
    """

    def __init__(self, act: Activation, sw2, sb2, qz, shared, blocks):
        self.act, self.sw2, self.sb2 = act, float(sw2), float(sb2)
        self.args = solver_args(act)
        self.qz = np.ascontiguousarray(qz, dtype=np.float64)
        self.shared = bool(shared)
        self.q = float(self.qz[0]) if shared else math.nan
        self.blocks = blocks
        self.cheb_nodes = []  # Chebyshev nodes used per depth (shared smooth path)
        self.warned = False
        if not shared:
            self.mode = K.MODE_GENERAL
        elif act.closed_form != CF_NONE:
            self.mode = K.MODE_SHARED_CLOSED
        elif len(act.kinks) == 0:
            self.mode = K.MODE_SHARED_CHEB
        else:
            self.mode = K.MODE_SHARED_QUAD

    @property
    def method(self):
        return {K.MODE_GENERAL: "per-pair covariance: " + (
                    "closed form" if self.act.closed_form != CF_NONE else "2-D quadrature"),
                K.MODE_SHARED_CLOSED: "shared norm: closed form",
                K.MODE_SHARED_CHEB: "shared norm: Chebyshev interpolant in c of 2-D quadratures",
                K.MODE_SHARED_QUAD: "shared norm: 2-D quadrature per pair (kinked activation)",
                }[self.mode]

    # -- shared-norm helpers
    def _moments_at_one(self, q):
        """(E phi^2, E phi'^2) at variance q, from the same routine the pairs use."""
        kind, a, b, ufn, cf, kinks, kappa, odd = self.args
        if cf != CF_NONE:
            D, _, Dp = _closed2(cf, a, q, 0.0)
            return D, Dp
        m = moments1(kind, a, b, ufn, cf, kinks, kappa, q, _EMPTY)
        return m[1], m[3]

    def _node_values(self, q, theta):
        kind, a, b, ufn, cf, kinks, kappa, odd = self.args
        eps = 2.0 * np.sin(0.5 * theta) ** 2
        out = np.empty((theta.size, 3))
        K.node_moments(kind, a, b, ufn, cf, kinks, kappa, odd, q, eps, out)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = out[:, 1] / eps
        return g, out[:, 2]

    def _chebyshev(self, q, m_dphi2):
        """Coefficients of g(c) = Delta(c)/(1 - c) and Dp(c) on [-1, 1], or None."""
        N = CHEB_N0
        theta = np.pi * np.arange(N + 1) / N
        g, dp = self._node_values(q, theta)
        g[0] = q * m_dphi2  # Delta/(1 - c) -> dE[phi phi]/dc = q E phi'^2 at c = 1
        while N < CHEB_NMAX:
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

    def _layer(self, q, qz):
        """Parameters of one layer from depth l (variance q, or per point qz) to l + 1."""
        kind, a, b, ufn, cf, kinks, kappa, odd = self.args
        sw2, sb2 = self.sw2, self.sb2
        mode, c1, c2, m_phi2, qnext, qzn = self.mode, _EMPTY, _EMPTY, 0.0, 0.0, qz
        if self.shared:
            m_phi2, m_dphi2 = self._moments_at_one(q)
            qnext = sw2 * m_phi2 + sb2
            if mode == K.MODE_SHARED_CLOSED:
                c1 = K.shared_constants(cf, a, q)
            elif mode == K.MODE_SHARED_CHEB and q > 0.0:
                coef = self._chebyshev(q, m_dphi2)
                if coef is None:
                    if not self.warned:
                        warnings.warn(f"{self.act.name}: Chebyshev interpolant did not reach "
                                      f"{CHEB_RTOL:g} with {CHEB_NMAX} nodes at q = {q:g}; "
                                      "using the 2-D rule per pair (slower, same accuracy)",
                                      RuntimeWarning, stacklevel=4)
                        self.warned = True
                    mode = K.MODE_SHARED_QUAD
                else:
                    c1, c2 = coef
            elif mode == K.MODE_SHARED_CHEB:
                mode = K.MODE_SHARED_QUAD  # q = 0: moments2 handles it without nodes
        else:
            qzn = np.empty_like(qz)
            K.diag_step(kind, a, b, ufn, cf, kinks, kappa, odd, sw2, sb2, qz, qzn, np.empty_like(qz))
        return mode, q, qnext, m_phi2, c1, c2, qz, qnext, qzn

    def _advance(self, layers, blk, S, T):
        """Run the Numba kernel for the given layers on one block."""
        kind, a, b, ufn, cf, kinks, kappa, odd = self.args
        K_ = len(layers)
        M = max([max(p[4].size, p[5].size) for p in layers] + [1])
        C1 = np.zeros((K_, M))
        C2 = np.zeros((K_, M))
        lens = np.zeros(K_, dtype=np.int64)
        for k, p in enumerate(layers):
            C1[k, :p[4].size] = p[4]
            C2[k, :p[5].size] = p[5]
            lens[k] = max(p[4].size, p[5].size)
        general = not self.shared
        Qr = np.array([p[6][blk.rows] for p in layers]) if general else np.zeros((K_, 0))
        Qc = np.array([p[6][blk.cols] for p in layers]) if general else np.zeros((K_, 0))
        K.advance(np.array([p[0] for p in layers], dtype=np.int64), kind, a, b, ufn, cf, kinks,
                  kappa, odd, self.sw2, self.sb2, np.array([p[1] for p in layers]),
                  np.array([p[2] for p in layers]), np.array([p[3] for p in layers]), C1, C2, lens,
                  Qr, Qc, blk.sig, blk.th, blk.eps, S, T, blk.sym)

    def compute(self, depth, store):
        """Fill ``store`` = [(Sigma (L, nr, nc), Theta (L, nr, nc)) per block] for depths 1..L.

        The scalar (or per-point) length recursion runs first; then one kernel call per
        block goes through all layers tile by tile.
        """
        layers = []
        q, qz = self.q, self.qz
        for _ in range(2, depth + 1):
            p = self._layer(q, qz)
            layers.append(p)
            q, qz = p[7], p[8]
        for blk, (S, T) in zip(self.blocks, store):
            S[0], T[0] = blk.sig, blk.th
            if layers:
                self._advance(layers, blk, S[1:], T[1:])

    def iterate(self, depth):
        """Yield l = 1..depth with every block's ``sig``/``th`` at depth l, updated in place
        (a few n x n arrays whatever the depth)."""
        yield 1
        q, qz = self.q, self.qz
        for l in range(2, depth + 1):
            p = self._layer(q, qz)
            for blk in self.blocks:
                self._advance([p], blk, blk.sig[None], blk.th[None])
            q, qz = p[7], p[8]
            yield l


def _cheb_coef(v):
    """Chebyshev coefficients of the interpolant through v_k at x_k = cos(pi k / N)."""
    N = v.size - 1
    c = scipy.fft.dct(v, type=1) / N
    c[0] *= 0.5
    c[-1] *= 0.5
    return c


def _setup(act, sw2, sb2, Z, blocks):
    """Layer-1 kernels for blocks [(rows, cols, sym)] of the point set Z (n_z x d)."""
    d = Z.shape[1]
    sq = np.einsum("ij,ij->i", Z, Z) / d
    nbar = float(np.mean(sq))
    shared = bool(np.all(np.abs(sq - nbar) <= SHARED_NORM_RTOL * nbar)) and nbar > 0.0
    qz = sw2 * (np.full_like(sq, nbar) if shared else sq) + sb2
    out = []
    for rows, cols, sym in blocks:
        A, B = Z[rows], Z[cols]
        sig1 = sw2 * (A @ B.T) / d + sb2
        eps1 = None
        if shared:
            # For equal norms 1 - c^1 = sw2 |x - x'|^2 / (2 d q^1): no cancellation.
            scale = sw2 / (d * qz[0])
            eps1 = scale * (0.5 * (sq[rows][:, None] + sq[cols][None, :]) * d - A @ B.T)
            # Where 1 - c < 1e-2 the Gram form above has lost up to 2 of its digits to
            # cancellation: those pairs are recomputed from x - x' directly.
            K.refine_eps(A, B, eps1, scale, 1e-2)
            np.clip(eps1, 0.0, 2.0, out=eps1)
            if sym:
                np.fill_diagonal(eps1, 0.0)
                np.fill_diagonal(sig1, qz[0])
        if sym and not shared:
            np.fill_diagonal(sig1, qz[rows])
            sig1 = 0.5 * (sig1 + sig1.T)  # BLAS may round x_i.x_j and x_j.x_i differently
        out.append(_Block(rows, cols, sym, np.ascontiguousarray(sig1), eps1))
    return _Recursion(act, sw2, sb2, qz, shared, out)


# --------------------------------------------------------------------------- xarray helpers
def _attrs(long_name, units="1", **extra):
    return {"long_name": long_name, "units": units, **extra}


def _global_attrs(act, sw2, sb2, rec, title):
    attrs = {
        "title": title,
        "activation": act.name,
        "activation_formula": act.formula,
        "sw2": sw2,
        "sb2": sb2,
        "shared_norm": int(rec.shared),
        "method": rec.method,
        "meanfield_version": __version__,
        "conventions": "THEORY.md: sw2, sb2 are variances; NTK parameterization; "
                       "depth l = 1 is the first layer's pre-activation",
    }
    if rec.cheb_nodes:
        attrs["chebyshev_nodes_max"] = int(max(rec.cheb_nodes))
    for k, v in act.parameters.items():
        attrs[f"activation_{k}"] = v
    return attrs


def _depth_coord(L):
    return ("depth", np.arange(1, L + 1), _attrs("layer index l (pre-activation layers)", "layers"))


# --------------------------------------------------------------------------- public API
def kernels(X, activation, sw2, sb2, depth, X2=None) -> xr.Dataset:
    """NNGP and NTK kernels of every layer l = 1..depth, in one pass over depths.

    Implements (THEORY.md, "Kernels on a data set")::

        Sigma^1(x, x') = sw2 x.x'/d + sb2,   Theta^1 = Sigma^1
        Sigma^{l+1} = sw2 E[phi(u) phi(v)] + sb2,   Sigmadot^{l+1} = sw2 E[phi'(u) phi'(v)]
        Theta^{l+1} = Sigma^{l+1} + Sigmadot^{l+1} * Theta^l,    (u, v) ~ N(0, Lambda^l)

    Parameters
    ----------
    X : array_like, shape (n, d)
        Inputs, one per row.  Finite.
    activation : str or Activation
        Name from :func:`meanfield.activations` or an :class:`Activation`.
    sw2, sb2 : float
        Weight and bias *variances* sigma_w^2, sigma_b^2 (not standard deviations), >= 0.
    depth : int
        Number of layers L >= 1; every depth 1..L is returned.
    X2 : array_like, shape (m, d), optional
        Second set (e.g. test inputs).  When given, the result is the cross-kernel:
        ``i`` indexes the rows of **X2** and ``j`` the rows of **X**
        (``nngp[l, i, j] = Sigma^l(X2[i], X[j])``), the layout of a test x train kernel.

    Returns
    -------
    xarray.Dataset
        ``nngp`` and ``ntk`` over dims ``(depth, i, j)``, float64, shape (L, n, n) or
        (L, m, n); coordinates ``depth`` (1..L), ``i``, ``j`` (row numbers).  Global
        attrs record the method (closed form / Chebyshev / quadrature, shared norm or not).

    Notes
    -----
    Inputs whose norms |x|^2/d agree to 1e-13 use the shared-norm path (see the module
    docstring); otherwise every pair keeps its own 2x2 covariance.  Memory is the output,
    2 L n m doubles, plus a few n x m work arrays.

    Raises
    ------
    ValueError
        NaN/inf or non-2-D inputs, X2 with a different number of columns, depth < 1,
        negative variances, unknown activation.
    """
    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    L = _depth(depth)
    X = _matrix("X", X)
    n = X.shape[0]
    if X2 is None:
        Z = X
        blocks = [(np.arange(n), np.arange(n), True)]
        m = n
    else:
        X2 = _matrix("X2", X2)
        if X2.shape[1] != X.shape[1]:
            raise ValueError(f"X2 has {X2.shape[1]} features but X has {X.shape[1]}")
        m = X2.shape[0]
        Z = np.vstack([X, X2])
        blocks = [(np.arange(n, n + m), np.arange(n), False)]
    rec = _setup(act, sw2, sb2, Z, blocks)
    S = np.empty((L, m, n))
    T = np.empty((L, m, n))
    rec.compute(L, [(S, T)])
    row = "X2" if X2 is not None else "X"
    ds = xr.Dataset(
        {
            "nngp": (("depth", "i", "j"), S, _attrs("NNGP kernel Sigma^l (pre-activation covariance)")),
            "ntk": (("depth", "i", "j"), T, _attrs("neural tangent kernel Theta^l (NTK parameterization)")),
        },
        coords={
            "depth": _depth_coord(L),
            "i": ("i", np.arange(m), _attrs(f"row of {row}", "1")),
            "j": ("j", np.arange(n), _attrs("row of X", "1")),
        },
        attrs=_global_attrs(act, sw2, sb2, rec, f"NNGP and NTK kernels: {act.name}"),
    )
    return ds


def two_point_kernels(activation, sw2, sb2, depth, q1=1.0, q2=1.0, c=0.5) -> xr.Dataset:
    """NNGP and NTK of two inputs, without data, for every layer l = 1..depth.

    The inputs are given by their layer-1 kernel: variances ``q1 = Sigma^1(x, x)``,
    ``q2 = Sigma^1(x', x')`` (the q^1 of the length map, = sw2 |x|^2/d + sb2) and
    correlation ``c = Sigma^1(x, x') / sqrt(q1 q2)``; then the recursion of
    :func:`kernels` (THEORY.md) runs on this 2 x 2 kernel.  With q1 = q2 the state is
    carried as 1 - c, so c close to 1 keeps its digits.

    Parameters
    ----------
    activation : str or Activation
    sw2, sb2 : float
        Weight and bias variances (not standard deviations).
    depth : int
        L >= 1.
    q1, q2 : float, default 1
        Layer-1 variances (>= 0).
    c : float, default 0.5
        Layer-1 correlation in [-1, 1].

    Returns
    -------
    xarray.Dataset
        Over ``depth``: ``q1``, ``q2`` (Sigma^l diagonal), ``nngp_12``, ``correlation``
        (c^l = Sigma^l_12 / sqrt(Sigma^l_11 Sigma^l_22)), ``ntk_11``, ``ntk_22``, ``ntk_12``.
    """
    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    L = _depth(depth)
    q1 = V.variance("q1", q1)
    q2 = V.variance("q2", q2)
    c = V.scalar("c", c, minimum=-1.0, maximum=1.0)
    s12 = c * math.sqrt(q1 * q2)
    sig1 = np.array([[q1, s12], [s12, q2]])
    shared = q1 == q2 and q1 > 0.0
    eps1 = np.array([[0.0, 1.0 - c], [1.0 - c, 0.0]]) if shared else None
    idx = np.arange(2)
    rec = _Recursion(act, sw2, sb2, np.array([q1, q2]), shared, [_Block(idx, idx, True, sig1, eps1)])
    S = np.empty((L, 2, 2))
    T = np.empty((L, 2, 2))
    rec.compute(L, [(S, T)])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = S[:, 0, 1] / np.sqrt(S[:, 0, 0] * S[:, 1, 1])
    v = {
        "q1": (S[:, 0, 0], "NNGP variance Sigma^l(x, x)"),
        "q2": (S[:, 1, 1], "NNGP variance Sigma^l(x', x')"),
        "nngp_12": (S[:, 0, 1], "NNGP covariance Sigma^l(x, x')"),
        "correlation": (corr, "correlation c^l = Sigma^l_12 / sqrt(Sigma^l_11 Sigma^l_22)"),
        "ntk_11": (T[:, 0, 0], "NTK Theta^l(x, x)"),
        "ntk_22": (T[:, 1, 1], "NTK Theta^l(x', x')"),
        "ntk_12": (T[:, 0, 1], "NTK Theta^l(x, x')"),
    }
    attrs = _global_attrs(act, sw2, sb2, rec, f"two-point NNGP and NTK: {act.name}")
    attrs.update({"q1_input": q1, "q2_input": q2, "c_input": c})
    return xr.Dataset({k: (("depth",), a, _attrs(ln)) for k, (a, ln) in v.items()},
                      coords={"depth": _depth_coord(L)}, attrs=attrs)


# --------------------------------------------------------------------------- metrics
STATUS_OK = 0
STATUS_SINGULAR = 1
STATUS_NONFINITE = 2
STATUS_NOT_PD = 3
STATUS_MEANINGS = {
    STATUS_OK: "ok",
    STATUS_SINGULAR: "numerically_singular_lambda_min_below_n_eps_lambda_max",
    STATUS_NONFINITE: "non_finite_kernel",
    STATUS_NOT_PD: "cholesky_failed_not_positive_definite",
}


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def ntk_metrics(X_train, y_train, X_test, activation, sw2, sb2, depth) -> xr.Dataset:
    """Trainability and generalization metrics of the NTK at every depth 1..L.

    For each depth l, with Theta^l from :func:`kernels` (THEORY.md; Xiao, Pennington and
    Schoenholz 2020):

    * ``lambda_max``, ``lambda_min``, ``condition_number`` kappa^l = lambda_max/lambda_min
      of Theta^l on the train set (``scipy.linalg.eigh``).  Chaotic phase: kappa^l -> 1;
      ordered: kappa^l grows like chi_1^{-l}/l.
    * ``prediction``: the mean predictor P(Theta^l) Y = Theta^l_{test,train}
      (Theta^l_{train,train})^{-1} Y_train, solved by Cholesky (never an explicit inverse).
    * ``prediction_distance``: RMS distance of the prediction to its infinite-depth limit:
      0 in the chaotic phase; in the ordered/critical phase the limit is extrapolated from
      the deepest two regular depths as a geometric tail, P_inf = P^L + (P^L - P^{L-1})
      r/(1 - r) with r the fitted rate there (NaN when r is not in (0, 1)).  The approach
      is algebraic there (see below), so this limit, and the distance, are estimates.
    * ``decay_rate``: fitted local rate r^l = |P^{l+1} - P^l| / |P^l - P^{l-1}| (RMS norms;
      needs no limit), to compare with ``theory_decay_rate``: chi_c*/chi_1 (chaotic) and 1
      (ordered and critical: polynomial, not exponential).  For the O(l r^l) law of the
      chaotic phase r^l approaches the rate like 1 + O(1/l).  In the ordered phase the
      non-constant part of Theta^l shrinks like chi_1^l but its shape still converges like
      1/l, and the predictor depends only on that shape: r^l = 1 - O(1/l) (measured:
      1 - r^l ~ 2/l for tanh at sw2 = 1.4, sb2 = 0.05), not chi_1.
    * ``condition_ratio`` kappa^l / kappa^{l-1}, to compare with ``theory_condition_ratio``
      = 1/chi_1 (ordered) or 1 (chaotic/critical).

    A depth whose Theta^l_train is not finite, has lambda_min <= n eps lambda_max
    (eps = 2.2e-16), or fails Cholesky, is flagged in ``singular``/``status`` and its
    prediction is NaN.  chi_1, chi_c* and the phase come from :func:`meanfield.analyze`
    started at the data's mean q^1.

    Parameters
    ----------
    X_train : array_like (n, d)
    y_train : array_like (n,) or (n, k)
    X_test : array_like (m, d)
    activation, sw2, sb2, depth
        As in :func:`kernels`.

    Returns
    -------
    xarray.Dataset
        Over ``depth`` (and ``test``[, ``output``] for the prediction).  Memory: a few
        (n + m) x n arrays, whatever L.
    """
    from .api import analyze

    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    L = _depth(depth)
    Xtr = _matrix("X_train", X_train)
    Xte = _matrix("X_test", X_test)
    if Xte.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_test has {Xte.shape[1]} features but X_train has {Xtr.shape[1]}")
    Y = _labels(y_train, Xtr.shape[0])
    n, m = Xtr.shape[0], Xte.shape[0]
    Z = np.vstack([Xtr, Xte])
    rec = _setup(act, sw2, sb2, Z,
                 [(np.arange(n), np.arange(n), True), (np.arange(n, n + m), np.arange(n), False)])
    lam_max = np.full(L, np.nan)
    lam_min = np.full(L, np.nan)
    status = np.zeros(L, dtype=np.int8)
    pred = np.full((L, m) + Y.shape[1:], np.nan)
    tiny = n * np.finfo(np.float64).eps
    for l in rec.iterate(L):
        Ttr, Tte = rec.blocks[0].th, rec.blocks[1].th
        k = l - 1
        if not (np.all(np.isfinite(Ttr)) and np.all(np.isfinite(Tte))):
            status[k] = STATUS_NONFINITE
            continue
        ev = scipy.linalg.eigh(Ttr, eigvals_only=True, check_finite=False)
        lam_min[k], lam_max[k] = ev[0], ev[-1]
        if not ev[0] > tiny * ev[-1]:
            status[k] = STATUS_SINGULAR
            continue
        try:
            cf = scipy.linalg.cho_factor(Ttr, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            status[k] = STATUS_NOT_PD
            continue
        pred[k] = Tte @ scipy.linalg.cho_solve(cf, Y, check_finite=False)
    ok = status == STATUS_OK
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = lam_max / lam_min
        kappa[status == STATUS_NONFINITE] = np.nan
        # lambda_min at rounding level (it can even come out negative): the condition
        # number is infinite at working precision, whatever the ratio's digits say.
        kappa[status == STATUS_SINGULAR] = np.inf
        cond_ratio = np.full(L, np.nan)
        cond_ratio[1:] = kappa[1:] / kappa[:-1]
        diff = np.full(L, np.nan)  # diff[k] = |P^{k+1} - P^k|
        for k in range(L - 1):
            if ok[k] and ok[k + 1]:
                diff[k] = _rms(pred[k + 1] - pred[k])
        rate = np.full(L, np.nan)
        rate[1:-1] = diff[1:-1] / diff[:-2]

    res = analyze(act, sw2, sb2, q0=float(np.mean(rec.qz)))
    if res.phase == "ordered":
        theory_rate, theory_cond = 1.0, 1.0 / res.chi1
    elif res.phase == "chaotic":
        theory_rate, theory_cond = res.chi_c / res.chi1, 1.0
    elif res.phase == "critical":
        theory_rate, theory_cond = 1.0, 1.0
    else:
        theory_rate, theory_cond = math.nan, math.nan

    limit = np.full(pred.shape[1:], np.nan)
    limit_note = "undetermined (fewer than three regular depths)"
    good = np.flatnonzero(ok)
    if res.phase == "chaotic":
        limit = np.zeros(pred.shape[1:])
        limit_note = "0 (chaotic phase)"
    elif good.size >= 3 and good[-1] - good[-3] == 2:
        kL = good[-1]
        r = rate[kL - 1]
        if 0.0 < r < 1.0:
            limit = pred[kL] + (pred[kL] - pred[kL - 1]) * r / (1.0 - r)
            limit_note = f"geometric extrapolation from depths {kL} and {kL + 1} with rate {r:.6g}"
        else:
            limit_note = f"not extrapolated: fitted rate {r:.6g} at depth {kL} is not in (0, 1)"
    dist = np.array([_rms(pred[k] - limit) if ok[k] else np.nan for k in range(L)])

    pdims = ("depth", "test") + (("output",) if Y.ndim == 2 else ())
    coords = {"depth": _depth_coord(L), "test": ("test", np.arange(m), _attrs("row of X_test"))}
    if Y.ndim == 2:
        coords["output"] = ("output", np.arange(Y.shape[1]), _attrs("column of y_train"))
    data = {
        "lambda_max": ("depth", lam_max, _attrs("largest eigenvalue of Theta^l on the train set")),
        "lambda_min": ("depth", lam_min, _attrs("smallest eigenvalue of Theta^l on the train set")),
        "condition_number": ("depth", kappa, _attrs("condition number lambda_max / lambda_min")),
        "condition_ratio": ("depth", cond_ratio, _attrs("kappa^l / kappa^(l-1)")),
        "singular": ("depth", ~ok, _attrs("Theta^l on the train set is unusable at this depth "
                                          "(reason in status)")),
        "status": ("depth", status, {"long_name": "kernel status per depth", "units": "1",
                                      "flag_values": np.array(sorted(STATUS_MEANINGS), dtype=np.int8),
                                      "flag_meanings": " ".join(STATUS_MEANINGS[k]
                                                                for k in sorted(STATUS_MEANINGS))}),
        "prediction": (pdims, pred, _attrs("NTK mean predictor Theta_test,train Theta_train^-1 Y",
                                           "units of y_train")),
        "prediction_limit": (pdims[1:], limit, _attrs("infinite-depth limit of the mean predictor",
                                                      "units of y_train", estimate=limit_note)),
        "prediction_distance": ("depth", dist, _attrs("RMS distance of the prediction to its "
                                                      "infinite-depth limit", "units of y_train")),
        "decay_rate": ("depth", rate, _attrs("fitted local decay rate |P^(l+1)-P^l| / |P^l-P^(l-1)|")),
        "theory_decay_rate": ((), theory_rate, _attrs(
            "predicted decay rate: chi_c*/chi_1 (chaotic), 1 (ordered, critical: not exponential)")),
        "theory_condition_ratio": ((), theory_cond, _attrs(
            "predicted kappa^l / kappa^(l-1): 1/chi_1 (ordered), 1 otherwise")),
        "chi1": ((), res.chi1, _attrs("chi_1 at the fixed point q*")),
        "chi_c": ((), res.chi_c, _attrs("chi_c at the stable correlation fixed point c*")),
    }
    attrs = _global_attrs(act, sw2, sb2, rec, f"NTK trainability and generalization metrics: {act.name}")
    attrs.update({"phase": res.phase, "q_star": res.q_star, "c_star": res.c_star,
                  "analyze_status": res.status, "singular_threshold": "lambda_min <= n * eps * lambda_max"})
    return xr.Dataset(data, coords=coords, attrs=attrs)
