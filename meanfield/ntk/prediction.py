"""Predictions of infinitely wide networks: the NNGP posterior and the NTK ensemble trained by
gradient flow (docs/theory.md, "Infinite-width predictions").

With K = Sigma^l (NNGP) and Theta^l (NTK) of depth l, "t" the training inputs (n of them),
"*" the test inputs, Y the n x k targets, N = n k and the predictor's kernel G (G = Theta for
``kernel="ntk"``, G = K for ``kernel="nngp"``) regularised on the train set as
G_tt + diag_reg (tr G_tt / n) I::

    A_t        = G_*t G_tt^{-1} (I - exp(-G_tt t / N))               (A_inf = G_*t G_tt^{-1})
    mean_t     = A_t Y
    NTK:  cov_t = K_** + A_t K_tt A_t^T - A_t K_t* - K_*t A_t^T
    NNGP: cov_t = K_** - K_*t G_tt^{-1} (I - exp(-2 G_tt t / N)) K_t*

That is gradient flow with learning rate 1 on the loss (1/(2N)) sum (f(x_i)_c - y_ic)^2 from
the prior f_0 ~ GP(0, K): the network trained in the NTK regime (all layers), or only its
readout (NNGP; at t = inf the Gaussian-process posterior).  These are the conventions of
neural-tangents' ``predict.gradient_descent_mse_ensemble`` (same time unit, same relative
``diag_reg``).  The variance returned is the diagonal of cov_t, the same for every output.

Solves never form an inverse: t = None uses a Cholesky factorisation of G_tt (and its
eigenvalues for the condition number), finite t the eigendecomposition
G_tt = V diag(lambda) V^T with (1 - exp(-lambda tau)) / lambda evaluated by ``expm1``
(-> tau as lambda -> 0; negative rounding eigenvalues are clipped to 0).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import scipy.linalg
import xarray as xr

from ..core import validate as V
from ..core.gaussian.moments import pair
from ..core.vocabulary import KernelStatus, attrs as var_attrs, described, flag_attrs
from .dataset import global_attrs
from .depths import select_depths
from .conv import ConvMethod, conv_arrays, validated
from .metrics import labels, train_test

__all__ = ["predict", "predictions", "PREDICTORS"]

PREDICTORS = ("ntk", "nngp")
OK, SINGULAR, NONFINITE, NOT_PD = (int(KernelStatus.OK), int(KernelStatus.SINGULAR),
                                   int(KernelStatus.NONFINITE), int(KernelStatus.NOT_PD))
EPS = np.finfo(np.float64).eps


@nb.njit(cache=True)
def _length_step(act, sw2, sb2, q, out):
    """Length map per point, out_i = sw2 E phi(sqrt(q_i) z)^2 + sb2: the NNGP diagonal
    Sigma^{l+1}(x, x), computed by the routine the kernel's diagonals use."""
    for i in range(q.shape[0]):
        D, _ = pair(act, q[i], q[i], q[i], True)
        out[i] = sw2 * D + sb2


def _times(t):
    """None, or (a 1-D array of times >= 0, possibly inf; whether t was a scalar)."""
    if t is None:
        return None, True
    if isinstance(t, (bool, np.bool_)):
        raise ValueError(f"t must be None or non-negative times, got {t!r}")
    try:
        arr = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"t must be None or non-negative times, got {t!r}") from None
    scalar = arr.ndim == 0
    arr = np.atleast_1d(arr)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"t must be a scalar or a non-empty 1-D array, got shape {arr.shape}")
    if np.any(np.isnan(arr)) or np.any(arr < 0):
        raise ValueError("t must be >= 0 (inf allowed: trained to convergence), got "
                         f"{float(arr[np.isnan(arr) | (arr < 0)][0]):g}")
    return arr, scalar


def _flow(lam, tau):
    """(1 - exp(-lam tau)) / lam elementwise: tau at lam = 0, 1/lam at tau = inf."""
    if math.isinf(tau):
        with np.errstate(divide="ignore"):
            return 1.0 / lam
    out = np.full_like(lam, tau)
    pos = lam > 0
    out[pos] = -np.expm1(-lam[pos] * tau) / lam[pos]
    return out


def _rowdot(A, B):
    """sum_j A_ij B_ij, without forming A B^T."""
    return np.einsum("ij,ij->i", A, B)


