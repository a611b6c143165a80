"""Kernel stores: NNGP/NTK kernels of one data set in a zarr (v3) store, block by block.

Layout::

    nngp, ntk        (depth, i, j) float64, chunks (1, B, B), uncompressed (kernel values
                     hardly compress), NaN where a block is not computed yet; (depth, n, n),
                     or (depth, m, n) for the cross-kernel of a second set X2 (m rows, i
                     indexing X2 and j indexing X, as :func:`meanfield.kernels` with X2)
    depth, i, j      coordinates, as in :func:`meanfield.kernels`
    _kernels/        bookkeeping (xarray ignores subgroups):
        attrs        format, fingerprint (what the values depend on), block, runs
        done         (nb, nb) bool: block (I, J), I <= J, written (data of (I, J) and (J, I));
                     with X2 (mb, nb): every block (I, J) of X2 rows x X columns
        fallback     the same shape, int64: pairs x layers of the block taken by the exact
                     2-D rule
        table/       the layer table (:mod:`meanfield.sweeps.kernel_table`), over the n
                     inputs of X followed by the m of X2; for convolutional kernels
                     (images, i and j index images) the pixel tables of
                     :mod:`meanfield.sweeps.kernel_conv`

Resumability rests on the same rule as sweeps (:mod:`meanfield.sweeps.run`): a block's
flag is set only after all its data are written, so a run killed at any moment leaves at
worst blocks with unset flags, and the next run computes exactly those.  The store is
built in a hidden sibling directory and renamed into place, so a run killed while
creating it leaves nothing under the requested name.  One process writes a store at a
time (the flock of :func:`meanfield.sweeps.store.lock`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .._version import __version__
from .output import quiet_consolidation
from .store import bookkeeping as store_bookkeeping
from .store import differing_keys, existing_bookkeeping, open_dataset, publish

__all__ = ["KernelStoreStatus", "open_kernels", "kernel_store_status"]

META = "_kernels"
DONE = "done"
FALLBACK = "fallback"
TABLE = "table"
FORMAT = 1  # version of this layout, bumped if it changes


def _digest(X):
    return hashlib.blake2b(np.ascontiguousarray(X, dtype=np.float64).tobytes(),
                           digest_size=16).hexdigest()


def fingerprint(act_attrs: dict, sw2, sb2, depth, keep, X, X2=None, conv=None) -> dict:
    """What the stored values depend on: a store is resumed only if all of it agrees.
    With a second set X2 its size and digest are part of it (``m``, ``inputs2_blake2b``);
    with a convolutional architecture (X of images (n, H, W, C)) the architecture and the
    image shape (``architecture``, ``filter_size``, ``padding``, ``readout``, ``stride``,
    ``image_shape``).  Keys that do not apply are absent, so the fingerprints of fully
    connected square-kernel stores stay what they were."""
    fp = {**act_attrs, "sw2": float(sw2), "sb2": float(sb2), "depth": int(depth),
          "depths": [int(d) for d in keep], "n": int(X.shape[0]), "d": int(X.shape[1]),
          "inputs_blake2b": _digest(X), "meanfield_version": __version__}
    if conv is not None:
        fp.update(conv.attrs)
        fp["image_shape"] = [int(v) for v in X.shape[1:]]
    if X2 is not None:
        fp["m"] = int(X2.shape[0])
        fp["inputs2_blake2b"] = _digest(X2)
    return fp


def edge(fp: dict) -> int:
    """The largest side of the kernel: a block is at most this wide."""
    return max(int(fp["n"]), int(fp.get("m", 0)))


def block_mask(done: np.ndarray, cross: bool) -> np.ndarray:
    """The blocks a store computes: the upper triangle I <= J (square kernel, block (J, I)
    is the transpose of (I, J)), or all of them (cross-kernel with X2)."""
    return np.ones(done.shape, dtype=bool) if cross else np.triu(np.ones(done.shape, dtype=bool))


def bookkeeping(store: Path):
    """The store's bookkeeping group, or None if ``store`` is not a meanfield kernel store."""
    return store_bookkeeping(store, META, "fingerprint")


