"""The README table and figures/cntk_digits.png: CNN-GP / CNTK (flatten and GAP readouts)
by depth on digits, beside the fully connected NNGP / NTK and a trained finite CNN.

    python figures/cntk_digits.py            # compute (~500 s CPU), write .nc and .png
    python figures/cntk_digits.py --redraw   # only the PNG and the table, from the stored .nc

relu, sw2 = 2, sb2 = 0 (Arora et al.'s CNTK: the critical point of relu), 3 x 3 filters,
circular padding; digits split 200 / 200 (seed 0) as in figures/generalization_*.png; depths
1, 2, 3, 4, 6, 8; finite CNNs (32 channels, 400 full-batch gradient-descent steps) at depths
1, 2, 4.  Prints a Markdown table.  On a loaded machine set OPENBLAS_NUM_THREADS=1.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import xarray as xr  # noqa: E402

import meanfield as mf  # noqa: E402
from meanfield.experiments.cntk_digits import cntk_digits  # noqa: E402
from meanfield.sweeps.output import save_figure, write_file  # noqa: E402

SETTINGS = dict(activation="relu", sw2=2.0, sb2=0.0, depths=(1, 2, 3, 4, 6, 8), n_train=200,
                n_test=200, seed=0, finite_depths=(1, 2, 4), width=32, steps=400)
NC, PNG = HERE / "cntk_digits.nc", HERE / "cntk_digits.png"
NAMES = {("fc", "nngp"): "NNGP (FC)", ("fc", "ntk"): "NTK (FC)",
         ("conv flatten", "nngp"): "CNN-GP flatten", ("conv flatten", "ntk"): "CNTK flatten",
         ("conv gap", "nngp"): "CNN-GP GAP", ("conv gap", "ntk"): "CNTK GAP",
         ("conv flatten", "ntk at t"): "CNTK flatten, mean at t",
         ("conv flatten", "one net at t"): "CNTK flatten, one net at t",
         ("conv flatten", "finite"): "finite CNN flatten",
         ("conv gap", "ntk at t"): "CNTK GAP, mean at t",
         ("conv gap", "one net at t"): "CNTK GAP, one net at t",
         ("conv gap", "finite"): "finite CNN GAP"}


def table(ds):
    """Markdown: one row per model, one column per depth ("singular": no solve at float64)."""
    depths = [int(d) for d in ds.depth.values]
    lines = ["| model | " + " | ".join(f"depth {d}" for d in depths) + " |",
             "|---|" + "---|" * len(depths)]
    for (a, p), name in NAMES.items():
        if p not in ds.predictor.values:  # a dataset from before that predictor existed
            continue
        row = ds.accuracy.sel(architecture=a, predictor=p).values
        if np.all(np.isnan(row)) and p not in ("nngp", "ntk"):
            continue
        cells = []
        for d, v in zip(depths, row):
            if np.isfinite(v):
                cells.append(f"{v:.3f}")
            elif p in ("nngp", "ntk"):
                cells.append("singular")
            else:
                cells.append("")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redraw", action="store_true", help="only redraw from the stored .nc")
    args = p.parse_args(argv)
    if args.redraw:
        ds = xr.load_dataset(NC)
    else:
        ds = cntk_digits(**SETTINGS, progress=lambda s: print(s, file=sys.stderr, flush=True))
        write_file(NC, ds.to_netcdf, "netcdf", overwrite=True)
    save_figure(mf.plot.plot_cntk_digits(ds), PNG, overwrite=True)
    print(table(ds))
    print(f"learning rates: {ds.learning_rate.values}\ntimes: {ds.time.values}\n"
          f"final train losses: {ds.train_loss.values}")


if __name__ == "__main__":
    main()
