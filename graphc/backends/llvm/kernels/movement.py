"""Data movement: strided copies (copy, transpose, slice, concat), padding, resizing and gather.

Everything but gather is one strided copy ``dst[idx] = src[idx]`` over an index space, each
side with its own strides and element offset; merged axes as in the elementwise kernels, and
a vectorized inner loop when both sides are contiguous along it.

A copy whose destination is contiguous along its inner axis while the source is contiguous along
another (a transpose that moves the last axis: attention's keys ``(b, s, h, d) -> (b, h, d, s)``)
runs in tiles of ``vw x vw`` elements instead (:func:`_transpose_tiles`): ``vw`` vector loads along
the source's contiguous axis, a transpose in registers (``log2 vw`` rounds of two-input shuffles),
``vw`` vector stores; one element at a time, each load wanted one line for one element.
"""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import I64, i64
from graphc.backends.llvm.kernels.layout import contiguous_strides, merge_axes, strides_of
from graphc.ir import dims
from graphc.ir.dims import Dim

BLOCK = 8192


def strided_copy(kb: KernelBuilder, dst: Tensor, dst_strides: Sequence[Dim], dst_offset: Dim,
                 src: Tensor, src_strides: Sequence[Dim], src_offset: Dim, shape: Sequence[Dim],
                 name: str = "copy") -> None:
    if dst.dtype != src.dtype:
        raise NativeLoweringError(f"copy from {src.dtype} to {dst.dtype}")
    mshape, (dst_st, src_st) = merge_axes(list(shape), [list(dst_strides), list(src_strides)])
    outer, inner = mshape[:-1], mshape[-1]
    axis = _source_contiguous_axis(dst, dst_st, src_st, kb.vw)
    if axis is not None:
        _transpose_tiles(kb, dst, dst_st, dst_offset, src, src_st, src_offset, mshape, axis, name)
        return
    k = kb.kernel(name)
    fb, b = k.fn, k.b
    pd, ps = k.ptr(dst), k.ptr(src)
    ety = dst.ir_type
    vw = kb.vw if dst_st[-1] == 1 and src_st[-1] == 1 else 1
    inner_len = k.dim(inner)
    if outer:
        n_items = dims.product(outer)
    else:
        n_items = dims.ceildiv(inner, BLOCK)
    with fb.loop(k.begin, k.end, name="item") as item:
        od, osrc = k.dim(dst_offset), k.dim(src_offset)
        if outer:
            rem = item
            for g in range(len(outer) - 1, -1, -1):
                length = k.dim(outer[g])
                idx = b.srem(rem, length)
                rem = b.sdiv(rem, length)
                od = b.add(od, b.mul(idx, k.dim(dst_st[g])))
                osrc = b.add(osrc, b.mul(idx, k.dim(src_st[g])))
            lo, hi = i64(0), inner_len
        else:
            lo = b.mul(item, i64(BLOCK))
            hi = fb.min_(b.add(lo, i64(BLOCK)), inner_len)
        sd, ss = k.dim(dst_st[-1]), k.dim(src_st[-1])

        def body(j, lanes):
            typ = ety if lanes == 1 else ir.VectorType(ety, lanes)
            p = b.gep(ps, [b.add(osrc, b.mul(j, ss))], source_etype=ety)
            v = b.load(p, typ=typ, align=src.type.itemsize)
            q = b.gep(pd, [b.add(od, b.mul(j, sd))], source_etype=ety)
            b.store(v, q, align=dst.type.itemsize)

        vec_end = lo
        if vw > 1:
            vec_end = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), i64(vw)), i64(vw)))
            with fb.loop(lo, vec_end, vw, name="v") as j:
                body(j, vw)
        with fb.loop(vec_end, hi, name="s") as j:
            body(j, 1)
    kb.launch(k, n_items, BLOCK if not outer else 64)


