"""Convolutions (channels-last, N-d) and pooling.

- groups == 1: a GEMM over output pixels, ``(N*out_pixels, taps*C) @ w (taps*C, O)``. A 1x1
  convolution with unit strides and no padding reads the input in place; any other one fills
  an im2col tile per row block and K block (:class:`Im2colA`): K up to ``SINGLE_K`` is one
  block (tiles of fewer rows, no partial sums through C; 6x4 micro-tiles on 32-register
  targets), larger K blocks are whole kernel taps, evened out (or channel ranges of one tap
  when C exceeds the block), so each tile row is a few contiguous channel runs copied from the
  input, or zeros where a tap falls in the padding. Micro-tiles of consecutive output pixels in
  one output row whose windows lie inside the input are not copied at all: the micro-kernel reads
  them from the input (an implicit GEMM, :meth:`Im2colA.direct_tile`), run by run (whole kernel
  rows, whole taps, or a tap's channel range), rows ``C * stride`` apart. Measured on the Xeon at
  batch 1: the 7x7 stride-2 stem over 3 channels 1.51 -> 1.09 ms, 3x3 over 32 channels at 147x147
  2.36 -> 1.83 ms, over 64 at 56x56 1.16 -> 1.04 ms.
- 3x3 stride-1 convolutions over at least 8 input channels go to Winograd's F(2x2, 3x3)
  where it pays (:mod:`.winograd`): 16 GEMMs on the same micro-kernel, 2.25x fewer multiplications
  (5x5, 1x7, 7x1, 1x3 and 3x1 kernels by the algorithms of that module).
- depthwise (groups == C, kernel (*k, 1, C*M)): a direct kernel vectorized over channels.
  In a row's interior, spans of up to 8 neighbouring output pixels are computed together
  (:func:`span_pixels`: each weight vector loaded once per span, each input vector once for
  all the span's windows that hold it, one accumulator chain per pixel): on AMD Zen 4,
  1.16-2.21x per MobileNetV2 / EfficientNetB0 layer (3x3 over 32 channels at 112x112 0.210 ->
  0.095 ms; ``python -m benchmarks.depthwise``). Spans also run on rows whose windows cross the top or
  bottom padding, their rows of taps outside reading a block of zeros (one thread of a Zen 4, against
  those rows one pixel at a time: 7 x 7 x 960 20.9 -> 17.1 us, 14 x 14 x 576 1.13x, 14 x 14 x 384 1.11x,
  28-112 pixels 1.02-1.04x; MobileNetV2 at batch 1 1.005-1.022x). Near the left and right
  border, one pixel at a time, taps at constant offsets without bounds checks when the window
  lies inside the input, else in-bounds taps only; the epilogue as in the GEMM. Where most windows
  reach into the padding (5x5 windows on maps of 7-28 pixels), the input is first copied into a
  zero-padded buffer so that every pixel runs in spans (:func:`pad_first`).
- separable (depthwise then pointwise): a GEMM whose A tile is the depthwise result for the
  tile's pixels and channels (:class:`DepthwiseA`), never written to memory in full.
- other groupings: a direct kernel per pixel and group, vectorized over the group's outputs.

Pooling works like the depthwise kernel: per output pixel, vectors of channels, the window's
in-bounds taps combined by max or sum (the mean divides by the in-bounds count).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

from llvmlite import ir

from graphc.backends.llvm import switches
from graphc.backends.llvm.builder import Kernel, KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I64, i64, vector_constant
from graphc.backends.llvm.kernels.depthwise_flat import emit_flat_rows, flat_phases
from graphc.backends.llvm.kernels.gemm import (
    TARGET_ITEMS_COMPUTED,
    ASource,
    DenseA,
    kc_block,
    load_lanes,
    mc_block,
    store_lanes,
)
from graphc.backends.llvm.kernels.gemm_bf16 import I16, bf16_bits, bf16_input, copy_run_i16, gemm_for
from graphc.backends.llvm.kernels.gemm_items import THREADS_DIM
from graphc.backends.llvm.kernels.reduce import _larger
from graphc.ir import dims
from graphc.ir.dims import Dim
from graphc.ops.conv import spatial_attrs

# im2col K up to this is one block (3x3 over 128 channels: 1152), in tiles of at most
# TILE_FLOATS floats (256 KiB: 56 rows of 1152), so the partial sums never go through C
SINGLE_K = 1280
TILE_FLOATS = 65536


def single_k() -> int:
    """``SINGLE_K``, or ``GRAPHC_CONV_SINGLE_K`` where set (read when a kernel is built)."""
    return switches.CONV_SINGLE_K.integer(SINGLE_K)


class Geometry:
    """Window geometry of one convolution or pooling op."""

    def __init__(self, x: Tensor, out: Tensor, kernel: Sequence[int], strides, dilations, pads):
        self.nsp = x.rank - 2
        self.in_sp = list(x.shape[1:-1])
        self.out_sp = list(out.shape[1:-1])
        self.kernel = list(kernel)
        self.strides = list(strides)
        self.dilations = list(dilations)
        self.pads = [pb for pb, _ in pads]
        self.pads_after = [pa for _, pa in pads]
        self.taps = list(itertools.product(*[range(k) for k in self.kernel]))
        self.C = x.shape[-1]
        self.batch = x.shape[0]

    @property
    def unpadded_rows(self) -> bool:
        """No padding along the leading axes (a valid convolution, or one over a padded copy): every row of
        taps of an output pixel lies inside the input."""
        return all(p == 0 for p in self.pads[:-1] + self.pads_after[:-1])

    @property
    def static_sizes(self) -> bool:
        """Whether the input's and output's spatial sizes are known at build time."""
        return all(isinstance(d, int) for d in self.in_sp + self.out_sp)

    def offset_dim(self, tap) -> Dim:
        """Elements from a window's tap 0 to ``tap``: an int where the sizes are static, else an expression of
        the free dims."""
        delta: Dim = 0
        for t, d, size in zip(tap, self.dilations, self.in_sp):
            delta = dims.add(dims.mul(delta, size), t * d)
        return dims.mul(delta, self.C)

    def offset_value(self, k: Kernel, tap):
        """:meth:`offset_dim` as an i64 (a constant for static sizes; else computed once, in the kernel's
        entry, from the run-time sizes)."""
        return k.dim(self.offset_dim(tap))

    def inside_range(self, axis: int = -1) -> tuple[int, int]:
        """The output coordinates ``[lo, hi)`` along ``axis`` whose windows lie inside the input along it
        ((0, 0) where none do); sizes known at build time. The windows inside are one interval: a window
        moves by the stride per output, so it starts past the padding from some output on and ends in
        the input up to some output."""
        s, d, kd, p = self.strides[axis], self.dilations[axis], self.kernel[axis], self.pads[axis]
        inside = [o for o in range(self.out_sp[axis]) if o * s - p >= 0 and o * s - p + (kd - 1) * d < self.in_sp[axis]]
        return (inside[0], inside[-1] + 1) if inside else (0, 0)

    def static_tap_deltas(self) -> list[int]:
        """:meth:`offset_dim` of each of :attr:`taps`, in order, for sizes known at build time (ints: the
        constants of :meth:`tap_deltas`)."""
        return [self.offset_dim(tap) for tap in self.taps]

    def decode(self, k: Kernel, row):
        """(n, [o_1..o_d]) of output pixel ``row``."""
        b = k.b
        coords = []
        rem = row
        for d in reversed(self.out_sp):
            dv = k.dim(d)
            coords.append(b.srem(rem, dv))
            rem = b.sdiv(rem, dv)
        return rem, list(reversed(coords))

    def tap_offset(self, k: Kernel, n, outs, tap):
        """(valid, element offset of channel 0) of input pixel under ``tap`` for output ``outs``."""
        b = k.b
        valid = None
        off = n
        for o, t, s, d, p, size in zip(outs, tap, self.strides, self.dilations, self.pads, self.in_sp):
            tv = i64(t * d) if isinstance(t, int) else b.mul(t, i64(d))
            i = b.sub(b.add(b.mul(o, i64(s)), tv), k.dim(p))
            sz = k.dim(size)
            ok = b.and_(b.icmp_signed(">=", i, i64(0)), b.icmp_signed("<", i, sz))
            valid = ok if valid is None else b.and_(valid, ok)
            off = b.add(b.mul(off, sz), i)
        return valid, b.mul(off, k.dim(self.C))

    def window_inside(self, k: Kernel, n, outs):
        """(whether every tap of output ``outs`` is in the input, element offset of tap 0)."""
        b = k.b
        inside = None
        off = n
        for o, kd, s, d, p, size in zip(outs, self.kernel, self.strides, self.dilations, self.pads, self.in_sp):
            i = b.sub(b.mul(o, i64(s)), k.dim(p))
            last = b.add(i, i64((kd - 1) * d))
            ok = b.and_(b.icmp_signed(">=", i, i64(0)), b.icmp_signed("<", last, k.dim(size)))
            inside = ok if inside is None else b.and_(inside, ok)
            off = b.add(b.mul(off, k.dim(size)), i)
        return inside, b.mul(off, k.dim(self.C))

    def window_rows(self, k: Kernel, n, outs):
        """(whether the window of output ``outs`` starts inside the input along the last axis, the element
        offset of its tap 0 (possibly outside), and per row of taps -- the taps' leading coordinates, in
        the order of :attr:`taps` -- whether that row lies inside the input)."""
        b = k.b
        off = n
        for o, s, p, size in zip(outs, self.strides, self.pads, self.in_sp):
            off = b.add(b.mul(off, k.dim(size)), b.sub(b.mul(o, i64(s)), k.dim(p)))
        left = b.icmp_signed(">=", b.sub(b.mul(outs[-1], i64(self.strides[-1])), k.dim(self.pads[-1])), i64(0))
        rows = {}
        for lead in itertools.product(*[range(kd) for kd in self.kernel[:-1]]):
            ok = ir.Constant(ir.IntType(1), 1)
            for o, t, s, d, p, size in zip(outs, lead, self.strides, self.dilations, self.pads, self.in_sp):
                i = b.add(b.sub(b.mul(o, i64(s)), k.dim(p)), i64(t * d))
                ok = b.and_(ok, b.and_(b.icmp_signed(">=", i, i64(0)), b.icmp_signed("<", i, k.dim(size))))
            rows[lead] = ok
        return left, b.mul(off, k.dim(self.C)), rows

    def tap_deltas(self, k: Kernel) -> list:
        """Element offsets of each tap from tap 0 (i64 values; constants for static sizes)."""
        return [self.offset_value(k, tap) for tap in self.taps]


def copy_run(k: Kernel, dst, src, n, vw: int, zero: bool = False) -> None:
    """Copy (or zero) ``n`` floats (n: an int or an i64 value)."""
    fb, b = k.fn, k.b
    vt = ir.VectorType(F32, vw)
    z = vector_constant(vt, 0.0)
    if isinstance(n, int) and n <= 2 * vw:
        for j in range(0, n, vw):
            valid = min(vw, n - j)
            v = z if zero else load_lanes(b, b.gep(src, [i64(j)], source_etype=F32), vw, valid)
            store_lanes(b, v, b.gep(dst, [i64(j)], source_etype=F32), vw, valid)
        return
    nv = k.dim(n)
    full = b.mul(b.sdiv(nv, i64(vw)), i64(vw))
    with fb.loop(0, full, vw, name="cp") as j:
        v = z if zero else b.load(b.gep(src, [j], source_etype=F32), typ=vt, align=4)
        b.store(v, b.gep(dst, [j], source_etype=F32), align=4)
    rest = b.sub(nv, full)
    with b.if_then(b.icmp_signed(">", rest, i64(0))):
        v = z if zero else load_lanes(b, b.gep(src, [full], source_etype=F32), vw, rest)
        store_lanes(b, v, b.gep(dst, [full], source_etype=F32), vw, rest)


def reads_in_place(kernel, strides, pads) -> bool:
    """A 1x1 convolution with unit strides and no padding: its GEMM reads the input as its A matrix."""
    return all(k == 1 for k in kernel) and all(s == 1 for s in strides) and all(p == 0 for pair in pads for p in pair)


def small_im2col(C: int, taps: int) -> bool:
    """Few channels in one K block: every (tap, channel) of an im2col row unrolled (see ``_fill_small``)."""
    K = C * taps
    return C <= 8 and (K <= single_k() or K <= kc_block())


class Im2colA(ASource):
    """Rows of the im2col matrix of ``x``: row = output pixel, column = (tap, channel).

    K blocks hold whole taps when C fits a block (else channel ranges of one tap), so a tile
    row is a few contiguous channel runs: copied from the input, or zeros where the tap falls
    in the padding."""

    def __init__(self, x: Tensor, geo: Geometry, vw: int):
        self.x, self.geo, self.vw = x, geo, vw
        self.x_bf16: Tensor | None = None  # the bf16 GEMM's copy of x in bf16 (see fill_converted)
        self._rows = 0  # rows of the tiles read in place (see direct_stride)
        self._tables: dict[int, ir.Value] = {}  # per kernel function: the runs' offsets (_offsets_table)

    def block(self, K: int) -> int:
        """All of K when it is at most ``SINGLE_K`` (the tile then holds fewer rows, see
        :meth:`block_rows`): no partial sums through C, and the epilogue on the only pass;
        otherwise whole taps per block when C fits KC, as few blocks as that allows, evened out
        (C=256, 9 taps: nine blocks of one tap)."""
        C, kc = self.geo.C, kc_block()
        if K <= single_k():
            return K
        if C > kc:
            return kc
        taps = len(self.geo.taps)
        n = -(-taps // (kc // C))
        return -(-taps // n) * C

    def block_rows(self, kb: int) -> int:
        return max(1, min(mc_block(), TILE_FLOATS // (kb + 16)))

    def _runs(self, K: int) -> tuple[str, int, list[int]] | None:
        """How a K block of :meth:`block` splits into runs that are contiguous in the input for every
        output pixel: ("rows", kw*C, offsets) when K is one block and the last spatial axis is not
        dilated (a kernel row's taps read consecutive pixels), ("taps", C, offsets) for blocks of whole
        taps, ("channels", 0, offsets) for channel ranges of one tap (whole blocks per tap); None where
        the channels are not known at build time. Offsets (elements from the window's corner) per run: ints,
        or expressions of the free dims where the spatial sizes are free."""
        geo = self.geo
        if not isinstance(geo.C, int):
            return None
        C, offset = geo.C, geo.offset_dim
        KB = self.block(K)
        if KB == K and geo.dilations[-1] == 1:
            lead = itertools.product(*[range(kd) for kd in geo.kernel[:-1]])
            return "rows", geo.kernel[-1] * C, [offset((*t, 0)) for t in lead]
        if KB % C == 0:
            return "taps", C, [offset(t) for t in geo.taps]
        if C % KB == 0:
            return "channels", 0, [offset(t) for t in geo.taps]
        return None

    def direct_stride(self, rows: int) -> int | None:
        """Rows of a tile are consecutive output pixels: where they lie in one output row with their windows
        inside the input, row r of every run is ``r * C * stride`` elements past row 0's."""
        if self._runs(self.geo.C * len(self.geo.taps)) is None:
            return None
        self._rows = rows
        return self.geo.C * self.geo.strides[-1]

    def direct_tile(self, k: Kernel, i, k0, kc) -> tuple:
        geo, b = self.geo, k.b
        C = geo.C
        kind, length, offsets = self._runs(C * len(geo.taps))
        n, outs = geo.decode(k, i)
        inside, corner = geo.window_inside(k, n, outs)
        # the last pixel of the tile: in the same output row, its window inside along the last axis
        last = b.add(outs[-1], i64(self._rows - 1))
        right = b.add(b.sub(b.mul(last, i64(geo.strides[-1])), k.dim(geo.pads[-1])),
                      i64((geo.kernel[-1] - 1) * geo.dilations[-1]))
        ok = b.and_(inside, b.and_(b.icmp_signed("<", last, k.dim(geo.out_sp[-1])),
                                   b.icmp_signed("<", right, k.dim(geo.in_sp[-1]))))
        table = self._offsets_table(k, offsets)
        if kind == "rows":
            first, segments, seg_len, skip = i64(0), i64(len(offsets)), i64(length), i64(0)
        elif kind == "taps":
            first, segments, seg_len, skip = b.sdiv(k0, i64(C)), b.sdiv(kc, i64(C)), i64(C), i64(0)
        else:
            first, segments, seg_len, skip = b.sdiv(k0, i64(C)), i64(1), kc, b.srem(k0, i64(C))
        a_ptr = b.gep(k.ptr(self.x), [b.add(corner, skip)], source_etype=F32)
        deltas = b.gep(table, [i64(0), first], source_etype=ir.ArrayType(ir.IntType(64), len(offsets)))
        return ok, a_ptr, deltas, segments, seg_len

    def _offsets_table(self, k: Kernel, offsets: list) -> ir.Value:
        """The runs' offsets as an i64 array: a constant of the module (one per convolution), or where they
        are expressions of free dims, an array of the kernel's stack filled once in its entry."""
        key = id(k.fn)
        if key not in self._tables:
            typ = ir.ArrayType(ir.IntType(64), len(offsets))
            if all(isinstance(o, int) for o in offsets):
                table = ir.GlobalVariable(k.kb.module, typ, name=k.kb.unique("conv_runs"))
                table.global_constant = True
                table.linkage = "internal"
                table.initializer = ir.Constant(typ, [i64(o) for o in offsets])
            else:
                values = [k.dim(o) for o in offsets]  # computed in the entry block
                entry = k.fn.entry
                table = entry.alloca(typ, name="conv_runs")
                for i, v in enumerate(values):
                    entry.store(v, entry.gep(table, [i64(0), i64(i)]))
            self._tables[key] = table
        return self._tables[key]

    def _small(self) -> bool:
        geo = self.geo
        return small_im2col(geo.C, len(geo.taps))

    def fill(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, *, kb: int) -> None:
        if self._small():
            self._fill_small(k, row0, row_end, tile, stride)
            return
        self._fill_runs(k, row0, row_end, k0, kc, tile, stride)

    @property
    def fills_converted(self) -> bool:
        return not self._small()

    def fill_converted(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, copy: Callable, etype, *,
                       kb: int) -> None:
        if self.x_bf16 is not None:  # runs of the input already in bf16: copied, not converted
            self._fill_runs(k, row0, row_end, k0, kc, tile, stride, copy_run_i16, etype, self.x_bf16, I16)
            return
        self._fill_runs(k, row0, row_end, k0, kc, tile, stride, copy, etype)

    def _fill_small(self, k: Kernel, row0, row_end, tile, stride: int) -> None:
        """Few channels, one K block: per kernel row, its taps' ``kw * C`` floats (consecutive in the input
        without dilation along the row) copied as vectors where the row of taps lies inside the input;
        elsewhere every (tap, channel) unrolled, branch-free (a tap in the padding loads from a safe
        address and selects 0). Only the tiles the micro-kernel cannot read in place are filled (those
        crossing an output row's end or the padding): one thread of a Zen 4, MobileNetV2's stem (3x3 over 3
        channels, stride 2, 224 x 224) 0.226 -> 0.222 ms, ResNet50's (7x7) 2.186 -> 2.159 ms."""
        geo, b, fb = self.geo, k.b, k.fn
        C, kw = geo.C, geo.kernel[-1]
        px = k.ptr(self.x)
        zero = ir.Constant(F32, 0.0)

        def one_by_one(trow, n, outs, taps) -> None:
            for t, tap in taps:
                valid, off = geo.tap_offset(k, n, outs, tap)
                safe = b.select(valid, off, i64(0))
                for c in range(C):
                    v = b.load(b.gep(px, [b.add(safe, i64(c))], source_etype=F32), typ=F32, align=4)
                    b.store(b.select(valid, v, zero), b.gep(trow, [i64(t * C + c)], source_etype=F32), align=4)

        rows_of_taps = geo.dilations[-1] == 1 and kw > 1
        with fb.loop(row0, row_end, name="im2col") as row:
            n, outs = geo.decode(k, row)
            trow = b.gep(tile, [b.mul(b.sub(row, row0), i64(stride))], source_etype=F32)
            for t0 in range(0, len(geo.taps), kw if rows_of_taps else len(geo.taps)):
                if not rows_of_taps:
                    one_by_one(trow, n, outs, list(enumerate(geo.taps)))
                    break
                # the taps of one kernel row: t0 .. t0 + kw
                taps = list(enumerate(geo.taps))[t0:t0 + kw]
                first_ok, first = geo.tap_offset(k, n, outs, taps[0][1])
                last_ok, _ = geo.tap_offset(k, n, outs, taps[-1][1])
                with b.if_else(b.and_(first_ok, last_ok)) as (then, otherwise):
                    with then:
                        src = b.gep(px, [first], source_etype=F32)
                        dst = b.gep(trow, [i64(t0 * C)], source_etype=F32)
                        for j in range(0, kw * C, self.vw):
                            lanes = min(self.vw, kw * C - j)
                            v = load_lanes(b, b.gep(src, [i64(j)], source_etype=F32), self.vw, lanes)
                            store_lanes(b, v, b.gep(dst, [i64(j)], source_etype=F32), self.vw, lanes)
                    with otherwise:
                        one_by_one(trow, n, outs, taps)

    def _fill_runs(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, copy: Callable = copy_run,
                   etype=F32, src: Tensor | None = None, src_etype=F32) -> None:
        """The tile rows as channel runs, each ``copy(k, dst, src, n, vw, zero)``'d from the input
        (into a tile of ``etype`` elements; from ``src``, x in ``src_etype`` elements, when given)."""
        geo, b, fb = self.geo, k.b, k.fn
        C = geo.C
        px = k.ptr(src if src is not None else self.x)
        end = b.add(k0, kc)
        with fb.loop(row0, row_end, name="im2col") as row:
            n, outs = geo.decode(k, row)
            trow = b.gep(tile, [b.mul(b.sub(row, row0), i64(stride))], source_etype=etype)
            pos = fb.var(ir.IntType(64), name="pos")
            pos.set(k0)
            cond = fb.block("seg.cond")
            body = fb.block("seg.body")
            done = fb.block("seg.end")
            b.branch(cond)
            b.position_at_end(cond)
            cur = pos.get()
            b.cbranch(b.icmp_signed("<", cur, end), body, done)
            b.position_at_end(body)
            tap = b.sdiv(cur, i64(C))
            c0 = b.srem(cur, i64(C))
            coords = []
            rem = tap
            for kd in reversed(geo.kernel):
                coords.append(b.srem(rem, i64(kd)))
                rem = b.sdiv(rem, i64(kd))
            coords.reverse()
            valid, off = geo.tap_offset(k, n, outs, coords)
            one_tap = fb.min_(b.sub(i64(C), c0), b.sub(end, cur))
            if geo.dilations[-1] == 1:
                # the rest of this kernel row is contiguous in the input (consecutive taps along
                # the last spatial axis read consecutive pixels) when its last tap is in bounds too
                kw = geo.kernel[-1]
                left = b.sub(i64(kw - 1), coords[-1])
                last_w = b.add(b.sub(b.add(b.mul(outs[-1], i64(geo.strides[-1])), coords[-1]),
                                     k.dim(geo.pads[-1])), left)
                row_ok = b.and_(valid, b.icmp_signed("<", last_w, k.dim(geo.in_sp[-1])))
                run = fb.min_(b.sub(b.mul(b.add(left, i64(1)), i64(C)), c0), b.sub(end, cur))
                length = b.select(row_ok, run, one_tap)
            else:
                length = one_tap
            dst = b.gep(trow, [b.sub(cur, k0)], source_etype=etype)
            with b.if_else(valid) as (then, otherwise):
                with then:
                    copy(k, dst, b.gep(px, [b.add(off, c0)], source_etype=src_etype), length, self.vw)
                with otherwise:
                    copy(k, dst, None, length, self.vw, zero=True)
            pos.set(b.add(cur, length))
            b.branch(cond)
            b.position_at_end(done)


class DepthwiseA(ASource):
    """Rows of the depthwise convolution of ``x`` by ``dw`` (the A of a separable conv)."""

    def __init__(self, x: Tensor, dw: Tensor, geo: Geometry, mult: int, vw: int):
        self.x, self.dw, self.geo, self.mult, self.vw = x, dw, geo, mult, vw

    def items_per_thread(self, n: int) -> int:
        """One where the depthwise rows cost a sixteenth of the product or more (``n`` at most 16 times the
        taps): each chunk of columns computes them again, which for a separable convolution of few rows
        costs more than what a second item per thread evens out (separable_conv_bn at batch 1 on two
        threads, 12 x 12 x 64 into 128: 0.0486 -> 0.0442 ms, on one 0.0721 -> 0.0710). Two where they are
        cheap, so that a thread slowed down by another process is helped (stereo_xception on two threads,
        with one item for every separable product: 129 ms against 114). On one thread the split aims for one
        item whatever this says (``gemm_items.computed_items``). ``GRAPHC_SEPARABLE_ITEMS`` sets it for
        measuring."""
        cheap = n > 16 * len(self.geo.taps)  # a row's depthwise: taps x K FMAs, its product K x n
        return switches.SEPARABLE_ITEMS.integer(TARGET_ITEMS_COMPUTED if cheap else 1)

    def fill(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, *, kb: int) -> None:
        b = k.b
        self._fill(k, row0, row_end, k0, kc, tile, stride, kb, F32,
                   lambda trow, j, val, valid: store_lanes(b, val, b.gep(trow, [j], source_etype=F32), self.vw, valid))

    @property
    def fills_converted(self) -> bool:
        return self.vw == 16  # the bf16 GEMM's 16-lane vectors

    def fill_converted(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, copy: Callable, etype, *,
                       kb: int) -> None:
        """The depthwise results rounded to bf16 as they are stored (the last vector's lanes past the
        channels are zeros: its loads are masked)."""
        b = k.b
        self._fill(k, row0, row_end, k0, kc, tile, stride, kb, etype,
                   lambda trow, j, val, valid: b.store(bf16_bits(b, val), b.gep(trow, [j], source_etype=etype),
                                                       align=2))

    def _fill(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, kb: int, etype, store: Callable) -> None:
        geo, b = self.geo, k.b
        px, pw = k.ptr(self.x), k.ptr(self.dw)
        n_out = geo.C * self.mult

        def emit(row, j, val, valid):
            trow = b.gep(tile, [b.mul(b.sub(row, row0), i64(stride))], source_etype=etype)
            store(trow, j, val, valid)

        # every K block whole vectors when the driver's block and the total are: no code for a rest, as
        # in the depthwise kernel
        whole = isinstance(n_out, int) and n_out % self.vw == 0 and kb % self.vw == 0
        _depthwise_rows(k, px, pw, geo, row0, row_end, self.mult, n_out, k0, kc, self.vw, emit, whole=whole)


SPANS_ENV = switches.DEPTHWISE_SPANS.name


def spans_mode() -> str:
    """``GRAPHC_DEPTHWISE_SPANS``: "1" (default) or "0" (one pixel at a time everywhere, no flat runs of a few
    channels either, for measuring the spans: ``benchmarks/depthwise``); part of the build cache key."""
    return switches.DEPTHWISE_SPANS.value()


def span_pixels(geo: Geometry, mult: int, registers: int) -> tuple[int, ...]:
    """Output pixels of one row that the depthwise kernel computes together: the span, then shorter spans
    for what is left of a row's interior, longest first; (1,): one at a time.

    One pixel at a time, every FMA needs two loads (the input and the weight vector), so the
    kernel runs at the load ports' rate, half the FMA peak at best. A span of P neighbours in a
    row shares each weight vector among P FMAs and, at unit stride, each input vector among up
    to kw of them (a 3x3 span of 8: 9 + 30 loads for 72 FMAs), and its P accumulator chains
    cover the FMA latency. Spans lie in the row's interior (windows inside the input), so the
    span is at most the interior's width (5 of a 7-pixel row under a 3x3 window with padding),
    and the interior's remainder gets a span of its own. Spans need the channels at build time and one
    input channel per output (mult 1). Where the spatial sizes are free (a model over images of any size),
    the interior's width is known only at run time: the kernel then has spans of 8, 4 and 2 pixels (and 3
    where no row of taps reaches into the padding) and takes the longest that fits (a row of 7 pixels: 4 +
    3; of 14: 8 + 4 + 2), its rows of taps at offsets computed once from the sizes. On a Zen 4, one
    thread, against one pixel at a time over the same sizes (``python -m benchmarks.depthwise
    --free-sizes``, ``2026-12-07-depthwise-free-sizes.md``): 3x3 over 14 x 14 x 576 77 -> 34 us (static
    sizes: 34), 5x5 over 28 x 28 x 120 125 -> 59 us (58), 5x5 over 7 x 7 x 1152 113 -> 49 us (40);
    MobileNetV3Large, whose input is (None, None, 3), 5.8 -> 5.3 ms."""
    if spans_mode() == "0":
        return (1,)
    if mult != 1 or not isinstance(geo.C, int):
        return (1,)
    widest = 8 if registers >= 32 else 4
    if not geo.static_sizes:  # (a span of 3 where its code is not doubled for rows of taps in the padding)
        return tuple(p for p in ((8, 4, 3, 2) if geo.unpadded_rows else (8, 4, 2)) if p <= widest)
    lo, hi = geo.inside_range()
    interior = hi - lo
    span = min(widest, interior)
    if span < 2:
        return (1,)
    rest = interior % span
    return (span, rest) if rest > 1 else (span,)


def _depthwise_rows(k: Kernel, px, pw, geo: Geometry, start, end, mult: int, n_out: int, c_lo, count, vw: int,
                    emit: Callable, *, whole: bool = False) -> None:
    """Depthwise outputs ``c_lo .. c_lo+count`` of output pixels ``start .. end``; ``emit(row, j,
    vector, valid_lanes)`` per vector, row the pixel (i64), j (i64) relative to c_lo. Spans of
    :func:`span_pixels` pixels where they fit in the row and lie inside the input, else one pixel.
    ``whole``: ``count`` is a multiple of ``vw`` (see :func:`vector_chunks`)."""
    fb, b = k.fn, k.b
    spans = span_pixels(geo, mult, k.kb.target.num_vector_registers)
    P = spans[0]
    if P == 1:
        with fb.loop(start, end, name="dwrow") as row:
            n, outs = geo.decode(k, row)
            _depthwise_pixel(k, px, pw, geo, n, outs, mult, n_out, c_lo, count, vw,
                             lambda j, val, valid, row=row: emit(row, j, val, valid), whole=whole)
        return
    end = k.dim(end)
    pos = fb.var(I64, name="dwpos")
    pos.set(k.dim(start))
    cond, body, done = fb.block("dw.cond"), fb.block("dw.body"), fb.block("dw.end")
    b.branch(cond)
    b.position_at_end(cond)
    b.cbranch(b.icmp_signed("<", pos.get(), end), body, done)
    b.position_at_end(body)
    row = pos.get()
    n, outs = geo.decode(k, row)
    left, corner, rows_ok = geo.window_rows(k, n, outs)
    rows_inside = functools.reduce(b.and_, rows_ok.values())  # every row of taps: the window inside vertically
    s, d, kw, pad = geo.strides[-1], geo.dilations[-1], geo.kernel[-1], geo.pads[-1]
    unpadded = geo.unpadded_rows  # a span's rows of taps all inside: one version of its code, not two
    zeros = _zero_rows(k, geo, P, n_out, vw) if geo.nsp > 1 and not unpadded else None
    # each row of taps' first tap from tap 0 (run-time values where the sizes are free: computed once here)
    row_offsets = {tuple(tap[:-1]): geo.offset_value(k, (*tap[:-1], 0)) for tap in geo.taps}
    in_width, out_width = k.dim(geo.in_sp[-1]), k.dim(geo.out_sp[-1])

    def fits(span: int):
        """Whether the span of ``span`` pixels from this one lies inside the input along the row, and in the
        range (its rows of taps may cross the padding: those read zeros)."""
        last_in = b.sub(b.add(b.mul(outs[-1], i64(s)), i64((span - 1) * s + (kw - 1) * d)), k.dim(pad))
        return b.and_(b.and_(left, b.icmp_signed("<", last_in, in_width)),
                      b.and_(b.icmp_signed("<=", b.add(outs[-1], i64(span)), out_width),
                             b.icmp_signed("<=", b.add(row, i64(span)), end)))

    def span_of(span: int):
        def run(rows):
            _depthwise_span(k, px, pw, geo, corner, span, n_out, c_lo, count, vw,
                            lambda p, j, val, valid: emit(b.add(row, i64(p)), j, val, valid), row_offsets, rows,
                            zeros, whole=whole)

        if geo.nsp == 1 or unpadded:  # every row of taps inside: no code for rows in the padding
            run(None)
        else:  # rows of taps all inside (most rows): the loads at constant offsets from one pointer
            with b.if_else(rows_inside) as (then, otherwise):
                with then:
                    run(None)
                with otherwise:
                    run(rows_ok)
        pos.set(b.add(row, i64(span)))

    def one():
        # a pixel whose window lies inside the input along the row computes as a span's pixel does (one
        # chain, taps in order, the taps outside adding 0 * w), so that where the item boundaries cut a
        # span the bits are the same
        _depthwise_pixel(k, px, pw, geo, n, outs, mult, n_out, c_lo, count, vw,
                         lambda j, val, valid: emit(row, j, val, valid), span_order=fits(1), whole=whole)
        pos.set(b.add(row, i64(1)))

    def longest(sizes):
        """The longest span of ``sizes`` that fits here, else one pixel."""
        if not sizes:
            one()
            return
        with b.if_else(fits(sizes[0])) as (then, otherwise):
            with then:
                span_of(sizes[0])
            with otherwise:
                longest(sizes[1:])

    longest(spans)
    b.branch(cond)
    b.position_at_end(done)


def _depthwise_span(k: Kernel, px, pw, geo: Geometry, corner, P: int, n_out: int, c_lo, count, vw: int,
                    emit: Callable, row_offsets: dict, rows_ok: dict | None = None, zeros=None, *,
                    whole: bool = False) -> None:
    """P neighbouring output pixels of one row whose windows lie inside the input along the row
    (corner: the first one's tap 0): per vector of channels, each weight vector loaded once for the P
    pixels and each input vector once for every pixel whose window holds it; ``emit(p, j, vector,
    valid)``. ``row_offsets``: each row of taps' first tap from tap 0 (per the taps' leading
    coordinates). A row of taps outside the input (``rows_ok``) reads from ``zeros`` instead, so that it
    adds 0 * w as a tap in the padding does one pixel at a time."""
    b = k.b
    vt = ir.VectorType(F32, vw)
    zero = vector_constant(vt, 0.0)
    C = geo.C
    step = geo.strides[-1] * C
    c_lo, cnt = k.dim(c_lo), k.dim(count)
    # with static sizes and every row of taps inside, one pointer and every load at a constant offset from
    # it; else per row of taps where it reads (the input, or zeros), the loads along it at constant offsets
    one_pointer = rows_ok is None and geo.static_sizes
    row_of = {}
    for tap in geo.taps if not one_pointer else ():
        lead = tuple(tap[:-1])
        if lead not in row_of:
            at = b.gep(px, [b.add(corner, row_offsets[lead])], source_etype=F32)
            if rows_ok is not None:
                at = b.select(rows_ok[lead], at, b.gep(zeros, [i64(0), i64(0)], source_etype=zeros.value_type))
            row_of[lead] = at

    deltas = geo.static_tap_deltas() if one_pointer else None

    def chunk(j0, valid):
        col = b.add(c_lo, j0)
        if one_pointer:
            base = b.gep(px, [b.add(corner, col)], source_etype=F32)
            where = [(None, delta) for delta in deltas]
        else:
            bases = {lead: b.gep(at, [col], source_etype=F32) for lead, at in row_of.items()}
            where = [(tuple(tap[:-1]), tap[-1] * geo.dilations[-1] * C) for tap in geo.taps]
        loaded: dict[tuple, ir.Value] = {}
        accs = [zero] * P
        for t, (lead, delta) in enumerate(where):
            wv = load_lanes(b, b.gep(pw, [b.add(i64(t * n_out), col)], source_etype=F32), vw, valid)
            for p in range(P):
                off = delta + p * step
                xv = loaded.get((lead, off))
                if xv is None:
                    at = b.gep(base if lead is None else bases[lead], [i64(off)], source_etype=F32)
                    xv = loaded[(lead, off)] = load_lanes(b, at, vw, valid)
                accs[p] = k.m.fma(xv, wv, accs[p])
        for p in range(P):
            emit(p, j0, accs[p], valid)

    vector_chunks(k, cnt, vw, chunk, whole=whole)


def _zero_rows(k: Kernel, geo: Geometry, P: int, n_out: int, vw: int) -> ir.GlobalVariable:
    """Zeros for a span's row of taps outside the input to read: as many floats as such a row's loads
    reach (every channel, P pixels, the window's width, a vector past the last channel)."""
    count = n_out + (P - 1) * geo.strides[-1] * geo.C + (geo.kernel[-1] - 1) * geo.dilations[-1] * geo.C + vw
    made = k.kb.module.globals.get(f"dw_zero_rows_{count}")  # one per size in a module
    if made is not None:
        return made
    typ = ir.ArrayType(F32, count)
    zeros = ir.GlobalVariable(k.kb.module, typ, name=f"dw_zero_rows_{count}")
    zeros.global_constant = True  # (a module split into parts for parallel emission copies constants only)
    zeros.linkage = "internal"
    zeros.initializer = ir.Constant(typ, None)
    zeros.align = 64
    return zeros


def vector_chunks(k: Kernel, count, vw: int, chunk: Callable, *, whole: bool = False) -> None:
    """``chunk(j0, valid)`` for each vector of ``count`` channels: whole vectors in a run-time loop
    (``valid`` = vw), then the rest (``valid`` an i64 value) if any. ``whole``: the caller knows ``count`` to
    be a multiple of ``vw`` (no code for a rest: the unrolled depthwise spans are the bulk of a depthwise
    model's code, EfficientNetB0's 6 of 10 MB of IR with a rest)."""
    fb, b = k.fn, k.b
    if whole:
        with fb.loop(0, count, vw, name="dwc") as j0:
            chunk(j0, vw)
        return
    full = b.mul(b.sdiv(count, i64(vw)), i64(vw))
    with fb.loop(0, full, vw, name="dwc") as j0:
        chunk(j0, vw)
    rest = b.sub(count, full)
    with b.if_then(b.icmp_signed(">", rest, i64(0))):
        chunk(full, rest)


def _depthwise_pixel(k: Kernel, px, pw, geo: Geometry, n, outs, mult: int, n_out: int, c_lo, count, vw: int,
                     emit: Callable, *, span_order: bool = False, whole: bool = False) -> None:
    """Depthwise outputs ``c_lo .. c_lo+count`` of one pixel (ints or i64 values); ``emit(j, vector,
    valid_lanes)`` per vector, j (i64) relative to c_lo. ``span_order`` (a bool, or an i1 known at run
    time: whether a span could have computed the pixel): the window is summed as :func:`_depthwise_span`
    sums it (one FMA chain, a tap outside adding 0 * w), else in three chains (inside: one)."""
    b = k.b
    c_lo, cnt = k.dim(c_lo), k.dim(count)
    # a window inside the input (most pixels): taps at constant distances from its first one,
    # no bounds checks
    inside, corner = geo.window_inside(k, n, outs)
    with b.if_else(inside) as (then, otherwise):
        with then:
            taps = [(None, b.add(corner, delta)) for delta in geo.tap_deltas(k)]
            _depthwise_channels(k, px, pw, taps, mult, n_out, c_lo, cnt, vw, emit, chains=1 if span_order else 3,
                                whole=whole)
        with otherwise:
            # taps in the padding read a safe address (offset 0) and contribute through a zero
            # weight: no branch in the channel loop
            taps = []
            for tap in geo.taps:
                ok, off = geo.tap_offset(k, n, outs, tap)
                taps.append((ok, b.select(ok, off, i64(0))))
            if isinstance(span_order, bool):
                _depthwise_channels(k, px, pw, taps, mult, n_out, c_lo, cnt, vw, emit, chains=1 if span_order else 3,
                                whole=whole)
            else:
                with b.if_else(span_order) as (one_chain, three):
                    with one_chain:
                        _depthwise_channels(k, px, pw, taps, mult, n_out, c_lo, cnt, vw, emit, chains=1, whole=whole)
                    with three:
                        _depthwise_channels(k, px, pw, taps, mult, n_out, c_lo, cnt, vw, emit, whole=whole)


def _depthwise_channels(k: Kernel, px, pw, taps, mult: int, n_out: int, c_lo, cnt, vw: int,
                        emit: Callable, *, chains: int = 3, whole: bool = False) -> None:
    """The channel loop of :func:`_depthwise_pixel` over ``taps`` ((valid or None, offset) each), their
    products summed in ``chains`` independent FMA chains (a 3x3 window in 3: one per kernel row)."""
    b = k.b
    vt = ir.VectorType(F32, vw)
    zero = vector_constant(vt, 0.0)

    splits = min(chains, len(taps))

    def chunk(j0, valid):
        accs = [zero] * splits
        col = b.add(c_lo, j0)
        for t, (ok, off) in enumerate(taps):
            wv = load_lanes(b, b.gep(pw, [b.add(i64(t * n_out), col)], source_etype=F32), vw, valid)
            if mult == 1:
                xv = load_lanes(b, b.gep(px, [b.add(off, col)], source_etype=F32), vw, valid)
            else:
                xv = vector_constant(vt, 0.0)
                limit = i64(valid) if isinstance(valid, int) else valid
                for lane in range(vw):
                    c = b.sdiv(b.add(col, i64(lane)), i64(mult))
                    c = b.select(b.icmp_signed("<", i64(lane), limit), c, i64(0))
                    s = b.load(b.gep(px, [b.add(off, c)], source_etype=F32), typ=F32)
                    xv = b.insert_element(xv, s, ir.Constant(ir.IntType(32), lane))
            if ok is not None:
                xv = b.select(ok, xv, zero)  # (not the weight: an inf or NaN input must not leak in)
            accs[t % splits] = k.m.fma(xv, wv, accs[t % splits])
        total = accs[0]
        for a in accs[1:]:
            total = b.fadd(total, a)
        emit(j0, total, valid)

    vector_chunks(k, cnt, vw, chunk, whole=whole)


def _epilogue(k: Kernel, val, col, row_off, valid, vw, pbias, activation, pres, post_activation):
    b, m = k.b, k.m
    if pbias is not None:
        val = b.fadd(val, load_lanes(b, b.gep(pbias, [k.dim(col)], source_etype=F32), vw, valid))
    if activation is not None:
        val = activation(m, val)
    if pres is not None:
        val = b.fadd(val, load_lanes(b, b.gep(pres, [b.add(row_off, k.dim(col))], source_etype=F32), vw, valid))
    if post_activation is not None:
        val = post_activation(m, val)
    return val


def _pixels(geo: Geometry):
    return dims.mul(geo.batch, dims.product(geo.out_sp))


def emit_depthwise(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, geo: Geometry, *, bias, activation,
                   residual, post_activation) -> None:
    mult = w.shape[-1] // geo.C
    n_out = w.shape[-1]
    vw = kb.target.gemm_vw
    k = kb.kernel("depthwise")
    b = k.b
    px, pw, po = k.ptr(x), k.ptr(w), k.ptr(out)
    pbias = k.ptr(bias) if bias is not None else None
    pres = k.ptr(residual) if residual is not None else None

    def emitter(c_lo):
        """The epilogue and store of pixel ``row``'s vector ``j`` of the channels from ``c_lo``."""
        def emit(row, j, val, valid):
            row_off, col = b.mul(row, i64(n_out)), b.add(c_lo, j)
            val = _epilogue(k, val, col, row_off, valid, vw, pbias, activation, pres, post_activation)
            store_lanes(b, val, b.gep(po, [b.add(row_off, col)], source_etype=F32), vw, valid)
        return emit

    phases = flat_phases(geo, mult, vw) if spans_mode() == "1" else 0
    if phases:  # a few channels: each row's interior as one flat run of lanes (depthwise_flat)
        emit = emitter(i64(0))
        emit_flat_rows(k, px, w, bias, po, geo, vw, phases, activation=activation, pres=pres,
                       post_activation=post_activation,
                       rows=lambda start, end: _depthwise_rows(k, px, pw, geo, start, end, mult, n_out, 0, n_out,
                                                               vw, emit))
        width = geo.out_sp[-1]
        kb.launch(k, dims.floordiv(_pixels(geo), width), 2 * width * n_out * len(geo.taps))
        return
    chunks = depthwise_chunks(geo, mult, n_out, vw, kb.target.num_vector_registers)
    whole = n_out % vw == 0  # every item's channels whole vectors: its chunks start and end on them
    if chunks is None:  # pixels as work items
        _depthwise_rows(k, px, pw, geo, k.begin, k.end, mult, n_out, 0, n_out, vw, emitter(i64(0)), whole=whole)
        kb.launch(k, _pixels(geo), 2 * n_out * len(geo.taps))
        return
    # work items: (row of output pixels, chunk of whole channel vectors), so that a row's spans stay whole
    width, nvec = geo.out_sp[-1], -(-n_out // vw)
    nchunks = k.dim(chunks)
    with k.fn.loop(k.begin, k.end, name="dwitem") as item:
        row, cc = b.sdiv(item, nchunks), b.srem(item, nchunks)
        c_lo = b.mul(b.sdiv(b.mul(cc, i64(nvec)), nchunks), i64(vw))
        c_hi = k.fn.min_(b.mul(b.sdiv(b.mul(b.add(cc, i64(1)), i64(nvec)), nchunks), i64(vw)), i64(n_out))
        first = b.mul(row, k.dim(width))
        _depthwise_rows(k, px, pw, geo, first, b.add(first, k.dim(width)), mult, n_out, c_lo, b.sub(c_hi, c_lo), vw,
                        emitter(c_lo), whole=whole)
    rows = dims.floordiv(_pixels(geo), width)
    # the per-item cost as on 2 threads (it only gates splitting); where the sizes are free, a row of one span
    # of pixels and every channel
    static = dims.symbols(chunks) <= {THREADS_DIM}
    on_two = dims.evaluate(chunks, {THREADS_DIM: 2}) if static else 1
    width_cost = width if isinstance(width, int) else span_pixels(geo, mult, kb.target.num_vector_registers)[0]
    kb.launch(k, dims.mul(rows, chunks), 2 * width_cost * -(-n_out // on_two) * len(geo.taps))


# work items per image and thread the depthwise kernel aims for: the runtime's 4 claim blocks per thread
DEPTHWISE_ITEMS = 4
DEPTHWISE_ITEMS_ENV = switches.DEPTHWISE_ITEMS.name


def depthwise_chunks(geo: Geometry, mult: int, n_out: int, vw: int, registers: int) -> Dim | None:
    """How the depthwise kernel's work is split: None for one item per output pixel, else the number of
    channel chunks (whole vectors) of each row of output pixels, one item per (row, chunk): an
    expression of the instance's thread count.

    Where the kernel computes spans of a row's pixels together (:func:`span_pixels`), items of single
    pixels let a thread's share end inside a row, which cut its spans short (and made the results depend
    on the thread count), and a small image has too few rows for the threads: its rows are split into
    channel chunks until an image has ``DEPTHWISE_ITEMS`` items per thread (on 2 threads: 7 x 7 pixels
    in 2 chunks, from 8 rows on whole rows; on one thread whole rows from 4 rows on). On Zen 4, per
    layer on 2 threads against items of pixels: 7 x 7 x 960 (3x3) 1.56x, 14 x 14 x 576 1.10x, 14 x 14 x 480
    (5x5) 1.06x, 28 x 28 x 240 (5x5) 1.05x, 7 x 7 x 1152 (5x5) 1.00x; one thread 0.98-1.01x.
    Chunks on one thread too cost 5x5 windows on 7 x 7 pixels 3-7 % (mostly border pixels, whose set-up
    is repeated per chunk). ``GRAPHC_DEPTHWISE_ITEMS=pixels`` keeps one item per pixel (for measuring)."""
    mode = switches.DEPTHWISE_ITEMS.value()
    if mode or span_pixels(geo, mult, registers)[0] == 1:
        return None
    rows = dims.product(geo.out_sp[:-1])  # an image's rows of output pixels (an expression where free)
    want = dims.ceildiv(dims.mul(DEPTHWISE_ITEMS, THREADS_DIM), rows)
    nvec = -(-n_out // vw)
    return dims.maximum(dims.minimum(want, nvec), 1)


def emit_grouped(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, geo: Geometry, groups: int, *, bias,
                 activation, residual, post_activation) -> None:
    """Direct grouped convolution: per pixel and group, vectors of the group's outputs."""
    cg, n_out = w.shape[-2], w.shape[-1]
    og = n_out // groups
    vw = kb.target.gemm_vw
    vt = ir.VectorType(F32, vw)
    k = kb.kernel("grouped_conv")
    fb, b = k.fn, k.b
    px, pw, po = k.ptr(x), k.ptr(w), k.ptr(out)
    pbias = k.ptr(bias) if bias is not None else None
    pres = k.ptr(residual) if residual is not None else None
    zero = vector_constant(vt, 0.0)
    with fb.loop(k.begin, k.end, name="pix") as row:
        n, outs = geo.decode(k, row)
        row_off = b.mul(row, i64(n_out))
        taps = [geo.tap_offset(k, n, outs, tap) for tap in geo.taps]
        for g in range(groups):
            for j0 in range(0, og, vw):
                valid = min(vw, og - j0)
                col = g * og + j0
                acc = fb.var(vt, name="gacc")
                acc.set(zero)
                for t, (ok, off) in enumerate(taps):
                    with b.if_then(ok):
                        with fb.loop(0, cg, name="c") as c:
                            xs = b.load(b.gep(px, [b.add(off, b.add(c, i64(g * cg)))], source_etype=F32), typ=F32)
                            wp = b.gep(pw, [b.add(b.mul(b.add(i64(t * cg), c), i64(n_out)), i64(col))],
                                       source_etype=F32)
                            acc.set(k.m.fma(k.splat(xs, vw), load_lanes(b, wp, vw, valid), acc.get()))
                val = _epilogue(k, acc.get(), col, row_off, valid, vw, pbias, activation, pres, post_activation)
                store_lanes(b, val, b.gep(po, [b.add(row_off, i64(col))], source_etype=F32), vw, valid)
    kb.launch(k, _pixels(geo), 2 * n_out * cg * len(geo.taps))


def emit_conv(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, *, strides, dilations, pads, groups: int,
              bias=None, activation=None, residual=None, post_activation=None) -> None:
    from graphc.backends.llvm.kernels.winograd import emit_winograd, winograd_applies

    if x.dtype != "float32":
        raise NativeLoweringError(f"convolution of {x.dtype} tensors")
    strided_rows = groups == 1 and kb.target.precision == "float32" and w.is_constant and w.buf is not None \
        and w.buf.kind == "weight"
    if out.row_stride is not None and not strided_rows:  # only the float32 GEMM and Winograd write strided rows
        kb.written_through(out, lambda o: emit_conv(kb, x, w, o, strides=strides, dilations=dilations, pads=pads,
                                                     groups=groups, bias=bias, activation=activation,
                                                     residual=residual, post_activation=post_activation))
        return
    nsp = x.rank - 2
    kernel = w.shape[:nsp]
    geo = Geometry(x, out, kernel, strides, dilations, pads)
    C, n_out = x.shape[-1], w.shape[-1]
    cg = w.shape[-2]
    epi = dict(bias=bias, activation=activation, residual=residual, post_activation=post_activation)
    if not isinstance(C, int):
        raise NativeLoweringError(f"convolution over a free number of channels ({C})")
    if groups == 1:
        if not (w.is_constant and w.buf is not None and w.buf.kind == "weight"):
            if cg == 1 and C == 1:
                # a depthwise kernel of one channel (reshaped at run time when unoptimized): the
                # depthwise kernel reads it where it is
                emit_depthwise(kb, x, w, out, geo, **epi)
                return
            raise NativeLoweringError("convolution with a kernel computed at run time")
        K = math.prod(kernel) * C
        wmat = kb.view(w, (K, n_out))
        M = _pixels(geo)
        if reads_in_place(kernel, geo.strides, pads):
            gemm_for(kb)(kb, DenseA(x, K), M, K, wmat, out, name="conv1x1", **epi)
        elif winograd_applies(kb, geo, C, n_out):
            emit_winograd(kb, x, w, out, geo, **epi)
        else:
            # K in one block (B streamed from L2 per tile, not held in L1): 6 rows x 4 vectors
            # (10 loads per 24 FMAs) beat 12 x 2 (14 loads) by ~5% on 3x3 convs over 64 and 128
            # channels; 12 x 2 stays better where the weights exceed L2
            tile = (6, 4) if kb.target.num_vector_registers >= 32 and K <= single_k() and n_out >= 64 else None
            source = Im2colA(x, geo, kb.target.gemm_vw)
            if kb.target.precision == "bf16" and source.fills_converted:  # see conv_reads_bf16_copy
                source.x_bf16 = bf16_input(kb, x)
            gemm_for(kb)(kb, source, M, K, wmat, out, name="conv", tile=tile, **epi)
        return
    if cg == 1 and groups == C:
        if pad_first(geo, pads):  # every window inside a zero-padded copy: spans for every pixel
            from graphc.backends.llvm.kernels.movement import emit_pad

            padded = kb.temp((x.shape[0], *[dims.add(dims.add(n, a), b) for n, (a, b) in zip(geo.in_sp, pads)], C))
            emit_pad(kb, padded, x, [(0, 0), *pads, (0, 0)], 0.0)
            x, geo = padded, Geometry(padded, out, kernel, strides, dilations, [(0, 0)] * nsp)
        emit_depthwise(kb, x, w, out, geo, **epi)
        return
    emit_grouped(kb, x, w, out, geo, groups, **epi)


PAD_ENV = switches.DEPTHWISE_PAD.name
# the taps of the output pixels whose windows reach into the padding, per pixel of the padded copy, from
# which the depthwise kernel pads its input first (see pad_first)
PAD_FIRST_RATIO = 4


def pad_first(geo: Geometry, pads) -> bool:
    """Whether a depthwise convolution copies its input into a zero-padded buffer first, so that every
    window lies inside it. The output pixels whose windows reach into the padding (5x5 windows on 14 x 14
    maps: 49 %, on 7 x 7: 82 %) the kernel computes one by one with a check per tap, while windows
    inside run as spans. The copy is one
    pass over a map small enough to stay in L2 and one more launch, so it is taken where the border
    pixels' taps are at least ``PAD_FIRST_RATIO`` per pixel copied. Measured per layer on a Zen 4 (1 / 2
    threads, batch 1, padded against not): 5x5 windows over 14 x 14 x 480 100 -> 57 us (1.74x / 1.40x),
    7 x 7 x 1152 1.21x-2.07x, 28 x 28 x 240 1.31x / 1.13x; 3x3 windows lost (14 x 14 x 576 0.97x, 28 x 28
    0.77x, stride 2 0.58x, 7 x 7 x 960 1.22x on one thread but 0.67x on two) and are left alone;
    EfficientNetB0 9.87 -> 9.82 ms (1.005x; two threads 1.03x). Where the spatial sizes are free (known at
    run time only) the copy is taken for windows of 5 or more along every axis, which gained at every size
    measured, and never for smaller ones. ``GRAPHC_DEPTHWISE_PAD``: ``auto`` (default), ``1`` (wherever
    there is padding), ``0`` (never); part of the build cache key."""
    mode = switches.DEPTHWISE_PAD.value()
    if mode == "0" or not any(p for pair in pads for p in pair):
        return False
    if mode == "1":
        return True
    if not geo.static_sizes:
        return min(geo.kernel) >= 5
    inside = math.prod(hi - lo for lo, hi in map(geo.inside_range, range(geo.nsp)))
    border_taps = (math.prod(geo.out_sp) - inside) * len(geo.taps)
    copied = math.prod(n + a + b for n, (a, b) in zip(geo.in_sp, pads))
    return border_taps >= PAD_FIRST_RATIO * copied


def conv_reads_bf16_copy(kb: KernelBuilder, op, value: str, tensors: dict) -> bool:
    """Whether op (a graph op) reads ``value`` only through :func:`bf16_input` in this build: a bf16 build's
    convolution through im2col (groups 1, a weight kernel, not pointwise, not few channels) taking it
    as its input and as nothing else. Its producer may then write it in bf16 (``kb.bf16_held``)."""
    if kb.target.precision != "bf16" or op.type != "fused_conv" or op.inputs[0] != value \
            or value in op.inputs[1:]:
        return False
    w = tensors.get(op.inputs[1])
    if w is None or not (w.is_constant and w.buf is not None and w.buf.kind == "weight"):
        return False
    attrs = op.attrs
    if attrs.get("groups", 1) != 1:
        return False
    nsp = w.rank - 2
    kernel = w.shape[:nsp]
    strides, dilations, pads = spatial_attrs(nsp, attrs.get("strides"), attrs.get("dilations"), attrs.get("pads"),
                                             op.type)
    C = w.shape[-2]
    from graphc.backends.llvm.kernels.winograd import winograd_possible

    if winograd_possible(kb, kernel, strides, dilations):  # reads the float32 input where it lies
        return False
    return not reads_in_place(kernel, strides, pads) and isinstance(C, int) and not small_im2col(C, math.prod(kernel))


def emit_separable(kb: KernelBuilder, x: Tensor, dw: Tensor, pw: Tensor, out: Tensor, *, strides, dilations,
                   pads, groups: int, bias=None, activation=None, residual=None, post_activation=None) -> None:
    """Depthwise (groups == C) then pointwise, the depthwise result computed tile by tile."""
    nsp = x.rank - 2
    C = x.shape[-1]
    if groups != C or dw.shape[-2] != 1:
        raise NativeLoweringError(f"separable convolution with groups={groups} over {C} channels")
    geo = Geometry(x, out, dw.shape[:nsp], strides, dilations, pads)
    mult = dw.shape[-1] // C
    K = dw.shape[-1]
    gemm_for(kb)(kb, DepthwiseA(x, dw, geo, mult, kb.target.gemm_vw), _pixels(geo), K, pw, out, bias=bias,
                 activation=activation, residual=residual, post_activation=post_activation, name="separable_conv")


def max_tree(b: ir.IRBuilder, vals: list, larger: Callable, is_float: bool):
    """The lane-wise maximum of ``vals`` as a balanced tree (exact in any order: 4 steps deep for a 3x3
    window instead of a chain of 8). Floats take plain ``vmaxps`` steps (``reduce._larger``) and, beside
    them, one unordered comparison per pair of taps: a NaN among them gives NaN, as the NaN-propagating
    maximum (five instructions a step) does."""
    nan = None
    if is_float:
        for i in range(0, len(vals), 2):
            u = b.fcmp_unordered("uno", vals[i], vals[min(i + 1, len(vals) - 1)])
            nan = u if nan is None else b.or_(nan, u)
        larger = functools.partial(_larger, b)
    while len(vals) > 1:
        vals = [larger(vals[i], vals[i + 1]) if i + 1 < len(vals) else vals[i] for i in range(0, len(vals), 2)]
    return vals[0] if nan is None else b.select(nan, vector_constant(vals[0].type, math.nan), vals[0])


def pool_window(k: Kernel, kind: str, vals: list, larger: Callable | None, is_float: bool) -> ir.Value:
    """One whole window's values (vectors, in tap order) pooled: the maximum by :func:`max_tree`, the mean
    (float32) as the sum from zero in tap order times ``1 / window size``. The one definition of a pooled
    value: the pooling kernel's and the poolings fused into convolutions (:mod:`.pool_fused`)."""
    b = k.b
    if kind == "max":
        return max_tree(b, vals, larger, is_float)
    val = vector_constant(vals[0].type, 0.0)
    for v in vals:
        val = b.fadd(val, v)
    return b.fmul(val, k.splat(ir.Constant(F32, 1.0 / len(vals)), vals[0].type.count))


def emit_pool(kb: KernelBuilder, x: Tensor, out: Tensor, *, kind: str, kernel, strides, pads) -> None:
    """max_pool / avg_pool (padding is -inf for max, left out of the count for the mean)."""
    geo = Geometry(x, out, kernel, strides, (1,) * (x.rank - 2), pads)
    C = geo.C
    if not isinstance(C, int):
        raise NativeLoweringError(f"pooling over a free number of channels ({C})")
    is_float = x.dtype in ("float32", "float64")
    if x.dtype != "float32" and kind == "avg":
        raise NativeLoweringError(f"avg_pool of {x.dtype}")
    ety = x.ir_type
    vw = kb.target.gemm_vw
    vt = ir.VectorType(ety, vw)
    k = kb.kernel(f"{kind}_pool")
    fb, b, m = k.fn, k.b, k.m
    px, po = k.ptr(x), k.ptr(out)
    unsigned = x.dtype.startswith("uint")
    if kind == "max":
        if is_float:
            init = m.const(-math.inf, vt)
        else:
            init = m.const(0 if unsigned else -(2 ** (ety.width - 1)), vt)
    else:
        init = m.const(0.0, vt)

    def larger(a, v):
        """The lane-wise maximum; unsigned bytes compare unsigned (an LLVM i8 carries no sign)."""
        if unsigned:
            return b.select(b.icmp_unsigned(">", a, v), a, v)
        return m.maximum(a, v)
    deltas = geo.tap_deltas(k)

    def load(off, j0, valid: int):
        p = b.gep(px, [b.add(off, j0)], source_etype=ety)
        if valid == vw:
            return b.load(p, typ=vt, align=x.type.itemsize)
        if ety == F32:
            return load_lanes(b, p, vw, valid)
        v = init
        for lane in range(valid):
            s = b.load(b.gep(p, [i64(lane)], source_etype=ety), typ=ety)
            v = b.insert_element(v, s, ir.Constant(ir.IntType(32), lane))
        return v

    def combine(acc, v):
        return larger(acc, v) if kind == "max" else b.fadd(acc, v)

    ldc = out.row_stride or C  # a concatenation's part written in place: its rows further apart

    def pixel(row, taps, inv) -> None:
        """Output pixel ``row``; ``taps``: (in the input: i1, or None where every tap is, element offset)."""
        row_off = b.mul(row, i64(ldc))

        def channels(j0, valid: int) -> None:
            """Vector ``valid`` channels from channel ``j0`` (an i64 value) of this output pixel."""
            if all(ok is None for ok, _ in taps):  # straight-line: no branch per tap
                val = pool_window(k, kind, [load(off, j0, valid) for _, off in taps], larger, is_float)
            else:  # sums in the whole window's order: the same bits either way
                acc = fb.var(vt, name="pacc")
                acc.set(init)
                for ok, off in taps:
                    with b.if_then(ok):
                        acc.set(combine(acc.get(), load(off, j0, valid)))
                val = acc.get()
                if kind == "avg":
                    val = b.fmul(val, k.splat(inv, vw))
            q = b.gep(po, [b.add(row_off, j0)], source_etype=ety)
            if valid == vw:
                b.store(val, q, align=x.type.itemsize)
            elif ety == F32:
                store_lanes(b, val, q, vw, valid)
            else:
                for lane in range(valid):
                    b.store(b.extract_element(val, ir.Constant(ir.IntType(32), lane)),
                            b.gep(q, [i64(lane)], source_etype=ety))

        # a run-time loop over the whole vectors of channels (code size independent of C), then the rest
        if C // vw:
            with fb.loop(0, C // vw, name="cvec") as jv:
                channels(b.mul(jv, i64(vw)), vw)
        if C % vw:
            channels(i64(C - C % vw), C % vw)

    with fb.loop(k.begin, k.end, name="pix") as row:
        n, outs = geo.decode(k, row)
        inside, corner = geo.window_inside(k, n, outs)
        with b.if_else(inside) as (whole, partial):
            with whole:
                # every tap in the input (all of a 'valid' pooling): offsets from the corner, no checks,
                # the mean over the whole window
                inv = ir.Constant(F32, 1.0 / len(geo.taps))
                pixel(row, [(None, b.add(corner, d)) for d in deltas], inv)
            with partial:
                taps = [geo.tap_offset(k, n, outs, tap) for tap in geo.taps]
                inv = None
                if kind == "avg":
                    count = i64(0)
                    for ok, _ in taps:
                        count = b.add(count, b.zext(ok, ir.IntType(64)))
                    inv = b.fdiv(ir.Constant(F32, 1.0), b.sitofp(count, F32))
                pixel(row, taps, inv)
    kb.launch(k, _pixels(geo), C * len(geo.taps))
