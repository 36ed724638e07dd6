"""Matrix products: a register-blocked SGEMM on prepacked weights, with a fused epilogue.

``out[M, N] = epilogue(a[M, K] @ w[K, N] + bias + residual)`` where ``w`` is a weight:

- ``w`` is packed once per instance (the model's prepare function) into panels of
  ``NR = NV * vw`` columns, ``panel[p][k][0:NR]``, zero-padded past N, so the micro-kernel
  streams it with aligned-size vector loads.
- The micro-kernel keeps an ``MR x NR`` tile of C in ``MR * NV`` vector registers; each k step
  loads NV vectors of the panel, broadcasts one element of each of the MR rows of ``a`` and
  issues ``MR * NV`` independent ``llvm.fmuladd`` ops (FMAs where the CPU has them; enough
  independent chains to hide their latency).
- K is split into blocks of at most ``KC``; the tile is stored after each block (added to the
  partial sums after the first) and the epilogue (bias, residual add, activation) runs on the
  last block's registers, before anything is written: fusion costs no extra pass over C.
- Work items are (block of ``MC`` rows) x (chunk of panels); edge rows are handled by clamping
  the rows read and guarding the rows stored; the last panel's partial vectors use masked
  loads and stores.

Anything else (``b`` computed at run time, batched operands, symbolic K or N) goes to a
straightforward vectorized kernel with broadcasting batch dims.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm import mathlib
from graphc.backends.llvm.builder import Kernel, KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I1, I32, PTR, i32, i64, intrinsic
from graphc.backends.llvm.kernels.layout import broadcast_strides
from graphc.ir import dims

KC = 256
MC = 96


def micro_tile(vw: int, registers: int) -> tuple[int, int]:
    """(MR, NV): rows and vectors per tile for ``registers`` vector registers of ``vw`` lanes."""
    import os
    env = os.environ.get("GRAPHC_GEMM_TILE")
    if env:
        mr, nv = env.split("x")
        return int(mr), int(nv)
    if registers >= 32:
        return 12, 2
    return 6, 2


def emit_matmul(kb: KernelBuilder, a: Tensor, b: Tensor, out: Tensor, *, bias: Tensor | None,
                residual: Tensor | None, epilogue: Callable | None) -> None:
    if a.dtype != "float32" or b.dtype != "float32":
        raise NativeLoweringError(f"matmul of {a.dtype} and {b.dtype}")
    K, N = (b.shape[-2], b.shape[-1])
    if b.rank == 2 and b.is_constant and isinstance(K, int) and isinstance(N, int) and b.buf.kind == "weight":
        _gemm_packed(kb, a, b, out, bias, residual, epilogue)
        return
    _matmul_generic(kb, a, b, out)
    if bias is not None or residual is not None or epilogue is not None:
        ins = [out] + ([bias] if bias is not None else []) + ([residual] if residual is not None else [])

        def fn(m, v, *rest):
            for r in rest:
                v = m.add(v, r)
            return epilogue(m, v) if epilogue is not None else v

        kb.map(out, ins, fn, name="matmul_epilogue")


def _masked_load(b: ir.IRBuilder, ptr, lanes: int, valid: int):
    t = ir.VectorType(F32, lanes)
    mask = ir.Constant(ir.VectorType(I1, lanes), [ir.Constant(I1, int(i < valid)) for i in range(lanes)])
    fn = intrinsic(b.module, f"llvm.masked.load.v{lanes}f32.p0", t, [PTR, I32, mask.type, t])
    return b.call(fn, [ptr, i32(4), mask, ir.Constant(t, [ir.Constant(F32, 0.0)] * lanes)])


def _masked_store(b: ir.IRBuilder, value, ptr, lanes: int, valid: int):
    t = ir.VectorType(F32, lanes)
    mask = ir.Constant(ir.VectorType(I1, lanes), [ir.Constant(I1, int(i < valid)) for i in range(lanes)])
    fn = intrinsic(b.module, f"llvm.masked.store.v{lanes}f32.p0", ir.VoidType(), [t, PTR, I32, mask.type])
    b.call(fn, [value, ptr, i32(4), mask])


def _pack_panels(K: int, N: int, NR: int) -> Callable:
    """Emitter of the packing loop ``dst[p][k][j] = src[k][p*NR + j]`` (0 past N)."""
    panels = -(-N // NR)

    def emit(fn, src, dst):
        b = fn.b
        with fn.loop(0, panels, name="p") as p:
            with fn.loop(0, K, name="k") as k:
                with fn.loop(0, NR, name="j") as j:
                    col = b.add(b.mul(p, i64(NR)), j)
                    ok = b.icmp_signed("<", col, i64(N))
                    safe = b.select(ok, col, i64(0))
                    v = b.load(b.gep(src, [b.add(b.mul(k, i64(N)), safe)], source_etype=F32), typ=F32)
                    v = b.select(ok, v, ir.Constant(F32, 0.0))
                    di = b.add(b.mul(b.add(b.mul(p, i64(K)), k), i64(NR)), j)
                    b.store(v, b.gep(dst, [di], source_etype=F32))

    return emit


def _gemm_packed(kb, a, w, out, bias, residual, epilogue):
    K, N = w.shape
    vw = kb.target.gemm_vw
    MR, NV = micro_tile(vw, kb.target.num_vector_registers)
    NR = NV * vw
    panels = -(-N // NR)
    packed = kb.packed_weight(w, ("panels", NR), panels * K * NR * 4, _pack_panels(K, N, NR))
    M = dims.product(a.shape[:-1])
    # column chunks: enough work items to share among threads when M is small
    ppc = max(1, min(panels, 128 // NR if NR <= 128 else 1))
    n_chunks = -(-panels // ppc)
    k_blocks = [(k0, min(KC, K - k0)) for k0 in range(0, K, KC)] if K > 0 else []
    if K > KC and K - (len(k_blocks) - 1) * KC < 64 and len(k_blocks) > 1:
        # avoid a tiny last block: split the last two evenly
        k0, _ = k_blocks[-2]
        rest = K - k0
        k_blocks = k_blocks[:-2] + [(k0, rest // 2), (k0 + rest // 2, rest - rest // 2)]

    k = kb.kernel("gemm")
    fb, bld = k.fn, k.b
    pa, pw, pc = k.ptr(a), k.ptr(packed), k.ptr(out)
    pbias = k.ptr(bias) if bias is not None else None
    pres = k.ptr(residual) if residual is not None else None
    Mv = k.dim(M)
    vt = ir.VectorType(F32, vw)

    with fb.loop(k.begin, k.end, name="item") as item:
        rb = bld.sdiv(item, i64(n_chunks))
        cc = bld.srem(item, i64(n_chunks))
        row0 = bld.mul(rb, i64(MC))
        row_end = fb.min_(bld.add(row0, i64(MC)), Mv)
        p_lo = bld.mul(cc, i64(ppc))
        p_hi = fb.min_(bld.add(p_lo, i64(ppc)), i64(panels))
        full_hi = fb.min_(p_hi, i64(N // NR))  # panels without padding
        for bi, (k0, kc) in enumerate(k_blocks):
            first, last = bi == 0, bi == len(k_blocks) - 1
            ctx = dict(k=k, pa=pa, pw=pw, pc=pc, pbias=pbias, pres=pres, M=Mv, K=K, N=N, MR=MR, NV=NV,
                       vw=vw, NR=NR, k0=k0, kc=kc, first=first, last=last, epilogue=epilogue, vt=vt)
            with fb.loop(p_lo, full_hi, name="panel") as p:
                _row_loop(ctx, p, row0, row_end, valid_cols=NR)
            if N % NR:
                tail_p = i64(N // NR)
                in_range = bld.and_(bld.icmp_signed(">=", tail_p, p_lo), bld.icmp_signed("<", tail_p, p_hi))
                with bld.if_then(in_range):
                    _row_loop(ctx, tail_p, row0, row_end, valid_cols=N % NR)
    n_items = dims.mul(dims.ceildiv(M, MC), n_chunks)
    kb.launch(k, n_items, 2 * MC * K * ppc * NR)


def _row_loop(ctx, p, row0, row_end, valid_cols):
    k: Kernel = ctx["k"]
    fb, b = k.fn, k.b
    MR = ctx["MR"]
    with fb.loop(row0, row_end, MR, name="row") as i:
        rows_valid = fb.min_(b.sub(row_end, i), i64(MR))
        _micro(ctx, p, i, rows_valid, valid_cols)


def _micro(ctx, p, i, rows_valid, valid_cols):
    k: Kernel = ctx["k"]
    fb, b, m = k.fn, k.b, k.m
    MR, vw, NR, K, N = ctx["MR"], ctx["vw"], ctx["NR"], ctx["K"], ctx["N"]
    k0, kc, vt = ctx["k0"], ctx["kc"], ctx["vt"]
    nv = -(-valid_cols // vw)
    zero = ir.Constant(vt, [ir.Constant(F32, 0.0)] * vw)
    acc = [[fb.var(vt, name=f"c{r}_{v}") for v in range(nv)] for r in range(MR)]
    for row in acc:
        for var in row:
            var.set(zero)
    last_row = b.sub(ctx["M"], i64(1))
    a_rows = []
    for r in range(MR):
        row = fb.min_(b.add(i, i64(r)), last_row)
        a_rows.append(b.gep(ctx["pa"], [b.add(b.mul(row, i64(K)), i64(k0))], source_etype=F32))
    panel = b.gep(ctx["pw"], [b.mul(b.add(b.mul(p, i64(K)), i64(k0)), i64(NR))], source_etype=F32)
    with fb.loop(0, kc, name="kk") as kk:
        bp = b.gep(panel, [b.mul(kk, i64(NR))], source_etype=F32)
        bv = [b.load(b.gep(bp, [i64(v * vw)], source_etype=F32), typ=vt, align=4) for v in range(nv)]
        for r in range(MR):
            av = b.load(b.gep(a_rows[r], [kk], source_etype=F32), typ=F32, align=4)
            avv = k.splat(av, vw)
            for v in range(nv):
                acc[r][v].set(mathlib.fma(b, avv, bv[v], acc[r][v].get()))
    # store the tile, row by row (rows beyond the matrix are skipped)
    col0 = b.mul(p, i64(NR))
    for r in range(MR):
        def store_row(r=r):
            row_off = b.mul(b.add(i, i64(r)), i64(N))
            for v in range(nv):
                lanes_valid = min(vw, valid_cols - v * vw)
                off = b.add(row_off, b.add(col0, i64(v * vw)))
                cptr = b.gep(ctx["pc"], [off], source_etype=F32)
                val = acc[r][v].get()

                def load(ptr, lanes_valid=lanes_valid):
                    if lanes_valid == vw:
                        return b.load(ptr, typ=vt, align=4)
                    return _masked_load(b, ptr, vw, lanes_valid)

                if not ctx["first"]:
                    val = b.fadd(val, load(cptr))
                if ctx["last"]:
                    if ctx["pbias"] is not None:
                        val = b.fadd(val, load(b.gep(ctx["pbias"], [b.add(col0, i64(v * vw))], source_etype=F32)))
                    if ctx["pres"] is not None:
                        val = b.fadd(val, load(b.gep(ctx["pres"], [off], source_etype=F32)))
                    if ctx["epilogue"] is not None:
                        val = ctx["epilogue"](m, val)
                if lanes_valid == vw:
                    b.store(val, cptr, align=4)
                else:
                    _masked_store(b, val, cptr, vw, lanes_valid)

        if r == 0:
            store_row()
        else:
            with b.if_then(b.icmp_signed("<", i64(r), rows_valid)):
                store_row()


def _matmul_generic(kb: KernelBuilder, a: Tensor, bt: Tensor, out: Tensor) -> None:
    """Batched ``a @ b`` with broadcasting batch dims; rows x vw-wide column strips."""
    K, N = bt.shape[-2], bt.shape[-1]
    if bt.rank == 2:
        # a (..., K) @ b (K, N): one matrix of M = prod(a.shape[:-1]) rows
        M = dims.product(a.shape[:-1])
        out_batch: tuple = ()
        a_bs: list = []
        b_bs: list = []
    else:
        M = a.shape[-2]
        out_batch = tuple(out.shape[:-2])
        a_bs = broadcast_strides(tuple(a.shape[:-2]), out_batch)
        b_bs = broadcast_strides(tuple(bt.shape[:-2]), out_batch)
    nb = len(out_batch)
    a_mat, b_mat = dims.mul(M, K), dims.mul(K, N)
    k = kb.kernel("matmul")
    fb, b, m = k.fn, k.b, k.m
    pa, pb, pc = k.ptr(a), k.ptr(bt), k.ptr(out)
    vw = kb.vw
    vt = ir.VectorType(F32, vw)
    Mv, Kv, Nv = k.dim(M), k.dim(K), k.dim(N)
    n_vec = b.mul(b.sdiv(Nv, i64(vw)), i64(vw))
    n_items = dims.mul(dims.product(out_batch), M) if nb else M
    with fb.loop(k.begin, k.end, name="item") as item:
        bi = b.sdiv(item, Mv)
        row = b.srem(item, Mv)
        a_off, b_off = i64(0), i64(0)
        rem = bi
        for g in range(nb - 1, -1, -1):
            length = k.dim(out_batch[g])
            idx = b.srem(rem, length)
            rem = b.sdiv(rem, length)
            if a_bs[g] != 0:
                a_off = b.add(a_off, b.mul(idx, k.dim(dims.mul(a_bs[g], a_mat))))
            if b_bs[g] != 0:
                b_off = b.add(b_off, b.mul(idx, k.dim(dims.mul(b_bs[g], b_mat))))
        arow = b.gep(pa, [b.add(a_off, b.mul(row, Kv))], source_etype=F32)
        bmat = b.gep(pb, [b_off], source_etype=F32)
        crow = b.gep(pc, [b.mul(item, Nv)], source_etype=F32)
        with fb.loop(0, n_vec, vw, name="j") as j:
            acc = fb.var(vt, name="acc")
            acc.set(m.const(0.0, vt))
            with fb.loop(0, Kv, name="kk") as kk:
                av = k.splat(b.load(b.gep(arow, [kk], source_etype=F32), typ=F32), vw)
                bv = b.load(b.gep(bmat, [b.add(b.mul(kk, Nv), j)], source_etype=F32), typ=vt, align=4)
                acc.set(mathlib.fma(b, av, bv, acc.get()))
            b.store(acc.get(), b.gep(crow, [j], source_etype=F32), align=4)
        with fb.loop(n_vec, Nv, name="js") as j:
            acc = fb.var(F32, name="sacc")
            acc.set(m.const(0.0, F32))
            with fb.loop(0, Kv, name="kk") as kk:
                av = b.load(b.gep(arow, [kk], source_etype=F32), typ=F32)
                bv = b.load(b.gep(bmat, [b.add(b.mul(kk, Nv), j)], source_etype=F32), typ=F32)
                acc.set(mathlib.fma(b, av, bv, acc.get()))
            b.store(acc.get(), b.gep(crow, [j], source_etype=F32))
    cost = dims.mul(dims.mul(K, N), 2) if isinstance(K, int) and isinstance(N, int) else 4096
    kb.launch(k, n_items, cost)

