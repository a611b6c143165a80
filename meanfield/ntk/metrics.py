"""Trainability and generalization metrics of the NTK per depth (Xiao, Pennington and
Schoenholz 2020; docs/theory.md, "Kernels on a data set")."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import xarray as xr

from ..core import validate as V
from ..core.analysis import analyze
from ..core.vocabulary import KernelStatus, attrs as var_attrs, described, flag_attrs
from .conv import metric_layers
from .dataset import global_attrs, matrix
from .depths import select_depths
from .recursion import setup

__all__ = ["ntk_metrics"]


def labels(y, n):
    """Training targets: 1-D or 2-D, finite, with one row per training sample."""
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


STATUS_OK = int(KernelStatus.OK)
STATUS_SINGULAR = int(KernelStatus.SINGULAR)
STATUS_NONFINITE = int(KernelStatus.NONFINITE)
STATUS_NOT_PD = int(KernelStatus.NOT_PD)


def train_test(act, sw2, sb2, X_train, y_train, X_test):
    """Validated labels Y (n[, k]), n, m and the recursion over the blocks train x train
    (symmetric) and test x train, at layer 1."""
    Xtr = matrix("X_train", X_train)
    Xte = matrix("X_test", X_test)
    if Xte.shape[1] != Xtr.shape[1]:
        raise ValueError(f"X_test has {Xte.shape[1]} features but X_train has {Xtr.shape[1]}")
    Y = labels(y_train, Xtr.shape[0])
    n, m = Xtr.shape[0], Xte.shape[0]
    rec = setup(act, sw2, sb2, np.vstack([Xtr, Xte]),
                [(np.arange(n), np.arange(n), True), (np.arange(n, n + m), np.arange(n), False)])
    return Y, n, m, rec


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


# A label sum (weighted by the kernel's inverse diagonal) below this fraction of its
# absolute counterpart counts as zero: rounding left by centring the labels.
MEAN_TOL = 1e-12
# c* this close to 0 leaves no constant mode in the kernel (odd phi at sb2 = 0).
C_STAR_TOL = 1e-12


def _chaotic_rate(res, Y, diag):
    """The decay rate of the mean predictor that dominates at depth, for these labels.

    Deep in the chaotic phase Theta^l on the train set is alpha_l D + beta 1 1^T plus a part
    decaying like chi_c^l: the diagonal grows like chi_1^l (D: its relative profile, which
    stays uneven when the inputs' norms differ) while the off-diagonal tends to the
    constant q* c* / (1 - chi_c) (Sigma_ij -> q* c* each layer).  The predictor's
    component along 1 is then beta 1 (1^T D^-1 Y) / alpha_l ~ chi_1^-l, and the rest
    decays like (chi_c/chi_1)^l.  Unless 1^T D^-1 Y vanishes (labels of mean zero on
    inputs of one norm) or c* = 0, the first, slower, one wins.
    """
    weighted = np.abs(np.sum(Y / diag.reshape((-1,) + (1,) * (Y.ndim - 1)), axis=0))
    scale = np.sum(np.abs(Y) / diag.reshape((-1,) + (1,) * (Y.ndim - 1)), axis=0)
    if np.any(weighted > MEAN_TOL * scale) and abs(res.c_star) > C_STAR_TOL:
        return 1.0 / res.chi1
    return res.chi_c / res.chi1


def ntk_metrics(X_train, y_train, X_test, activation, sw2, sb2, depth, depths=None,
                architecture=None) -> xr.Dataset:
    """Trainability and generalization metrics of the NTK at every depth 1..L.

    For each depth l, with Theta^l from :func:`kernels` (docs/theory.md; Xiao, Pennington and
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
      needs no limit), to compare with ``theory_decay_rate``.  Chaotic phase: the
      predictor's component along the labels' mean decays like chi_1^-l (the kernel's
      off-diagonal tends to a constant while its diagonal grows like chi_1^l;
      ``theory_decay_rate_mean``), the rest like (chi_c*/chi_1)^l
      (``theory_decay_rate_centred``); ``theory_decay_rate`` is the one that dominates for
      the given labels.  Ordered and critical: 1 (polynomial, not exponential).  For the O(l r^l) law of the
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
    depths : int or list of int, optional
        Evaluate and keep only these depths (default all 1..depth); the recursion still
        runs through every layer.  Between kept depths l' < l the ratios become per-layer
        rates: ``condition_ratio`` = (kappa^l / kappa^l')^(1/(l - l')), ``decay_rate``
        the same power of the difference ratio (NaN unless both neighbours are equally
        spaced), and the ordered-phase limit extrapolates over that spacing.
    architecture : None or Conv, optional
        As in :func:`kernels`: ``meanfield.Conv(...)`` takes images (n, H, W, C) and uses the
        CNTK of docs/theory.md, "Convolutional networks"; chi_1, chi_c and the phase are the
        fully connected ones (the CNN's pixel diagonal follows the same length map), started at
        the mean over training images and pixels of Sigma^1_pp(x, x).

    Returns
    -------
    xarray.Dataset
        Over ``depth`` (and ``test``[, ``output``] for the prediction).  Memory: a few
        (n + m) x n arrays, whatever L.
    """
    if architecture is not None:  # convolutional networks: meanfield/ntk/conv.py
        act, sw2, sb2, keep, n, m, blocks, q1, rec = metric_layers(
            X_train, X_test, activation, sw2, sb2, depth, architecture, depths)
        Y = labels(y_train, n)
        layers = zip(keep.tolist(), blocks["train"][1], blocks["cross"][1])
    else:
        if np.ndim(X_train) == 4:
            raise ValueError("X_train is four-dimensional (images?): pass "
                             "architecture=meanfield.Conv(...) for a convolutional network")
        act, sw2, sb2, L = V.network(activation, sw2, sb2, depth)
        keep = select_depths(depths, L)
        Y, n, m, rec = train_test(act, sw2, sb2, X_train, y_train, X_test)
        layers = ((l, rec.blocks[0].th, rec.blocks[1].th) for l in rec.iterate(int(keep[-1])))
        q1 = float(np.mean(rec.qz))
    slot = {int(d): k for k, d in enumerate(keep)}
    L = keep.size  # from here on, arrays run over the kept depths
    gap = np.diff(keep).astype(np.float64)  # gap[k] = keep[k + 1] - keep[k]
    lam_max = np.full(L, np.nan)
    lam_min = np.full(L, np.nan)
    status = np.zeros(L, dtype=np.int8)
    pred = np.full((L, m) + Y.shape[1:], np.nan)
    tiny = n * np.finfo(np.float64).eps
    diag = np.ones(n)  # Theta^l's diagonal at the deepest finite depth
    for l, Ttr, Tte in layers:
        if l not in slot:
            continue
        k = slot[l]
        if np.all(np.isfinite(np.diagonal(Ttr))) and np.all(np.diagonal(Ttr) > 0):
            diag = np.diagonal(Ttr).copy()
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
        cond_ratio[1:] = (kappa[1:] / kappa[:-1]) ** (1.0 / gap)
        diff = np.full(L, np.nan)  # diff[k] = |P^{k+1} - P^k|
        for k in range(L - 1):
            if ok[k] and ok[k + 1]:
                diff[k] = _rms(pred[k + 1] - pred[k])
        rate = np.full(L, np.nan)
        rate[1:-1] = (diff[1:-1] / diff[:-2]) ** (1.0 / gap[1:])
        rate[1:-1][gap[1:] != gap[:-1]] = np.nan  # unequal spacing: no per-layer rate

    res = analyze(act, sw2, sb2, q0=q1)
    rate_mean = 1.0 / res.chi1 if res.phase == "chaotic" else math.nan
    rate_centred = res.chi_c / res.chi1 if res.phase == "chaotic" else math.nan
    if res.phase == "ordered":
        theory_rate, theory_cond = 1.0, 1.0 / res.chi1
    elif res.phase == "chaotic":
        theory_rate, theory_cond = _chaotic_rate(res, Y, diag), 1.0
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
            rg = r ** gap[kL - 1]  # the rate over one step between kept depths
            limit = pred[kL] + (pred[kL] - pred[kL - 1]) * rg / (1.0 - rg)
            limit_note = (f"geometric extrapolation from depths {keep[kL - 1]} and {keep[kL]} "
                          f"with rate {r:.6g}")
        else:
            limit_note = (f"not extrapolated: fitted rate {r:.6g} at depth {keep[kL - 1]} is not in "
                          f"(0, 1)")
    dist = np.array([_rms(pred[k] - limit) if ok[k] else np.nan for k in range(L)])

    pdims = ("depth", "test") + (("output",) if Y.ndim == 2 else ())
    coords = {"depth": ("depth", keep, var_attrs("depth")),
              "test": ("test", np.arange(m), described("row of X_test"))}
    if Y.ndim == 2:
        coords["output"] = ("output", np.arange(Y.shape[1]), described("column of y_train"))
    data = {
        "lambda_max": ("depth", lam_max, described("largest eigenvalue of Theta^l on the train set")),
        "lambda_min": ("depth", lam_min, described("smallest eigenvalue of Theta^l on the train set")),
        "condition_number": ("depth", kappa, described("condition number lambda_max / lambda_min")),
        "condition_ratio": ("depth", cond_ratio, described("kappa^l / kappa^(l-1)")),
        "singular": ("depth", ~ok, described("Theta^l on the train set is unusable at this depth "
                                          "(reason in status)")),
        "status": ("depth", status, {**flag_attrs(KernelStatus, "kernel status per depth"),
                                      "units": "1"}),
        "prediction": (pdims, pred, described("NTK mean predictor Theta_test,train Theta_train^-1 Y",
                                           "units of y_train")),
        "prediction_limit": (pdims[1:], limit, described("infinite-depth limit of the mean predictor",
                                                      "units of y_train", estimate=limit_note)),
        "prediction_distance": ("depth", dist, described("RMS distance of the prediction to its "
                                                      "infinite-depth limit", "units of y_train")),
        "decay_rate": ("depth", rate, described("fitted local decay rate |P^(l+1)-P^l| / |P^l-P^(l-1)|")),
        "theory_decay_rate": ((), theory_rate, described(
            "predicted decay rate of the mean predictor for these labels: the slower of "
            "theory_decay_rate_mean (unless sum_i y_i / Theta_ii = 0 or c* = 0) and "
            "theory_decay_rate_centred (chaotic); 1 (ordered, critical: not exponential)")),
        "theory_decay_rate_mean": ((), rate_mean, described(
            "predicted decay rate of the predictor's label-mean component: 1/chi_1 (chaotic)")),
        "theory_decay_rate_centred": ((), rate_centred, described(
            "predicted decay rate of the predictor with mean-zero labels: chi_c*/chi_1 (chaotic)")),
        "theory_condition_ratio": ((), theory_cond, described(
            "predicted kappa^l / kappa^(l-1): 1/chi_1 (ordered), 1 otherwise")),
        "chi1": ((), res.chi1, described("chi_1 at the fixed point q*")),
        "chi_c": ((), res.chi_c, described("chi_c at the stable correlation fixed point c*")),
    }
    attrs = global_attrs(act, sw2, sb2, rec, f"NTK trainability and generalization metrics: {act.name}")
    if architecture is not None:
        attrs.pop("shared_norm", None)
        attrs.update(architecture.attrs)
    attrs.update({"phase": res.phase, "q_star": res.q_star, "c_star": res.c_star,
                  "analyze_status": res.status, "singular_threshold": "lambda_min <= n * eps * lambda_max"})
    return xr.Dataset(data, coords=coords, attrs=attrs)
