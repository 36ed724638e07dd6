"""The kernel gradient of a dense convolution (groups == 1) on the packed GEMM micro-kernel.

``dw[t, c, o] = sum over output pixels p of x(pixel under tap t of p)[c] * dy[p, o]`` is the
product ``dwᵀ (O, taps*C) = dyᵀ (O, P) @ cols (P, taps*C)`` over the P = N * output pixels, where
``cols`` is the im2col matrix of the forward convolution. It runs as BLIS's loops around the shared
micro-kernel (:func:`.gemm.tile_function`), the pixels being the reduction:

- Work items are (block of output channels, chunk of column panels); each walks P in blocks of
  ``KC`` pixels, so that the pixels' rows of ``dy`` and of ``x`` are read from memory once per
  block and then reused from the caches by every tap and channel (a loop that streams all P for
  each (tap, channel block) reads ``dy`` from memory tens of times).
- Per pixel block: each pixel's input position (its tap-0 element offset and coordinates) is
  decoded once into the thread's scratch; ``dyᵀ`` is packed into the A tile (the block's ``O`` x
  ``kc`` transpose, small against the products); each panel of ``NR`` columns of ``cols`` is
  packed by copying, per run of columns within one tap, the pixels' channel runs out of ``x``
  (vector loads; zeros where a tap falls into the padding), and the micro-kernel adds
  ``MR x NR`` tiles into ``dwᵀ`` (a scratch buffer, stored by the first block, added by the rest).
- A last kernel transposes ``dwᵀ`` into ``dw``'s (taps, C, O) layout (``taps * C * O`` elements,
  nothing against the products).
"""

from __future__ import annotations

from llvmlite import ir

from graphc.backends.llvm.builder import KernelBuilder, Tensor
from graphc.backends.llvm.irutil import F32, I64, i64, vector_constant
from graphc.backends.llvm.kernels.conv import Geometry
from graphc.backends.llvm.kernels.gemm import (
    EDGE_ROWS,
    TILE_PAD,
    load_lanes,
    micro_tile,
    row_function,
    store_lanes,
    tile_function,
)
from graphc.backends.llvm.kernels.gemm_items import THREADS_DIM
from graphc.ir import dims

PIXEL_BLOCK = 256  # pixels per reduction block: a KC x NR panel stays in L1, the dyᵀ tile in L2
MAX_BLOCK_ROWS = 240  # output channels per work item (more are split into row blocks)