def create(store: Path, template: xr.Dataset, fp: dict, block: int, fill_table,
           replace=False) -> int:
    """Create the store (:func:`meanfield.sweeps.store.publish`); returns its lock's fd.

    ``template`` is the kernel dataset with lazy (dask) variables: only its metadata and
    coordinates are written.  ``fill_table(group)`` writes the layer table and returns the
    dataset's global attributes (they say which methods the layers used).
    """

    def build(tmp):
        K, m, n = template["nngp"].shape
        b = min(block, max(m, n))
        enc = {v: {"chunks": (1, b, b), "compressors": None, "fill_value": np.nan}
               for v in template.data_vars}
        with quiet_consolidation():
            # mode "w-": "w" would delete and recreate the directory, and with it the lock
            template.to_zarr(str(tmp), mode="w-", compute=False, encoding=enc,
                             consolidated=False, zarr_format=3)
        root = zarr.open_group(str(tmp), mode="r+", use_consolidated=False)
        shape = (-(-m // b), -(-n // b))
        cross = "m" in fp
        layout = ("done[I, J]: block I x J (rows of X2 x rows of X) written" if cross else
                  "done[I, J], I <= J: blocks I x J and J x I written")
        meta = root.create_group(META, attributes={
            "format": FORMAT, "fingerprint": fp, "block": int(b), "runs": [],
            "layout": f"{layout}; fallback[I, J]: pairs x layers computed by the exact 2-D "
                      f"rule"})
        meta.create_array(DONE, shape=shape, chunks=(1, 1), dtype=bool, fill_value=False)
        meta.create_array(FALLBACK, shape=shape, chunks=(1, 1), dtype="int64", fill_value=0)
        root.attrs.update(fill_table(meta.create_group(TABLE)))

    return publish(store, build, replace)


def check_existing(store: Path, fp: dict, block):
    """The block size of an existing store that may be resumed for ``fp``, or ValueError."""
    meta = existing_bookkeeping(store, "kernel", META, "fingerprint", FORMAT)
    diff = differing_keys(dict(meta.attrs["fingerprint"]), fp)
    if diff:
        raise ValueError(f"store {str(store)!r} holds other kernels (differs in "
                         f"{', '.join(diff)}); pass overwrite=True (CLI: --overwrite) to "
                         f"replace it")
    stored = int(meta.attrs["block"])
    if block is not None and min(block, edge(fp)) != stored:
        raise ValueError(f"store {str(store)!r} is blocked by {stored}, not {block}; resume "
                         f"with block={stored} (or leave it out) or pass overwrite=True")
    return stored


@dataclass(frozen=True)
class KernelStoreStatus:
    """Progress of a kernel store.

    Attributes
    ----------
    store : str
        Path of the store.
    n, block : int
        Number of inputs (rows of X); block edge B (the last block row/column may be
        shorter).
    depths : tuple of int
        Depths kept in the store.
    done : numpy.ndarray of bool, shape (nb, nb) or (mb, nb)
        Completion flag of block (I, J) for I <= J (block (J, I) is its transpose); the
        lower triangle is unused (False).  With X2: of every block (I, J), rows of X2 by
        rows of X.
    n_blocks, n_done : int
        Blocks computed, nb (nb + 1) / 2 (or mb nb with X2), and how many are flagged done.
    pairs_exact_fallback : int
        Pairs x layers computed by the exact 2-D rule in the blocks done (Hermite path).
    runs : list of dict
        One entry per run: ``started``, ``blocks_total``, ``blocks_done_before``,
        ``blocks_computed``, ``seconds``, ``outcome`` (``complete`` or ``interrupted``).
    m : int or None
        Number of X2 inputs (rows of a cross-kernel), None for the square kernel of X.
    """

    store: str
    n: int
    block: int
    depths: tuple
    done: np.ndarray = field(repr=False)
    n_blocks: int
    n_done: int
    pairs_exact_fallback: int
    runs: list = field(repr=False)
    m: int = None

    @property
    def cross(self) -> bool:
        """The store holds the cross-kernel of X2 (m rows) and X (n columns)."""
        return self.m is not None

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_blocks


def kernel_store_status(store) -> KernelStoreStatus:
    """Completion and run history of a kernel store (reads only the bookkeeping)."""
    store = Path(store)
    meta = bookkeeping(store)
    if meta is None:
        raise ValueError(f"{str(store)!r} is not a meanfield kernel store")
    done = meta[DONE][...]
    fp = meta.attrs["fingerprint"]
    upper = block_mask(done, "m" in fp)
    return KernelStoreStatus(store=str(store), n=int(fp["n"]), block=int(meta.attrs["block"]),
                             depths=tuple(fp["depths"]), done=done & upper,
                             n_blocks=int(upper.sum()), n_done=int((done & upper).sum()),
                             pairs_exact_fallback=int(meta[FALLBACK][...][done & upper].sum()),
                             runs=list(meta.attrs.get("runs", [])),
                             m=int(fp["m"]) if "m" in fp else None)


def open_kernels(store, partial=False) -> xr.Dataset:
    """Open a kernel store lazily: the dataset of :func:`meanfield.kernels` (same variables,
    coordinates and attributes) with dask arrays read block by block from the store.

    Parameters
    ----------
    store : str or path
        A store written by :func:`meanfield.kernels_to_store`.
    partial : bool, default False
        Open a store whose run has not finished: the blocks not computed yet read as NaN.

    Raises
    ------
    ValueError
        Not a kernel store; an unfinished store without ``partial``.
    """
    st = kernel_store_status(store)
    if not st.complete and not partial:
        raise ValueError(f"store {str(store)!r} is unfinished ({st.n_done} of {st.n_blocks} "
                         f"blocks computed); run kernels_to_store again (CLI: meanfield kernel "
                         f"... --store) to resume it, or pass partial=True")
    return open_dataset(Path(store))
