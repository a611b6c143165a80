"""Depth scales of a convolutional network per spatial Fourier mode (docs/theory.md,
"Convolutional networks", "Depth scales per spatial mode"; Xiao et al. 2018).

With circular padding the covariance map of a CNN is translation invariant.  Linearized
about its fixed point (every pixel variance q*, every covariance between two different
inputs, or two pixels of one input, q* c*: the fixed points of the fully connected maps),
one layer acts on a perturbation e_{pp'} of the pixel-pixel covariance as

    e^{l+1}_{pp'} = chi_c (1/k^2) sum_{d in W_k} e^l_{p+d, p'+d}

(chi_c = sw2 E[phi'(u) phi'(v)] at (q*, c*)), and on a perturbation of the pixel variances
e_p = Sigma_pp(x, x) - q* as e^{l+1}_p = V'(q*) (1/k^2) sum_d e^l_{p+d} (V' the slope of the
length map).  The operator shifts both pixels together, so it keeps the lag p' - p and is a
convolution in the position p: a perturbation exp(i (w.p + w'.p')) is an eigenvector with
eigenvalue lambda(w + w'), the Fourier transform of the filter's averaging,

    lambda(w) = prod_axes (1/k) sum_{j=-r}^{r} cos(w j),    r = (k - 1)/2,

and mode w (the frequency of the covariance along the image at a fixed lag) decays like
(chi_c lambda(w))^l: depth scale xi(w) = -1 / log|chi_c lambda(w)|.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .._version import __version__
from ..core import validate as V
from ..core.activation import activation_attrs, get_activation
from ..core.analysis import analyze
from ..core.vocabulary import described

__all__ = ["conv_depth_scales", "filter_eigenvalue"]

# |lambda| below this is an exact zero of the Dirichlet kernel (1 + 2 cos(2 pi/3) = 2e-16).
LAMBDA_ZERO = 1e-12


def filter_eigenvalue(omega, filter_size):
    """lambda(w) = (1/k) sum_{j=-r}^{r} cos(w j) along one axis (a Dirichlet kernel / k),
    with values of magnitude < 1e-12 set to exactly 0."""
    w = np.asarray(omega, dtype=np.float64)
    r = (filter_size - 1) // 2
    lam = np.ones_like(w) / filter_size
    for j in range(1, r + 1):
        lam = lam + 2.0 * np.cos(w * j) / filter_size
    return np.where(np.abs(lam) < LAMBDA_ZERO, 0.0, lam)


def _scale(x):
    """-1/log|x| with the library's conventions: 0 -> 0 (gone after one layer), |x| = 1 -> inf;
    NaN for |x| > 1 (a growing mode: not a fixed point to linearize about) or x NaN."""
    a = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = -1.0 / np.log(a)
    xi = np.where(a == 0.0, 0.0, xi)
    xi = np.where(a == 1.0, np.inf, xi)
    return np.where((a > 1.0) | ~np.isfinite(a), np.nan, xi)


def _shape(image_shape, k):
    try:
        shp = tuple(image_shape)
    except TypeError:
        raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {image_shape!r}") from None
    if len(shp) not in (2, 3) or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shp):
        raise ValueError(f"image_shape must be (H, W) or (H, W, C) of positive integers, "
                         f"got {image_shape!r}")
    H, W = int(shp[0]), int(shp[1])
    if k > H or k > W:
        raise ValueError(f"filter_size {k} is larger than the {H} x {W} images (image_shape)")
    return H, W


def conv_depth_scales(activation, sw2, sb2, filter_size, image_shape, padding="circular"):
    """Depth scale of every spatial Fourier mode of a CNN's covariance (Xiao et al. 2018).

    With circular padding, k x k filters, stride 1 and infinitely many channels (the
    networks of ``kernels(..., architecture=Conv(...))``), a perturbation of the
    pixel-pixel covariance about the fixed point that varies along the image like
    exp(i w.p) at a fixed lag p' - p decays like (chi_c lambda(w))^l, with lambda(w) the
    Fourier transform of the filter's averaging (docs/theory.md, "Convolutional networks",
    "Depth scales per spatial mode").  The modes of an H x W image are
    w = 2 pi (a/H, b/W).  The uniform mode w = 0 has lambda = 1 and the fully connected
    xi_c: it is the only one the flatten and GAP readouts (spatial averages) see at linear
    order; the others carry where in the image the two inputs (or two pixels) are alike,
    and they die faster.

    Parameters
    ----------
    activation : str or Activation
    sw2, sb2 : float
        Weight and bias *variances*.
    filter_size : int
        Odd k >= 1, at most the image's height and width.
    image_shape : (H, W) or (H, W, C)
        The channels do not matter.
    padding : {"circular"}
        Only circular padding is translation invariant; "same" raises ValueError (its
        linearized map is not diagonal in Fourier modes: the modes near the border mix).

    Returns
    -------
    xarray.Dataset
        Over (mode_y, mode_x), the integer mode numbers a, b centred on 0 (coordinates
        ``omega_y`` = 2 pi a/H, ``omega_x`` = 2 pi b/W): ``eigenvalue`` lambda(w), ``xi``
        = -1/log|chi_c lambda(w)| (the covariance of two inputs, or of two pixels of one
        input), ``xi_length`` = -1/log|V'(q*) lambda(w)| (the pixel variances of one input),
        and the fully connected scalars ``q_star``, ``c_star``, ``chi1``, ``chi_c``, ``xi_c``,
        ``xi_q`` and ``phase`` of :func:`meanfield.analyze`.  Conventions as ``analyze``:
        0 where lambda(w) = 0 (the mode is gone after one layer), inf where |chi_c lambda| = 1
        (critical: no exponential decay); NaN where the fully connected fixed point does not
        exist (``status`` says why).  A negative lambda flips the mode's sign every layer;
        its depth scale uses |chi_c lambda|.

    Raises
    ------
    ValueError
        Naming the parameter: an even, < 1 or non-integer ``filter_size``, one larger than the
        image, a bad ``image_shape``, an unknown padding or "same", bad variances or activation.
    """
    k = filter_size
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
        raise ValueError(f"filter_size must be an odd integer >= 1, got {k!r}")
    k = int(k)
    if padding == "same":
        raise ValueError('padding="same" is not supported: only padding="circular" is '
                         "translation invariant, so that spatial Fourier modes decouple")
    if padding != "circular":
        raise ValueError(f'padding must be "circular", got {padding!r}')
    H, W = _shape(image_shape, k)
    act = get_activation(activation)
    sw2 = V.variance("sw2", sw2)
    sb2 = V.variance("sb2", sb2)
    res = analyze(act, sw2, sb2)

    a = np.fft.fftshift(np.fft.fftfreq(H, 1.0 / H)).round().astype(np.int64)
    b = np.fft.fftshift(np.fft.fftfreq(W, 1.0 / W)).round().astype(np.int64)
    wy, wx = 2.0 * np.pi * a / H, 2.0 * np.pi * b / W
    lam = filter_eigenvalue(wy, k)[:, None] * filter_eigenvalue(wx, k)[None, :]
    lam = np.where(lam == 0.0, 0.0, lam)  # no -0.0
    # |V'(q*)| from xi_q = -1/log|V'| (0 -> 0, inf -> 1).
    vp = math.exp(-1.0 / res.xi_q) if math.isfinite(res.xi_q) and res.xi_q > 0 else (
        0.0 if res.xi_q == 0 else (1.0 if res.xi_q == math.inf else math.nan))
    xi = _scale(res.chi_c * lam)
    xi_len = _scale(vp * lam)
    dims = ("mode_y", "mode_x")
    attrs = {
        "title": f"CNN depth scales per spatial Fourier mode: {act.name}",
        "activation": act.name,
        **activation_attrs(act),
        "sw2": sw2, "sb2": sb2, "filter_size": k, "image_shape": [H, W], "padding": padding,
        "stride": 1,
        "status": res.status,
        "conventions": (
            "sw2, sb2 are variances; NTK parameterization, infinitely many channels, stride 1. "
            "A perturbation exp(i(w.p + w'.p')) of the pixel-pixel covariance about the fixed "
            "point (q*, c*) is multiplied each layer by chi_c lambda(w + w'), "
            "lambda(w) = prod_axes (1/k) sum_{|j|<=r} cos(w j): w is conjugate to the position "
            "p at fixed lag p' - p. xi = -1/log|chi_c lambda| (0 where lambda = 0, inf where "
            "|chi_c lambda| = 1); pixel variances: xi_length with V'(q*) for chi_c. "
            "docs/theory.md, 'Convolutional networks'."),
        "software": f"meanfield {__version__}",
    }
    return xr.Dataset(
        {
            "eigenvalue": (dims, lam, described(
                "eigenvalue lambda(w) of the filter averaging (1/k^2) sum_d e_{p+d,p'+d}")),
            "xi": (dims, xi, described(
                "depth scale -1/log|chi_c lambda(w)| of the covariance mode w", "layers")),
            "xi_length": (dims, xi_len, described(
                "depth scale -1/log|V'(q*) lambda(w)| of the pixel-variance mode w", "layers")),
            "q_star": ((), res.q_star, described("fixed point q* of the length map")),
            "c_star": ((), res.c_star, described("stable fixed point c* of the correlation map")),
            "chi1": ((), res.chi1, described("chi_1 = sw2 E[phi'(sqrt(q*) z)^2]")),
            "chi_c": ((), res.chi_c, described("chi_c = sw2 E[phi'(u) phi'(v)] at (q*, c*)")),
            "xi_c": ((), res.xi_c, described("fully connected xi_c = xi at w = 0", "layers")),
            "xi_q": ((), res.xi_q, described("fully connected xi_q = xi_length at w = 0",
                                              "layers")),
            "phase": ((), res.phase, described("phase of the fully connected maps")),
        },
        coords={
            "mode_y": ("mode_y", a, described("mode number a along the height", "1")),
            "mode_x": ("mode_x", b, described("mode number b along the width", "1")),
            "omega_y": ("mode_y", wy, described("frequency 2 pi a / H", "rad/pixel")),
            "omega_x": ("mode_x", wx, described("frequency 2 pi b / W", "rad/pixel")),
        },
        attrs=attrs,
    )