class _Depth:
    """Mean, variance and conditioning of one predictor at one depth."""

    def __init__(self, kind, Gtt, Gst, Ktt, Kst, kss, Y, times, diag_reg, norm):
        n, m = Gst.shape[1], Gst.shape[0]
        T = 1 if times is None else times.size
        self.mean = np.full((T, m) + Y.shape[1:], np.nan)
        self.var = np.full((T, m), np.nan)
        self.lam_min = self.lam_max = math.nan
        self.status = OK
        if not all(np.all(np.isfinite(a)) for a in (Gtt, Gst, Ktt, Kst, kss)):
            self.status = NONFINITE
            return
        # A new array: G_tt itself belongs to the recursion and must not change.
        G = Gtt + (diag_reg * np.trace(Gtt) / n) * np.eye(n)
        tiny = n * EPS
        if times is None:
            ev = scipy.linalg.eigh(G, eigvals_only=True, check_finite=False)
            self.lam_min, self.lam_max = ev[0], ev[-1]
            if not ev[0] > tiny * ev[-1]:
                self.status = SINGULAR
                return
            try:
                cf = scipy.linalg.cho_factor(G, lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                self.status = NOT_PD
                return
            W = scipy.linalg.cho_solve(cf, Gst.T, check_finite=False)  # G^-1 G_t*, n x m
            self.mean[0] = W.T @ Y
            if kind == "nngp":  # G_*t = K_*t: the regulariser only touches the train diagonal
                self.var[0] = kss - _rowdot(Kst, W.T)
            else:
                A = W.T
                self.var[0] = kss + _rowdot(A @ Ktt, A) - 2.0 * _rowdot(A, Kst)
            return
        lam, Vec = scipy.linalg.eigh(G, check_finite=False)
        self.lam_min, self.lam_max = lam[0], lam[-1]
        singular = not lam[0] > tiny * lam[-1]
        if singular:
            self.status = SINGULAR
        noise = tiny * abs(lam[-1])
        lam = np.maximum(lam, 0.0)
        P = Gst @ Vec  # G_*t V
        Yv = Vec.T @ Y
        if kind == "ntk":
            Kv = Vec.T @ Ktt @ Vec
            R = Kst @ Vec  # K_*t V
        for it, t in enumerate(times):
            tau = t / norm
            # A singular G_tt: eigenvalues at rounding level are noise.  Gradient flow leaves
            # them unresolved while tau * noise < 1 (then (1 - e^{-lam tau})/lam ~ tau,
            # whatever their digits); after that the answer would be that noise, so NaN.
            if singular and not tau * noise < 1.0:
                continue
            f = _flow(lam, tau)
            fy = f[:, None] * Yv if Y.ndim == 2 else f * Yv
            self.mean[it] = P @ fy
            if kind == "nngp":
                self.var[it] = kss - (P * P) @ _flow(lam, 2.0 * tau)
            else:
                Q = P * f  # A_t V
                self.var[it] = kss + _rowdot(Q @ Kv, Q) - 2.0 * _rowdot(Q, R)


def predictions(X_train, y_train, X_test, activation, sw2, sb2, depth, kernels=PREDICTORS,
                t=None, diag_reg=0.0, depths=None, architecture=None):
    """:func:`predict` for several predictors from one kernel recursion.

    Returns a dict ``{kernel: Dataset}`` (each as :func:`predict` returns it).
    """
    if architecture is not None:  # convolutional: validate the images first, as below
        act, sw2, sb2, L, Xtr, Xte = validated(X_train, X_test, activation, sw2, sb2, depth,
                                               architecture, names=("X_train", "X_test"))
    else:
        if np.ndim(X_train) == 4:
            raise ValueError("X_train is four-dimensional (images?): pass "
                             "architecture=meanfield.Conv(...) for a convolutional network")
        act, sw2, sb2, L = V.network(activation, sw2, sb2, depth)
    kinds = [kernels] if isinstance(kernels, str) else list(kernels)
    for k in kinds:
        if k not in PREDICTORS:
            raise ValueError(f"kernel must be one of {', '.join(PREDICTORS)}, got {k!r}")
    times, scalar_t = _times(t)
    diag_reg = V.scalar("diag_reg", diag_reg, minimum=0.0)
    keep = select_depths(depths, L)
    if architecture is not None:
        Y = labels(y_train, Xtr.shape[0])
        m = Xte.shape[0]
        layers, rec = _conv_layers(act, sw2, sb2, Xtr, Xte, keep, architecture)
    else:
        Y, n, m, rec = train_test(act, sw2, sb2, X_train, y_train, X_test)
        layers = _fc_layers(act, sw2, sb2, rec, n, keep)
    norm = float(Y.size)
    T = 1 if times is None else times.size
    out = {k: {"mean": np.full((keep.size, T, m) + Y.shape[1:], np.nan),
               "var": np.full((keep.size, T, m), np.nan),
               "lam_min": np.full(keep.size, np.nan), "lam_max": np.full(keep.size, np.nan),
               "status": np.zeros(keep.size, dtype=np.int8)} for k in kinds}
    for i, (Str, Ttr, Ste, Tte, kss) in enumerate(layers):
        for k in kinds:
            Gtt, Gst = (Ttr, Tte) if k == "ntk" else (Str, Ste)
            r = _Depth(k, Gtt, Gst, Str, Ste, kss, Y, times, diag_reg, norm)
            o = out[k]
            o["mean"][i], o["var"][i] = r.mean, r.var
            o["lam_min"][i], o["lam_max"][i], o["status"][i] = r.lam_min, r.lam_max, r.status
    res = {k: _dataset(k, out[k], keep, times, scalar_t, Y, m, act, sw2, sb2, rec, diag_reg)
           for k in kinds}
    if architecture is not None:
        for ds in res.values():
            ds.attrs.pop("shared_norm", None)  # a fully connected notion
            ds.attrs.update(architecture.attrs)
            ds.attrs["image_shape"] = list(Xtr.shape[1:])
    return res


def _fc_layers(act, sw2, sb2, rec, n, keep):
    """(Sigma_tt, Theta_tt, Sigma_*t, Theta_*t, Sigma_**-diagonal) at each kept depth of the
    fully connected recursion, which holds one layer at a time."""
    kss = rec.qz[n:].copy()  # Sigma^1(x*, x*), then the length map per test point
    wanted = set(keep.tolist())
    for l in rec.iterate(int(keep[-1])):
        if l > 1:
            nxt = np.empty_like(kss)
            _length_step(act.record, sw2, sb2, kss, nxt)
            kss = nxt
        if l in wanted:
            tr, te = rec.blocks[0], rec.blocks[1]
            yield tr.sig, tr.th, te.sig, te.th, kss


def _conv_layers(act, sw2, sb2, Xtr, Xte, keep, conv):
    """The same for a convolutional network (docs/theory.md, "Convolutional networks"):
    every pair's pixel recursion runs to the deepest kept depth and stores only the kept
    ones; the test variances Sigma^l(x*, x*) after the readout come from the pairs (x*, x*)
    (for GAP they need each test image's full pixel-pixel covariance)."""
    blocks, method, _ = conv_arrays(Xtr, Xte, act, sw2, sb2, keep, conv,
                                    ("train", "cross", "test_diag"))
    (Str, Ttr), (Ste, Tte), (Sss, _) = blocks["train"], blocks["cross"], blocks["test_diag"]
    layers = ((Str[i], Ttr[i], Ste[i], Tte[i], Sss[i, :, 0]) for i in range(keep.size))
    return layers, ConvMethod(method)


def _dataset(kind, o, keep, times, scalar_t, Y, m, act, sw2, sb2, rec, diag_reg):
    mean, var = o["mean"], o["var"]
    dims = ["depth", "time", "test"]
    if times is None or scalar_t:
        mean, var = mean[:, 0], var[:, 0]
        dims.remove("time")
    mdims = tuple(dims) + (("output",) if Y.ndim == 2 else ())
    coords = {"depth": ("depth", keep, var_attrs("depth")),
              "test": ("test", np.arange(m), described("row of X_test"))}
    if Y.ndim == 2:
        coords["output"] = ("output", np.arange(Y.shape[1]), described("column of y_train"))
    t_units = "gradient-flow time, learning rate 1, loss (1/(2 n k)) sum (f - y)^2"
    if times is not None:
        tval = times[0] if scalar_t else times
        coords["time"] = (() if scalar_t else ("time",), tval,
                          described("training time t", t_units))
    gname = "Theta" if kind == "ntk" else "Sigma"
    what = ("NTK ensemble trained by gradient flow" if kind == "ntk"
            else "NNGP posterior (readout trained by gradient flow)")
    if times is None:
        what += ", t = inf"
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = o["lam_max"] / o["lam_min"]
    kappa[o["status"] == SINGULAR] = np.inf
    data = {
        # Not "mean": ds.mean is the Dataset method, so ds.mean would silently not be this.
        "prediction": (mdims, mean, described(f"mean prediction on X_test: {what}",
                                              "units of y_train")),
        "variance": (tuple(dims), var, described(
            f"variance of the prediction on X_test (diagonal of the covariance): {what}",
            "(units of y_train)^2")),
        "lambda_min": ("depth", o["lam_min"], described(
            f"smallest eigenvalue of the regularised {gname}^l on the train set")),
        "lambda_max": ("depth", o["lam_max"], described(
            f"largest eigenvalue of the regularised {gname}^l on the train set")),
        "condition_number": ("depth", kappa,
                             described("lambda_max / lambda_min (inf if singular)")),
        "singular": ("depth", o["status"] != OK, described(
            "the train kernel is unusable at this depth (reason in status)")),
        "status": ("depth", o["status"], {**flag_attrs(KernelStatus, "kernel status per depth"),
                                          "units": "1"}),
    }
    attrs = global_attrs(act, sw2, sb2, rec,
                         f"infinite-width {kind.upper()} predictions: {act.name}")
    attrs.update({"kernel": kind, "diag_reg": diag_reg,
                  "diag_reg_convention": "G_tt + diag_reg * trace(G_tt) / n * I",
                  "time_convention": t_units + "; exp(-G_tt t / (n k))",
                  "singular_threshold": "lambda_min <= n * eps * lambda_max: NaN at t = inf, "
                                        "and at finite t once t/(n k) * n eps lambda_max >= 1"})
    return xr.Dataset(data, coords=coords, attrs=attrs)


def predict(X_train, y_train, X_test, activation, sw2, sb2, depth, kernel="ntk", t=None,
            diag_reg=0.0, depths=None, architecture=None) -> xr.Dataset:
    """Mean and variance of the infinite-width network's prediction on X_test, per depth.

    Implements (docs/theory.md, "Infinite-width predictions"), with G the predictor's kernel
    (Theta^l for ``"ntk"``, Sigma^l for ``"nngp"``), regularised as
    G_tt + diag_reg tr(G_tt)/n I, and N = n k the number of targets::

        mean_t = G_*t G_tt^{-1} (I - exp(-G_tt t/N)) Y
        A_t  = G_*t G_tt^{-1} (I - exp(-G_tt t/N))
        NTK:   cov_t = K_** + A_t K_tt A_t^T - A_t K_t* - K_*t A_t^T
        NNGP:  cov_t = K_** - K_*t G_tt^{-1} (I - exp(-2 G_tt t/N)) K_t*

    (K = Sigma^l, the NNGP kernel: the law of the network at initialisation.)  t = None is
    t = inf: the NTK predictor of the network trained to convergence, the NNGP posterior.
    Same conventions as neural-tangents' ``predict.gradient_descent_mse_ensemble``.

    Parameters
    ----------
    X_train : array_like (n, d), or (n, H, W, C) images with ``architecture``
    y_train : array_like (n,) or (n, k)
        Targets; several columns (e.g. one-hot classes) give an ``output`` dimension.
    X_test : array_like (m, d), or (m, H, W, C)
    activation, sw2, sb2, depth
        As in :func:`meanfield.kernels` (sw2, sb2 are variances).
    kernel : {"ntk", "nngp"}
    t : None, float or 1-D array of float >= 0
        Training time(s); inf allowed.  None: to convergence (Cholesky solve).  A scalar
        gives a scalar ``time`` coordinate, an array a ``time`` dimension.
    diag_reg : float >= 0
        Ridge relative to the mean diagonal of G_tt.
    depths : int or list of int, optional
        Depths to return (default all 1..depth); the recursion runs to the deepest one.
    architecture : None or Conv, optional
        None: the fully connected network.  ``meanfield.Conv(...)``: the CNN-GP / CNTK of
        images (docs/theory.md, "Convolutional networks"; :func:`meanfield.kernels`), the
        same formulas with K, Theta the readout kernels; only the kept depths are stored
        (2 K (n^2 + m n + m) doubles for K kept depths).

    Returns
    -------
    xarray.Dataset
        ``prediction`` (the mean; depth[, time], test[, output]), ``variance``
        (depth[, time], test),
        ``lambda_min``, ``lambda_max``, ``condition_number``, ``singular``, ``status``
        (depth).  A depth whose G_tt is not finite, has lambda_min <= n eps lambda_max or
        fails Cholesky is flagged in ``status``; its t = inf predictions are NaN (finite t:
        NaN once t/N n eps lambda_max >= 1, when the flow would resolve rounding noise).
        Memory: a few (n + m) x n arrays, whatever the depth.

    Raises
    ------
    ValueError
        Naming the parameter: unknown ``kernel``, negative or NaN ``t``, negative
        ``diag_reg``, ``depths`` outside 1..depth, inputs of the wrong shape or not finite.
    """
    if not isinstance(kernel, str):
        raise ValueError(f"kernel must be one of {', '.join(PREDICTORS)}, got {kernel!r}")
    return predictions(X_train, y_train, X_test, activation, sw2, sb2, depth, kernel, t,
                       diag_reg, depths, architecture)[kernel]
