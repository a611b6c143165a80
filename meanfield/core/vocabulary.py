"""One vocabulary for every dataset the package writes: codes, defaults, metadata.

* :class:`Status` and :class:`Phase`: the integer codes the solvers return, with the
  names stored as CF ``flag_meanings`` and the sentences shown to users.
* The defaults every layer imports instead of repeating a literal: the depth constant of
  ``max_depth = DEPTH_CONSTANT * xi_c``, the critical band, the starting length ``q0``.
* :data:`VARIABLES`: ``long_name`` and ``units`` of every variable and coordinate.

The activation itself travels in a dataset's attributes through
:func:`meanfield.core.activation.activation_attrs` and ``activation_from_attrs``.
"""

from __future__ import annotations

import enum

import numpy as np

# Schoenholz et al. (2017): random networks train when L <~ 6 xi_c.
DEPTH_CONSTANT = 6.0
# What this project measured with figures/trainability.py (tanh on scikit-learn's digits,
# 300 SGD steps; figures/trainability_tanh.nc): the trainable boundary at 4.8 xi_c.
MEASURED_DEPTH_CONSTANT = 4.8
# Points with |log chi_1| <= CRITICAL_TOL are labelled critical: their gradient depth
# scale 1/|log chi_1| exceeds 1000 layers, deeper than any network the rule is used for.
CRITICAL_TOL = 1e-3
# The length map's fixed point reported is the one its iteration reaches from q0 = 1
# (inputs with unit per-coordinate variance).
Q0 = 1.0


class Coded(enum.IntEnum):
    """An integer code stored in datasets, with its ``flag`` (the CF ``flag_meanings`` word)
    and ``text`` (the sentence shown to users)."""

    def __new__(cls, value, flag, text=None):
        member = int.__new__(cls, value)
        member._value_ = value
        member.flag = flag
        member.text = text if text is not None else flag.replace("_", " ")
        return member


# Q_MAX of meanfield.core.length_map; repeated here as text so this module stays numba-free.
_Q_MAX_TEXT = "1e+08"


class Status(Coded):
    """Solver status of one point (first failure wins)."""

    OK = 0, "converged"
    NO_FIXED_POINT = 1, "no_finite_fixed_point", (
        f"no finite fixed point: the length map grows without bound (or, for an unbounded phi, "
        f"q* > {_Q_MAX_TEXT}); "
        f"q*, c*, xi_q, xi_c and max_depth are undefined")
    Q_MAXITER = 2, "length_map_iteration_cap", "the length-map solver hit its iteration cap"
    C_MAXITER = 3, "correlation_map_iteration_cap", "the correlation-map solver hit its iteration cap"
    NONFINITE = 4, "non_finite_expectation", "the activation produced a non-finite Gaussian expectation"
    C_UNDEFINED = 5, "correlation_undefined_at_zero_length", (
        "q* = 0 under dropout and phi has a kink at 0: the correlation q_ab/q is 0/0 with no "
        "limit, so c*, chi_c and xi_c are undefined")
    C_UNSTABLE = 6, "correlation_fixed_point_not_stable", (
        "the correlation fixed point found has chi_c >= 1, so it is not the attractor of the "
        "map (a solver failure): c*, chi_c, xi_c and max_depth are withheld")
    Q_RANGE = 7, "length_fixed_point_out_of_range", (
        f"q* exceeds {_Q_MAX_TEXT} (phi is bounded, so it is finite), beyond the range where "
        f"this activation's quadrature is affordable: nothing is reported")


class Phase(Coded):
    """Phase of an initialization (docs/theory.md, "Correlation map")."""

    UNDETERMINED = -1, "undetermined"
    ORDERED = 0, "ordered"
    CRITICAL = 1, "critical"
    CHAOTIC = 2, "chaotic"
    UNBOUNDED = 3, "unbounded", ("unbounded: the length map has no finite fixed point, the "
                                 "signal's length grows without bound with depth")


class KernelStatus(Coded):
    """Usability of the NTK on the training set at one depth (``ntk_metrics``)."""

    OK = 0, "ok"
    SINGULAR = 1, "numerically_singular_lambda_min_below_n_eps_lambda_max"
    NONFINITE = 2, "non_finite_kernel"
    NOT_PD = 3, "cholesky_failed_not_positive_definite"


def flag_attrs(enum_cls, long_name) -> dict:
    """CF ``flag_values`` / ``flag_meanings`` attributes of an integer-coded variable."""
    members = sorted(enum_cls, key=int)
    return {"long_name": long_name,
            "flag_values": np.array([int(m) for m in members], dtype=np.int8),
            "flag_meanings": " ".join(m.flag for m in members)}


# long_name, units of every variable and coordinate the package writes.
VARIABLES = {
    "sw2": ("weight variance sigma_w^2", "1"),
    "sb2": ("bias variance sigma_b^2", "1"),
    "rho": ("dropout keep probability rho", "1"),
    "q_star": ("length-map fixed point q*", "1"),
    "c_star": ("correlation-map fixed point c*", "1"),
    "chi1": ("slope of the correlation map at c = 1, chi_1", "1"),
    "chi_c": ("slope of the correlation map at c*, chi_c", "1"),
    "xi_q": ("length depth scale xi_q", "layers"),
    "xi_c": ("correlation depth scale xi_c", "layers"),
    "xi_grad": ("gradient depth scale xi_grad (negative: gradients grow backwards)", "layers"),
    "max_depth": ("predicted maximum trainable depth", "layers"),
    "converged": ("every solver at this point converged", "1"),
    "depth": ("layer index l (pre-activation layers)", "layers"),
    # an activation axis (sweeps over several activations)
    "activation": ("activation function (label)", "1"),
    "activation_name": ("activation registry name", "1"),
    "activation_formula": ("activation definition", "1"),
    "activation_parameters": ("activation parameters (JSON)", "1"),
}


def attrs(name, **extra) -> dict:
    """``{"long_name", "units"}`` of a variable from :data:`VARIABLES`, plus ``extra``."""
    long_name, units = VARIABLES[name]
    return {"long_name": long_name, "units": units, **extra}


def described(long_name, units="1", **extra) -> dict:
    """Attributes of a variable not in :data:`VARIABLES` (kernels, metrics, experiments)."""
    return {"long_name": long_name, "units": units, **extra}


CONVENTIONS = ("docs/theory.md: sw2, sb2 are variances; W ~ N(0, sw2/fan_in); NTK "
               "parameterization; depth l = 1 is the first layer's pre-activation")
