"""Gradients of convolution and pooling (the ops training graphs add).

- ``conv_grad_input`` (groups == 1; also the transposed convolution): unit strides, a GEMM
  over *input* pixels, ``dx (N*in_pixels, C) = col(dy) (N*in_pixels, taps*O) @ B (taps*O, C)``
  with ``B[t*O + o, c] = w[t, c, o]`` packed once per instance. A tile row holds, for each tap,
  the O channels of the output pixel that tap maps the input pixel to (``o = (i + pad -
  t*dilation) / stride`` when that divides and is in range), else zeros (:class:`Col2imA`).
  With strides, most of those taps would be zeros (3 in 4 for a 2-D stride 2), so the GEMM
  runs over *output* pixels instead, ``cols (N*out_pixels, taps*C) = dy @ B'`` with
  ``B'[o, t*C + c] = w[t, c, o]`` (dy read in place, no wasted products), and a gather kernel
  sums, for each input pixel, the columns of the taps that reach it (col2im without races).
  Depthwise: a direct kernel over channels.
- ``conv_grad_kernel`` (groups == 1): ``dw[t, c, o] = sum over output pixels of x(pixel under
  tap t)[c] * dy[o]``, the GEMM ``dwᵀ = dyᵀ @ im2col(x)`` on the packed micro-kernel, blocked over
  the pixels (:mod:`.conv_grad_gemm`); where taps * C is below one panel of the GEMM (3 input
  channels of a 3x3 kernel), work items (tap, MR channels, NR outputs) each stream every output
  pixel with MR x NR accumulators instead. Depthwise: work items are (vector of channels, group of
  taps), reading each output pixel's dy once with one accumulator per tap; with a depth multiplier,
  (tap, vector of outputs), each running over all output pixels (along the last spatial axis the
  pixels whose tap falls inside the input form one range, so the inner loop has no bounds test).
- pooling gradients: one work item per image (windows overlap), each window's cotangent going
  to its first maximum (max) or spread over its in-bounds taps (average).
"""

from __future__ import annotations

import math

from llvmlite import ir

from graphc.backends.llvm import mathlib
from graphc.backends.llvm.builder import Kernel, KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I64, i64, vector_constant
from graphc.backends.llvm.kernels.conv import Geometry, copy_run
from graphc.backends.llvm.kernels.conv_grad_gemm import emit_dense_grad_kernel_gemm
from graphc.backends.llvm.kernels.gemm import (
    ASource,
    DenseA,
    emit_gemm,
    kc_block,
    load_lanes,
    micro_tile,
    store_lanes,
)
from graphc.ir import dims


def _floor_div_exact(b, num, s: int):
    """(num // s, num >= 0 and num % s == 0) for i64 num and a positive constant s."""
    nonneg = b.icmp_signed(">=", num, i64(0))
    if s == 1:
        return num, nonneg
    return b.sdiv(num, i64(s)), b.and_(nonneg, b.icmp_signed("==", b.srem(num, i64(s)), i64(0)))


class GradGeometry(Geometry):
    """The convolution's geometry seen from its input pixels."""

    def decode_input(self, k: Kernel, row):
        b = k.b
        coords = []
        rem = row
        for d in reversed(self.in_sp):
            dv = k.dim(d)
            coords.append(b.srem(rem, dv))
            rem = b.sdiv(rem, dv)
        return rem, list(reversed(coords))

    def output_under(self, k: Kernel, n, ins, tap, channels):
        """(valid, element offset) of the output pixel whose window puts ``tap`` on input ``ins``."""
        b = k.b
        valid = None
        off = n
        for i, t, s, d, p, size in zip(ins, tap, self.strides, self.dilations, self.pads, self.out_sp):
            tv = i64(t * d) if isinstance(t, int) else b.mul(t, i64(d))
            o, exact = _floor_div_exact(b, b.sub(b.add(i, k.dim(p)), tv), s)
            sz = k.dim(size)
            ok = b.and_(exact, b.icmp_signed("<", o, sz))
            valid = ok if valid is None else b.and_(valid, ok)
            off = b.add(b.mul(off, sz), b.select(ok, o, i64(0)))
        return valid, b.mul(off, k.dim(channels))