def emit_dense_grad_kernel_gemm(kb: KernelBuilder, x: Tensor, dy: Tensor, out: Tensor, geo: Geometry, C: int,
                                n_o: int) -> None:
    """``out`` (kernel..., C, O) = the kernel gradient of a groups == 1 convolution of ``x`` with cotangent ``dy``."""
    vw = kb.target.gemm_vw
    MR, NV = micro_tile(vw, kb.target.num_vector_registers)
    NR = NV * vw
    nsp = geo.nsp
    n_taps = len(geo.taps)
    N = n_taps * C
    panels = -(-N // NR)
    P = dims.mul(geo.batch, dims.product(geo.out_sp))
    row_tiles = -(-n_o // MR)
    rblocks = -(-row_tiles // max(1, MAX_BLOCK_ROWS // MR))
    block_rows = -(-row_tiles // rblocks) * MR
    # one chunk of panels per thread's share of the row blocks (a chunk packs dyᵀ again)
    want = dims.ceildiv(THREADS_DIM, rblocks)
    nchunks = dims.minimum(want, panels)
    ppc = dims.ceildiv(panels, nchunks)
    KC_ = PIXEL_BLOCK
    tile_stride = KC_ + TILE_PAD
    rec_width = nsp + 1  # per pixel: tap 0's element offset, then its input coordinates
    dwt = kb.temp((n_o, N))

    k = kb.kernel("conv_grad_kernel_gemm")
    fb, b = k.fn, k.b
    vt = ir.VectorType(F32, vw)
    zero = vector_constant(vt, None)
    px, pd, pt = k.ptr(x), k.ptr(dy), k.ptr(dwt)
    a_floats, panel_floats, c_floats = block_rows * tile_stride, KC_ * NR, MR * NR
    scratch = k.thread_scratch((a_floats + panel_floats + c_floats) * 4 + KC_ * rec_width * 8)
    a_tile = scratch
    panel_buf = b.gep(scratch, [i64(a_floats)], source_etype=F32)
    c_tile = b.gep(scratch, [i64(a_floats + panel_floats)], source_etype=F32)
    recs = b.gep(scratch, [i64(a_floats + panel_floats + c_floats)], source_etype=F32)
    Pv, nch, ppcv = k.dim(P), k.dim(nchunks), k.dim(ppc)
    in_sizes = [k.dim(s) for s in geo.in_sp]
    # element distance between neighbouring input positions along each spatial axis
    axis_strides = [k.dim(dims.mul(dims.product(geo.in_sp[d + 1:]), C)) for d in range(nsp)]

    def fill_records(k0, kc):
        """recs[kk] = (offset of tap 0's pixel, its input coordinates) of output pixel k0 + kk."""
        with fb.loop(0, kc, name="rec") as kk:
            n, outs = geo.decode(k, b.add(k0, kk))
            rec = b.gep(recs, [b.mul(kk, i64(rec_width))], source_etype=I64)
            off = n
            for d, (o, s, p) in enumerate(zip(outs, geo.strides, geo.pads)):
                i = b.sub(b.mul(o, i64(s)), k.dim(p))
                off = b.add(b.mul(off, in_sizes[d]), i)
                b.store(i, b.gep(rec, [i64(1 + d)], source_etype=I64))
            b.store(b.mul(off, i64(C)), rec)

    def fill_dyt(k0, kc, row0, row_end):
        """A tile row o - row0 = dy[k0:k0 + kc, o] (the block of dyᵀ)."""
        with fb.loop(0, kc, name="dyt") as kk:
            src = b.gep(pd, [b.mul(b.add(k0, kk), i64(n_o))], source_etype=F32)
            with fb.loop(row0, row_end, name="dyo") as o:
                v = b.load(b.gep(src, [o], source_etype=F32), typ=F32)
                b.store(v, b.gep(a_tile, [b.add(b.mul(b.sub(o, row0), i64(tile_stride)), kk)], source_etype=F32))

    def pack_panel(col0, valid_cols, kc):
        """panel_buf[kk][j] = cols[k0 + kk][col0 + j]: per run of columns within one tap, the pixels'
        channel runs (zeros where the tap falls outside the input)."""
        end = b.add(col0, valid_cols)
        pos_var = fb.var(I64, name="pos")
        pos_var.set(col0)
        cond, body, done = fb.block("run.cond"), fb.block("run.body"), fb.block("run.end")
        b.branch(cond)
        b.position_at_end(cond)
        pos = pos_var.get()
        b.cbranch(b.icmp_signed("<", pos, end), body, done)
        b.position_at_end(body)
        tap = b.sdiv(pos, i64(C))
        c0 = b.srem(pos, i64(C))
        length = fb.min_(b.sub(i64(C), c0), b.sub(end, pos))
        shifts, rem = [], tap
        for kd, dil in reversed(list(zip(geo.kernel, geo.dilations))):
            shifts.append(b.mul(b.srem(rem, i64(kd)), i64(dil)))
            rem = b.sdiv(rem, i64(kd))
        shifts.reverse()
        delta = c0
        for d in range(nsp):
            delta = b.add(delta, b.mul(shifts[d], axis_strides[d]))
        dst0 = b.gep(panel_buf, [b.sub(pos, col0)], source_etype=F32)
        whole = C % NR == 0  # every run is a whole panel: full vectors
        with fb.loop(0, kc, name="pk") as kk:
            rec = b.gep(recs, [b.mul(kk, i64(rec_width))], source_etype=I64)
            ok = None
            for d in range(nsp):
                i = b.add(b.load(b.gep(rec, [i64(1 + d)], source_etype=I64), typ=I64), shifts[d])
                inside = b.icmp_unsigned("<", i, in_sizes[d])
                ok = inside if ok is None else b.and_(ok, inside)
            off = b.select(ok, b.add(b.load(rec, typ=I64), delta), c0)  # outside: a safe place, masked out
            src = b.gep(px, [off], source_etype=F32)
            dst = b.gep(dst0, [b.mul(kk, i64(NR))], source_etype=F32)
            for v in range(NV):
                lanes = vw if whole else b.sub(length, i64(v * vw))
                val = load_lanes(b, b.gep(src, [i64(v * vw)], source_etype=F32), vw, lanes)
                val = b.select(ok, val, zero)
                store_lanes(b, val, b.gep(dst, [i64(v * vw)], source_etype=F32), vw, lanes)
        pos_var.set(b.add(pos, length))
        b.branch(cond)
        b.position_at_end(done)

    def add_tile(i, rows_valid, col0, valid_cols, first):
        """dwᵀ[i:i + rows_valid, col0:col0 + valid_cols] (+)= c_tile."""
        with fb.loop(0, rows_valid, name="st") as r:
            crow = b.gep(pt, [b.add(b.mul(b.add(i, r), i64(N)), col0)], source_etype=F32)
            for v in range(NV):
                lanes = b.sub(valid_cols, i64(v * vw))
                cptr = b.gep(crow, [i64(v * vw)], source_etype=F32)
                val = b.load(b.gep(c_tile, [b.add(b.mul(r, i64(NR)), i64(v * vw))], source_etype=F32), typ=vt,
                             align=4)
                val = b.select(first, val, b.fadd(val, load_lanes(b, cptr, vw, lanes)))
                store_lanes(b, val, cptr, vw, lanes)

    def row_loop(row0, row_end, kc, col0, valid_cols, first):
        with fb.loop(row0, row_end, MR, name="row") as i:
            rows_valid = fb.min_(b.sub(row_end, i), i64(MR))
            a_rows = b.gep(a_tile, [b.mul(b.sub(i, row0), i64(tile_stride))], source_etype=F32)
            with b.if_else(b.icmp_signed("==", rows_valid, i64(MR))) as (whole, partial):
                with whole:
                    b.call(tile_function(kb.module, MR, NV, vw, NR, tile_stride), [a_rows, panel_buf, kc, c_tile,
                                                                                 i64(0)])
                with partial:  # the last rows: tiles of EDGE_ROWS, then one at a time
                    edge_end = b.and_(rows_valid, i64(-EDGE_ROWS))
                    with fb.loop(0, edge_end, EDGE_ROWS, name="r4") as r:
                        b.call(tile_function(kb.module, EDGE_ROWS, NV, vw, NR, tile_stride),
                               [b.gep(a_rows, [b.mul(r, i64(tile_stride))], source_etype=F32), panel_buf, kc,
                                b.gep(c_tile, [b.mul(r, i64(NR))], source_etype=F32), i64(0)])
                    with fb.loop(edge_end, rows_valid, name="r1") as r:
                        b.call(row_function(kb.module, NV, vw, NR),
                               [b.gep(a_rows, [b.mul(r, i64(tile_stride))], source_etype=F32), panel_buf, i64(0),
                                kc, b.gep(c_tile, [b.mul(r, i64(NR))], source_etype=F32)])
            add_tile(i, rows_valid, col0, valid_cols, first)

    with fb.loop(k.begin, k.end, name="item") as item:
        rb, cc = b.sdiv(item, nch), b.srem(item, nch)
        row0 = b.mul(rb, i64(block_rows))
        row_end = fb.min_(b.add(row0, i64(block_rows)), i64(n_o))
        p_lo = b.mul(cc, ppcv)
        p_hi = fb.min_(b.add(p_lo, ppcv), i64(panels))
        n_kblocks = b.sdiv(b.add(Pv, i64(KC_ - 1)), i64(KC_))
        # columns of the last, partial panel past N are computed, never stored: zeros, not stale scratch
        with fb.loop(0, panel_floats, vw, name="pz") as z:
            b.store(zero, b.gep(panel_buf, [z], source_etype=F32), align=4)
        with fb.loop(0, n_kblocks, name="kb") as kblock:
            k0 = b.mul(kblock, i64(KC_))
            kc = fb.min_(i64(KC_), b.sub(Pv, k0))
            first = b.icmp_signed("==", kblock, i64(0))
            fill_records(k0, kc)
            fill_dyt(k0, kc, row0, row_end)
            with fb.loop(p_lo, p_hi, name="panel") as p:
                col0 = b.mul(p, i64(NR))
                valid_cols = fb.min_(b.sub(i64(N), col0), i64(NR))
                pack_panel(col0, valid_cols, kc)
                row_loop(row0, row_end, kc, col0, valid_cols, first)
    kb.launch(k, dims.mul(rblocks, nchunks), 2 * block_rows * KC_ * NR * 64)
    _transpose_into(kb, dwt, out, n_o, N)


def _transpose_into(kb: KernelBuilder, dwt: Tensor, out: Tensor, n_o: int, N: int) -> None:
    """out[j, o] = dwt[o, j] (``dw``'s (taps, C, O) layout seen as (taps * C, O)); items are rows j."""
    k = kb.kernel("conv_grad_kernel_transpose")
    fb, b = k.fn, k.b
    src, dst = k.ptr(dwt), k.ptr(out)
    with fb.loop(k.begin, k.end, name="j") as j:
        row = b.gep(dst, [b.mul(j, i64(n_o))], source_etype=F32)
        with fb.loop(0, n_o, name="o") as o:
            v = b.load(b.gep(src, [b.add(b.mul(o, i64(N)), j)], source_etype=F32), typ=F32)
            b.store(v, b.gep(row, [o], source_etype=F32))
    kb.launch(k, N, 2 * n_o)


__all__ = ["emit_dense_grad_kernel_gemm"]
