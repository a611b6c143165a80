"""``meanfield generalization``: the generalization phase diagram on digits.

    meanfield generalization ACT [--sw2 START:STOP:N | LIST] [--sb2 SB2] [--depths 1,2,4,...]
                             [--n-train 500] [--n-test 500] [--seed 0] [--diag-reg R]
                             -o OUT.nc [--png FIG.png] [--overwrite]

Test accuracy of the infinite-width NNGP and NTK predictors over (sw2, depth), beside the
mean-field xi_c; prints per sw2 the phase, xi_c, 6 xi_c and the measured first depth at
chance and first singular depth.  Bad input raises ValueError with a one-line message.
"""

from __future__ import annotations

from ..core.vocabulary import DEPTH_CONSTANT
from ..sweeps.output import write_file
from .experiments import _check_paths, _save_png
from .options import (add_activation, add_outputs, add_sw2_depth_grid, command, fmt, parse_depths,
                      parse_range, progress)


def register(subparsers):
    p = command(subparsers, "generalization", run_generalization)
    add_activation(p, default="tanh")
    add_sw2_depth_grid(p, "0.6:4:9", "1,2,3,4,6,8,12,16,24,32,48,64,96,128",
                       sw2_note="; the critical sw2 is added")
    p.add_argument("--n-train", type=int, default=500, help="training images (default 500)")
    p.add_argument("--n-test", type=int, default=500, help="test images (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--diag-reg", type=float, default=0.0,
                   help="ridge relative to the mean kernel diagonal (default 0)")
    p.add_argument("--depth-constant", type=float, default=DEPTH_CONSTANT,
                   help=f"C of the C xi_c curve (default {DEPTH_CONSTANT:g})")
    add_outputs(p, "output netCDF file (.nc)", required=True, png="draw the diagram to this PNG")
    return p


def run_generalization(args) -> int:
    """Test accuracy of NNGP/NTK predictors on digits over (sw2, depth).

    The generalization phase diagram (Xiao, Pennington and Schoenholz 2020): infinite-width
    NNGP and NTK predictors trained to convergence on a split of scikit-learn's digits,
    scored over a grid of sw2 and depths, beside the mean-field depth scale xi_c
    (docs/theory.md).
    """
    from ..experiments.generalization import generalization

    _check_paths(args.output, args.png, args.overwrite)
    sw2 = parse_range(args.sw2, "--sw2")
    depths = parse_depths(args.depths)
    with progress(total=len(sw2) + 1, desc="sw2", unit="sw2") as bar:
        ds = generalization(args.activation, sw2, args.sb2, depths=depths, n_train=args.n_train,
                            n_test=args.n_test, seed=args.seed, diag_reg=args.diag_reg,
                            depth_constant=args.depth_constant,
                            progress=lambda i, n: (setattr(bar, "total", n), bar.update(1)))
    print(format_table(ds))
    write_file(args.output, ds.to_netcdf, "netcdf", overwrite=args.overwrite)
    print(f"wrote {args.output}")
    if args.png:
        import meanfield.plot as mplot

        _save_png(mplot.plot_generalization(ds), args.png, args.overwrite)
    return 0


def format_table(ds) -> str:
    a = ds.attrs
    lines = [f"{a['activation']}  sb2={a['sb2']:g}  critical sw2={fmt(float(a['critical_sw2']), 6)}  "
             f"digits {a['n_train']}/{a['n_test']}  chance threshold {a['chance_threshold']:.3f}"]
    kinds = [str(k) for k in ds.kernel.values]
    head = f"{'sw2':>8} {'phase':>9} {'xi_c':>9} {'C xi_c':>9}"
    for k in kinds:
        head += f" {k + ' chance@':>13} {k + ' sing@':>11} {k + ' best':>9}"
    lines.append(head)
    for i, s in enumerate(ds.sw2.values):
        row = (f"{s:>8.4g} {str(ds.phase.values[i]):>9} {fmt(float(ds.xi_c[i]), 4):>9} "
               f"{fmt(float(ds.max_depth[i]), 4):>9}")
        for k in kinds:
            best = ds.accuracy.sel(kernel=k).isel(sw2=i).max(skipna=True)
            row += (f" {fmt(float(ds.chance_depth.sel(kernel=k)[i]), 4):>13} "
                    f"{fmt(float(ds.singular_depth.sel(kernel=k)[i]), 4):>11} "
                    f"{fmt(float(best), 3):>9}")
        lines.append(row)
    return "\n".join(lines)
