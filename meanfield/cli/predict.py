"""``meanfield predict``: what an infinitely wide network at this initialization predicts.

    meanfield predict ACT --sw2 SW2 --sb2 SB2 --depth L --train X.npy --labels Y.npy
                      --test XT.npy [--kernel ntk|nngp] [--time T1,T2,...] [--diag-reg R]
                      [--depths 1,5,10] [--test-labels YT.npy] [-o OUT.nc] [--overwrite]
                      [--conv K [--padding circular|same] [--readout flatten|gap]]

With ``--conv K`` the network is convolutional (K x K filters, docs/theory.md,
"Convolutional networks") and --train/--test are images, .npy of shape (n, H, W, C).

Prints per depth the conditioning of the train kernel and, with --test-labels, the test mean
squared error and (several outputs) the accuracy of the argmax; -o writes the dataset of
:func:`meanfield.predict` to netCDF through the output policy (never replaces a file unless
--overwrite, and then only one meanfield wrote).  Bad input raises ValueError with one line.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.budget import check_memory
from ..sweeps.output import check_output, write_netcdf
from .architecture import add_architecture, architecture, check_shape, table_heading
from .kernel import _load
from .options import add_network, busy, fmt, numbers, parse_depths


def register(subparsers):
    """Register the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict", help="infinite-width NNGP / NTK predictions (mean, variance) per depth",
        description="Mean and variance of the prediction on --test of the infinite ensemble of "
                    "infinitely wide networks: the NNGP posterior, or the network trained by "
                    "gradient flow on MSE for --time (default: to convergence); docs/theory.md.")
    add_network(p)
    p.add_argument("--train", required=True,
                   help="training inputs, .npy of shape (n, d) (with --conv: (n, H, W, C))")
    p.add_argument("--labels", required=True, help="training targets, .npy of shape (n,) or (n, k)")
    p.add_argument("--test", required=True, help="test inputs, .npy of shape (m, d)")
    p.add_argument("--test-labels", help="test targets (.npy, like --labels) to score the predictions")
    p.add_argument("--kernel", choices=("ntk", "nngp"), default="ntk",
                   help="predictor: the NTK ensemble or the NNGP posterior (default ntk)")
    p.add_argument("--time", help="comma-separated training times (inf allowed; default: "
                                  "trained to convergence)")
    p.add_argument("--diag-reg", type=float, default=0.0,
                   help="ridge relative to the mean diagonal of the train kernel (default 0)")
    p.add_argument("--depths", help="comma-separated depths to keep (default all 1..L)")
    add_architecture(p)
    p.add_argument("-o", "--output", help="write the dataset to this netCDF file (.nc)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output (only a file meanfield wrote)")
    p.set_defaults(func=run_predict)
    return p


def run_predict(args) -> int:
    """Handler of ``meanfield predict``; returns the exit code (0)."""
    from ..ntk import predict

    conv = architecture(args)
    if args.output is not None:
        if not str(args.output).lower().endswith(".nc"):
            raise ValueError(f"-o: output must end in .nc, got {args.output!r}")
        check_output(args.output, "netcdf", overwrite=args.overwrite)
    times = None if args.time is None else np.array(numbers("--time", args.time, float))
    depths = None if args.depths is None else parse_depths(args.depths)
    X = _load("--train", args.train)
    y = _load("--labels", args.labels)
    Xt = _load("--test", args.test)
    yt = _load("--test-labels", args.test_labels) if args.test_labels else None
    check_shape("--train", X, conv)
    check_shape("--test", Xt, conv)
    if yt is not None and Xt.ndim >= 1 and yt.shape != (Xt.shape[0],) + np.shape(y)[1:]:
        raise ValueError(f"--test-labels: shape {yt.shape} does not match --test and --labels "
                         f"(expected {(Xt.shape[0],) + np.shape(y)[1:]})")
    if X.ndim in (2, 4) and Xt.ndim == X.ndim:
        n, m = X.shape[0], Xt.shape[0]
        # Two n x n and two m x n kernels, the eigenvectors and a few n x max(n, m) products;
        # a convolutional network also stores its train and cross kernels at every kept depth.
        kept = 0 if conv is None else (len(set(depths)) if depths else args.depth)
        check_memory(8.0 * (6 * n * n + 4 * m * n + 2 * kept * (n * n + m * n)),
                     f"{n} training and {m} test inputs")
    with busy("predictions"):
        ds = predict(X, y, Xt, args.activation, args.sw2, args.sb2, args.depth, kernel=args.kernel,
                     t=times, diag_reg=args.diag_reg, depths=depths, architecture=conv)
    print(format_table(ds, yt))
    if args.output:
        write_netcdf(args.output, ds, overwrite=args.overwrite)
        print(f"wrote {args.output}")
    return 0


def scores(pred, yt):
    """(mean squared error, accuracy) of predictions (..., m[, k]) against targets (m[, k]).

    Accuracy is the fraction of test points whose largest output is the target's largest
    (NaN with a single output); NaN predictions give NaN scores.
    """
    err = np.mean((pred - yt) ** 2, axis=tuple(range(pred.ndim - yt.ndim, pred.ndim)))
    if yt.ndim == 2 and yt.shape[1] > 1:
        hit = np.argmax(pred, axis=-1) == np.argmax(yt, axis=-1)
        acc = np.asarray(np.mean(hit, axis=-1), dtype=np.float64)
        acc = np.where(np.any(np.isnan(pred), axis=(-1, -2)), np.nan, acc)
    else:
        acc = np.full(err.shape, np.nan)
    return err, acc


def format_table(ds, yt=None) -> str:
    a = ds.attrs
    timed = "time" in ds.prediction.dims
    lines = table_heading(a, f"{a['kernel']} predictor  diag_reg={a['diag_reg']:g}")
    head = f"{'depth':>5} {'cond':>12}"
    if timed:
        head += f" {'time':>10}"
    head += f" {'mean var':>12}"
    if yt is not None:
        head += f" {'test mse':>12} {'accuracy':>9}"
    lines.append(head + "  status")
    meanings = ds.status.attrs["flag_meanings"].split()
    times = np.atleast_1d(ds.time.values) if timed else [None]
    for k in range(ds.sizes["depth"]):
        for i, t in enumerate(times):
            sel = {"depth": k} if t is None else {"depth": k, "time": i}
            pred = ds.prediction.isel(sel).values
            row = f"{int(ds.depth[k]):>5} {fmt(float(ds.condition_number[k]), 6):>12}"
            if timed:
                row += f" {fmt(float(t), 6):>10}"
            var = ds.variance.isel(sel).values
            row += f" {fmt(float(np.mean(var)) if np.all(np.isfinite(var)) else math.nan, 6):>12}"
            if yt is not None:
                err, acc = scores(pred, yt)
                row += f" {fmt(float(err), 6):>12} {fmt(float(acc), 4):>9}"
            lines.append(row + "  " + meanings[int(ds.status[k])])
    return "\n".join(lines)
