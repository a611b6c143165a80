"""Regenerate figures/trainability_tanh.png and figures/trainability_tanh.nc.

    python figures/trainability.py            # train, then write the .nc and the .png
    python figures/trainability.py --redraw   # redraw the .png from the stored .nc

Both files are replaced only if meanfield wrote them (written under a temporary name, then
renamed).  About five minutes on two cores.  Trains tanh networks (width 100, sigma_b^2 = 0.05) for 300 SGD
steps on scikit-learn's digits over a grid of sigma_w^2 and depth, and draws the training
accuracy with the mean-field prediction 6 xi_c (Schoenholz et al. 2017) and the fitted
boundary C xi_c; prints C.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

# The figure must show this checkout's library, not whatever version is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meanfield.sweeps.output import save_figure, write_file  # noqa: E402
from meanfield.trainability import (  # noqa: E402
    fit_depth_constant, plot_trainability, trainability, with_fit)

HERE = Path(__file__).resolve().parent
SW2 = np.linspace(1.0, 4.0, 16)
DEPTHS = (4, 8, 12, 16, 20, 25, 30, 40, 50, 60, 70)
SETTINGS = dict(sb2=0.05, width=100, steps=300, batch_size=32, learning_rate=0.01, seed=0)


def main():
    import xarray as xr
    from tqdm import tqdm

    nc, png = HERE / "trainability_tanh.nc", HERE / "trainability_tanh.png"
    if "--redraw" in sys.argv[1:]:
        with xr.open_dataset(nc) as stored:
            ds = stored.drop_vars("boundary_depth", errors="ignore").load()  # the fit is redone
    else:
        with tqdm(total=sum(DEPTHS), unit="layer", desc="training") as bar:
            ds = trainability("tanh", SW2, DEPTHS, progress=bar.update, **SETTINGS)
    fit = fit_depth_constant(ds)
    if "--redraw" not in sys.argv[1:]:
        write_file(nc, with_fit(ds, fit).to_netcdf, "netcdf", overwrite=True)
    save_figure(plot_trainability(ds, fit), png, dpi=150, overwrite=True)
    print(f"trainable depth = {float(fit.constant):.2f} xi_c (geometric spread x{float(fit.constant_spread):.2f}, "
          f"{int(fit.n_fitted)} sw2 values; threshold accuracy {float(fit.threshold):.3f}); "
          f"Schoenholz et al. predict 6 xi_c")
    print(f"wrote {png}" + ("" if "--redraw" in sys.argv[1:] else f" and {nc}"))


if __name__ == "__main__":
    main()