def _source_contiguous_axis(dst: Tensor, dst_st: Sequence[Dim], src_st: Sequence[Dim], vw: int) -> int | None:
    """The outer axis along which the source is contiguous, where the destination is along the
    inner one and the source is not (4-byte elements, vectors of ``vw`` lanes): else None."""
    if dst.type.itemsize != 4 or vw < 4 or len(dst_st) < 2 or dst_st[-1] != 1 or src_st[-1] in (0, 1):
        return None
    for g in range(len(dst_st) - 2, -1, -1):
        if src_st[g] == 1:
            return g
    return None


def _transpose(b: ir.IRBuilder, rows: list) -> list:
    """The ``n x n`` transpose of ``n`` vectors of ``n`` lanes (``n`` a power of 2): one round per bit of
    the index, swapping that bit between row and lane (element (r, c) with the bits unequal moves to
    (r ^ h, c ^ h)), ``n`` two-input shuffles a round."""
    n = len(rows)
    mask_type = ir.VectorType(ir.IntType(32), n)
    h = n // 2
    while h:
        # row r (bit clear): its lanes with the bit clear, then row r + h's lanes h below; row r + h: row r's
        # lanes h above, then its own with the bit set (lanes of the second operand count from n)
        low = ir.Constant(mask_type, [c if not c & h else n + c - h for c in range(n)])
        high = ir.Constant(mask_type, [c + h if not c & h else n + c for c in range(n)])
        out = list(rows)
        for r in range(n):
            if not r & h:
                out[r] = b.shuffle_vector(rows[r], rows[r + h], low)
                out[r + h] = b.shuffle_vector(rows[r], rows[r + h], high)
        rows = out
        h //= 2
    return rows


def _transpose_tiles(kb: KernelBuilder, dst: Tensor, dst_st: Sequence[Dim], dst_offset: Dim, src: Tensor,
                     src_st: Sequence[Dim], src_offset: Dim, mshape: Sequence[Dim], g: int, name: str) -> None:
    """The strided copy over ``mshape`` in ``vw x vw`` tiles of (axis ``g``, the inner axis): see the
    module docstring. Work items are the other outer axes x blocks of ``vw`` along ``g``; a block of
    fewer than ``vw`` and the inner axis's last ``< vw`` elements are copied one at a time."""
    vw = kb.vw
    outer = [d for a, d in enumerate(mshape[:-1]) if a != g]
    outer_axes = [a for a in range(len(mshape) - 1) if a != g]
    n_blocks = dims.ceildiv(mshape[g], vw)
    k = kb.kernel(name)
    fb, b = k.fn, k.b
    pd, ps = k.ptr(dst), k.ptr(src)
    ety = dst.ir_type
    vt = ir.VectorType(ety, vw)
    inner_len, g_len = k.dim(mshape[-1]), k.dim(mshape[g])
    sd_g, ss_inner = k.dim(dst_st[g]), k.dim(src_st[-1])
    with fb.loop(k.begin, k.end, name="item") as item:
        blk = b.srem(item, k.dim(n_blocks))
        rem = b.sdiv(item, k.dim(n_blocks))
        od, osrc = k.dim(dst_offset), k.dim(src_offset)
        for a in reversed(outer_axes):
            length = k.dim(mshape[a])
            idx = b.srem(rem, length)
            rem = b.sdiv(rem, length)
            od = b.add(od, b.mul(idx, k.dim(dst_st[a])))
            osrc = b.add(osrc, b.mul(idx, k.dim(src_st[a])))
        g0 = b.mul(blk, i64(vw))
        od = b.add(od, b.mul(g0, sd_g))
        osrc = b.add(osrc, g0)  # the source's stride along g is 1
        rows = fb.min_(b.sub(g_len, g0), i64(vw))
        vec_end = b.mul(b.sdiv(inner_len, i64(vw)), i64(vw))
        whole = b.icmp_signed("==", rows, i64(vw))
        # whole tiles: vw loads along g (one per inner index), a register transpose, vw stores along the inner axis
        with fb.loop(i64(0), b.select(whole, vec_end, i64(0)), vw, name="tile") as j0:
            loads = [b.load(b.gep(ps, [b.add(osrc, b.mul(b.add(j0, i64(r)), ss_inner))], source_etype=ety), typ=vt,
                            align=src.type.itemsize) for r in range(vw)]
            for c, v in enumerate(_transpose(b, loads)):
                q = b.gep(pd, [b.add(b.add(od, b.mul(i64(c), sd_g)), j0)], source_etype=ety)
                b.store(v, q, align=dst.type.itemsize)
        # the rest one element at a time: the inner tail of a whole block, or all of a partial block
        with fb.loop(i64(0), rows, name="c") as c:
            drow = b.add(od, b.mul(c, sd_g))
            srow = b.add(osrc, c)
            with fb.loop(b.select(whole, vec_end, i64(0)), inner_len, name="j") as j:
                v = b.load(b.gep(ps, [b.add(srow, b.mul(j, ss_inner))], source_etype=ety), typ=ety,
                           align=src.type.itemsize)
                b.store(v, b.gep(pd, [b.add(drow, j)], source_etype=ety), align=dst.type.itemsize)
    kb.launch(k, dims.mul(dims.product(outer) if outer else 1, n_blocks), 64 * vw)


