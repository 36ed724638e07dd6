"""The bf16 GEMM: products on bf16 inputs with float32 accumulation (AVX512-BF16's ``vdpbf16ps``).

Chosen for matrix products by weights and convolutions when the target generates code at
``precision="bf16"`` (:func:`.target.with_precision`); the loops, work split and fused epilogue
are :func:`.gemm.emit_gemm`'s, only the operands' format and the micro-kernel differ:

- ``vdpbf16ps`` adds to each float32 lane ``i`` the products of bf16 elements ``2i`` and
  ``2i + 1`` of its two operands: two consecutive k of one column of B share a 32-bit lane. The
  weight is rounded to bf16 and packed once per instance into panels of ``NR`` columns of k
  *pairs*, ``panel[p][kp][j] = (B[2kp][j], B[2kp+1][j])``, zero past N and past K (an odd K
  gets a zero row), so a panel is as many bytes per k pair as the float32 panel per k.
- A's row block is rounded to bf16 into the thread's tile, row-major, so ``A[r][2kp]`` and
  ``A[r][2kp+1]`` are one 32-bit word the micro-kernel broadcasts. Rows copied from a matrix are
  converted as they are read, im2col's channel runs as they are copied
  (:meth:`.gemm.ASource.fill_converted`); other computed rows (depthwise, im2col of few channels)
  are written in float32 by their source first, then converted. K blocks are even, so no pair
  straddles two blocks; a block of odd length gets a zero column.
- The micro-kernel keeps the float32 ``MR x NR`` tile in registers as the float32 one does, and
  issues ``MR * NV`` independent ``vdpbf16ps`` per k pair: twice the products per instruction.
  The epilogue (bias, activations, residual) runs in float32 on those registers.

Where the target has AMX (``amx-bf16``), the micro-kernel is a 32 x 32 block of C in four tiles
(``tdpbf16ps``: 16 x 16 float32 += 16 x 32 bf16 by 32 x 16 bf16), A's rows and the panel's
columns in two tiles each, 32 k per step; K blocks are then whole steps, the panels' k pairs and
A's columns zero-padded to them. Each kernel call loads the tile configuration and releases the
tiles when done; the OS permission for tiles is asked once per process by the runtime
(``gc__amx_ready``, ``graphc/c_runtime/src/amx.c``), a refusal failing the call with its errno.
``GRAPHC_BF16_KERNEL=avx512`` keeps AVX512-BF16 on an AMX machine (for comparisons).

Winograd's products (:mod:`.winograd`) use the same micro-kernel as functions of the module
(:func:`tile_function_bf16`, :func:`row_function_bf16`) on the transformed operands.

Rounding is to nearest even by integer operations (NaN kept quiet), exactly what NumPy
references compute; products are exact in float32 and accumulated in float32.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm import switches
from graphc.backends.llvm.builder import Kernel, KernelBuilder, Tensor
from graphc.backends.llvm.irutil import F32, I8, I32, I64, PTR, Fn, constant, i32, i64, intrinsic, vector_constant
from graphc.backends.llvm.kernels.gemm import (
    TILE_PAD,
    ASource,
    DenseA,
    FunctionBody,
    fused_epilogue_mode,
    gemm_blocking,
    item_rows,
    lane_mask,
    load_lanes,
    micro_tile,
    steps_in_pairs,
    store_acc,
    store_c_rows,
    store_tile_fused,
)
from graphc.backends.llvm.kernels.gemm_blocking import even_block
from graphc.backends.llvm.kernels.gemm_items import QUANTUM, computed_items, split_items
from graphc.ir import dims

I16 = ir.IntType(16)
LANES = 16  # float32 lanes of a 512-bit vector: vdpbf16ps's accumulators
BF16_TILE_PAD = 32  # bf16 elements between the rows of A's tile beyond its K block: one cache line
AMX_PAIRS = 16  # k pairs per AMX step: a tile row of 64 bytes
AMX_ROWS = 16  # rows of a tile
ENV_KERNEL = switches.BF16_KERNEL.name


def uses_amx(target) -> bool:
    """Whether bf16 products run on AMX tiles for ``target`` (else on AVX512-BF16)."""
    return target.has_amx_bf16 and switches.BF16_KERNEL.value() != "avx512"


class BFloat16Type(ir.Type):
    """LLVM's ``bfloat`` (llvmlite has no such type): the operand type of the bf16 intrinsics."""

    def _to_string(self) -> str:
        return "bfloat"

    def __eq__(self, other) -> bool:
        return isinstance(other, BFloat16Type)

    def __hash__(self) -> int:
        return hash("bfloat")


