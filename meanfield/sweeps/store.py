"""Sweep stores: a zarr (v3) store with the sweep's dataset and, in the subgroup ``_sweep``,
its bookkeeping -- the spec it was written for, the chunking, one completion flag per
chunk and the log of runs.

Resumability rests on one rule: a chunk's completion flag is set only after that chunk's
data and its checksums have been written (:mod:`meanfield.sweeps.run`); the checksums let
every reader find chunks deleted or damaged since (:mod:`meanfield.sweeps.verify`).
Durability is against the death of the process, not of the machine: the zarr store does
not fsync its chunk files.  One process writes a store at a time: the run holds an
exclusive ``flock`` on the store directory (released by the kernel if the process dies).
Consolidated metadata is rewritten whenever the metadata changes, so ``xarray.open_zarr``
opens a store without a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .._version import __version__
from .layout import encoding, template
from .output import os_error_text, publish_mode, quiet_consolidation, replace_dir
from .spec import SweepSpec
from .verify import coordinates_digest, raw_group

# Layout of the bookkeeping inside the store: a zarr subgroup, so xarray ignores it when
# opening the dataset and it travels with the store (local disk or any zarr store).
META_GROUP = "_sweep"
DONE = "done"
CHECKSUM = "checksum"
FORMAT = 2  # version of this store layout, bumped if the bookkeeping changes (2: checksums)


def fingerprint(spec: SweepSpec) -> dict:
    """What a store must agree on to be resumed: everything that changes the data."""
    d = spec.to_dict()
    d.pop("chunks")
    return d


def differing_keys(a, b, prefix=""):
    """Dotted names of the keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += differing_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "spec"]


def bookkeeping(store: Path, group: str = META_GROUP, key: str = "spec"):
    """The store's bookkeeping group (``group``, holding the attribute ``key``), or None if
    ``store`` is not such a meanfield store (a sweep store by default)."""
    if not (store / "zarr.json").is_file():
        return None
    try:
        g = zarr.open_group(str(store), mode="r", path=group, use_consolidated=False)
    except (OSError, KeyError, ValueError, TypeError, zarr.errors.GroupNotFoundError):
        return None
    return g if key in g.attrs else None


def _describe(spec, chunks=None):
    return ", ".join(f"{k}={v}" for k, v in (chunks or spec.chunks).items())


def lock(store: Path) -> int:
    """Take the store's writer lock (an exclusive flock on its directory); returns the fd.

    Raises ValueError if another process holds it.  The kernel releases the lock when the
    fd is closed or the process dies, so a killed run never leaves a stale lock behind.
    """
    fd = os.open(store, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ValueError(f"store {str(store)!r} is being written by another meanfield run; "
                         f"wait for it to finish (or stop it) and run again") from None
    return fd


def consolidate(store):
    """Rewrite the store's consolidated metadata (after any change to the metadata)."""
    with quiet_consolidation():
        zarr.consolidate_metadata(str(store))


def _remove_stale_inits(store: Path):
    """Remove the half-made stores of runs killed while initializing ``store`` (a live
    initialization holds its directory's lock, so it is left alone)."""
    for old in store.parent.glob(f".{store.name}.init-*"):
        try:
            fd = lock(old)
        except (ValueError, OSError):
            continue
        try:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)


def publish(store: Path, build, replace: bool = False) -> int:
    """Build a store with ``build(tmp)`` in a temporary sibling directory, then rename it
    into place: a run killed during initialization leaves no half-made store at ``store``.
    An old store at ``store`` (``replace``; the caller holds its lock) is removed only once
    the new one is in place.  Returns the fd holding the new store's writer lock."""
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_inits(store)
        tmp = Path(tempfile.mkdtemp(prefix=f".{store.name}.init-", dir=store.parent))
    except OSError as exc:
        raise ValueError(f"cannot create store {str(store)!r}: {os_error_text(exc)}") from None
    fd = None
    try:
        fd = lock(tmp)
        build(tmp)
        consolidate(tmp)
        publish_mode(tmp)
        try:
            if replace:
                replace_dir(tmp, store)
            else:
                os.replace(tmp, store)  # fails (ENOTEMPTY) if another process made one
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise ValueError(f"store {str(store)!r} was created by another process "
                                 f"meanwhile; run again to resume it") from None
            raise
        return fd
    except BaseException:
        if fd is not None:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def create(store: Path, spec: SweepSpec, replace: bool = False) -> int:
    """Create the sweep store of ``spec`` (:func:`publish`); returns its lock's fd."""

    def build(tmp):
        tmpl = template(spec)
        with quiet_consolidation():
            # mode "w-": "w" would delete and recreate the directory, and with it the lock
            tmpl.to_zarr(str(tmp), mode="w-", compute=False, encoding=encoding(tmpl, spec),
                         consolidated=False, zarr_format=3)
        root = zarr.open_group(str(tmp), mode="r+", use_consolidated=False)
        names = sorted(tmpl.data_vars)
        meta = root.create_group(META_GROUP, attributes={
            "format": FORMAT,
            "spec": json.dumps(fingerprint(spec), sort_keys=True),
            "chunks": dict(spec.chunks),
            "dims": list(spec.dims),
            "meanfield_version": __version__,
            "variables": names,
            "checksum": "BLAKE2b-64 of each variable's chunk (dtype, shape, raw bytes)",
            "coordinates_checksum": format(coordinates_digest(raw_group(tmp), spec.dims), "x"),
            "runs": [],
        })
        meta.create_array(DONE, shape=spec.chunk_grid, chunks=(1,) * len(spec.chunk_grid),
                          dtype=bool, fill_value=False, dimension_names=list(spec.dims))
        meta.create_array(CHECKSUM, shape=spec.chunk_grid + (len(names),),
                          chunks=(1,) * len(spec.chunk_grid) + (len(names),), dtype="uint64",
                          fill_value=0, dimension_names=list(spec.dims) + ["variable"])

    return publish(store, build, replace)


