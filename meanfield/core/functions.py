"""The activation functions as Numba code, and the record that carries one into the kernels.

Every built-in computes ``(phi(x), phi'(x))`` from x and up to two parameters.
The jitted code receives an activation as one :data:`ActRecord` (a named tuple, so Numba
compiles it to a plain struct and caches the kernels across processes) and evaluates it
with :func:`phi`, which dispatches on the record's integer ``kind``.  Custom activations
arrive as a first-class function in the record's ``ufn`` field.

Why integer dispatch instead of passing the jitted function itself: Numba keys its
on-disk cache on a dispatcher argument's address, so kernels taking dispatchers would be
recompiled in every process.  A first-class function *type* is the same for every custom
activation, so one compiled kernel serves them all.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba as nb
import numpy as np

# Closed-form families understood by meanfield.core.gaussian.closed ("family" in the record).
CF_NONE = 0
CF_RELU = 1  # phi(x) = x for x > 0, a*x for x <= 0 (relu: a = 0, leaky_relu: a = slope)
CF_ERF = 2
CF_LINEAR = 3
CF_SIN = 4
CF_GELU = 5

ActRecord = namedtuple("ActRecord", ["kind", "a", "b", "ufn", "family", "kinks", "kappa", "odd",
                                     "slope_pos", "slope_neg"])
ActRecord.__doc__ = """What the jitted code knows of an activation (built by ``Activation.record``).

kind : int
    Dispatch code of :func:`phi` (``K_*``; ``K_CUSTOM`` for registered activations).
a, b : float
    The parameters passed to the scalar function (slope, alpha, scale).
ufn : first-class function
    ``ufn(x, a, b) -> (phi, phi')`` of a custom activation (a NaN placeholder otherwise).
family : int
    Closed-form family ``CF_*`` (``CF_NONE``: quadrature).
kinks : float64 array
    Points where phi or a derivative is not smooth; quadrature splits there.
kappa : float
    Quadrature step constant: the trapezoid step is ``min(0.5, kappa / sqrt(q))``.
odd : bool
    phi(-x) = -phi(x).
slope_pos, slope_neg : float
    phi'(+inf), phi'(-inf) for linearly growing phi (NaN when bounded or unknown).
"""

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
# SELU constants from Klambauer et al. (2017), "Self-Normalizing Neural Networks".
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


# --------------------------------------------------------------------------- built-ins
K_TANH, K_RELU, K_ELU, K_GELU, K_SILU, K_SOFTPLUS, K_SIGMOID, K_ERF, K_SIN, K_LINEAR, \
    K_HARD_TANH = range(11)
K_CUSTOM = 99

PHI_SIGNATURE = nb.types.UniTuple(nb.types.float64, 2)(nb.types.float64, nb.types.float64,
                                                       nb.types.float64)


@nb.cfunc(PHI_SIGNATURE, cache=True)
def no_custom(x, a, b):
    """Placeholder first-class function in the record of a built-in activation."""
    return math.nan, math.nan


@nb.njit(cache=True)
def _sigmoid(x):
    # Two branches so that exp never overflows.
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@nb.njit(cache=True)
def phi(act, x):
    """(phi(x), phi'(x)) of the activation described by the record ``act``.

    Parameters of the built-ins: relu family ``a`` = negative slope; elu ``a`` = alpha and
    ``b`` = output scale (1 for ELU, lambda for SELU).
    """
    kind = act.kind
    a = act.a
    b = act.b
    if kind == K_TANH:
        t = math.tanh(x)
        return t, 1.0 - t * t
    if kind == K_RELU:
        if x > 0.0:
            return x, 1.0
        return a * x, a
    if kind == K_ELU:
        if x > 0.0:
            return b * x, b
        e = math.expm1(x)
        return b * a * e, b * a * (e + 1.0)
    if kind == K_GELU:
        cdf = 0.5 * math.erfc(-x / _SQRT2)
        return x * cdf, cdf + x * _INV_SQRT_2PI * math.exp(-0.5 * x * x)
    if kind == K_SILU:
        s = _sigmoid(x)
        return x * s, s * (1.0 + x * (1.0 - s))
    if kind == K_SOFTPLUS:
        return max(x, 0.0) + math.log1p(math.exp(-abs(x))), _sigmoid(x)
    if kind == K_SIGMOID:
        s = _sigmoid(x)
        return s, s * (1.0 - s)
    if kind == K_ERF:
        return math.erf(x), _TWO_OVER_SQRT_PI * math.exp(-x * x)
    if kind == K_SIN:
        return math.sin(x), math.cos(x)
    if kind == K_LINEAR:
        return x, 1.0
    if kind == K_HARD_TANH:
        if x >= 1.0:
            return 1.0, 0.0
        if x <= -1.0:
            return -1.0, 0.0
        return x, 1.0
    return act.ufn(x, a, b)


@nb.njit(cache=True)
def evaluate(act, x, which):
    """phi (``which = 0``) or phi' (``which = 1``) at every element of the 1-D array ``x``."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = phi(act, x[i])[which]
    return out


@nb.njit(cache=True)
def kink_at_zero(act):
    """Whether phi or phi' has a kink at x = 0."""
    for k in range(act.kinks.shape[0]):
        if act.kinks[k] == 0.0:
            return True
    return False
