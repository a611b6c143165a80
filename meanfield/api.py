"""The public front of meanfield: every name a user calls, gathered from the layers.

Conventions (docs/theory.md): ``sw2`` = sigma_w^2 and ``sb2`` = sigma_b^2 are *variances*;
the weights of a layer with fan-in N are drawn from N(0, sw2 / N); depth l = 1 is the
first layer's pre-activation; kernels use the NTK parameterization.
"""

from __future__ import annotations

# Activations
from .core.activation import (Activation, activations, get_activation, register_activation,
                              unregister_activation)

# One point, grids, the critical line, advice
from .core.analysis import Result, analyze, fixed_points, phase_diagram
from .core.critical import CriticalPoint, critical_line, critical_point, critical_sw2
from .core.advice import Recommendation, recommend

# Codes and defaults shared by every dataset
from .core.vocabulary import CRITICAL_TOL, DEPTH_CONSTANT, Phase, Status

# Kernels on a data set: NNGP, NTK, trainability metrics per depth
from .ntk import kernels, ntk_metrics, two_point_kernels
from .ntk import Conv  # convolutional architecture for kernels / ntk_metrics
# Infinite-width predictions: NNGP posterior, NTK gradient-flow ensemble
from .ntk import predict
from .ntk.conv_scales import conv_depth_scales  # CNN depth scales per spatial Fourier mode

# Sweeps: chunked, resumable, distributed
from .sweeps import SweepSpec, load_spec, open_sweep, sweep, sweep_status
# Kernels larger than memory: block by block into a zarr store, on the sweep scheduler
from .sweeps import KernelStoreStatus, kernel_store_status, kernels_to_store, open_kernels

__all__ = [
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
    "critical_point",
    "CriticalPoint",
    "critical_line",
    "fixed_points",
    "Recommendation",
    "recommend",
    "Phase",
    "Status",
    "DEPTH_CONSTANT",
    "CRITICAL_TOL",
    # kernels
    "kernels",
    "ntk_metrics",
    "two_point_kernels",
    "Conv",
    "predict",
    "conv_depth_scales",
    # sweeps
    "SweepSpec",
    "load_spec",
    "sweep",
    "open_sweep",
    "sweep_status",
    # kernels larger than memory
    "kernels_to_store",
    "open_kernels",
    "kernel_store_status",
    "KernelStoreStatus",
]
