"""What the explorer shows, computed with the public library only (no figures, no widgets).

Every function here calls :mod:`meanfield`'s public names (``phase_diagram``, ``analyze``,
``critical_line``, ``recommend``, ``two_point_kernels``, ``ntk_metrics``) and returns plain
numbers, dicts or xarray objects, so the same values feed the live app, the static page,
the notebook and the tests.  Conventions as in docs/theory.md: sw2, sb2 are variances.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .. import api as mf

# The selectable colour of the phase diagram: variable -> (label, logarithmic colour scale).
QUANTITIES = {
    "chi1": ("chi_1", True),
    "xi_c": ("xi_c (layers)", True),
    "max_depth": ("max trainable depth 6 xi_c (layers)", True),
    "q_star": ("q*", True),
    "c_star": ("c*", False),
}
# Every quantity a hover or the point panel reports, in display order.
POINT_FIELDS = ("q_star", "c_star", "chi1", "chi_c", "xi_q", "xi_c", "xi_grad", "max_depth")
# Depths at which the max-depth contours 6 xi_c = L are drawn (those of meanfield.plot).
DEPTH_LEVELS = (10, 50, 200)
# A modest grid keeps a live recomputation well under a second on two cores.
GRID = (120, 80)
DEFAULT_SW2 = (0.5, 4.0)
DEFAULT_SB2 = (0.0, 2.0)
# Displayed precision of a point's coordinates: a click is rounded to it before computing,
# so the values shown are exactly those at the coordinates shown.
COORD_DECIMALS = 4
# Significant digits of the values in the point panel.
DIGITS = 6


def activation_names() -> list[str]:
    return list(mf.activations())


def diagram(activation, sw2=DEFAULT_SW2, sb2=DEFAULT_SB2, shape=GRID) -> xr.Dataset:
    """mf.phase_diagram on a ``shape`` grid over the closed ranges ``sw2`` and ``sb2``."""
    (w0, w1), (b0, b1) = _range("sw2", sw2), _range("sb2", sb2)
    return mf.phase_diagram(activation, np.linspace(w0, w1, shape[0]), np.linspace(b0, b1, shape[1]))


def _range(name, pair):
    lo, hi = (float(v) for v in pair)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: the range must be finite, got {lo:g} to {hi:g}")
    if lo < 0:
        raise ValueError(f"{name} must be >= 0, got {lo:g}")
    if not hi > lo:
        raise ValueError(f"{name}: the upper end must exceed the lower, got {lo:g} to {hi:g}")
    return lo, hi


def critical_curve(activation, sb2=DEFAULT_SB2, n=40) -> xr.DataArray:
    """mf.critical_line (chi_1 = 1, sw2 over sb2) at ``n`` values of sb2 in the closed range."""
    b0, b1 = _range("sb2", sb2)
    return mf.critical_line(activation, np.linspace(b0, b1, n))


def snap(value) -> float:
    """A coordinate rounded to the displayed precision (see ``COORD_DECIMALS``)."""
    return round(float(value), COORD_DECIMALS)


def point(activation, sw2, sb2) -> dict:
    """Every mean-field quantity at one point (mf.analyze), as a plain dict."""
    return mf.analyze(activation, sw2, sb2).to_dict()


def fmt(v, digits=DIGITS) -> str:
    """A value as the point panel prints it (``g`` format, inf/nan as words)."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, int, np.floating, np.integer)):
        v = float(v)
        return str(v) if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def recommend_text(activation, depth, sb2=None) -> str:
    """The text of mf.recommend for a depth typed by the user (ValueError if invalid)."""
    try:
        depth = int(str(depth).strip())
    except ValueError:
        raise ValueError(f"depth must be a positive integer, got {depth!r}") from None
    return str(mf.recommend(activation, depth, sb2=sb2))


def _fit_line(depth, dev, xi):
    """A exp(-l/xi) matched to ``dev`` at its deepest resolved depth (NaN where undrawn).

    A depth scale beyond the plotted depth (near the critical line) means the approach is
    slower than exponential here: no line is drawn then, rather than a misleading flat one.
    """
    out = np.full(depth.shape, np.nan)
    good = np.flatnonzero(np.isfinite(dev) & (dev > 0))
    if not (math.isfinite(xi) and 0 < xi <= depth[-1]) or good.size < 2:
        return out
    k = good[-1]
    return dev[k] * np.exp(-(depth - depth[k]) / xi)


# Deviations below this fraction of the fixed point are float64 rounding (c^l resolves
# 1 - c to ~1e-16): they are not plotted.
DEVIATION_FLOOR = 1e-13


def _rows(sw2, sb2, lengths, dim):
    """Rows x with layer-1 kernel sw2 |x|^2/dim + sb2 = ``lengths`` (first coordinate only)."""
    return np.sqrt(dim * (np.asarray(lengths, float) - sb2) / sw2)


