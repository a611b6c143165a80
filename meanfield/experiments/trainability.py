"""Trainability of deep random networks against the depth scale xi_c (Schoenholz et al. 2017).

The mean-field prediction (docs/theory.md, "Depth scales"): a fully connected network of depth L
initialized at (sw2, sb2) trains when L <~ 6 xi_c, with xi_c = -1/log chi_c the depth over
which the correlation of two inputs forgets its initial value.  Here we test it: train
networks of width N and depth L with plain SGD on the softmax cross-entropy of
scikit-learn's digits data (1797 8x8 images, 10 classes), record the training accuracy after
a fixed number of steps, and fit the depth at which training fails as a constant times xi_c.

Setup (numpy, float64, seeded):

* inputs: the 64 pixels standardized per feature over the data set, then each image scaled
  to |x|^2/64 = 1, so every input starts the length map at q^1 = sw2 + sb2;
* network: L hidden layers of width N, ``z^l = W^l y^{l-1} + b^l``, ``y^l = phi(z^l)``, and a
  linear readout to 10 logits, all weights W ~ N(0, sw2/fan_in), biases b ~ N(0, sb2)
  (docs/theory.md; variances, not standard deviations), trained in this standard
  parameterization;
* SGD with a constant learning rate on minibatches drawn without replacement in epochs;
  the minibatch sequence is the same for every (sw2, L), so the initialization is the only
  difference between cells;
* all sw2 values of one depth are trained together as a batch of independent networks
  (batched matrix products), which keeps the BLAS calls large enough to be efficient.

Per step and network the cost is ~6 B N^2 L flops (B the batch size).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .._version import __version__
from ..core import validate as V
from ..core.activation import get_activation
from ..core.analysis import analyze
from ..core.vocabulary import DEPTH_CONSTANT
from ..core.budget import check_memory

__all__ = ["digits_data", "trainability", "fit_depth_constant", "with_fit"]

N_CLASSES = 10
CHANCE = 1.0 / N_CLASSES  # accuracy of a constant guess on the (nearly balanced) digits
# Schoenholz et al. (2017), Fig. 5: the trainable region ends near L = 6 xi_c.
PREDICTED_CONSTANT = DEPTH_CONSTANT


def digits_data(n_samples=None):
    """scikit-learn's digits, standardized per pixel and scaled to |x|^2/d = 1.

    Parameters
    ----------
    n_samples : int, optional
        Keep only the first ``n_samples`` images (default all 1797).

    Returns
    -------
    X : ndarray, shape (n, 64), float64
    y : ndarray, shape (n,), int64 class labels 0..9
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    X = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.int64)
    if n_samples is not None:
        n = V.integer("n_samples", n_samples, N_CLASSES)
        X, y = X[:n], y[:n]
    sd = X.std(axis=0)
    # Border pixels are always 0: leave them 0 rather than divide by a zero spread.
    X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    X *= np.sqrt(X.shape[1]) / np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def _numpy_tanh(x):
    return np.tanh(x)


def _numpy_relu(x):
    return np.maximum(x, 0.0)


class _Fast:
    """phi and phi' through numpy ufuncs for the common activations.

    The registry's vectorized evaluation is a general Numba loop over a dispatch code; in the
    training loop phi and phi' run on every layer of every step, and numpy's own ufuncs are
    about twice as fast there.  Any other activation uses the registry.
    """

    def __init__(self, act):
        self.act = act
        if act == get_activation("tanh"):
            self.phi = _numpy_tanh
            self.dphi = lambda z: 1.0 - np.tanh(z) ** 2
        elif act == get_activation("relu"):
            self.phi = _numpy_relu
            self.dphi = lambda z: (z > 0).astype(np.float64)
        else:
            self.phi, self.dphi = act, act.derivative

    def __call__(self, x):
        return self.phi(x)

    def derivative(self, x):
        return self.dphi(x)


def _init(rng, sw2, sb2, sizes):
    """Weights (S, n_out, n_in) ~ N(0, sw2/n_in) and biases (S, 1, n_out) ~ N(0, sb2)."""
    S = len(sw2)
    Ws, bs = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        Ws.append(rng.standard_normal((S, n_out, n_in)) * np.sqrt(sw2 / n_in)[:, None, None])
        bs.append(rng.standard_normal((S, 1, n_out)) * np.sqrt(sb2))
    return Ws, bs


def _forward(act, Ws, bs, X):
    """Pre-activations zs, layer outputs hs (hs[0] = input) and logits; X is (B, d)."""
    S = Ws[0].shape[0]
    zs, hs = [], [np.broadcast_to(X, (S,) + X.shape)]
    for W, b in zip(Ws[:-1], bs[:-1]):
        z = hs[-1] @ W.transpose(0, 2, 1) + b
        zs.append(z)
        hs.append(act(z))
    return zs, hs, hs[-1] @ Ws[-1].transpose(0, 2, 1) + bs[-1]


