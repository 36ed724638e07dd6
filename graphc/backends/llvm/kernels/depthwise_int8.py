"""Depthwise int8 convolution: ``qlinear_conv`` with one group per channel (a separable convolution's
first half), channels-last.

``out[n, oh, ow, c] = requantize(sum_taps (x[n, ih, iw, c] - x_zero) * w[tap, c] + bias[c])`` with the
epilogue of :mod:`graphc.ops.qlinear` (the same float32 steps as :mod:`.gemm_int8`'s, so the same
bits).

A depthwise product has no reduction over channels, but it has one over the kernel's taps: the
kernel feeds the target's dot product (:func:`.gemm_int8.dot_path`: ``vpdpbusd``'s four bytes, or
``vpmaddwd``'s two int16) with ``group`` kernel *rows* of one channel in each 32-bit lane. Per output
row it first writes *streams* into the thread's scratch: a stream holds, for each input column it
needs and each channel, the unsigned input bytes of ``group`` consecutive kernel rows in one lane
(int8 inputs get 128 added, as in the GEMM), padding (rows and columns outside the input) being
the input's zero point. The product then runs along the output row *flattened* over (column,
channel): with stride 1, output lane ``q = ow * C + c`` reads the stream of its row group at
``q + j * dw * C`` for kernel column ``j``, so every vector of lanes is full whatever C is (3
channels do not waste 13 of 16 lanes) and a stream is built once for all ``kw`` columns; with a
larger stride each kernel column gets a stream of its own, gathered column by column. The weights,
bias and multiplier of lane ``q`` depend on ``q mod C`` only, so they are laid out once per call as
tables with period ``lcm(C, lanes)`` that the vectors read in step. The zero point comes back as a
per-channel correction of the bias, ``-z * sum_taps w`` (exact, as padding reads ``z``). A work
item is a block of output rows of one image: two where their input rows take no more row groups
than one row's (3x3 at stride 1: rows oh .. oh + 3 in one group of four, read with the weights
(w0, w1, w2, 0) for row oh and (0, w0, w1, w2) for row oh + 1), else one. Shapes whose tables or
streams would not fit the scratch budget, or whose width is only known at run time, run the
first kernel: bytes widened to int32 lanes, channels per vector, one output row per work item.
"""

from __future__ import annotations

import math

from llvmlite import ir

from graphc.backends.llvm.builder import Kernel, KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I8, I32, i32, i64, intrinsic
from graphc.backends.llvm.kernels.gemm_int8 import _dot, dot_path
from graphc.ir import dims
from graphc.ops.quantize import QRANGE

_ROUNDER = 12582912.0  # 1.5 * 2^23, as gemm_int8's epilogue rounds
LANES = 16
UNROLL_VECTORS = 16  # the product unrolled over the tables' period when it has at most this many vectors
TABLE_BYTES = 64 * 1024  # weights, bias and multiplier tables of one call, per thread
STREAM_BYTES = 512 * 1024  # one output row's streams, per thread


def is_depthwise(x: Tensor, w: Tensor, out: Tensor, groups: int) -> bool:
    """One group per input channel and one output channel per group (depth multiplier 1)."""
    c = x.shape[-1]
    return isinstance(c, int) and groups == c > 1 and w.shape[-2] == 1 and w.shape[-1] == c == out.shape[-1]


