"""Finite-width Monte Carlo of random networks beside the theory (``mf.simulate.*``).

The computation lives in :mod:`meanfield.experiments.simulate`, the figures in
:mod:`meanfield.plot`; this namespace gathers both.
"""

from .experiments.simulate import simulate, width_convergence
from .plot.experiments import plot_simulation, plot_width_convergence

__all__ = ["simulate", "width_convergence", "plot_simulation", "plot_width_convergence"]
