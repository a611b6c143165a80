"""The generalization phase diagram: test accuracy of the infinite-width NNGP and NTK
predictors over (sw2, depth), beside the depth scale xi_c (Xiao, Pennington and Schoenholz 2020).

Data: scikit-learn's digits (:func:`meanfield.trainability.digits_data`: standardized pixels,
|x|^2/64 = 1), a seeded random split into ``n_train`` training and ``n_test`` test images,
targets one-hot minus 1/10 (mean zero over the classes, as in Lee et al. 2018).  For every
sw2 the kernel recursion runs once through all layers (:func:`meanfield.ntk.prediction.predictions`)
and the predictors trained to convergence (t = inf, docs/theory.md "Infinite-width
predictions") are scored at the requested depths: accuracy = fraction of test images whose
largest predicted output is their class.

A depth whose training kernel is numerically singular (lambda_min <= n eps lambda_max) has no
prediction at float64: its accuracy is NaN, flagged in ``status``, not counted as chance.
"Chance" is 1/10 plus three binomial standard deviations of an accuracy measured on n_test
images, sqrt(0.1 * 0.9 / n_test): a predictor below that line is indistinguishable from a guess.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .._version import __version__
from ..core import validate as V
from ..core.activation import activation_attrs, get_activation
from ..core.analysis import analyze
from ..core.critical import critical_sw2
from ..core.vocabulary import DEPTH_CONSTANT, KernelStatus, described, flag_attrs
from ..ntk.depths import select_depths
from ..ntk.prediction import PREDICTORS, predictions
from .trainability import N_CLASSES, _evaluate, _Fast, _init, digits_data, sgd

__all__ = ["generalization", "chance_depths", "digits_split", "finite_network", "CHANCE",
           "chance_threshold"]

CHANCE = 1.0 / N_CLASSES
# An accuracy within this many binomial standard deviations of CHANCE counts as chance.
CHANCE_SIGMAS = 3.0
DEFAULT_DEPTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def chance_threshold(n_test):
    """1/10 + 3 sqrt(0.1 * 0.9 / n_test): the largest accuracy a guess plausibly reaches."""
    return CHANCE + CHANCE_SIGMAS * math.sqrt(CHANCE * (1.0 - CHANCE) / n_test)


def digits_split(n_train, n_test, seed=0):
    """A seeded random train/test split of digits: (X_train, Y_train, X_test, labels_test,
    labels_train), Y one-hot minus 1/10."""
    X, y = digits_data()
    n_train = V.integer("n_train", n_train, N_CLASSES)
    n_test = V.integer("n_test", n_test, 1)
    if n_train + n_test > len(y):
        raise ValueError(f"n_train + n_test must be <= {len(y)} (the digits data set), got "
                         f"{n_train + n_test}")
    perm = np.random.default_rng(V.integer("seed", seed, 0)).permutation(len(y))
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    Y = np.eye(N_CLASSES)[y] - CHANCE
    return X[tr], Y[tr], X[te], y[te], y[tr]


def generalization(activation="tanh", sw2=np.linspace(0.8, 4.0, 9), sb2=0.05, *,
                   depths=DEFAULT_DEPTHS, n_train=500, n_test=500, seed=0, diag_reg=0.0,
                   kernels=PREDICTORS, depth_constant=DEPTH_CONSTANT, include_critical=True,
                   progress=None) -> xr.Dataset:
    """Test accuracy of the NNGP and NTK predictors on digits over (sw2, depth).

    Parameters
    ----------
    activation : str or Activation
    sw2 : array_like
        Weight variances (>= 0).  With ``include_critical`` the critical sw2 at this sb2
        (:func:`meanfield.critical_sw2`) is added when it exists.
    sb2 : float
        Bias variance.
    depths : list of int
        Depths at which the predictors are scored (the recursion runs through all layers
        up to the deepest).
    n_train, n_test, seed
        The split of digits (1797 images).
    diag_reg : float
        Ridge of the solve, relative to the mean diagonal (default 0: none).
    kernels : tuple of {"nngp", "ntk"}
    depth_constant : float
        C of the trainable depth C xi_c drawn beside xi_c (default 6).
    progress : callable, optional
        Called with (i, n_sw2) after each sw2.

    Returns
    -------
    xarray.Dataset
        ``accuracy`` and ``status`` over (kernel, sw2, depth); ``condition_number`` of the
        training kernel; over sw2 the mean-field ``xi_c``, ``chi1``, ``phase`` (from
        :func:`meanfield.analyze` at the data's q^1 = sw2 + sb2) and the measured
        ``chance_depth`` / ``singular_depth`` (kernel, sw2): the first scored depth at which
        the accuracy is at chance, and the depth from which the kernel stays singular
        (NaN if none).
    """
    act = get_activation(activation)
    sb2 = V.variance("sb2", sb2)
    w = V.variance_array("sw2", sw2)
    crit = math.nan
    if include_critical:
        crit = critical_sw2(act, sb2)
        if math.isfinite(crit):
            w = np.union1d(w, [crit])
    w = np.unique(w)
    keep = select_depths(depths, int(np.max(np.asarray(depths))) if np.size(depths) else 1)
    kinds = [kernels] if isinstance(kernels, str) else list(kernels)
    Xtr, Ytr, Xte, yte, _ = digits_split(n_train, n_test, seed)
    acc = np.full((len(kinds), w.size, keep.size), np.nan)
    status = np.zeros((len(kinds), w.size, keep.size), dtype=np.int8)
    kappa = np.full((len(kinds), w.size, keep.size), np.nan)
    for i, s in enumerate(w):
        out = predictions(Xtr, Ytr, Xte, act, s, sb2, int(keep[-1]), kinds, None, diag_reg, keep)
        for k, kind in enumerate(kinds):
            ds = out[kind]
            pred = ds.prediction.values  # (depth, test, class)
            hit = np.argmax(np.nan_to_num(pred), axis=-1) == yte[None, :]
            a = np.mean(hit, axis=-1)
            a[np.any(np.isnan(pred), axis=(1, 2))] = np.nan
            acc[k, i], status[k, i], kappa[k, i] = a, ds.status.values, ds.condition_number.values
        if progress is not None:
            progress(i + 1, w.size)
    # q^1 = sw2 |x|^2/d + sb2 = sw2 + sb2 on these inputs, the start of the length map.
    res = [analyze(act, s, sb2, q0=s + sb2, depth_constant=depth_constant) for s in w]
    thr = chance_threshold(n_test)
    chance_d, sing_d = chance_depths(acc, status, keep, thr)
    dims = ("kernel", "sw2", "depth")
    ds = xr.Dataset(
        {
            "accuracy": (dims, acc, described("test accuracy of the predictor (t = inf)")),
            "status": (dims, status, {**flag_attrs(KernelStatus, "training kernel status"),
                                      "units": "1"}),
            "condition_number": (dims, kappa, described(
                "condition number of the training kernel (NNGP or NTK)")),
            "chance_depth": (("kernel", "sw2"), chance_d, described(
                "first scored depth with accuracy at chance (<= chance_threshold)", "layers")),
            "singular_depth": (("kernel", "sw2"), sing_d, described(
                "depth from which the training kernel stays numerically singular", "layers")),
            "xi_c": (("sw2",), np.array([r.xi_c for r in res]), described(
                "correlation depth scale xi_c (mean field)", "layers")),
            "max_depth": (("sw2",), np.array([depth_constant * r.xi_c for r in res]), described(
                f"{depth_constant:g} xi_c (mean field)", "layers")),
            "chi1": (("sw2",), np.array([r.chi1 for r in res]), described("chi_1 at q*")),
            "phase": (("sw2",), np.array([r.phase for r in res]), described("mean-field phase")),
        },
        coords={
            "kernel": ("kernel", np.array(kinds), described("predictor")),
            "sw2": ("sw2", w, described("weight variance sigma_w^2")),
            "depth": ("depth", keep, described("depth l (layers of pre-activations)", "layers")),
        },
        attrs={
            "title": f"generalization phase diagram: {act.name} on digits",
            **activation_attrs(act),
            "sb2": sb2,
            "critical_sw2": crit,
            "n_train": n_train,
            "n_test": n_test,
            "seed": seed,
            "diag_reg": diag_reg,
            "chance": CHANCE,
            "chance_threshold": thr,
            "depth_constant": depth_constant,
            "targets": "one-hot minus 1/10",
            "data": "scikit-learn digits, standardized pixels, |x|^2/64 = 1",
            "meanfield_version": __version__,
        },
    )
    return ds


def chance_depths(acc, status, depths, threshold):
    """First depth (along the last axis) whose accuracy is <= threshold, and the depth from
    which the training kernel stays singular down to the deepest scored depth (a singular
    depth 1 followed by regular ones, the rank-deficient linear kernel of n > d + 1 inputs,
    does not count); NaN where none."""
    at_chance = acc <= threshold
    first = np.where(at_chance.any(-1), depths[np.argmax(at_chance, axis=-1)], -1).astype(float)
    ok = status == int(KernelStatus.OK)
    # index of the last regular depth + 1; the tail after it is singular
    last_ok = np.where(ok.any(-1), ok.shape[-1] - 1 - np.argmax(ok[..., ::-1], axis=-1), -1)
    start = last_ok + 1
    sing = np.where(start < ok.shape[-1], depths[np.minimum(start, ok.shape[-1] - 1)], -1)
    sing = sing.astype(float)
    first[first < 0] = np.nan
    sing[sing < 0] = np.nan
    return first, sing


def finite_network(activation, sw2, sb2, depth, *, width=128, steps=2000, batch_size=32,
                   learning_rate=0.01, n_train=500, n_test=500, seed=0):
    """Test accuracy of finite networks trained by SGD on the split of :func:`digits_split`.

    The networks of :mod:`meanfield.experiments.trainability` (``depth`` hidden layers of
    ``width`` units and a linear readout to 10 outputs, W ~ N(0, sw2/fan_in), b ~ N(0, sb2),
    standard parameterization; all sw2 trained together as a batch), here trained with
    minibatch SGD on the mean squared error (1/(2B)) sum (f - y)^2 against the same targets
    as the kernel predictors (one-hot minus 1/10), so the two are compared on one loss.  A
    network whose outputs overflow is frozen and scores its (wrong) non-finite outputs.

    Returns
    -------
    ndarray
        Test accuracy per sw2.
    """
    act = _Fast(get_activation(activation))
    w = V.variance_array("sw2", sw2)
    depth = V.depth(depth)
    Xtr, Ytr, Xte, yte, _ = digits_split(n_train, n_test, seed)
    rng = np.random.default_rng(V.integer("seed", seed, 0))
    Ws, bs = _init(rng, w, V.variance("sb2", sb2), [Xtr.shape[1]] + [width] * depth + [N_CLASSES])

    def mse_grad(out, t):  # d loss / d output of (1/(2B)) sum (f - y)^2
        return (out - t) / batch_size

    sgd(act, Ws, bs, Xtr, Ytr, mse_grad, V.integer("steps", steps, 0), batch_size, learning_rate, rng)
    acc, _ = _evaluate(act, Ws, bs, Xte, yte)
    return acc
