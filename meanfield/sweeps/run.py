"""Running a sweep: one dask task per unfinished chunk, written into the store as it completes.

Every chunk is computed with :func:`meanfield.core.engine.compute_points` -- the function
behind :func:`meanfield.phase_diagram` -- so the stored dataset is identical bit for bit
whatever the chunking, the number of workers or the interruptions.  A chunk's completion
flag is written only after its data: a run stopped at any moment (Ctrl-C, SIGKILL) leaves
at worst a chunk whose data is partly written and whose flag is unset, and the next run
recomputes exactly the chunks whose flag is unset.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .._version import __version__
from ..core import engine
from .layout import activation_of, solver_options, variables_of
from .spec import SweepSpec, as_spec
from ..core.budget import check_disk, check_memory
from .store import (CHECKSUM, DONE, META_GROUP, bookkeeping, check_existing, create, lock,
                    log_run, open_sweep, verify)
from .execute import run_tasks
from .verify import chunk_digests

# Bytes per grid point: 11 variables of ~8 bytes each in the store (uncompressed), and
# about four times that while a chunk is computed, assembled and encoded.
STORE_BYTES_PER_POINT = 80
WORK_BYTES_PER_POINT = 400
# Bytes the driver holds per chunk: its task description, future and bookkeeping.
BYTES_PER_TASK = 4096

__all__ = ["sweep"]

# --------------------------------------------------------------------------- chunk tasks
def _tasks(spec: SweepSpec, store: str, done: np.ndarray) -> list:
    """One task per chunk whose completion flag is unset."""
    sw2, sb2 = spec.axis("sw2"), spec.axis("sb2")
    rhos = spec.axis("rho") if "rho" in spec.axes else None
    cs = dict(zip(spec.dims, spec.chunk_shape))
    tasks = []
    for idx in np.ndindex(*spec.chunk_grid):
        if done[idx]:
            continue
        pos = dict(zip(spec.dims, idx))
        ia = pos.get("activation", 0)
        rho = float(rhos[pos["rho"]]) if rhos is not None else spec.options["rho"]
        region = {d: slice(i * cs[d], min((i + 1) * cs[d], n))
                  for d, i, n in zip(spec.dims, idx, spec.shape)}
        tasks.append({
            "store": store, "index": idx, "region": region, "dims": spec.dims,
            "activation": spec.activations[ia], "rho": rho,
            "sw2": sw2[region["sw2"]], "sb2": sb2[region["sb2"]],
            "spec": spec,
        })
    return tasks


def _run_chunk(task) -> tuple:
    """Compute one chunk, write it, then flag it done.  Runs in a dask worker."""
    spec = task["spec"]
    act = activation_of(task["activation"])
    W, B = np.meshgrid(task["sw2"], task["sb2"], indexing="ij")
    # Serial kernel: the parallelism is across chunks, and nested thread pools would
    # oversubscribe the cores.
    res = engine.compute_points(act, W, B, parallel=False, **solver_options(spec, task["rho"]))
    ds = variables_of(spec, res, act, task["rho"])
    for v in ds.variables.values():
        v.attrs = {}
    ds.attrs = {}
    ds.to_zarr(task["store"], region=task["region"], mode="r+", consolidated=False)
    # Checksums, then the flag, only after to_zarr has returned: a chunk killed mid-write
    # keeps its flag unset and is recomputed by the next run.
    names = sorted(ds.data_vars)
    sums = zarr.open_array(task["store"], path=f"{META_GROUP}/{CHECKSUM}", mode="r+")
    sums[task["index"]] = chunk_digests({n: ds[n].values for n in names}, names)
    flags = zarr.open_array(task["store"], path=f"{META_GROUP}/{DONE}", mode="r+")
    flags[task["index"]] = True
    return task["index"]


def _check_size(spec: SweepSpec, store: Path, workers: int):
    """Refuse, before anything is allocated, a sweep the machine cannot hold."""
    counts = {d: (len(spec.activations) if d == "activation" else
                  len(spec.axes[d]["values"]) if "values" in spec.axes[d] else spec.axes[d]["count"])
              for d in spec.dims}
    npts = float(np.prod([float(c) for c in counts.values()]))
    cs = dict(zip(spec.dims, [min(spec.chunks.get(d, 1), counts[d]) for d in spec.dims]))
    nchunks = float(np.prod([-(-counts[d] // cs[d]) for d in spec.dims]))
    chunk_pts = float(np.prod(list(cs.values())))
    what = " x ".join(f"{d} {c}" for d, c in counts.items())
    check_memory(8.0 * sum(counts.values()) + BYTES_PER_TASK * nchunks
                 + WORK_BYTES_PER_POINT * chunk_pts * max(1, workers),
                 f"sweep {what} ({npts:.0f} points in {nchunks:.0f} chunks)")
    check_disk(STORE_BYTES_PER_POINT * npts, store.parent if not store.exists() else store,
               f"sweep {what} ({npts:.0f} points)")



# --------------------------------------------------------------------------- public API
def sweep(spec_or_path, store, *, client=None, chunks=None, resume=True, overwrite=False,
          progress=True, workers=None) -> xr.Dataset:
    """Run a sweep into a zarr store, chunk by chunk; resumable and distributable.

    Parameters
    ----------
    spec_or_path : str, path, dict or SweepSpec
        A TOML spec file (``sweeps/*.toml``; format in ``sweeps/README.md``), the same
        content as a dict, or a :class:`SweepSpec`.
    store : str or path
        Directory of the zarr (v3) store.  On a cluster it must be on a file system that
        every worker can write.
    client : dask.distributed.Client, optional
        Run the chunks on this cluster.  Without one, a local cluster of ``workers``
        single-threaded processes is started for the run (or, with ``workers <= 1``, the
        chunks run one after another in this process).
    chunks : int, (int, int) or dict, optional
        Chunk lengths along sw2 and sb2, overriding the spec's ``[chunks]``.  The chunking
        of an existing store cannot change on resume.
    resume : bool, default True
        If ``store`` holds this sweep, compute only the chunks not yet flagged done.
        With False an existing store is an error.
    overwrite : bool, default False
        Replace an existing sweep store (the only way one is ever replaced).  The old store
        is removed only once the new one has been initialized; a directory that is not a
        meanfield sweep store is never removed.
    progress : bool, default True
        Show a progress bar (tqdm, on stderr) counting chunks.
    workers : int, optional
        Local worker processes when ``client`` is None; default ``os.cpu_count()``.

    Returns
    -------
    xarray.Dataset
        The stored dataset, opened lazily (dask arrays backed by the store).  Dims
        ``(activation, rho, sw2, sb2)`` (activation only when the spec lists several,
        rho only when it is an axis); the variables, their attributes and the values are
        those of :func:`meanfield.phase_diagram` on the same axes, bit for bit.  Global
        attributes add the spec (``sweep_spec``, its TOML text) and the package version.
        Per-run statistics (chunks computed) are in :func:`sweep_status`.

    Raises
    ------
    ValueError
        Invalid spec (naming the key), a store written by another spec or another
        meanfield version, an existing store with ``resume=False``, a path that is not a
        sweep store.  Nothing on disk is changed when this is raised.
    """
    spec = as_spec(spec_or_path).with_chunks(chunks)
    if store is None:
        raise ValueError("sweep needs a store path")
    store = Path(store)
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    if store.exists() and not store.is_dir():
        raise ValueError(f"store {str(store)!r} is a file, not a zarr store (a directory)")
    _check_size(spec, store, int(workers))
    fd = None
    try:
        if store.exists() and not overwrite:
            if not resume:
                raise ValueError(f"store {str(store)!r} already exists; resume it or pass "
                                 f"overwrite=True (CLI: --overwrite) to replace it")
            spec = check_existing(store, spec, chunks is not None)
            fd = lock(store)
            _forget_bad_chunks(store, progress)
        elif store.exists():
            if bookkeeping(store) is None and not (store.is_dir() and not any(store.iterdir())):
                raise ValueError(f"{str(store)!r} exists and is not a meanfield sweep store; "
                                 f"refusing to overwrite it")
            old = lock(store)  # refuse to replace a store another run is writing
            try:
                fd = create(store, spec, replace=True)
            finally:
                os.close(old)
        else:
            fd = create(store, spec)
        return _run(spec, store, client, workers, progress)
    finally:
        if fd is not None:
            os.close(fd)


def _forget_bad_chunks(store: Path, progress=True):
    """Unset the flags of chunks whose data is missing or damaged, so the run recomputes
    them (checksums are recorded per chunk when it is written)."""
    from tqdm.auto import tqdm

    n_vars = len(bookkeeping(store).attrs.get("variables", ()))
    with tqdm(total=n_vars, desc="verifying", unit="variable", delay=1.0, leave=False,
              disable=not progress) as bar:
        check = verify(store, progress=bar.update)
    if check.broken:
        raise ValueError(f"store {str(store)!r} is damaged beyond its chunks: "
                         f"{'; '.join(check.broken)}; pass overwrite=True (CLI: --overwrite) to "
                         f"recompute it")
    if not check.ok:
        flags = zarr.open_array(str(store), path=f"{META_GROUP}/{DONE}", mode="r+")
        for idx in check.missing + check.damaged:
            flags[idx] = False


def _run(spec, store, client, workers, progress):
    done = zarr.open_array(str(store), path=f"{META_GROUP}/{DONE}", mode="r")[...]
    tasks = _tasks(spec, str(store), done)
    n_total = int(done.size)
    started = time.time()
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
             "chunks_total": n_total, "chunks_done_before": int(done.sum()),
             "chunks_computed": 0, "seconds": 0.0, "outcome": "interrupted",
             "meanfield_version": __version__}
    try:
        entry["chunks_computed"] = run_tasks(_run_chunk, tasks, client, int(workers), progress,
                                              n_total, int(done.sum()))
        entry["outcome"] = "complete"
    except BaseException:
        # Ctrl-C or a failing chunk: count what got flagged before the stop.
        flags = zarr.open_array(str(store), path=f"{META_GROUP}/{DONE}", mode="r")[...]
        entry["chunks_computed"] = int(flags.sum()) - entry["chunks_done_before"]
        raise
    finally:
        entry["seconds"] = round(time.time() - started, 3)
        log_run(store, entry)
    return open_sweep(store)