BF16 = BFloat16Type()


def bf16_bits(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """float32 (scalar or vector) -> bf16 bit patterns (i16), rounded to nearest even; NaN stays NaN."""
    vec = isinstance(x.type, ir.VectorType)
    n = x.type.count if vec else 0

    def c(v: int, t: ir.Type) -> ir.Constant:
        return constant(ir.VectorType(t, n) if vec else t, v)

    it = ir.VectorType(I32, n) if vec else I32
    bits = b.bitcast(x, it)
    lsb = b.and_(b.lshr(bits, c(16, I32)), c(1, I32))
    rounded = b.lshr(b.add(bits, b.add(lsb, c(0x7FFF, I32))), c(16, I32))
    quiet = b.or_(b.lshr(bits, c(16, I32)), c(0x40, I32))
    is_nan = b.fcmp_unordered("uno", x, x)
    return b.trunc(b.select(is_nan, quiet, rounded), ir.VectorType(I16, n) if vec else I16)


def pack_pair_panels(K: int, N: int, NR: int, index: Callable, pairs: int) -> Callable:
    """Emitter of the bf16 panels of ``B[k][col] = src[index(b, k, col)]`` (see the module docstring),
    ``pairs`` k pairs each (zero past K)."""
    panels = -(-N // NR)

    def emit(fn, src, dst):
        b = fn.b
        zero = ir.Constant(I16, 0)

        def element(kk, col, ok):
            inside = b.and_(ok, b.icmp_signed("<", kk, i64(K)))
            at = index(b, b.select(inside, kk, i64(0)), b.select(ok, col, i64(0)))
            v = bf16_bits(b, b.load(b.gep(src, [at], source_etype=F32), typ=F32))
            return b.zext(b.select(inside, v, zero), I32)

        with fn.loop(0, panels, name="p") as p:
            with fn.loop(0, pairs, name="kp") as kp:
                with fn.loop(0, NR, name="j") as j:
                    col = b.add(b.mul(p, i64(NR)), j)
                    ok = b.icmp_signed("<", col, i64(N))
                    k0 = b.mul(kp, i64(2))
                    word = b.or_(element(k0, col, ok), b.shl(element(b.add(k0, i64(1)), col, ok), i32(16)))
                    di = b.add(b.mul(b.add(b.mul(p, i64(pairs)), kp), i64(NR)), j)
                    b.store(word, b.gep(dst, [di], source_etype=I32))

    return emit


def packed_pair_panels(kb: KernelBuilder, w: Tensor, NR: int, K: int, pack: tuple[int, Callable] | None,
                       pairs: int) -> tuple:
    """(the weight as bf16 panels of NR columns and ``pairs`` k pairs, N): ``w`` (K, N), or seen through
    ``pack``'s index map."""
    if pack is None:
        N = w.shape[1]

        def index(b, kk, col):
            return b.add(b.mul(kk, i64(N)), col)

        key = ("bf16_panels", NR, K, N, pairs)
    else:
        N, index = pack
        key = ("bf16_mapped", NR, K, N, pairs, index.__qualname__)
    nbytes = -(-N // NR) * pairs * NR * 4
    return kb.packed_weight(w, key, nbytes, pack_pair_panels(K, N, NR, index, pairs)), N


def pack_rounded(n: int) -> Callable:
    """Emitter of ``dst[i] = bf16(src[i])`` (i16 elements) for ``n`` floats, ``n`` a multiple of LANES: a
    weight kept rounded to bf16 per instance (an embedding table read row by row, half the bytes)."""

    def emit(fn, src, dst):
        b = fn.b
        with fn.loop(0, n, LANES, name="e") as e:
            v = b.load(b.gep(src, [e], source_etype=F32), typ=ir.VectorType(F32, LANES), align=4)
            b.store(bf16_bits(b, v), b.gep(dst, [e], source_etype=I16), align=2)

    return emit


def convert_rows(k: Kernel, src, src_stride, rows, cols, dst, dst_stride: int, zeros_after: bool = False) -> None:
    """``dst[r][0:cols] = bf16(src[r][0:cols])`` for r < rows (float32 ``src``, i16 ``dst``), in 16-lane
    vectors; the lanes of the last vector past ``cols`` are written as zeros (the tile's padding),
    so an odd K block ends in a zero column. ``zeros_after``: 16 more zeros after the last vector
    (AMX reads whole steps of 32 columns)."""
    fb, b = k.fn, k.b
    vt = ir.VectorType(F32, LANES)
    whole = b.and_(cols, i64(-LANES))
    with fb.loop(0, rows, name="cv") as r:
        s = b.gep(src, [b.mul(r, src_stride)], source_etype=F32)
        d = b.gep(dst, [b.mul(r, i64(dst_stride))], source_etype=I16)
        with fb.loop(0, whole, LANES, name="cvc") as c:
            v = b.load(b.gep(s, [c], source_etype=F32), typ=vt, align=4)
            b.store(bf16_bits(b, v), b.gep(d, [c], source_etype=I16), align=2)
        with b.if_then(b.icmp_signed("<", whole, cols)):
            v = load_lanes(b, b.gep(s, [whole], source_etype=F32), LANES, b.sub(cols, whole))
            b.store(bf16_bits(b, v), b.gep(d, [whole], source_etype=I16), align=2)
        if zeros_after:
            end = b.and_(b.add(cols, i64(LANES - 1)), i64(-LANES))
            b.store(vector_constant(ir.VectorType(I16, LANES), 0),
                    b.gep(d, [end], source_etype=I16), align=2)


def copy_run_bf16(k: Kernel, dst, src, n, vw: int, zero: bool = False) -> None:
    """``dst[0:n] = bf16(src[0:n])`` (or zeros) for an im2col run (n: int or i64), in 16-lane vectors; the
    last vector's lanes past n are written as zeros (the next run, or the tile's padding, follows)."""
    del vw  # the conversion's vectors are 16 lanes whatever the float32 tile's are
    fb, b = k.fn, k.b
    zeros = vector_constant(ir.VectorType(I16, LANES), 0)
    nv = k.dim(n)
    with fb.loop(0, nv, LANES, name="cb") as j:
        if zero:
            v = zeros
        else:
            v = bf16_bits(b, load_lanes(b, b.gep(src, [j], source_etype=F32), LANES, b.sub(nv, j)))
        b.store(v, b.gep(dst, [j], source_etype=I16), align=2)


def copy_run_i16(k: Kernel, dst, src, n, vw: int, zero: bool = False) -> None:
    """``dst[0:n] = src[0:n]`` (or zeros) for an im2col run of an input already in bf16 (i16 elements);
    like :func:`copy_run_bf16`, the last vector's lanes past n are written (as zeros)."""
    del vw
    fb, b = k.fn, k.b
    it = ir.VectorType(I16, LANES)
    zeros = vector_constant(it, 0)
    nv = k.dim(n)
    whole = b.and_(nv, i64(-LANES))
    with fb.loop(0, whole, LANES, name="cw") as j:
        v = zeros if zero else b.load(b.gep(src, [j], source_etype=I16), typ=it, align=2)
        b.store(v, b.gep(dst, [j], source_etype=I16), align=2)
    with b.if_then(b.icmp_signed("<", whole, nv)):
        if zero:
            v = zeros
        else:
            mask_type = ir.VectorType(ir.IntType(1), LANES)
            fn = intrinsic(b.module, "llvm.masked.load.v16i16.p0", it, [PTR, I32, mask_type, it])
            v = b.call(fn, [b.gep(src, [whole], source_etype=I16), i32(2), lane_mask(b, LANES, b.sub(nv, whole)),
                            zeros])
        b.store(v, b.gep(dst, [whole], source_etype=I16), align=2)


CONVERT_CHUNK = 4096  # elements per work item of the input conversion


def bf16_input(kb: KernelBuilder, x: Tensor) -> Tensor:
    """``x`` rounded to bf16 into a temporary (i16 elements, in a float32 tensor of half the size plus
    a vector of padding): a convolution's im2col then copies bf16 runs instead of converting every
    element once per kernel tap."""
    n = dims.product(x.shape)
    held = kb.bf16_held.get(id(x.buf)) if x.buf is not None and x.offset == 0 else None
    if held is not None:  # its producer wrote it in bf16 (a gather for convolutions only)
        return held
    out = kb.temp((dims.add(dims.ceildiv(n, 2), LANES),))
    k = kb.kernel("to_bf16")
    fb, b = k.fn, k.b
    px, po = k.ptr(x), k.ptr(out)
    nv = k.dim(n)
    with fb.loop(k.begin, k.end, name="chunk") as c:
        lo = b.mul(c, i64(CONVERT_CHUNK))
        hi = fb.min_(b.add(lo, i64(CONVERT_CHUNK)), nv)
        with fb.loop(lo, hi, LANES, name="cv") as j:
            v = load_lanes(b, b.gep(px, [j], source_etype=F32), LANES, b.sub(hi, j))
            b.store(bf16_bits(b, v), b.gep(po, [j], source_etype=I16), align=2)
    kb.launch(k, dims.ceildiv(n, CONVERT_CHUNK), CONVERT_CHUNK)
    return out


def zero_columns(k: Kernel, rows, cols, dst, dst_stride: int, count: int) -> None:
    """``dst[r][cols:cols + count] = 0`` for r < rows (i16 ``dst``, count a multiple of 16): the K
    padding after a block filled run by run."""
    fb, b = k.fn, k.b
    zeros = vector_constant(ir.VectorType(I16, LANES), 0)
    with fb.loop(0, rows, name="zc") as r:
        d = b.gep(dst, [b.add(b.mul(r, i64(dst_stride)), cols)], source_etype=I16)
        for j in range(0, count, LANES):
            b.store(zeros, b.gep(d, [i64(j)], source_etype=I16), align=2)


def _dot(b: ir.IRBuilder, acc, a_word, b_vec):
    """acc (16 x f32) += pairwise products of a_word and b_vec (16 x i32 each: 32 bf16)."""
    vb = ir.VectorType(BF16, 2 * LANES)
    vf = ir.VectorType(F32, LANES)
    fn = intrinsic(b.module, "llvm.x86.avx512bf16.dpbf16ps.512", vf, [vf, vb, vb])
    return b.call(fn, [acc, b.bitcast(a_word, vb), b.bitcast(b_vec, vb)])


def tile_compute_bf16(k: Kernel, a_base, a_stride: int, rows: int, panel, kpairs, nv: int, stride: int,
                      prefetch: int = 0) -> list[list]:
    """The micro-kernel: accumulators (Vars) of ``rows x nv`` float32 vectors of ``A @ panel``.

    ``a_base``: the first row's bf16 elements, rows ``a_stride`` elements apart; ``panel``: ``stride``
    32-bit words (pairs) per k pair; ``kpairs`` (i64) pairs. ``prefetch``: words of the panel to
    prefetch ahead into L2 (weights streaming from memory)."""
    fb, b = k.fn, k.b
    vt = ir.VectorType(F32, LANES)
    wt = ir.VectorType(I32, LANES)
    zero = vector_constant(vt, 0.0)
    acc = [[fb.var(vt, name=f"c{r}_{v}") for v in range(nv)] for r in range(rows)]
    for row in acc:
        for var in row:
            var.set(zero)

    def step(kp):
        bp = b.gep(panel, [b.mul(kp, i64(stride))], source_etype=I32)
        bv = [b.load(b.gep(bp, [i64(v * LANES)], source_etype=I32), typ=wt, align=4) for v in range(nv)]
        if prefetch:
            pf = intrinsic(b.module, "llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])
            for line in range(0, stride, 16):
                b.call(pf, [b.gep(bp, [i64(prefetch + line)], source_etype=I32), i32(0), i32(2), i32(1)])
        ak = b.gep(a_base, [b.mul(kp, i64(2))], source_etype=I16)
        for r in range(rows):
            word = b.load(b.gep(ak, [i64(r * a_stride)], source_etype=I16), typ=I32, align=4)
            av = k.splat(word, LANES)
            for v in range(nv):
                acc[r][v].set(_dot(b, acc[r][v].get(), av, bv[v]))

    steps_in_pairs(k, kpairs, step)
    return acc


def split_accumulate(k: Kernel, vt: ir.VectorType, nv: int, count, step: Callable, split: int = 4) -> list:
    """``nv`` vector sums over ``count`` steps (an i64) in ``split`` independent accumulator sets (enough
    independent FMA chains for a single row): ``step(index, parts)`` adds step ``index``'s terms to the
    ``nv`` vars ``parts``; returns vars holding the totals."""
    fb, b = k.fn, k.b
    parts = [[fb.var(vt, name=f"g{j}_{v}") for v in range(nv)] for j in range(split)]
    for row in parts:
        for var in row:
            var.set(vector_constant(vt, None))
    whole = b.and_(count, i64(-split))
    with fb.loop(0, whole, split, name="kq") as kk:
        for j in range(split):
            step(b.add(kk, i64(j)), parts[j])
    with fb.loop(whole, count, name="kr") as kk:
        step(kk, parts[0])
    out = []
    for v in range(nv):
        total = parts[0][v].get()
        for j in range(1, split):
            total = b.fadd(total, parts[j][v].get())
        var = fb.var(vt, name=f"row{v}")
        var.set(total)
        out.append(var)
    return out


def row_compute_bf16(k: Kernel, a_row, panel, kpairs, nv: int, stride: int, split: int = 4) -> list:
    """One row of A times a panel: ``nv`` vectors, k pairs split over ``split`` accumulator sets
    (independent chains for a single row), summed at the end."""
    b = k.b
    vt = ir.VectorType(F32, LANES)
    wt = ir.VectorType(I32, LANES)

    def step(kp, parts):
        bp = b.gep(panel, [b.mul(kp, i64(stride))], source_etype=I32)
        word = b.load(b.gep(a_row, [b.mul(kp, i64(2))], source_etype=I16), typ=I32, align=4)
        av = k.splat(word, LANES)
        for v in range(nv):
            bv = b.load(b.gep(bp, [i64(v * LANES)], source_etype=I32), typ=wt, align=4)
            parts[v].set(_dot(b, parts[v].get(), av, bv))

    return split_accumulate(k, vt, nv, kpairs, step, split)


def _micro_function(module: ir.Module, name: str, emit: Callable) -> ir.Function:
    """The module's function ``void name(a, panel, kpairs, c)`` (emitted once, not inlined), its body
    ``emit(f, a, panel, kpairs, c)``."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    f = Fn(module, name, ir.VoidType(), [PTR, PTR, I64, PTR], ["a", "panel", "kpairs", "c"])
    f.fn.attributes.add("noinline")
    emit(f, *f.args)
    f.b.ret_void()
    return f.finish()


def tile_function_bf16(module: ir.Module, rows: int, nv: int, stride: int, a_stride: int,
                       prefetch: int = 0) -> ir.Function:
    """:func:`tile_compute_bf16` as a shared function ``void (a, panel, kpairs, c_tile)``: the ``rows x nv``
    float32 vectors of ``A @ panel`` written to ``c_tile``, rows ``stride`` floats apart (the float32
    :func:`.gemm.tile_function`'s contract on bf16 operands: A's rows ``a_stride`` bf16 elements apart,
    the panel ``stride`` pairs per k pair); ``prefetch``: pairs of the panel to prefetch ahead."""

    def emit(f, a, panel, kpairs, c):
        acc = tile_compute_bf16(FunctionBody(f), a, a_stride, rows, panel, kpairs, nv, stride, prefetch)
        store_acc(f.b, acc, c, LANES, stride)

    name = f"bf16_tile_{rows}x{nv}_p{stride}_a{a_stride}" + (f"_pf{prefetch}" if prefetch else "")
    return _micro_function(module, name, emit)


def row_function_bf16(module: ir.Module, nv: int, stride: int) -> ir.Function:
    """:func:`row_compute_bf16` as a shared function ``void (a_row, panel, kpairs, c)``."""

    def emit(f, a, panel, kpairs, c):
        store_acc(f.b, [row_compute_bf16(FunctionBody(f), a, panel, kpairs, nv, stride)], c, LANES, stride)

    return _micro_function(module, f"bf16_row_{nv}_p{stride}", emit)


def amx_call(b: ir.IRBuilder, name: str, *args) -> None:
    """A call of AMX intrinsic ``llvm.x86.<name>`` on fixed tile registers (i8 immediates) and pointers."""
    types = [a.type for a in args]
    b.call(intrinsic(b.module, f"llvm.x86.{name}", ir.VoidType(), types), list(args))


def _tile(n: int) -> ir.Constant:
    return ir.Constant(I8, n)


def amx_tile_config(module: ir.Module) -> ir.GlobalVariable:
    """The tile configuration (palette 1): tiles 0..7 of 16 rows of 64 bytes."""
    name = "gc_amx_tile_config"
    g = module.globals.get(name)
    if g is None:
        cfg = bytearray(64)
        cfg[0] = 1
        for t in range(8):
            cfg[16 + 2 * t] = 64  # bytes per row (little-endian u16)
            cfg[48 + t] = 16  # rows
        typ = ir.ArrayType(I8, 64)
        g = ir.GlobalVariable(module, typ, name)
        g.initializer = ir.Constant(typ, bytearray(cfg))
        g.global_constant = True
        g.linkage = "internal"
        g.align = 64
    return g


def amx_begin(k: Kernel, remedy: str = "build with precision='float32'") -> None:
    """Kernel entry: the runtime's permission for tiles (the call fails with its errno without it, the
    message ending in ``remedy``), then the tile configuration."""
    b = k.b
    k.kb.fail_message("AMX tiles unavailable: the OS refused arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) "
                      f"(errno %lld); {remedy}")
    ready = b.call(intrinsic(b.module, "gc__amx_ready", I64, []), [])
    with b.if_then(b.icmp_signed("!=", ready, i64(0)), likely=False):
        k.fail(ready)
    amx_call(b, "ldtilecfg", amx_tile_config(b.module))


def amx_compute(k: Kernel, a_base, a_row_bytes: int, panel, kwords, c_tile, NR: int,
                product: str = "tdpbf16ps") -> None:
    """``c_tile`` (32 x NR=32 32-bit results, NR apart) = the 32 rows of A from ``a_base`` (``a_row_bytes``
    apart) times the panel's first ``kwords`` rows of 32-bit words (a multiple of 16; a word is a k pair
    of bf16, or four k of bytes for ``tdpbusd``): tiles 0..3 hold C, 4..5 A's two halves of rows, 6..7
    the panel's two halves of columns. ``product``: the tile instruction."""
    fb, b = k.fn, k.b
    a_bytes, b_bytes = i64(a_row_bytes), i64(4 * NR)
    for t in range(4):
        amx_call(b, "tilezero", _tile(t))
    a_low = b.gep(a_base, [i64(AMX_ROWS * a_row_bytes)], source_etype=I8)
    with fb.loop(0, kwords, AMX_PAIRS, name="kt") as kw:
        a_at = b.mul(kw, i64(4))
        amx_call(b, "tileloadd64", _tile(4), b.gep(a_base, [a_at], source_etype=I8), a_bytes)
        amx_call(b, "tileloadd64", _tile(5), b.gep(a_low, [a_at], source_etype=I8), a_bytes)
        bp = b.gep(panel, [b.mul(kw, i64(NR))], source_etype=I32)
        amx_call(b, "tileloadd64", _tile(6), bp, b_bytes)
        amx_call(b, "tileloadd64", _tile(7), b.gep(bp, [i64(LANES)], source_etype=I32), b_bytes)
        for c, (a, bt) in enumerate(((4, 6), (4, 7), (5, 6), (5, 7))):
            amx_call(b, product, _tile(c), _tile(a), _tile(bt))
    for c in range(4):
        offset = (c // 2) * AMX_ROWS * NR + (c % 2) * LANES
        amx_call(b, "tilestored64", _tile(c), b.gep(c_tile, [i64(offset)], source_etype=I32), b_bytes)


def emit_gemm_bf16(kb: KernelBuilder, source: ASource, M, K: int, w: Tensor, out: Tensor, *,
                   bias: Tensor | None = None, activation: Callable | None = None, residual: Tensor | None = None,
                   post_activation: Callable | None = None, name: str = "gemm",
                   pack: tuple[int, Callable] | None = None, tile: tuple[int, int] | None = None) -> None:
    """:func:`.gemm.emit_gemm` on bf16 operands (same arguments, same result up to bf16 rounding of
    A and ``w``)."""
    if kb.target.gemm_vw != LANES or not kb.target.has_avx512_bf16:
        raise ValueError(f"the bf16 GEMM needs AVX512-BF16; target {kb.target.cpu!r} lacks it")
    vw = LANES
    amx = uses_amx(kb.target)
    if amx:
        MR, NV = 2 * AMX_ROWS, 2
    else:
        MR, NV = tile if tile is not None else micro_tile(vw, kb.target.num_vector_registers)
    NR = NV * vw
    step = AMX_PAIRS if amx else 1  # k pairs per step of the micro-kernel
    pairs_total = -(-K // (2 * step)) * step
    packed, N = packed_pair_panels(kb, w, NR, K, pack, pairs_total)
    panels = -(-N // NR)
    bl = gemm_blocking(kb.target, MR, NR)
    KB = even_block(K, bl.kc) if source.cache_blocked else source.block(K)
    KB = -(-KB // (2 * step)) * 2 * step  # K blocks of whole steps
    n_kblocks = -(-K // KB) if K else 0
    b_streamed = pairs_total * N * 4 > bl.l2 // 2
    fused = n_kblocks == 1 and fused_epilogue_mode() == "1"  # whole tiles' epilogue from the registers
    # computed rows are written in float32 first, unless their source converts as it writes
    staged = not isinstance(source, DenseA) and not source.fills_converted
    # a source sizes its tile in float32 elements: a bf16 tile of as many bytes holds twice the k
    rows_max = bl.mc if source.cache_blocked else source.block_rows(KB if staged else KB // 2)
    tpb = max(1, rows_max // MR)
    per_thread = QUANTUM if source.cache_blocked else computed_items(source.items_per_thread(N))
    split = split_items(M, MR, tpb, panels, per_thread=per_thread, round_rows=source.cache_blocked or not b_streamed,
                        max_chunk_panels=bl.nc // NR)
    k = kb.kernel(f"{name}_{'amx' if amx else 'bf16'}")
    fb, b = k.fn, k.b
    if amx:
        amx_begin(k)
    pw, pc = k.ptr(packed), k.ptr(out)
    pbias = k.ptr(bias) if bias is not None else None
    pres = k.ptr(residual) if residual is not None else None
    rows_tile = (tpb + 1) * MR  # a block's whole tiles and the rows past the last
    bf_stride = KB + BF16_TILE_PAD
    bf_bytes = rows_tile * bf_stride * 2
    f32_stride = KB + TILE_PAD
    f32_floats = rows_tile * f32_stride if staged else 0
    scratch = k.thread_scratch(bf_bytes + (MR * NR + f32_floats) * 4)
    a_tile = scratch
    c_tile = b.gep(scratch, [i64(bf_bytes)], source_etype=ir.IntType(8))
    f32_tile = b.gep(c_tile, [i64(MR * NR)], source_etype=F32)

    def fill(row0, row_end, k0, kc):
        rows = b.sub(row_end, row0)
        if staged:
            source.fill(k, row0, row_end, k0, kc, f32_tile, f32_stride, kb=KB)
            convert_rows(k, f32_tile, i64(f32_stride), rows, kc, a_tile, bf_stride, amx)
        elif source.fills_converted:
            source.fill_converted(k, row0, row_end, k0, kc, a_tile, bf_stride, copy_run_bf16, I16, kb=KB)
            zero_columns(k, rows, kc, a_tile, bf_stride, 2 * LANES if amx else LANES)
        else:
            src = b.gep(k.ptr(source.a), [b.add(b.mul(row0, i64(source.K)), k0)], source_etype=F32)
            convert_rows(k, src, i64(source.K), rows, kc, a_tile, bf_stride, amx)

    def store_tile(acc, p, i, rows_valid, valid_cols, first, last):
        """acc -> c_tile (unless None: c_tile holds the tile), then rows of c_tile (+C, epilogue) -> C."""
        nv = len(acc[0]) if acc is not None else -(-valid_cols // vw)
        for r in range(len(acc) if acc is not None else 0):
            for v in range(nv):
                b.store(acc[r][v].get(), b.gep(c_tile, [i64(r * NR + v * vw)], source_etype=F32), align=4)
        store_c_rows(k, c_tile, pc, N, NR, vw, nv, b.mul(p, i64(NR)), i, rows_valid, valid_cols, first, last,
                     pbias=pbias, pres=pres, activation=activation, post_activation=post_activation)

    def row_loop(p, row0, row_end, k0, kpairs, first, last, valid_cols):
        with fb.loop(row0, row_end, MR, name="row") as i:
            rows_valid = fb.min_(b.sub(row_end, i), i64(MR))
            nv = -(-valid_cols // vw)
            panel = b.gep(pw, [b.mul(b.add(b.mul(p, i64(pairs_total)), b.sdiv(k0, i64(2))), i64(NR))],
                          source_etype=I32)
            base = b.gep(a_tile, [b.mul(b.sub(i, row0), i64(bf_stride))], source_etype=I16)
            if amx:  # rows past the last are computed from stale tile rows, and not stored
                amx_compute(k, base, 2 * bf_stride, panel, kpairs, c_tile, NR)
                store_tile(None, p, i, rows_valid, valid_cols, first, last)
                return
            with b.if_else(b.icmp_signed("==", rows_valid, i64(MR))) as (full, partial):
                with full:
                    # as in the float32 GEMM, a tile of one K block goes through the epilogue from the
                    # registers (ResNet50 at batch 1, one thread: 1.02x; GRAPHC_GEMM_FUSED_EPILOGUE=0 stores
                    # every tile to the thread's buffer first)
                    acc = tile_compute_bf16(k, base, bf_stride, MR, panel, kpairs, nv, NR,
                                            prefetch=pairs_total * NR if b_streamed else 0)
                    if fused:
                        store_tile_fused(k, acc, pc, N, b.mul(p, i64(NR)), i, valid_cols, pbias=pbias, pres=pres,
                                         activation=activation, post_activation=post_activation)
                    else:
                        store_tile(acc, p, i, rows_valid, valid_cols, first, last)
                with partial:  # fewer than MR rows left: one at a time, k pairs over four accumulator sets
                    with fb.loop(0, rows_valid, name="r1") as r:
                        a_row = b.gep(base, [b.mul(r, i64(bf_stride))], source_etype=I16)
                        acc = row_compute_bf16(k, a_row, panel, kpairs, nv, NR)
                        store_tile([acc], p, b.add(i, r), i64(1), valid_cols, first, last)

    with fb.loop(k.begin, k.end, name="item") as item:
        row0, row_end, p_lo, p_hi = split.bounds(k, item)
        full_hi = fb.min_(p_hi, i64(N // NR))
        with fb.loop(0, n_kblocks, name="kb") as kblock:
            k0 = b.mul(kblock, i64(KB))
            kc = fb.min_(i64(KB), b.sub(i64(K), k0))
            kpairs = b.sdiv(b.add(kc, i64(2 * step - 1)), i64(2 * step))
            kpairs = b.mul(kpairs, i64(step))
            if n_kblocks == 1:
                first = last = True
            else:
                first = b.icmp_signed("==", kblock, i64(0))
                last = b.icmp_signed("==", kblock, i64(n_kblocks - 1))
            fill(row0, row_end, k0, kc)
            with fb.loop(p_lo, full_hi, name="panel") as p:
                row_loop(p, row0, row_end, k0, kpairs, first, last, NR)
            if N % NR:
                tail_p = i64(N // NR)
                in_range = b.and_(b.icmp_signed(">=", tail_p, p_lo), b.icmp_signed("<", tail_p, p_hi))
                with b.if_then(in_range):
                    row_loop(tail_p, row0, row_end, k0, kpairs, first, last, N % NR)
    if amx:
        amx_call(b, "tilerelease")
    kb.launch(k, split.items, 2 * item_rows(M, tpb * MR) * K * NR)


def gemm_for(kb: KernelBuilder) -> Callable:
    """The GEMM emitter for ``kb``'s target precision: :func:`emit_gemm_bf16` or the float32 one."""
    if kb.target.precision == "bf16":
        return emit_gemm_bf16
    from graphc.backends.llvm.kernels.gemm import emit_gemm

    return emit_gemm
