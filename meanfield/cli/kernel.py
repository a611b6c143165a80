"""``meanfield kernel``: NTK trainability/generalization metrics of a data set, per depth.

    meanfield kernel ACT --sw2 SW2 --sb2 SB2 --depth L --data X.npy [--labels Y.npy]
                     [--test XT.npy] [-o OUT.nc]
                     [--conv K [--padding circular|same] [--readout flatten|gap]]

With ``--conv K`` the network is convolutional (K x K filters, docs/theory.md,
"Convolutional networks") and the data are images, .npy of shape (n, H, W, C).

    meanfield kernel ACT --sw2 SW2 --sb2 SB2 --depth L --data X.npy --store K.zarr
                     [--test XT.npy] [--block B] [--depths 1,5,10]
                     [--conv K [--padding circular|same] [--readout flatten|gap]]
                     [--scheduler ADDRESS | --workers N] [--overwrite] [--no-progress]

With ``--store`` the NNGP and NTK kernels themselves go block by block into a zarr store
(:func:`meanfield.kernels_to_store`; for data sets whose n x n kernels do not fit in
memory); running the same command again resumes an interrupted run.  With ``--test`` the
store holds the test x data cross-kernel (``meanfield.kernels(X, ..., X2=XT)``); with
``--conv`` the CNN-GP / CNTK of images, blocks of image pairs.

Prints the per-depth table of :func:`meanfield.ntk_metrics` (without labels:
lambda_max, lambda_min, condition number of Theta^l on the data) and optionally writes
the dataset to netCDF.  Bad input raises ValueError with a one-line message; the main
CLI turns it into exit code 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.budget import BudgetError, check_memory
from ..sweeps.output import check_output, write_netcdf
from .architecture import add_architecture, architecture, check_shape, table_heading
from .options import (add_network, add_outputs, add_scheduler, busy, command, dask_client,
                      fmt, parse_depths, show_progress)


def _f6(v):
    return fmt(float(v), 6)


def register(subparsers):
    """Register the ``kernel`` subcommand on an argparse ``subparsers`` object."""
    p = command(subparsers, "kernel", run_kernel)
    add_network(p)
    p.add_argument("--data", required=True, help="training inputs, .npy of shape (n, d)")
    p.add_argument("--labels", help="training targets, .npy of shape (n,) or (n, k)")
    p.add_argument("--test", help="test inputs, .npy of shape (m, d) (default: --data; with "
                                   "--store: the store holds the test x data cross-kernel)")
    add_architecture(p)
    add_outputs(p, "write the dataset to this netCDF file",
                replaces="an existing output (with --store: a kernel store)")
    g = p.add_argument_group("kernels larger than memory (--store)")
    g.add_argument("--store", metavar="K.zarr",
                   help="write the NNGP/NTK kernels block by block into this zarr store "
                        "(resumed if it holds the same kernels) instead of the metrics table")
    g.add_argument("--block", type=int, default=None, metavar="B",
                   help="with --store: rows and columns per block (default 1024, with --conv 256 "
                        "images; a resumed "
                        "store keeps its own)")
    g.add_argument("--depths", metavar="LIST",
                   help="with --store: comma-separated depths to keep (default all 1..L)")
    add_scheduler(g, what="blocks")
    g.add_argument("--no-progress", dest="progress", action="store_false",
                   help="with --store: no progress bar")
    return p


STORE_ONLY = ("--block", "block"), ("--depths", "depths"), ("--scheduler", "scheduler"), \
    ("--workers", "workers")
NOT_WITH_STORE = ("--labels", "labels"), ("-o", "output")


NPY_MAGIC = b"\x93NUMPY"


def _load(flag, path):
    """A real numeric array from a .npy file, or ValueError saying what the file really is."""
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path} is a directory, not a .npy file")
    if not os.path.isfile(path):
        raise ValueError(f"{flag}: no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(6)
    if head != NPY_MAGIC:
        what = ("a zip archive (.npz?); save one array with numpy.save" if head[:2] == b"PK"
                else "empty" if not head else "not a .npy file (no NumPy header; save the array "
                "with numpy.save)")
        raise ValueError(f"{flag}: {path} is {what}")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise ValueError(f"{flag}: {path} holds Python objects, not numbers; save a numeric "
                             f"array") from None
        raise ValueError(f"{flag}: cannot read {path} as .npy ({exc})") from None
    except (OSError, EOFError) as exc:  # a truncated or damaged file
        raise ValueError(f"{flag}: cannot read {path} as .npy (damaged or truncated: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{flag}: {path} holds complex numbers ({arr.dtype}); the kernels take "
                         f"real inputs")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{flag}: {path} holds {arr.dtype} values, not numbers")
    return arr


def run_kernel(args) -> int:
    """NTK condition number and mean predictor per depth on a data set.

    NNGP/NTK of a deep fully connected network on a data set (docs/theory.md): per-depth
    eigenvalues and condition number of the NTK on the data and, with --labels, the NTK
    mean predictor on --test (default: the data).
    """
    from ..ntk import ntk_metrics

    if args.store is not None:
        return run_kernel_store(args)
    for flag, name in STORE_ONLY:
        if getattr(args, name) is not None:
            raise ValueError(f"{flag} needs --store K.zarr (kernels block by block on disk)")
    conv = architecture(args)
    if args.output is not None:
        if not str(args.output).lower().endswith(".nc"):
            raise ValueError(f"-o: output must end in .nc, got {args.output!r}")
        check_output(args.output, "netcdf", overwrite=args.overwrite)
    X = _load("--data", args.data)
    Xt = _load("--test", args.test) if args.test else X
    check_shape("--data", X, conv)
    check_shape("--test", Xt, conv)
    if args.labels:
        y = _load("--labels", args.labels)
    else:
        # Without labels only the spectrum is meaningful; a zero target keeps the
        # predictor columns defined (and zero) without inventing data.
        y = np.zeros(np.shape(X)[0] if np.ndim(X) >= 1 else 0)
    if isinstance(args.depth, int) and args.depth >= 1 and X.ndim >= 1 and Xt.ndim >= 1:
        n = X.shape[0] + (Xt.shape[0] if args.test else 0)
        # NNGP and NTK over every pair of inputs at every depth, and their eigensystems.
        try:
            check_memory(8.0 * 6 * args.depth * float(n) ** 2,
                         f"--depth {args.depth} with {n} inputs")
        except BudgetError as exc:
            raise BudgetError(f"{exc}; --store K.zarr computes the kernels block by block "
                              f"into a zarr store on disk instead") from None
    with busy("kernels"):
        ds = ntk_metrics(X, y, Xt, args.activation, args.sw2, args.sb2, args.depth,
                         architecture=conv)
    print(format_table(ds, with_prediction=bool(args.labels)))
    if args.output:
        write_netcdf(args.output, ds, overwrite=args.overwrite)
        print(f"wrote {args.output}")
    return 0


def run_kernel_store(args) -> int:
    """``meanfield kernel ... --store K.zarr``: the kernels into a resumable zarr store."""
    from ..sweeps import kernel_store_status, kernels_to_store

    for flag, name in NOT_WITH_STORE:
        if getattr(args, name) is not None:
            raise ValueError(f"{flag} cannot be combined with --store (the store holds the "
                             f"kernels of --data; compute metrics from it separately)")
    store = Path(args.store)
    if store.exists() and not store.is_dir():
        raise ValueError(f"--store: {str(store)!r} is a file, not a zarr store (a directory)")
    if not store.exists():
        check_output(store, "zarr", flag="--store")  # its directory must exist and be writable
    depths = None if args.depths is None else parse_depths(args.depths)
    conv = architecture(args)
    X = _load("--data", args.data)
    check_shape("--data", X, conv)
    X2 = None
    if args.test is not None:
        X2 = _load("--test", args.test)
        check_shape("--test", X2, conv)
    with dask_client(args.scheduler) as client:
        try:
            ds = kernels_to_store(X, args.activation, args.sw2, args.sb2, args.depth, store,
                                  X2=X2, block=args.block, depths=depths, architecture=conv,
                                  client=client,
                                  workers=args.workers, overwrite=args.overwrite,
                                  progress=show_progress(args.progress))
        except ValueError as exc:
            text = str(exc)
            for word, flag in (("block", "--block"), ("depths", "--depths"),
                               ("workers", "--workers"), ("X2", "--test"), ("X", "--data")):
                if text.startswith(word + " "):
                    raise ValueError(f"{flag}: {text}") from None
            raise ValueError(text.replace("overwrite=True (CLI: --overwrite)", "--overwrite")) \
                from None
    st = kernel_store_status(store)
    run = st.runs[-1] if st.runs else {}
    print(f"{store}: {st.n_done}/{st.n_blocks} blocks of {st.block} x {st.block} done; this run "
          f"computed {run.get('blocks_computed', 0)} in {run.get('seconds', 0):.1f} s; "
          f"nngp, ntk at depths {','.join(str(int(d)) for d in ds.depth.values)} over "
          f"{ds.sizes['i']} x {ds.sizes['j']} inputs")
    return 0


def format_table(ds, with_prediction=True) -> str:
    """The per-depth metrics as a plain-text table."""
    a = ds.attrs
    lines = table_heading(a, f"phase={a['phase']}  chi1={_f6(float(ds.chi1))} "
                             f"chi_c={_f6(float(ds.chi_c))}")
    head = f"{'depth':>5} {'lambda_max':>12} {'lambda_min':>12} {'cond':>12}"
    if with_prediction:
        head += f" {'|P - P_inf|':>12} {'rate':>9}"
    lines.append(head + "  status")
    meanings = ds.status.attrs["flag_meanings"].split()
    for k in range(ds.sizes["depth"]):
        row = (f"{int(ds.depth[k]):>5} {_f6(float(ds.lambda_max[k])):>12} "
               f"{_f6(float(ds.lambda_min[k])):>12} {_f6(float(ds.condition_number[k])):>12}")
        if with_prediction:
            row += f" {_f6(float(ds.prediction_distance[k])):>12} {_f6(float(ds.decay_rate[k])):>9}"
        lines.append(row + "  " + meanings[int(ds.status[k])])
    if with_prediction:
        lines.append(f"theory decay rate: {_f6(float(ds.theory_decay_rate))}")
    return "\n".join(lines)