def _log_softmax(logits):
    m = logits.max(axis=-1, keepdims=True)
    s = logits - m
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def _evaluate(act, Ws, bs, X, y, chunk=512):
    """Accuracy and mean cross-entropy of every network on (X, y); non-finite logits count
    as wrong (a diverged network predicts nothing)."""
    S = Ws[0].shape[0]
    correct = np.zeros(S)
    loss = np.zeros(S)
    for i in range(0, len(y), chunk):
        _, _, logits = _forward(act, Ws, bs, X[i:i + chunk])
        yy = y[i:i + chunk]
        ok = np.all(np.isfinite(logits), axis=-1)
        correct += np.sum(ok & (np.argmax(np.where(ok[..., None], logits, 0), axis=-1) == yy), axis=1)
        lp = _log_softmax(logits)
        loss -= np.sum(np.take_along_axis(lp, yy[None, :, None].repeat(S, 0), axis=-1)[..., 0],
                       axis=1)
    return correct / len(y), loss / len(y)


def sgd(act, Ws, bs, X, T, output_grad, steps, batch_size, lr, order_rng):
    """Minibatch SGD, in place, on a batch of S networks trained side by side.

    Each step draws the next ``batch_size`` rows of a running permutation of X (from
    ``order_rng``; every network sees the same data in the same order), back-propagates
    g = d loss / d output, with ``g = output_grad(out, T[idx])`` of shape (S, B, k) and the
    1/B of the mean already in it, and updates W <- W - lr dL/dW, b <- b - lr dL/db.
    A network whose g is not finite has diverged: it is frozen (zero step from then on) so
    that no NaN spreads through its parameters and the others are unaffected.

    Returns
    -------
    ndarray of bool
        Per network: still finite after the last step.
    """
    depth = len(Ws) - 1
    alive = np.ones(Ws[0].shape[0], dtype=bool)
    order = np.empty(0, dtype=np.int64)
    for _ in range(steps):
        if order.size < batch_size:
            order = np.concatenate([order, order_rng.permutation(len(X))])
        idx, order = order[:batch_size], order[batch_size:]
        zs, hs, out = _forward(act, Ws, bs, X[idx])
        g = output_grad(out, T[idx])
        alive &= np.all(np.isfinite(g), axis=(1, 2))
        delta = np.where(alive[:, None, None], g, 0.0)
        for layer in range(depth, -1, -1):
            gW = delta.transpose(0, 2, 1) @ hs[layer]
            gb = delta.sum(axis=1, keepdims=True)
            if layer > 0:
                delta = (delta @ Ws[layer]) * act.derivative(zs[layer - 1])
            Ws[layer] -= lr * gW
            bs[layer] -= lr * gb
    return alive


def _train_depth(act, sw2, sb2, depth, width, X, y, steps, batch_size, lr, seed):
    """SGD on the softmax cross-entropy for all sw2 values at one depth; returns
    (accuracy, loss, diverged) per sw2."""
    # One stream for the weights of this depth, one for the minibatch order shared by all
    # depths (so every cell sees the same data in the same order).
    w_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(1, depth))))
    b_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0,))))
    Ws, bs = _init(w_rng, sw2, sb2, [X.shape[1]] + [width] * depth + [N_CLASSES])
    onehot = np.eye(N_CLASSES)[y]

    def softmax_grad(logits, t):  # d loss / d logits, (S, B, 10)
        return (np.exp(_log_softmax(logits)) - t) / batch_size

    alive = sgd(act, Ws, bs, X, onehot, softmax_grad, steps, batch_size, lr, b_rng)
    acc, loss = _evaluate(act, Ws, bs, X, y)
    return acc, loss, ~alive


