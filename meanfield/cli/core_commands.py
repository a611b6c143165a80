"""``meanfield activations | analyze | critical | recommend | diagram``: the core's commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..sweeps.output import check_output, quiet_consolidation, save_figure, write_file, write_store
from .options import (add_activation, add_depth_constant, add_outputs, add_point, add_solver_options, busy,
                      check_grid, fmt, parse_range, progress, range_count)

DEFAULT_ACTIVATION = "tanh"
DEFAULT_SW2 = "0.5:4:200"
DEFAULT_SB2 = "0:2:100"
# Memory per grid point of a phase diagram: 11 variables (~75 bytes) computed, assembled
# and encoded for writing, each a copy.
BYTES_PER_POINT = 400
# Points per block of a diagram computed with a progress bar (about a second of tanh).
BLOCK_POINTS = 200_000


def cmd_activations(args):
    import meanfield as mf

    for name in mf.activations():
        act = mf.get_activation(name)
        print(f"{name:12s} {act.formula}")


def cmd_analyze(args):
    import meanfield as mf

    with busy("analyzing"):
        res = mf.analyze(args.activation, args.sw2, args.sb2, rho=args.rho, q0=args.q0,
                         depth_constant=args.depth_constant)
    if args.json:
        d = res.to_dict()
        # JSON has no inf/NaN: write them as strings so the output stays valid JSON.
        print(json.dumps({k: (fmt(v) if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in d.items()}, indent=2))
    else:
        print(repr(res))


def cmd_critical(args):
    import meanfield as mf

    sb2 = parse_range(args.sb2, "--sb2")
    mf.get_activation(args.activation)  # an unknown name fails before the bar appears
    for s in progress(sb2, desc="critical line", unit="point"):
        cp = mf.critical_point(args.activation, s)
        line = f"sb2 = {s:.12g}   critical sw2 = {fmt(cp.sw2)}"
        if math.isfinite(cp.sw2):
            line += f"   q* = {fmt(cp.q_star)}"
        # The reason is the answer where there is no edge of chaos, and a caveat (q* = inf
        # for the ReLU family) where there is one.
        print(line + (f"   ({cp.reason})" if cp.reason else ""))


def cmd_recommend(args):
    import meanfield as mf

    with busy("recommending"):
        text = str(mf.recommend(args.activation, args.depth, sb2=args.sb2,
                                depth_constant=args.depth_constant))
    print(text)


def _diagram(args, sw2, sb2):
    """The phase diagram, computed in blocks of sw2 rows under a progress bar (each point
    is independent, so the blocks join bit for bit into the one-call result)."""
    import numpy as np
    import xarray as xr

    import meanfield as mf

    kw = dict(rho=args.rho, q0=args.q0, depth_constant=args.depth_constant)
    rows = max(1, BLOCK_POINTS // sb2.size)
    if sw2.size <= rows:
        # A small diagram takes well under a second once compiled; a line appears only
        # on a first run, while Numba compiles the solvers (about a minute, then cached).
        with busy("diagram (the first run compiles the solvers)"):
            return mf.phase_diagram(args.activation, sw2, sb2, **kw)
    mf.get_activation(args.activation)  # an unknown name fails before the bar appears
    starts = np.arange(0, sw2.size, rows)
    with progress(total=sw2.size * sb2.size, desc="diagram", unit="point") as bar:
        parts = []
        for i in starts:
            parts.append(mf.phase_diagram(args.activation, sw2[i:i + rows], sb2, **kw))
            bar.update(parts[-1].sizes["sw2"] * sb2.size)
    return xr.concat(parts, dim="sw2", data_vars="all", coords="different",
                     compat="identical", join="exact", combine_attrs="override")


def cmd_diagram(args):
    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".nc", ".zarr"):
        raise ValueError(f"-o: output must end in .nc (netCDF) or .zarr, got {out.name!r}")
    if args.png is not None and not str(args.png).lower().endswith(".png"):
        raise ValueError(f"--png: expected a .png file name, got {args.png!r}")
    kind = "netcdf" if suffix == ".nc" else "zarr"
    # Every output is checked before the work starts: a refusal costs nothing.
    check_output(out, kind, overwrite=args.overwrite)
    if args.png is not None:
        check_output(args.png, "png", overwrite=args.overwrite, flag="--png")
    check_grid((range_count(args.sw2), range_count(args.sb2)), BYTES_PER_POINT,
               f"--sw2 {args.sw2} x --sb2 {args.sb2}")
    sw2 = parse_range(args.sw2, "--sw2")
    sb2 = parse_range(args.sb2, "--sb2")
    ds = _diagram(args, sw2, sb2)
    if args.png and args.var not in ds.data_vars:
        raise ValueError(f"--var: {args.var!r} is not a variable of the diagram; choose one of "
                         f"{', '.join(map(str, ds.data_vars))}")
    if kind == "netcdf":
        write_file(out, ds.to_netcdf, "netcdf", overwrite=args.overwrite)
    else:
        def to_zarr(tmp):
            with quiet_consolidation():
                ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=3)

        write_store(out, to_zarr, overwrite=args.overwrite)
    from ..core.vocabulary import Phase

    counts = {ph.flag: int((ds.phase == int(ph)).sum()) for ph in
              (Phase.ORDERED, Phase.CRITICAL, Phase.CHAOTIC, Phase.UNBOUNDED)}
    print(f"wrote {out} ({ds.sizes['sw2']} x {ds.sizes['sb2']} points; "
          + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; {int((~ds.converged).sum())} not converged)")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .. import plot

        fig = plot.phase_diagram(ds, var=args.var)
        try:
            save_figure(fig, args.png, dpi=150, overwrite=args.overwrite, flag="--png")
        finally:
            plt.close(fig)
        print(f"wrote {args.png}")


def register(sub):
    """Add the core's subcommands to an argparse subparsers object."""
    sp = sub.add_parser("activations", help="list the built-in activations")
    sp.set_defaults(func=cmd_activations)

    sp = sub.add_parser("analyze", help="every quantity at one (sw2, sb2)")
    add_activation(sp)
    add_point(sp)
    sp.add_argument("--json", action="store_true", help="print JSON")
    add_solver_options(sp)
    sp.set_defaults(func=cmd_analyze)

    sp = sub.add_parser("critical", help="critical sw2 (chi_1 = 1) at given sb2")
    add_activation(sp)
    sp.add_argument("--sb2", default="0", help="value, list a,b,c or START:STOP:N")
    sp.set_defaults(func=cmd_critical)

    sp = sub.add_parser("recommend", help="initialization for a network of a given depth")
    add_activation(sp)
    sp.add_argument("--depth", type=int, required=True, help="number of layers L")
    sp.add_argument("--sb2", type=float, default=None, help="bias variance (default per activation)")
    add_depth_constant(sp)
    sp.set_defaults(func=cmd_recommend)

    sp = sub.add_parser("diagram", help="phase diagram over (sw2, sb2) written to .nc or .zarr")
    add_activation(sp, default=DEFAULT_ACTIVATION)
    sp.add_argument("--sw2", default=DEFAULT_SW2, help=f"START:STOP:N (default {DEFAULT_SW2})")
    sp.add_argument("--sb2", default=DEFAULT_SB2, help=f"START:STOP:N (default {DEFAULT_SB2})")
    add_outputs(sp, "output file, .nc or .zarr", required=True, png="also draw the diagram to this PNG",
                replaces="existing outputs (files and stores)")
    sp.add_argument("--var", default="chi1", help="variable to colour the PNG by (default chi1)")
    add_solver_options(sp)
    sp.set_defaults(func=cmd_diagram)
