"""What every figure shares: the palette, labels, axes helpers and input checks.

Colours: the Okabe-Ito palette for lines and colour-blind-safe colormaps (RdBu_r,
diverging at chi_1 = 1; viridis, sequential).
"""

from __future__ import annotations

import numpy as np

from ..core import validate as V
from ..core.activation import get_activation
from ..core.vocabulary import DEPTH_CONSTANT

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms of
# colour-vision deficiency.  Line styles vary too where many curves share a plot.
# The palette's yellow (#F0E442) is left out: it is illegible as a thin line on white.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DIVERGING_CMAP = "RdBu_r"  # ColorBrewer RdBu: colour-blind safe; red = chaotic, blue = ordered
SEQUENTIAL_CMAP = "viridis"

LABELS = {
    "sw2": r"$\sigma_w^2$",
    "sb2": r"$\sigma_b^2$",
    "chi1": r"$\chi_1$",
    "chi_c": r"$\chi_c$",
    "q_star": r"$q^*$",
    "c_star": r"$c^*$",
    "xi_q": r"$\xi_q$ (layers)",
    "xi_c": r"$\xi_c$ (layers)",
    "xi_grad": r"$\xi_\nabla$ (layers)",
    "max_depth": rf"max trainable depth ${DEPTH_CONSTANT:g}\xi_c$ (layers)",
}
AXIS = {"sw2": r"weight variance $\sigma_w^2$", "sb2": r"bias variance $\sigma_b^2$"}
# Depth scales span several decades and diverge on the critical line: a log colour scale.
LOG_VARS = ("xi_q", "xi_c", "max_depth", "q_star")
# Colour range of the log-scaled depth variables: beyond 1e4 layers every value means
# "effectively critical", and letting the divergence set the range would wash out the rest.
LOG_VMAX = 1e4


def plt():
    import matplotlib.pyplot as plt

    return plt


def new_axes(ax, figsize=(6.4, 4.8)):
    if ax is None:
        fig, ax = plt().subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def act_label(act) -> str:
    p = ", ".join(f"{k}={v:g}" for k, v in act.parameters.items())
    return f"{act.name}({p})" if p else act.name


def two_d(ds, var):
    """ds[var] as a (sb2, sw2) array, after checking it is a 2-D (sw2, sb2) variable."""
    if var not in ds:
        raise ValueError(f"var: {var!r} is not in the dataset; choose one of {', '.join(map(str, ds.data_vars))}")
    da = ds[var]
    if set(da.dims) != {"sw2", "sb2"}:
        extra = [d for d in da.dims if d not in ("sw2", "sb2")]
        hint = (f"; select one value of {', '.join(extra)} first (ds.isel(...)) or use "
                f"phase_diagram_facets") if extra else ""
        raise ValueError(f"var: {var!r} must be 2-D over (sw2, sb2), got dims {da.dims}{hint}")
    return np.asarray(da.transpose("sb2", "sw2").values, dtype=float)



def act_of(activation):
    """The activation named (or given)."""
    return get_activation(activation)


def variances(name, values):
    """A 1-D float array of non-negative finite variances (a scalar gives one element)."""
    return V.variance_array(name, values)


def scalar_variance(name, value):
    """One non-negative finite variance as a float (ValueError otherwise)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a single number, got {value!r}")
    return V.variance(name, value)