def emit_copy(kb: KernelBuilder, out: Tensor, x: Tensor) -> None:
    """``out = x``, element by element in row-major order; into ``out``'s rows where they are strided
    (a concatenation's part written in place), which takes ``x`` of ``out``'s shape."""
    if out.row_stride is not None:
        if tuple(x.shape) != tuple(out.shape):
            raise NativeLoweringError(f"a copy of {x.shape} into strided rows of {out.shape}")
        strided_copy(kb, out, strides_of(out), 0, x, contiguous_strides(x.shape), 0, out.shape, name="copy")
        return
    n = dims.product(out.shape)
    strided_copy(kb, out, [1], 0, x, [1], 0, [n], name="copy")


def emit_transpose(kb: KernelBuilder, out: Tensor, x: Tensor, perm: tuple[int, ...]) -> None:
    xs = contiguous_strides(x.shape)
    strided_copy(kb, out, contiguous_strides(out.shape), 0, x, [xs[p] for p in perm], 0, out.shape,
                 name="transpose")


def _slice_begin(n: Dim, start: int) -> Dim:
    if start < 0:
        return dims.maximum(dims.add(n, start), 0) if not isinstance(n, int) else max(n + start, 0)
    return start if not isinstance(n, int) else min(start, n)


def emit_slice(kb: KernelBuilder, out: Tensor, x: Tensor, axis: int, start: int, step: int) -> None:
    axis %= x.rank
    xs = contiguous_strides(x.shape)
    begin = _slice_begin(x.shape[axis], start)
    src_strides = list(xs)
    src_strides[axis] = dims.mul(xs[axis], step)
    strided_copy(kb, out, strides_of(out), 0, x, src_strides, dims.mul(begin, xs[axis]), out.shape, name="slice")


def emit_concat(kb: KernelBuilder, out: Tensor, xs: list[Tensor], axis: int) -> None:
    """Each part copied into its place; a part its producer wrote in place (rows of ``out``, see
    codegen's ``concat_parts_in_place``) is left as it is."""
    axis %= out.rank
    os = strides_of(out)
    offset: Dim = 0
    for x in xs:
        at = dims.add(out.offset, dims.mul(offset, os[axis]))
        if not (axis == out.rank - 1 and out.row_stride is None and x.buf is not None and x.buf is out.buf
                and x.row_stride == out.shape[-1] and dims.same(x.offset, at)):
            strided_copy(kb, out, os, dims.mul(offset, os[axis]), x, contiguous_strides(x.shape), 0, x.shape,
                         name="concat")
        offset = dims.add(offset, x.shape[axis])


