"""Training networks with SGD over (sigma_w^2, depth) against 6 xi_c (``mf.trainability.*``).

The computation lives in :mod:`meanfield.experiments.trainability`, the figure in
:mod:`meanfield.plot`; this namespace gathers both.
"""

from .experiments.trainability import (CHANCE, PREDICTED_CONSTANT, digits_data,
                                       fit_depth_constant, trainability, with_fit)
from .plot.experiments import plot_trainability

__all__ = ["digits_data", "trainability", "fit_depth_constant", "with_fit", "plot_trainability",
           "CHANCE", "PREDICTED_CONSTANT"]
