"""Matplotlib figures of mean-field theory (docs/theory.md conventions: sw2, sb2 are variances).

Every function returns a :class:`matplotlib.figure.Figure` and never shows it; the caller
saves or displays it.  Functions that take a dataset work on datasets computed in memory
or loaded from disk (netCDF, zarr); the others compute what they draw with the library.

Figures
-------
phase_diagram, phase_diagram_facets, critical_lines (``phase``)
    chi_1 (or any variable) over (sigma_w^2, sigma_b^2) with the critical line and
    max-depth contours; one panel per activation or rho; several critical lines.
length_map, correlation_map, depth_profiles (``maps``)
    The iterated maps with fixed points and cobwebs; q^l and c^l against depth.
depth_scales (``scales``)
    xi_q, xi_c and xi_grad against sigma_w^2.
ntk_trainability (``ntk``)
    Per-depth NTK condition number and mean-predictor decay.
plot_simulation, plot_width_convergence, plot_trainability (``experiments``)
    Finite networks beside the theory.
plot_generalization (``generalization``)
    Test accuracy of the infinite-width NNGP / NTK predictors over (sigma_w^2, depth).
plot_cntk_digits (``cntk``)
    CNN-GP / CNTK accuracy by depth beside fully connected kernels and finite CNNs.

Colours and labels are in ``style``.
"""

from .cntk import plot_cntk_digits
from .experiments import plot_simulation, plot_trainability, plot_width_convergence
from .generalization import plot_generalization
from .ntk import ntk_trainability
from .maps import correlation_map, depth_profiles, length_map
from .phase import critical_lines, phase_diagram, phase_diagram_facets
from .scales import depth_scales
from .style import DIVERGING_CMAP, PALETTE, SEQUENTIAL_CMAP

__all__ = ["phase_diagram", "phase_diagram_facets", "length_map", "correlation_map",
           "depth_profiles", "depth_scales", "ntk_trainability", "critical_lines",
           "plot_simulation", "plot_width_convergence", "plot_trainability", "plot_generalization",
           "plot_cntk_digits",
           "PALETTE", "DIVERGING_CMAP", "SEQUENTIAL_CMAP"]