def emit_gather(kb: KernelBuilder, out: Tensor, table: Tensor, ids: Tensor) -> None:
    """``out[i, :] = table[ids[i], :]``; an id outside ``[0, rows)`` fails the call with that id."""
    rows = table.shape[0]
    row_len = dims.product(table.shape[1:])
    n_ids = dims.product(ids.shape)
    kb.fail_message(f"index %lld is out of range for a table of {rows} rows")
    # a bf16 build whose readers all convert the result to bf16 (see codegen's bf16 results): rows
    # written as bf16, the first half of out's buffer, which those readers take as their bf16 copy;
    # from a copy of the table rounded once per instance where it is a weight (half the bytes read:
    # multi_output's 20 MB table at batch 32, 1.07 -> 0.6 ms)
    to_bf16 = kb.bf16_result
    rounded = to_bf16 and table.is_constant and table.buf is not None and table.buf.kind == "weight" \
        and isinstance(rows, int) and isinstance(row_len, int)
    if to_bf16:
        from graphc.backends.llvm.kernels.gemm_bf16 import I16, bf16_bits, pack_rounded
    if rounded:
        table = kb.packed_weight(table, ("bf16_rows",), rows * row_len * 2, pack_rounded(rows * row_len))
    k = kb.kernel("gather")
    fb, b = k.fn, k.b
    pt, pi, po = k.ptr(table), k.ptr(ids), k.ptr(out)
    ety = I16 if rounded else table.ir_type
    in_align = 2 if rounded else table.type.itemsize
    vw = kb.vw
    rl = k.dim(row_len)
    nrows = k.dim(rows)
    with fb.loop(k.begin, k.end, name="i") as i:
        idv = b.load(b.gep(pi, [i], source_etype=ids.ir_type), typ=ids.ir_type)
        idx = b.sext(idv, I64) if ids.ir_type.width < 64 else idv
        bad = b.or_(b.icmp_signed("<", idx, i64(0)), b.icmp_signed(">=", idx, nrows))
        with b.if_then(bad, likely=False):
            k.fail(idx)
        src = b.mul(idx, rl)
        dst = b.mul(i, rl)
        vec_end = b.mul(b.sdiv(rl, i64(vw)), i64(vw))

        def body(j, lanes):
            typ = ety if lanes == 1 else ir.VectorType(ety, lanes)
            v = b.load(b.gep(pt, [b.add(src, j)], source_etype=ety), typ=typ, align=in_align)
            if rounded:
                b.store(v, b.gep(po, [b.add(dst, j)], source_etype=I16), align=2)
            elif to_bf16:
                b.store(bf16_bits(b, v), b.gep(po, [b.add(dst, j)], source_etype=I16), align=2)
            else:
                b.store(v, b.gep(po, [b.add(dst, j)], source_etype=ety), align=out.type.itemsize)

        with fb.loop(0, vec_end, vw, name="v") as j:
            body(j, vw)
        with fb.loop(vec_end, rl, name="s") as j:
            body(j, 1)
    kb.launch(k, n_ids, dims.mul(row_len, 1) if isinstance(row_len, int) else 64)


def emit_one_hot(kb: KernelBuilder, out: Tensor, ids: Tensor, depth: int) -> None:
    """``out[..., j] = (ids[...] == j)``; an id outside ``[0, depth)`` fails the call with that id."""
    n_ids = dims.product(ids.shape)
    kb.fail_message(f"class index %lld is out of range for {depth} classes")
    k = kb.kernel("one_hot")
    fb, b, m = k.fn, k.b, k.m
    pi, po = k.ptr(ids), k.ptr(out)
    ety = out.ir_type
    with fb.loop(k.begin, k.end, name="i") as i:
        idv = b.load(b.gep(pi, [i], source_etype=ids.ir_type), typ=ids.ir_type)
        idx = b.sext(idv, I64) if ids.ir_type.width < 64 else idv
        bad = b.or_(b.icmp_signed("<", idx, i64(0)), b.icmp_signed(">=", idx, i64(depth)))
        with b.if_then(bad, likely=False):
            k.fail(idx)
        row = b.mul(i, i64(depth))
        with fb.loop(0, depth, name="j") as j:
            hit = b.icmp_signed("==", j, idx)
            one, zero = m.const(1, ety), m.const(0, ety)
            b.store(b.select(hit, one, zero), b.gep(po, [b.add(row, j)], source_etype=ety))
    kb.launch(k, n_ids, depth)