class Col2imA(ASource):
    """Rows of col(dy): row = input pixel, column = (tap, output channel)."""

    def __init__(self, dy: Tensor, geo: GradGeometry, n_out: int, vw: int):
        self.dy, self.geo, self.n_out, self.vw = dy, geo, n_out, vw

    def block(self, K: int) -> int:
        kc = kc_block()
        return (kc // self.n_out) * self.n_out if self.n_out <= kc else kc

    def fill(self, k: Kernel, row0, row_end, k0, kc, tile, stride: int, *, kb: int) -> None:
        geo, b, fb = self.geo, k.b, k.fn
        n_o = self.n_out
        pd = k.ptr(self.dy)
        end = b.add(k0, kc)
        with fb.loop(row0, row_end, name="col2im") as row:
            n, ins = geo.decode_input(k, row)
            trow = b.gep(tile, [b.mul(b.sub(row, row0), i64(stride))], source_etype=F32)
            pos = fb.var(I64, name="pos")
            pos.set(k0)
            cond, body, done = fb.block("seg.cond"), fb.block("seg.body"), fb.block("seg.end")
            b.branch(cond)
            b.position_at_end(cond)
            cur = pos.get()
            b.cbranch(b.icmp_signed("<", cur, end), body, done)
            b.position_at_end(body)
            tap = b.sdiv(cur, i64(n_o))
            o0 = b.srem(cur, i64(n_o))
            length = fb.min_(b.sub(i64(n_o), o0), b.sub(end, cur))
            coords = []
            rem = tap
            for kd in reversed(geo.kernel):
                coords.append(b.srem(rem, i64(kd)))
                rem = b.sdiv(rem, i64(kd))
            valid, off = geo.output_under(k, n, ins, list(reversed(coords)), n_o)
            dst = b.gep(trow, [b.sub(cur, k0)], source_etype=F32)
            with b.if_else(valid) as (then, otherwise):
                with then:
                    copy_run(k, dst, b.gep(pd, [b.add(off, o0)], source_etype=F32), length, self.vw)
                with otherwise:
                    copy_run(k, dst, None, length, self.vw, zero=True)
            pos.set(b.add(cur, length))
            b.branch(cond)
            b.position_at_end(done)


def _pixels(sp, batch):
    return dims.mul(batch, dims.product(sp))


def emit_conv_grad_input(kb: KernelBuilder, dy: Tensor, w: Tensor, out: Tensor, *, strides, dilations, pads,
                         groups: int) -> None:
    nsp = out.rank - 2
    kernel = list(w.shape[:nsp])
    geo = GradGeometry(out, dy, kernel, strides, dilations, pads)
    C, cg, n_o = out.shape[-1], w.shape[-2], w.shape[-1]
    taps = math.prod(kernel)
    if not isinstance(C, int):
        raise NativeLoweringError(f"convolution gradient over a free number of channels ({C})")
    if groups == 1:
        if not (w.is_constant and w.buf is not None and w.buf.kind == "weight"):
            raise NativeLoweringError("convolution gradient with a kernel computed at run time")
        if math.prod(strides) > 1:
            _strided_grad_input(kb, dy, w, out, geo, C, n_o, taps)
            return

        def index(b, kk, col):  # B[t*n_o + o, c] = w[t, c, o]
            t = b.sdiv(kk, i64(n_o))
            o = b.srem(kk, i64(n_o))
            return b.add(b.mul(b.add(b.mul(t, i64(C)), col), i64(n_o)), o)

        emit_gemm(kb, Col2imA(dy, geo, n_o, kb.target.gemm_vw), _pixels(geo.in_sp, geo.batch), taps * n_o, w, out,
                  name="conv_grad_input", pack=(C, index))
        return
    if cg == 1 and groups == C:
        _depthwise_grad_input(kb, dy, w, out, geo, n_o // C)
        return
    raise NativeLoweringError(f"the gradient of a convolution with groups={groups} (neither 1 nor depthwise)")


def _strided_grad_input(kb: KernelBuilder, dy: Tensor, w: Tensor, out: Tensor, geo: GradGeometry, C: int,
                        n_o: int, taps: int) -> None:
    """Strided convolutions: the GEMM over the output pixels into ``cols``, then the gather."""
    rows = _pixels(geo.out_sp, geo.batch)
    width = taps * C
    cols = kb.temp((rows, width))

    def index(b, kk, col):  # B'[o, t*C + c] = w[t, c, o]: w's (t, c) rows are the columns
        return b.add(b.mul(col, i64(n_o)), kk)

    emit_gemm(kb, DenseA(kb.view(dy, (rows, n_o)), n_o), rows, n_o, w, cols, name="conv_grad_input_cols",
              pack=(width, index))
    vw = kb.target.gemm_vw
    vt = ir.VectorType(F32, vw)
    zero = vector_constant(vt, 0.0)
    k = kb.kernel("col2im_gather")
    fb, b = k.fn, k.b
    pcols, px = k.ptr(cols), k.ptr(out)
    full = C - C % vw

    def sum_taps(sources, c, lanes):
        acc = zero
        for ok, src in sources:
            v = load_lanes(b, b.gep(src, [c], source_etype=F32), vw, lanes)
            acc = b.fadd(acc, b.select(ok, v, zero))
        return acc

    with fb.loop(k.begin, k.end, name="pix") as row:
        n, ins = geo.decode_input(k, row)
        sources = []
        for t, tap in enumerate(geo.taps):
            ok, off = geo.output_under(k, n, ins, tap, width)
            # a tap that reaches no output pixel reads column block 0 of row 0 (and is masked out)
            sources.append((ok, b.gep(pcols, [b.select(ok, b.add(off, i64(t * C)), i64(0))], source_etype=F32)))
        dst = b.gep(px, [b.mul(row, i64(C))], source_etype=F32)
        if full:
            with fb.loop(0, full, vw, name="c") as c:
                store_lanes(b, sum_taps(sources, c, vw), b.gep(dst, [c], source_etype=F32), vw, vw)
        if C % vw:
            store_lanes(b, sum_taps(sources, i64(full), C % vw), b.gep(dst, [i64(full)], source_etype=F32), vw,
                        C % vw)
    kb.launch(k, _pixels(geo.in_sp, geo.batch), 2 * C * taps)


def _depthwise_grad_input(kb, dy, w, out, geo: GradGeometry, mult: int) -> None:
    C = geo.C
    n_out = C * mult
    vw = kb.target.gemm_vw
    vt = ir.VectorType(F32, vw)
    k = kb.kernel("depthwise_grad_input")
    fb, b, m = k.fn, k.b, k.m
    pd, pw, px = k.ptr(dy), k.ptr(w), k.ptr(out)
    zero = vector_constant(vt, 0.0)
    with fb.loop(k.begin, k.end, name="pix") as row:
        n, ins = geo.decode_input(k, row)
        taps = []
        for tap in geo.taps:
            ok, off = geo.output_under(k, n, ins, tap, n_out)
            taps.append((ok, off))
        row_off = b.mul(row, i64(C))
        for c0 in range(0, C, vw):
            valid = min(vw, C - c0)
            acc = zero
            for t, (ok, off) in enumerate(taps):
                part = zero
                for mm in range(mult):
                    # lanes: channels c0..c0+vw, each reading output channel c*mult + mm
                    if mult == 1:
                        dv = load_lanes(b, b.gep(pd, [b.add(off, i64(c0))], source_etype=F32), vw, valid)
                        wv = load_lanes(b, b.gep(pw, [i64(t * n_out + c0)], source_etype=F32), vw, valid)
                    else:
                        dv, wv = zero, zero
                        for lane in range(valid):
                            o = (c0 + lane) * mult + mm
                            dv = b.insert_element(dv, b.load(b.gep(pd, [b.add(off, i64(o))], source_etype=F32),
                                                             typ=F32), ir.Constant(ir.IntType(32), lane))
                            wv = b.insert_element(wv, b.load(b.gep(pw, [i64(t * n_out + o)], source_etype=F32),
                                                             typ=F32), ir.Constant(ir.IntType(32), lane))
                    part = m.fma(dv, wv, part)
                acc = b.fadd(acc, b.select(ok, part, zero))
            store_lanes(b, acc, b.gep(px, [b.add(row_off, i64(c0))], source_etype=F32), vw, valid)
    kb.launch(k, _pixels(geo.in_sp, geo.batch), 2 * n_out * len(geo.taps))


def _pixel_ranges(k: Kernel, geo: Geometry, tap, n, body) -> None:
    """For image n: every output pixel whose ``tap`` lands inside the input; calls
    ``body(out_offset_pixels, in_offset_pixels, lo, hi)`` per run of pixels along the last axis
    (pixels lo..hi-1 of that row, offsets of pixel lo; consecutive pixels are 1 output pixel and
    ``strides[-1]`` input pixels apart)."""
    fb, b = k.fn, k.b
    outer = list(zip(geo.out_sp[:-1], geo.in_sp[:-1], tap[:-1], geo.strides[:-1], geo.dilations[:-1],
                     geo.pads[:-1]))

    def level(d, out_off, in_off):
        if d == len(outer):
            o_last, i_last = geo.out_sp[-1], geo.in_sp[-1]
            s, dil, p = geo.strides[-1], geo.dilations[-1], geo.pads[-1]
            shift = b.sub(i64(tap[-1] * dil), k.dim(p))  # input position of output 0
            # lo = ceil(-shift / s) clamped to >= 0; hi = ceil((W - shift) / s) clamped to <= OW
            neg = b.sub(i64(0), shift)
            lo = b.sdiv(b.add(neg, i64(s - 1)), i64(s))
            lo = b.select(b.icmp_signed("<", neg, i64(0)), i64(0), lo)
            lo = fb.max_(lo, i64(0))
            num = b.sub(k.dim(i_last), shift)
            hi = b.sdiv(b.add(num, i64(s - 1)), i64(s))
            hi = b.select(b.icmp_signed("<", num, i64(0)), i64(0), hi)
            hi = fb.min_(hi, k.dim(o_last))
            out_px = b.add(b.mul(out_off, k.dim(o_last)), lo)
            in_px = b.add(b.mul(in_off, k.dim(i_last)), b.add(b.mul(lo, i64(s)), shift))
            with b.if_then(b.icmp_signed("<", lo, hi)):
                body(out_px, in_px, lo, hi)
            return
        o_size, i_size, t, s, dil, p = outer[d]
        with fb.loop(0, o_size, name=f"o{d}") as o:
            i = b.sub(b.add(b.mul(o, i64(s)), i64(t * dil)), k.dim(p))
            ok = b.and_(b.icmp_signed(">=", i, i64(0)), b.icmp_signed("<", i, k.dim(i_size)))
            with b.if_then(ok):
                level(d + 1, b.add(b.mul(out_off, k.dim(o_size)), o), b.add(b.mul(in_off, k.dim(i_size)), i))

    level(0, n, n)


def emit_conv_grad_kernel(kb: KernelBuilder, x: Tensor, dy: Tensor, out: Tensor, *, strides, dilations, pads,
                          groups: int) -> None:
    nsp = x.rank - 2
    kernel = list(out.shape[:nsp])
    geo = Geometry(x, dy, kernel, strides, dilations, pads)
    C, cg, n_o = x.shape[-1], out.shape[-2], out.shape[-1]
    if not isinstance(C, int):
        raise NativeLoweringError(f"convolution gradient over a free number of channels ({C})")
    if groups == 1:
        NR = micro_tile(kb.target.gemm_vw, kb.target.num_vector_registers)[1] * kb.target.gemm_vw
        if len(geo.taps) * C < NR:  # the GEMM's panel would be mostly zeros and dyᵀ its main cost
            _direct_grad_kernel(kb, x, dy, out, geo, C, n_o)
        else:
            emit_dense_grad_kernel_gemm(kb, x, dy, out, geo, C, n_o)
    elif cg == 1 and groups == C:
        if n_o == C:
            _depthwise_grad_kernel_taps(kb, x, dy, out, geo, C)
        else:
            _depthwise_grad_kernel(kb, x, dy, out, geo, C, n_o // C)
    else:
        raise NativeLoweringError(f"the gradient of a convolution with groups={groups} (neither 1 nor depthwise)")


def _direct_grad_kernel(kb, x, dy, out, geo: Geometry, C: int, n_o: int) -> None:
    """Work items (tap, block of MR channels, block of NR outputs), each streaming every output pixel
    with MR x NR accumulators: for taps * C below one GEMM panel, where there are few items."""
    vw = kb.target.gemm_vw
    MR, NV = micro_tile(vw, kb.target.num_vector_registers)
    NR = NV * vw
    taps = geo.taps
    c_blocks, o_blocks = -(-C // MR), -(-n_o // NR)
    k = kb.kernel("conv_grad_kernel")
    fb, b = k.fn, k.b
    px, pd, pw = k.ptr(x), k.ptr(dy), k.ptr(out)
    vt = ir.VectorType(F32, vw)
    zero = vector_constant(vt, 0.0)
    s_last = geo.strides[-1]
    with fb.loop(k.begin, k.end, name="item") as item:
        ob = b.srem(item, i64(o_blocks))
        rest = b.sdiv(item, i64(o_blocks))
        cb = b.srem(rest, i64(c_blocks))
        t_index = b.sdiv(rest, i64(c_blocks))
        c0, o0 = b.mul(cb, i64(MR)), b.mul(ob, i64(NR))
        o_valid = fb.min_(b.sub(i64(n_o), o0), i64(NR))
        # rows past C repeat the last channel (computed, never stored)
        chan = [fb.min_(b.add(c0, i64(r)), i64(C - 1)) for r in range(MR)]
        accs = [[fb.var(vt, name=f"w{r}_{v}") for v in range(NV)] for r in range(MR)]
        # the tap is a run-time index here: one code path serves every tap
        for row in accs:
            for var in row:
                var.set(zero)
        for t, tap in enumerate(taps):
            with b.if_then(b.icmp_signed("==", t_index, i64(t))):
                def run(out_px, in_px, lo, hi):
                    xp = b.gep(px, [b.mul(in_px, i64(C))], source_etype=F32)
                    dp = b.gep(pd, [b.add(b.mul(out_px, i64(n_o)), o0)], source_etype=F32)
                    with fb.loop(lo, hi, name="ow") as ow:
                        step = b.sub(ow, lo)
                        xr = b.gep(xp, [b.mul(step, i64(s_last * C))], source_etype=F32)
                        dr = b.gep(dp, [b.mul(step, i64(n_o))], source_etype=F32)
                        dvs = [load_lanes(b, b.gep(dr, [i64(v * vw)], source_etype=F32), vw,
                                          b.sub(o_valid, i64(v * vw))) for v in range(NV)]
                        for r in range(MR):
                            a = k.splat(b.load(b.gep(xr, [chan[r]], source_etype=F32), typ=F32), vw)
                            for v in range(NV):
                                accs[r][v].set(mathlib.fma(b, a, dvs[v], accs[r][v].get()))

                with fb.loop(0, geo.batch, name="n") as n:
                    _pixel_ranges(k, geo, tap, n, run)
        for r in range(MR):
            with b.if_then(b.icmp_signed("<", b.add(c0, i64(r)), i64(C))):
                base = b.add(b.mul(b.add(b.mul(t_index, i64(C)), b.add(c0, i64(r))), i64(n_o)), o0)
                for v in range(NV):
                    store_lanes(b, accs[r][v].get(), b.gep(pw, [b.add(base, i64(v * vw))], source_etype=F32), vw,
                                b.sub(o_valid, i64(v * vw)))
    kb.launch(k, len(taps) * c_blocks * o_blocks, 2 * MR * NR * 4096)


TAPS_PER_ITEM = 16  # per-tap accumulators of a depthwise item: vector registers to spare for the loads


def _depthwise_grad_kernel_taps(kb, x, dy, out, geo: Geometry, C: int) -> None:
    """Depthwise (multiplier 1): work items (vector of channels, group of at most TAPS_PER_ITEM taps),
    each reading every output pixel's dy once and keeping one accumulator per tap, so that x and dy
    stream from memory once per channel block instead of once per tap; a tap in the padding reads a
    safe place and adds zeros."""
    vw = kb.target.gemm_vw
    vt = ir.VectorType(F32, vw)
    blocks = -(-C // vw)
    taps = geo.taps
    groups = [taps[i:i + TAPS_PER_ITEM] for i in range(0, len(taps), TAPS_PER_ITEM)]
    k = kb.kernel("depthwise_grad_kernel")
    fb, b = k.fn, k.b
    px, pd, pw = k.ptr(x), k.ptr(dy), k.ptr(out)
    zero = vector_constant(vt, None)
    in_sizes = [k.dim(s) for s in geo.in_sp]
    deltas = geo.tap_deltas(k)
    with fb.loop(k.begin, k.end, name="item") as item:
        g_index = b.sdiv(item, i64(blocks))
        o0 = b.mul(b.srem(item, i64(blocks)), i64(vw))
        valid = fb.min_(b.sub(i64(C), o0), i64(vw))
        for g, group in enumerate(groups):
            with b.if_then(b.icmp_signed("==", g_index, i64(g))):
                first = g * TAPS_PER_ITEM
                accs = [fb.var(vt, name=f"t{t}") for t in range(len(group))]
                for acc in accs:
                    acc.set(zero)
                with fb.loop(0, _pixels(geo.out_sp, geo.batch), name="pix") as row:
                    n, outs = geo.decode(k, row)
                    dv = load_lanes(b, b.gep(pd, [b.add(b.mul(row, i64(C)), o0)], source_etype=F32), vw, valid)
                    starts = [b.sub(b.mul(o, i64(s)), k.dim(p)) for o, s, p in zip(outs, geo.strides, geo.pads)]
                    off = n
                    for i, size in zip(starts, in_sizes):
                        off = b.add(b.mul(off, size), i)
                    base = b.add(b.mul(off, i64(C)), o0)  # tap 0's element (possibly outside the input)
                    inside: dict[tuple[int, int], ir.Value] = {}
                    for t, tap in enumerate(group):
                        ok = None
                        for d, (i, tv, dil) in enumerate(zip(starts, tap, geo.dilations)):
                            if (d, tv) not in inside:
                                inside[d, tv] = b.icmp_unsigned("<", b.add(i, i64(tv * dil)), in_sizes[d])
                            ok = inside[d, tv] if ok is None else b.and_(ok, inside[d, tv])
                        src = b.gep(px, [b.select(ok, b.add(base, deltas[first + t]), o0)], source_etype=F32)
                        xv = b.select(ok, load_lanes(b, src, vw, valid), zero)
                        accs[t].set(mathlib.fma(b, xv, dv, accs[t].get()))
                for t, acc in enumerate(accs):
                    dst = b.gep(pw, [b.add(i64((first + t) * C), o0)], source_etype=F32)
                    store_lanes(b, acc.get(), dst, vw, valid)
    kb.launch(k, len(groups) * blocks, 2 * len(taps) * 4096)


def _depthwise_grad_kernel(kb, x, dy, out, geo: Geometry, C: int, mult: int) -> None:
    n_out = C * mult
    vw = kb.target.gemm_vw
    vt = ir.VectorType(F32, vw)
    blocks = -(-n_out // vw)
    k = kb.kernel("depthwise_grad_kernel")
    fb, b = k.fn, k.b
    px, pd, pw = k.ptr(x), k.ptr(dy), k.ptr(out)
    zero = vector_constant(vt, 0.0)
    s_last = geo.strides[-1]
    with fb.loop(k.begin, k.end, name="item") as item:
        ob = b.srem(item, i64(blocks))
        t_index = b.sdiv(item, i64(blocks))
        o0 = b.mul(ob, i64(vw))
        valid = fb.min_(b.sub(i64(n_out), o0), i64(vw))
        acc = fb.var(vt, name="dacc")
        acc.set(zero)
        for t, tap in enumerate(geo.taps):
            with b.if_then(b.icmp_signed("==", t_index, i64(t))):
                def run(out_px, in_px, lo, hi):
                    xp = b.gep(px, [b.mul(in_px, i64(C))], source_etype=F32)
                    dp = b.gep(pd, [b.add(b.mul(out_px, i64(n_out)), o0)], source_etype=F32)
                    with fb.loop(lo, hi, name="ow") as ow:
                        step = b.sub(ow, lo)
                        xr = b.gep(xp, [b.mul(step, i64(s_last * C))], source_etype=F32)
                        dv = load_lanes(b, b.gep(dp, [b.mul(step, i64(n_out))], source_etype=F32), vw, valid)
                        if mult == 1:
                            xv = load_lanes(b, b.gep(xr, [o0], source_etype=F32), vw, valid)
                        else:
                            xv = zero
                            for lane in range(vw):
                                c = b.sdiv(fb.min_(b.add(o0, i64(lane)), i64(n_out - 1)), i64(mult))
                                xv = b.insert_element(xv, b.load(b.gep(xr, [c], source_etype=F32), typ=F32),
                                                      ir.Constant(ir.IntType(32), lane))
                        acc.set(mathlib.fma(b, xv, dv, acc.get()))

                with fb.loop(0, geo.batch, name="n") as n:
                    _pixel_ranges(k, geo, tap, n, run)
        store_lanes(b, acc.get(), b.gep(pw, [b.add(b.mul(t_index, i64(n_out)), o0)], source_etype=F32), vw, valid)
    kb.launch(k, len(geo.taps) * blocks, 4096)


def emit_pool_grad(kb: KernelBuilder, x: Tensor, dy: Tensor, out: Tensor, *, kind: str, kernel, strides,
                   pads) -> None:
    """max_pool_grad / avg_pool_grad; one work item per image."""
    from graphc.backends.llvm.kernels.elementwise import emit_fill

    geo = Geometry(x, dy, kernel, strides, (1,) * (x.rank - 2), pads)
    C = geo.C
    if not isinstance(C, int) or x.dtype != "float32":
        raise NativeLoweringError(f"pooling gradient over {x.dtype} with {C} channels")
    emit_fill(kb, out, 0.0)
    vw = kb.target.gemm_vw
    vt = ir.VectorType(F32, vw)
    k = kb.kernel(f"{kind}_pool_grad")
    fb, b, m = k.fn, k.b, k.m
    px, pd, po = k.ptr(x), k.ptr(dy), k.ptr(out)
    zero = vector_constant(vt, 0.0)
    per_image = dims.product(geo.out_sp)
    with fb.loop(k.begin, k.end, name="n") as n:
        with fb.loop(0, per_image, name="pix") as pix:
            row = b.add(b.mul(n, k.dim(per_image)), pix)
            nn, outs = geo.decode(k, row)
            taps = [geo.tap_offset(k, nn, outs, tap) for tap in geo.taps]
            if kind == "avg":
                count = i64(0)
                for ok, _ in taps:
                    count = b.add(count, b.zext(ok, I64))
                inv = k.splat(b.fdiv(ir.Constant(F32, 1.0), b.sitofp(count, F32)), vw)
            for c0 in range(0, C, vw):
                valid = min(vw, C - c0)
                g = load_lanes(b, b.gep(pd, [b.add(b.mul(row, i64(C)), i64(c0))], source_etype=F32), vw, valid)
                if kind == "avg":
                    g = b.fmul(g, inv)
                    for ok, off in taps:
                        with b.if_then(ok):
                            q = b.gep(po, [b.add(off, i64(c0))], source_etype=F32)
                            store_lanes(b, b.fadd(load_lanes(b, q, vw, valid), g), q, vw, valid)
                    continue
                best = m.const(-math.inf, vt)
                safes = [(ok, b.select(ok, off, i64(0))) for ok, off in taps]  # padding reads a safe place
                for ok, safe in safes:
                    v = load_lanes(b, b.gep(px, [b.add(safe, i64(c0))], source_etype=F32), vw, valid)
                    best = b.select(ok, m.maximum(best, v), best)
                taken = vector_constant(ir.VectorType(ir.IntType(1), vw), 0)
                for ok, safe in safes:
                    v = load_lanes(b, b.gep(px, [b.add(safe, i64(c0))], source_etype=F32), vw, valid)
                    hit = b.and_(b.fcmp_ordered("==", v, best), b.xor(taken, vector_constant(taken.type, 1)))
                    hit = b.and_(hit, b.select(ok, vector_constant(taken.type, 1), vector_constant(taken.type, 0)))
                    taken = b.or_(taken, hit)
                    q = b.gep(po, [b.add(safe, i64(c0))], source_etype=F32)
                    with b.if_then(ok):
                        store_lanes(b, b.fadd(load_lanes(b, q, vw, valid), b.select(hit, g, zero)), q, vw, valid)
    kb.launch(k, geo.batch, 4096 * 16)