def existing_bookkeeping(store: Path, kind="sweep", group=META_GROUP, key="spec", fmt=FORMAT):
    """The bookkeeping group of the existing ``kind`` store ``store`` if it has this
    meanfield's layout ``fmt``; otherwise ValueError (nothing is touched)."""
    meta = bookkeeping(store, group, key)
    if meta is None:
        raise ValueError(f"{str(store)!r} exists and is not a meanfield {kind} store; "
                         f"refusing to touch it")
    if meta.attrs.get("format") != fmt:
        raise ValueError(f"store {str(store)!r} has layout format {meta.attrs.get('format')!r}, "
                         f"this meanfield writes {fmt}; pass overwrite=True "
                         f"(CLI: --overwrite) to replace it")
    return meta


def check_existing(store: Path, spec: SweepSpec, chunks_given: bool):
    meta = existing_bookkeeping(store)
    stored = json.loads(meta.attrs["spec"])
    diff = differing_keys(stored, fingerprint(spec))
    if diff:
        raise ValueError(f"store {str(store)!r} was written by a different spec (differs in "
                         f"{', '.join(diff)}); pass overwrite=True (CLI: --overwrite) "
                         f"to replace it")
    if meta.attrs.get("meanfield_version") != __version__:
        raise ValueError(f"store {str(store)!r} was written by meanfield "
                         f"{meta.attrs.get('meanfield_version')}, this is {__version__}; results "
                         f"could differ, pass overwrite=True (CLI: --overwrite) to recompute")
    stored_chunks = dict(meta.attrs["chunks"])
    if stored_chunks != spec.chunks:
        if chunks_given:
            raise ValueError(f"store {str(store)!r} is chunked as {_describe(spec, stored_chunks)}, "
                             f"not {_describe(spec)}; resume with the store's chunks or use "
                             f"overwrite=True (CLI: --overwrite)")
        # The spec file's chunking changed: chunking never changes the values, so resume
        # with the store's layout.
        spec = spec.with_chunks(stored_chunks)
    return spec



def log_run(store: Path, entry: dict, group: str = META_GROUP, attrs=None):
    """Append ``entry`` to the run log of ``group`` (and update the dataset's global
    attributes with ``attrs``), then rewrite the consolidated metadata."""
    g = zarr.open_group(str(store), mode="r+", path=group, use_consolidated=False)
    g.attrs["runs"] = list(g.attrs.get("runs", [])) + [entry]
    if attrs:
        zarr.open_group(str(store), mode="r+", use_consolidated=False).attrs.update(attrs)
    consolidate(store)


def open_dataset(store: Path) -> xr.Dataset:
    """The dataset of a store, opened lazily (bookkeeping subgroups are left out)."""
    meta = json.loads((store / "zarr.json").read_text(encoding="utf-8"))
    return xr.open_zarr(str(store), consolidated=meta.get("consolidated_metadata") is not None)


def open_sweep(store) -> xr.Dataset:
    """Open a sweep store lazily as an xarray.Dataset (the bookkeeping group is left out)."""
    store = Path(store)
    if bookkeeping(store) is None:
        raise ValueError(f"{str(store)!r} is not a meanfield sweep store")
    return open_dataset(store)


@dataclass(frozen=True)
class SweepStatus:
    """Progress and provenance of a sweep store.

    Attributes
    ----------
    store : str
        Path of the store.
    dims : tuple of str
        Dataset dimensions, e.g. ``("sw2", "sb2")``.
    shape, chunk_shape, chunk_grid : tuple of int
        Points per dimension, points per chunk, chunks per dimension.
    done : numpy.ndarray of bool, shape ``chunk_grid``
        Completion flag of every chunk.
    n_chunks, n_done : int
        Number of chunks, number flagged done.
    fraction : float
        ``n_done / n_chunks``.
    points_done : int
        Number of grid points in completed chunks.
    meanfield_version : str
        Version that wrote the store.
    runs : list of dict
        One entry per run: ``started``, ``chunks_total``, ``chunks_done_before``,
        ``chunks_computed``, ``seconds``, ``outcome`` (``complete`` or ``interrupted``).
        A run killed with SIGKILL leaves no entry.
    """

    store: str
    dims: tuple
    shape: tuple
    chunk_shape: tuple
    chunk_grid: tuple
    done: np.ndarray = field(repr=False)
    n_chunks: int
    n_done: int
    fraction: float
    points_done: int
    meanfield_version: str
    runs: list = field(repr=False)

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_chunks

    def point_mask(self) -> np.ndarray:
        """Boolean array of the dataset's shape: True where the point's chunk is done."""
        m = self.done
        for axis, c in enumerate(self.chunk_shape):
            m = np.repeat(m, c, axis=axis)
        return m[tuple(slice(0, n) for n in self.shape)]


