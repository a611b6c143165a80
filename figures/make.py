"""Regenerate the figures in this directory from the ``sweeps/`` specs and the library.

    python figures/make.py              # every figure
    python figures/make.py tanh_phase length_map   # only these targets
    python figures/make.py --list       # the targets and what they draw

Phase diagrams are computed in memory with ``meanfield.phase_diagram`` on the axes of the
corresponding ``sweeps/*.toml`` file (read with ``meanfield.load_spec``), every
``STRIDE``-th point along sw2 and sb2: the same end points at half the resolution, so all
targets together run in about a minute on two cores instead of several.  Set
``MEANFIELD_FIGURE_STRIDE=1`` for the full resolution of the specs.

A figure replaces an existing PNG only if meanfield wrote it (the ``Software`` text chunk),
through a temporary file and a rename, as every meanfield output does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
# The figures must show this checkout's library, not whatever version is installed.
sys.path.insert(0, str(HERE.parent))

import meanfield as mf  # noqa: E402
from meanfield.sweeps.output import save_figure, write_file  # noqa: E402
SWEEPS = HERE.parent / "sweeps"
DPI = 150
# Keep every STRIDE-th grid point of a spec's axes (both end points are kept).
STRIDE = int(os.environ.get("MEANFIELD_FIGURE_STRIDE", "2"))

# The NTK data set: n points in d dimensions on the sphere |x|^2/d = 1 (equal norms let the
# kernels use the fast shared-norm path), labels sign(x_0).  d > n so that the layer-1
# kernel sw2 X X^T/d + sb2 is well conditioned.  Seeded: the figure is reproducible.
NTK_SEED, NTK_TRAIN, NTK_TEST, NTK_DIM, NTK_DEPTH = 0, 16, 8, 32, 100
# Ordered and chaotic points of the NTK figure: the critical sw2 divided / multiplied by
# this factor, far enough from the critical line that the exponential laws show in 100 layers.
NTK_FACTOR = 1.6
# The bias variance of Schoenholz et al. (2017), Fig. 1 and of the depth figures.
SB2 = 0.05


def _thin(a):
    a = np.asarray(a, dtype=float)
    if STRIDE <= 1 or a.size <= 2:
        return a
    idx = np.unique(np.r_[np.arange(0, a.size, STRIDE), a.size - 1])
    return a[idx]


def _spec_diagram(name, **select):
    """mf.phase_diagram on the (thinned) axes of sweeps/NAME.toml, for each of its
    activations / rho values, combined along the spec's extra dimension."""
    import xarray as xr

    spec = mf.load_spec(SWEEPS / f"{name}.toml")
    sw2, sb2 = _thin(spec.axis("sw2")), _thin(spec.axis("sb2"))
    opts = {k: v for k, v in spec.options.items() if k in ("q0", "depth_constant", "critical_tol")}
    acts = [mf.get_activation(a["name"], **a["params"]) for a in spec.activations]
    if "rho" in spec.axes:
        parts = [mf.phase_diagram(acts[0], sw2, sb2, rho=r, **opts) for r in spec.axis("rho")]
        return xr.concat(parts, dim=xr.DataArray(spec.axis("rho"), dims="rho", name="rho"))
    if spec.activation_axis:
        parts = [mf.phase_diagram(a, sw2, sb2, rho=spec.options.get("rho", 1.0), **opts) for a in acts]
        labels = [a["label"] for a in spec.activations]
        return xr.concat(parts, dim=xr.DataArray(labels, dims="activation", name="activation"),
                         combine_attrs="drop_conflicts")
    return mf.phase_diagram(acts[0], sw2, sb2, rho=spec.options.get("rho", 1.0), **opts)


# --------------------------------------------------------------------------- targets
def tanh_phase():
    """tanh phase diagram (sweeps/tanh.toml): chi_1, critical line, 6 xi_c = 10/50/200."""
    return mf.plot.phase_diagram(_spec_diagram("tanh"))


def activations_phase():
    """Phase diagrams of relu, leaky_relu(0.2), erf, tanh (sweeps/activations_compare.toml)."""
    return mf.plot.phase_diagram_facets(_spec_diagram("activations_compare"), ncols=2)


def tanh_dropout_phase():
    """tanh with dropout (sweeps/tanh_dropout.toml): max trainable depth per keep probability."""
    ds = _spec_diagram("tanh_dropout")
    return mf.plot.phase_diagram_facets(ds, "max_depth", dim="rho")


def length_map():
    """Length map q^{l+1}(q^l), fixed points, cobwebs (Poole et al. 2016, Fig. 1)."""
    return mf.plot.length_map("tanh", sw2=(1.0, 4.0, 9.0, 16.0), sb2=0.09)


def correlation_map():
    """Correlation map c^{l+1}(c^l) at q* (Poole et al. 2016, Fig. 2)."""
    return mf.plot.correlation_map("tanh", sw2=(1.0, 4.0, 9.0, 16.0), sb2=0.09)


