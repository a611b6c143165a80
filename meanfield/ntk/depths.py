"""The ``depths=`` keyword shared by :func:`kernels`, :func:`ntk_metrics` and :func:`predict`:
which depths of the recursion are kept (the recursion itself always runs through 1..L)."""

from __future__ import annotations

import numpy as np

__all__ = ["select_depths"]


def select_depths(depths, L):
    """The sorted, distinct depths to keep, as an int64 array within 1..L.

    Parameters
    ----------
    depths : None, int or iterable of int
        None keeps every depth 1..L.
    L : int
        The recursion's depth (already validated, >= 1).

    Raises
    ------
    ValueError
        Naming ``depths``: non-integers, values outside 1..L, an empty selection.
    """
    if depths is None:
        return np.arange(1, L + 1, dtype=np.int64)
    if isinstance(depths, (bool, np.bool_)):
        raise ValueError(f"depths must be integers in 1..{L}, got {depths!r}")
    try:
        arr = np.atleast_1d(np.asarray(depths, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"depths must be integers in 1..{L}, got {depths!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"depths must be a non-empty list of integers in 1..{L}, got {depths!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError(f"depths must be integers in 1..{L}, got {depths!r}")
    bad = arr[(arr < 1) | (arr > L)]
    if bad.size:
        raise ValueError(f"depths must lie in 1..{L} (depth={L}), got {bad[0]:g}")
    return np.unique(arr.astype(np.int64))
