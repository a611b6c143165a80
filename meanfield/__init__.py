"""meanfield: mean-field theory of deep networks at initialization.

Phases (ordered / critical / chaotic), fixed points, depth scales and trainable depth for
an activation and (sigma_w^2, sigma_b^2), following THEORY.md (variances, not standard
deviations); NNGP/NTK kernels per depth; resumable sweeps; figures; finite-width
simulations (``meanfield.simulate``) and training experiments (``meanfield.trainability``).
"""

from . import plot, simulate, trainability
from ._version import __version__

# Activations
from .activations import (Activation, activations, get_activation, register_activation,
                          unregister_activation)

# One point, grids, critical line, advice
from .api import Result, analyze, critical_line, critical_sw2, fixed_points, phase_diagram
from .recommend import Recommendation, recommend

# Kernels on a data set: NNGP, NTK, trainability metrics per depth
from ._kernels import kernels, ntk_metrics, two_point_kernels

# Sweeps: chunked, resumable, distributed
from ._sweep import SweepSpec, load_spec, open_sweep, sweep, sweep_status

__all__ = [
    "__version__",
    # activations
    "Activation",
    "activations",
    "get_activation",
    "register_activation",
    "unregister_activation",
    # mean-field quantities
    "Result",
    "analyze",
    "phase_diagram",
    "critical_sw2",
    "critical_line",
    "fixed_points",
    "Recommendation",
    "recommend",
    # kernels
    "kernels",
    "ntk_metrics",
    "two_point_kernels",
    # sweeps
    "SweepSpec",
    "load_spec",
    "sweep",
    "open_sweep",
    "sweep_status",
    # figures, finite-width Monte Carlo, training experiments (submodules)
    "plot",
    "simulate",
    "trainability",
]