def depth_profiles():
    """q^l, c^l and their exponential approach, ordered / critical / chaotic tanh."""
    sc = mf.critical_sw2("tanh", SB2)
    return mf.plot.depth_profiles("tanh", sw2=(round(sc / 1.2, 3), sc, round(sc * 1.4, 3)), sb2=SB2,
                                  depth=60)


def depth_scales():
    """xi_c, xi_q, xi_grad against sw2 at sb2 = 0 and 0.05 (sw2 axis of sweeps/tanh.toml)."""
    import matplotlib.pyplot as plt

    spec = mf.load_spec(SWEEPS / "tanh.toml")
    sw2 = spec.axis("sw2")  # full resolution: one row of the grid is cheap
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6), layout="constrained")
    for ax, b in zip(axes, (0.0, SB2)):
        mf.plot.depth_scales(mf.phase_diagram("tanh", sw2, [b]), ax=ax)
    return fig


def ntk_trainability():
    """NTK condition number and mean predictor per depth: ordered, critical, chaotic tanh."""
    rng = np.random.default_rng(NTK_SEED)

    def sphere(n):
        x = rng.standard_normal((n, NTK_DIM))
        return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(NTK_DIM)

    X, Xt = sphere(NTK_TRAIN), sphere(NTK_TEST)
    y = np.sign(X[:, 0])
    sc = mf.critical_sw2("tanh", SB2)
    metrics = [mf.ntk_metrics(X, y, Xt, "tanh", w, SB2, NTK_DEPTH)
               for w in (sc / NTK_FACTOR, sc, sc * NTK_FACTOR)]
    return mf.plot.ntk_trainability(metrics)


def critical_lines():
    """Critical lines of tanh, erf, relu, leaky_relu(0.2), selu, gelu, silu."""
    acts = ["tanh", "erf", "relu", mf.get_activation("leaky_relu", slope=0.2), "selu", "gelu", "silu"]
    return mf.plot.critical_lines(acts)


# The generalization phase diagram (Xiao et al. 2020): digits split, sw2 grids, depths scored.
# 200 / 200 images keep both targets to a few minutes on a shared 2-core machine.
GEN_TRAIN, GEN_TEST, GEN_SEED = 200, 200, 0
GEN_DEPTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
GEN_SW2 = {"tanh": [0.6, 0.9, 1.2, 1.5, 2.1, 2.5, 3.0, 4.0],  # + the critical 1.761
           "relu": [0.6, 1.0, 1.4, 1.7, 2.3, 2.6, 3.0]}  # + the critical 2 (unbounded beyond)


def _generalization(act):
    from meanfield.experiments.generalization import generalization

    ds = generalization(act, GEN_SW2[act], SB2, depths=GEN_DEPTHS, n_train=GEN_TRAIN,
                        n_test=GEN_TEST, seed=GEN_SEED)
    # the numbers quoted in the README
    write_file(HERE / f"generalization_{act}.nc", ds.to_netcdf, "netcdf", overwrite=True)
    return mf.plot.plot_generalization(ds)


def generalization_tanh():
    """Test accuracy of the NNGP/NTK predictors over (sw2, depth), tanh on digits, xi_c overlaid."""
    return _generalization("tanh")


def generalization_relu():
    """Test accuracy of the NNGP/NTK predictors over (sw2, depth), relu on digits, xi_c overlaid."""
    return _generalization("relu")


def conv_depth_scales():
    """CNN (tanh, 3x3 filters, 8x8 circular): xi of spatial Fourier modes against sw2."""
    from meanfield.plot.conv import conv_mode_depth_scales

    return conv_mode_depth_scales("tanh", SB2, 3, (8, 8))


TARGETS = {f.__name__: f for f in (tanh_phase, activations_phase, tanh_dropout_phase, length_map,
                                    correlation_map, depth_profiles, depth_scales, ntk_trainability,
                                    critical_lines, generalization_tanh, generalization_relu,
                                    conv_depth_scales)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Regenerate the figures in figures/.")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="figures to make (default: all)")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    p.add_argument("-o", "--outdir", default=str(HERE), help="output directory (default: figures/)")
    args = p.parse_args(argv)
    if args.list:
        for name, f in TARGETS.items():
            print(f"{name:20s} {f.__doc__.strip().splitlines()[0]}")
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    import matplotlib.pyplot as plt

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    for name in args.targets or TARGETS:
        t0 = time.perf_counter()
        fig = TARGETS[name]()
        path = outdir / f"{name}.png"
        save_figure(fig, path, dpi=DPI, overwrite=True)
        plt.close(fig)
        print(f"{path.name:28s} {time.perf_counter() - t0:6.1f} s", flush=True)
    print(f"total {time.perf_counter() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
