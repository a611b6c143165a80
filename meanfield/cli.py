"""The ``meanfield`` command.

Bad input prints one line, ``meanfield: error: <message>``, and exits with status 2; no
traceback.  Subcommands are thin: parse, call the library, print or write.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

DEFAULT_ACTIVATION = "tanh"
DEFAULT_SW2 = "0.5:4:200"
DEFAULT_SB2 = "0:2:100"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: keep them to one line, exit 2
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def parse_range(text, name):
    """``START:STOP:N`` (inclusive, N points) or a comma-separated list -> numpy array."""
    import numpy as np

    text = str(text).strip()
    form = f"{name}: expected START:STOP:N or a comma-separated list of numbers, got {text!r}"
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError(form)
            start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
        else:
            return np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ValueError(form) from None
    if n < 1:
        raise ValueError(f"{name}: the number of points must be >= 1, got {n}")
    if n > 1 and not stop > start:
        raise ValueError(f"{name}: STOP must be greater than START in {text!r}")
    return np.linspace(start, stop, n)


def _fmt(v):
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.12g}"
    return str(v)


# --------------------------------------------------------------------------- commands
def cmd_activations(args):
    import meanfield as mf

    for name in mf.activations():
        act = mf.get_activation(name)
        print(f"{name:12s} {act.formula}")


def cmd_analyze(args):
    import meanfield as mf

    res = mf.analyze(args.activation, args.sw2, args.sb2, rho=args.rho, q0=args.q0,
                     depth_constant=args.depth_constant)
    if args.json:
        d = res.to_dict()
        # JSON has no inf/NaN: write them as strings so the output stays valid JSON.
        print(json.dumps({k: (_fmt(v) if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in d.items()}, indent=2))
    else:
        print(repr(res))


def cmd_critical(args):
    import meanfield as mf

    sb2 = parse_range(args.sb2, "--sb2")
    for s in sb2:
        print(f"sb2 = {s:.12g}   critical sw2 = {_fmt(mf.critical_sw2(args.activation, s))}")


def cmd_recommend(args):
    import meanfield as mf

    print(mf.recommend(args.activation, args.depth, sb2=args.sb2, depth_constant=args.depth_constant))


def cmd_diagram(args):
    import meanfield as mf

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".nc", ".zarr"):
        raise ValueError(f"-o: output must end in .nc (netCDF) or .zarr, got {out.name!r}")
    if args.png is not None and not str(args.png).lower().endswith(".png"):
        raise ValueError(f"--png: expected a .png file name, got {args.png!r}")
    sw2 = parse_range(args.sw2, "--sw2")
    sb2 = parse_range(args.sb2, "--sb2")
    ds = mf.phase_diagram(args.activation, sw2, sb2, rho=args.rho, q0=args.q0,
                          depth_constant=args.depth_constant)
    if not out.parent.exists():
        raise ValueError(f"-o: directory {str(out.parent)!r} does not exist")
    if suffix == ".nc":
        ds.to_netcdf(out)
    else:
        if out.exists() and not args.overwrite:
            raise ValueError(f"-o: {str(out)!r} exists; pass --overwrite to replace it")
        ds.to_zarr(out, mode="w")
    counts = {name: int((ds.phase == code).sum()) for code, name in
              ((0, "ordered"), (1, "critical"), (2, "chaotic"))}
    print(f"wrote {out} ({ds.sizes['sw2']} x {ds.sizes['sb2']} points; "
          + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; {int((~ds.converged).sum())} not converged)")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        from . import plot

        fig = plot.phase_diagram(ds, var=args.var)
        fig.savefig(args.png, dpi=150)
        print(f"wrote {args.png}")


# --------------------------------------------------------------------------- parser
def build_parser():
    p = _Parser(prog="meanfield", description="Mean-field theory of deep networks at "
                "initialization: phases, depth scales, critical lines (variances sw2, sb2).")
    from ._version import __version__

    p.add_argument("--version", action="version", version=f"meanfield {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(sp, depth=True):
        sp.add_argument("--rho", type=float, default=1.0, help="dropout keep probability (default 1)")
        sp.add_argument("--q0", type=float, default=1.0, help="initial length q^0 (default 1)")
        if depth:
            sp.add_argument("--depth-constant", type=float, default=6.0,
                            help="max_depth = C * xi_c (default 6)")

    sp = sub.add_parser("activations", help="list the built-in activations")
    sp.set_defaults(func=cmd_activations)

    sp = sub.add_parser("analyze", help="every quantity at one (sw2, sb2)")
    sp.add_argument("activation")
    sp.add_argument("--sw2", type=float, required=True, help="weight variance sigma_w^2")
    sp.add_argument("--sb2", type=float, required=True, help="bias variance sigma_b^2")
    sp.add_argument("--json", action="store_true", help="print JSON")
    common(sp)
    sp.set_defaults(func=cmd_analyze)

    sp = sub.add_parser("critical", help="critical sw2 (chi_1 = 1) at given sb2")
    sp.add_argument("activation")
    sp.add_argument("--sb2", default="0", help="value, list a,b,c or START:STOP:N")
    sp.set_defaults(func=cmd_critical)

    sp = sub.add_parser("recommend", help="initialization for a network of a given depth")
    sp.add_argument("activation")
    sp.add_argument("--depth", type=int, required=True, help="number of layers L")
    sp.add_argument("--sb2", type=float, default=None, help="bias variance (default per activation)")
    sp.add_argument("--depth-constant", type=float, default=6.0)
    sp.set_defaults(func=cmd_recommend)

    sp = sub.add_parser("diagram", help="phase diagram over (sw2, sb2) written to .nc or .zarr")
    sp.add_argument("activation", nargs="?", default=DEFAULT_ACTIVATION,
                    help=f"activation (default {DEFAULT_ACTIVATION})")
    sp.add_argument("--sw2", default=DEFAULT_SW2, help=f"START:STOP:N (default {DEFAULT_SW2})")
    sp.add_argument("--sb2", default=DEFAULT_SB2, help=f"START:STOP:N (default {DEFAULT_SB2})")
    sp.add_argument("-o", "--output", required=True, help="output file, .nc or .zarr")
    sp.add_argument("--png", default=None, help="also draw the diagram to this PNG")
    sp.add_argument("--var", default="chi1", help="variable to colour the PNG by (default chi1)")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing .zarr store")
    common(sp)
    sp.set_defaults(func=cmd_diagram)

    # Optional feature modules register their own subcommands.
    for modname, hook in (("_cli_sweep", "add_sweep_parsers"), ("_cli_kernel", "add_kernel_parser"),
                          ("_cli_simulate", "add_parsers"), ("_cli_plot", "add_parsers")):
        try:
            mod = __import__(f"meanfield.{modname}", fromlist=[hook])
        except ModuleNotFoundError as exc:
            if exc.name != f"meanfield.{modname}":
                raise
            continue
        getattr(mod, hook)(sub)
    return p


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        args.func(args)
        return 0
    except _UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"meanfield: error: {msg}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"meanfield: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("meanfield: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