def _pair_at(sw2, sb2, q, c, dim, first):
    """Two rows of length q (layer-1 kernel) with layer-1 correlation c, in coordinates
    ``first`` and ``first + 1`` of a ``dim``-vector: Sigma^1_12 = sw2 x.x'/dim + sb2 = c q."""
    t = (c * q - sb2) / (q - sb2)        # cosine of the angle between the two inputs
    r = math.sqrt(dim * (q - sb2) / sw2)
    a, b = np.zeros(dim), np.zeros(dim)
    a[first] = r
    b[first], b[first + 1] = r * t, r * math.sqrt(max(0.0, 1.0 - t * t))
    return a, b


def lowest_correlation(sw2, sb2, q):
    """The smallest layer-1 correlation two inputs of layer-1 length q can have: 2 sb2/q - 1
    (antiparallel inputs; the bias is shared).  Below it C(c) is never reached."""
    return 2.0 * sb2 / q - 1.0


def _check_point(activation, sw2, sb2):
    r = mf.analyze(activation, sw2, sb2)
    if not (math.isfinite(r.q_star) and r.q_star > sb2 and sw2 > 0):
        raise ValueError(f"depth profiles and maps need sw2 > 0 and a finite q* > sb2; at "
                         f"sw2={r.sw2:g}, sb2={r.sb2:g} q* = {r.q_star:g} ({r.status})")
    return r


