"""Activations: the registry of built-in and user-registered activation functions.

An :class:`Activation` is a frozen description of phi with what the Gaussian-expectation
core needs to integrate it exactly (docs/theory.md, "Numerics"):

* ``closed_form``: which family of closed-form Gaussian expectations applies (ReLU family,
  erf, linear, sin) or none (quadrature).
* ``kinks``: the points where phi or a derivative is not smooth; quadrature splits there,
  because no rule that straddles a kink converges fast.
* ``quad_kappa``: sets the quadrature step, ``h = min(0.5, quad_kappa / sqrt(q))`` in the
  standard-normal variable z.  It is the distance d from the real axis to the nearest
  singularity of phi (in x) times 2*pi/64, so that the trapezoid error (~exp(-2 pi d / h),
  times the integrand's size near the pole) stays at rounding level.  Entire functions get
  a value measured against references (``tests/test_quadrature.py``).
* ``odd``: phi(-x) = -phi(x); lets the 2-D rule use a quarter plane and makes c* = 0 exact
  when sigma_b^2 = 0.
* ``slopes``: the limits phi'(+inf), phi'(-inf) for activations that grow linearly, used
  for chi_1 when the length map has no finite fixed point.
* ``derivatives`` (optional): phi^(k) for every k in closed form (the logistic family);
  it enables the Taylor expansion about c = 1 of the raw-input kernels
  (:mod:`meanfield.ntk.taylor`).  None for the others.

:meth:`Activation.record` hands the same facts to the jitted code as one
:data:`~meanfield.core.functions.ActRecord`.  Users add their own activations with
:func:`register_activation`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numba as nb
import numpy as np

from .functions import (CF_ERF, CF_GELU, CF_LINEAR, CF_NONE, CF_RELU, CF_SIN, K_CUSTOM, K_ELU,
                        K_ERF, K_GELU, K_HARD_TANH, K_LINEAR, K_RELU, K_SIGMOID, K_SILU, K_SIN,
                        K_SOFTPLUS, K_TANH, PHI_SIGNATURE, SELU_ALPHA, SELU_LAMBDA, ActRecord,
                        evaluate, no_custom)

__all__ = ["Activation", "activations", "get_activation", "register_activation",
           "unregister_activation"]

# Step-size constants: 2*pi*d/64 with d the singularity distance of phi in x.  The
# plain bound exp(-2 pi d / h) would allow /40, but near a pole the integrand is large
# and the Gaussian weight grows off the real axis; /64 is what holds 1e-15 for
# q in [1e-2, 3e3] against references with a 4x finer step (tests/test_quadrature.py).
_KAPPA_DIVISOR = 64.0
_KAPPA_POLE_HALF_PI = 2.0 * math.pi * (0.5 * math.pi) / _KAPPA_DIVISOR  # tanh: poles at +-i*pi/2
_KAPPA_POLE_PI = 2.0 * math.pi * math.pi / _KAPPA_DIVISOR  # logistic-based: poles at +-i*pi


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Activation:
    """An activation function with what the Gaussian-expectation core needs.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"tanh"``.
    kind : int
        Kernel dispatch code (``K_*``); ``K_CUSTOM`` for registered activations.
    params : tuple of float
        ``(a, b)``, the parameters passed to ``fn`` (slope, alpha, scale...).
    param_names : tuple of str
        Names of the user-facing parameters, in the order of ``params``.
    closed_form : int
        One of the ``CF_*`` codes; ``CF_NONE`` means quadrature.
    kinks : tuple of float
        Points in x where phi or phi' is not smooth.
    quad_kappa : float
        Quadrature step constant (see module docstring).
    odd : bool
        Whether phi is odd.
    slopes : tuple of float
        ``(phi'(+inf), phi'(-inf))`` for linearly growing phi; NaN when unknown or bounded.
    formula : str
        Human-readable definition.
    ufn : numba cfunc
        ``ufn(x, a, b) -> (phi(x), phi'(x))`` for custom activations.
    derivatives : callable or None
        ``derivatives(x, kmax) -> ndarray (kmax + 1, x.size)`` with row k = phi^(k)(x),
        exact in closed form; None when not known.
    """

    name: str
    kind: int
    params: tuple = (0.0, 0.0)
    param_names: tuple = ()
    closed_form: int = CF_NONE
    kinks: tuple = ()
    quad_kappa: float = _KAPPA_POLE_HALF_PI
    odd: bool = False
    slopes: tuple = (math.nan, math.nan)
    formula: str = ""
    ufn: Callable = field(default=no_custom, repr=False, compare=False)
    derivatives: Callable | None = field(default=None, repr=False, compare=False)

    @property
    def parameters(self) -> dict:
        """User-facing parameters as a dict, e.g. ``{"slope": 0.01}``."""
        return {k: float(v) for k, v in zip(self.param_names, self.params)}

    @cached_property
    def record(self) -> ActRecord:
        """The activation as the jitted code sees it (one named tuple, built once)."""
        return ActRecord(int(self.kind), float(self.params[0]), float(self.params[1]), self.ufn,
                         int(self.closed_form), np.asarray(self.kinks, dtype=np.float64),
                         float(self.quad_kappa), bool(self.odd), float(self.slopes[0]),
                         float(self.slopes[1]))

    def __call__(self, x):
        """Evaluate phi on an array (convenience; not used by the solvers)."""
        return self._evaluate(x, 0)

    def derivative(self, x):
        """Evaluate phi' on an array."""
        return self._evaluate(x, 1)

    def _evaluate(self, x, which):
        x = np.asarray(x, dtype=np.float64)
        flat = np.ascontiguousarray(x.reshape(-1))
        return evaluate(self.record, flat, which).reshape(x.shape)


def _make_builtins():
    """Factories for the built-in activations; each takes its parameters as keywords."""

    def tanh():
        return Activation("tanh", K_TANH, odd=True, slopes=(0.0, 0.0), formula="tanh(x)")

    def relu():
        return Activation("relu", K_RELU, (0.0, 0.0), closed_form=CF_RELU, kinks=(0.0,),
                          slopes=(1.0, 0.0), formula="max(x, 0)")

    def leaky_relu(slope=0.01):
        slope = _check_param("slope", slope)
        return Activation("leaky_relu", K_RELU, (slope, 0.0), ("slope",), CF_RELU, (0.0,),
                          slopes=(1.0, slope), formula=f"x if x > 0 else {slope:g}*x")

    def elu(alpha=1.0):
        alpha = _check_param("alpha", alpha, positive=True)
        return Activation("elu", K_ELU, (alpha, 1.0), ("alpha",), CF_NONE, (0.0,),
                          quad_kappa=0.5, slopes=(1.0, 0.0),
                          formula=f"x if x > 0 else {alpha:g}*(exp(x) - 1)")

    def selu():
        return Activation("selu", K_ELU, (SELU_ALPHA, SELU_LAMBDA), (), CF_NONE, (0.0,),
                          quad_kappa=0.5, slopes=(SELU_LAMBDA, 0.0),
                          formula="lambda*x if x > 0 else lambda*alpha*(exp(x) - 1)")

    def gelu():
        return Activation("gelu", K_GELU, closed_form=CF_GELU, quad_kappa=0.35, slopes=(1.0, 0.0),
                          formula="x * Phi(x)  (exact, erf form)")

    def silu():
        return Activation("silu", K_SILU, quad_kappa=_KAPPA_POLE_PI, slopes=(1.0, 0.0),
                          formula="x * sigmoid(x)  (swish)")

    def softplus():
        return Activation("softplus", K_SOFTPLUS, quad_kappa=_KAPPA_POLE_PI, slopes=(1.0, 0.0),
                          formula="log(1 + exp(x))", derivatives=softplus_derivatives)

    def sigmoid():
        return Activation("sigmoid", K_SIGMOID, quad_kappa=_KAPPA_POLE_PI, slopes=(0.0, 0.0),
                          formula="1 / (1 + exp(-x))", derivatives=sigmoid_derivatives)

    def erf():
        return Activation("erf", K_ERF, closed_form=CF_ERF, quad_kappa=0.35, odd=True,
                          slopes=(0.0, 0.0), formula="erf(x)")

    def sin():
        return Activation("sin", K_SIN, closed_form=CF_SIN, quad_kappa=0.35, odd=True,
                          formula="sin(x)")

    def linear():
        return Activation("linear", K_LINEAR, closed_form=CF_LINEAR, odd=True, slopes=(1.0, 1.0),
                          formula="x")

    def hard_tanh():
        return Activation("hard_tanh", K_HARD_TANH, kinks=(-1.0, 1.0), quad_kappa=0.5, odd=True,
                          slopes=(0.0, 0.0), formula="clip(x, -1, 1)")

    return {f.__name__: f for f in (tanh, relu, leaky_relu, elu, selu, gelu, silu, softplus,
                                     sigmoid, erf, sin, linear, hard_tanh)}


def _eulerian(n):
    """Eulerian numbers A(n, k), k = 0..n - 1 (exact in float64 for n <= 18)."""
    row = np.array([1.0])
    for m in range(2, n + 1):
        k = np.arange(m)
        prev = np.concatenate([row, [0.0]])
        shifted = np.concatenate([[0.0], row])
        row = (k + 1) * prev + (m - k) * shifted
    return row


def sigmoid_derivatives(x, kmax):
    """sigma^(k)(x), k = 0..kmax, for sigma(x) = 1 / (1 + e^-x), as rows of a (kmax + 1, x.size)
    array.  With s = sigma(x), t = sigma(-x) = 1 - s::

        sigma^(n)(x) = sum_{k=0}^{n-1} (-1)^k A(n, k) s^(k+1) t^(n-k),   n >= 1,

    A(n, k) the Eulerian numbers.  s and t are each formed without cancellation, so for
    large |x| the dominant term keeps its relative digits (sigma^(n) ~ +-e^(-|x|)).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    s = np.exp(-np.logaddexp(0.0, -x))
    t = np.exp(-np.logaddexp(0.0, x))
    out = np.empty((kmax + 1, x.size))
    out[0] = s
    # Powers by repeated products: np.power per term made this O(kmax^2) pow calls.
    sp = np.empty((kmax + 1, x.size))
    tp = np.empty((kmax + 1, x.size))
    sp[0] = s
    tp[0] = t
    for j in range(1, kmax + 1):
        sp[j] = sp[j - 1] * s
        tp[j] = tp[j - 1] * t
    for n in range(1, kmax + 1):
        acc = np.zeros_like(x)
        for k, a in enumerate(_eulerian(n)):
            acc += ((-1.0) ** k * a) * sp[k] * tp[n - k - 1]
        out[n] = acc
    return out


def softplus_derivatives(x, kmax):
    """softplus^(k)(x) = log(1 + e^x), then sigma^(k-1)(x) (:func:`sigmoid_derivatives`), k = 0..kmax."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    out = np.empty((kmax + 1, x.size))
    out[0] = np.logaddexp(0.0, x)
    if kmax >= 1:
        out[1:] = sigmoid_derivatives(x, kmax - 1)
    return out


def _check_param(name, value, positive=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"activation parameter {name!r} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (positive and v <= 0.0):
        need = "a positive finite number" if positive else "finite"
        raise ValueError(f"activation parameter {name!r} must be {need}, got {value!r}")
    return v


_BUILTINS = _make_builtins()
_CUSTOM: dict[str, Activation] = {}


def activations() -> list[str]:
    """Names of the available activations (built-in first, then registered ones)."""
    return list(_BUILTINS) + [n for n in _CUSTOM if n not in _BUILTINS]


def builtin_activations() -> list[str]:
    """Names of the built-in activations (those every process can rebuild from a name)."""
    return list(_BUILTINS)


def get_activation(activation, **params) -> Activation:
    """Resolve a name (or an :class:`Activation`) to an :class:`Activation`.

    Parameters
    ----------
    activation : str or Activation
        A name from :func:`activations`, or an Activation (returned unchanged).
    **params
        Activation parameters, e.g. ``slope=0.2`` for ``leaky_relu`` or ``alpha`` for ``elu``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones) or unknown/invalid parameter.
    """
    if isinstance(activation, Activation):
        if params:
            raise ValueError("activation: parameters can only be given with an activation name")
        return activation
    if not isinstance(activation, str):
        raise ValueError(f"activation must be a name or an Activation, got {type(activation).__name__}")
    name = activation.strip().lower().replace("-", "_")
    if name in _CUSTOM:
        if params:
            raise ValueError(f"activation {name!r} takes no parameters")
        return _CUSTOM[name]
    if name not in _BUILTINS:
        raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(activations())}")
    factory = _BUILTINS[name]
    try:
        return factory(**params)
    except TypeError:
        import inspect

        allowed = list(inspect.signature(factory).parameters) or ["none"]
        bad = ", ".join(sorted(set(params) - set(allowed)))
        raise ValueError(f"activation {name!r}: unknown parameter(s) {bad}; it takes: "
                         f"{', '.join(allowed)}") from None


def register_activation(name, phi, dphi=None, *, kinks=(), odd=False, singularity_distance=None,
                        slopes=(math.nan, math.nan), overwrite=False) -> Activation:
    """Register a custom activation from a Python (Numba-compilable) function.

    Parameters
    ----------
    name : str
        Registry name (letters, digits, underscores).
    phi : callable
        ``phi(x) -> float``.  It is compiled with ``numba.njit``; it must use only
        operations Numba supports (``math``, ``numpy`` scalar functions).
    dphi : callable, optional
        ``phi'(x)``.  When omitted it is computed by the complex-step derivative
        ``Im phi(x + i h) / h`` with h = 1e-30, which is exact to rounding (no
        subtractive cancellation), so a missing derivative costs no accuracy.  This
        needs ``phi`` to accept complex arguments (Numba compiles it for complex128);
        a ``phi`` with branches on ``x`` (``max``, ``if x > 0``) cannot, and then
        ``dphi`` is required.
    kinks : sequence of float
        Points where phi or phi' is not smooth (e.g. ``(0.0,)`` for a ReLU-like
        function).  Quadrature splits its panels there.
    odd : bool
        Declare phi odd (used for the exact c* = 0 at sigma_b^2 = 0).
    singularity_distance : float, optional
        Distance from the real axis to the nearest complex singularity of phi
        (pi/2 for tanh).  Sets the quadrature step; default pi/2, which is
        conservative for most activations.
    slopes : (float, float)
        ``phi'(+inf), phi'(-inf)`` if phi grows linearly (used for chi_1 when the
        length map has no finite fixed point).
    overwrite : bool
        Replace an existing registration of the same name.

    Returns
    -------
    Activation
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be an identifier-like string, got {name!r}")
    key = name.lower()
    if key in _BUILTINS:
        raise ValueError(f"name {name!r} is a built-in activation")
    if key in _CUSTOM and not overwrite:
        raise ValueError(f"activation {name!r} is already registered (pass overwrite=True)")
    if not callable(phi):
        raise ValueError("phi must be callable")
    kinks = tuple(sorted(_check_param("kinks", k) for k in kinks))
    d = math.pi / 2 if singularity_distance is None else _check_param(
        "singularity_distance", singularity_distance, positive=True)
    phi_j = phi if isinstance(phi, nb.core.dispatcher.Dispatcher) else nb.njit(phi)

    if dphi is not None:
        if not callable(dphi):
            raise ValueError("dphi must be callable")
        dphi_j = dphi if isinstance(dphi, nb.core.dispatcher.Dispatcher) else nb.njit(dphi)

        def both(x, a, b):
            return phi_j(x), dphi_j(x)
    else:
        try:
            phi_j(complex(0.3, 1e-30))
        except Exception as exc:  # numba raises several error types; all mean "not complex-safe"
            raise ValueError(
                f"activation {name!r}: no dphi given and phi cannot be evaluated at complex "
                f"arguments for the complex-step derivative ({type(exc).__name__}); pass dphi="
            ) from None

        def both(x, a, b):
            return phi_j(x), phi_j(complex(x, 1e-30)).imag * 1e30

    try:
        ufn = nb.cfunc(PHI_SIGNATURE)(both)
        v, dv = ufn(0.5, 0.0, 0.0)
    except Exception as exc:
        raise ValueError(f"activation {name!r}: phi does not compile with numba "
                         f"({type(exc).__name__})") from None
    if not (math.isfinite(v) and math.isfinite(dv)):
        raise ValueError(f"activation {name!r}: phi(0.5) or phi'(0.5) is not finite")
    act = Activation(key, K_CUSTOM, kinks=kinks, quad_kappa=2.0 * math.pi * d / _KAPPA_DIVISOR,
                     odd=bool(odd), slopes=(float(slopes[0]), float(slopes[1])),
                     formula=f"custom: {name}", ufn=ufn)
    _CUSTOM[key] = act
    return act


def unregister_activation(name) -> None:
    """Remove a custom activation (no error if it is not registered)."""
    _CUSTOM.pop(str(name).lower(), None)


# --------------------------------------------------------------------------- datasets
def activation_attrs(act) -> dict:
    """Global attributes naming an activation and its parameters (see :func:`activation_from_attrs`)."""
    out = {"activation": act.name, "activation_formula": act.formula}
    for k, v in act.parameters.items():
        out[f"activation_{k}"] = v
    return out


def activation_from_attrs(attributes):
    """The activation a dataset was computed with, rebuilt from its attributes.

    Raises ValueError when the attributes name no activation or one that is not
    registered in this session (a custom activation must be registered again first).
    """
    name = attributes.get("activation")
    if not isinstance(name, str):
        raise ValueError("the dataset does not name its activation (no 'activation' attribute)")
    prefix = "activation_"
    params = {k[len(prefix):]: float(v) for k, v in attributes.items()
              if k.startswith(prefix) and k not in ("activation_formula", "activation_parameters",
                                                    "activation_name")}
    if "activation_parameters" in attributes:
        params.update(json.loads(attributes["activation_parameters"]))
    return get_activation(name, **params)
