"""Benchmark the sweep engine against in-memory ``phase_diagram`` on a tanh grid.

Usage::

    python benchmarks/bench_sweep.py [--size N] [--chunk C] [--workers W] [--subset-rows R]

Runs a tanh sweep of N x N points (sw2 in [0.05, 5], sb2 in [0, 2]) into a temporary zarr
store on a local cluster of W single-threaded worker processes, and ``phase_diagram`` (Numba
threads on all cores, in memory) on a subset of the same points: every k-th sw2 row,
all sb2 values, so the subset samples ordered and chaotic points in the same proportions.
Reports per-point throughput of both, their ratio, peak resident memory of the whole
process tree (this process plus the cluster's processes, sampled every 0.1 s), and checks
the subset bit for bit.  The issue's target is N = 4000 with peak memory < 2 GB and sweep
throughput within 20% of phase_diagram.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import meanfield as mf  # noqa: E402
from meanfield import sweeps as SW  # noqa: E402


class TreeRSS:
    """Peak of the summed resident set size of this process and all its descendants."""

    def __init__(self, interval=0.1):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        me = psutil.Process()
        total = 0
        for p in [me] + me.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass  # a process that exited between listing and reading
        self.peak = max(self.peak, total)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=400, help="grid is N x N (default 400)")
    ap.add_argument("--chunk", type=int, default=100, help="chunk length along each axis")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes")
    ap.add_argument("--subset-rows", type=int, default=None,
                    help="sw2 rows for the phase_diagram reference (default N/8)")
    ap.add_argument("--store", default=None, help="zarr store (default: a temporary directory)")
    args = ap.parse_args(argv)

    n = args.size
    spec = {"name": "bench_tanh", "activation": "tanh",
            "axes": {"sw2": {"start": 0.05, "stop": 5.0, "count": n},
                     "sb2": {"start": 0.0, "stop": 2.0, "count": n}},
            "chunks": {"sw2": args.chunk, "sb2": args.chunk}}
    sw2 = np.linspace(0.05, 5.0, n)
    sb2 = np.linspace(0.0, 2.0, n)
    rows = args.subset_rows or max(1, n // 8)
    step = max(1, n // rows)
    sub = sw2[::step]

    print(f"tanh {n} x {n} = {n * n} points, chunks {args.chunk} x {args.chunk}, "
          f"{args.workers} worker processes, {os.cpu_count()} cores")

    # Compile/load the Numba kernels first so neither timing includes it.
    mf.phase_diagram("tanh", [1.0], [0.1])

    t = time.perf_counter()
    ref = mf.phase_diagram("tanh", sub, sb2, parallel=True)
    t_pd = time.perf_counter() - t
    pd_rate = ref["chi1"].size / t_pd
    print(f"phase_diagram (in memory, {os.cpu_count()} threads): {ref['chi1'].size} points in "
          f"{t_pd:.2f} s -> {pd_rate:,.0f} points/s")

    tmpdir = None
    if args.store is None:
        tmpdir = tempfile.mkdtemp(prefix="bench_sweep-")
        store = Path(tmpdir) / "tanh.zarr"
    else:
        store = Path(args.store)
    try:
        with TreeRSS() as mem:
            t = time.perf_counter()
            ds = SW.sweep(spec, store, workers=args.workers, overwrite=True, progress=True)
            t_sw = time.perf_counter() - t
        run = SW.sweep_status(store).runs[-1]
        sw_rate = n * n / t_sw
        print(f"sweep (zarr, {args.workers} processes): {n * n} points in {t_sw:.2f} s "
              f"(incl. cluster start-up) -> {sw_rate:,.0f} points/s; {run['chunks_computed']} "
              f"chunks")
        print(f"throughput ratio sweep / phase_diagram: {sw_rate / pd_rate:.3f} "
              f"(target >= 0.8)")
        print(f"peak RSS of the process tree during the sweep: {mem.peak / 2**20:,.0f} MiB "
              f"(target < 2048 MiB at N = 4000)")
        same = all(np.array_equal(ds[k].isel(sw2=slice(None, None, step)).values, ref[k].values,
                                  equal_nan=ds[k].dtype.kind == "f") for k in ref.data_vars)
        print(f"subset identical to phase_diagram bit for bit: {same}")
        est = 4000 * 4000 / sw_rate
        print(f"at this rate a 4000 x 4000 sweep takes ~{est / 60:,.0f} min on this machine")
        return 0 if same else 1
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
