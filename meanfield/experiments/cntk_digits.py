"""The seeds' comparison, small: CNN-GP and CNTK (flatten and GAP readouts) by depth on
scikit-learn's digits, beside the fully connected NNGP / NTK and a trained finite CNN at the
same initialization (Arora et al. 2019, seed 004; Novak et al. / Xiao et al. 2018).

Data: the split of :func:`meanfield.experiments.generalization.digits_split` (pixels
standardized, |x|^2/64 = 1, targets one-hot minus 1/10), the 64 pixels as 8 x 8 x 1 images.
Kernels: 3 x 3 filters, circular padding, stride 1, NTK parameterization; the predictors of
:func:`meanfield.predict` at t = inf (NNGP posterior, NTK trained to convergence).  Accuracy
is the fraction of test images whose largest predicted output is their class.

Finite CNN: :class:`meanfield.experiments.finite_cnn.FiniteCNN` (same activation, sw2, sb2,
readout, NTK parameterization) trained by full-batch gradient descent on the MSE of
:func:`meanfield.predict`'s convention for ``steps`` steps with learning rate
eta = lr_fraction N_Y / lambda_max(Theta^l) (N_Y = number of targets, Theta^l the CNTK of
that readout and depth on the training images): gradient descent on the infinitely wide
network is stable for eta < 2 N_Y / lambda_max.  Beside it the CNTK predictor at the same
time t = eta steps,
the mean over initializations of what the trained network tends to as its width grows, and
the expected accuracy of one infinitely wide network at that time (:func:`one_network_accuracy`:
one network also carries the randomness of its initial function, which the mean averages
away).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .._version import __version__
from ..core import validate as V
from ..core.activation import activation_attrs, get_activation
from ..core.vocabulary import described
from ..ntk.conv import Conv
from ..ntk.dataset import kernels
from ..ntk.depths import select_depths
from ..ntk.prediction import predictions
from .finite_cnn import FiniteCNN
from .generalization import CHANCE, chance_threshold, digits_split
from .trainability import N_CLASSES

__all__ = ["digits_images", "cntk_digits", "one_network_accuracy", "ARCHITECTURES",
           "PREDICTORS"]

IMAGE = (8, 8, 1)
ARCHITECTURES = ("fc", "conv flatten", "conv gap")
PREDICTORS = ("nngp", "ntk", "ntk at t", "one net at t", "finite")
# Draws per test image of the Monte Carlo estimate of one infinitely wide network's accuracy
# (standard error <= 0.5 / sqrt(2000) ~ 0.011 per image, far less over the test set).
ONE_NET_DRAWS = 2000


def digits_images(n_train, n_test, seed=0):
    """:func:`digits_split` with the inputs as (n, 8, 8, 1) images: (X_train, Y_train, X_test,
    labels_test)."""
    Xtr, Ytr, Xte, yte, _ = digits_split(n_train, n_test, seed)
    return Xtr.reshape((-1,) + IMAGE), Ytr, Xte.reshape((-1,) + IMAGE), yte


def _accuracy(pred, labels):
    """Fraction of rows whose argmax is the label; NaN if the prediction is not finite."""
    if not np.all(np.isfinite(pred)):
        return np.nan
    return float(np.mean(np.argmax(pred, axis=-1) == labels))


def one_network_accuracy(mean, var, labels, draws=ONE_NET_DRAWS, seed=0):
    """Expected test accuracy of *one* infinitely wide network trained for time t.

    Its outputs on a test image are independent Gaussians N(mean_c, var) (docs/theory.md,
    "Infinite-width predictions": the covariance is the same for every output), so the
    chance that the largest output is the label is estimated by ``draws`` seeded samples per
    image; the initial function's randomness that training has not yet removed shows here,
    where the mean predictor averages it away.  NaN if mean or var is not finite.
    """
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var))):
        return np.nan
    rng = np.random.default_rng(seed)
    sd = np.sqrt(np.maximum(var, 0.0))  # rounding can leave a variance of -1e-17
    hits = 0.0
    for i in range(mean.shape[0]):
        f = mean[i] + sd[i] * rng.standard_normal((draws, mean.shape[1]))
        hits += np.mean(np.argmax(f, axis=1) == labels[i])
    return hits / mean.shape[0]


def cntk_digits(activation="relu", sw2=2.0, sb2=0.0, depths=(1, 2, 3, 4, 6, 8), *,
                n_train=200, n_test=200, seed=0, filter_size=3, finite_depths=(1, 2, 4),
                width=32, steps=500, lr_fraction=0.5, progress=None) -> xr.Dataset:
    """Test accuracy on digits of the CNN-GP / CNTK per depth, the fully connected NNGP / NTK
    and a trained finite CNN.

    Parameters
    ----------
    activation : str or Activation
    sw2, sb2 : float
        Weight and bias *variances* (not standard deviations), shared by every model.
    depths : list of int
        Depths l at which the kernel predictors are scored (l layers of weights: l
        convolutions for GAP, l - 1 convolutions and a dense readout for flatten, l dense
        layers for the fully connected network).
    n_train, n_test, seed
        The split of digits.
    filter_size : int, odd
    finite_depths : list of int
        Depths (a subset of ``depths``) at which a finite CNN is trained; () for none.
    width : int
        Channels of the finite CNN's hidden layers.
    steps : int
        Full-batch gradient-descent steps of the finite CNN.
    lr_fraction : float in (0, 2)
        eta = lr_fraction N_Y / lambda_max(Theta^l of that readout on the training images).
    progress : callable, optional
        Called with a short text after each stage.

    Returns
    -------
    xarray.Dataset
        ``accuracy`` over (architecture, predictor, depth), NaN where not computed (the
        finite network and the predictor at time t exist only for ``finite_depths`` and the
        convolutional architectures); ``time`` and ``learning_rate`` of the finite training
        (architecture, depth); ``train_loss`` of the finite CNN after training (architecture, depth);
        ``condition_number`` of the NTK on the training images (architecture, depth).
    """
    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    keep = select_depths(depths, int(np.max(np.asarray(depths))) if np.size(depths) else 1)
    L = int(keep[-1])
    try:
        fin = (np.empty(0, dtype=np.int64) if np.size(finite_depths) == 0
               else select_depths(finite_depths, L))
    except ValueError as exc:
        raise ValueError(f"finite_depths: {exc}") from None
    missing = np.setdiff1d(fin, keep)
    if missing.size:
        raise ValueError(f"finite_depths must be among depths, got {int(missing[0])}")
    width = V.integer("width", width, 1)
    steps = V.integer("steps", steps, 0)
    lr_fraction = V.scalar("lr_fraction", lr_fraction, minimum=0.0, maximum=2.0)
    if not lr_fraction > 0.0:
        raise ValueError(f"lr_fraction must be in (0, 2), got {lr_fraction:g}")
    say = progress or (lambda text: None)
    Xtr, Ytr, Xte, yte = digits_images(n_train, n_test, seed)
    N_Y = float(Ytr.size)

    acc = np.full((len(ARCHITECTURES), len(PREDICTORS), keep.size), np.nan)
    kappa = np.full((len(ARCHITECTURES), keep.size), np.nan)
    loss = np.full((len(ARCHITECTURES), keep.size), np.nan)
    slot = {int(d): i for i, d in enumerate(keep)}

    # The learning rate of each finite network, from its own CNTK's largest eigenvalue on
    # the training images (only the finite depths are kept).
    eta = np.full((len(ARCHITECTURES), keep.size), np.nan)
    for a, readout in ((1, "flatten"), (2, "gap")):
        if fin.size:
            conv = Conv(filter_size, "circular", readout)
            Tf = kernels(Xtr, act, sw2, sb2, int(fin[-1]), architecture=conv,
                         depths=fin).ntk.values
            for l, T in zip(fin, Tf):
                eta[a, slot[int(l)]] = lr_fraction * N_Y / np.linalg.eigvalsh(T)[-1]
    times = eta * steps

    def score(a, out):
        for p, kind in enumerate(("nngp", "ntk")):
            ds = out[kind]
            pred = ds.prediction.values  # (depth, time, test, class)
            for i in range(keep.size):
                acc[a, p, i] = _accuracy(pred[i, 0], yte)
                if kind == "ntk":
                    kappa[a, i] = float(ds.condition_number.values[i])
                    if np.isfinite(times[a, i]):
                        t_i = int(np.flatnonzero(ds.time.values == times[a, i])[0])
                        acc[a, 2, i] = _accuracy(pred[i, t_i], yte)
                        acc[a, 3, i] = one_network_accuracy(pred[i, t_i],
                                                            ds.variance.values[i, t_i], yte)

    out = predictions(Xtr.reshape(n_train, -1), Ytr, Xte.reshape(n_test, -1), act, sw2, sb2, L,
                      t=[np.inf], depths=keep)
    score(0, out)
    say("fully connected NNGP / NTK")
    for a, readout in ((1, "flatten"), (2, "gap")):
        conv = Conv(filter_size, "circular", readout)
        # t = inf first (column 0 of the time axis), then the finite networks' times
        t_a = np.concatenate([[np.inf], np.unique(times[a][np.isfinite(times[a])])])
        out = predictions(Xtr, Ytr, Xte, act, sw2, sb2, L, t=t_a, depths=keep,
                          architecture=conv)
        score(a, out)
        say(f"CNN-GP / CNTK {readout}")
        for l in fin:
            i = slot[int(l)]
            net = FiniteCNN(act, sw2, sb2, int(l), width, IMAGE, N_CLASSES, filter_size,
                            readout, seed=seed)
            loss[a, i] = net.train(Xtr, Ytr, eta[a, i], steps)[-1]
            acc[a, 4, i] = _accuracy(net.forward(Xte)[0], yte)
            say(f"finite CNN {readout}, depth {int(l)}")

    dims = ("architecture", "predictor", "depth")
    return xr.Dataset(
        {
            "accuracy": (dims, acc, described(
                "test accuracy (argmax of the 10 outputs); nngp / ntk: t = inf; 'ntk at t': "
                "the CNTK mean predictor at the finite network's training time; 'one net at "
                "t': the expected accuracy of one infinitely wide network at that time; "
                "finite: one trained CNN")),
            "condition_number": (("architecture", "depth"), kappa, described(
                "condition number of the NTK on the training images")),
            "train_loss": (("architecture", "depth"), loss, described(
                "training loss (1/(2 N_Y)) sum (f - y)^2 of the finite CNN after training")),
            "learning_rate": (("architecture", "depth"), eta, described(
                "gradient-descent learning rate of the finite CNN: lr_fraction N_Y / "
                "lambda_max(its CNTK on the training images)")),
            "time": (("architecture", "depth"), times, described(
                "training time t = learning_rate x steps (meanfield.predict's units)")),
        },
        coords={
            "architecture": ("architecture", np.array(ARCHITECTURES), described(
                "fully connected, or 3 x 3 circular convolutions with a flatten / GAP readout")),
            "predictor": ("predictor", np.array(PREDICTORS), described("predictor")),
            "depth": ("depth", keep, described("depth l (layers of weights)", "layers")),
        },
        attrs={
            "title": f"CNN-GP / CNTK vs fully connected kernels and a finite CNN on digits: "
                     f"{act.name}",
            **activation_attrs(act),
            "sw2": sw2, "sb2": sb2, "filter_size": filter_size, "padding": "circular",
            "n_train": n_train, "n_test": n_test, "seed": seed, "width": width,
            "steps": steps, "lr_fraction": lr_fraction,
            "finite_training": "full-batch gradient descent on (1/(2 N_Y)) sum (f - y)^2, NTK "
                               "parameterization, weights and biases N(0, 1) with explicit "
                               "scales",
            "chance": CHANCE, "chance_threshold": chance_threshold(n_test),
            "targets": "one-hot minus 1/10",
            "data": "scikit-learn digits, standardized pixels, |x|^2/64 = 1, as 8 x 8 x 1 images",
            "meanfield_version": __version__,
        },
    )