class _Epilogue:
    """The requantizing epilogue's per-call values: zero points, the float clamp bounds and the
    per-channel multiplier ``float32(x_scale * w_scale) / y_scale`` stored at ``mult``."""

    def __init__(self, k: Kernel, x: Tensor, out: Tensor, q, C: int, mult: ir.Value):
        fb, b = k.fn, k.b
        self.b = b
        sx = b.load(k.ptr(q.x_scale), typ=F32)
        sy = b.load(k.ptr(q.y_scale), typ=F32)
        pws = k.ptr(q.w_scale)
        per_channel = q.w_scale.rank == 1
        with fb.loop(0, C, name="col") as c:
            ws = b.load(b.gep(pws, [c if per_channel else i64(0)], source_etype=F32), typ=F32)
            b.store(b.fdiv(b.fmul(sx, ws), sy), b.gep(mult, [c], source_etype=F32))
        self.signed = x.dtype == "int8"
        xz = b.load(k.ptr(q.x_zero), typ=I8)
        self.xz8 = xz
        self.xz32 = b.sext(xz, I32) if self.signed else b.zext(xz, I32)
        lo, hi = QRANGE[out.dtype]
        yz = b.load(k.ptr(q.y_zero), typ=I8)
        self.yz32 = b.sext(yz, I32) if out.dtype == "int8" else b.zext(yz, I32)
        yzf = b.sitofp(self.yz32, F32)
        low = b.fsub(ir.Constant(F32, float(lo)), yzf)
        high = b.fsub(ir.Constant(F32, float(hi)), yzf)
        if q.activation == "relu":
            low = b.select(b.fcmp_ordered(">", low, ir.Constant(F32, 0.0)), low, ir.Constant(F32, 0.0))
        if q.max_value is not None:
            top = b.fdiv(ir.Constant(F32, float(q.max_value)), sy)
            top = b.select(b.fcmp_ordered("<", top, ir.Constant(F32, 4194304.0)), top, ir.Constant(F32, 4194304.0))
            top = b.fsub(b.fadd(top, ir.Constant(F32, _ROUNDER)), ir.Constant(F32, _ROUNDER))
            high = b.select(b.fcmp_ordered("<", top, high), top, high)
        self.low, self.high = low, high
        self.k = k

    def splat(self, v, n):
        return v if n == 1 else self.k.splat(v, n)

    def bytes_of(self, acc: ir.Value, mult_v: ir.Value, n: int, rounding_convert: bool = False) -> ir.Value:
        """:meth:`ints_of` narrowed to bytes."""
        return self.b.trunc(self.ints_of(acc, mult_v, n, rounding_convert), I8 if n == 1 else ir.VectorType(I8, n))

    def ints_of(self, acc: ir.Value, mult_v: ir.Value, n: int, rounding_convert: bool = False) -> ir.Value:
        """int32 sums (``n`` lanes, or a scalar when n is 1) scaled, clamped, rounded half to even and
        offset by the output's zero point: the output's values, in int32. ``rounding_convert`` (16 lanes of an
        x86 target): one ``vcvtps2dq`` rounding to nearest even instead of ``(t + 1.5 * 2^23) - 1.5 * 2^23``,
        the same bits."""
        b = self.b
        ft = F32 if n == 1 else ir.VectorType(F32, n)
        t = b.fmul(b.sitofp(acc, ft), mult_v)
        lo_v, hi_v = self.splat(self.low, n), self.splat(self.high, n)
        t = b.select(b.fcmp_ordered("<", t, lo_v), lo_v, t)
        t = b.select(b.fcmp_ordered(">", t, hi_v), hi_v, t)
        it = I32 if n == 1 else ir.VectorType(I32, n)
        if rounding_convert and n == 16:
            fn = intrinsic(b.module, "llvm.x86.avx512.mask.cvtps2dq.512", it, [ft, it, ir.IntType(16), I32])
            v = b.call(fn, [t, ir.Constant(it, ir.Undefined), ir.Constant(ir.IntType(16), -1), i32(8)])
        else:
            rounder = self.splat(ir.Constant(F32, _ROUNDER), n)
            v = b.fptosi(b.fsub(b.fadd(t, rounder), rounder), it)
        return b.add(v, self.splat(self.yz32, n))


def emit_qdepthwise(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, q, *, geometry: dict) -> None:
    """``out`` = the depthwise convolution of ``x`` by ``w`` (*k, 1, C), requantized (``q``: gemm_int8's
    Requant, without a residual). ``geometry`` as gemm_int8's im2col reads it (2-D, 1-D given as 1 x W)."""
    if q.residual is not None:
        raise NativeLoweringError("qlinear_conv: a depthwise convolution with a residual is not run natively")
    plan = StreamPlan.of(kb, geometry)
    kh, kw = geometry["kernel"]
    cost = max(1, kh * kw * geometry["C"]) * 4
    if plan is None:
        kb.launch(_emit_by_channels(kb, x, w, out, q, geometry), dims.mul(x.shape[0], geometry["OH"]), cost=cost)
    else:
        kb.launch(_emit_streams(kb, x, w, out, q, plan), dims.mul(x.shape[0], plan.blocks), cost=cost * plan.R)


