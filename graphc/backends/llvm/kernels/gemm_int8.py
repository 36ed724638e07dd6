"""int8 products: ``qlinear_matmul`` and ``qlinear_conv`` as an integer GEMM with a requantizing epilogue.

``out[M, N] = requantize(sum_k (A[m, k] - x_zero) * W[k, n] + bias[n])`` (see :mod:`graphc.ops.qlinear`
for the exact definition), with ``W`` a (K, N) int8 weight (a convolution's kernel (*k, C, O) is
one, read through im2col).

The dot product is chosen at build time from the target (:func:`dot_path`):

- ``vnni512`` (AVX512-VNNI): ``vpdpbusd`` on 512-bit vectors, 16 int32 lanes each summing four
  u8 x s8 products of consecutive k; ``vnni256`` (AVX-VNNI, or AVX512-VNNI on 256-bit vectors);
- ``pmaddwd512`` (AVX512-BW), ``pmaddwd256`` (AVX2): ``vpmaddwd`` on operands widened to int16,
  each int32 lane summing two products of consecutive k. Widening avoids ``vpmaddubsw``'s int16
  saturation (255 * 127 * 2 > 32767), at half the products per instruction;
- ``generic`` (any other target): the same int16 pairs with plain vector multiplies, which
  LLVM turns into the target's own pairwise products where it has them.

``vpdpbusd`` multiplies *unsigned* bytes of A by signed bytes of W. A uint8 input is that
already; an int8 input is made unsigned by adding 128 (flipping its top bit while its rows are
copied). Either way the kernel computes ``sum_k a_u * w`` and the input's effective zero point
``z = x_zero (+ 128)`` comes back as a per-column correction: ``acc = sum_k a_u * w - z * colsum(W)
+ bias``. The column sums are computed with the packed weights, once per instance.

Layout: W is packed in the model's prepare function into panels of ``NR = NV * lanes`` columns,
``panel[p][kg][NR][g]`` with ``g`` (4 bytes or 2 int16) consecutive k in each 32-bit lane,
zero past K and N, followed by the column sums (int32). A work item is a block of rows: they
are copied (dense A) or gathered (im2col, padding with the input's zero point) into the thread's
tile, ``g``-aligned rows of the unsigned (and for int16 paths widened) values, zero past K; then
for each panel (kept in L1 while the block's micro-tiles pass), micro-tiles of ``MR`` rows keep
``MR x NV`` int32 vectors in registers over all of K, and the epilogue (correction, float32
multiplier per column, clamp, round half to even, zero point, narrowing) runs on those registers
before one byte per output is stored. With a
residual, the epilogue is the QDQ graph's float one instead (scale, relu, the dequantized
residual, relu, division by the output scale) before the same clamp and rounding.

AMX (``amx-int8``, with ``vnni512``): ``tdpbusd`` multiplies a tile of 16 rows x 64 unsigned bytes
of A by a tile of 16 rows of 16 columns x 4 signed bytes of W, the ``vnni512`` panel layout as it
is (a panel of NR = 32 columns is two B tiles side by side, 128 bytes per k group), so only K is
padded further: to whole steps of 64 k (16 groups), zeros in the panels and in A's tile rows. The
micro-kernel is then :func:`.gemm_bf16.amx_compute`'s 32 x 32 block of C in four tiles, stored into
the thread's scratch, and the same epilogue reads its int32 rows back from there. Blocks of fewer
rows (the last rows of M, a batch-1 Dense) run whole on stale rows of the tile, only their valid rows
stored: measured, a 32-row block is no slower than ``vpdpbusd`` micro-tiles even for one row (the
weights' bytes bound both). A product over fewer than ``AMX_MIN_K`` k stays on ``vpdpbusd``: its tile
rows would be mostly padding (a 1x1 convolution over 3 channels: 3 of 64 bytes), and measured on
separable_conv_bn's pointwise products, K = 3 ran 1.5x faster on ``vpdpbusd`` and K = 32 1.2x faster on
tiles. ``GRAPHC_INT8_KERNEL=vnni`` keeps ``vpdpbusd`` on an AMX machine (for comparisons).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.llvm import switches
from graphc.backends.llvm.builder import Kernel, KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I8, I32, I64, i32, i64, intrinsic, vector_constant
from graphc.backends.llvm.kernels.gemm_bf16 import AMX_PAIRS, AMX_ROWS, amx_begin, amx_call, amx_compute
from graphc.backends.llvm.target import TargetInfo
from graphc.ir import dims
from graphc.ops.quantize import QRANGE

I16 = ir.IntType(16)
_ROUNDER = 12582912.0  # 1.5 * 2^23: (t + R) - R rounds |t| < 2^22 half to even in float32
COPY_VECTOR = 16  # elements per vector copied into the tile
TILE_BYTES = 256 * 1024  # the A tile of a work item stays well inside L2
ENV_KERNEL = switches.INT8_KERNEL.name
AMX_BLOCK = 2 * AMX_ROWS  # rows of C per AMX micro-kernel (two A tiles)
AMX_MIN_K = 16  # products over fewer k run on vpdpbusd (see the module docstring)


@dataclass(frozen=True)
class DotPath:
    """How one int32 lane accumulates ``group`` products of consecutive k."""

    name: str
    lanes: int  # int32 lanes per vector
    group: int  # k values per lane: 4 (bytes, VNNI) or 2 (int16 pairs)

    @property
    def elem(self) -> ir.IntType:
        return I8 if self.group == 4 else I16

    @property
    def esize(self) -> int:
        return 1 if self.group == 4 else 2


def _features(target: TargetInfo) -> set[str]:
    return {f[1:] for f in target.features.split(",") if f.startswith("+")}


def dot_path(target: TargetInfo) -> DotPath:
    """The best dot product ``target`` has (see the module docstring)."""
    have = _features(target) if target.arch == "x86_64" else set()
    wide = target.vector_bits >= 512 and "avx512f" in have
    if wide and "avx512vnni" in have:
        return DotPath("vnni512", 16, 4)
    if "avxvnni" in have or ("avx512vnni" in have and "avx512vl" in have):
        return DotPath("vnni256", 8, 4)
    if wide and "avx512bw" in have:
        return DotPath("pmaddwd512", 16, 2)
    if "avx2" in have:
        return DotPath("pmaddwd256", 8, 2)
    return DotPath("generic", 4, 2)


def uses_amx(target: TargetInfo) -> bool:
    """Whether int8 products run on AMX tiles for ``target`` (else on :func:`dot_path`'s instructions)."""
    return target.has_amx_int8 and dot_path(target).name == "vnni512" and switches.INT8_KERNEL.value() != "vnni"


def micro_tile(path: DotPath, target: TargetInfo) -> tuple[int, int]:
    """(MR rows, NV vectors) of the register tile: MR * NV accumulators, NV weight vectors and a
    broadcast in the target's vector registers."""
    return (8, 2) if target.num_vector_registers >= 32 else (4, 2)


def _dot(b: ir.IRBuilder, path: DotPath, acc: ir.Value, a: ir.Value, w: ir.Value) -> ir.Value:
    """``acc + dot(a, w)`` per int32 lane (a: the broadcast group of A, w: the panel's; <lanes x i32>)."""
    vt = ir.VectorType(I32, path.lanes)
    if path.name.startswith("vnni"):
        fn = intrinsic(b.module, f"llvm.x86.avx512.vpdpbusd.{path.lanes * 32}", vt, [vt, vt, vt])
        return b.call(fn, [acc, a, w])
    ht = ir.VectorType(I16, 2 * path.lanes)
    ah, wh = b.bitcast(a, ht), b.bitcast(w, ht)
    if path.name == "pmaddwd512":
        fn = intrinsic(b.module, "llvm.x86.avx512.pmaddw.d.512", vt, [ht, ht])
        return b.add(acc, b.call(fn, [ah, wh]))
    if path.name == "pmaddwd256":
        fn = intrinsic(b.module, "llvm.x86.avx2.pmadd.wd", vt, [ht, ht])
        return b.add(acc, b.call(fn, [ah, wh]))
    wide = ir.VectorType(I32, 2 * path.lanes)
    prod = b.mul(b.sext(ah, wide), b.sext(wh, wide))
    undef = ir.Constant(wide, ir.Undefined)
    even = b.shuffle_vector(prod, undef, ir.Constant(vt, [i32(2 * i) for i in range(path.lanes)]))
    odd = b.shuffle_vector(prod, undef, ir.Constant(vt, [i32(2 * i + 1) for i in range(path.lanes)]))
    return b.add(acc, b.add(even, odd))


# ---------------------------------------------------------------------------- weights

def _pack_weights(K: int, N: int, NR: int, path: DotPath, KG: int) -> Callable:
    """Emitter of the packed panels ``dst[p][kg][j][e] = W[kg * g + e][p * NR + j]`` (``KG`` groups each,
    0 outside K x N) followed by the column sums ``sum_k W[k][n]`` (int32, 0 past N)."""
    g, et = path.group, path.elem
    P = -(-N // NR)
    sums_at = _sums_offset(N, NR, path, KG)

    def emit(fn, src, dst):
        b = fn.b
        with fn.loop(0, P, name="p") as p:
            with fn.loop(0, KG, name="kg") as kg:
                with fn.loop(0, NR, name="j") as j:
                    col = b.add(b.mul(p, i64(NR)), j)
                    for e in range(g):
                        kk = b.add(b.mul(kg, i64(g)), i64(e))
                        ok = b.and_(b.icmp_signed("<", col, i64(N)), b.icmp_signed("<", kk, i64(K)))
                        at = b.select(ok, b.add(b.mul(kk, i64(N)), col), i64(0))
                        v = b.load(b.gep(src, [at], source_etype=I8), typ=I8)
                        v = b.select(ok, v, ir.Constant(I8, 0))
                        v = v if et == I8 else b.sext(v, et)
                        di = b.add(b.mul(b.add(b.mul(b.add(b.mul(p, i64(KG)), kg), i64(NR)), j), i64(g)), i64(e))
                        b.store(v, b.gep(dst, [di], source_etype=et))
        sums = b.gep(dst, [i64(sums_at)], source_etype=I8)
        with fn.loop(0, P * NR, name="n") as n:
            total = fn.var(I32, 0, name="colsum")
            with b.if_then(b.icmp_signed("<", n, i64(N))):
                with fn.loop(0, K, name="k") as kk:
                    v = b.load(b.gep(src, [b.add(b.mul(kk, i64(N)), n)], source_etype=I8), typ=I8)
                    total.set(b.add(total.get(), b.sext(v, I32)))
            b.store(total.get(), b.gep(sums, [n], source_etype=I32))
            total.set(i32(0))

    return emit


def _sums_offset(N: int, NR: int, path: DotPath, KG: int) -> int:
    panels = -(-N // NR) * KG * NR * path.group * path.esize
    return -(-panels // 64) * 64


def packed_int8(kb: KernelBuilder, w: Tensor, NR: int, path: DotPath, KG: int) -> Tensor:
    """``w`` (K, N) in panels of ``KG`` groups of k (at least ``ceil(K / g)``), then its column sums."""
    K, N = w.shape
    nbytes = _sums_offset(N, NR, path, KG) + -(-N // NR) * NR * 4
    return kb.packed_weight(w, ("int8", path.name, NR, KG), nbytes, _pack_weights(K, N, NR, path, KG))


# ---------------------------------------------------------------------------- A sources

class RowSource:
    """Writes rows of A (unsigned, widened for int16 paths) into the tile: ``fill(k, row, dst)``."""

    def __init__(self, x: Tensor, signed: bool, path: DotPath):
        self.x, self.signed, self.path = x, signed, path

    def convert(self, b: ir.IRBuilder, v: ir.Value) -> ir.Value:
        """Input bytes (scalar or vector) as the tile's unsigned elements."""
        if self.signed:
            v = b.xor(v, ir.Constant(v.type, 0x80) if not isinstance(v.type, ir.VectorType)
                      else vector_constant(v.type, 0x80))
        et = self.path.elem
        if et == I8:
            return v
        return b.zext(v, ir.VectorType(et, v.type.count) if isinstance(v.type, ir.VectorType) else et)

    def chunks(self) -> list[int]:
        """Elements per vector copy, widest first: one register of the tile's elements, then 16."""
        wide = self.path.lanes * 4 // self.path.esize
        return [wide, COPY_VECTOR] if wide > COPY_VECTOR else [COPY_VECTOR]

    def copy(self, k: Kernel, src, dst, count: int) -> None:
        """``count`` input bytes at ``src`` converted to ``dst`` (the widest vectors first, then 16 bytes,
        then the rest one by one)."""
        b, fb = k.b, k.fn
        et = self.path.elem
        done = 0
        for chunk in self.chunks():
            whole = done + (count - done) // chunk * chunk
            if whole - done == chunk:
                v = b.load(b.gep(src, [i64(done)], source_etype=I8), typ=ir.VectorType(I8, chunk), align=1)
                b.store(self.convert(b, v), b.gep(dst, [i64(done)], source_etype=et), align=1)
            elif whole > done:
                with fb.loop(done, whole, chunk, name="cv") as c:
                    v = b.load(b.gep(src, [c], source_etype=I8), typ=ir.VectorType(I8, chunk), align=1)
                    b.store(self.convert(b, v), b.gep(dst, [c], source_etype=et), align=1)
            done = whole
        for c in range(done, count):
            v = b.load(b.gep(src, [i64(c)], source_etype=I8), typ=I8)
            b.store(self.convert(b, v), b.gep(dst, [i64(c)], source_etype=et))

    def fill_value(self, k: Kernel, dst, count: int, value: ir.Value) -> None:
        """``count`` tile elements at ``dst`` set to ``value`` (already converted), in vectors as
        :meth:`copy` writes them."""
        b, fb = k.b, k.fn
        et = self.path.elem
        done = 0
        for chunk in self.chunks():
            whole = done + (count - done) // chunk * chunk
            if whole > done:
                v = k.splat(value, chunk)
                with fb.loop(done, whole, chunk, name="fv") as c:
                    b.store(v, b.gep(dst, [c], source_etype=et), align=1)
            done = whole
        for c in range(done, count):
            b.store(value, b.gep(dst, [i64(c)], source_etype=et))

    def begin(self, k: Kernel, row0) -> None:
        """Before a block's rows are filled in order from ``row0``."""

    def fill(self, k: Kernel, row, dst) -> None:
        raise NotImplementedError


class DenseRows(RowSource):
    """A (M, K) matrix read in place."""

    def __init__(self, x: Tensor, K: int, signed: bool, path: DotPath):
        super().__init__(x, signed, path)
        self.K = K

    def fill(self, k, row, dst):
        b = k.b
        self.copy(k, b.gep(k.ptr(self.x), [b.mul(row, i64(self.K))], source_etype=I8), dst, self.K)


class Im2colRows(RowSource):
    """Rows of a channels-last 1-D or 2-D convolution's input: one output pixel's window, taps in the
    kernel's order, positions outside the input filled with the input's zero point. The spatial
    sizes may be free dims (read at run time); channels and padding are concrete."""

    def __init__(self, x: Tensor, geometry: dict, signed: bool, path: DotPath, pad: ir.Value | None = None):
        super().__init__(x, signed, path)
        self.g = geometry
        self.pad = pad

    def _sizes(self, k):
        return tuple(k.dim(self.g[d]) for d in ("H", "W", "OH", "OW"))  # spatial sizes may be free dims

    def begin(self, k, row0):
        """The block's first output pixel (image, row, column) by division; the following rows step it."""
        b = k.b
        _, _, OH, OW = self._sizes(k)
        pixels = b.mul(OH, OW)
        rest = b.srem(row0, pixels)
        self.at = [k.fn.var(I64, name=nm) for nm in ("im_n", "im_oh", "im_ow")]
        for var, v in zip(self.at, (b.sdiv(row0, pixels), b.sdiv(rest, OW), b.srem(rest, OW))):
            var.set(v)

    def _advance(self, k, OH, OW) -> None:
        b = k.b
        n, oh, ow = (v.get() for v in self.at)
        ow1 = b.add(ow, i64(1))
        wrap = b.icmp_signed(">=", ow1, OW)
        oh1 = b.select(wrap, b.add(oh, i64(1)), oh)
        wrap_h = b.icmp_signed(">=", oh1, OH)
        self.at[0].set(b.select(wrap_h, b.add(n, i64(1)), n))
        self.at[1].set(b.select(wrap_h, i64(0), oh1))
        self.at[2].set(b.select(wrap, i64(0), ow1))

    def fill(self, k, row, dst):
        b = k.b
        g = self.g
        H, W, OH, OW = self._sizes(k)
        C = g["C"]
        (sh, sw), (dh, dw), (ph, pw), (kh, kw) = g["strides"], g["dilations"], g["pads"], g["kernel"]
        n, oh, ow = (v.get() for v in self.at)
        xp = k.ptr(self.x)

        def taps(i, ih, h_ok):
            """Kernel row i's taps one by one, each copied or padded."""
            for j in range(kw):
                iw = b.add(b.mul(ow, i64(sw)), i64(j * dw - pw))
                ok = b.and_(h_ok, b.and_(b.icmp_signed(">=", iw, i64(0)), b.icmp_signed("<", iw, W)))
                seg = b.gep(dst, [i64((i * kw + j) * C)], source_etype=self.path.elem)
                with b.if_else(ok) as (inside, outside):
                    with inside:
                        pixel = b.add(b.mul(b.add(b.mul(n, H), ih), W), iw)
                        self.copy(k, b.gep(xp, [b.mul(pixel, i64(C))], source_etype=I8), seg, C)
                    with outside:
                        self.fill_value(k, seg, C, self.pad)

        for i in range(kh):
            ih = b.add(b.mul(oh, i64(sh)), i64(i * dh - ph))
            h_ok = b.and_(b.icmp_signed(">=", ih, i64(0)), b.icmp_signed("<", ih, H))
            if kw == 1 or dw != 1:
                taps(i, ih, h_ok)
                continue
            # undilated taps of a kernel row inside the input are kw * C consecutive bytes: one copy
            iw0 = b.add(b.mul(ow, i64(sw)), i64(-pw))
            inside = b.and_(h_ok, b.and_(b.icmp_signed(">=", iw0, i64(0)),
                                         b.icmp_signed("<", b.add(iw0, i64(kw - 1)), W)))
            with b.if_else(inside) as (whole, edge):
                with whole:
                    pixel = b.add(b.mul(b.add(b.mul(n, H), ih), W), iw0)
                    self.copy(k, b.gep(xp, [b.mul(pixel, i64(C))], source_etype=I8),
                              b.gep(dst, [i64(i * kw * C)], source_etype=self.path.elem), kw * C)
                with edge:
                    taps(i, ih, h_ok)
        self._advance(k, OH, OW)


# ---------------------------------------------------------------------------- the kernel

@dataclass
class Requant:
    """The epilogue's operands (tensors of the op) and static attributes."""

    x_scale: Tensor
    x_zero: Tensor
    w_scale: Tensor
    bias: Tensor
    y_scale: Tensor
    y_zero: Tensor
    activation: str
    max_value: float | None
    residual: tuple[Tensor, Tensor, Tensor] | None = None  # (r, scale, zero point), added after the activation
    post_activation: str = "linear"
    post_max_value: float | None = None


def emit_qgemm(kb: KernelBuilder, source: RowSource, M, K: int, w: Tensor, out: Tensor, q: Requant, *,
               name: str) -> None:
    """``out (M, N) = requantize(A @ w)`` for the rows ``source`` gives (see the module docstring)."""
    target = kb.target
    path = dot_path(target)
    amx = uses_amx(target) and K >= AMX_MIN_K
    L, g, et, es = path.lanes, path.group, path.elem, path.esize
    MR, NV = micro_tile(path, target)
    NR = NV * L
    N = w.shape[1]
    KG = -(-K // g)
    KGP = -(-KG // AMX_PAIRS) * AMX_PAIRS if amx else KG  # groups per panel: whole AMX steps
    KP = KGP * g  # tile row length in elements
    P = -(-N // NR)
    NP = P * NR
    packed = packed_int8(kb, w, NR, path, KGP)
    sums_at = _sums_offset(N, NR, path, KGP)
    row_bytes = KP * es
    if amx and row_bytes // 64 % 2 == 0:  # an odd number of cache lines: a tile's 16 rows in 16 L1 sets
        row_bytes += 64
    block = AMX_BLOCK if amx else MR  # rows of a work item come in multiples of it
    MB = block * max(1, min(8, TILE_BYTES // (row_bytes * block)))
    tile_bytes = -(-(MB * row_bytes) // 64) * 64
    c_bytes = AMX_BLOCK * NR * 4 if amx else 0
    items = dims.ceildiv(M, MB)

    k = kb.kernel(f"{name}_amx" if amx else name)
    fb, b = k.fn, k.b
    if amx:
        amx_begin(k, f"set {ENV_KERNEL}=vnni")
    vt, ft = ir.VectorType(I32, L), ir.VectorType(F32, L)
    scratch = k.thread_scratch(tile_bytes + c_bytes + 2 * NP * 4)
    tile = scratch
    c_tile = b.gep(scratch, [i64(tile_bytes)], source_etype=I8)
    mult = b.gep(c_tile, [i64(c_bytes)], source_etype=I8)
    corr = b.gep(mult, [i64(NP)], source_etype=F32)
    pw, pout = k.ptr(packed), k.ptr(out)
    sums = b.gep(pw, [i64(sums_at)], source_etype=I8)
    Mv = k.dim(M)

    # ---- per-call constants: effective zero point, multipliers and corrections per column
    signed = q.x_zero.dtype == "int8"
    xz = b.load(k.ptr(q.x_zero), typ=I8)
    zeff = b.add(b.sext(xz, I32), i32(128)) if signed else b.zext(xz, I32)
    if isinstance(source, Im2colRows):
        pad = source.convert(b, xz)
        source.pad = pad
    sx = b.load(k.ptr(q.x_scale), typ=F32)
    sy = b.load(k.ptr(q.y_scale), typ=F32)
    per_channel = q.w_scale.rank == 1
    pws, pbias = k.ptr(q.w_scale), k.ptr(q.bias)
    with fb.loop(0, NP, name="col") as n:
        ok = b.icmp_signed("<", n, i64(N))
        safe = b.select(ok, n, i64(0))
        ws = b.load(b.gep(pws, [safe if per_channel else i64(0)], source_etype=F32), typ=F32)
        m = b.fmul(sx, ws) if q.residual is not None else b.fdiv(b.fmul(sx, ws), sy)
        b.store(b.select(ok, m, ir.Constant(F32, 0.0)), b.gep(mult, [n], source_etype=F32))
        bias = b.select(ok, b.load(b.gep(pbias, [safe], source_etype=I32), typ=I32), i32(0))
        colsum = b.load(b.gep(sums, [n], source_etype=I32), typ=I32)
        b.store(b.sub(bias, b.mul(zeff, colsum)), b.gep(corr, [n], source_etype=I32))
    lo, hi = QRANGE[out.dtype]
    yz = b.load(k.ptr(q.y_zero), typ=I8)
    yz32 = b.sext(yz, I32) if out.dtype == "int8" else b.zext(yz, I32)
    yzf = b.sitofp(yz32, F32)
    low = b.fsub(ir.Constant(F32, float(lo)), yzf)
    high = b.fsub(ir.Constant(F32, float(hi)), yzf)
    if q.activation == "relu" and q.residual is None:
        low = b.select(b.fcmp_ordered(">", low, ir.Constant(F32, 0.0)), low, ir.Constant(F32, 0.0))
    if q.max_value is not None and q.residual is None:
        top = b.fdiv(ir.Constant(F32, float(q.max_value)), sy)
        top = b.select(b.fcmp_ordered("<", top, ir.Constant(F32, 4194304.0)), top, ir.Constant(F32, 4194304.0))
        top = b.fsub(b.fadd(top, ir.Constant(F32, _ROUNDER)), ir.Constant(F32, _ROUNDER))
        high = b.select(b.fcmp_ordered("<", top, high), top, high)
    low_v, high_v, yz_v = k.splat(low, L), k.splat(high, L), k.splat(yz32, L)
    rounder = vector_constant(ft, _ROUNDER)
    panel_bytes = KGP * NR * g * es
    fzero = vector_constant(ft, 0.0)
    if q.residual is not None:
        r_t, r_scale, r_zero = q.residual
        pres = k.ptr(r_t)
        rz = b.load(k.ptr(r_zero), typ=I8)
        rz_v = k.splat(b.sext(rz, I32) if r_t.dtype == "int8" else b.zext(rz, I32), L)
        rs_v = k.splat(b.load(k.ptr(r_scale), typ=F32), L)
        sy_v = k.splat(sy, L)

    def relu(v, activation: str, max_value):
        """The float epilogue's relu (and ceiling) on a vector."""
        if activation == "relu":
            v = b.select(b.fcmp_ordered("<", v, fzero), fzero, v)
            if max_value is not None:
                top_v = vector_constant(ft, float(max_value))
                v = b.select(b.fcmp_ordered(">", v, top_v), top_v, v)
        return v

    def residual_vector(at, valid: int):
        """The residual's lanes at flat index ``at`` (``valid`` of them read), dequantized."""
        src = b.gep(pres, [at], source_etype=I8)
        if valid == L:
            raw = b.load(src, typ=ir.VectorType(I8, L), align=1)
        else:
            raw = vector_constant(ir.VectorType(I8, L), 0)
            for lane in range(valid):
                raw = b.insert_element(raw, b.load(b.gep(src, [i64(lane)], source_etype=I8), typ=I8), i32(lane))
        wide = b.sext(raw, vt) if r_t.dtype == "int8" else b.zext(raw, vt)
        return b.fmul(b.sitofp(b.sub(wide, rz_v), ft), rs_v)

    def round_to_int(t):
        """int32 lanes of ``t`` (clamped, so |t| < 2^22) rounded half to even: one ``vcvtps2dq`` with
        round-to-nearest embedded on 512-bit vectors, else ``(t + 1.5 * 2^23) - 1.5 * 2^23`` truncated."""
        if L == 16 and target.arch == "x86_64":
            fn = intrinsic(b.module, "llvm.x86.avx512.mask.cvtps2dq.512", vt, [ft, vt, ir.IntType(16), I32])
            return b.call(fn, [t, ir.Constant(vt, ir.Undefined), ir.Constant(ir.IntType(16), -1), i32(8)])
        return b.fptosi(b.fsub(b.fadd(t, rounder), rounder), vt)

    def columns(pg, full: bool):
        """(vector index, first column, valid lanes, correction, multiplier) of wide panel pg's vectors that
        hold columns below N; ``full``: every column valid."""
        col0 = b.mul(pg, i64(NR))
        for v in range(NV):
            valid = L if full else max(0, min(L, N - (P - 1) * NR - v * L))
            if valid == 0:
                continue
            col = b.add(col0, i64(v * L))
            cv = b.load(b.gep(corr, [col], source_etype=I32), typ=vt, align=4)
            mv = b.load(b.gep(mult, [col], source_etype=F32), typ=ft, align=4)
            yield v, col, valid, cv, mv

    def requantize_store(acc, row, col, valid: int, cv, mv) -> None:
        """One vector of int32 sums (output row ``row``, columns from ``col``) requantized and stored."""
        at = b.add(b.mul(row, i64(N)), col)
        t = b.fmul(b.sitofp(b.add(acc, cv), ft), mv)
        if q.residual is not None:
            t = relu(t, q.activation, q.max_value)
            t = relu(b.fadd(t, residual_vector(at, valid)), q.post_activation, q.post_max_value)
            t = b.fdiv(t, sy_v)
        t = b.select(b.fcmp_ordered("<", t, low_v), low_v, t)
        t = b.select(b.fcmp_ordered(">", t, high_v), high_v, t)
        qv = b.trunc(b.add(round_to_int(t), yz_v), ir.VectorType(I8, L))
        dst = b.gep(pout, [at], source_etype=I8)
        if valid == L:
            b.store(qv, dst, align=1)
        else:
            for lane in range(valid):
                b.store(b.extract_element(qv, i32(lane)), b.gep(dst, [i64(lane)], source_etype=I8))

    def epilogue_store(acc, t0, rows_here, pg, full: bool) -> None:
        """The register tile's rows (guarded by rows_here) requantized and stored."""
        for v, col, valid, cv, mv in columns(pg, full):
            for r in range(MR):
                with b.if_then(b.icmp_signed("<", i64(r), rows_here)):
                    requantize_store(acc[r][v].get(), b.add(t0, i64(r)), col, valid, cv, mv)

    def amx_block(t_row, rows_here, pg, full: bool) -> None:
        """Rows [t_row, t_row + 32) of the tile (``rows_here`` of them stored) times wide panel pg on AMX
        tiles, the sums read back from ``c_tile``."""
        panel = b.gep(pw, [b.mul(pg, i64(panel_bytes))], source_etype=I8)
        a0 = b.gep(tile, [b.mul(t_row, i64(row_bytes))], source_etype=I8)
        amx_compute(k, a0, row_bytes, panel, i64(KGP), c_tile, NR, product="tdpbusd")
        t0 = b.add(row0_var.get(), t_row)
        cols = list(columns(pg, full))
        with fb.loop(0, rows_here, name="er") as r:
            for v, col, valid, cv, mv in cols:
                acc = b.load(b.gep(c_tile, [b.add(b.mul(r, i64(NR)), i64(v * L))], source_etype=I32), typ=vt,
                             align=64)
                requantize_store(acc, b.add(t0, r), col, valid, cv, mv)

    def block_product(t_row, rows_left, pg, full: bool) -> None:
        """Rows from t_row of the tile (``rows_left`` remain) times wide panel pg."""
        if amx:
            amx_block(t_row, fb.min_(rows_left, i64(AMX_BLOCK)), pg, full)
        else:
            micro(t_row, rows_left, pg, full)

    def micro(t_row, rows_here, pg, full: bool) -> None:
        """Rows [t_row, t_row + MR) of the tile times wide panel pg."""
        zero = vector_constant(vt, 0)
        acc = [[fb.var(vt, name=f"acc{r}_{v}") for v in range(NV)] for r in range(MR)]
        for row in acc:
            for var in row:
                var.set(zero)
        panel = b.gep(pw, [b.mul(pg, i64(panel_bytes))], source_etype=I8)
        a0 = b.gep(tile, [b.mul(t_row, i64(row_bytes))], source_etype=I8)
        with fb.loop(0, KG, name="kg") as kg:
            wp = b.gep(panel, [b.mul(kg, i64(NR * g * es))], source_etype=I8)
            wv = [b.load(b.gep(wp, [i64(v * L * 4)], source_etype=I8), typ=vt, align=4) for v in range(NV)]
            ak = b.gep(a0, [b.mul(kg, i64(g * es))], source_etype=I8)
            for r in range(MR):
                a = b.load(b.gep(ak, [i64(r * row_bytes)], source_etype=I8), typ=I32, align=1)
                av = k.splat(a, L)
                for v in range(NV):
                    acc[r][v].set(_dot(b, path, acc[r][v].get(), av, wv[v]))
        epilogue_store(acc, b.add(row0_var.get(), t_row), rows_here, pg, full)

    def zero_padding(dst) -> None:
        """Zeros in a tile row from K to its end (16 at a time, then one by one)."""
        c = K
        while c + COPY_VECTOR <= KP:
            b.store(vector_constant(ir.VectorType(et, COPY_VECTOR), 0),
                    b.gep(dst, [i64(c)], source_etype=et), align=1)
            c += COPY_VECTOR
        for rest in range(c, KP):
            b.store(ir.Constant(et, 0), b.gep(dst, [i64(rest)], source_etype=et))

    row0_var = fb.var(I64, 0, name="row0")
    full_panels = N // NR
    with fb.loop(k.begin, k.end, name="item") as item:
        row0 = b.mul(item, i64(MB))
        row0_var.set(row0)
        rows = b.sub(Mv, row0)
        rows = b.select(b.icmp_signed("<", rows, i64(MB)), rows, i64(MB))
        source.begin(k, row0)
        with fb.loop(0, rows, name="fill") as r:
            dst = b.gep(tile, [b.mul(r, i64(row_bytes))], source_etype=I8)
            source.fill(k, b.add(row0, r), dst)
            zero_padding(dst)
        # panels outer: a wide panel (K x NR bytes) stays in L1 while the block's micro-tiles stream by
        if full_panels:
            with fb.loop(0, full_panels, name="pg") as pg:
                with fb.loop(0, rows, block, name="t") as t_row:
                    block_product(t_row, b.sub(rows, t_row), pg, True)
        if full_panels < P:
            with fb.loop(0, rows, block, name="tp") as t_row:
                block_product(t_row, b.sub(rows, t_row), i64(full_panels), False)
    if amx:
        amx_call(b, "tilerelease")
    kb.launch(k, items, cost=MB * K * N * 2)


# ---------------------------------------------------------------------------- entry points

def _requant(x: Tensor, w: Tensor, out: Tensor, q: Requant, op: str) -> None:
    if x.dtype not in ("int8", "uint8") or w.dtype != "int8" or out.dtype not in ("int8", "uint8"):
        raise NativeLoweringError(f"{op} needs uint8/int8 input and output and int8 weights, got {x.dtype}, "
                                  f"{w.dtype} and {out.dtype}")
    if not w.is_constant:
        raise NativeLoweringError(f"{op}: the weight must be a constant (it is packed once per instance)")


def emit_qlinear_matmul(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, q: Requant) -> None:
    _requant(x, w, out, q, "qlinear_matmul")
    K = x.shape[-1]
    if not isinstance(K, int):
        raise NativeLoweringError("qlinear_matmul needs a concrete contracted axis")
    M = dims.product(x.shape[:-1])
    emit_qgemm(kb, DenseRows(x, K, x.dtype == "int8", dot_path(kb.target)), M, K, w, out, q, name="qmatmul")


def emit_qlinear_conv(kb: KernelBuilder, x: Tensor, w: Tensor, out: Tensor, q: Requant, *, strides: Sequence[int],
                      dilations: Sequence[int], pads: Sequence, groups: int) -> None:
    from graphc.backends.llvm.kernels.depthwise_int8 import emit_qdepthwise, is_depthwise

    _requant(x, w, out, q, "qlinear_conv")
    nsp = x.rank - 2
    depthwise = groups != 1 and is_depthwise(x, w, out, groups)
    if (groups != 1 and not depthwise) or nsp not in (1, 2):
        raise NativeLoweringError(f"qlinear_conv runs 1-D and 2-D convolutions without groups or depthwise (one "
                                  f"group per channel) natively, got {nsp} spatial axes and groups={groups}")
    concrete = [x.shape[-1], out.shape[-1]] + [p for pair in pads for p in pair]
    if not all(isinstance(d, int) for d in concrete):
        raise NativeLoweringError("qlinear_conv needs concrete channels and padding")
    spatial, osp = list(x.shape[1:-1]), list(out.shape[1:-1])
    kernel = list(w.shape[:nsp])
    strides, dilations, pads = list(strides), list(dilations), [tuple(p) for p in pads]
    if nsp == 1:
        spatial, osp, kernel = [1] + spatial, [1] + osp, [1] + kernel
        strides, dilations, pads = [1] + strides, [1] + dilations, [(0, 0)] + pads
    C, out_ch = x.shape[-1], w.shape[-1]
    K = kernel[0] * kernel[1] * C
    geometry = {"H": spatial[0], "W": spatial[1], "C": C, "OH": osp[0], "OW": osp[1], "strides": strides,
                "dilations": dilations, "pads": [p[0] for p in pads], "kernel": kernel}
    if depthwise:
        emit_qdepthwise(kb, x, w, out, q, geometry=geometry)
        return
    w2 = kb.view(w, (K, out_ch))
    M = dims.product(out.shape[:-1])
    source = Im2colRows(x, geometry, x.dtype == "int8", dot_path(kb.target))
    emit_qgemm(kb, source, M, K, w2, out, q, name="qconv")
