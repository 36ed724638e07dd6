"""How a GEMM's work items cover its rows and panels, so that every thread gets the same work.

An item is (block of rows, chunk of panels), numbered row block first; the runtime gives thread t
the items ``[n * t / T, n * (t + 1) / T)`` of ``n`` (then lets it take what is left of the others').
Three rules keep those shares equal:

- Row blocks are whole micro-tiles; the rows past the last whole tile (M = 49 leaves 1 of 12)
  join the last block rather than make a block of their own. A block of one row counted as an
  item like the others handed one thread 2.5 tiles of 12 rows and the other 1.5 and that row
  (7x7 products on 2 threads: 1.5x faster than on one, instead of 1.9x).
- Where rows are too few to give every thread its items and panels are split into chunks, the
  number of chunks is a multiple of the thread count, so the items divide evenly.
- Chunks differ by at most one panel (``c * panels // chunks``): chunks of ``ceil(panels /
  chunks)`` panels left the last ones short or empty (10 panels in 8 chunks: 5 of 2, 3 of none).

The sizes are expressions of the instance's thread count (``__threads``, read at run time like a
free dimension) and of M where it is free. On one thread nothing is split but by the cache rules.

``GRAPHC_GEMM_ITEMS=ceil`` builds the earlier split instead (a block of its own for the rows past
the last whole tile, chunks of ``ceil(panels / chunks)``, any number of chunks), for measuring
the two side by side: ``python -m benchmarks.switch_models GRAPHC_GEMM_ITEMS=ceil --threads 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.llvm import switches
from graphc.backends.llvm.builder import Kernel
from graphc.backends.llvm.irutil import i64
from graphc.ir import dims
from graphc.ir.dims import Dim

THREADS_DIM = "__threads"  # the instance's thread count: the dims array's last entry (c_runtime/src/instance.c)
ONE_THREAD = f"(2 // ({THREADS_DIM} + 1))"  # 1 on one thread, else 0
# the runtime's claim blocks: 1 on one thread, else 4 per thread
QUANTUM = f"(4 * {THREADS_DIM} - 3 * {ONE_THREAD})"
ITEMS_ENV = switches.GEMM_ITEMS.name


def ceil_split() -> bool:
    """``GRAPHC_GEMM_ITEMS=ceil``: the earlier split, for A/B measurements (part of the build key)."""
    return switches.GEMM_ITEMS.value() == "ceil"


def computed_items(per_thread: int) -> Dim:
    """Items to aim for where the A source computes its rows (a separable convolution's depthwise
    rows, an implicit GEMM's patches), again for each chunk of columns: ``per_thread`` per thread on
    several threads, one on one thread, where a second chunk only computes the rows twice (a separable
    convolution 7 x 7 x 960 into 160 on a Zen 4, one thread: 0.171 -> 0.153 ms)."""
    return dims.sub(dims.mul(per_thread, THREADS_DIM), dims.mul(per_thread - 1, ONE_THREAD))


@dataclass(frozen=True)
class ItemSplit:
    """Row blocks (``mb``) x chunks of panels (``nchunks``) per matrix, as dims expressions."""

    M: Dim
    MR: int
    panels: Dim
    tiles: Dim  # whole micro-tiles shared out among the row blocks (at least 1)
    mb: Dim
    nchunks: Dim
    ceil: bool = False  # GRAPHC_GEMM_ITEMS=ceil

    @property
    def items(self) -> Dim:
        return dims.mul(self.mb, self.nchunks)

    def bounds(self, k: Kernel, item: ir.Value) -> tuple[ir.Value, ...]:
        """``(row0, row_end, p_lo, p_hi)`` of ``item`` (< ``items``)."""
        fb, b = k.fn, k.b
        nch, mb = k.dim(self.nchunks), k.dim(self.mb)
        tiles, panels = k.dim(self.tiles), k.dim(self.panels)
        rb, cc = b.sdiv(item, nch), b.srem(item, nch)
        row0 = b.mul(b.sdiv(b.mul(rb, tiles), mb), i64(self.MR))
        next_row = b.mul(b.sdiv(b.mul(b.add(rb, i64(1)), tiles), mb), i64(self.MR))
        if self.ceil:
            ppc = b.sdiv(b.add(panels, b.sub(nch, i64(1))), nch)
            p_lo = b.mul(cc, ppc)
            return row0, fb.min_(next_row, k.dim(self.M)), p_lo, fb.min_(b.add(p_lo, ppc), panels)
        last = b.icmp_signed("==", b.add(rb, i64(1)), mb)
        row_end = b.select(last, k.dim(self.M), fb.min_(next_row, k.dim(self.M)))
        p_lo = b.sdiv(b.mul(cc, panels), nch)
        p_hi = b.sdiv(b.mul(b.add(cc, i64(1)), panels), nch)
        return row0, row_end, p_lo, p_hi


def split_items(M: Dim, MR: int, tpb: int | None, panels: Dim, *, per_thread: Dim, round_rows: bool,
                max_chunk_panels: int | None = None, batches: Dim = 1) -> ItemSplit:
    """The split of ``batches`` products of M rows and ``panels`` panels.

    ``tpb``: whole micro-tiles a row block holds at most (a block may also take the rows past the
    last whole tile: its tile buffer needs room for ``(tpb + 1) * MR`` rows); None: no bound, the
    items' rows are groups (as many as the claim blocks with ``round_rows``) that the kernel walks in
    blocks of its own (the products whose K blocks run outside the row blocks). ``round_rows``: the
    number of row blocks is made a multiple of the claim blocks (4 per thread) where there are
    enough tiles (each row block then reads B again: for operands whose B stays in cache).
    ``per_thread``: items per thread to aim for; columns are split only when the row blocks of
    all batches give fewer. ``max_chunk_panels``: no chunk wider (B's K block then stays in L3).
    """
    ceil = ceil_split()
    whole = dims.ceildiv(M, MR) if ceil else dims.floordiv(M, MR)
    tiles = dims.maximum(whole, 1)
    # blocks of at most tpb whole tiles (+ the rest)
    mb0 = 1 if tpb is None else dims.ceildiv(dims.ceildiv(M, MR), tpb)
    if round_rows:
        rounded = dims.mul(dims.ceildiv(mb0, QUANTUM), QUANTUM)
        mb = dims.maximum(dims.minimum(tiles, rounded), 1)
    else:
        mb = dims.maximum(dims.minimum(tiles, mb0), 1)
    groups = dims.maximum(dims.mul(batches, mb), 1)
    want0 = dims.ceildiv(per_thread, groups)
    # more than one chunk: a multiple of the thread count (one chunk stays one)
    multiple = dims.mul(dims.ceildiv(want0, THREADS_DIM), THREADS_DIM)
    want = want0 if ceil else dims.maximum(want0, dims.mul(multiple, dims.minimum(dims.sub(want0, 1), 1)))
    if max_chunk_panels is not None:  # panels known only at run time too: the scratch holds no wider chunk
        want = dims.maximum(want, dims.ceildiv(panels, max(1, max_chunk_panels)))
    nchunks = dims.maximum(dims.minimum(want, panels), 1)
    return ItemSplit(M, MR, panels, tiles, mb, nchunks, ceil)
