"""Matrix products: a register-blocked SGEMM on packed operands, with a fused epilogue.

``out[M, N] = post(act(A[M, K] @ W[K, N] + bias) + residual)`` where ``W`` is a weight. The
loops are BLIS's five around a micro-kernel, with block sizes from the caches of the machine
(:mod:`.gemm_blocking`):

- ``W`` is packed once per instance (the model's prepare function) into panels of
  ``NR = NV * vw`` columns, ``panel[p][k][0:NR]``, zero-padded past N, so the micro-kernel
  streams it with full-width vector loads. A ``kc x NR`` piece of a panel fills L1 and
  is reused for every micro-tile of a row block; weights of a quarter of L2 or more are prefetched
  a panel ahead as the first micro-tile of each row block walks k (the others find the panel in cache).
- A is packed per row block and K block into the thread's tile: ``mc`` rows of ``kc`` columns
  (an eighth of L2), the rows ``kc + 16`` floats apart so that the ``MR`` rows the micro-kernel reads
  at once fall into different L1 sets. Where A is a matrix only the partial micro-tile at its end
  is copied (full-width vectors): whole micro-tiles are read in place (see :class:`DenseA`);
  convolutions fill it with im2col (:class:`ASource`), except for the
  micro-tiles that the source lets the micro-kernel read where they lie
  (:meth:`ASource.direct_stride`: consecutive output pixels of one output row, windows inside the
  input, whose rows are a fixed stride apart in the input): an implicit GEMM over runs of the
  input (:func:`direct_tile_function`), with no copy.
- The micro-kernel keeps an ``MR x NR`` tile of C in ``MR * NV`` vector registers; each k step
  loads NV vectors of the panel, broadcasts one element of each of the MR rows of A and
  issues ``MR * NV`` independent ``llvm.fmuladd`` ops (FMAs where the CPU has them; enough
  independent chains to hide their latency). MR and NV come from the target's vector width and
  register count (:func:`micro_tile`), MR per product from its rows (:func:`tile_for_rows`: 8 or 7
  instead of 12 where those leave fewer rows past the last whole tile).
- K is split into blocks of at most ``kc``; the tile is stored after each block (added to the
  partial sums after the first) and the epilogue runs on the last block's registers, before
  anything is written: fusion costs no extra pass over C.
- Work items are (block of at most ``mc`` rows, whole micro-tiles, evenly sized) x (chunk of
  at most ``nc`` columns of panels), chosen at run time from M and the thread count: rows are
  split first (each thread packs only its own rows of A), columns only when there are too few
  rows (a batch-1 Dense layer). Edge rows are handled by guarding the rows stored and running
  the rows past the last whole micro-tile one at a time; the last panel's partial vectors use
  masked loads and stores.
- A weight of half of L3 or more (:func:`k_blocks_outside`) would stream from memory once per row
  block in that order (the whole packed weight for every 60 rows at 4096 x 4096). It runs its K
  blocks outside the row blocks instead, as the run-time product does: an item is a group of rows
  (as many groups as the runtime's claim blocks) x a chunk of panels whose K block takes at most
  ``b_block`` of L3; per K block (``runtime_blocks``: up to 2048 deep), every row block of the group
  runs over the chunk's K block while it stays in L3, and C takes the partial sums. On Zen 4, one
  thread, M = N = K = 4096, each build alone in its process: 79-87 % -> 90-93 % of peak; inside one
  process the old order also reached 92-93 % (``benchmarks/results/2026-12-07-gemm-k-outer-zen4.md``).

Anything else (``b`` computed at run time, batched operands, symbolic K or N) goes to
:func:`emit_runtime_gemm`: the same loops and micro-kernel, B packed per work item into thread
scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from llvmlite import ir

from graphc.backends.llvm import mathlib, switches
from graphc.backends.llvm.builder import Kernel, KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I1, I32, I64, PTR, Fn, broadcast, i32, i64, intrinsic, vector_constant
from graphc.backends.llvm.kernels.gemm_blocking import (
    Blocking,
    blocking,
    caches_for,
    even_block,
    rows_conflict_in_l1,
    runtime_blocks,
)
from graphc.backends.llvm.kernels.gemm_items import QUANTUM, computed_items, split_items
from graphc.backends.llvm.kernels.layout import broadcast_strides
from graphc.backends.llvm.target import TargetInfo, host_target, same_machine
from graphc.ir import dims

# Block sizes of the sources that compute their tile (im2col...), which size it themselves.


def kc_block() -> int:
    """The K block of these sources (``GRAPHC_GEMM_KC``, 256 by default), read when a kernel is built."""
    return switches.GEMM_KC.integer(256)


def mc_block() -> int:
    """Their rows per block (``GRAPHC_GEMM_MC``, 96 by default), read when a kernel is built."""
    return switches.GEMM_MC.integer(96)


# Work items per thread to aim for when M alone gives fewer row blocks: splitting columns makes
# each chunk produce A again. Copied rows of A (a few vector loads per row against a chunk's
# FMAs) aim for the runtime's 4 claim blocks per thread; computed ones (im2col, depthwise) for 2.
TARGET_ITEMS_COMPUTED = 2
TILE_PAD = 16  # floats between the rows of an A tile beyond its K block: one cache line
C_AHEAD = 2  # micro-tiles ahead that the packed GEMM prefetches C and the residual for
EDGE_ROWS = 4  # rows per tile of the run-time-operand GEMM's last, partial micro-tile
PANEL_GROUP = 4  # panels one row runs over at once past the last tile (4 x 2 vectors: 8 FMA chains)


def gemm_blocking(target: TargetInfo, mr: int, nr: int) -> Blocking:
    """Block sizes for ``target``: from this machine's caches when the code is for its CPU."""
    return blocking(caches_for(same_machine(target, host_target())), mr, nr)


