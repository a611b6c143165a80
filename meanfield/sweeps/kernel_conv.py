"""Convolutional kernels (CNN-GP / CNTK) of image sets too large for memory, block by block
into a kernel store (docs/theory.md, "Convolutional networks", "Kernels larger than memory").

A block is a set of image pairs I x J.  Each pair carries its own pixel state through the
layers (:func:`meanfield.ntk.conv_blocks.pair_kernels`) and needs, besides its two images,
only per-image data computed from the whole set: the pixel variances Sigma^l_pp(x, x) of
every depth and, on the Hermite path, each image's coefficient rows with the terms each
pixel needs and the parity of every depth's table.  Those are built once, exactly as
:func:`meanfield.kernels` builds them (:func:`meanfield.ntk.conv.pixel_tables`, from the
images of X followed by those of X2), and kept in the store; a block reads the rows of its
own images and runs the same Numba kernel on them, so its values are those of the whole
kernel bit for bit, whatever the block size.

Layout of the table group (N = n + m images, P pixels, S = depth - 1 layers)::

    attrs        mode (expectation rule), layers S, hermite_terms [K_0, ...]
    V            (N, L, P)    Sigma^l_pp(x, x) of every image
    terms        (N, S, P)    Hermite terms each pixel needs (EXPECT_HERMITE)
    odd          (S,)         parity of each depth's table
    hermite_<l>  (N, P, K_l)  coefficient rows of depth l + 1 (EXPECT_HERMITE)

every per-image array chunked along the images by the store's block.
"""

from __future__ import annotations

import numpy as np
import zarr

from ..ntk import conv as NC
from ..ntk import conv_blocks as CB

__all__ = ["ConvTable", "write_conv_table", "conv_block"]


class ConvTable:
    """The per-image data of a whole image set (:func:`meanfield.ntk.conv.pixel_tables`)."""

    def __init__(self, X, X2, act, sw2, sb2, L, conv):
        self.Z, self.nbr, self.V, tab, self.kps, self.mode = NC.pixel_tables(
            X, X2, act, sw2, sb2, L, conv)
        Hflat, offs, Ks, N, self.odd = tab
        self.Ks = Ks
        P = self.Z.shape[1]
        self.layers = [Hflat[offs[l]:offs[l] + N * P * Ks[l]].reshape(N, P, Ks[l])
                       for l in range(Ks.size)] if self.mode == CB.EXPECT_HERMITE else []

    @property
    def nbytes(self) -> float:
        """Bytes of the table on disk."""
        return float(self.V.nbytes + self.kps.nbytes + sum(h.nbytes for h in self.layers))


def write_conv_table(group: zarr.Group, table: ConvTable, block: int):
    """Store ``table`` in ``group`` (layout in the module docstring)."""
    N = table.V.shape[0]

    def put(name, a):
        chunks = (min(block, N),) + a.shape[1:]
        group.create_array(name, shape=a.shape, chunks=chunks, dtype=a.dtype,
                           compressors=None)[...] = a

    group.attrs.update({"mode": int(table.mode), "layers": int(table.kps.shape[1]),
                        "hermite_terms": [int(k) for k in table.Ks] if table.layers else []})
    put("V", table.V)
    put("terms", table.kps)
    group.create_array("odd", data=np.asarray(table.odd, dtype=bool))
    for l, h in enumerate(table.layers):
        put(f"hermite_{l}", h)


def _rows(group, ranges):
    """Per-image arrays of the table at the images ``ranges`` (contiguous slices, in order),
    as (V, terms, tab, mode) with tab the flat tables of :func:`conv_blocks._table` over
    just these images."""
    def take(name):
        return np.ascontiguousarray(np.concatenate([group[name][r] for r in ranges]))

    V, kps = take("V"), take("terms")
    N, P = V.shape[0], V.shape[2]
    mode = int(group.attrs["mode"])
    Lh = int(group.attrs["layers"])
    odd = np.ascontiguousarray(group["odd"][...])
    Ks = np.ones(Lh, dtype=np.int64)
    offs = np.zeros(Lh, dtype=np.int64)
    if mode == CB.EXPECT_HERMITE and group.attrs["hermite_terms"]:
        layers = [take(f"hermite_{l}") for l in range(Lh)]
        Ks[:] = [h.shape[2] for h in layers]
        offs[1:] = np.cumsum([h.size for h in layers])[:-1]
        Hflat = np.concatenate([h.ravel() for h in layers])
    else:
        Hflat = np.zeros(N * P * Lh)  # never read outside EXPECT_HERMITE
        offs[:] = np.arange(Lh) * N * P
    return V, kps, (Hflat, offs, Ks, N, odd), mode


def conv_block(group, Z, setting, rows, cols, diagonal):
    """Sigma, Theta (K, len(rows), len(cols)) of the image pairs rows x cols at the kept
    depths.

    ``rows``, ``cols`` are slices of the images Z (X then X2).  ``diagonal``: rows is cols,
    the block of a symmetric kernel holding its own pairs (i, i); its pairs i <= j are
    computed and mirrored, as :func:`meanfield.kernels` computes the whole kernel.
    Otherwise every pair (row, column) is computed, rows first, as :func:`meanfield.kernels`
    orients both the upper triangle and the cross-kernel.
    """
    ranges = [rows] if diagonal else [rows, cols]
    V, kps, tab, mode = _rows(group, ranges)
    nr = rows.stop - rows.start
    nc = nr if diagonal else cols.stop - cols.start
    keep = np.asarray(setting["keep"], dtype=np.int64)
    conv = NC.Conv(**setting["conv"])
    H, W, C = setting["image_shape"]
    nbr = CB.neighbours(H, W, conv.filter_size, conv.padding == "circular")
    act = setting["act"]
    Zr = np.ascontiguousarray(Z[rows])
    Zc = Zr if diagonal else np.ascontiguousarray(Z[cols])
    base_c = 0 if diagonal else nr
    S = np.empty((keep.size, nr, nc))
    T = np.empty((keep.size, nr, nc))
    readout = CB.READ_GAP if conv.readout == "gap" else CB.READ_FLATTEN
    CB.pair_kernels(mode, readout, act.record, Zr, Zc, V[:nr], V[base_c:base_c + nc], tab, 0,
                    base_c, kps[:nr], kps[base_c:base_c + nc], nbr, setting["sw2"],
                    setting["sb2"], float(conv.filter_size ** 2), float(C),
                    CB.PAIRS_UPPER if diagonal else CB.PAIRS_ALL, NC.kept_slots(keep),
                    NC.PAIR_CHUNK, S, T)
    return S, T