def sweep_status(store) -> SweepStatus:
    """Completion and run history of a sweep store (reads only the bookkeeping)."""
    store = Path(store)
    meta = bookkeeping(store)
    if meta is None:
        raise ValueError(f"{str(store)!r} is not a meanfield sweep store")
    try:
        root = raw_group(store)
        done = root[f"{META_GROUP}/{DONE}"][...]
        dims = tuple(meta.attrs["dims"])
        shape = tuple(root[d].shape[0] for d in dims)
    except Exception as exc:  # zarr and its codecs raise many types for damaged files
        raise ValueError(f"store {str(store)!r} is damaged: its bookkeeping cannot be read "
                         f"({type(exc).__name__}); recompute it with `meanfield sweep "
                         f"--overwrite`") from None
    chunks = dict(meta.attrs["chunks"])
    chunk_shape = tuple(min(chunks[d], n) if d in chunks else 1 for d, n in zip(dims, shape))
    status = SweepStatus(store=str(store), dims=dims, shape=shape, chunk_shape=chunk_shape,
                         chunk_grid=done.shape, done=done, n_chunks=int(done.size),
                         n_done=int(done.sum()), fraction=float(done.mean()) if done.size else 1.0,
                         points_done=0, meanfield_version=meta.attrs.get("meanfield_version", "?"),
                         runs=list(meta.attrs.get("runs", [])))
    return SweepStatus(**{**status.__dict__, "points_done": int(status.point_mask().sum())})



def verify(store, status=None, progress=None):
    """Read the store back and check every chunk flagged done against its checksums
    (:class:`meanfield.sweeps.verify.Verification`)."""
    from .verify import verify_store

    store = Path(store)
    status = status or sweep_status(store)
    meta = bookkeeping(store)
    if meta.attrs.get("format") != FORMAT:
        raise ValueError(f"store {str(store)!r} has layout format {meta.attrs.get('format')!r} "
                         f"without chunk checksums; this meanfield writes {FORMAT}: recompute it "
                         f"with `meanfield sweep --overwrite`")
    names = list(meta.attrs["variables"])
    coords = int(meta.attrs["coordinates_checksum"], 16)
    return verify_store(store, status, names, coords_digest=coords, progress=progress)


def open_checked(store, partial=False, progress=None, check=None) -> xr.Dataset:
    """The store's dataset after verifying it; ValueError (one line) if it is incomplete or
    damaged, unless ``partial``: then the missing and damaged points are NaN (integer and
    flag variables become float to hold it), variable ``computed`` marks the points that
    are there, and the attribute ``sweep_incomplete`` says so."""
    store = Path(store)
    st = sweep_status(store)
    check = check or verify(store, st, progress=progress)
    if check.broken:
        raise ValueError(f"store {str(store)!r} is damaged: {'; '.join(check.broken)}; "
                         f"recompute it with `meanfield sweep --overwrite`")
    good = st.done & ~check.bad(st.chunk_grid)
    ds = open_sweep(store)
    if good.all():
        return ds
    n_bad = int(good.size - good.sum())
    what = "; ".join(([f"{st.n_chunks - st.n_done} of {st.n_chunks} chunks not computed"]
                      if st.n_done < st.n_chunks else []) + ([check.summary()] if not check.ok else []))
    if not partial:
        raise ValueError(f"store {str(store)!r} is {100 * good.mean():.1f}% complete ({what}); "
                         f"finish it with "
                         f"`meanfield sweep` (a resume recomputes missing and damaged chunks) "
                         f"or pass --partial")
    from ..core.budget import check_memory

    npts = int(np.prod(st.shape))
    check_memory(8.0 * npts * (len(ds.data_vars) + 1), f"--partial export of {npts} points")
    mask = SweepStatus(**{**st.__dict__, "done": good}).point_mask()
    g = raw_group(store)
    out = ds.drop_vars(list(ds.data_vars))
    from .verify import chunk_region

    for name, var in ds.data_vars.items():
        values = np.full(st.shape, np.nan)
        raw = g[name]
        for idx in zip(*np.nonzero(good)):
            region = chunk_region(idx, st.chunk_shape, st.shape)
            values[region] = raw[region]
        out[name] = (var.dims, values, var.attrs)
    out["computed"] = (st.dims, mask, {"long_name": "point computed (its chunk is complete and "
                                                    "verified)", "units": "1"})
    out.attrs["sweep_incomplete"] = (f"{n_bad} of {st.n_chunks} chunks absent ({what}); their "
                                     f"points are NaN, see variable 'computed'")
    return out
