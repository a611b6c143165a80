"""NNGP/NTK kernels of data sets too large for memory: block tasks on the sweep scheduler.

The pair space (i, j) is cut into B x B blocks; the blocks I <= J are dask tasks (the same
scheduler as sweeps, :func:`meanfield.sweeps.execute.run_tasks`), each running the
recursion of :func:`meanfield.kernels` on its rows and columns
(:mod:`meanfield.ntk.blocked`) and writing every kept depth straight into the store
(:mod:`meanfield.sweeps.kernel_store`), block (J, I) as the transpose.  A worker holds a
few B x B arrays, whatever n and the number of depths kept.

With a second set X2 (m inputs) the store holds the cross-kernel of
``meanfield.kernels(X, ..., X2=X2)``, (depth, m, n) with i indexing X2 and j indexing X:
every block I x J of it is a task (no symmetry to use), and the layer table is that of
the stacked inputs [X; X2], as :func:`meanfield.kernels` stacks them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .._version import __version__
from ..core import validate as V
from ..core.activation import activation_attrs, get_activation
from ..core.budget import check_disk, check_memory
from ..ntk import conv as NC
from ..ntk.blocked import cross_block, first_block, layer_steps, run_block, table_recursion
from ..ntk.dataset import global_attrs, kernel_dataset, matrix
from ..ntk.depths import select_depths
from ..core.vocabulary import attrs
from . import kernel_store as KS
from .execute import run_tasks
from .kernel_conv import ConvTable, conv_block, write_conv_table
from .kernel_table import TableReader, write_table
from .store import lock, log_run

__all__ = ["kernels_to_store"]

DEFAULT_BLOCK = 1024
# Images per block of a convolutional store: a task holds 4 K B^2 doubles for K kept depths
# (all depths of its block at once) and its images' pixel tables; a pair costs ~1e3 times
# a fully connected entry, so smaller blocks still amortize the task overhead.
DEFAULT_CONV_BLOCK = 256
# A block task holds Sigma, Theta and 1 - c of its block, the two layer-1 products of an
# off-diagonal block and the transposed copy it writes: about 8 B x B doubles.
BLOCK_ARRAYS = 8
# Per input and layer, the largest layer table (Hermite path: 2 (N + 1) coefficients with
# N = 64, 2 x 9 tail bounds, 2 moments, 2 variances) in doubles.
TABLE_DOUBLES = 2 * 65 + 18 + 2 + 2


def _block_arg(block):
    if block is None:
        return None
    if isinstance(block, (bool, np.bool_)) or not isinstance(block, (int, np.integer)):
        raise ValueError(f"block must be a positive integer (rows and columns per block), "
                         f"got {block!r}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return int(block)


def _workers_arg(workers):
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    return int(workers)


def _on_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def _run_block(task, X, setting):
    """Compute block (I, J), write it (and its transpose), then flag it.  Runs on a worker."""
    if _on_worker():
        # Parallelism is across blocks: a Numba thread pool per task would oversubscribe.
        import numba

        numba.set_num_threads(1)
    act = get_activation(setting["activation"], **setting["parameters"])
    if "conv" in setting:
        return _run_conv_block(task, X, setting, act)
    sw2, sb2, shared = setting["sw2"], setting["sb2"], setting["shared"]
    (r0, r1), (c0, c1) = task["rows"], task["cols"]
    n = setting["n"]
    if setting["cross"]:
        # rows of X2, which sit after the n rows of X in the stacked inputs X
        rows, cols = np.arange(n + r0, n + r1), np.arange(c0, c1)
        blk, _, qz = cross_block(act, sw2, sb2, X, shared, rows, cols)
        ranges = [slice(n + r0, n + r1), slice(c0, c1)]
    else:
        rows = np.arange(r0, r1)
        cols = rows if (r0, c0) == (c0, r0) else np.arange(c0, c1)
        blk, _, qz = first_block(act, sw2, sb2, X, shared, rows, cols)
        ranges = [slice(r0, r1)] if cols is rows else [slice(r0, r1), slice(c0, c1)]
    # an upper off-diagonal block of the square kernel also writes its mirror image
    transpose = not setting["cross"] and cols is not rows
    root = zarr.open_group(task["store"], mode="r+", use_consolidated=False)
    table = TableReader(root[f"{KS.META}/{KS.TABLE}"], ranges)
    S, T = root["nngp"], root["ntk"]

    def emit(k, sig, th):
        S[k, r0:r1, c0:c1] = sig
        T[k, r0:r1, c0:c1] = th
        if transpose:
            S[k, c0:c1, r0:r1] = sig.T
            T[k, c0:c1, r0:r1] = th.T

    fallback = run_block(act, sw2, sb2, qz, shared, blk, table, setting["keep"], emit)
    # The flag only after every depth is written: a task killed midway is redone.
    I, J = task["index"]
    root[f"{KS.META}/{KS.FALLBACK}"][I, J] = fallback
    root[f"{KS.META}/{KS.DONE}"][I, J] = True
    return task["index"]


def _run_conv_block(task, Z, setting, act):
    """Block (I, J) of a convolutional kernel store: every kept depth at once (a pair of
    images carries its pixel state through all layers), then the flag."""
    (r0, r1), (c0, c1) = task["rows"], task["cols"]
    off = setting["n"] if setting["cross"] else 0  # X2's images follow X's in Z
    rows, cols = slice(off + r0, off + r1), slice(c0, c1)
    diagonal = not setting["cross"] and (r0, c0) == (c0, r0)
    root = zarr.open_group(task["store"], mode="r+", use_consolidated=False)
    S, T = conv_block(root[f"{KS.META}/{KS.TABLE}"], Z, {**setting, "act": act}, rows, cols,
                      diagonal)
    root["nngp"][:, r0:r1, c0:c1] = S
    root["ntk"][:, r0:r1, c0:c1] = T
    if not setting["cross"] and not diagonal:
        root["nngp"][:, c0:c1, r0:r1] = S.transpose(0, 2, 1)
        root["ntk"][:, c0:c1, r0:r1] = T.transpose(0, 2, 1)
    I, J = task["index"]
    root[f"{KS.META}/{KS.DONE}"][I, J] = True
    return task["index"]


def _tasks(store, m, n, block, done, cross):
    """The blocks not flagged done: I <= J of the n x n kernel, or every block of m x n."""
    out = []
    for I in range(-(-m // block)):
        for J in range(0 if cross else I, -(-n // block)):
            if not done[I, J]:
                out.append({"store": str(store), "index": (I, J),
                            "rows": (I * block, min(m, (I + 1) * block)),
                            "cols": (J * block, min(n, (J + 1) * block))})
    return out


def _template(keep, m, n, block, row, conv=None):
    """The kernel dataset with lazy NaN variables: what the store is created from."""
    import dask.array as da

    lazy = da.full((keep.size, m, n), np.nan, chunks=(1, block, block))
    if conv is not None:
        return NC.conv_dataset(lazy, lazy, keep, row, {}, conv)
    return kernel_dataset(lazy, lazy, ("depth", keep, attrs("depth")), row, {})


def kernels_to_store(X, activation, sw2, sb2, depth, store, *, X2=None, block=None,
                     depths=None, architecture=None, client=None, workers=None, resume=True,
                     overwrite=False, progress=True) -> xr.Dataset:
    """NNGP and NTK kernels of a data set too large for memory, computed block by block
    into a zarr store; resumable and distributable like :func:`meanfield.sweep`.

    Implements the recursion of :func:`meanfield.kernels` (docs/theory.md, "Kernels on a
    data set"), for variances sw2 = sigma_w^2, sb2 = sigma_b^2::

        Sigma^1(x, x') = sw2 x.x'/d + sb2,   Theta^1 = Sigma^1
        Sigma^{l+1} = sw2 E[phi(u) phi(v)] + sb2,   Sigmadot^{l+1} = sw2 E[phi'(u) phi'(v)]
        Theta^{l+1} = Sigma^{l+1} + Sigmadot^{l+1} * Theta^l,    (u, v) ~ N(0, Lambda^l)

    on blocks of the pair space: the per-input table (q_i^l and the per-input expansion
    data of every layer) is computed once from all inputs and stored; each block I x J with
    I <= J is a task that runs the same Numba recursion on its rows and columns and writes
    the kept depths of (I, J) and, transposed, of (J, I).  With ``X2`` the store holds the
    cross-kernel Sigma^l(X2[i], X[j]) and every block of it is a task.

    With ``architecture=meanfield.Conv(...)`` the store holds the CNN-GP and CNTK of images
    (docs/theory.md, "Convolutional networks"), those of ``meanfield.kernels(X, ...,
    architecture=...)``: a block is a set of image pairs, each carrying its pixel state
    Sigma^l_pp', Theta^l_pp' (pixel diagonal for flatten, all pixel pairs for GAP) through

        Sigma^{l+1}_pp' = sw2/k^2 sum_d E[phi(u) phi(v)]_{p+d,p'+d} + sb2
        Theta^{l+1}_pp' = Sigma^{l+1}_pp'
                          + sw2/k^2 sum_d E[phi'(u) phi'(v)]_{p+d,p'+d} Theta^l_{p+d,p'+d}

    and the per-image table is the pixel variances and Hermite rows of every depth
    (:mod:`meanfield.sweeps.kernel_conv`).

    Parameters
    ----------
    X : array_like, shape (n, d), or (n, H, W, C) with ``architecture``
        Inputs, one per row (images with ``architecture``).  Finite.
    activation : str or Activation
        A registered activation (workers rebuild it by name).
    sw2, sb2 : float
        Weight and bias *variances* (not standard deviations), >= 0.
    depth : int
        Number of layers L >= 1.
    store : str or path
        Directory of the zarr (v3) store.  On a cluster every worker must be able to write it.
    X2 : array_like, shape (m, d), optional
        Second set (e.g. test inputs): the store then holds the cross-kernel of
        ``meanfield.kernels(X, ..., X2=X2)``, ``i`` indexing the rows of X2 and ``j`` those
        of X (m x n per depth, all blocks computed).
    block : int, optional
        Rows (and columns) per block, B.  A task holds about 8 B^2 doubles (64 MiB at
        B = 1024) and the store is chunked (1, B, B).  Default 1024 for a new store, the
        store's own when resuming.
    depths : int or list of int, optional
        Depths to keep (within 1..depth; default all).  The store holds 2 K n^2 doubles for
        K kept depths.
    architecture : meanfield.Conv, optional
        A convolutional network (default: fully connected).  Blocks are then B x B image
        pairs (default B = 256), each task holding every kept depth of its block, about
        4 K B^2 doubles for K kept depths, and its images' pixel tables.
    client : dask.distributed.Client, optional
        Run the blocks on this cluster.  Without one, a local cluster of ``workers``
        single-threaded processes is started (``workers <= 1``: blocks run one after another
        in this process, each using Numba's threads).
    workers : int, optional
        Local worker processes when ``client`` is None; default ``os.cpu_count()``.
    resume : bool, default True
        If ``store`` holds these kernels (same inputs, activation, variances, depths,
        architecture and meanfield version), compute only the blocks not yet flagged
        done.  With False an existing store is an error.
    overwrite : bool, default False
        Replace an existing kernel store (only a store this function wrote; never any
        other directory).
    progress : bool, default True
        Show a progress bar (stderr) counting blocks.

    Returns
    -------
    xarray.Dataset
        :func:`open_kernels` of the store: the variables ``nngp`` and ``ntk`` over
        ``(depth, i, j)``, coordinates and attributes of ``meanfield.kernels(X, activation,
        sw2, sb2, depth, X2=X2, depths=depths)``, equal to them bit for bit, as lazy dask
        arrays.

    Raises
    ------
    ValueError
        Invalid arguments (naming them), a store holding other kernels or written by
        another meanfield version, an existing store with ``resume=False``, a directory that
        is not a kernel store.  Nothing on disk is changed when this is raised.
    meanfield.core.budget.BudgetError
        The store does not fit on disk, or the blocks not in memory.

    Notes
    -----
    The activation must be registered by name in every worker process (built-ins are).
    Values do not depend on ``block``, on the cluster or on interruptions.
    """
    conv = architecture
    if conv is not None:  # images (n, H, W, C): meanfield/sweeps/kernel_conv.py
        act, sw2, sb2, L, X, X2 = NC.validated(X, X2, activation, sw2, sb2, depth, conv)
        n = X.shape[0]
    else:
        act, sw2, sb2, L = V.network(activation, sw2, sb2, depth)
        if np.ndim(X) != 2:
            raise ValueError(f"X must be two-dimensional (samples x features), got shape "
                             f"{np.shape(X)}; pass architecture=meanfield.Conv(...) for "
                             f"images")
        X = matrix("X", X)
        n = X.shape[0]
        if X2 is not None:
            if np.ndim(X2) != 2:
                raise ValueError(f"X2 must be two-dimensional (samples x features), got shape "
                                 f"{np.shape(X2)}")
            X2 = matrix("X2", X2)
            if X2.shape[1] != X.shape[1]:
                raise ValueError(f"X2 has {X2.shape[1]} features but X has {X.shape[1]}")
    m = n if X2 is None else X2.shape[0]
    keep = select_depths(depths, L)
    block = _block_arg(block)
    workers = _workers_arg(workers)
    if store is None or not str(store).strip():
        raise ValueError("kernels_to_store needs a store path")
    store = Path(store)
    if store.exists() and not store.is_dir():
        raise ValueError(f"store {str(store)!r} is a file, not a zarr store (a directory)")
    fp = KS.fingerprint(activation_attrs(act), sw2, sb2, L, keep, X, X2, conv)
    # the inputs as meanfield.kernels stacks them: X, then X2 (images: (N, H W, C))
    Z = X if X2 is None else np.concatenate([X, X2])
    if conv is not None:
        Z = Z.reshape(Z.shape[0], -1, Z.shape[-1])
    fd = None
    try:
        if store.exists() and not overwrite:
            if KS.bookkeeping(store) is None and not any(store.iterdir()):
                pass  # an empty directory: create the store in it
            elif not resume:
                raise ValueError(f"store {str(store)!r} already exists; resume it or pass "
                                 f"overwrite=True (CLI: --overwrite) to replace it")
            else:
                block = KS.check_existing(store, fp, block)
                fd = lock(store)
        if fd is None:
            block = min(block or (DEFAULT_CONV_BLOCK if conv else DEFAULT_BLOCK), max(m, n))
            replace = store.exists()
            if replace and KS.bookkeeping(store) is None and any(store.iterdir()):
                raise ValueError(f"{str(store)!r} exists and is not a meanfield kernel store; "
                                 f"refusing to overwrite it")
            if conv is not None:
                # the pixel tables of the whole set, as meanfield.kernels builds them
                table = ConvTable(X, X2, act, sw2, sb2, L, conv)
                _check_size(m, n, X2 is not None, keep.size, L, block, workers, store,
                            conv_table=table.nbytes)
            else:
                _check_size(m, n, X2 is not None, keep.size, L, block, workers, store)
            old = lock(store) if replace else None
            try:
                if conv is not None:
                    def fill(group):
                        write_conv_table(group, table, block)
                        return NC.conv_attrs(act, sw2, sb2, NC.METHODS[table.mode], conv,
                                             X.shape[1:])
                else:
                    rec = table_recursion(act, sw2, sb2, Z, None if X2 is None else m)

                    # Layers to the deepest kept depth, as meanfield.kernels runs them:
                    # the method attributes then describe the same layers.
                    deepest = int(keep[-1])

                    def fill(group):
                        write_table(group, layer_steps(rec, deepest), deepest - 1, Z.shape[0],
                                    block)
                        # after the table: the method attributes say what its layers used
                        return global_attrs(act, sw2, sb2, rec,
                                            f"NNGP and NTK kernels: {act.name}")

                fd = KS.create(store, _template(keep, m, n, block,
                                                "X" if X2 is None else "X2", conv),
                               fp, block, fill, replace=replace)
            finally:
                if old is not None:
                    os.close(old)
        _run(store, Z, n, m, X2 is not None, act, sw2, sb2, keep, block, client, workers,
             progress, conv)
    finally:
        if fd is not None:
            os.close(fd)
    return KS.open_kernels(store)


def _check_size(m, n, cross, kept, L, block, workers, store, conv_table=None):
    """Refuse, before anything is written, a store the disk or blocks the memory cannot hold
    (m x n kernels; the table has a row per input of X and of X2).  ``conv_table``: the
    bytes of a convolutional store's pixel tables, whose block tasks hold every kept depth
    of their block at once (Sigma, Theta and their transposes)."""
    pts = n + m if cross else n
    if conv_table is None:
        per_block, table = BLOCK_ARRAYS * block * block, 8.0 * TABLE_DOUBLES * pts
        disk_table = table * max(L - 1, 0)
    else:
        per_block, table = 4 * kept * block * block, 2.0 * block / pts * conv_table
        disk_table = conv_table
    check_memory(8.0 * per_block * max(1, workers) + table,
                 f"block={block} on {max(1, workers)} workers")
    what = f"kernels of {m} x {n} inputs" if cross else f"kernels of {n} inputs"
    check_disk(8.0 * 2 * kept * float(m) * n + disk_table,
               store.parent if not store.exists() else store, f"{what} at {kept} depths")


def _run(store, Z, n, m, cross, act, sw2, sb2, keep, block, client, workers, progress,
         conv=None):
    meta = KS.bookkeeping(store)
    done = meta[KS.DONE][...]
    tasks = _tasks(store, m, n, block, done, cross)
    st = KS.kernel_store_status(store)
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)
    setting = {"activation": act.name, "parameters": dict(act.parameters), "sw2": sw2,
               "sb2": sb2, "keep": keep, "n": n, "cross": cross}
    if conv is None:
        setting["shared"] = bool(root.attrs["shared_norm"])
    else:
        setting["conv"] = {"filter_size": conv.filter_size, "padding": conv.padding,
                           "readout": conv.readout}
        setting["image_shape"] = list(root.attrs["image_shape"])
    started = time.time()
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
             "blocks_total": st.n_blocks, "blocks_done_before": st.n_done,
             "blocks_computed": 0, "seconds": 0.0, "outcome": "interrupted",
             "meanfield_version": __version__}
    extra = None
    try:
        entry["blocks_computed"] = run_tasks(_run_block, tasks, client, workers, progress,
                                             st.n_blocks, st.n_done, desc="kernels",
                                             unit="block", shared={"X": Z, "setting": setting})
        entry["outcome"] = "complete"
        final = KS.kernel_store_status(store)
        if "pairs_exact_fallback" in root.attrs:
            extra = {"pairs_exact_fallback": final.pairs_exact_fallback}
    except BaseException:
        entry["blocks_computed"] = KS.kernel_store_status(store).n_done - st.n_done
        raise
    finally:
        entry["seconds"] = round(time.time() - started, 3)
        log_run(store, entry, KS.META, extra)
