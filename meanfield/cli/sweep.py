"""Command-line front end of the sweep engine: ``meanfield sweep``, ``info`` and ``export``.

``add_sweep_parsers(subparsers)`` adds the three sub-commands to the main argparse CLI;
each sets ``func`` to its handler, which returns an exit status.  Bad specs and stores
raise ValueError with a one-line message, which the main CLI prints and maps to exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .. import sweeps as SW
from ..core.critical import critical_line_from_data
from ..core.vocabulary import Phase
from ..sweeps.output import check_output, write_file
from ..sweeps.store import open_checked, verify
from .options import add_outputs, add_scheduler, dask_client
from .options import progress as progress_bar


def _chunks_arg(text: str):
    """``N`` (both axes), ``N,M`` (sw2, sb2) or ``sw2=N,sb2=M``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if parts and all("=" in p for p in parts):
            return {k.strip(): int(v) for k, v in (p.split("=", 1) for p in parts)}
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--chunks: expected N, N,M or sw2=N,sb2=M, got {text!r}")
    if len(vals) == 1:
        return vals[0]
    if len(vals) == 2:
        return tuple(vals)
    raise argparse.ArgumentTypeError(f"--chunks: expected N, N,M or sw2=N,sb2=M, got {text!r}")


def register(subparsers) -> None:
    """Add ``sweep``, ``info`` and ``export`` to an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "sweep", help="run a sweep spec into a zarr store (resumable, dask-parallel)",
        description="Run the sweep described by SPEC (a TOML file, see sweeps/README.md) into "
                    "the zarr store STORE, chunk by chunk.  An interrupted run is resumed by "
                    "running the same command again.")
    p.add_argument("spec", help="sweep spec (TOML)")
    p.add_argument("-o", "--output", dest="store", required=True, metavar="STORE",
                   help="zarr store directory")
    add_scheduler(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", dest="resume", action="store_true", default=True,
                      help="continue an existing store of the same spec (default)")
    mode.add_argument("--no-resume", dest="resume", action="store_false",
                      help="refuse to touch an existing store")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace an existing sweep store (the only way one is replaced)")
    p.add_argument("--chunks", type=_chunks_arg, default=None, metavar="N[,M]",
                   help="chunk lengths along sw2 and sb2 (N, N,M or sw2=N,sb2=M)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = subparsers.add_parser("info", help="summarize a sweep store",
                              description="Axes, completion, phases found and the critical line "
                                          "read off the stored chi_1.")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--rows", type=int, default=11, metavar="N",
                   help="sb2 rows of the critical-line table (default 11)")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("export", help="export a sweep store to netCDF")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--partial", action="store_true",
                   help="export what is complete and verified even if some chunks are missing "
                        "or damaged (their points are NaN; variable 'computed' marks the rest)")
    add_outputs(p, "netCDF file to write", required=True, metavar="FILE.nc", replaces="FILE.nc if it exists")
    p.set_defaults(func=cmd_export)


def cmd_sweep(args) -> int:
    """Handler of ``meanfield sweep``."""
    store = Path(args.store)
    if store.exists() and not store.is_dir():
        raise ValueError(f"-o: {str(store)!r} is a file, not a zarr store (a directory)")
    if not store.exists():
        check_output(store, "zarr")  # the directory must exist and be writable
    with dask_client(args.scheduler) as client:
        ds = SW.sweep(args.spec, args.store, client=client, chunks=args.chunks,
                      resume=args.resume, overwrite=args.overwrite, progress=args.progress,
                      workers=args.workers)
    st = SW.sweep_status(args.store)
    run = st.runs[-1] if st.runs else {}
    print(f"{args.store}: {st.n_done}/{st.n_chunks} chunks done; this run computed "
          f"{run.get('chunks_computed', 0)} in {run.get('seconds', 0):.1f} s; "
          f"dims {dict(ds.sizes)}")
    return 0


def _fmt_axis(ds, name):
    v = ds[name].values
    if v.dtype.kind in "fiu":
        return f"{name:<11s}{v.size:>6d}  {v[0]:g} .. {v[-1]:g}"
    return f"{name:<11s}{v.size:>6d}  {', '.join(str(x) for x in v)}"


def info_text(store, rows=11) -> str:
    """The summary printed by ``meanfield info``."""
    st = SW.sweep_status(store)
    ds = SW.open_sweep(store)
    with progress_bar(total=len(ds.data_vars), desc="verifying", unit="variable") as bar:
        check = verify(store, st, progress=bar.update)
    out = [f"store      {store}",
           f"sweep      {ds.attrs.get('sweep_name', '')}  (meanfield {st.meanfield_version})"]
    if ds.attrs.get("sweep_description"):
        out.append(f"           {ds.attrs['sweep_description']}")
    out.append(f"activation {ds.attrs.get('activation', '')}")
    out.append("axes")
    for d, c in zip(st.dims, st.chunk_shape):
        out.append(f"  {_fmt_axis(ds, d)}   (chunks of {c})")
    opts = " ".join(f"{k}={ds.attrs[k]:g}" for k in ("rho", "q0", "depth_constant", "critical_tol")
                    if k in ds.attrs)
    out.append(f"options    {opts}")
    npts = int(np.prod(st.shape))
    out.append(f"verified   {check.checked - len(check.missing) - len(check.damaged)}/"
               f"{check.checked} chunks read back match their checksums"
               + ("" if check.ok else f"; {check.summary()} (a resume recomputes them)"))
    if check.broken:
        out.append("damaged    the store cannot be read back; recompute it with "
                   "`meanfield sweep --overwrite`")
        return "\n".join(out)
    if not check.ok:
        # Count and read only what is there and verified (damaged chunks cannot be decoded).
        good = st.done & ~check.bad(st.chunk_grid)
        st = SW.SweepStatus(**{**st.__dict__, "done": good, "n_done": int(good.sum()),
                               "fraction": float(good.mean())})
        st = SW.SweepStatus(**{**st.__dict__, "points_done": int(st.point_mask().sum())})
        ds = open_checked(store, partial=True, check=check)
    out.append(f"complete   {st.n_done}/{st.n_chunks} chunks ({100 * st.fraction:.1f}%), "
               f"{st.points_done}/{npts} points")
    if st.runs:
        r = st.runs[-1]
        out.append(f"runs       {len(st.runs)} recorded; last: {r['outcome']}, computed "
                   f"{r['chunks_computed']} chunks in {r['seconds']:.1f} s ({r['started']})")
    if st.n_done == 0:
        out.append("phases     (no chunk computed yet)")
        return "\n".join(out)

    mask = st.point_mask()
    phase = ds["phase"].values
    lead = [d for d in st.dims if d not in ("sw2", "sb2")]
    out.append("phases     (computed points)")
    for idx in np.ndindex(*[ds.sizes[d] for d in lead]):
        label = ", ".join(f"{d}={ds[d].values[i]}" for d, i in zip(lead, idx))
        ph, m = phase[idx], mask[idx]
        counts = {p.flag: int(np.sum((ph == int(p)) & m)) for p in sorted(Phase, key=int)}
        total = int(m.sum())
        found = "  ".join(f"{name} {n} ({100 * n / total:.1f}%)" for name, n in counts.items() if n)
        out.append(f"  {label + ': ' if label else ''}{found}")

    line = critical_line_from_data(ds, mask=mask)
    out.append("critical line (chi_1 = 1: first crossing along sw2, linear in log chi_1)")
    sb2 = ds["sb2"].values
    pick = np.unique(np.linspace(0, sb2.size - 1, max(1, min(rows, sb2.size))).round().astype(int))
    for idx in np.ndindex(*[ds.sizes[d] for d in lead]):
        label = ", ".join(f"{d}={ds[d].values[i]}" for d, i in zip(lead, idx))
        vals = line.values[idx]
        n_found = int(np.isfinite(vals).sum())
        out.append(f"  {label + ': ' if label else ''}found for {n_found}/{sb2.size} sb2 values")
        out.append(f"    {'sb2':>10s}  {'sw2_critical':>12s}")
        for j in pick:
            out.append(f"    {sb2[j]:>10.4g}  {vals[j]:>12.6g}")
    return "\n".join(out)


def cmd_info(args) -> int:
    """Handler of ``meanfield info``."""
    print(info_text(args.store, rows=args.rows))
    return 0


def cmd_export(args) -> int:
    """Handler of ``meanfield export``: the store as one netCDF file."""
    out = Path(args.output)
    if out.suffix.lower() != ".nc":
        raise ValueError(f"-o: output must end in .nc, got {out.name!r}")
    check_output(out, "netcdf", overwrite=args.overwrite)
    SW.sweep_status(args.store)  # "not a meanfield sweep store" before anything else
    with progress_bar(total=11, desc="verifying", unit="variable") as bar:
        ds = open_checked(args.store, partial=args.partial, progress=bar.update)
    if "sweep_incomplete" in ds.attrs:
        ds.attrs["sweep_completion_fraction"] = float(ds["computed"].mean())
    write_file(out, ds.to_netcdf, "netcdf", overwrite=args.overwrite)
    print(f"{out}: {', '.join(f'{k}={v}' for k, v in ds.sizes.items())}, "
          f"{len(ds.data_vars)} variables"
          + (f" ({ds.attrs['sweep_incomplete']})" if "sweep_incomplete" in ds.attrs else ""))
    return 0
