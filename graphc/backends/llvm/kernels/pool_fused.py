"""A pooling done by the GEMM before it, a strip of bands at a time (see :mod:`..pool_fusion`).

The GEMM's rows are the output pixels of a channels-last batch, ``(n, d_0, d_1, ...)`` in order. A
pooling whose window ``(w_0, w_1, ...)`` is its stride, without padding, reads ``w_0`` consecutive rows
of pixels along the first spatial axis for one row of its result: a *band* of ``w_0 * d_1 * ...``
consecutive GEMM rows. The GEMM's split counts *units* of whole bands (the fewest whose rows are whole
micro-tiles: :meth:`StripPool.unit_bands`); a work item is a run of units and a chunk of the column
panels. For each part of the run within one image, the GEMM writes the rows into a strip of the
thread's scratch (``rows x N`` floats, a quarter of L2 at most) and :meth:`StripPool.emit` pools the
strip into the result: panel by panel, right after the panel's tiles, where K is one block (the part
is then one row block); after the whole part otherwise (partial sums). Pixels past the last whole
window (``d_0 % w_0`` trailing rows of each image) are not computed at all; columns past the last
whole window along the other axes are computed and left out.

The pooled values have the bits the pooling kernel (:func:`.conv.emit_pool`) gives
(:meth:`StripPool.combine`, also used by Winograd's output transform).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.llvm.builder import Kernel, Tensor
from graphc.backends.llvm.irutil import F32, i64
from graphc.backends.llvm.kernels.conv import pool_window, vector_chunks
from graphc.backends.llvm.kernels.gemm import load_lanes, store_lanes
from graphc.ir import dims


@dataclass(frozen=True)
class StripPool:
    """Pooling ``kind`` ("max" or "avg") over ``window`` of a GEMM result of spatial sizes ``spatial`` into
    ``out`` (batch, *pooled, channels)."""

    out: Tensor
    kind: str
    window: tuple[int, ...]
    spatial: tuple[int, ...]

    @property
    def pooled(self) -> tuple[int, ...]:
        return tuple(d // w for d, w in zip(self.spatial, self.window))

    @property
    def band_rows(self) -> int:
        """GEMM rows of one band: ``w_0`` rows of pixels along the first spatial axis."""
        return self.window[0] * math.prod(self.spatial[1:])

    @property
    def image_rows(self) -> int:
        return math.prod(self.spatial)

    def unit_bands(self, tile_rows: int, block_rows: int, columns: int, budget: int) -> int:
        """Bands of one unit of the GEMM's split: the fewest whose rows are whole micro-tiles of ``tile_rows``
        (56-row bands in 12-row tiles: 3; 5-row bands: 12), so that no rows but an image's last go to the
        edge kernels; one where those would exceed two of the GEMM's row blocks (``block_rows``: its A
        tile) or a strip of ``budget`` bytes (``columns`` floats a row)."""
        q = tile_rows // math.gcd(tile_rows, self.band_rows)
        rows = q * self.band_rows
        return q if rows <= 2 * max(block_rows, tile_rows) and rows * columns * 4 <= budget else 1

    def units(self, unit_bands: int):
        """Units of the batch (a dims expression where the batch is free): an image's last may be short."""
        return dims.mul(self.out.shape[0], -(-self.pooled[0] // unit_bands))

    def group_units(self, unit_bands: int, block_rows: int, columns: int, budget: int) -> int:
        """Units in a work item at most: about ``block_rows`` rows, a strip of at most ``budget`` bytes."""
        rows = unit_bands * self.band_rows
        return max(1, min(budget // (rows * columns * 4), round(block_rows / rows)))

    def combine(self, k: Kernel, vals: list) -> ir.Value:
        """One window's float32 values (vectors, in tap order) pooled as the pooling kernel pools them
        (:func:`.conv.pool_window`)."""
        return pool_window(k, self.kind, vals, None, True)

    def emit(self, k: Kernel, strip, columns: int, image, band0, nbands, col_lo, col_hi) -> None:
        """Pool ``nbands`` bands from band ``band0`` of image ``image`` (i64 values), held in ``strip``
        (rows ``columns`` floats apart, the first band's first row first), columns ``[col_lo, col_hi)``: the
        GEMM's panels, so ``col_lo`` is a multiple of the vector width and ``col_hi`` too or ``columns``
        (whole vectors only, no code for a rest, where ``columns`` is a multiple of it)."""
        fb, b = k.fn, k.b
        vw = k.kb.target.gemm_vw
        po = k.ptr(self.out)
        ldo = self.out.row_stride or self.out.shape[-1]  # a concatenation's part written in place
        pitch = [math.prod(self.spatial[a + 1:]) for a in range(len(self.spatial))]
        taps = [sum(t * p for t, p in zip(tap, pitch)) for tap in itertools.product(*[range(w) for w in self.window])]
        inner = self.pooled[1:]
        count = b.sub(col_hi, col_lo)
        with fb.loop(0, nbands, name="pband") as band:
            band_row = b.mul(band, i64(self.band_rows))
            out_band = b.mul(b.add(b.add(b.mul(image, i64(self.pooled[0])), band0), band), i64(math.prod(inner)))
            with fb.loop(0, math.prod(inner), name="ppix") as q:
                # the window's first row in the strip: q's position along the other axes, times the window
                corner, rem = band_row, q
                for a in range(len(inner), 0, -1):
                    pos = b.srem(rem, i64(inner[a - 1]))
                    rem = b.sdiv(rem, i64(inner[a - 1]))
                    corner = b.add(corner, b.mul(pos, i64(self.window[a] * pitch[a])))
                src = b.gep(strip, [b.mul(corner, i64(columns))], source_etype=F32)
                dst = b.gep(po, [b.mul(b.add(out_band, q), i64(ldo))], source_etype=F32)

                def chunk(j0, valid, src=src, dst=dst):
                    col = b.add(col_lo, j0)
                    vals = [load_lanes(b, b.gep(src, [b.add(i64(t * columns), col)], source_etype=F32), vw, valid)
                            for t in taps]
                    store_lanes(b, self.combine(k, vals), b.gep(dst, [col], source_etype=F32), vw, valid)

                vector_chunks(k, count, vw, chunk, whole=columns % vw == 0)
