"""Input validation shared by the public functions: one-line ValueErrors naming the parameter."""

from __future__ import annotations

import math

import numpy as np


def scalar(name, value, *, minimum=0.0, inclusive=True, maximum=None, max_inclusive=True):
    """A finite float within bounds, or ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (v < minimum or (not inclusive and v == minimum)):
        rel = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be {rel} {minimum:g}, got {v:g}")
    if maximum is not None and (v > maximum or (not max_inclusive and v == maximum)):
        rel = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {rel} {maximum:g}, got {v:g}")
    return v


def variance_array(name, values):
    """A non-empty 1-D float64 array of finite, non-negative variances."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got {values!r}") from None
    arr = np.atleast_1d(arr)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative (variances, not standard deviations); "
                         f"min is {arr.min():g}")
    return arr


def variance(name, value):
    """A finite, non-negative variance."""
    return scalar(name, value, minimum=0.0)


def keep_probability(value):
    """Dropout keep probability rho in (0, 1]."""
    return scalar("rho", value, minimum=0.0, inclusive=False, maximum=1.0)


def integer(name, value, minimum):
    """An integer >= ``minimum`` (an integral float is accepted; bool is not), or ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        f = float(value)
        ok = math.isfinite(f) and f.is_integer()
    except (TypeError, ValueError):
        ok = False
    if not ok or int(f) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(f)


def depth(value, name="depth"):
    """A number of layers: an integer >= 1."""
    return integer(name, value, 1)


def network(activation, sw2, sb2, L):
    """(Activation, sw2, sb2, L) of a network of depth L, validated: an unknown activation,
    a negative or non-finite variance or a depth L < 1 raises ValueError naming it."""
    from .activation import get_activation  # activation.py sits above this module

    return get_activation(activation), variance("sw2", sw2), variance("sb2", sb2), depth(L)
