"""NNGP and NTK kernels per depth on a data set, and of two inputs without data.

The recursion is :mod:`meanfield.ntk.recursion` (docs/theory.md, "Kernels on a data set").
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .._version import __version__
from ..core import validate as V
from ..core.budget import BudgetError, check_memory
from ..core.activation import activation_attrs
from ..core.vocabulary import CONVENTIONS, attrs, described
from ..progress import bar
from .conv import conv_kernels
from .depths import select_depths
from .recursion import Block, Recursion, setup

__all__ = ["kernels", "two_point_kernels"]


def matrix(name, X):
    """A finite, non-empty 2-D float64 array (samples x features), or ValueError naming it."""
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


def global_attrs(act, sw2, sb2, rec, title):
    """Global attributes of a kernel dataset: activation, variances, method used."""
    out = {
        "title": title,
        **activation_attrs(act),
        "sw2": sw2,
        "sb2": sb2,
        "shared_norm": int(rec.shared),
        "method": rec.method,
        "meanfield_version": __version__,
        "conventions": CONVENTIONS,
    }
    if rec.cheb_nodes:
        out["chebyshev_nodes_max"] = int(max(rec.cheb_nodes))
    out.update(rec.extra_attrs())
    return out


def depth_coord(L):
    """The ``depth`` coordinate 1..L."""
    return ("depth", np.arange(1, L + 1), attrs("depth"))


def kernels(X, activation, sw2, sb2, depth, X2=None, architecture=None,
            depths=None, progress=True) -> xr.Dataset:
    """NNGP and NTK kernels of every layer l = 1..depth, in one pass over depths.

    Implements (docs/theory.md, "Kernels on a data set")::

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
    architecture : None or Conv, optional
        None (default): the fully connected network above.  ``meanfield.Conv(...)``: a
        convolutional network on images X of shape (n, H, W, C) (X2: (m, H, W, C)); see
        :func:`meanfield.ntk.conv.conv_kernels` and docs/theory.md, "Convolutional networks".
    depths : int or list of int, optional
        Keep only these depths (within 1..depth; default all).  The recursion still runs
        through every layer up to the deepest one requested, but holds only a few n x m
        arrays besides the kept ones: memory 2 K n m doubles for K kept depths.
    progress : bool, default True
        Show a progress bar over layers (stderr) when the work takes over a second
        (fully connected networks; ``MEANFIELD_NO_PROGRESS=1`` turns it off everywhere).

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
    2 L n m doubles, plus a few n x m work arrays; for kernels larger than memory,
    :func:`meanfield.kernels_to_store` computes the same values block by block on disk.

    Raises
    ------
    ValueError
        NaN/inf or non-2-D inputs, X2 with a different number of columns, depth < 1,
        negative variances, unknown activation.
    """
    if architecture is not None:  # convolutional networks: meanfield/ntk/conv.py
        return conv_kernels(X, activation, sw2, sb2, depth, architecture, X2=X2, depths=depths)
    if np.ndim(X) == 4:
        raise ValueError("X is four-dimensional (images?): pass architecture=meanfield.Conv(...) "
                         "for a convolutional network, or reshape X to (samples, features)")
    act, sw2, sb2, L = V.network(activation, sw2, sb2, depth)
    X = matrix("X", X)
    n = X.shape[0]
    if X2 is None:
        Z = X
        blocks = [(np.arange(n), np.arange(n), True)]
        m = n
    else:
        X2 = matrix("X2", X2)
        if X2.shape[1] != X.shape[1]:
            raise ValueError(f"X2 has {X2.shape[1]} features but X has {X.shape[1]}")
        m = X2.shape[0]
        Z = np.vstack([X, X2])
        blocks = [(np.arange(n, n + m), np.arange(n), False)]
    keep = None if depths is None else select_depths(depths, L)
    kept = L if keep is None else keep.size
    # the output (2 K m n doubles for K kept depths) and the recursion's work arrays (a few m x n)
    try:
        check_memory(8.0 * (2 * kept + 6) * m * n, f"kernels of {m} x {n} inputs at {kept} depths")
    except BudgetError as exc:
        x2 = "" if X2 is None else ", X2=X2"
        cli = "" if X2 is None else " --test X2.npy"
        raise BudgetError(f"{exc}; meanfield.kernels_to_store(X, ..., store='k.zarr'{x2}) "
                          f"computes them block by block into a zarr store on disk (CLI: "
                          f"meanfield kernel ... --store k.zarr{cli})") from None
    rec = setup(act, sw2, sb2, Z, blocks)
    deepest = L if keep is None else int(keep[-1])
    with bar(total=deepest - 1, desc=f"{act.name} kernels", unit="layer",
             enabled=progress) as layers:
        if keep is None:
            S = np.empty((L, m, n))
            T = np.empty((L, m, n))
            rec.compute(L, [(S, T)], progress=None if layers.disable else layers.update)
            dcoord = depth_coord(L)
        else:
            S = np.empty((keep.size, m, n))
            T = np.empty((keep.size, m, n))
            slot = {int(d): k for k, d in enumerate(keep)}
            for l in rec.iterate(deepest):
                if l in slot:
                    S[slot[l]], T[slot[l]] = rec.blocks[0].sig, rec.blocks[0].th
                if l > 1:
                    layers.update(1)
            dcoord = ("depth", keep, attrs("depth"))
    row = "X2" if X2 is not None else "X"
    return kernel_dataset(S, T, dcoord, row, global_attrs(act, sw2, sb2, rec,
                                                         f"NNGP and NTK kernels: {act.name}"))


def kernel_dataset(S, T, dcoord, row, meta) -> xr.Dataset:
    """The dataset of :func:`kernels`: ``nngp`` = S and ``ntk`` = T over (depth, i, j), each
    variable and coordinate described; S and T may be numpy or dask arrays (m, n per depth)."""
    m, n = S.shape[1], S.shape[2]
    return xr.Dataset(
        {
            "nngp": (("depth", "i", "j"), S, described("NNGP kernel Sigma^l (pre-activation covariance)")),
            "ntk": (("depth", "i", "j"), T, described("neural tangent kernel Theta^l (NTK parameterization)")),
        },
        coords={
            "depth": dcoord,
            "i": ("i", np.arange(m), described(f"row of {row}", "1")),
            "j": ("j", np.arange(n), described("row of X", "1")),
        },
        attrs=meta,
    )


def two_point_kernels(activation, sw2, sb2, depth, q1=1.0, q2=1.0, c=0.5) -> xr.Dataset:
    """NNGP and NTK of two inputs, without data, for every layer l = 1..depth.

    The inputs are given by their layer-1 kernel: variances ``q1 = Sigma^1(x, x)``,
    ``q2 = Sigma^1(x', x')`` (the q^1 of the length map, = sw2 |x|^2/d + sb2) and
    correlation ``c = Sigma^1(x, x') / sqrt(q1 q2)``; then the recursion of
    :func:`kernels` (docs/theory.md) runs on this 2 x 2 kernel.  With q1 = q2 the state is
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
    act, sw2, sb2, L = V.network(activation, sw2, sb2, depth)
    q1 = V.variance("q1", q1)
    q2 = V.variance("q2", q2)
    c = V.scalar("c", c, minimum=-1.0, maximum=1.0)
    check_memory(8.0 * 2 * 4 * L + 1e3 * L, f"two-point kernels at depths 1..{L}")
    s12 = c * math.sqrt(q1 * q2)
    sig1 = np.array([[q1, s12], [s12, q2]])
    shared = q1 == q2 and q1 > 0.0
    eps1 = np.array([[0.0, 1.0 - c], [1.0 - c, 0.0]]) if shared else None
    idx = np.arange(2)
    rec = Recursion(act, sw2, sb2, np.array([q1, q2]), shared, [Block(idx, idx, True, sig1, eps1)])
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
    meta = global_attrs(act, sw2, sb2, rec, f"two-point NNGP and NTK: {act.name}")
    meta.update({"q1_input": q1, "q2_input": q2, "c_input": c})
    return xr.Dataset({k: (("depth",), a, described(ln)) for k, (a, ln) in v.items()},
                      coords={"depth": depth_coord(L)}, attrs=meta)