def trainability(activation="tanh", sw2=np.linspace(1.0, 4.0, 16), depths=(4, 8, 16, 32, 64), *,
                 sb2=0.05, width=128, steps=300, batch_size=32, learning_rate=0.01,
                 n_samples=None, seed=0, depth_constant=PREDICTED_CONSTANT,
                 progress=None) -> xr.Dataset:
    """Training accuracy on digits after a fixed SGD budget over a (sw2, depth) grid.

    For each depth L and weight variance sw2, a network of L hidden layers of ``width``
    units initialized at (sw2, sb2) (docs/theory.md; W ~ N(0, sw2/fan_in), b ~ N(0, sb2)) is
    trained for ``steps`` SGD steps on the softmax cross-entropy of the digits data
    (:func:`digits_data`); the dataset records the training accuracy on all samples
    beside the mean-field depth scale xi_c(sw2, sb2) and the predicted trainable depth
    ``depth_constant * xi_c`` (Schoenholz et al. 2017: 6 xi_c).

    Parameters
    ----------
    activation : str or Activation
    sw2 : array_like
        Weight variances (1-D, >= 0).
    depths : sequence of int
        Numbers of hidden layers L >= 1.
    sb2 : float, default 0.05
        Bias variance (Schoenholz et al. use 0.05).
    width : int, default 128
    steps : int, default 300
        SGD steps (each one minibatch).
    batch_size : int, default 32
    learning_rate : float, default 0.01
        Constant SGD step size (> 0).
    n_samples : int, optional
        Use only the first n_samples digits (for quick runs).
    seed : int, default 0
    depth_constant : float, default 6
        Constant of the predicted depth stored as ``max_depth``.
    progress : callable, optional
        Called as ``progress(depth)`` after each depth is trained (for a progress bar).

    Returns
    -------
    xarray.Dataset
        ``accuracy`` and ``loss`` (final training accuracy and cross-entropy) and
        ``diverged`` (int8: the loss overflowed and training stopped) over (sw2, depth);
        ``xi_c``, ``chi1`` and ``max_depth`` over sw2.

    Raises
    ------
    ValueError
        Bad variances, depths, width, steps, batch size, learning rate or seed.
    """
    act = get_activation(activation)
    w = V.variance_array("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    try:
        ds_ = [V.integer("depths", L, 1) for L in np.atleast_1d(np.asarray(depths, dtype=object))]
    except TypeError:
        raise ValueError(f"depths must be integers >= 1, got {depths!r}") from None
    if not ds_:
        raise ValueError("depths is empty")
    if len(set(ds_)) != len(ds_):
        raise ValueError(f"depths contains duplicates: {list(depths)!r}")
    width = V.integer("width", width, 1)
    steps = V.integer("steps", steps, 1)
    batch_size = V.integer("batch_size", batch_size, 1)
    lr = V.scalar("learning_rate", learning_rate, minimum=0.0, inclusive=False)
    seed = V.integer("seed", seed, 0)
    depth_constant = V.scalar("depth_constant", depth_constant, minimum=0.0, inclusive=False)
    # Weights, gradients and momentum of the deepest network, its activations on a batch,
    # and the (sw2, depth) result tables.
    check_memory(8.0 * (4 * max(ds_) * float(width) ** 2 + 4 * batch_size * width * max(ds_))
                 + 64.0 * len(w) * len(ds_),
                 f"depth {max(ds_)} x width {width} x batch {batch_size}")
    X, y = digits_data(n_samples)
    if batch_size > len(y):
        raise ValueError(f"batch_size {batch_size} exceeds the number of samples {len(y)}")

    acc = np.empty((len(w), len(ds_)))
    loss = np.empty_like(acc)
    div = np.zeros(acc.shape, dtype=np.int8)
    fast = _Fast(act)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for j, L in enumerate(ds_):
            a, lo, dv = _train_depth(fast, w, sb2, L, width, X, y, steps, batch_size, lr, seed)
            acc[:, j], loss[:, j], div[:, j] = a, lo, dv
            if progress is not None:
                progress(L)
    res = [analyze(act, s, sb2, depth_constant=depth_constant) for s in w]
    xi_c = np.array([r.xi_c for r in res])

    def at(long_name, units="1", **extra):
        return {"long_name": long_name, "units": units, **extra}

    ds = xr.Dataset(
        {
            "accuracy": (("sw2", "depth"), acc, at("training accuracy after the SGD budget")),
            "loss": (("sw2", "depth"), loss, at("training cross-entropy after the SGD budget",
                                                "nats")),
            "diverged": (("sw2", "depth"), div,
                         at("training diverged (non-finite loss)", flag_values=np.array([0, 1], np.int8),
                            flag_meanings="no yes")),
            "xi_c": (("sw2",), xi_c, at("correlation depth scale xi_c (mean field)", "layers")),
            "chi1": (("sw2",), np.array([r.chi1 for r in res]), at("chi_1 (mean field)")),
            "max_depth": (("sw2",), depth_constant * xi_c,
                          at(f"predicted trainable depth {depth_constant:g} xi_c", "layers")),
        },
        coords={"sw2": ("sw2", w, at("weight variance sigma_w^2")),
                "depth": ("depth", np.array(ds_), at("number of hidden layers L", "layers"))},
        attrs={
            "title": f"trainability on digits: {act.name}",
            "activation": act.name, "activation_formula": act.formula, "sb2": sb2,
            "width": width, "steps": steps, "batch_size": batch_size, "learning_rate": lr,
            "optimizer": "SGD, constant learning rate, softmax cross-entropy",
            "data": f"sklearn.datasets.load_digits ({len(y)} samples), standardized, |x|^2/d = 1",
            "seed": seed, "chance_accuracy": CHANCE, "depth_constant": depth_constant,
            "meanfield_version": __version__,
            "conventions": "docs/theory.md: sw2, sb2 are variances; W ~ N(0, sw2/fan_in), "
                           "standard parameterization",
            "reference": "Schoenholz, Gilmer, Ganguli, Sohl-Dickstein (2017), Deep information "
                         "propagation, ICLR",
        },
    )
    for k, v in act.parameters.items():
        ds.attrs[f"activation_{k}"] = v
    return ds


def fit_depth_constant(ds, threshold=None) -> xr.Dataset:
    """The trainable depth per sw2 and the constant C in L_max = C xi_c.

    The boundary L_b(sw2) is where the training accuracy first falls below ``threshold``
    going deeper (linear interpolation in L between the last depth above and the first
    below).  Default threshold: midway between chance (0.1) and the best accuracy of the
    grid.  sw2 values whose accuracy never falls below it (boundary beyond the deepest
    network) or is below it already at the shallowest depth are censored and left out of
    the fit.  C is fitted in log space, ``log C = mean(log L_b - log xi_c)``, since the
    boundary's scatter is multiplicative; the geometric spread exp(std) is reported too.

    Returns
    -------
    xarray.Dataset
        ``boundary_depth`` and ``ratio`` = L_b/xi_c over sw2 (NaN when censored); scalars
        ``constant``, ``constant_spread`` (geometric standard deviation of the ratio),
        ``n_fitted`` and ``threshold``.
    """
    acc = ds.accuracy.transpose("sw2", "depth").values
    depths = ds.depth.values.astype(float)
    order = np.argsort(depths)
    depths, acc = depths[order], acc[:, order]
    if threshold is None:
        threshold = 0.5 * (CHANCE + float(np.nanmax(acc)))
    threshold = V.scalar("threshold", threshold, minimum=0.0, maximum=1.0)
    bd = np.full(acc.shape[0], np.nan)
    for i, a in enumerate(acc):
        below = np.nonzero(~(a >= threshold))[0]
        if len(below) == 0 or below[0] == 0:
            continue
        k = below[0]
        a0, a1 = a[k - 1], a[k]
        f = (a0 - threshold) / (a0 - a1) if np.isfinite(a1) and a0 != a1 else 1.0
        bd[i] = depths[k - 1] + f * (depths[k] - depths[k - 1])
    xi = ds.xi_c.values
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = bd / xi
    ok = np.isfinite(ratio) & (ratio > 0)
    if ok.any():
        lr_ = np.log(ratio[ok])
        C = float(np.exp(lr_.mean()))
        spread = float(np.exp(lr_.std(ddof=1))) if ok.sum() > 1 else math.nan
    else:
        C = spread = math.nan
    return xr.Dataset(
        {
            "boundary_depth": (("sw2",), bd, {"long_name": "depth where training accuracy falls "
                                              "below the threshold", "units": "layers"}),
            "ratio": (("sw2",), ratio, {"long_name": "boundary depth / xi_c", "units": "1"}),
            "constant": ((), C, {"long_name": "fitted C in L_max = C xi_c (geometric mean of "
                                 "the ratio)", "units": "1", "predicted": PREDICTED_CONSTANT}),
            "constant_spread": ((), spread, {"long_name": "geometric standard deviation of the "
                                             "ratio", "units": "1"}),
            "n_fitted": ((), int(ok.sum()), {"long_name": "sw2 values in the fit", "units": "1"}),
            "threshold": ((), threshold, {"long_name": "accuracy threshold", "units": "1"}),
        },
        coords={"sw2": ds.sw2},
    )


def with_fit(ds, fit) -> xr.Dataset:
    """A copy of the experiment ``ds`` carrying its fit: ``boundary_depth`` over sw2 and the
    attributes ``fitted_depth_constant``, ``fitted_depth_constant_spread``, ``fit_threshold``
    (what is stored to disk, so the file explains its own result)."""
    out = ds.copy()
    out["boundary_depth"] = fit.boundary_depth
    out.attrs["fitted_depth_constant"] = float(fit.constant)
    out.attrs["fitted_depth_constant_spread"] = float(fit.constant_spread)
    out.attrs["fit_threshold"] = float(fit.threshold)
    return out
