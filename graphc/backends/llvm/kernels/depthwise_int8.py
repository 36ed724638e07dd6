"""Depthwise int8 convolution: ``qlinear_conv`` with one group per channel (a separable convolution's
first half), channels-last.

``out[n, oh, ow, c] = requantize(sum_taps (x[n, ih, iw, c] - x_zero) * w[tap, c] + bias[c])`` with the
epilogue of :mod:`graphc.ops.qlinear` (the same float32 steps as :mod:`.gemm_int8`'s, so the same
bits). A depthwise product has no reduction over channels to feed a dot product instruction: each
channel is its own lane, so the kernel widens bytes to int32 lanes and multiplies lane by lane,
``lanes`` channels per vector (the remainder one channel at a time), each block of channels with its weights
in registers along an output row. Taps outside the input are skipped, which is padding with the
zero point. A work item is one output row of one image.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I8, I32, i64
from graphc.ir import dims
from graphc.ops.quantize import QRANGE

_ROUNDER = 12582912.0  # 1.5 * 2^23, as gemm_int8's epilogue rounds
LANES = 16


def is_depthwise(x: Tensor, w: Tensor, out: Tensor, groups: int) -> bool:
    """One group per input channel and one output channel per group (depth multiplier 1)."""
    c = x.shape[-1]
    return isinstance(c, int) and groups == c > 1 and w.shape[-2] == 1 and w.shape[-1] == c == out.shape[-1]


def emit_qdepthwise(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, q, *, geometry: dict) -> None:
    """``out`` = the depthwise convolution of ``x`` by ``w`` (*k, 1, C), requantized (``q``: gemm_int8's
    Requant, without a residual). ``geometry`` as gemm_int8's im2col reads it (2-D, 1-D given as 1 x W)."""
    if q.residual is not None:
        raise NativeLoweringError("qlinear_conv: a depthwise convolution with a residual is not run natively")
    g = geometry
    C = g["C"]
    (sh, sw), (dh, dw), (ph, pw), (kh, kw) = g["strides"], g["dilations"], g["pads"], g["kernel"]
    k = kb.kernel("qdepthwise")
    fb, b = k.fn, k.b
    H, W, OH, OW = (k.dim(g[d]) for d in ("H", "W", "OH", "OW"))
    px, pw_, pout, pbias = k.ptr(x), k.ptr(w), k.ptr(out), k.ptr(q.bias)

    # ---- per call: the float32 multiplier of each channel, float32(x_scale * w_scale) / y_scale
    mult = k.thread_scratch(-(-C * 4 // 64) * 64)
    sx = b.load(k.ptr(q.x_scale), typ=F32)
    sy = b.load(k.ptr(q.y_scale), typ=F32)
    pws = k.ptr(q.w_scale)
    per_channel = q.w_scale.rank == 1
    with fb.loop(0, C, name="col") as c:
        ws = b.load(b.gep(pws, [c if per_channel else i64(0)], source_etype=F32), typ=F32)
        b.store(b.fdiv(b.fmul(sx, ws), sy), b.gep(mult, [c], source_etype=F32))
    signed = x.dtype == "int8"
    xz = b.load(k.ptr(q.x_zero), typ=I8)
    xz32 = b.sext(xz, I32) if signed else b.zext(xz, I32)
    lo, hi = QRANGE[out.dtype]
    yz = b.load(k.ptr(q.y_zero), typ=I8)
    yz32 = b.sext(yz, I32) if out.dtype == "int8" else b.zext(yz, I32)
    yzf = b.sitofp(yz32, F32)
    low = b.fsub(ir.Constant(F32, float(lo)), yzf)
    high = b.fsub(ir.Constant(F32, float(hi)), yzf)
    if q.activation == "relu":
        low = b.select(b.fcmp_ordered(">", low, ir.Constant(F32, 0.0)), low, ir.Constant(F32, 0.0))
    if q.max_value is not None:
        top = b.fdiv(ir.Constant(F32, float(q.max_value)), sy)
        top = b.select(b.fcmp_ordered("<", top, ir.Constant(F32, 4194304.0)), top, ir.Constant(F32, 4194304.0))
        top = b.fsub(b.fadd(top, ir.Constant(F32, _ROUNDER)), ir.Constant(F32, _ROUNDER))
        high = b.select(b.fcmp_ordered("<", top, high), top, high)

    def splat(v, n):
        return v if n == 1 else k.splat(v, n)

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
        ft = F32 if n == 1 else ir.VectorType(F32, n)
        t = b.fmul(b.sitofp(acc.get(), ft), mult_v)
        lo_v, hi_v = splat(low, n), splat(high, n)
        t = b.select(b.fcmp_ordered("<", t, lo_v), lo_v, t)
        t = b.select(b.fcmp_ordered(">", t, hi_v), hi_v, t)
        rounder = splat(ir.Constant(F32, _ROUNDER), n)
        t = b.fsub(b.fadd(t, rounder), rounder)
        it = I32 if n == 1 else ir.VectorType(I32, n)
        qv = b.trunc(b.add(b.fptosi(t, it), splat(yz32, n)), I8 if n == 1 else ir.VectorType(I8, n))
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
    taps = kh * kw
    kb.launch(k, dims.mul(x.shape[0], g["OH"]), cost=max(1, taps * C) * 4)