class StreamPlan:
    """Sizes of the stream kernel for one geometry (see the module docstring)."""

    def __init__(self, g: dict, lanes: int, group: int, esize: int):
        self.g, self.L, self.G, self.esize = g, lanes, group, esize
        C, OW, W, OH = g["C"], g["OW"], g["W"], g["OH"]
        (_, sw), (_, dw), (kh, kw) = g["strides"], g["dilations"], g["kernel"]
        # two output rows per work item share the streams where that takes no more row groups (3x3, stride 1:
        # input rows oh .. oh + 3 in one group of four serve output rows oh and oh + 1)
        self.R = 1
        if isinstance(OH, int) and OH > 1 and -(-len(self._offsets(2)) // group) == -(-len(self._offsets(1)) // group):
            self.R = 2
        self.offsets = self._offsets(self.R)  # the streams' input rows, from the block's first output row's first
        self.groups = -(-len(self.offsets) // group)  # row groups
        self.blocks = -(-OH // self.R) if self.R > 1 else OH  # work items per image
        # the (output row of the block, row group) pairs with taps, each with a table per kernel column
        self.entries = [(t, r) for t in range(self.R) for r in range(self.groups)
                        if any(self.byte_of(t, i) // group == r for i in range(kh))]
        self.N = OW * C  # lanes of an output row
        NL = -(-self.N // lanes) * lanes
        self.P = math.lcm(C, lanes)  # the tables' period
        if sw == 1:  # one stream per row group, read at kw offsets
            self.width = (OW - 1) + (kw - 1) * dw + 1  # input columns -pw .. as stream columns
            self.streams = self.groups
            needed = max((kw - 1) * dw * C + NL, self.width * C)
        else:  # one stream per row group and kernel column, already strided
            self.width = OW
            self.streams = self.groups * kw
            needed = NL
        self.stream_len = (-(-needed // lanes) + 1) * lanes  # int32 lanes, a vector of slack
        self.table_bytes = (len(self.entries) * kw + 2) * self.P * 4
        self.stream_bytes = self.streams * self.stream_len * 4
        self.W = W

    @classmethod
    def of(cls, kb: KernelBuilder, g: dict) -> StreamPlan | None:
        if not all(isinstance(g[d], int) for d in ("W", "OW")) or g["OW"] < 1:
            return None
        path = dot_path(kb.target)
        plan = cls(g, path.lanes, path.group, path.esize)
        if plan.table_bytes > TABLE_BYTES or plan.stream_bytes > STREAM_BYTES:
            return None
        return plan

    def _offsets(self, R: int) -> list[int]:
        (sh, _), (dh, _), (kh, _) = self.g["strides"], self.g["dilations"], self.g["kernel"]
        return sorted({t * sh + i * dh for t in range(R) for i in range(kh)})

    def byte_of(self, t: int, i: int) -> int:
        """Where kernel row ``i`` of the block's output row ``t`` lies in the streams: group * G + byte."""
        (sh, _), (dh, _) = self.g["strides"], self.g["dilations"]
        return self.offsets.index(t * sh + i * dh)

    def tap(self, r: int, j: int) -> tuple[int, int]:
        """(stream, lane offset) that row group ``r``'s kernel column ``j`` reads at output lane 0."""
        g = self.g
        if g["strides"][1] == 1:
            return r, j * g["dilations"][1] * g["C"]
        return r * g["kernel"][1] + j, 0


def _emit_streams(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, q, plan: StreamPlan) -> Kernel:
    g = plan.g
    C, L, G, P, N = g["C"], plan.L, plan.G, plan.P, plan.N
    (sh, sw), (_, dw), (ph, pw), (kh, kw) = g["strides"], g["dilations"], g["pads"], g["kernel"]
    W, OW = g["W"], g["OW"]
    path = dot_path(kb.target)
    k = kb.kernel("qdepthwise_streams")
    fb, b = k.fn, k.b
    H, OH = k.dim(g["H"]), k.dim(g["OH"])
    px, pwt, pout, pbias = k.ptr(x), k.ptr(w), k.ptr(out), k.ptr(q.bias)
    vi32, vi8, vf32 = ir.VectorType(I32, L), ir.VectorType(I8, L), ir.VectorType(F32, L)
    shift = 8 * plan.esize  # bits between a lane's elements

    # ---- the thread's scratch: multipliers per channel, then the tables (P lanes each), then the streams
    mult_bytes = -(-C * 4 // 64) * 64
    row_bytes = W * C
    pad_bytes = -(-row_bytes // 64) * 64
    base = k.thread_scratch(mult_bytes + plan.table_bytes + plan.stream_bytes + pad_bytes)

    def at(offset_bytes: int):
        return b.gep(base, [i64(offset_bytes)], source_etype=I8)

    mult = at(0)
    ep = _Epilogue(k, x, out, q, C, mult)
    ntaps = len(plan.entries) * kw
    wtab = at(mult_bytes)  # [entry * kw + j][P] int32: the weights of G stream rows per lane (zero: no tap)
    btab = at(mult_bytes + ntaps * P * 4)  # [P] int32: bias - z * sum of the channel's weights
    mtab = at(mult_bytes + (ntaps + 1) * P * 4)  # [P] float32: the channel's multiplier
    streams = at(mult_bytes + plan.table_bytes)
    pad_row = at(mult_bytes + plan.table_bytes + plan.stream_bytes)  # an input row of zero points
    zu = b.add(ep.xz32, i32(128)) if ep.signed else ep.xz32  # the unsigned input's zero point

    # ---- per call: the tables
    with fb.loop(0, P, name="lane") as m:
        c = b.urem(m, i64(C))
        wsum = i32(0)
        for i in range(kh):
            for j in range(kw):
                wb = b.load(b.gep(pwt, [b.add(i64((i * kw + j) * C), c)], source_etype=I8), typ=I8)
                wsum = b.add(wsum, b.sext(wb, I32))
        for n, (t, r) in enumerate(plan.entries):
            for j in range(kw):
                lane = i32(0)
                for i in range(kh):
                    e = plan.byte_of(t, i) - r * G
                    if not 0 <= e < G:
                        continue
                    wb = b.load(b.gep(pwt, [b.add(i64((i * kw + j) * C), c)], source_etype=I8), typ=I8)
                    elem = b.zext(b.sext(wb, path.elem), I32) if plan.esize == 2 else b.zext(wb, I32)
                    lane = b.or_(lane, b.shl(elem, i32(shift * e)) if e else elem)
                b.store(lane, b.gep(wtab, [b.add(i64((n * kw + j) * P), m)], source_etype=I32))
        bias = b.load(b.gep(pbias, [c], source_etype=I32), typ=I32)
        b.store(b.sub(bias, b.mul(zu, wsum)), b.gep(btab, [m], source_etype=I32))
        b.store(b.load(b.gep(mult, [c], source_etype=F32), typ=F32), b.gep(mtab, [m], source_etype=F32))

    pad_lane = i32(0)  # every element the zero point
    zu_const = zu
    for e in range(G):
        pad_lane = b.or_(pad_lane, b.shl(zu_const, i32(shift * e)) if e else zu_const)
    pad_v = k.splat(pad_lane, L)
    with fb.loop(0, row_bytes, name="padrow") as p:
        b.store(ep.xz8, b.gep(pad_row, [p], source_etype=I8))

    def lanes_of(row_ptrs, n: int, col_ok=None):
        """``n`` int32 lanes from ``n`` bytes at each row pointer: ``G`` rows' unsigned bytes per lane, the
        zero point where the column lies outside the input (rows outside read the row of zero points)."""
        vt8, vt32 = ir.VectorType(I8, n), ir.VectorType(I32, n)
        lane = None
        for e, p in enumerate(row_ptrs):
            v = b.load(p, typ=vt8, align=1)
            if col_ok is not None:
                v = b.select(col_ok, v, k.splat(ep.xz8, n))
            if ep.signed:
                v = b.xor(v, k.splat(ir.Constant(I8, -128), n))
            v = b.zext(v, vt32)
            if e:
                v = b.shl(v, k.splat(i32(shift * e), n))
            lane = v if lane is None else b.or_(lane, v)
        for e in range(len(row_ptrs), G):  # rows past the kernel: any value (their weights are zero)
            lane = b.or_(lane, k.splat(b.shl(zu, i32(shift * e)), n))
        return lane

    packed = path.name == "vnni512"
    if packed:
        vi16 = ir.VectorType(ir.IntType(16), 2 * L)
        pack_dw = intrinsic(b.module, "llvm.x86.avx512.packssdw.512", vi16, [vi32, vi32])
        pack_wb = intrinsic(b.module, f"llvm.x86.avx512.pack{'ss' if out.dtype == 'int8' else 'us'}wb.512",
                            ir.VectorType(I8, 4 * L), [vi16, vi16])

    def stream_ptr(s: int, lane):
        return b.gep(streams, [b.add(i64(s * plan.stream_len), lane)], source_etype=I32)

    def store_lanes(v, p):
        b.store(v, b.bitcast(p, v.type.as_pointer()), align=4)

    def output_row(t: int, orow) -> None:
        """Output row ``t`` of the block (``orow``: its index among the batch's rows) from the streams, narrowed
        by packs four vectors at once on vnni512."""
        out_row = b.mul(orow, i64(N))
        taps = [(n * kw + j, *plan.tap(r, j)) for n, (tt, r) in enumerate(plan.entries) if tt == t for j in range(kw)]

        def chunk(q0, m) -> ir.Value:
            """The output's int32 values at lanes ``q0 ..`` of the row (``m``: their place in the tables)."""
            acc = b.load(b.gep(btab, [m], source_etype=I32), typ=vi32, align=4)
            for table, s, off in taps:
                a = b.load(b.bitcast(stream_ptr(s, b.add(q0, i64(off))), vi32.as_pointer()), typ=vi32, align=4)
                wv = b.load(b.gep(wtab, [b.add(i64(table * P), m)], source_etype=I32), typ=vi32, align=4)
                acc = _dot(b, path, acc, a, wv)
            mv = b.load(b.gep(mtab, [m], source_etype=F32), typ=vf32, align=4)
            return ep.ints_of(acc, mv, L, rounding_convert=packed)

        def out_ptr(q0, typ):
            return b.bitcast(b.gep(pout, [b.add(out_row, q0)], source_etype=I8), typ.as_pointer())

        def store_chunk(q0, m) -> None:
            b.store(b.trunc(chunk(q0, m), vi8), out_ptr(q0, vi8), align=1)

        def store_four(q0, phase: int) -> None:
            """Four vectors of lanes from ``q0`` (``phase``: the first one's place in the tables) narrowed by
            saturating packs (exact: the values lie in the output's range), one 64-byte store."""
            v = [chunk(b.add(q0, i64(u * L)), i64((phase + u * L) % P)) for u in range(4)]
            ab, cd = (b.call(pack_dw, [v[0], v[1]]), b.call(pack_dw, [v[2], v[3]]))
            dwords = b.bitcast(b.call(pack_wb, [ab, cd]), vi32)  # 128-bit lane k: dwords k of v0, v1, v2, v3
            order = b.shuffle_vector(dwords, ir.Constant(vi32, ir.Undefined),
                                     ir.Constant(vi32, [i32(4 * k + u) for u in range(4) for k in range(4)]))
            b.store(order, out_ptr(q0, vi32), align=1)

        def store_run(q0, phase: int, count: int) -> None:
            """``count`` vectors of lanes from ``q0``, fours packed where the target has the packs."""
            u = 0
            while u < count:
                if packed and count - u >= 4:
                    store_four(b.add(q0, i64(u * L)), phase + u * L)
                    u += 4
                else:
                    store_chunk(b.add(q0, i64(u * L)), i64((phase + u * L) % P))
                    u += 1

        whole = N - N % L
        span = math.lcm(P, 4 * L) if packed else P  # lanes after which the tables' offsets repeat
        if whole and span // L <= UNROLL_VECTORS:
            # whole spans with the tables' offsets constant, then the vectors left
            spans = whole - whole % span
            with fb.loop(0, spans, span, name="span") as q0:
                store_run(q0, 0, span // L)
            store_run(i64(spans), 0, (whole - spans) // L)
        elif whole:
            phase = fb.var(ir.IntType(64), name="phase")  # the lane's place in the tables' period
            phase.set(i64(0))
            with fb.loop(0, whole, L, name="q") as q0:
                m = phase.get()
                store_chunk(q0, m)
                nxt = b.add(m, i64(L))
                phase.set(b.select(b.icmp_unsigned("==", nxt, i64(P)), i64(0), nxt))
        if N % L:
            rest = N % L
            qv = b.trunc(chunk(i64(whole), i64(whole % P)), vi8)
            part = b.shuffle_vector(qv, ir.Constant(vi8, ir.Undefined), ir.Constant(ir.VectorType(I32, rest),
                                                                                  [i32(t) for t in range(rest)]))
            b.store(part, b.bitcast(b.gep(pout, [b.add(out_row, i64(whole))], source_etype=I8),
                                    part.type.as_pointer()), align=1)

    blocks = k.dim(plan.blocks)
    with fb.loop(k.begin, k.end, name="oblock") as item:
        n_, oh0 = b.sdiv(item, blocks), b.mul(b.srem(item, blocks), i64(plan.R))
        # each stream row's input row (rows outside the input read the row of zero points)
        rows = []
        for o in plan.offsets:
            ih = b.add(b.mul(oh0, i64(sh)), i64(o - ph))
            ok = b.and_(b.icmp_signed(">=", ih, i64(0)), b.icmp_signed("<", ih, H))
            ih_c = b.select(ok, ih, i64(0))
            row = b.gep(px, [b.mul(b.add(b.mul(n_, H), ih_c), i64(row_bytes))], source_etype=I8)
            rows.append(b.select(ok, row, pad_row))
        for r in range(plan.groups):
            group_rows = rows[r * G:(r + 1) * G]
            if sw == 1:
                # stream column u is input column u - pw: padding columns, then the input rows flat
                s = r
                left, inside = pw * C, min(W, plan.width - pw) * C
                with fb.loop(0, left, L, name="padl") as p:
                    store_lanes(pad_v, stream_ptr(s, p))
                right0 = left + max(inside, 0)
                with fb.loop(right0, plan.width * C, L, name="padr") as p:
                    store_lanes(pad_v, stream_ptr(s, p))
                if inside > 0:
                    whole = inside - inside % L
                    with fb.loop(0, whole, L, name="flat") as p:
                        v = lanes_of([b.gep(rp, [p], source_etype=I8) for rp in group_rows], L)
                        store_lanes(v, stream_ptr(s, b.add(p, i64(left))))
                    if inside % L:
                        v = lanes_of([b.gep(rp, [i64(whole)], source_etype=I8) for rp in group_rows], inside % L)
                        store_lanes(v, stream_ptr(s, i64(left + whole)))
                continue
            for j in range(kw):
                s = r * kw + j
                with fb.loop(0, OW, name="scol") as ow:
                    iw = b.add(b.mul(ow, i64(sw)), i64(j * dw - pw))
                    col_ok = b.and_(b.icmp_signed(">=", iw, i64(0)), b.icmp_signed("<", iw, i64(W)))
                    src = b.mul(b.select(col_ok, iw, i64(0)), i64(C))
                    dst = b.mul(ow, i64(C))
                    whole = C - C % L

                    def column(c0, n, src=src, dst=dst, col_ok=col_ok, s=s, group_rows=group_rows):
                        v = lanes_of([b.gep(rp, [b.add(src, c0)], source_etype=I8) for rp in group_rows], n, col_ok)
                        store_lanes(v, stream_ptr(s, b.add(dst, c0)))

                    if whole:
                        with fb.loop(0, whole, L, name="sch") as c0:
                            column(c0, L)
                    if C % L:
                        column(i64(whole), C % L)

        # ---- the product along each flattened output row of the block
        for t in range(plan.R):
            orow = b.add(b.mul(n_, OH), b.add(oh0, i64(t)))
            if t == 0 or g["OH"] % plan.R == 0:
                output_row(t, orow)
            else:  # the image's last block has one row fewer
                with b.if_then(b.icmp_signed("<", b.add(oh0, i64(t)), OH)):
                    output_row(t, orow)
    return k


def _emit_by_channels(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, q, g: dict) -> Kernel:
    """The first kernel: bytes widened to int32 lanes and multiplied lane by lane, ``LANES`` channels
    per vector (the remainder one channel at a time), each block of channels with its weights in
    registers along an output row; taps outside the input skipped (padding with the zero point)."""
    C = g["C"]
    (sh, sw), (dh, dw), (ph, pw), (kh, kw) = g["strides"], g["dilations"], g["pads"], g["kernel"]
    k = kb.kernel("qdepthwise")
    fb, b = k.fn, k.b
    H, W, OH, OW = (k.dim(g[d]) for d in ("H", "W", "OH", "OW"))
    px, pw_, pout, pbias = k.ptr(x), k.ptr(w), k.ptr(out), k.ptr(q.bias)
    mult = k.thread_scratch(-(-C * 4 // 64) * 64)
    ep = _Epilogue(k, x, out, q, C, mult)
    signed, xz32, splat = ep.signed, ep.xz32, ep.splat

    def load(ptr, at, n, ety):
        p = b.gep(ptr, [at], source_etype=ety)
        return b.load(p, typ=ety if n == 1 else ir.VectorType(ety, n), align=1)

    def widen(v, n, is_signed):
        t = I32 if n == 1 else ir.VectorType(I32, n)
        return b.sext(v, t) if is_signed else b.zext(v, t)

    def channels(rows, ow, c0, n: int, weights, bias, mult_v, out_row) -> None:
        """Output channels [c0, c0 + n) of pixel ``ow`` of the row: ``n`` lanes, or one channel when n is 1.
        ``rows``: (input row offset, row inside the input) per kernel row; ``weights``: widened per tap."""
        acc = fb.var(I32 if n == 1 else ir.VectorType(I32, n), name=f"dw_acc{n}")
        acc.set(bias)
        zx = splat(xz32, n)
        for i, (row_at, h_ok) in enumerate(rows):
            for j in range(kw):
                iw = b.add(b.mul(ow, i64(sw)), i64(j * dw - pw))
                ok = b.and_(h_ok, b.and_(b.icmp_signed(">=", iw, i64(0)), b.icmp_signed("<", iw, W)))
                with b.if_then(ok):
                    xv = b.sub(widen(load(px, b.add(b.mul(b.add(row_at, iw), i64(C)), c0), n, I8), n, signed), zx)
                    acc.set(b.add(acc.get(), b.mul(xv, weights[i * kw + j])))
        qv = ep.bytes_of(acc.get(), mult_v, n)
        at = b.add(b.mul(b.add(out_row, ow), i64(C)), c0)
        b.store(qv, b.gep(pout, [at], source_etype=I8), align=1)

    def block(rows, out_row, c0, n: int) -> None:
        """Channels [c0, c0 + n) over the output row: their weights, bias and multipliers loaded once."""
        weights = [widen(load(pw_, b.add(i64(tap * C), c0), n, I8), n, True) for tap in range(kh * kw)]
        bias, mult_v = load(pbias, c0, n, I32), load(mult, c0, n, F32)
        with fb.loop(0, OW, name="ow") as ow:
            channels(rows, ow, c0, n, weights, bias, mult_v, out_row)

    whole = C - C % LANES
    with fb.loop(k.begin, k.end, name="orow") as item:
        n_, oh = b.sdiv(item, OH), b.srem(item, OH)
        rows = []
        for i in range(kh):
            ih = b.add(b.mul(oh, i64(sh)), i64(i * dh - ph))
            h_ok = b.and_(b.icmp_signed(">=", ih, i64(0)), b.icmp_signed("<", ih, H))
            rows.append((b.mul(b.add(b.mul(n_, H), ih), W), h_ok))
        out_row = b.mul(item, OW)
        if whole:
            with fb.loop(0, whole, LANES, name="cv") as c0:
                block(rows, out_row, c0, LANES)
        for c in range(whole, C):
            block(rows, out_row, i64(c), 1)
    return k
