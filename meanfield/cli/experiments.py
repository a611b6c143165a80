"""``meanfield simulate`` and ``meanfield trainability``: finite networks against the theory.

    meanfield simulate ACT --sw2 SW2 --sb2 SB2 --depth L --width N [--networks K] [--seed S]
                       [-o OUT.nc] [--png FIG.png]
    meanfield trainability ACT [--sw2 START:STOP:N] [--sb2 SB2] [--depths 4,8,16]
                       [--width N] [--steps S] [--seed S] -o OUT.nc [--png FIG.png]

Bad input raises ValueError with a one-line message; the main CLI turns it into exit code 2.
"""

from __future__ import annotations

from pathlib import Path

from ..core.vocabulary import DEPTH_CONSTANT
from ..sweeps.output import check_output, save_figure, write_file
from .options import (add_activation, add_network, add_outputs, add_sw2_depth_grid, command, fmt,
                      parse_depths, parse_range)


def register(subparsers):
    """Register the ``simulate`` and ``trainability`` subcommands."""
    p = command(subparsers, "simulate", run_simulate)
    add_network(p)
    p.add_argument("--width", type=int, required=True, help="layer width N >= 1")
    p.add_argument("--networks", type=int, default=100, help="independent networks (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--c0", type=float, default=0.5, help="input correlation (default 0.5)")
    p.add_argument("--ntk", choices=("auto", "yes", "no"), default="auto",
                   help="measure the empirical NTK (auto: width <= 256)")
    add_outputs(p, "write the dataset to this netCDF file", png="draw the comparison to this PNG")

    p = command(subparsers, "trainability", run_trainability)
    add_activation(p, default="tanh")
    add_sw2_depth_grid(p, "1:4:16", "4,8,12,16,20,25,30,40,50,60,70")
    p.add_argument("--width", type=int, default=100, help="layer width (default 100)")
    p.add_argument("--steps", type=int, default=300, help="SGD steps (default 300)")
    p.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_outputs(p, "output netCDF file (.nc)", required=True, png="draw the heatmap to this PNG")
    return p


def _check_paths(output, png, overwrite):
    """Check both outputs before any work: a refusal costs nothing."""
    if output is not None:
        if Path(output).suffix.lower() != ".nc":
            raise ValueError(f"-o: output must end in .nc, got {Path(output).name!r}")
        check_output(output, "netcdf", overwrite=overwrite)
    if png is not None:
        if not str(png).lower().endswith(".png"):
            raise ValueError(f"--png: expected a .png file name, got {png!r}")
        check_output(png, "png", overwrite=overwrite, flag="--png")


def _save_png(fig, png, overwrite):
    import matplotlib.pyplot as plt

    try:
        save_figure(fig, png, dpi=150, overwrite=overwrite, flag="--png")
    finally:
        plt.close(fig)
    print(f"wrote {png}")


def _f(v):
    return fmt(v, 6)


def run_simulate(args) -> int:
    """Finite-width random networks (Monte Carlo) vs the mean-field theory.

    Draw random fully connected networks of finite width and compare per layer q^l, c^l,
    E[delta^2] and the empirical NTK with the mean-field values (variances sw2, sb2;
    docs/theory.md).
    """
    from tqdm import tqdm

    from ..experiments.simulate import simulate
    from ..plot import plot_simulation

    _check_paths(args.output, args.png, args.overwrite)
    ntk = {"auto": None, "yes": True, "no": False}[args.ntk]
    # delay: no bar at all for work that ends (or fails validation) within half a second
    with tqdm(total=args.networks, desc="simulating", unit="network", delay=0.5,
              leave=False) as bar:
        ds = simulate(args.activation, args.sw2, args.sb2, args.depth, args.width,
                      networks=args.networks, seed=args.seed, c0=args.c0, ntk=ntk,
                      progress=bar.update)
    print(format_simulation(ds))
    if args.output:
        write_file(args.output, ds.to_netcdf, "netcdf", overwrite=args.overwrite)
        print(f"wrote {args.output}")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        _save_png(plot_simulation(ds), args.png, args.overwrite)
    return 0


def format_simulation(ds) -> str:
    """Per-layer table: Monte Carlo mean +- SE and theory."""
    a = ds.attrs
    lines = [f"{a['activation']}  sw2={a['sw2']:g} sb2={a['sb2']:g}  width={a['width']}  "
             f"networks={a['networks']}  seed={a['seed']}"]
    head = f"{'l':>3} {'q (sim)':>20} {'q (MF)':>10} {'c (sim)':>20} {'c (MF)':>10} " \
           f"{'E[d^2] (sim)':>22} {'E[d^2] (MF)':>11}"
    ntk = bool(a["ntk_measured"])
    if ntk:
        head += f" {'NTK xx (sim)':>20} {'NTK (MF)':>10}"
    lines.append(head)
    for k in range(ds.sizes["depth"]):
        def pm(name, **sel):
            return (f"{_f(float(ds[name].isel(depth=k, **sel)))} +- "
                    f"{float(ds[name + '_se'].isel(depth=k, **sel)):.2g}")

        row = (f"{int(ds.depth[k]):>3} {pm('q', input=0):>20} "
               f"{_f(float(ds.q_theory.isel(depth=k, input=0))):>10} {pm('correlation'):>20} "
               f"{_f(float(ds.correlation_theory.isel(depth=k))):>10} {pm('grad', input=0):>22} "
               f"{_f(float(ds.grad_theory.isel(depth=k, input=0))):>11}")
        if ntk:
            row += (f" {pm('ntk', pair=0):>20} "
                    f"{_f(float(ds.ntk_theory.isel(depth=k, pair=0))):>10}")
        lines.append(row)
    return "\n".join(lines)


def run_trainability(args) -> int:
    """Train networks on digits over (sw2, depth) and fit L_max = C xi_c.

    SGD on scikit-learn's digits for networks initialized over a grid of sw2 and depths;
    records the training accuracy and fits the trainable depth as C xi_c (Schoenholz et
    al. 2017 predict C = 6).
    """
    from tqdm import tqdm

    from ..experiments.trainability import fit_depth_constant, trainability, with_fit
    from ..plot import plot_trainability

    _check_paths(args.output, args.png, args.overwrite)
    depths = parse_depths(args.depths)
    # per sw2 value: an accuracy, a loss and a flag per depth
    sw2 = parse_range(args.sw2, "--sw2", bytes_per_point=8 + 24 * len(depths))
    settings = dict(sb2=args.sb2, width=args.width, steps=args.steps, batch_size=args.batch_size,
                    learning_rate=args.lr, seed=args.seed)
    with tqdm(total=sum(depths), unit="layer", desc="training", delay=0.5, leave=False) as bar:
        ds = trainability(args.activation, sw2, depths, progress=bar.update, **settings)
    fit = fit_depth_constant(ds)
    out = with_fit(ds, fit)
    write_file(args.output, out.to_netcdf, "netcdf", overwrite=args.overwrite)
    print(f"trainable depth L_max = {_f(float(fit.constant))} xi_c "
          f"({int(fit.n_fitted)} sw2 values fitted; threshold accuracy "
          f"{float(fit.threshold):.3f}; mean field predicts {DEPTH_CONSTANT:g} xi_c)")
    print(f"wrote {args.output}")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        _save_png(plot_trainability(ds, fit), args.png, args.overwrite)
    return 0
