"""meanfield: mean-field theory of deep networks at initialization.

Phases (ordered / critical / chaotic), fixed points, depth scales and trainable depth for
an activation and (sigma_w^2, sigma_b^2), following docs/theory.md (variances, not
standard deviations); NNGP/NTK kernels per depth; resumable sweeps; figures
(``meanfield.plot``); finite-width simulations (``meanfield.simulate``) and training
experiments (``meanfield.trainability``).

The package is layered; each folder imports only from the ones before it:
``core`` (activations, Gaussian expectations, solvers) -> ``ntk`` -> ``sweeps`` ->
``experiments`` -> ``plot`` -> ``cli``; ``api`` gathers the public names.
"""

from . import plot, simulate, trainability
from ._version import __version__
from .api import *  # noqa: F401,F403  (the public contract, listed in api.__all__)
from .api import __all__ as _api_all

__all__ = ["__version__", *_api_all, "plot", "simulate", "trainability"]
