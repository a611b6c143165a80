"""Convolutional networks: the CNN-GP (NNGP) and CNTK per depth on images (docs/theory.md,
"Convolutional networks").

A network of depth l has l convolutional layers (k x k filters, stride 1, infinitely many
channels) with phi between them and a readout after the last: neural-tangents'
``stax.serial(*[Conv, phi] * (l - 1), Conv, Flatten() | GlobalAvgPool())`` with
``parameterization="ntk"``.  The recursion is in :mod:`meanfield.ntk.conv_blocks`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..core import validate as V
from ..core.budget import BudgetError, check_memory
from ..core.functions import CF_NONE
from ..core.vocabulary import attrs as var_attrs, described
from . import conv_blocks as CB
from .conv_hermite import depth_table
from .depths import select_depths

__all__ = ["Conv", "conv_kernels", "images"]

PADDINGS = ("circular", "same")
READOUTS = ("flatten", "gap")

# Pairs of images per parallel work item: large enough that a chunk's work arrays are
# reused many times, small enough that 2 n^2 / chunk items keep every core busy.
PAIR_CHUNK = 16


@dataclass(frozen=True)
class Conv:
    """A convolutional architecture for :func:`meanfield.kernels` (docs/theory.md,
    "Convolutional networks").

    Attributes
    ----------
    filter_size : int, default 3
        Side k of the k x k filters; odd, >= 1.  Stride 1.
    padding : {"circular", "same"}, default "circular"
        "circular": pixel indices wrap modulo the image size; "same": zeros outside the
        image (those terms are absent and the divisor stays k^2).
    readout : {"flatten", "gap"}, default "flatten"
        "flatten" (vectorize, Arora et al.'s CNN-V/CNTK-V): the mean over pixels of the
        pixel-diagonal kernel, (1/HW) sum_p Sigma_pp(x, x').  "gap" (global average pooling):
        the mean over all pixel pairs, (1/(HW)^2) sum_{p,p'} Sigma_pp'(x, x').

    Raises
    ------
    ValueError
        An even, non-integer or < 1 filter size, or an unknown padding or readout; the
        message names the parameter.
    """

    filter_size: int = 3
    padding: str = "circular"
    readout: str = "flatten"

    def __post_init__(self):
        k = self.filter_size
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
            raise ValueError(f"filter_size must be an odd integer >= 1, got {k!r}")
        object.__setattr__(self, "filter_size", int(k))
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}; got {self.padding!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {', '.join(READOUTS)}; got {self.readout!r}")

    @property
    def attrs(self) -> dict:
        """Dataset attributes describing the architecture."""
        return {"architecture": "conv", "filter_size": self.filter_size,
                "padding": self.padding, "readout": self.readout, "stride": 1}


def images(name, X, conv: Conv):
    """A finite, non-empty (n, H, W, C) float64 array that the filter fits, or ValueError."""
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array") from None
    if A.ndim != 4:
        raise ValueError(f"{name} must be four-dimensional (images x height x width x channels) "
                         f"with architecture=Conv(...), got shape {A.shape}")
    if min(A.shape) == 0:
        raise ValueError(f"{name} is empty (shape {A.shape})")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or infinite values")
    k = conv.filter_size
    if k > A.shape[1] or k > A.shape[2]:
        raise ValueError(f"filter_size {k} is larger than the {A.shape[1]} x {A.shape[2]} images "
                         f"of {name}")
    return np.ascontiguousarray(A)


def expectation_mode(act):
    """The per-entry expectation rule of :mod:`conv_blocks` and its description."""
    if act.closed_form != CF_NONE:
        return CB.EXPECT_CLOSED, "per pixel pair: closed form"
    if len(act.kinks) == 0:
        return CB.EXPECT_HERMITE, "per pixel pair: Hermite expansion per pixel (conv_hermite)"
    return CB.EXPECT_QUAD, "per pixel pair: 2-D quadrature (moments.pair)"


def self_diagonals(mode, act, Z, nbr, sw2, sb2, k2, C, L):
    """Sigma^l_pp(x, x), Theta^l_pp(x, x) of every image (N, L, P), the Hermite tables
    (flat storage, offsets, lengths, N, parities) of :func:`conv_blocks._table`, the terms each row
    needs (N, L - 1, P), and the mode used.

    The tables of depth l need the variances of depth l, so the layers run one at a time.
    When a depth's table cannot be built (variances so large that K_MAX terms do not
    suffice) the whole call falls back to 2-D quadrature, with a warning.
    """
    N, P, _ = Z.shape
    V = np.empty((N, L, P))
    T = np.empty((N, L, P))
    CB.self_layer1(Z, nbr, sw2, sb2, k2, C, V[:, 0])
    T[:, 0] = V[:, 0]
    Lh = max(L - 1, 1)
    kps = np.ones((N, Lh, P), dtype=np.int64)
    odd = np.zeros(Lh, dtype=np.bool_)
    tables = []
    for l in range(L - 1):
        H = np.zeros((N, P, 1))
        if mode == CB.EXPECT_HERMITE:
            H, K, terms, odd[l] = depth_table(act, V[:, l])
            if H is None:
                warnings.warn(f"{act.name}: {K}; using 2-D quadrature per pixel pair "
                              "(much slower, same accuracy)", RuntimeWarning, stacklevel=4)
                return self_diagonals(CB.EXPECT_QUAD, act, Z, nbr, sw2, sb2, k2, C, L)
            kps[:, l] = terms
            tables.append(H)
        vn = np.empty((N, P))
        tn = np.empty((N, P))
        CB.self_step(mode, act.record, np.ascontiguousarray(H), np.ascontiguousarray(kps[:, l]),
                     bool(odd[l]), nbr, sw2, sb2, k2, np.ascontiguousarray(V[:, l]),
                     np.ascontiguousarray(T[:, l]), vn, tn)
        V[:, l + 1] = vn
        T[:, l + 1] = tn
    # One flat block per depth, each as long as its own depth needs (the first layer's
    # variances are often far larger than the deeper ones').
    Ks = np.ones(Lh, dtype=np.int64)
    offs = np.zeros(Lh, dtype=np.int64)
    if mode == CB.EXPECT_HERMITE and tables:
        Ks[:] = [t.shape[2] for t in tables]
        offs[1:] = np.cumsum([t.size for t in tables])[:-1]
        Hflat = np.concatenate([t.ravel() for t in tables])
    else:
        Hflat = np.zeros(N * P * Lh)  # never read outside EXPECT_HERMITE
        offs[:] = np.arange(Lh) * N * P
    return V, T, (Hflat, offs, Ks, N, odd), kps, mode


METHODS = {CB.EXPECT_CLOSED: "per pixel pair: closed form",
           CB.EXPECT_HERMITE: "per pixel pair: Hermite expansion per pixel (conv_hermite)",
           CB.EXPECT_QUAD: "per pixel pair: 2-D quadrature (moments.pair)"}


def pixel_tables(X, X2, act, sw2, sb2, L, conv: Conv):
    """What every pair of images needs from the whole set: (Zall, nbr, V, tab, kps, mode).

    ``Zall`` (N, P, C) are the images of X then those of X2 (N = n + m), ``nbr`` the
    neighbour table of :func:`conv_blocks.neighbours`, and V, tab, kps, mode those of
    :func:`self_diagonals` over all N images.  The Hermite tables' ranges, lengths and
    parities depend on every image's variances, so they are built here once for the whole
    set; a pair of images then depends only on its own two images and their rows of these
    tables, which is what lets :func:`meanfield.kernels_to_store` compute any block of
    pairs on its own and still equal :func:`conv_kernels` bit for bit.
    """
    n, H, W, C = X.shape
    P = H * W
    nbr = CB.neighbours(H, W, conv.filter_size, conv.padding == "circular")
    k2 = float(conv.filter_size ** 2)
    mode, _ = expectation_mode(act)
    Zall = X.reshape(n, P, C)
    if X2 is not None:
        Zall = np.concatenate([Zall, X2.reshape(X2.shape[0], P, C)])
    V, _, tab, kps, mode = self_diagonals(mode, act, Zall, nbr, sw2, sb2, k2, float(C), L)
    return Zall, nbr, V, tab, kps, mode


def kept_slots(keep):
    """slot[l] = the output row of depth l + 1, or -1 when it is not kept (see
    :func:`conv_blocks.pair_kernels`)."""
    slot = np.full(int(keep[-1]), -1, dtype=np.int64)
    slot[keep - 1] = np.arange(keep.size)
    return slot


# The blocks :func:`conv_arrays` can compute: (rows, columns, which pairs).
BLOCKS = {
    "train": ("X", "X", CB.PAIRS_UPPER),      # X x X, symmetric
    "cross": ("X2", "X", CB.PAIRS_ALL),       # X2 x X (test x train)
    "test_diag": ("X2", "X2", CB.PAIRS_DIAG),  # (x2, x2) for every x2 in X2: an (m, 1) column
}


def conv_arrays(X, X2, act, sw2, sb2, keep, conv: Conv, want=("train",)):
    """The readout kernels of :func:`conv_kernels` on the blocks ``want`` of :data:`BLOCKS`,
    at the kept depths only.

    Parameters
    ----------
    X, X2 : ndarray
        Validated (n, H, W, C) and (m, H, W, C) images (X2 None when no block needs it).
    keep : int64 array
        The sorted depths to keep (:func:`meanfield.ntk.depths.select_depths`).  The
        recursion runs to keep[-1]; each pair of images carries its own state through every
        layer and writes only the kept depths, so the output is 2 K rows x columns doubles
        per block for K kept depths, whatever the depth.

    Returns
    -------
    (dict, str, float)
        ``{block: (Sigma, Theta)}`` each of shape (K, rows, columns) ("test_diag": (K, m, 1)),
        the method, and the mean over images of X and pixels of Sigma^1_pp(x, x) (a q^1 for
        :func:`analyze`).
    """
    n, H, W, C = X.shape
    P = H * W
    m = 0 if X2 is None else X2.shape[0]
    L = int(keep[-1])
    K = keep.size
    size = {"X": n, "X2": m}
    shapes = {b: (K, size[BLOCKS[b][0]], 1 if b == "test_diag" else size[BLOCKS[b][1]])
              for b in want}
    # the outputs (2 K rows columns per block), the per-image pixel diagonals (2 L (n + m) P)
    check_memory(8.0 * (sum(2.0 * np.prod(s) for s in shapes.values()) + 2 * L * (n + m) * P),
                 f"convolutional kernels of {n} + {m} images of {H} x {W} at {K} depths "
                 f"(recursion to depth {L})")
    Zall, nbr, V, tab, kps, mode = pixel_tables(X, X2, act, sw2, sb2, L, conv)
    Z = Zall[:n]
    method = METHODS[mode]
    readout = CB.READ_GAP if conv.readout == "gap" else CB.READ_FLATTEN
    slot = kept_slots(keep)
    k2 = float(conv.filter_size ** 2)
    # image set -> (images, pixel variances, Hermite terms, first row in the tables)
    sets = {"X": (Z, V[:n], kps[:n], 0), "X2": (Zall[n:], V[n:], kps[n:], n)}
    out = {}
    for b in want:
        rows, cols, pairs = BLOCKS[b]
        Zr, Vr, Kr, br = sets[rows]
        Zc, Vc, Kc, bc = sets[cols]
        S = np.empty(shapes[b])
        T = np.empty(shapes[b])
        CB.pair_kernels(mode, readout, act.record, Zr, Zc, Vr, Vc, tab, br, bc, Kr, Kc, nbr,
                        sw2, sb2, k2, float(C), pairs, slot, PAIR_CHUNK, S, T)
        out[b] = (S, T)
    return out, method, float(np.mean(V[:n, 0, :]))


def validated(X, X2, activation, sw2, sb2, depth, conv, names=("X", "X2")):
    """Checked (act, sw2, sb2, L, X, X2) for the convolutional kernels, or ValueError."""
    if not isinstance(conv, Conv):
        raise ValueError(f"architecture must be None (fully connected) or meanfield.Conv(...), "
                         f"got {conv!r}")
    act, sw2, sb2, L = V.network(activation, sw2, sb2, depth)
    X = images(names[0], X, conv)
    if X2 is not None:
        X2 = images(names[1], X2, conv)
        if X2.shape[1:] != X.shape[1:]:
            raise ValueError(f"{names[1]} has images of shape {X2.shape[1:]} but {names[0]} has "
                             f"{X.shape[1:]}")
    return act, sw2, sb2, L, X, X2


def metric_layers(X_train, X_test, activation, sw2, sb2, depth, conv, depths=None,
                  want=("train", "cross")):
    """What :func:`meanfield.ntk_metrics` and :func:`meanfield.predict` need for a
    convolutional network.

    Returns (act, sw2, sb2, keep, n, m, blocks, q1, method): ``keep`` the kept depths and
    ``blocks`` the dict of :func:`conv_arrays` (only the kept depths are ever stored).
    """
    act, sw2, sb2, L, Xtr, Xte = validated(X_train, X_test, activation, sw2, sb2, depth, conv,
                                           names=("X_train", "X_test"))
    keep = select_depths(depths, L)
    blocks, method, q1 = conv_arrays(Xtr, Xte, act, sw2, sb2, keep, conv, want)
    return act, sw2, sb2, keep, Xtr.shape[0], Xte.shape[0], blocks, q1, ConvMethod(method)


def conv_kernels(X, activation, sw2, sb2, depth, conv: Conv, X2=None, depths=None):
    """CNN-GP and CNTK of every depth l = 1..depth on images (the ``architecture=Conv``
    branch of :func:`meanfield.kernels`).

    Implements (docs/theory.md, "Convolutional networks"), with k x k filters, C input
    channels, s = sw2 / k^2 and (u, v) ~ N(0, [[Sigma_pp(x,x), Sigma_pp'(x,x')],
    [Sigma_pp'(x,x'), Sigma_p'p'(x',x')]])::

        Sigma^1_pp'(x,x') = sw2/(C k^2) sum_d x_{p+d} . x'_{p'+d} + sb2,      Theta^1 = Sigma^1
        Sigma^{l+1}_pp'   = s sum_d E[phi(u) phi(v)]_{p+d,p'+d} + sb2
        Theta^{l+1}_pp'   = Sigma^{l+1}_pp' + s sum_d E[phi'(u) phi'(v)]_{p+d,p'+d} Theta^l_{p+d,p'+d}

    and the readout: flatten (1/HW) sum_p Sigma^l_pp, GAP (1/(HW)^2) sum_{p,p'} Sigma^l_pp'
    (the same for Theta).  The flatten readout only needs the pixel diagonal p = p', whose
    recursion is closed (O(HW) per pair of images); GAP carries the full (HW)^2 matrix of
    each pair, one pair at a time per thread.

    Parameters
    ----------
    X : array_like, shape (n, H, W, C)
    activation : str or Activation
    sw2, sb2 : float
        Weight and bias *variances* (not standard deviations).
    depth : int
        L >= 1.
    conv : Conv
    X2 : array_like, shape (m, H, W, C), optional
        Then ``i`` indexes X2 and ``j`` indexes X, as in :func:`meanfield.kernels`.
    depths : int or list of int, optional
        Keep only these depths (default all 1..depth).  The recursion runs to the deepest
        one, each pair of images through every layer, but only the kept depths are stored:
        memory 2 K m n doubles for K kept depths.

    Returns
    -------
    xarray.Dataset
        ``nngp``, ``ntk`` over (depth, i, j), the layout of :func:`meanfield.kernels`, with
        the architecture in the attributes.
    """
    act, sw2, sb2, L, X, X2 = validated(X, X2, activation, sw2, sb2, depth, conv)
    keep = select_depths(depths, L)
    block = "train" if X2 is None else "cross"
    try:
        out, method, _ = conv_arrays(X, X2, act, sw2, sb2, keep, conv, (block,))
    except BudgetError as exc:
        x2 = "" if X2 is None else ", X2=X2"
        cli = "" if X2 is None else " --test X2.npy"
        raise BudgetError(f"{exc}; meanfield.kernels_to_store(X, ..., store='k.zarr'{x2}, "
                          f"architecture=...) computes them block by block into a zarr store "
                          f"on disk (CLI: meanfield kernel ... --conv K --store k.zarr{cli})") \
            from None
    S, T = out[block]
    return conv_dataset(S, T, keep, "X2" if X2 is not None else "X",
                        conv_attrs(act, sw2, sb2, method, conv, X.shape[1:]), conv)


def conv_attrs(act, sw2, sb2, method, conv: Conv, image_shape) -> dict:
    """Global attributes of a convolutional kernel dataset."""
    from .dataset import global_attrs

    attrs = global_attrs(act, sw2, sb2, ConvMethod(method),
                         f"CNN-GP and CNTK kernels: {act.name}")
    attrs.pop("shared_norm", None)
    attrs.update(conv.attrs)
    attrs["image_shape"] = [int(v) for v in image_shape]
    return attrs


def conv_dataset(S, T, keep, row, attrs, conv: Conv) -> xr.Dataset:
    """The dataset of :func:`conv_kernels`: ``nngp`` = S, ``ntk`` = T over (depth, i, j)
    (numpy or dask arrays), ``i`` indexing the images of ``row`` and ``j`` those of X."""
    m, n = S.shape[1], S.shape[2]
    return xr.Dataset(
        {
            "nngp": (("depth", "i", "j"), S,
                     described(f"CNN-GP kernel Sigma^l after the {conv.readout} readout")),
            "ntk": (("depth", "i", "j"), T,
                    described(f"CNTK Theta^l after the {conv.readout} readout "
                              "(NTK parameterization)")),
        },
        coords={
            "depth": ("depth", keep, var_attrs("depth")),
            "i": ("i", np.arange(m), described(f"image of {row}", "1")),
            "j": ("j", np.arange(n), described("image of X", "1")),
        },
        attrs=attrs,
    )


class ConvMethod:
    """The fields of a recursion that :func:`global_attrs` and ntk_metrics read."""

    def __init__(self, method):
        self.method = method
        self.shared = False
        self.cheb_nodes = []

    def extra_attrs(self):
        """No method-specific attributes (global_attrs asks every recursion for them)."""
        return {}