def emit_scatter_add_rows(kb: KernelBuilder, out: Tensor, ids: Tensor, dy: Tensor) -> None:
    """``out`` zeroed, then ``out[ids[i], :] += dy[i, :]`` in order of i (the gradient of gather).

    Work items are column ranges of the rows, so no two threads add to the same element."""
    from graphc.backends.llvm.kernels.elementwise import emit_fill

    rows = out.shape[0]
    row_len = dims.product(out.shape[1:])
    n_ids = dims.product(ids.shape)
    emit_fill(kb, out, 0.0)
    kb.fail_message(f"index %lld is out of range for a table of {rows} rows")
    k = kb.kernel("scatter_add_rows")
    fb, b = k.fn, k.b
    pi, pd, po = k.ptr(ids), k.ptr(dy), k.ptr(out)
    rl = k.dim(row_len)
    ety = out.ir_type
    block = 64
    with fb.loop(k.begin, k.end, name="c") as cblock:
        lo = b.mul(cblock, i64(block))
        hi = fb.min_(b.add(lo, i64(block)), rl)
        with fb.loop(0, n_ids, name="i") as i:
            idv = b.load(b.gep(pi, [i], source_etype=ids.ir_type), typ=ids.ir_type)
            idx = b.sext(idv, I64) if ids.ir_type.width < 64 else idv
            bad = b.or_(b.icmp_signed("<", idx, i64(0)), b.icmp_signed(">=", idx, k.dim(rows)))
            with b.if_then(bad, likely=False):
                k.fail(idx)
            src = b.mul(i, rl)
            dst = b.mul(idx, rl)
            with fb.loop(lo, hi, name="j") as j:
                q = b.gep(po, [b.add(dst, j)], source_etype=ety)
                v = b.load(b.gep(pd, [b.add(src, j)], source_etype=ety), typ=ety)
                b.store(b.fadd(b.load(q, typ=ety), v), q)
    kb.launch(k, dims.ceildiv(row_len, block), 4096)


def emit_slice_scatter(kb: KernelBuilder, out: Tensor, dy: Tensor, axis: int, start: int, step: int) -> None:
    """``out`` zeroed, then ``out[..., start::step, ...] = dy`` along ``axis`` (the gradient of slice)."""
    from graphc.backends.llvm.kernels.elementwise import emit_fill

    axis %= out.rank
    emit_fill(kb, out, 0.0)
    os = contiguous_strides(out.shape)
    begin = _slice_begin(out.shape[axis], start)
    dst_strides = list(os)
    dst_strides[axis] = dims.mul(os[axis], step)
    strided_copy(kb, out, dst_strides, dims.mul(begin, os[axis]), dy, contiguous_strides(dy.shape), 0, dy.shape,
                 name="slice_grad")


