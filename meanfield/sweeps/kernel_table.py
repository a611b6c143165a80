"""The layer table of a kernel store: what every block needs at each layer, written once.

:func:`meanfield.ntk.blocked.layer_steps` yields one ``LayerStep`` per layer l -> l + 1,
built from all n inputs (per-input variances q_i^l and, on the Hermite path, each input's
coefficients; on the shared-norm path the Chebyshev coefficients).  They are computed once
when the store is created and kept in the store's bookkeeping group, so that a block task
reads only the rows of its own inputs, layer by layer, whatever n and the depth, and a
resumed run does not compute them again.

Layout (zarr group ``table``), S = depth - 1 layers::

    mode, q, q_next, m_phi2      (S,)             per-layer scalars
    coef1, coef2                 (S, W)           per-layer vectors, zero padded,
    coef1_size, coef2_size       (S,)             with their true lengths
    q_points, herm_a, ...        (S, ..., n, ...) per-input arrays, chunked along the inputs
                                                  by the store's block (absent when empty)
"""

from __future__ import annotations

import numpy as np
import zarr

from ..ntk.blocked import POINT_AXIS
from ..ntk.recursion import LayerStep

__all__ = ["write_table", "TableReader"]

SCALARS = {"mode": np.int64, "q": np.float64, "q_next": np.float64, "m_phi2": np.float64}
VECTORS = ("coef1", "coef2")


def write_table(group: zarr.Group, steps, n_steps: int, n: int, block: int):
    """Write the ``n_steps`` LayerSteps of the iterable ``steps`` into ``group``, each
    per-input array as soon as its layer is computed (only one layer is held at a time)."""
    scalars = {k: np.zeros(n_steps, dtype=t) for k, t in SCALARS.items()}
    vectors = {k: [] for k in VECTORS}
    arrays = {}
    for s, step in enumerate(steps):
        for k in SCALARS:
            scalars[k][s] = getattr(step, k)
        for k in VECTORS:
            vectors[k].append(np.asarray(getattr(step, k), dtype=np.float64))
        for name, axis in POINT_AXIS.items():
            v = getattr(step, name)
            if v.size == 0:
                continue
            if name not in arrays:
                chunks = list(v.shape)
                chunks[axis] = min(block, n)
                arrays[name] = group.create_array(name, shape=(n_steps,) + v.shape,
                                                  chunks=(1,) + tuple(chunks), dtype=v.dtype,
                                                  compressors=None)
            arrays[name][s] = v
    for k, v in scalars.items():
        group.create_array(k, data=v)
    for k, rows in vectors.items():
        sizes = np.array([r.size for r in rows], dtype=np.int64)
        padded = np.zeros((n_steps, max(1, int(sizes.max(initial=0)))))
        for s, r in enumerate(rows):
            padded[s, :r.size] = r
        group.create_array(k, data=padded)
        group.create_array(f"{k}_size", data=sizes)


class TableReader:
    """The layer table of a store restricted to some inputs: ``reader(s)`` is the LayerStep
    of layer s + 1 -> s + 2 with its per-input arrays at the inputs ``ranges`` (a list of
    contiguous ``slice`` objects, in order).

    Layers are read in batches of up to ``BATCH_BYTES``: one zarr read per batch instead of
    one per layer (each read costs milliseconds, as much as a small block's layer).
    """

    BATCH_BYTES = 32 << 20

    def __init__(self, group: zarr.Group, ranges):
        self.ranges = ranges
        self.scalars = {k: group[k][...] for k in SCALARS} if "mode" in group else {}
        self.vectors = {k: (group[k][...], group[f"{k}_size"][...]) for k in VECTORS
                        if k in group}
        self.arrays = {name: group[name] for name in POINT_AXIS if name in group}
        points = sum(r.stop - r.start for r in ranges)
        per_layer = sum(8 * points * a.size // (a.shape[0] * a.shape[1 + POINT_AXIS[k]])
                        for k, a in self.arrays.items())
        self.batch = max(1, self.BATCH_BYTES // max(1, per_layer))
        self.start, self.cache = 0, {}

    def _load(self, s0):
        s1 = s0 + self.batch
        self.start, self.cache = s0, {}
        for name, arr in self.arrays.items():
            axis = 1 + POINT_AXIS[name]  # in the batch, which keeps the layer axis
            parts = []
            for r in self.ranges:
                index = [slice(s0, s1)] + [slice(None)] * (arr.ndim - 1)
                index[axis] = r
                parts.append(arr[tuple(index)])
            self.cache[name] = np.concatenate(parts, axis=axis)

    def __call__(self, s: int) -> LayerStep:
        if not self.cache or not self.start <= s < self.start + self.batch:
            self._load(s)
        fields = {k: v[s].item() for k, v in self.scalars.items()}
        fields["mode"] = int(fields["mode"])
        for k, (padded, sizes) in self.vectors.items():
            fields[k] = np.ascontiguousarray(padded[s, :sizes[s]])
        for name in self.arrays:
            fields[name] = np.ascontiguousarray(self.cache[name][s - self.start])
        return LayerStep(**fields)
