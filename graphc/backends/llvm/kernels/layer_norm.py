"""Layer normalization over contiguous rows, one kernel.

``layer_norm`` over the trailing axes of a float32 tensor normalizes rows of ``n`` consecutive
elements. Lowered as its formula it takes four launches (the mean, the centered tensor written out,
the mean square, the normalization) and a temporary the size of the input; here one work item is a
row, read three times while it is in L1 or L2: its sum (two vector accumulators, a tree across
lanes), the sum of squares of ``x - mean`` (the same), then ``(x - mean) * rstd * gamma + beta``
with ``rstd = 1 / sqrt(var + epsilon)`` computed once per row. The moments are the two-pass ones of
the reference (no ``E[x^2] - E[x]^2`` cancellation). A row may be written in place of itself: each
element is read before it is written.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.backends.llvm import mathlib
from graphc.backends.llvm.builder import KernelBuilder, Tensor
from graphc.backends.llvm.irutil import F32, i64
from graphc.backends.llvm.kernels.reduce import tree_reduce
from graphc.ir import dims


def applies(x: Tensor, axes: tuple[int, ...]) -> bool:
    """Whether the rows kernel runs this layer normalization: float32, over the trailing axes."""
    return x.dtype == "float32" and tuple(axes) == tuple(range(x.rank - len(axes), x.rank))


def emit_layer_norm_rows(kb: KernelBuilder, out: Tensor, x: Tensor, gamma: Tensor, beta: Tensor,
                         axes: tuple[int, ...], epsilon: float) -> None:
    """``out = (x - mean) / sqrt(var + epsilon) * gamma + beta`` over rows of the trailing ``axes``
    (``gamma`` and ``beta`` of the rows' shape)."""
    lead = x.rank - len(axes)
    n = dims.product(x.shape[lead:])
    rows = dims.product(x.shape[:lead])
    k = kb.kernel("layer_norm")
    fb, b, m = k.fn, k.b, k.m
    px, po, pg, pb = k.ptr(x), k.ptr(out), k.ptr(gamma), k.ptr(beta)
    vw = kb.vw
    vt = ir.VectorType(F32, vw)
    nn = k.dim(n)
    vec_end = b.mul(b.sdiv(nn, i64(vw)), i64(vw))
    pair_end = b.mul(b.sdiv(nn, i64(2 * vw)), i64(2 * vw))
    count = b.sitofp(nn, F32)
    with fb.loop(k.begin, k.end, name="row") as row:
        base = b.mul(row, nn)

        def ld(p, j, t, offset=base):
            return b.load(b.gep(p, [b.add(offset, j)] if offset is not None else [j], source_etype=F32),
                          typ=t, align=4)

        def row_sum(term) -> ir.Value:
            """The sum over the row of ``term(j, type)``: pairs of vectors into two accumulators, then
            one vector, then single elements."""
            sums = [fb.var(vt, name=f"vsum{i}") for i in range(2)]
            for acc in sums:
                acc.set(m.const(0.0, vt))
            tail = fb.var(F32, name="ssum")
            tail.set(m.const(0.0, F32))
            with fb.loop(0, pair_end, 2 * vw, name="v") as j:
                sums[0].set(b.fadd(sums[0].get(), term(j, vt)))
                sums[1].set(b.fadd(sums[1].get(), term(b.add(j, i64(vw)), vt)))
            with fb.loop(pair_end, vec_end, vw, name="v") as j:
                sums[0].set(b.fadd(sums[0].get(), term(j, vt)))
            with fb.loop(vec_end, nn, name="s") as j:
                tail.set(b.fadd(tail.get(), term(j, F32)))
            return b.fadd(tree_reduce(k, b.fadd(sums[0].get(), sums[1].get()), vw, b.fadd), tail.get())

        mean = b.fdiv(row_sum(lambda j, t: ld(px, j, t)), count)
        mean_v = k.splat(mean, vw)

        def centered(j, t):
            return b.fsub(ld(px, j, t), mean_v if t is vt else mean)

        def square(j, t):
            c = centered(j, t)
            return b.fmul(c, c)

        var = b.fdiv(row_sum(square), count)
        rstd = b.fdiv(ir.Constant(F32, 1.0), mathlib.call(b, "sqrt", b.fadd(var, ir.Constant(F32, float(epsilon)))))
        rstd_v = k.splat(rstd, vw)

        def normalize(j, t):
            scaled = b.fmul(centered(j, t), rstd_v if t is vt else rstd)
            y = m.fma(scaled, ld(pg, j, t, None), ld(pb, j, t, None))
            b.store(y, b.gep(po, [b.add(base, j)], source_etype=F32), align=4)

        with fb.loop(0, vec_end, vw, name="v") as j:
            normalize(j, vt)
        with fb.loop(vec_end, nn, name="s") as j:
            normalize(j, F32)
    kb.launch(k, rows, dims.mul(n, 8) if isinstance(n, int) else 4096)