def emit_pad(kb: KernelBuilder, out: Tensor, x: Tensor, pads: Sequence[tuple[int, int]], value: float) -> None:
    """``out`` = ``x`` with ``(before, after)`` elements of ``value`` around each axis; every output
    element is written once.

    A work item is one output row: the axes from the last padded one inward, contiguous in both
    tensors. A row whose outer index falls in the padding is all ``value``; any other is
    ``before`` values, the input row, then ``after`` values.
    """
    padded = [a for a, (pb, pa) in enumerate(pads) if pb or pa]
    if not padded:
        emit_copy(kb, out, x)
        return
    last = padded[-1]
    inner = dims.product(x.shape[last + 1:])
    row_before = dims.mul(pads[last][0], inner)
    row_mid = dims.mul(x.shape[last], inner)
    row_len = dims.mul(out.shape[last], inner)
    x_strides = contiguous_strides(x.shape)
    k = kb.kernel("pad")
    fb, b, m = k.fn, k.b, k.m
    px, po = k.ptr(x), k.ptr(out)
    ety = out.ir_type
    vw = kb.vw
    with fb.loop(k.begin, k.end, name="row") as row:
        rem = row
        src = i64(0)
        inside = ir.Constant(ir.IntType(1), 1)
        for g in range(last - 1, -1, -1):
            idx = b.srem(rem, k.dim(out.shape[g]))
            rem = b.sdiv(rem, k.dim(out.shape[g]))
            pb = pads[g][0]
            if pads[g] != (0, 0):
                idx = b.sub(idx, k.dim(pb))
                ok = b.and_(b.icmp_signed(">=", idx, i64(0)), b.icmp_signed("<", idx, k.dim(x.shape[g])))
                inside = b.and_(inside, ok)
            src = b.add(src, b.mul(idx, k.dim(x_strides[g])))
        dst = b.mul(row, k.dim(row_len))
        full = k.dim(row_len)
        # outside: the whole row is fill; inside: fill [0, before), copy, fill [before + mid, len)
        copy_lo = b.select(inside, k.dim(row_before), full)
        copy_hi = b.select(inside, b.add(k.dim(row_before), k.dim(row_mid)), full)
        src_base = b.sub(src, copy_lo)  # src index = src_base + j for j in [copy_lo, copy_hi)

        def fill(j, lanes):
            typ = ety if lanes == 1 else ir.VectorType(ety, lanes)
            b.store(m.const(value, typ), b.gep(po, [b.add(dst, j)], source_etype=ety), align=out.type.itemsize)

        def copy(j, lanes):
            typ = ety if lanes == 1 else ir.VectorType(ety, lanes)
            v = b.load(b.gep(px, [b.add(src_base, j)], source_etype=ety), typ=typ, align=x.type.itemsize)
            b.store(v, b.gep(po, [b.add(dst, j)], source_etype=ety), align=out.type.itemsize)

        for lo, hi, body in ((i64(0), copy_lo, fill), (copy_lo, copy_hi, copy), (copy_hi, full, fill)):
            vec_end = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), i64(vw)), i64(vw)))
            with fb.loop(lo, vec_end, vw, name="v") as j:
                body(j, vw)
            with fb.loop(vec_end, hi, name="s") as j:
                body(j, 1)
    kb.launch(k, dims.product(out.shape[:last]), row_len if isinstance(row_len, int) else 64)


