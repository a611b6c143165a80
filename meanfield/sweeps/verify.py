"""Stores verify themselves: a checksum per chunk, and a reader that trusts nothing else.

When a chunk is computed, the run records beside its completion flag a checksum of the
arrays it wrote (:func:`chunk_digest`: BLAKE2b, 8 bytes, over every data variable of the
chunk in name order, dtype and raw bytes).  :func:`verify_store` reads every chunk flagged
done back from disk and recomputes it: a chunk whose file is gone is *missing*, one that
cannot be decoded or whose bytes differ is *damaged*.  A resume recomputes both; ``info``
reports them; ``export`` and ``plot`` refuse them unless asked for what is complete.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

__all__ = ["digest", "chunk_digests", "Verification", "verify_store", "chunk_region", "raw_group"]

# Above this many bytes a variable is read chunk by chunk instead of at once.
WHOLE_READ_BYTES = 1 << 28


def digest(a) -> int:
    """Checksum of one array (dtype, shape and raw bytes); never 0 (0 means none)."""
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{a.dtype.str}:{a.shape}".encode())
    h.update(a.tobytes())
    return int.from_bytes(h.digest(), "little") or 1


def chunk_digests(arrays: dict, names) -> np.ndarray:
    """The checksums of one chunk: one per variable of ``names``, in that order."""
    return np.array([digest(arrays[n]) for n in names], dtype=np.uint64)


def chunk_region(idx, chunk_shape, shape) -> tuple:
    """The slices of the dataset that chunk ``idx`` covers."""
    return tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunk_shape, shape))


def raw_group(store):
    """The store's root group, read without consolidated metadata (always current)."""
    return zarr.open_group(str(store), mode="r", use_consolidated=False)


@dataclass(frozen=True)
class Verification:
    """What reading a store back found.

    Attributes
    ----------
    missing : tuple of tuple
        Chunks flagged done whose files are gone.
    damaged : tuple of tuple
        Chunks flagged done that cannot be decoded or whose checksum differs.
    broken : tuple of str
        Problems a resume cannot repair (unreadable variable metadata, changed coordinates).
    checked : int
        Number of chunks read back.
    """

    missing: tuple
    damaged: tuple
    broken: tuple
    checked: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.damaged or self.broken)

    def bad(self, grid) -> np.ndarray:
        """Boolean array over the chunk grid: True for missing and damaged chunks."""
        m = np.zeros(grid, dtype=bool)
        for idx in self.missing + self.damaged:
            m[idx] = True
        return m

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (chunk files deleted: "
                         f"{_list(self.missing)})")
        if self.damaged:
            parts.append(f"{len(self.damaged)} damaged (unreadable or checksum mismatch: "
                         f"{_list(self.damaged)})")
        parts += list(self.broken)
        return "; ".join(parts) if parts else "all chunks verified"


def _list(idxs, most=4):
    shown = ", ".join(str(tuple(int(i) for i in x)) for x in idxs[:most])
    return shown + (f", ... ({len(idxs) - most} more)" if len(idxs) > most else "")


def _chunk_file_missing(store: Path, name: str, idx) -> bool:
    key = store / name / "c" / Path(*[str(int(i)) for i in idx])
    return not key.is_file()


def verify_store(store, status, names, coords_digest=None, progress=None) -> Verification:
    """Read every chunk flagged done in ``status`` back and check it against its checksums.

    ``names`` are the data variables in the order of the recorded checksums;
    ``coords_digest`` the recorded checksum of the coordinates (skipped if None);
    ``progress`` a callable told of each variable read.
    """
    store = Path(store)
    broken = []
    try:
        g = raw_group(store)
        sums = g["_sweep/checksum"][...]
    except Exception as exc:  # any decoding failure of the bookkeeping itself
        return Verification((), (), (f"bookkeeping unreadable ({type(exc).__name__})",), 0)
    done = [idx for idx in np.ndindex(*status.chunk_grid) if status.done[idx]]
    missing, damaged = set(), set()
    for k, name in enumerate(names):
        try:
            arr = g[name]
        except Exception as exc:
            broken.append(f"variable {name!r} unreadable ({type(exc).__name__})")
            continue
        whole = None
        if arr.nbytes <= WHOLE_READ_BYTES:
            try:
                whole = arr[...]
            except Exception:  # a damaged chunk somewhere: find it chunk by chunk below
                whole = None
        for idx in done:
            region = chunk_region(idx, status.chunk_shape, status.shape)
            try:
                ok = digest(whole[region] if whole is not None else arr[region]) == int(sums[idx][k])
            except Exception:
                ok = False
            if not ok:
                (missing if _chunk_file_missing(store, name, idx) else damaged).add(idx)
        if progress is not None:
            progress(1)
    if coords_digest is not None:
        try:
            got = coordinates_digest(g, status.dims)
        except Exception:
            got = None
        if got != coords_digest:
            broken.append("coordinates damaged (they no longer match the spec)")
    return Verification(tuple(sorted(missing)), tuple(sorted(damaged - missing)), tuple(broken),
                        len(done))


def coordinates_digest(group, dims) -> int:
    """Checksum of the coordinate arrays along ``dims`` (labels as text)."""
    parts = []
    for d in dims:
        v = np.asarray(group[d][...])
        parts.append(repr([str(x) for x in v]) if v.dtype.kind not in "fiub" else v.tobytes().hex())
    return digest(np.frombuffer("|".join(parts).encode(), dtype=np.uint8))