def k_blocks_outside(weight_bytes: int, bl: Blocking) -> bool:
    """Whether a packed weight of ``weight_bytes`` runs its K blocks outside the row blocks
    (``GRAPHC_GEMM_K_OUTER``; by default where it takes half of L3 or more, see :func:`emit_gemm`)."""
    mode = switches.GEMM_K_OUTER.value()
    return mode == "1" or (mode == "auto" and weight_bytes >= bl.l3 // 2)


def item_rows(M, block: int) -> int:
    """Rows of a work item, for the runtime's estimate of its cost (M may be known only at run time)."""
    return min(block, M) if isinstance(M, int) else min(block, mc_block())


def micro_tile(vw: int, registers: int) -> tuple[int, int]:
    """(MR, NV): rows and vectors per tile for ``registers`` vector registers of ``vw`` lanes."""
    env = switches.GEMM_TILE.raw()
    if env:
        mr, x, nv = env.partition("x")
        if not (x and mr.isdigit() and nv.isdigit() and int(mr) > 0 and int(nv) > 0):
            raise ValueError(f"{switches.GEMM_TILE.name} must be MRxNV (rows x vectors, such as 12x2), got {env!r}")
        return int(mr), int(nv)
    if registers >= 32:
        return 12, 2
    return 6, 2


# Rows per micro-tile that a product may use instead of micro_tile's where they fit its rows better;
# each keeps enough independent accumulators (at least 7 x 2 vectors) to hide the FMA latency. 8 fits
# powers of two (128 tokens, 56 x 56 pixels), 7 the odd factor of 224-pixel images (7 x 7, 14 x 14)
ROW_CHOICES = {12: (12, 8, 7)}
ROWS_ENV = switches.GEMM_ROWS.name


def tile_for_rows(M, vw: int, registers: int) -> tuple[int, int]:
    """:func:`micro_tile` for a product of ``M`` rows (an int, or an expression of free dims).

    The rows past the last whole micro-tile run on the edge path, and whole tiles are what the
    threads share, so MR is chosen from :data:`ROW_CHOICES` to leave the fewest rows of one sample (M
    with every free dim 1) past the last whole tile, the default MR on a tie. On Zen 4 (2 threads):
    the transformer encoder's 128-row products 1.09x with 8 rows than with 12 (12 left 8 rows to
    the edge path and 68 / 60 rows to the two threads), the 3x3 stem of MobileNetV2 (M = 12544) 1.08x;
    1x1 convolutions over 7 x 7 and 14 x 14 pixels with 7 rows 1.01-1.03x (2 threads: 1.02-1.17x);
    9 and 10 rows measured no better than 8 and 12 where they fit (M = 729, 1200). ``GRAPHC_GEMM_ROWS=fixed``
    keeps :func:`micro_tile`'s MR everywhere (for measuring the two)."""
    MR, NV = micro_tile(vw, registers)
    if switches.GEMM_ROWS.value() or switches.GEMM_TILE.raw():
        return MR, NV
    rows = dims.evaluate(M, {name: 1 for name in dims.symbols(M)})
    best = min(ROW_CHOICES.get(MR, (MR,)), key=lambda mr: (rows % mr, -mr))
    return best, NV


# ---------------------------------------------------------------------------- A sources
class ASource:
    """Where the rows of A come from: each row block and K block is written into the thread's
    tile by :meth:`fill`. A source that computes its rows (im2col) sizes its blocks itself
    (:meth:`block`, :meth:`block_rows`); one that copies them (``cache_blocked``) is blocked for
    the caches."""

    cache_blocked = False

    def items_per_thread(self, n: int) -> int:
        """Work items per thread to aim for when M alone gives fewer row blocks, for a product into ``n``
        columns (a source that computes its rows computes them again for each chunk of columns)."""
        return TARGET_ITEMS_COMPUTED

    def block(self, K: int) -> int:
        """The K block size: blocks of at most :func:`kc_block`, evened out (the last is not tiny)."""
        return even_block(K, kc_block())

    def block_rows(self, kb: int) -> int:
        """Rows per row block (the A tile is ``block_rows x kb``)."""
        return mc_block()

    def fill(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, *, kb: int) -> None:
        """Write rows [row0, row_end), columns [k0, k0 + kc) of A to ``tile`` (rows ``stride`` apart).
        ``kb``: the driver's K block, so that ``kc`` is ``kb`` for every block but the last (a source may
        leave out code that a block it never gets would need)."""
        raise NotImplementedError

    def direct_stride(self, rows: int) -> int | None:
        """Elements between consecutive rows of A where ``rows``-row tiles can be read in place (an
        implicit GEMM: :meth:`direct_tile`), or None where every tile is filled."""
        return None

    def direct_tile(self, k: Kernel, i, k0, kc) -> tuple:
        """For the tile of rows from ``i`` (of the ``rows`` given to :meth:`direct_stride`), K block
        ``[k0, k0 + kc)``: (i1: whether it is read in place, A pointer, pointer to the runs' i64 offsets
        from it, number of runs, run length); the pointers only where it is."""
        raise NotImplementedError

    @property
    def fills_converted(self) -> bool:
        """Whether :meth:`fill_converted` can write the rows in another element type (bf16) directly."""
        return False

    def fill_converted(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, copy: Callable, etype, *,
                       kb: int) -> None:
        """:meth:`fill` into a tile of ``etype`` elements, ``copy(k, dst, src, n, vw, zero)`` converting
        each run of float32 (the bf16 GEMM: no float32 tile, no second pass)."""
        raise NotImplementedError


class DenseA(ASource):
    """A row-major (M, K) tensor: its rows are copied into the tile."""

    cache_blocked = True

    def __init__(self, a: Tensor, K: int):
        self.a, self.K = a, K
        self._origin: ir.GlobalVariable | None = None  # the one run's offset (0), for the direct micro-kernel

    def fill(self, k, row0, row_end, k0, kc, tile, stride, *, kb):
        b = k.b
        src = b.gep(k.ptr(self.a), [b.add(b.mul(row0, i64(self.K)), k0)], source_etype=F32)
        copy_rows(k, src, i64(self.K), b.sub(row_end, row0), kc, tile, stride)

    def direct_stride(self, rows: int) -> int | None:
        """Whole micro-tiles are read where they are, rows K apart: no copy. Measured on the Xeon (48 KiB
        L1), against copying them into the tile: 1x1 convolutions at batch 1, K = 256 over 3136 rows
        0.60 -> 0.58 ms (median 0.67 -> 0.59), K = 512 over 784 rows 0.54 -> 0.50, K = 1024 over 196
        rows 0.53 -> 0.50; M = N = K = 512 and 1024 1-2 % faster, 2048 level: rows a multiple of 4 KiB
        apart, in the same L1 sets, cost no more than the copy."""
        return self.K

    def direct_tile(self, k: Kernel, i, k0, kc) -> tuple:
        b = k.b
        if self._origin is None:
            typ = ir.ArrayType(I64, 1)
            self._origin = ir.GlobalVariable(k.kb.module, typ, name=k.kb.unique("dense_rows"))
            self._origin.global_constant = True
            self._origin.linkage = "internal"
            self._origin.initializer = ir.Constant(typ, [i64(0)])
        a_ptr = b.gep(k.ptr(self.a), [b.add(b.mul(i, i64(self.K)), k0)], source_etype=F32)
        origin = b.gep(self._origin, [i64(0), i64(0)], source_etype=self._origin.value_type)
        return ir.Constant(I1, 1), a_ptr, origin, i64(1), kc


def copy_rows(k: Kernel, src, src_stride, rows, cols, dst, dst_stride: int) -> None:
    """``dst[r][0:cols] = src[r][0:cols]`` for r < rows, in full-width vectors (the last one of a
    row masked when it reads past ``cols``; the tile's rows are padded for its store)."""
    fb, b = k.fn, k.b
    vw = k.kb.target.gemm_vw
    whole = b.and_(cols, i64(-vw))
    with fb.loop(0, rows, name="cr") as r:
        s = b.gep(src, [b.mul(r, src_stride)], source_etype=F32)
        d = b.gep(dst, [b.mul(r, i64(dst_stride))], source_etype=F32)
        with fb.loop(0, whole, vw, name="cc") as c:
            v = b.load(b.gep(s, [c], source_etype=F32), typ=ir.VectorType(F32, vw), align=4)
            b.store(v, b.gep(d, [c], source_etype=F32), align=4)
        with b.if_then(b.icmp_signed("<", whole, cols)):
            v = load_lanes(b, b.gep(s, [whole], source_etype=F32), vw, b.sub(cols, whole))
            b.store(v, b.gep(d, [whole], source_etype=F32), align=4)


# ---------------------------------------------------------------------------- helpers
def masked_load(b: ir.IRBuilder, ptr, lanes: int, valid: int):
    t = ir.VectorType(F32, lanes)
    mask = ir.Constant(ir.VectorType(I1, lanes), [ir.Constant(I1, int(i < valid)) for i in range(lanes)])
    fn = intrinsic(b.module, f"llvm.masked.load.v{lanes}f32.p0", t, [PTR, I32, mask.type, t])
    return b.call(fn, [ptr, i32(4), mask, vector_constant(t, 0.0)])


def masked_store(b: ir.IRBuilder, value, ptr, lanes: int, valid: int):
    t = ir.VectorType(F32, lanes)
    mask = ir.Constant(ir.VectorType(I1, lanes), [ir.Constant(I1, int(i < valid)) for i in range(lanes)])
    fn = intrinsic(b.module, f"llvm.masked.store.v{lanes}f32.p0", ir.VoidType(), [t, PTR, I32, mask.type])
    b.call(fn, [value, ptr, i32(4), mask])


def lane_mask(b: ir.IRBuilder, lanes: int, valid):
    """<lanes x i1>: lane i < valid (valid an i64 value)."""
    idx = ir.Constant(ir.VectorType(ir.IntType(64), lanes), [i64(i) for i in range(lanes)])
    return b.icmp_signed("<", idx, broadcast(b, valid, lanes))


def load_lanes(b, ptr, lanes: int, valid):
    """``lanes`` floats at ptr, only the first ``valid`` read (valid: int, or an i64 value)."""
    if isinstance(valid, int):
        if valid >= lanes:
            return b.load(ptr, typ=ir.VectorType(F32, lanes), align=4)
        return masked_load(b, ptr, lanes, valid)
    t = ir.VectorType(F32, lanes)
    fn = intrinsic(b.module, f"llvm.masked.load.v{lanes}f32.p0", t, [PTR, I32, ir.VectorType(I1, lanes), t])
    return b.call(fn, [ptr, i32(4), lane_mask(b, lanes, valid), vector_constant(t, 0.0)])


def store_lanes(b, value, ptr, lanes: int, valid):
    if isinstance(valid, int):
        if valid >= lanes:
            b.store(value, ptr, align=4)
        else:
            masked_store(b, value, ptr, lanes, valid)
        return
    t = ir.VectorType(F32, lanes)
    fn = intrinsic(b.module, f"llvm.masked.store.v{lanes}f32.p0", ir.VoidType(),
                   [t, PTR, I32, ir.VectorType(I1, lanes)])
    b.call(fn, [value, ptr, i32(4), lane_mask(b, lanes, valid)])


@contextmanager
def panel_entries(fn: Fn, panels: int, rows: int, NR: int, N: int) -> Iterator[tuple]:
    """The loops of a packing emitter over ``dst[p][row][j]`` (panels of NR columns of a matrix N wide):
    yields (p, row, j, whether column p*NR + j is inside N, that column or 0 where it is not)."""
    b = fn.b
    with fn.loop(0, panels, name="p") as p:
        with fn.loop(0, rows, name="k") as kk:
            with fn.loop(0, NR, name="j") as j:
                col = b.add(b.mul(p, i64(NR)), j)
                ok = b.icmp_signed("<", col, i64(N))
                yield p, kk, j, ok, b.select(ok, col, i64(0))


def pack_panels(K: int, N: int, NR: int, col0: int = 0, src_cols: int | None = None) -> Callable:
    """Emitter of ``dst[p][k][j] = src[k][col0 + p*NR + j]`` for the N columns from col0 (0 past N)."""
    panels = -(-N // NR)
    stride = N if src_cols is None else src_cols

    def emit(fn, src, dst):
        b = fn.b
        with panel_entries(fn, panels, K, NR, N) as (p, kk, j, ok, safe):
            v = b.load(b.gep(src, [b.add(b.mul(kk, i64(stride)), b.add(safe, i64(col0)))], source_etype=F32),
                       typ=F32)
            v = b.select(ok, v, ir.Constant(F32, 0.0))
            di = b.add(b.mul(b.add(b.mul(p, i64(K)), kk), i64(NR)), j)
            b.store(v, b.gep(dst, [di], source_etype=F32))

    return emit


def pack_mapped(K: int, N: int, NR: int, index: Callable) -> Callable:
    """Emitter of ``dst[p][k][j] = src[index(b, k, p*NR + j)]`` (0 past N): panels of a matrix that
    the weight holds in another layout (a transposed convolution kernel...)."""
    panels = -(-N // NR)

    def emit(fn, src, dst):
        b = fn.b
        with panel_entries(fn, panels, K, NR, N) as (p, kk, j, ok, safe):
            v = b.load(b.gep(src, [index(b, kk, safe)], source_etype=F32), typ=F32)
            v = b.select(ok, v, ir.Constant(F32, 0.0))
            di = b.add(b.mul(b.add(b.mul(p, i64(K)), kk), i64(NR)), j)
            b.store(v, b.gep(dst, [di], source_etype=F32))

    return emit


def packed_panels(kb: KernelBuilder, w: Tensor, NR: int, col0: int = 0, ncols: int | None = None) -> Tensor:
    """``w`` (K, N) (columns col0..col0+ncols) as prepacked panels of NR columns."""
    K, N = w.shape
    n = N - col0 if ncols is None else ncols
    panels = -(-n // NR)
    return kb.packed_weight(w, ("panels", NR, col0, n), panels * K * NR * 4, pack_panels(K, n, NR, col0, N))


def tail_lanes(valid_cols: int, vw: int) -> int:
    """Lanes of the last vector of a panel with ``valid_cols`` columns: half a vector where the
    columns left over fit in one (a 24-column panel on 16-lane vectors computes 16 + 8 lanes, not
    16 + 16 of which 8 multiply the packing's zeros). On CPUs that execute 512-bit FMAs as two
    256-bit halves (AMD Zen 4) a half-width FMA takes half the time; elsewhere it takes the same
    issue slot as a whole one, so nothing is lost."""
    left = valid_cols % vw
    return vw // 2 if vw >= 8 and 0 < left <= vw // 2 else vw


HALVES_ENV = switches.GEMM_HALVES.name


def panel_vectors(valid_cols: int, target: TargetInfo, rows: int) -> tuple[int, int, int]:
    """(lanes, vectors, lanes of the last vector) in which a micro-tile of ``rows`` rows computes ``valid_cols``
    columns of a panel: whole vectors of the GEMM's width, the last of :func:`tail_lanes`; or, on a CPU
    that runs 512-bit FMAs in two halves (:attr:`TargetInfo.fma512_in_halves`), half-width vectors
    throughout where the columns end half a vector past a whole one and the tile's accumulators fit
    the registers: 24 columns as 8 + 8 + 8 lanes, not 16 + 8. Mixing the widths ran the FMA pipes below
    their rate: on Zen 4, one thread, (M, K) x 24 products 1.03-1.09x faster (3136 x 144: 98.9 -> 106.9
    GFLOP/s; a 32-column product runs at 113), 56 columns 1.05x. ``GRAPHC_GEMM_HALVES=0`` keeps the mixed
    widths (part of the build cache key, for measuring)."""
    vw = target.gemm_vw
    half = vw // 2
    mode = switches.GEMM_HALVES.value()
    left = valid_cols % vw
    if mode == "1" and target.fma512_in_halves and valid_cols > vw and 0 < left <= half:
        nv = -(-valid_cols // half)
        # the accumulators, the panel's vectors and a broadcast in the 32 registers
        if rows * nv + nv + 1 <= target.num_vector_registers:
            return half, nv, half
    return vw, -(-valid_cols // vw), tail_lanes(valid_cols, vw)


def tile_compute(k: Kernel, a_rows, panel, kc, nv: int, vw: int, stride: int, *, a_base=None,
                 a_stride=0, rows: int = 0, prefetch: int = 0, acc: list[list] | None = None,
                 last: int | None = None) -> list[list]:
    """The micro-kernel: accumulators (Vars) of ``rows x nv`` vectors of ``A @ panel`` (added to ``acc``
    when given, else to new zeroed ones); the last vector of each row has ``last`` lanes (default
    ``vw``, see :func:`tail_lanes`), at the same offset.

    A's rows are either ``a_rows`` (one pointer each) or ``rows`` rows ``a_stride`` elements
    apart from ``a_base`` (offsets from one pointer: no register pressure from the row pointers,
    so the loop keeps everything in registers; ``a_stride`` an int or an i64 known at run time).
    ``panel`` holds ``stride`` floats per k step. With ``prefetch`` (elements: an int, or an i64 known at
    run time), each k step also prefetches into L2
    the panel data that far ahead (the next panel: weights too large for L2 stream from memory
    while this one is computed)."""
    b = k.b
    widths = vector_widths(nv, vw, last)
    n_rows = len(a_rows) if a_rows is not None else rows
    if acc is None:
        acc = zeroed_acc(k, n_rows, nv, vw, last)

    def row_offset(r: int):
        """Row r's offset from ``a_base``: a constant, or r times a stride known at run time."""
        return i64(r * a_stride) if isinstance(a_stride, int) else b.mul(i64(r), a_stride)

    def step(kk):
        bp = b.gep(panel, [b.mul(kk, i64(stride))], source_etype=F32)
        bv = [b.load(b.gep(bp, [i64(v * vw)], source_etype=F32), typ=ir.VectorType(F32, w), align=4)
              for v, w in enumerate(widths)]
        if isinstance(prefetch, ir.Value) or prefetch:
            pf = intrinsic(b.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
            ahead = b.gep(bp, [prefetch if isinstance(prefetch, ir.Value) else i64(prefetch)], source_etype=F32)
            for line in range(0, stride, 16):
                b.call(pf, [b.gep(ahead, [i64(line)], source_etype=F32), i32(0), i32(2), i32(1)])
        ak = b.gep(a_base, [kk], source_etype=F32) if a_base is not None else None
        for r in range(n_rows):
            ap = b.gep(ak, [row_offset(r)], source_etype=F32) if ak is not None else \
                b.gep(a_rows[r], [kk], source_etype=F32)
            a_value = b.load(ap, typ=F32, align=4)
            splats = {w: k.splat(a_value, w) for w in set(widths)}
            for v, w in enumerate(widths):
                acc[r][v].set(mathlib.fma(b, splats[w], bv[v], acc[r][v].get()))

    steps_in_pairs(k, kc, step)
    return acc


def steps_in_pairs(k: Kernel, count, step: Callable) -> None:
    """``step(index)`` for index 0 .. count - 1 in order (``count`` an int or i64), two per loop iteration
    and the odd last one after: the k loop of every micro-kernel, so that a tile's rows and a single row
    sum their k steps alike."""
    fb, b = k.fn, k.b
    n = k.dim(count)
    pairs = b.and_(n, i64(-2))
    with fb.loop(0, pairs, 2, name="kk") as kk:
        step(kk)
        step(b.add(kk, i64(1)))
    with b.if_then(b.icmp_signed("<", pairs, n)):
        step(pairs)


def vector_widths(nv: int, vw: int, last: int | None = None) -> list[int]:
    """Lanes of each of a tile row's ``nv`` vectors: ``vw``, the last ``last`` when given."""
    return [vw] * (nv - 1) + [last or vw] if nv else []


def zeroed_acc(k: Kernel, rows: int, nv: int, vw: int, last: int | None = None) -> list[list]:
    """``rows x nv`` accumulator Vars of ``vw`` floats (the last ``last``), set to zero."""
    widths = vector_widths(nv, vw, last)
    acc = [[k.fn.var(ir.VectorType(F32, w), name=f"c{r}_{v}") for v, w in enumerate(widths)] for r in range(rows)]
    for row in acc:
        for var in row:
            var.set(vector_constant(var.type, None))
    return acc


def row_compute(k: Kernel, a_ptr, panel, kc, nv: int, vw: int, stride: int, *, panels: int = 1,
                panel_step=0) -> list[list]:
    """One row of A times ``panels`` panels (``panel_step`` floats apart: an int, or an i64 known at run
    time): ``panels x nv`` accumulator Vars, each summed over k in order from zero with one FMA per step,
    exactly as :func:`tile_compute` sums each row of a tile. A row's values are then the same bits whether
    it runs here, in an edge tile or in a whole micro-tile, so a sample's result never depends on how many
    rows its product has (the batch, a sub-batch, a thread's share). The FMA latency is hidden by the
    panels' independent sums (4 panels of 2 vectors: 8 chains) where k split over several accumulators
    would have summed in another order."""
    b = k.b
    acc = zeroed_acc(k, panels, nv, vw)
    step_v = panel_step if isinstance(panel_step, ir.Value) else i64(panel_step)
    bases = [panel if g == 0 else b.gep(panel, [b.mul(i64(g), step_v)], source_etype=F32) for g in range(panels)]
    vt = ir.VectorType(F32, vw)

    def step(kk):
        avv = k.splat(b.load(b.gep(a_ptr, [kk], source_etype=F32), typ=F32, align=4), vw)
        offset = b.mul(kk, i64(stride))
        for g, base in enumerate(bases):
            bp = b.gep(base, [offset], source_etype=F32)
            for v in range(nv):
                bv = b.load(b.gep(bp, [i64(v * vw)], source_etype=F32), typ=vt, align=4)
                acc[g][v].set(mathlib.fma(b, avv, bv, acc[g][v].get()))

    steps_in_pairs(k, kc, step)
    return acc


def each_panel_group(k: Kernel, lo, hi, body: Callable) -> None:
    """``body(p, count)`` over the panels [lo, hi) (ints or i64): groups of PANEL_GROUP panels from lo
    (count = PANEL_GROUP), then the rest one at a time (count = 1), for :func:`row_compute`'s single rows."""
    fb, b = k.fn, k.b
    lo, hi = k.dim(lo), k.dim(hi)
    group_end = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), i64(PANEL_GROUP)), i64(PANEL_GROUP)))
    for start, end, count in ((lo, group_end, PANEL_GROUP), (group_end, hi, 1)):
        with fb.loop(start, end, count, name=f"pg{count}") as p:
            body(p, count)


def tile_row_stride(kb: int, kc: int | None = None) -> int:
    """Floats between the rows of an A tile of K blocks of ``kb``: a cache line more than the block,
    so that the rows the micro-kernel reads fall into different L1 sets. The micro-kernel is
    compiled for one stride (a constant in every address) and shared by the kernels with the same
    one (:func:`tile_function`), so strides come in few sizes: copied rows, blocked at most ``kc``,
    always take ``kc``'s; a block sized by its source is rounded up to 32, 64 or 128 floats (by its
    size). The rows' cache lines are the same whatever the stride: only the tile's span grows."""
    if kc is not None and kb <= kc:
        return kc + TILE_PAD
    step = 32 if kb <= 128 else 64 if kb <= 512 else 128
    return -(-kb // step) * step + TILE_PAD


# ---------------------------------------------------------------------------- shared micro-kernels
class FunctionBody:
    """What :func:`tile_compute` and :func:`row_compute` use of a :class:`Kernel` (its function and
    builder), for a micro-kernel emitted as a function of its own."""

    def __init__(self, fn: Fn):
        self.fn, self.b = fn, fn.b

    def dim(self, d) -> ir.Value:
        return self.fn.dim(d)

    def splat(self, value: ir.Value, lanes: int) -> ir.Value:
        return broadcast(self.b, value, lanes)


def store_acc(b: ir.IRBuilder, acc: list[list], c_tile, vw: int, stride: int) -> None:
    for r, row in enumerate(acc):
        for v, var in enumerate(row):
            b.store(var.get(), b.gep(c_tile, [i64(r * stride + v * vw)], source_etype=F32), align=4)


def _last_suffix(last: int | None, vw: int) -> str:
    return f"_l{last}" if last and last != vw else ""


def tile_function(module: ir.Module, rows: int, nv: int, vw: int, stride: int, a_stride: int,
                  prefetch: bool = False, last: int | None = None) -> ir.Function:
    """The micro-kernel as a function of the module, shared by every GEMM and convolution kernel
    with the same tile: ``void (a, panel, kc, c_tile, prefetch)`` writes the ``rows x nv`` vectors
    of ``A @ panel`` (A's rows ``a_stride`` floats apart from ``a``, the panel ``stride`` floats per k
    step) to ``c_tile``, rows ``stride`` floats apart; with ``prefetch``, each k step prefetches the
    panel data ``prefetch`` floats ahead. Emitted once per module rather than inlined into each
    kernel: the module's IR and its compile time shrink, the loop's code is the same (the call
    costs a few cycles per tile of ``kc * rows * nv`` FMAs). ``last``: lanes of each row's last vector
    (:func:`tail_lanes`); the lanes beyond are not written."""
    name = f"gemm_tile_{rows}x{nv}_w{vw}_p{stride}_a{a_stride}" + ("_pf" if prefetch else "") + _last_suffix(last, vw)
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    f = Fn(module, name, ir.VoidType(), [PTR, PTR, I64, PTR, I64], ["a", "panel", "kc", "c", "prefetch"])
    f.fn.attributes.add("noinline")
    a, panel, kc, c, ahead = f.args
    acc = tile_compute(FunctionBody(f), None, panel, kc, nv, vw, stride, a_base=a, a_stride=a_stride, rows=rows,
                       prefetch=ahead if prefetch else 0, last=last)
    store_acc(f.b, acc, c, vw, stride)
    f.b.ret_void()
    return f.finish()


def segments_compute(k, a, deltas, segments, seg_len, panel, nv: int, vw: int, stride: int, a_stride: int,
                     rows: int, prefetch, acc: list[list], last: int | None) -> None:
    """:func:`tile_compute` over a K block of ``segments`` runs of ``seg_len`` columns, run ``s`` of row
    ``r`` at ``a + deltas[s] + r * a_stride`` and the panel's k steps in the same order, into ``acc``."""
    b = k.b
    with k.fn.loop(0, segments, name="seg") as seg:
        delta = b.load(b.gep(deltas, [seg], source_etype=I64), typ=I64)
        seg_panel = b.gep(panel, [b.mul(b.mul(seg, seg_len), i64(stride))], source_etype=F32)
        tile_compute(k, None, seg_panel, seg_len, nv, vw, stride, a_base=b.gep(a, [delta], source_etype=F32),
                     a_stride=a_stride, rows=rows, prefetch=prefetch, acc=acc, last=last)


def direct_tile_function(module: ir.Module, rows: int, nv: int, vw: int, stride: int, a_stride: int,
                         prefetch: bool = False, last: int | None = None) -> ir.Function:
    """The micro-kernel reading A where it lies (an implicit GEMM, see :meth:`ASource.direct_stride`):
    ``void (a, panel, segments, seg_len, c_tile, deltas, prefetch)`` writes the ``rows x nv`` vectors of
    ``A @ panel`` to ``c_tile`` as :func:`tile_function` does, where the K block is ``segments`` runs of
    ``seg_len`` columns, run ``s`` of row ``r`` at ``a + deltas[s] + r * a_stride`` (i64 deltas) and the
    panel's k steps in the same order."""
    name = f"gemm_direct_{rows}x{nv}_w{vw}_p{stride}_a{a_stride}" + ("_pf" if prefetch else "") + _last_suffix(last, vw)
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    f = Fn(module, name, ir.VoidType(), [PTR, PTR, I64, I64, PTR, PTR, I64],
           ["a", "panel", "segments", "seg_len", "c", "deltas", "prefetch"])
    f.fn.attributes.add("noinline")
    a, panel, segments, seg_len, c, deltas, ahead = f.args
    body, b = FunctionBody(f), f.b
    acc = zeroed_acc(body, rows, nv, vw, last)
    segments_compute(body, a, deltas, segments, seg_len, panel, nv, vw, stride, a_stride, rows,
                     ahead if prefetch else 0, acc, last)
    store_acc(b, acc, c, vw, stride)
    b.ret_void()
    return f.finish()


def row_function(module: ir.Module, nv: int, vw: int, stride: int, panels: int = 1) -> ir.Function:
    """:func:`row_compute` as a shared function ``void (a_row, panel, panel_step, kc, c)``: one row of A
    times ``panels`` panels (``stride`` floats per k step, ``panel_step`` floats apart), panel g's ``nv``
    vectors written to ``c + g * stride``."""
    name = f"gemm_row_{panels}x{nv}_w{vw}_p{stride}"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    f = Fn(module, name, ir.VoidType(), [PTR, PTR, I64, I64, PTR], ["a", "panel", "panel_step", "kc", "c"])
    f.fn.attributes.add("noinline")
    a, panel, panel_step, kc, c = f.args
    acc = row_compute(FunctionBody(f), a, panel, kc, nv, vw, stride, panels=panels, panel_step=panel_step)
    store_acc(f.b, acc, c, vw, stride)
    f.b.ret_void()
    return f.finish()


# ---------------------------------------------------------------------------- the packed GEMM
def store_c_rows(k: Kernel, c_tile, pc, N: int, NR: int, vw: int, nv: int, col0, i, rows_valid, valid_cols: int,
                 first, last, *, pbias=None, pres=None, activation: Callable | None = None,
                 post_activation: Callable | None = None, ldc: int | None = None) -> None:
    """Rows ``i...`` of a computed C tile (``nv`` vectors of ``vw`` per row, ``NR`` floats apart) into C (``N``
    wide, its rows ``ldc`` apart, default ``N``; from column ``col0``): added to C's partial sums unless
    ``first`` (an i1, or True), then, when ``last`` (an i1, or True), the epilogue: + bias, activation,
    + residual (``N`` wide), post-activation."""
    fb, b = k.fn, k.b
    with fb.loop(0, rows_valid, name="st") as r:
        row_off = b.mul(b.add(i, r), i64(N))
        c_row_off = row_off if ldc in (None, N) else b.mul(b.add(i, r), i64(ldc))
        for v in range(nv):
            valid = min(vw, valid_cols - v * vw)
            col = b.add(col0, i64(v * vw))
            cptr = b.gep(pc, [b.add(c_row_off, col)], source_etype=F32)
            # lanes past the valid columns may not have been written (:func:`tail_lanes`)
            val = load_lanes(b, b.gep(c_tile, [b.add(b.mul(r, i64(NR)), i64(v * vw))], source_etype=F32), vw, valid)
            if first is not True:  # partial sums of earlier K blocks are in C
                acc_var = fb.var(val.type, name="sum")
                with b.if_else(first) as (then, otherwise):
                    with then:
                        acc_var.set(val)
                    with otherwise:
                        acc_var.set(b.fadd(val, load_lanes(b, cptr, vw, valid)))
                val = acc_var.get()

            def epilogue(val, col=col, row_off=row_off, valid=valid):
                bias = load_lanes(b, b.gep(pbias, [col], source_etype=F32), vw, valid) if pbias is not None else None
                return apply_epilogue(k, val, bias, pres, b.add(row_off, col), valid, activation, post_activation)

            if pbias is not None or activation is not None or pres is not None or post_activation is not None:
                if last is True:
                    val = epilogue(val)
                else:
                    out_var = fb.var(val.type, name="ep")
                    with b.if_else(last) as (then, otherwise):
                        with then:
                            out_var.set(epilogue(val))
                        with otherwise:
                            out_var.set(val)
                    val = out_var.get()
            store_lanes(b, val, cptr, vw, valid)


def apply_epilogue(k: Kernel, val, bias, pres, offset, valid: int, activation: Callable | None,
                   post_activation: Callable | None):
    """``post_activation(activation(val + bias) + residual)`` on one vector of C (``bias`` a loaded
    vector or None; the residual's ``valid`` lanes at ``pres + offset`` when ``pres`` is given)."""
    b = k.b
    lanes = val.type.count
    if bias is not None:
        val = b.fadd(val, bias)
    if activation is not None:
        val = activation(k.m, val)
    if pres is not None:
        val = b.fadd(val, load_lanes(b, b.gep(pres, [offset], source_etype=F32), lanes, valid))
    if post_activation is not None:
        val = post_activation(k.m, val)
    return val


FUSED_EPILOGUE_ENV = switches.GEMM_FUSED_EPILOGUE.name
SMALL_K = 64


def fused_epilogue_mode() -> str:
    """``GRAPHC_GEMM_FUSED_EPILOGUE``: "1" (default) or "0" (every tile through the thread's buffer and
    :func:`store_c_rows`, for measuring :func:`store_tile_fused`); part of the build cache key."""
    return switches.GEMM_FUSED_EPILOGUE.value()


def store_tile_fused(k: Kernel, acc: list[list], pc, N: int, col0, i, valid_cols: int, *, pbias=None, pres=None,
                     activation: Callable | None = None, post_activation: Callable | None = None,
                     ldc: int | None = None) -> None:
    """A whole tile's accumulators (``acc``, rows from ``i``, vectors from column ``col0``) through the
    epilogue into C, from the registers: the path of products done in one K block, where nothing
    is added to partial sums. Against writing the tile to the thread's buffer and storing it
    row by row (:func:`store_c_rows`), this saves a store and a load per vector: up to a sixth of
    the time of a 1x1 convolution over 16-32 channels (``benchmarks/gemm_epilogue``). C's rows are ``ldc``
    apart (default ``N``), the residual's ``N``."""
    b = k.b
    vw = acc[0][0].type.count  # every vector but the last (tail_lanes) is whole: vector v starts at v * vw
    biases = []
    for v, var in enumerate(acc[0]):
        valid = min(var.type.count, valid_cols - v * vw)
        col = b.add(col0, i64(v * vw))
        biases.append(load_lanes(b, b.gep(pbias, [col], source_etype=F32), var.type.count, valid)
                      if pbias is not None else None)
    for r, row in enumerate(acc):
        row_off = b.mul(b.add(i, i64(r)), i64(N))
        c_row_off = row_off if ldc in (None, N) else b.mul(b.add(i, i64(r)), i64(ldc))
        for v, var in enumerate(row):
            lanes = var.type.count
            valid = min(lanes, valid_cols - v * vw)
            col = b.add(col0, i64(v * vw))
            val = apply_epilogue(k, var.get(), biases[v], pres, b.add(row_off, col), valid, activation,
                                 post_activation)
            store_lanes(b, val, b.gep(pc, [b.add(c_row_off, col)], source_etype=F32), lanes, valid)


def emit_gemm(kb: KernelBuilder, source: ASource, M, K: int, w: Tensor, out: Tensor, *,
              bias: Tensor | None = None, activation: Callable | None = None, residual: Tensor | None = None,
              post_activation: Callable | None = None, name: str = "gemm",
              pack: tuple[int, Callable] | None = None, tile: tuple[int, int] | None = None) -> None:
    """``out (M, N) = post(activation(A @ w + bias) + residual)``, ``w`` a (K, N) weight.

    ``tile``: (MR, NV) of the micro-kernel instead of :func:`micro_tile`'s.

    Code size is kept small: K blocks are a run-time loop, the micro-kernel is emitted once
    for full panels and once for the partial last panel, and each tile is written to a small
    per-thread buffer and then stored row by row by a loop (the epilogue emitted once per
    vector of the tile row, not once per register).
    """
    vw = kb.target.gemm_vw
    MR, NV = tile if tile is not None and not switches.GEMM_TILE.raw() else \
        tile_for_rows(M, vw, kb.target.num_vector_registers)
    NR = NV * vw
    if pack is None:
        N = w.shape[1]
        packed = packed_panels(kb, w, NR)
    else:
        # B is w seen through an index map: pack = (N, index(b, k, col) -> element of w)
        N, index = pack
        packed = kb.packed_weight(w, ("mapped", NR, K, N, index.__qualname__), -(-N // NR) * K * NR * 4,
                                  pack_mapped(K, N, NR, index))
    panels = -(-N // NR)
    bl = gemm_blocking(kb.target, MR, NR)
    pool = kb.take_pool(out)
    # a weight beyond L3 would stream from memory once per row block: its K blocks go outside the row
    # blocks instead, as deep as the run-time product's (each item a group of rows x a chunk of panels
    # whose K block stays in L3, every row block of the group running over it; C takes partial sums)
    k_outer = pool is None and source.cache_blocked and k_blocks_outside(K * N * 4, bl)
    if k_outer:
        KB, rows_max = runtime_blocks(bl, K, MR)
    else:
        KB = even_block(K, bl.kc) if source.cache_blocked else source.block(K)
        rows_max = bl.mc if source.cache_blocked else source.block_rows(KB)
    n_kblocks = -(-K // KB) if K else 0
    # weights of a quarter of L2 or more stream from beyond it at batch 1 inference (every other
    # layer's weights pass through L2 between two calls): 1x1 convolutions with 1 MiB of weights
    # on a 2 MiB L2 ran 10-15 % faster in ResNet50 prefetched; weights of a few hundred KiB in
    # models that fit L2 whole gain nothing
    b_streamed = K * N * 4 >= bl.l2 // 4
    prefetch_mode = switches.GEMM_PREFETCH.value() if b_streamed else "0"
    prefetch_b = prefetch_mode != "0"
    # Row blocks: whole micro-tiles, at most block_rows each, their sizes within one tile of
    # each other. On several threads their number is also a multiple of the runtime's claim
    # blocks (4 per thread) where there are enough tiles, so that every thread gets the same
    # number of tiles (11 blocks of 96 rows on 2 threads would leave one thread idle a twelfth
    # of the time): for copied A always (each row block reads B again, from L2 or L3: cheap
    # against its FMAs), for computed A when the weights stay in L2. Column chunks then give
    # every thread work when the rows alone do not: about ``per_thread`` items per thread,
    # chosen at run time from M and the thread count; and no chunk is wider than ``nc``.
    tpb = max(1, rows_max // MR)
    per_thread = QUANTUM if source.cache_blocked else computed_items(source.items_per_thread(N))
    # a pooling of the result (see ..pool_fusion): the split's rows are bands of pixels (one row of the
    # pooled result each), a block of them computed into a strip of the thread's scratch and pooled from it
    round_rows = source.cache_blocked or not b_streamed
    if k_outer:
        chunk_cap = max(1, bl.b_block // (KB * NR * 4))
        split = split_items(M, MR, None, panels, per_thread=QUANTUM, round_rows=True,
                            max_chunk_panels=chunk_cap)
    elif pool is not None:
        unit_bands = pool.unit_bands(MR, rows_max, N, bl.l2 // 4)
        group_units = pool.group_units(unit_bands, rows_max, N, bl.l2 // 4)
        group_bands = group_units * unit_bands
        split = split_items(pool.units(unit_bands), 1, group_units, panels, per_thread=per_thread,
                            round_rows=round_rows, max_chunk_panels=bl.nc // NR)
    else:
        split = split_items(M, MR, tpb, panels, per_thread=per_thread, round_rows=round_rows,
                            max_chunk_panels=bl.nc // NR)
    k = kb.kernel(name)
    fb, b = k.fn, k.b
    pw = k.ptr(packed)
    pc = k.ptr(out) if pool is None else None  # with a pooling: the strip, set per item
    # C's rows: further apart where C is a concatenation's part written in place
    ldc = N if pool is not None else (out.row_stride or N)
    pbias = k.ptr(bias) if bias is not None else None
    pres = k.ptr(residual) if residual is not None else None
    Mv = k.dim(M)
    direct_stride = source.direct_stride(MR)
    if direct_stride is not None and rows_conflict_in_l1(direct_stride * 4, MR, bl):
        direct_stride = None  # rows in one L1 set: every tile copied into the padded tile
    # tile rows are padded by a cache line so that the MR rows the micro-kernel reads do not
    # fall into the same few L1 sets
    tile_stride = tile_row_stride(KB, (bl.kc_packed if k_outer else bl.kc) if source.cache_blocked else None)
    # with a pooling and one K block, a run of bands is one row block (the A tile holds it) and each panel's
    # columns are pooled as soon as its tiles are in the strip, while they are in L1
    per_panel = pool is not None and n_kblocks == 1
    sub_rows = -(-group_bands * pool.band_rows // MR) * MR if per_panel else tpb * MR
    a_tile_floats = (sub_rows // MR + 1) * MR * tile_stride  # a block's whole tiles and the rows past the last
    strip_floats = group_bands * pool.band_rows * N if pool is not None else 0
    scratch = k.thread_scratch((a_tile_floats + MR * NR + strip_floats) * 4)
    a_tile = scratch
    c_tile = b.gep(scratch, [i64(a_tile_floats)], source_etype=F32)
    strip = b.gep(scratch, [i64(a_tile_floats + MR * NR)], source_etype=F32)

    def store_tile(vw, nv, p, i, rows_valid, valid_cols, first, last):
        """Rows of c_tile (``nv`` vectors of ``vw`` each, written by the micro-kernel) (+C, epilogue) -> C."""
        store_c_rows(k, c_tile, pc, N, NR, vw, nv, b.mul(p, i64(NR)), i, rows_valid, valid_cols, first, last,
                     pbias=pbias, pres=pres, activation=activation, post_activation=post_activation, ldc=ldc)

    def row_loop(p, row0, row_end, k0, kc, first, last, valid_cols, singles: bool = True):
        """Panel p's tiles of rows [row0, row_end); the rows past the last whole and edge tiles only with
        ``singles`` (else :func:`single_rows` computes them over a group of panels)."""
        vw, nv, last_lanes = panel_vectors(valid_cols, kb.target, MR)
        with fb.loop(row0, row_end, MR, name="row") as i:
            rows_valid = fb.min_(b.sub(row_end, i), i64(MR))
            panel = b.gep(pw, [b.mul(b.add(b.mul(p, i64(K)), k0), i64(NR))], source_etype=F32)
            with b.if_else(b.icmp_signed("==", rows_valid, i64(MR))) as (full, partial):
                with full:
                    # prefetch the C tile (written after the k loop) and its residual rows, C_AHEAD tiles
                    # ahead: with a short K (1x1 convolutions over 64 channels) one tile's k loop is
                    # too short to hide a miss to L3 (ResNet50 at batch 1, one thread: 1-2 % faster).
                    # The tile that far ahead, or the last whole one (i + MR <= M here), its rows at constant
                    # distances from one pointer: a loop over the rows with a bound per row had cost 2-3 % of
                    # products over 16-24 channels (12544 x 16 -> 96 with ReLU6: 0.408 -> 0.395 ms)
                    pf = intrinsic(b.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
                    prow = fb.min_(b.add(i, i64(C_AHEAD * MR)), b.sub(Mv, i64(MR)))
                    col = b.mul(p, i64(NR))
                    crow = b.gep(pc, [b.add(b.mul(prow, i64(ldc)), col)], source_etype=F32)
                    rrow = b.gep(pres, [b.add(b.mul(prow, i64(N)), col)], source_etype=F32) if pres is not None \
                        else None
                    for r in range(MR):
                        for line in range(0, min(NR, valid_cols), 16):
                            b.call(pf, [b.gep(crow, [i64(r * ldc + line)], source_etype=F32), i32(1), i32(3), i32(1)])
                            if rrow is not None:
                                b.call(pf, [b.gep(rrow, [i64(r * N + line)], source_etype=F32), i32(0), i32(3),
                                            i32(1)])
                    # whole tiles of one K block go through the epilogue from the registers, the micro-kernel
                    # inlined, where they are all computed one way (all copied, or all read in place as
                    # Dense rows are), or where K is at most SMALL_K: the implicit GEMM's two ways inline it
                    # twice per kernel, which pays only where the k loop is short (a first layer's 3x3
                    # convolution over 3 channels, K = 27: 1.08-1.12x)
                    direct = source.direct_tile(k, i, k0, kc) if direct_stride is not None else None
                    one_way = direct is None or (isinstance(direct[0], ir.Constant) and direct[0].constant)
                    fuse = fused and (one_way or K <= SMALL_K)
                    acc = zeroed_acc(k, MR, nv, vw, last_lanes) if fuse else None
                    def packed_tile(prefetch: int):
                        # MR rows a fixed stride apart: addressed from one pointer
                        base = b.gep(a_tile, [b.mul(b.sub(i, row0), i64(tile_stride))], source_etype=F32)
                        if fuse:
                            tile_compute(k, None, panel, kc, nv, vw, NR, a_base=base, a_stride=tile_stride, rows=MR,
                                         prefetch=prefetch, acc=acc, last=last_lanes)
                        else:
                            micro = tile_function(kb.module, MR, nv, vw, NR, tile_stride, bool(prefetch), last_lanes)
                            b.call(micro, [base, panel, k.dim(kc), c_tile, i64(prefetch)])

                    def direct_tile(prefetch: int, a_ptr, deltas, segments, seg_len):
                        if fuse:
                            segments_compute(k, a_ptr, deltas, segments, seg_len, panel, nv, vw, NR, direct_stride,
                                             MR, prefetch, acc, last_lanes)
                        else:
                            micro = direct_tile_function(kb.module, MR, nv, vw, NR, direct_stride, bool(prefetch),
                                                         last_lanes)
                            b.call(micro, [a_ptr, panel, segments, seg_len, c_tile, deltas, i64(prefetch)])

                    def compute(prefetch: int):
                        if direct is None:
                            packed_tile(prefetch)
                        elif one_way:
                            direct_tile(prefetch, *direct[1:])
                        else:
                            with b.if_else(direct[0]) as (in_place, copied):
                                with in_place:
                                    direct_tile(prefetch, *direct[1:])
                                with copied:
                                    packed_tile(prefetch)

                    # the next panel, K * NR floats ahead, is prefetched into L2 while this one is computed,
                    # by the row block's first tile only: the others find this panel in L1 or L2, and each
                    # line of the next one is asked for once. Measured on Zen 3 (one thread, Dense layers
                    # M = N = K, one process interleaved, GFLOP/s with a prefetch in every tile / the first
                    # tile / none): 1024 61.4 / 64.1 / 66.5, 2048 65.6 / 69.4 / 75.6, 4096 60.4 / 68.5 / 71.4;
                    # whole models, where the weights come from memory, first tile against every tile:
                    # ResNet50 1.01x, InceptionV3 1.06x faster (none: 0.99x, 0.99x)
                    if prefetch_mode == "every":
                        compute(K * NR)
                    elif prefetch_b:
                        with b.if_else(b.icmp_signed("==", i, row0)) as (lead, rest):
                            with lead:
                                compute(K * NR)
                            with rest:
                                compute(0)
                    else:
                        compute(0)
                    if fuse:
                        store_tile_fused(k, acc, pc, N, b.mul(p, i64(NR)), i, valid_cols, pbias=pbias, pres=pres,
                                         activation=activation, post_activation=post_activation, ldc=ldc)
                    else:
                        store_tile(vw, nv, p, i, MR, valid_cols, first, last)
                with partial:
                    # fewer than MR rows left (small batches, the pixels past the last whole tile): tiles
                    # of EDGE_ROWS, then one row at a time, so no work is wasted on missing rows
                    edge_end = b.and_(rows_valid, i64(-EDGE_ROWS))
                    with fb.loop(0, edge_end, EDGE_ROWS, name="r4") as r:
                        micro = tile_function(kb.module, EDGE_ROWS, nv, vw, NR, tile_stride, prefetch_b, last_lanes)
                        b.call(micro, [a_row(b.add(i, r), row0), panel, k.dim(kc),
                                       b.gep(c_tile, [b.mul(r, i64(NR))], source_etype=F32), i64(K * NR)])
                    if singles:
                        with fb.loop(edge_end, rows_valid, name="r1") as r:
                            c_row = b.gep(c_tile, [b.mul(r, i64(NR))], source_etype=F32)
                            b.call(row_function(kb.module, nv, vw, NR), [a_row(b.add(i, r), row0), panel, i64(0),
                                                                         k.dim(kc), c_row])
                    store_tile(vw, nv, p, i, rows_valid if singles else edge_end, valid_cols, first, last)

    def a_row(row, row0):
        """Row ``row`` of A in the thread's tile, which holds the rows from row0."""
        return b.gep(a_tile, [b.mul(b.sub(row, row0), i64(tile_stride))], source_etype=F32)

    def single_rows(p0, p_end, row0, row_end, k0, kc, first, last):
        """The rows of [row0, row_end) past its last whole and edge tiles (at most EDGE_ROWS - 1; a
        product of one row at batch 1) times the whole panels [p0, p_end), PANEL_GROUP panels per
        call where there are that many: one row's FMAs need several panels' sums to fill the pipes."""
        n = b.sub(row_end, row0)
        tail = b.srem(n, i64(MR))
        start = b.add(b.add(row0, b.sub(n, tail)), b.and_(tail, i64(-EDGE_ROWS)))
        kcv = k.dim(kc)
        with fb.loop(start, row_end, name="r1") as r:
            def group(p, count, r=r):
                panel = b.gep(pw, [b.mul(b.add(b.mul(p, i64(K)), k0), i64(NR))], source_etype=F32)
                b.call(row_function(kb.module, NV, vw, NR, count), [a_row(r, row0), panel, i64(K * NR), kcv, c_tile])
                for g in range(count):
                    store_c_rows(k, b.gep(c_tile, [i64(g * NR)], source_etype=F32), pc, N, NR, vw, NV,
                                 b.mul(b.add(p, i64(g)), i64(NR)), r, i64(1), NR, first, last, pbias=pbias,
                                 pres=pres, activation=activation, post_activation=post_activation, ldc=ldc)

            each_panel_group(k, p0, p_end, group)

    # one K block: whole tiles may go through the epilogue from the registers, their micro-kernel
    # inlined (its accumulators cannot leave a shared function but through memory)
    fused = n_kblocks == 1 and fused_epilogue_mode() == "1"
    def row_block(row0, row_end, p_lo, p_hi, after_panel=None, step=None):
        """Rows [row0, row_end) x panels [p_lo, p_hi) of C; ``after_panel(p)`` once panel p is written.
        ``step``: the rows are blocks of that many, each K block running over all of them in turn."""
        with fb.loop(0, n_kblocks, name="kb") as kblock:
            k0 = b.mul(kblock, i64(KB))
            kc = fb.min_(i64(KB), b.sub(i64(K), k0))
            if n_kblocks == 1:  # one K block: no partial sums, the epilogue always applies
                first = last = True
            else:
                first = b.icmp_signed("==", kblock, i64(0))
                last = b.icmp_signed("==", kblock, i64(n_kblocks - 1))
            if step is None:
                k_block(row0, row_end, p_lo, p_hi, k0, kc, first, last, after_panel)
            else:
                with fb.loop(row0, row_end, step, name="rblock") as r0:
                    k_block(r0, fb.min_(b.add(r0, i64(step)), row_end), p_lo, p_hi, k0, kc, first, last, None)

    def k_block(row0, row_end, p_lo, p_hi, k0, kc, first, last, after_panel):
        """One K block of rows [row0, row_end) x panels [p_lo, p_hi): A's rows into the tile, then the panels."""
        full_hi = fb.min_(p_hi, i64(N // NR))
        if direct_stride is not None:
            # only the tiles not read in place (across a padding border or an output row) are filled
            with fb.loop(row0, row_end, MR, name="dfill") as i:
                tile_end = b.add(i, i64(MR))
                whole = b.icmp_signed("<=", tile_end, row_end)
                with b.if_then(b.not_(b.and_(whole, source.direct_tile(k, i, k0, kc)[0]))):
                    tile_rows = b.gep(a_tile, [b.mul(b.sub(i, row0), i64(tile_stride))], source_etype=F32)
                    source.fill(k, i, fb.min_(tile_end, row_end), k0, kc, tile_rows, tile_stride, kb=KB)
        else:
            source.fill(k, row0, row_end, k0, kc, a_tile, tile_stride, kb=KB)
        # whole panels in groups: each panel's tiles, then the group's single rows, then its pooling
        with fb.loop(p_lo, full_hi, PANEL_GROUP, name="pgroup") as p0:
            p_end = fb.min_(b.add(p0, i64(PANEL_GROUP)), full_hi)
            with fb.loop(p0, p_end, name="panel") as p:
                row_loop(p, row0, row_end, k0, kc, first, last, NR, singles=False)
            single_rows(p0, p_end, row0, row_end, k0, kc, first, last)
            if after_panel is not None:
                with fb.loop(p0, p_end, name="pooled") as p:
                    after_panel(p)
        if N % NR:
            tail_p = i64(N // NR)
            in_range = b.and_(b.icmp_signed(">=", tail_p, p_lo), b.icmp_signed("<", tail_p, p_hi))
            with b.if_then(in_range):
                row_loop(tail_p, row0, row_end, k0, kc, first, last, N % NR)
                if after_panel is not None:
                    after_panel(tail_p)

    with fb.loop(k.begin, k.end, name="item") as item:
        row0, row_end, p_lo, p_hi = split.bounds(k, item)
        if pool is None:
            row_block(row0, row_end, p_lo, p_hi, step=tpb * MR if k_outer else None)
        else:
            # units [row0, row_end) of the batch: a run of them in one image at a time (an image's rows past
            # its last band are not computed), into the strip, then pooled
            P0 = pool.pooled[0]
            per_image = -(-P0 // unit_bands)
            unit = fb.var(I64, name="unit")
            unit.set(row0)
            cond, body, done = fb.block("units.cond"), fb.block("units.body"), fb.block("units.end")
            b.branch(cond)
            b.position_at_end(cond)
            b.cbranch(b.icmp_signed("<", unit.get(), row_end), body, done)
            b.position_at_end(body)
            image, lu = b.sdiv(unit.get(), i64(per_image)), b.srem(unit.get(), i64(per_image))
            run_units = fb.min_(b.sub(row_end, unit.get()), b.sub(i64(per_image), lu))
            local = b.mul(lu, i64(unit_bands))
            run = fb.min_(b.mul(run_units, i64(unit_bands)), b.sub(i64(P0), local))
            g_row0 = b.add(b.mul(image, i64(pool.image_rows)), b.mul(local, i64(pool.band_rows)))
            g_end = b.add(g_row0, b.mul(run, i64(pool.band_rows)))
            pc = b.gep(strip, [b.mul(b.sub(i64(0), g_row0), i64(N))], source_etype=F32)  # row g_row0: the strip's first

            def pool_columns(c_lo, c_hi, image=image, local=local, run=run):
                pool.emit(k, strip, N, image, local, run, b.mul(c_lo, i64(NR)), fb.min_(b.mul(c_hi, i64(NR)), i64(N)))

            if per_panel:
                row_block(g_row0, g_end, p_lo, p_hi, lambda p: pool_columns(p, b.add(p, i64(1))))
            else:
                with fb.loop(g_row0, g_end, sub_rows, name="sub") as sub0:
                    row_block(sub0, fb.min_(b.add(sub0, i64(sub_rows)), g_end), p_lo, p_hi)
                pool_columns(p_lo, p_hi)
            unit.set(b.add(unit.get(), run_units))
            b.branch(cond)
            b.position_at_end(done)
    if pool is not None:
        cost = 2 * group_bands * pool.band_rows * K * NR
    elif k_outer:  # an item: a group of rows (M over the claim blocks, at least a row block) x a chunk
        cost = 2 * item_rows(M, tpb * MR) * K * NR * min(panels, chunk_cap)
    else:
        cost = 2 * item_rows(M, tpb * MR) * K * NR
    kb.launch(k, split.items, cost)


# ---------------------------------------------------------------------------- matmul op
def emit_matmul(kb: KernelBuilder, a: Tensor, b: Tensor, out: Tensor, *, bias: Tensor | None,
                activation: Callable | None, residual: Tensor | None, post_activation: Callable | None) -> None:
    if a.dtype != "float32" or b.dtype != "float32":
        raise NativeLoweringError(f"matmul of {a.dtype} and {b.dtype}")
    K, N = b.shape[-2], b.shape[-1]
    if b.rank == 2 and b.is_constant and isinstance(K, int) and isinstance(N, int) and b.buf.kind == "weight":
        from graphc.backends.llvm.kernels.gemm_bf16 import gemm_for

        M = dims.product(a.shape[:-1])
        gemm_for(kb)(kb, DenseA(a, K), M, K, b, out, bias=bias, activation=activation, residual=residual,
                     post_activation=post_activation)
        return
    emit_runtime_gemm(kb, a, b, out)
    if bias is not None or residual is not None or activation is not None or post_activation is not None:
        from graphc.backends.llvm.kernels.elementwise import emit_map

        ins = [out] + ([kb.view(bias, (1,) * (out.rank - 1) + tuple(bias.shape))] if bias is not None else []) \
            + ([residual] if residual is not None else [])
        has_bias = bias is not None

        def fn(m, v, *rest):
            rest = list(rest)
            if has_bias:
                v = m.add(v, rest.pop(0))
            if activation is not None:
                v = activation(m, v)
            if rest:
                v = m.add(v, rest.pop(0))
            if post_activation is not None:
                v = post_activation(m, v)
            return v

        emit_map(kb, out, ins, fn, name="matmul_epilogue", cost=4)


def emit_runtime_gemm(kb: KernelBuilder, a: Tensor, bt: Tensor, out: Tensor) -> None:
    """Batched ``out = a @ b`` with ``b`` computed at run time, on the packed micro-kernel.

    Batch dims broadcast (stride 0 for an operand's size-1 dims); M, K and N may be free dims.
    Work items are (batch, group of rows, chunk of panels): as many row groups as the runtime's
    claim blocks (one on one thread), chunks where those are too few or B's K block would exceed
    ``b_block``. Each item packs, per K block, its chunk of B (``kc x NR`` panels, zero-padded past N)
    into its thread's scratch, once, and then, per row block of ``runtime_blocks`` rows, copies those
    rows of A into its tile (as :class:`DenseA` does) and runs the micro-kernel over them and every
    panel. Partial sums of K blocks accumulate in C (see :mod:`.gemm_blocking` for the block sizes).
    """
    vw = kb.target.gemm_vw
    K, N = bt.shape[-2], bt.shape[-1]
    if bt.rank == 2:  # a (..., K) @ b (K, N): one matrix of prod(a.shape[:-1]) rows
        M = dims.product(a.shape[:-1])
        out_batch: tuple = ()
        a_bs: list = []
        b_bs: list = []
    else:
        M = a.shape[-2]
        out_batch = tuple(out.shape[:-2])
        a_bs = broadcast_strides(tuple(a.shape[:-2]), out_batch)
        b_bs = broadcast_strides(tuple(bt.shape[:-2]), out_batch)
    MR, NV = tile_for_rows(M, vw, kb.target.num_vector_registers)
    NR = NV * vw
    bl = gemm_blocking(kb.target, MR, NR)
    KC_, block_rows = runtime_blocks(bl, K, MR)
    nb = len(out_batch)
    nbatch = dims.product(out_batch) if nb else 1
    tpb = max(1, block_rows // MR)
    panels = dims.ceildiv(N, NR)
    tile_stride = KC_ + TILE_PAD
    panel_stride = KC_ * NR + TILE_PAD  # panels a cache line off each other's L1 sets
    chunk_cap = max(1, bl.b_block // 4 // panel_stride)
    # items of as many rows as the claim blocks allow (each packs its chunk of B once per K block)
    split = split_items(M, MR, None, panels, per_thread=QUANTUM, round_rows=True,
                        max_chunk_panels=chunk_cap, batches=nbatch)
    chunk = min(panels, chunk_cap) if isinstance(panels, int) else chunk_cap
    k = kb.kernel("matmul_packed")
    fb, b = k.fn, k.b
    vt = ir.VectorType(F32, vw)
    pa, pb, pc = k.ptr(a), k.ptr(bt), k.ptr(out)
    Mv, Kv, Nv = k.dim(M), k.dim(K), k.dim(N)
    a_mat, b_mat, c_mat = b.mul(Mv, Kv), b.mul(Kv, Nv), b.mul(Mv, Nv)
    n_kblocks = fb.max_(b.sdiv(b.add(Kv, i64(KC_ - 1)), i64(KC_)), i64(1))
    kblock_size = b.sdiv(b.add(Kv, b.sub(n_kblocks, i64(1))), n_kblocks)  # blocks evened out
    block_floats = chunk * panel_stride
    scratch = k.thread_scratch((block_floats + MR * NR + tpb * MR * tile_stride) * 4)
    c_tile = b.gep(scratch, [i64(block_floats)], source_etype=F32)
    a_tile = b.gep(scratch, [i64(block_floats + MR * NR)], source_etype=F32)
    whole_panels = b.sdiv(Nv, i64(NR))

    def pack_chunk(b_base, k0, kc, p0, p_whole, p_end, dst_base):
        """Panels p0..p_end of B's rows k0..k0 + kc into ``dst_base``, ``panel_stride`` floats apart, one row of
        B at a time: each row's columns of the chunk are read in order (contiguous, as the hardware
        prefetchers stream them), where packing a panel at a time reads ``kc`` pieces of NR floats a row of
        B apart (at N = 1024-4096 each in its own page and all in a few L1 and L2 sets). Panels from
        p_whole are cut by N: the columns past it are zero."""
        with fb.loop(0, kc, name="pk") as kk:
            src_row = b.gep(b_base, [b.mul(b.add(k0, kk), Nv)], source_etype=F32)
            dst_row = b.gep(dst_base, [b.mul(kk, i64(NR))], source_etype=F32)
            with fb.loop(p0, p_whole, name="pp") as p:
                src = b.gep(src_row, [b.mul(p, i64(NR))], source_etype=F32)
                dst = b.gep(dst_row, [b.mul(b.sub(p, p0), i64(panel_stride))], source_etype=F32)
                for v in range(NV):
                    val = b.load(b.gep(src, [i64(v * vw)], source_etype=F32), typ=vt, align=4)
                    b.store(val, b.gep(dst, [i64(v * vw)], source_etype=F32), align=4)
            with fb.loop(p_whole, p_end, name="pt") as p:  # at most the one panel cut by N
                col0 = b.mul(p, i64(NR))
                valid_cols = b.sub(Nv, col0)
                src = b.gep(src_row, [col0], source_etype=F32)
                dst = b.gep(dst_row, [b.mul(b.sub(p, p0), i64(panel_stride))], source_etype=F32)
                for v in range(NV):
                    val = load_lanes(b, b.gep(src, [i64(v * vw)], source_etype=F32), vw,
                                     b.sub(valid_cols, i64(v * vw)))
                    b.store(val, b.gep(dst, [i64(v * vw)], source_etype=F32), align=4)

    def store_tile(c_base, i, rows_valid, col0, valid_cols, first, full: bool):
        """Rows of c_tile (written by the micro-kernel) (+ C after the first K block) -> C."""
        with fb.loop(0, rows_valid, name="st") as r:
            crow = b.gep(c_base, [b.add(b.mul(b.add(i, r), Nv), col0)], source_etype=F32)
            for v in range(NV):
                valid = vw if full else b.sub(valid_cols, i64(v * vw))
                cptr = b.gep(crow, [i64(v * vw)], source_etype=F32)
                val = b.load(b.gep(c_tile, [b.add(b.mul(r, i64(NR)), i64(v * vw))], source_etype=F32),
                             typ=vt, align=4)
                if first is True:
                    store_lanes(b, val, cptr, vw, valid)
                    continue
                with b.if_else(first) as (then, otherwise):  # C holds no partial sums before
                    with then:
                        store_lanes(b, val, cptr, vw, valid)
                    with otherwise:
                        store_lanes(b, b.fadd(val, load_lanes(b, cptr, vw, valid)), cptr, vw, valid)

    def c_rows(r):
        """Row ``r`` of c_tile."""
        return b.gep(c_tile, [b.mul(r, i64(NR))], source_etype=F32)

    def a_rows(row, row0):
        """Row ``row`` of A in the tile (which holds rows from row0)."""
        return b.gep(a_tile, [b.mul(b.sub(row, row0), i64(tile_stride))], source_etype=F32)

    def row_loop(c_base, row0, row_end, kc, panel_buf, col0, valid_cols, first, full: bool):
        kcv = k.dim(kc)
        with fb.loop(row0, row_end, MR, name="row") as i:
            rows_valid = fb.min_(b.sub(row_end, i), i64(MR))
            with b.if_else(b.icmp_signed("==", rows_valid, i64(MR))) as (whole, partial):
                with whole:
                    b.call(tile_function(kb.module, MR, NV, vw, NR, tile_stride),
                           [a_rows(i, row0), panel_buf, kcv, c_tile, i64(0)])
                with partial:  # the last rows: tiles of EDGE_ROWS, then one at a time
                    edge_end = b.and_(rows_valid, i64(-EDGE_ROWS))
                    with fb.loop(0, edge_end, EDGE_ROWS, name="r4") as r:
                        b.call(tile_function(kb.module, EDGE_ROWS, NV, vw, NR, tile_stride),
                               [a_rows(b.add(i, r), row0), panel_buf, kcv, c_rows(r), i64(0)])
                    with fb.loop(edge_end, rows_valid, name="r1") as r:
                        b.call(row_function(kb.module, NV, vw, NR), [a_rows(b.add(i, r), row0), panel_buf, i64(0),
                                                                     kcv, c_rows(r)])
            store_tile(c_base, i, rows_valid, col0, valid_cols, first, full)  # one copy for every case

    per_batch = k.dim(split.items)
    with fb.loop(k.begin, k.end, name="item") as item:
        g = b.sdiv(item, per_batch)
        row0, row_end, p_lo, p_hi = split.bounds(k, b.srem(item, per_batch))
        a_off, b_off = i64(0), i64(0)
        idx_rest = g
        for d in range(nb - 1, -1, -1):
            length = k.dim(out_batch[d])
            idx = b.srem(idx_rest, length)
            idx_rest = b.sdiv(idx_rest, length)
            if a_bs[d] != 0:
                a_off = b.add(a_off, b.mul(b.mul(idx, k.dim(a_bs[d])), a_mat))
            if b_bs[d] != 0:
                b_off = b.add(b_off, b.mul(b.mul(idx, k.dim(b_bs[d])), b_mat))
        a_base = b.gep(pa, [a_off], source_etype=F32)
        b_base = b.gep(pb, [b_off], source_etype=F32)
        c_base = b.gep(pc, [b.mul(g, c_mat)], source_etype=F32)
        p_whole = fb.max_(p_lo, fb.min_(p_hi, whole_panels))

        with fb.loop(0, n_kblocks, name="kb") as kblock:
            k0 = b.mul(kblock, kblock_size)
            kc = fb.min_(kblock_size, b.sub(Kv, k0))
            # K known to fit one block: no partial sums to add
            first = True if isinstance(K, int) and K <= KC_ else b.icmp_signed("==", kblock, i64(0))
            pack_chunk(b_base, k0, kc, p_lo, p_whole, p_hi, scratch)
            with fb.loop(row0, row_end, tpb * MR, name="rblock") as r0:
                r_end = fb.min_(b.add(r0, i64(tpb * MR)), row_end)
                copy_rows(k, b.gep(a_base, [b.add(b.mul(r0, Kv), k0)], source_etype=F32), Kv, b.sub(r_end, r0), kc,
                          a_tile, tile_stride)
                with fb.loop(p_lo, p_hi, name="panel") as p:
                    col0 = b.mul(p, i64(NR))
                    valid_cols = fb.min_(b.sub(Nv, col0), i64(NR))
                    panel_buf = b.gep(scratch, [b.mul(b.sub(p, p_lo), i64(panel_stride))], source_etype=F32)
                    with b.if_else(b.icmp_signed("==", valid_cols, i64(NR))) as (whole, tail):
                        with whole:
                            row_loop(c_base, r0, r_end, kc, panel_buf, col0, valid_cols, first, True)
                        with tail:
                            row_loop(c_base, r0, r_end, kc, panel_buf, col0, valid_cols, first, False)
    k_cost = K if isinstance(K, int) else KC_
    kb.launch(k, dims.mul(nbatch, split.items), 2 * item_rows(M, tpb * MR) * max(1, k_cost) * NR)