def emit_resize(kb: KernelBuilder, out: Tensor, x: Tensor, axes: Sequence[int], mode: str) -> None:
    """PyTorch's ``interpolate`` (align_corners=False) over ``axes``, each output element written once.

    A work item is one output row: a position over the axes before the last resized one, whose
    source indices and weights are computed once, then every position along the last resized axis in
    a loop (no division per output position: a pixel of 3 channels had cost four; the row's weights are
    computed once per row too). The axes after it
    form a contiguous block (the channels of NHWC) copied or blended with vector loads, a block not a
    multiple of the vector width ending in one masked vector (float32). Source indices and weights
    are computed in float32 with PyTorch's formulas (see the ``resize`` op); linear mode blends the
    2^k corners innermost axis first, as PyTorch nests them.
    """
    from graphc.backends.llvm.kernels.gemm import load_lanes, store_lanes

    axes = sorted(a % x.rank for a in axes)
    last = axes[-1]
    inner = dims.product(x.shape[last + 1:])
    x_strides = contiguous_strides(x.shape)
    k = kb.kernel(f"resize_{mode}")
    fb, b = k.fn, k.b
    px, po = k.ptr(x), k.ptr(out)
    ety = out.ir_type
    f32 = ir.FloatType()
    masked_tail = ety == f32
    e = fb.entry
    scales = {}
    for a in axes:  # float32 (n_in / n_out), once per call
        scales[a] = e.fdiv(e.sitofp(k.dim(x.shape[a]), f32), e.sitofp(k.dim(out.shape[a]), f32))
    half, zero, one = ir.Constant(f32, 0.5), ir.Constant(f32, 0.0), ir.Constant(f32, 1.0)

    def fmax(p, q):
        return b.select(b.fcmp_ordered(">", p, q), p, q)

    def tap(a: int, o: ir.Value) -> tuple:
        """(axis, i0, i1, weights) of output index ``o`` along resized axis ``a``: the two source indices
        and, in linear mode, their weights ``(1 - lam, lam)`` in the output's type (None: nearest)."""
        top = b.sub(k.dim(x.shape[a]), i64(1))
        centre = b.fadd(b.sitofp(o, f32), half)
        if mode == "nearest":
            i0 = fb.min_(b.fptosi(b.fmul(centre, scales[a]), I64), top)
            return a, i0, i0, None
        real = fmax(b.fsub(b.fmul(scales[a], centre), half), zero)
        i0 = fb.min_(b.fptosi(real, I64), top)
        lam = b.fsub(real, b.sitofp(i0, f32))
        lam = b.select(b.fcmp_ordered("<", lam, zero), zero, b.select(b.fcmp_ordered(">", lam, one), one, lam))
        i1 = b.add(i0, b.zext(b.icmp_signed("<", i0, top), I64))
        lam_t = lam if ety == f32 else b.fpext(lam, ety)
        return a, i0, i1, (b.fsub(ir.Constant(ety, 1.0), lam_t), lam_t)

    n_last = k.dim(out.shape[last])
    with fb.loop(k.begin, k.end, name="item") as item:
        rem = item
        base = i64(0)  # x offset of the non-resized axes
        row_taps: list[tuple] = []  # (axis, i0, i1, weights) of the row's outer resized axes
        for a in range(last - 1, -1, -1):
            o = b.srem(rem, k.dim(out.shape[a]))
            rem = b.sdiv(rem, k.dim(out.shape[a]))
            if a not in axes:
                base = b.add(base, b.mul(o, k.dim(x_strides[a])))
            else:
                row_taps.append(tap(a, o))
        with fb.loop(0, n_last, name="o") as o_last:
            taps = sorted(row_taps + [tap(last, o_last)])  # outermost axis first
            dst = b.mul(b.add(b.mul(item, n_last), o_last), k.dim(inner))

            def blend(level: int, offset: ir.Value, j: ir.Value, lanes: int, valid=None) -> ir.Value:
                if level == len(taps):
                    ptr = b.gep(px, [b.add(offset, j)], source_etype=ety)
                    if valid is not None:
                        return load_lanes(b, ptr, lanes, valid)
                    typ = ety if lanes == 1 else ir.VectorType(ety, lanes)
                    return b.load(ptr, typ=typ, align=x.type.itemsize)
                a, i0, i1, weights = taps[level]
                stride = k.dim(x_strides[a])
                v0 = blend(level + 1, b.add(offset, b.mul(i0, stride)), j, lanes, valid)
                if weights is None:
                    return v0
                v1 = blend(level + 1, b.add(offset, b.mul(i1, stride)), j, lanes, valid)
                w0, w1 = weights
                if lanes > 1:
                    w0, w1 = k.splat(w0, lanes), k.splat(w1, lanes)
                return b.fadd(b.fmul(v0, w0), b.fmul(v1, w1))

            def body(j, lanes, valid=None):
                ptr = b.gep(po, [b.add(dst, j)], source_etype=ety)
                value = blend(0, base, j, lanes, valid)
                if valid is not None:
                    store_lanes(b, value, ptr, lanes, valid)
                else:
                    b.store(value, ptr, align=out.type.itemsize)

            n = k.dim(inner)
            vec_end = b.mul(b.sdiv(n, i64(kb.vw)), i64(kb.vw))
            with fb.loop(0, vec_end, kb.vw, name="v") as j:
                body(j, kb.vw)
            if masked_tail:  # the rest of the block in one masked vector
                with b.if_then(b.icmp_signed("<", vec_end, n)):
                    body(vec_end, kb.vw, b.sub(n, vec_end))
            else:
                with fb.loop(vec_end, n, name="s") as j:
                    body(j, 1)
    row = dims.mul(out.shape[last], inner)
    kb.launch(k, dims.product(out.shape[:last]), row if isinstance(row, int) else 64)
