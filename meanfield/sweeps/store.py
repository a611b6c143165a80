"""Sweep stores: a zarr (v3) store with the sweep's dataset and, in the subgroup ``_sweep``,
its bookkeeping -- the spec it was written for, the chunking, one completion flag per
chunk and the log of runs.

Resumability rests on one rule: a chunk's completion flag is set only after that chunk's
data has been written (:mod:`meanfield.sweeps.run`).  Durability is against the death of
the process, not of the machine: the zarr store does not fsync its chunk files.
"""

from __future__ import annotations

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
from .spec import SweepSpec

# Layout of the bookkeeping inside the store: a zarr subgroup, so xarray ignores it when
# opening the dataset and it travels with the store (local disk or any zarr store).
META_GROUP = "_sweep"
DONE = "done"
FORMAT = 1  # version of this store layout, bumped if the bookkeeping changes


def fingerprint(spec: SweepSpec) -> dict:
    """What a store must agree on to be resumed: everything that changes the data."""
    d = spec.to_dict()
    d.pop("chunks")
    return d


def _diff(a, b, prefix=""):
    """Dotted names of the keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "spec"]


def bookkeeping(store: Path):
    """The store's bookkeeping group, or None if ``store`` is not a meanfield sweep store."""
    if not (store / "zarr.json").is_file():
        return None
    try:
        g = zarr.open_group(str(store), mode="r", path=META_GROUP)
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        return None
    return g if "spec" in g.attrs else None


def _describe(spec, chunks=None):
    return ", ".join(f"{k}={v}" for k, v in (chunks or spec.chunks).items())


def create(store: Path, spec: SweepSpec):
    """Write the template into a temporary sibling directory, then rename it into place:
    a run killed during initialization leaves no half-made store at ``store``."""
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{store.name}.init-", dir=store.parent))
    try:
        tmpl = template(spec)
        tmpl.to_zarr(str(tmp), mode="w", compute=False, encoding=encoding(tmpl, spec),
                     consolidated=False, zarr_format=3)
        root = zarr.open_group(str(tmp), mode="r+")
        meta = root.create_group(META_GROUP, attributes={
            "format": FORMAT,
            "spec": json.dumps(fingerprint(spec), sort_keys=True),
            "chunks": dict(spec.chunks),
            "dims": list(spec.dims),
            "meanfield_version": __version__,
            "runs": [],
        })
        meta.create_array(DONE, shape=spec.chunk_grid, chunks=(1,) * len(spec.chunk_grid),
                          dtype=bool, fill_value=False, dimension_names=list(spec.dims))
        if store.exists():
            # overwrite=True: the old store stays intact until the new one is complete.
            trash = Path(tempfile.mkdtemp(prefix=f".{store.name}.old-", dir=store.parent))
            os.replace(store, trash / "store")
            os.replace(tmp, store)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, store)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_existing(store: Path, spec: SweepSpec, chunks_given: bool):
    meta = bookkeeping(store)
    if meta is None:
        raise ValueError(f"{str(store)!r} exists and is not a meanfield sweep store; "
                         f"refusing to touch it")
    if meta.attrs.get("format") != FORMAT:
        raise ValueError(f"store {str(store)!r} has layout format {meta.attrs.get('format')!r}, "
                         f"this meanfield writes {FORMAT}; pass overwrite=True "
                         f"(CLI: --overwrite) to replace it")
    stored = json.loads(meta.attrs["spec"])
    diff = _diff(stored, fingerprint(spec))
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



def log_run(store: Path, entry: dict):
    g = zarr.open_group(str(store), mode="r+", path=META_GROUP)
    g.attrs["runs"] = list(g.attrs.get("runs", [])) + [entry]



def open_sweep(store) -> xr.Dataset:
    """Open a sweep store lazily as an xarray.Dataset (the bookkeeping group is left out)."""
    store = Path(store)
    if bookkeeping(store) is None:
        raise ValueError(f"{str(store)!r} is not a meanfield sweep store")
    return xr.open_zarr(str(store), consolidated=False)


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
    done = zarr.open_array(str(store), path=f"{META_GROUP}/{DONE}", mode="r")[...]
    root = zarr.open_group(str(store), mode="r")
    dims = tuple(meta.attrs["dims"])
    shape = tuple(root[d].shape[0] for d in dims)
    chunks = dict(meta.attrs["chunks"])
    chunk_shape = tuple(min(chunks[d], n) if d in chunks else 1 for d, n in zip(dims, shape))
    status = SweepStatus(store=str(store), dims=dims, shape=shape, chunk_shape=chunk_shape,
                         chunk_grid=done.shape, done=done, n_chunks=int(done.size),
                         n_done=int(done.sum()), fraction=float(done.mean()) if done.size else 1.0,
                         points_done=0, meanfield_version=meta.attrs.get("meanfield_version", "?"),
                         runs=list(meta.attrs.get("runs", [])))
    return SweepStatus(**{**status.__dict__, "points_done": int(status.point_mask().sum())})

