"""``meanfield plot``: draw a stored phase diagram or sweep to a PNG.

    meanfield plot STORE -o FILE.png [--var chi1] [--select DIM=VALUE ...]

STORE is a zarr store written by :func:`meanfield.sweep` / ``meanfield sweep`` /
``meanfield diagram -o X.zarr``, or a netCDF file from ``meanfield diagram`` or
``meanfield export``.  A dataset with an extra dimension (``activation``, ``rho``) is drawn
one panel per value unless ``--select`` picks one.  Bad input raises ValueError with a
one-line message; the main CLI turns it into exit code 2.
"""

from __future__ import annotations

from pathlib import Path

from .options import add_outputs, command


def register(subparsers):
    """Register the ``plot`` subcommand on an argparse ``subparsers`` object."""
    p = command(subparsers, "plot", run_plot)
    p.add_argument("store", metavar="STORE", help="zarr store directory or .nc file")
    p.add_argument("--var", default="chi1", help="variable to colour by (default chi1)")
    p.add_argument("--select", action="append", default=[], metavar="DIM=VALUE",
                   help="keep one value of an extra dimension, e.g. activation=tanh or rho=0.9 "
                        "(nearest value for numbers); repeatable")
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG (default 150)")
    p.add_argument("--partial", action="store_true",
                   help="draw a sweep store even if some chunks are missing or damaged (blank)")
    add_outputs(p, "PNG file to write", required=True, metavar="FILE.png", replaces="FILE.png if it exists")
    return p


def open_dataset(path, partial=False):
    """Open a netCDF file or a zarr store (sweep store or plain) as an xarray.Dataset.

    A sweep store is verified against its checksums first; an incomplete or damaged one is
    refused unless ``partial`` (then its missing points are NaN)."""
    import json

    import xarray as xr

    from ..sweeps.store import bookkeeping, open_checked

    path = Path(path)
    if not path.exists():
        raise ValueError(f"STORE: no such file or directory: {str(path)!r}")
    if path.is_dir() and bookkeeping(path) is not None:
        return open_checked(path, partial=partial)
    try:
        if path.is_dir():
            meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
            consolidated = isinstance(meta, dict) and meta.get("consolidated_metadata") is not None
            return xr.open_zarr(str(path), consolidated=consolidated).load()
        return xr.open_dataset(str(path)).load()
    except Exception as exc:  # xarray raises many types for a file it cannot read
        kind = "zarr store" if path.is_dir() else "netCDF file"
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"STORE: cannot read {str(path)!r} as a {kind} ({type(exc).__name__}: {msg})") \
            from None


def _select(ds, items):
    for item in items:
        dim, sep, value = item.partition("=")
        dim = dim.strip()
        if not sep or not dim:
            raise ValueError(f"--select: expected DIM=VALUE, got {item!r}")
        if dim not in ds.dims:
            extra = [d for d in ds.dims if d not in ("sw2", "sb2")]
            raise ValueError(f"--select: {dim!r} is not a dimension of the dataset"
                             + (f"; choose from {', '.join(map(str, extra))}" if extra else ""))
        coord = ds[dim]
        if coord.dtype.kind in "fiu":
            try:
                v = float(value)
            except ValueError:
                raise ValueError(f"--select: {dim} takes a number, got {value!r}") from None
            ds = ds.sel({dim: v}, method="nearest")
        else:
            labels = [str(x) for x in coord.values]
            if value not in labels:
                raise ValueError(f"--select: {dim}={value!r} not found; choose from {', '.join(labels)}")
            ds = ds.isel({dim: labels.index(value)})
    return ds


def run_plot(args) -> int:
    """Draw a stored phase diagram (.nc file or zarr store) to a PNG.

    Draw the phase diagram stored in STORE (a zarr store from `meanfield sweep` or
    `meanfield diagram`, or a netCDF file from `meanfield diagram`/`export`): VAR over
    (sw2, sb2) with the critical line chi_1 = 1 and max-depth contours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import plot

    from ..sweeps.output import check_output, save_figure

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise ValueError(f"-o: expected a .png file name, got {args.output!r}")
    check_output(out, "png", overwrite=args.overwrite)
    if not 1 <= args.dpi:
        raise ValueError(f"--dpi: must be a positive integer, got {args.dpi}")
    ds = _select(open_dataset(args.store, partial=args.partial), args.select)
    if args.var not in ds:
        raise ValueError(f"--var: {args.var!r} is not in {args.store}; choose one of "
                         f"{', '.join(map(str, ds.data_vars))}")
    extra = [d for d in ds[args.var].dims if d not in ("sw2", "sb2")]
    if not {"sw2", "sb2"} <= set(ds[args.var].dims):
        raise ValueError(f"--var: {args.var!r} is not over (sw2, sb2) (dims {ds[args.var].dims})")
    if len(extra) > 1:
        raise ValueError(f"--var: {args.var!r} has dims {', '.join(extra)} besides sw2, sb2; "
                         f"--select all but one of them")
    fig = plot.phase_diagram_facets(ds, args.var) if extra else plot.phase_diagram(ds, args.var)
    try:
        save_figure(fig, out, dpi=args.dpi, overwrite=args.overwrite)
    finally:
        plt.close(fig)
    print(f"wrote {out}")
    return 0