def profiles(activation, sw2, sb2, depth=60, q1=3.0, c1=0.2) -> xr.Dataset:
    """Depth profiles at one point: q^l, c^l, the gradient norm, and their exp(-l/xi) fits.

    * ``q``: the length q^l of one input started at q^1 = ``q1`` (the length map iterated);
    * ``c``: the correlation c^l of two inputs at length q* started at c^1 = ``c1`` (raised
      to :func:`lowest_correlation` if below it; the value used is in ``attrs["c1"]``);
    * ``grad``: E[(delta^l)^2] / E[(delta^L)^2], the backpropagated squared gradient at
      layer l relative to the top, = prod_{k=l}^{L-1} chi(q^k) with
      chi(q) = sw2 E[phi'(sqrt(q) z)^2] along the single input's q^k.  chi(q^k) is read off
      the NTK diagonal, Theta^{k+1} = q^{k+1} + chi(q^k) Theta^k (docs/theory.md);
    * ``dq``, ``dc``: |q^l - q*| / q* and |c^l - c*| (NaN at rounding level), with fits
      ``fit_q`` ~ exp(-l/xi_q) and ``fit_c`` ~ exp(-l/xi_c) matched at the deepest resolved
      depth, and ``fit_grad`` = exp(-(L-l)/xi_grad) (on q* the gradient norm is
      chi_1^(L-l) exactly).

    The three inputs are built so their layer-1 kernel is exactly the one asked for and go
    through one mf.kernels call.  The point's mf.analyze result is in the attributes.
    """
    r = _check_point(activation, sw2, sb2)
    if not (math.isfinite(q1) and q1 >= sb2):
        raise ValueError(f"q^1 must be >= sb2 = {sb2:g} (q^1 = sw2 |x|^2/d + sb2), got {q1:g}")
    c1 = min(1.0, max(float(c1), lowest_correlation(sw2, sb2, r.q_star)))
    X = np.zeros((3, 3))
    X[0, 0] = _rows(sw2, sb2, q1, 3)
    X[1], X[2] = _pair_at(sw2, sb2, r.q_star, c1, 3, 1)
    ks = mf.kernels(X, activation, sw2, sb2, depth)
    S, T = ks["nngp"].values, ks["ntk"].values
    l = ks["depth"].values.astype(float)
    q = S[:, 0, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = S[:, 1, 2] / np.sqrt(S[:, 1, 1] * S[:, 2, 2])
        theta = T[:, 0, 0]
        chi = (theta[1:] - q[1:]) / theta[:-1]          # chi(q^l) for l = 1..L-1
        grad = np.append(np.cumprod(chi[::-1])[::-1], 1.0)
        dq = np.abs(q - r.q_star) / r.q_star
        dc = np.abs(c - r.c_star)
    dq = np.where(dq > DEVIATION_FLOOR, dq, np.nan)
    dc = np.where(dc > DEVIATION_FLOOR, dc, np.nan)
    fit_grad = np.full(l.shape, np.nan)
    if math.isfinite(r.xi_grad) and r.xi_grad != 0:
        fit_grad = np.exp(-(l[-1] - l) / r.xi_grad)
    data = {"q": q, "c": c, "grad": grad, "dq": dq, "dc": dc,
            "fit_q": _fit_line(l, dq, r.xi_q), "fit_c": _fit_line(l, dc, r.xi_c), "fit_grad": fit_grad}
    meta = {k: (v if not isinstance(v, (bool, dict)) else str(v)) for k, v in r.to_dict().items()}
    meta.update(q1=float(q1), c1=float(c1))
    return xr.Dataset({k: ("depth", v) for k, v in data.items()}, coords={"depth": l}, attrs=meta)


def length_map(activation, sw2, sb2, q_star, n=40, q_max=None, q1=None) -> dict:
    """V(q) = sw2 E[phi(sqrt(q) z)^2] + sb2 on [sb2, q_max]: the layer-2 NNGP diagonal of
    inputs whose layer-1 lengths are q (one mf.kernels call; q^l >= sb2 for every l).
    The default q_max shows q*, and the start ``q1`` of a cobweb when given."""
    if q_max is None:
        q_max = max(1.0, 1.6 * q_star if math.isfinite(q_star) else 4.0, 1.2 * sb2 + 0.1,
                    1.1 * (q1 or 0.0))
    q = np.linspace(sb2, q_max, n)
    X = _rows(sw2, sb2, q, 1)[:, None]
    v = np.diagonal(mf.kernels(X, activation, sw2, sb2, 2)["nngp"].values[1]).copy()
    return {"x": q, "y": v, "max": q_max}


def correlation_map(activation, sw2, sb2, q_star, n=50) -> dict:
    """C(c) at q = q* for c from :func:`lowest_correlation` to 1: the layer-2 correlation of
    pairs of inputs at length q* with layer-1 correlation c (one mf.kernels call)."""
    cs = np.linspace(max(-1.0, lowest_correlation(sw2, sb2, q_star)), 1.0, n)
    rows = [_pair_at(sw2, sb2, q_star, 1.0, 2, 0)[0]]
    rows += [_pair_at(sw2, sb2, q_star, c, 2, 0)[1] for c in cs]
    S = mf.kernels(np.array(rows), activation, sw2, sb2, 2)["nngp"].values[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        v = S[0, 1:] / np.sqrt(S[0, 0] * np.diagonal(S)[1:])
    return {"x": cs, "y": v}


def cobweb(values) -> dict:
    """The staircase x^1 -> x^2 -> ... of a sequence of iterates: (x^l, x^l) -> (x^l, x^{l+1})."""
    v = np.asarray(values, dtype=float)
    v = v[: np.argmax(~np.isfinite(v))] if not np.all(np.isfinite(v)) else v
    xs, ys = [], []
    for a, b in zip(v[:-1], v[1:]):
        xs += [a, a]
        ys += [a, b]
    return {"x": np.array(xs), "y": np.array(ys)}


# --- kernels on a data set -----------------------------------------------------------------

def on_sphere(X):
    """Rows scaled to |x|^2 = d (unit mean square per coordinate), as in the papers' kernel
    experiments: every input then starts at one q^1 = sw2 + sb2, and the kernels take
    their fast equal-norm path (a per-depth Chebyshev interpolant in c)."""
    X = np.asarray(X, float)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("the data set has an all-zero row: it cannot be put on the sphere")
    return X / norms * math.sqrt(X.shape[1])


def digits(n_train=150, n_test=75, seed=0):
    """scikit-learn's digits (8x8 images), centred, on the sphere; labels +1 even, -1 odd."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = on_sphere(d.data - d.data.mean(0))
    y = np.where(d.target % 2 == 0, 1.0, -1.0)
    idx = np.random.default_rng(seed).permutation(len(y))[: n_train + n_test]
    return X[idx[:n_train]], y[idx[:n_train]], X[idx[n_train:]], y[idx[n_train:]]


def read_table(name, data: bytes, n_test_fraction=1 / 3, max_rows=300):
    """An uploaded data set: CSV (features, label in the last column) or .npz with X and y.

    Split in order into train and test (the last ``n_test_fraction``); at most
    ``max_rows`` rows are kept so a kernel stays interactive; rows go on the sphere
    (:func:`on_sphere`).  ValueError when unreadable.
    """
    import io

    try:
        if str(name).lower().endswith(".npz"):
            with np.load(io.BytesIO(data)) as f:
                if "X" not in f or "y" not in f:
                    raise ValueError(f"{name}: an .npz upload needs arrays 'X' and 'y'")
                X, y = np.asarray(f["X"], float), np.asarray(f["y"], float)
        else:
            a = np.loadtxt(io.StringIO(data.decode()), delimiter=",", ndmin=2)
            X, y = a[:, :-1], a[:, -1]
    except ValueError as exc:
        raise ValueError(f"{name}: cannot read the upload ({str(exc).splitlines()[0]})") from None
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(y) < 3 or X.shape[1] < 1:
        raise ValueError(f"{name}: need X of shape (n, d) and y of shape (n,), n >= 3")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"{name}: the upload contains NaN or infinite values")
    X, y = on_sphere(X[:max_rows]), y[:max_rows]
    k = max(1, int(round(len(y) * n_test_fraction)))
    return X[:-k], y[:-k], X[-k:], y[-k:]


def kernel_metrics(data, activation, sw2, sb2, depth=20) -> xr.Dataset:
    """mf.ntk_metrics per depth on ``data = (X_train, y_train, X_test, y_test)``, plus the
    test accuracy of the sign of the mean predictor at every depth."""
    Xtr, ytr, Xte, yte = data
    m = mf.ntk_metrics(Xtr, ytr, Xte, activation, sw2, sb2, depth)
    pred = m["prediction"].values
    acc = np.mean(np.sign(pred) == np.sign(np.asarray(yte))[None, :], axis=1)
    acc = np.where(np.all(np.isfinite(pred), axis=1), acc, np.nan)
    return m.assign(test_accuracy=("depth", acc, {"long_name": "test accuracy of sign(prediction)",
                                                 "units": "1"}))
