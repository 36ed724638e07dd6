"""Reductions, softmax and argmax.

Reductions: the input's axes are classified kept (K) or reduced (R), unit axes dropped and
adjacent axes of the same class merged, giving alternating groups. Two vectorized shapes:

- last group kept (``(batch, h*w, c)`` reduced over ``h*w``): each work item owns one output
  row; it is initialized, every reduced position adds a contiguous input row into it with
  vector ops (streaming the input once), then finalized (mean: scaled); a row of up to 128 floats
  (with AVX-512) is combined in registers (:func:`accumulators_fit`). Sums over many rows
  (a global average pool at batch 1) cut the reduced rows into fixed parts, one work item
  each, and add the parts' float64 rows in a second launch (:func:`reduce_parts`). Rows shorter
  than a vector or not a multiple of it (a global pool over 3 channels), back to back, are reduced
  as one flat run of full vectors whose lanes are folded back onto the row at the end
  (:func:`_flat_rows`; 224 x 224 x 3 at batch 1 on a Zen 4: average 0.40 -> 0.03 ms, max 0.72 ->
  0.06 ms);
- last group reduced (a reduction along the contiguous axis): each work item owns one output
  element and sums vector lanes, then reduces them horizontally.

``sum_to`` (broadcasting's adjoint: a gradient summed to an operand's shape) is such a sum. An
output dim that is free and not known to be the input's may be 1 at run time, and then it is
summed over: each choice of summed axes among those is lowered as a plain reduction whose launches
are gated (their item count multiplied by 1 when the choice is the run's, else 0), so every
binding runs exactly one reduction, as fast as a static one.

Softmax along an axis of length n with ``inner`` elements after it: rows (inner == 1) take a
max pass, an exp-and-sum pass writing exp into the output, and a scaling pass; with
inner > 1 the same passes run vectorized across ``inner``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm import mathlib
from graphc.backends.llvm.builder import Kernel, KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, F64, I32, I64, i32, i64
from graphc.backends.llvm.kernels.checks import emit_dim_checks
from graphc.backends.llvm.kernels.layout import contiguous_strides, same
from graphc.ir import dims
from graphc.ir.dims import Dim
from graphc.ops.common import fmt_shape

_INIT = {"sum": 0.0, "mean": 0.0, "sumsq": 0.0, "meansq": 0.0, "max": -math.inf, "min": math.inf}
_SUMS = ("sum", "mean", "sumsq", "meansq")


def _combine(k: Kernel, kind: str, acc, v):
    m = k.m
    if kind in ("sum", "mean"):
        return m.add(acc, v)
    if kind in ("sumsq", "meansq"):
        return m.fma(v, v, acc)
    if kind == "max":
        return m.maximum(acc, v)
    if kind == "min":
        return m.minimum(acc, v)
    raise NativeLoweringError(f"unknown reduction {kind!r}")


def _horizontal(k: Kernel, kind: str, v, lanes: int):
    b = k.b
    acc = b.extract_element(v, i32(0))
    for i in range(1, lanes):
        e = b.extract_element(v, i32(i))
        acc = _combine(k, "sum" if kind in _SUMS else kind, acc, e)
    return acc


def _groups(shape, axes):
    """[(is_reduced, length, stride)] with unit axes dropped and same-class neighbours merged."""
    strides = contiguous_strides(shape)
    groups: list[list] = []
    for a, (d, s) in enumerate(zip(shape, strides)):
        if d == 1:
            continue
        red = a in axes
        if groups and groups[-1][0] == red:
            groups[-1][1] = dims.mul(groups[-1][1], d)
            groups[-1][2] = s
        else:
            groups.append([red, d, s])
    return groups


def emit_reduce(kb: KernelBuilder, out: Tensor, x: Tensor, axes: tuple[int, ...], kind: str) -> None:
    if x.dtype != "float32":
        raise NativeLoweringError(f"reductions of {x.dtype} tensors")
    groups = _groups(x.shape, axes)
    red = [g for g in groups if g[0]]
    count = dims.product([g[1] for g in red]) if red else 1
    if not red:  # every reduced axis has length 1: each output is its one input (squared for sumsq/meansq)
        if kind in ("sumsq", "meansq"):
            kb.map(out, [kb.view(x, out.shape)], lambda m, v: m.mul(v, v), name=f"reduce_{kind}")
            return
        from graphc.backends.llvm.kernels.movement import emit_copy

        emit_copy(kb, out, kb.view(x, out.shape))
        return
    if not groups[-1][0]:
        _reduce_keep_inner(kb, out, x, groups, kind, count)
    else:
        _reduce_inner(kb, out, x, groups, kind, count)


def emit_sum_to(kb: KernelBuilder, out: Tensor, x: Tensor) -> None:
    """``out`` = ``x`` summed over its leading axes and over the axes where ``out`` has 1 (or a
    free dim that is 1 at run time), after checking that ``out``'s shape broadcasts to ``x``'s."""
    lead = x.rank - out.rank
    summed: list[int] = []  # known to be summed
    free: list[tuple[int, Dim]] = []  # summed exactly when out's free dim is 1
    checks: list[tuple[Dim, tuple]] = []
    for a, d in enumerate(x.shape):
        t = out.shape[a - lead] if a >= lead else 1
        if t == 1:
            summed.append(a)
        elif same(d, t):
            continue
        elif isinstance(t, int):  # a free input dim kept: it must be t
            checks.append((d, (t,)))
        elif d == 1:  # nothing to sum: the free output dim must be 1
            checks.append((t, (1,)))
        else:
            free.append((a, t))
            checks.append((t, (d, 1)))
    emit_dim_checks(kb, checks, f"cannot sum {fmt_shape(x.shape)} to {fmt_shape(out.shape)}: the target does not "
                                "broadcast to it at these input sizes (a dimension is %lld)")
    for choice in itertools.product((False, True), repeat=len(free)):
        start = len(kb.launches)
        emit_reduce(kb, out, x, tuple(sorted(summed + [a for (a, _), s in zip(free, choice) if s])), "sum")
        gate = dims.product([_is_one(t) if s else dims.sub(1, _is_one(t)) for (_, t), s in zip(free, choice)])
        for launch in kb.launches[start:]:
            launch.n = dims.mul(launch.n, gate)


def _is_one(d: Dim) -> Dim:
    """1 when ``d`` is 1 at run time, else 0 (sizes are at least 1)."""
    return f"max(2 - {d if str(d).isidentifier() else f'({d})'}, 0)"


def _reduce_loops(k: Kernel, rgroups, base, body):
    """Nested loops over reduced groups, calling body(offset)."""
    fb, b = k.fn, k.b
    if not rgroups:
        body(base)
        return
    g = rgroups[0]
    with fb.loop(0, g[1], name="r") as r:
        _reduce_loops(k, rgroups[1:], b.add(base, b.mul(r, k.dim(g[2]))), body)


def _decompose(k: Kernel, item, kgroups):
    """Input offset of the kept index ``item`` (row-major over kgroups)."""
    b = k.b
    off = i64(0)
    rem = item
    for g in reversed(kgroups):
        length = k.dim(g[1])
        idx = b.srem(rem, length)
        rem = b.sdiv(rem, length)
        off = b.add(off, b.mul(idx, k.dim(g[2])))
    return off


# Sums over many rows into a kept row of at most this many elements accumulate in float64 (a row
# on the kernel's stack: 32 KiB at most): a float32 running sum over, say, a batch's 25,088 pixels
# of one channel drifts by ~1e-4 relative, which BatchNormalization's training-mode moments expose.
_WIDE_ROW_LIMIT = 4096
FLAT_VECTORS = 8  # the most vector partials a flat run of short rows keeps (see _flat_rows)


def _flat(rgroups, inner, vw: int) -> bool:
    """Whether kept rows of ``inner`` elements are reduced as a flat run (:func:`_flat_rows`): rows shorter
    than a vector or not a multiple of it (a global pool over 3 channels), one reduced group whose rows
    lie back to back, and a run of at most FLAT_VECTORS vectors holding whole rows."""
    return isinstance(inner, int) and len(rgroups) == 1 and same(rgroups[0][2], inner) and inner % vw != 0 \
        and math.lcm(inner, vw) // vw <= FLAT_VECTORS


def _flat_rows(k: Kernel, px, kind: str, inner: int, vw: int, ety, lo, hi, xoff, fold: Callable,
               accumulate: Callable) -> None:
    """Rows [lo, hi) of ``inner`` elements at ``xoff``, back to back: ``lcm(inner, vw)`` elements (whole
    rows) at a time into as many ``vw``-lane partials of type ``ety`` (float32 loads widened to it), lane l
    of partial v holding element (v * vw + l) % inner; then ``fold(j, value)`` once per element j of the
    row with its lanes combined, and ``accumulate(offset)`` for each row past the last whole run. The
    input is read in full vectors, where a row at a time read ``inner`` scalars, each a read-modify-write
    of the row."""
    fb, b = k.fn, k.b
    span = math.lcm(inner, vw)
    nvec, rows_per = span // vw, span // inner
    vt = ir.VectorType(ety, vw)
    parts = [fb.var(vt, name=f"flat{v}") for v in range(nvec)]
    for var in parts:
        var.set(k.m.const(_INIT[kind], vt))
    base = b.add(xoff, b.mul(lo, i64(inner)))
    n_spans = b.sdiv(b.sub(hi, lo), i64(rows_per))
    with fb.loop(0, n_spans, name="span") as c:
        at = b.add(base, b.mul(c, i64(span)))
        for v, var in enumerate(parts):
            val = b.load(b.gep(px, [b.add(at, i64(v * vw))], source_etype=F32), typ=ir.VectorType(F32, vw), align=4)
            var.set(_combine(k, kind, var.get(), val if ety == F32 else b.fpext(val, vt)))
    lanes_of: dict[int, list[tuple[int, int]]] = {j: [] for j in range(inner)}
    for v in range(nvec):
        for lane in range(vw):
            lanes_of[(v * vw + lane) % inner].append((v, lane))
    combine = "sum" if kind in _SUMS else kind  # partials of squares add up as plain sums
    for j, where in lanes_of.items():
        total = None
        for v, lane in where:
            e = b.extract_element(parts[v].get(), i32(lane))
            total = e if total is None else _combine(k, combine, total, e)
        fold(j, total)
    with fb.loop(b.add(lo, b.mul(n_spans, i64(rows_per))), hi, name="r") as r:
        accumulate(b.add(xoff, b.mul(r, i64(inner))))


def _reduce_keep_inner(kb, out, x, groups, kind, count):
    inner = groups[-1][1]
    if kind in _SUMS and isinstance(inner, int) and inner <= _WIDE_ROW_LIMIT:
        _reduce_keep_inner_wide(kb, out, x, groups, kind, count)
        return
    kouter = [g for g in groups[:-1] if not g[0]]
    rgroups = [g for g in groups if g[0]]
    k = kb.kernel(f"reduce_{kind}")
    fb, b, m = k.fn, k.b, k.m
    px, po = k.ptr(x), k.ptr(out)
    vw = kb.vw
    n_inner = k.dim(inner)
    vec_end = b.mul(b.sdiv(n_inner, i64(vw)), i64(vw))
    scale = None
    if kind in ("mean", "meansq"):
        scale = b.fdiv(ir.Constant(F32, 1.0), b.sitofp(k.dim(count), F32))
    n_items = dims.product([g[1] for g in kouter]) if kouter else 1
    flat = _flat(rgroups, inner, vw)
    # a static row not summed as a flat run: combined in registers, a block of columns at a time
    in_registers = isinstance(inner, int) and not flat and accumulators_fit(inner, vw, kb.target)
    with fb.loop(k.begin, k.end, name="item") as item:
        xoff = _decompose(k, item, kouter)
        ooff = b.mul(item, n_inner)

        def row_pass(fnc):
            with fb.loop(0, vec_end, vw, name="v") as j:
                fnc(j, vw)
            with fb.loop(vec_end, n_inner, name="s") as j:
                fnc(j, 1)

        def typ(lanes):
            return F32 if lanes == 1 else ir.VectorType(F32, lanes)

        def init(j, lanes):
            b.store(m.const(_INIT[kind], typ(lanes)), b.gep(po, [b.add(ooff, j)], source_etype=F32), align=4)

        row_pass(init)

        def accumulate(off):
            def step(j, lanes):
                q = b.gep(po, [b.add(ooff, j)], source_etype=F32)
                acc = b.load(q, typ=typ(lanes), align=4)
                v = b.load(b.gep(px, [b.add(off, j)], source_etype=F32), typ=typ(lanes), align=4)
                b.store(_combine(k, kind, acc, v), q, align=4)

            row_pass(step)

        if flat:
            def fold(j, value):
                q = b.gep(po, [b.add(ooff, i64(j))], source_etype=F32)
                b.store(_combine(k, kind, b.load(q, typ=F32, align=4), value), q, align=4)

            _flat_rows(k, px, kind, inner, vw, F32, i64(0), k.dim(rgroups[0][1]), xoff, fold, accumulate)
        elif in_registers:
            _rows_in_registers(k, kind, F32, b.gep(po, [ooff], source_etype=F32), vw, i64(0),
                          k.dim(rgroups[0][1]), lambda r: b.add(xoff, b.mul(r, k.dim(rgroups[0][2]))), rgroups[1:],
                          px, inner)
        else:
            _reduce_loops(k, rgroups, xoff, accumulate)
        if scale is not None:
            def fin(j, lanes):
                q = b.gep(po, [b.add(ooff, j)], source_etype=F32)
                v = b.load(q, typ=typ(lanes), align=4)
                s = k.splat(scale, lanes) if lanes > 1 else scale
                b.store(b.fmul(v, s), q, align=4)

            row_pass(fin)
    cost = dims.mul(count, inner) if isinstance(count, int) and isinstance(inner, int) else 4096
    kb.launch(k, n_items, cost)


# A kept row summed over many reduced rows (a global average pool at batch 1: one output row) is one
# work item, one thread. Where there are many, the outermost reduced axis is cut into up to
# MAX_PARTS fixed parts of at least PART_ROWS rows: each (kept row, part) item sums its part into a
# float64 partial row, and a second launch adds a kept row's partials in order. The parts depend on
# the shapes only, never on the thread count, so results do not depend on the schedule. Each part
# writes and the sum reads one float64 row per PART_ROWS input rows or more: at most 1/16 more traffic.
MAX_PARTS = 16
PART_ROWS = 64


def reduce_parts(count: Dim, outer_reduced: Dim) -> int:
    """Parts the outermost reduced axis (of length ``outer_reduced``) is cut into, of ``count`` reduced rows."""
    if not isinstance(count, int) or not isinstance(outer_reduced, int):
        return 1
    parts = MAX_PARTS
    while parts > 1 and (count // parts < PART_ROWS or outer_reduced < parts):
        parts //= 2
    return parts


def accumulators_fit(inner: int, vw: int, target) -> bool:
    """Whether a kept row of ``inner`` elements has its float64 accumulators fit half the vector registers
    (rows of up to 128 floats with AVX-512, 32 with AVX2: the first squeezes of squeeze-and-excitation
    networks), so that :func:`_rows_in_registers` combines the reduced rows into it.

    An accumulator row held in memory makes each reduced row's update wait for the previous row's store
    to be forwarded to its load: a global average pool over 112 x 112 x 32 (EfficientNetB0's first
    squeeze) ran at a few elements per nanosecond, 0.108 ms. Summed in registers over every reduced row,
    it takes 0.030 ms (one thread, Zen 4); 56 x 56 x 96 0.037 -> 0.021.

    Wider rows keep the row in memory. Cut into blocks of columns, each block a pass over the rows, they
    read every row in as many strided pieces, and where the rows come from memory that loses what the
    registers win: on Zen 4, one thread, against the row in memory, a batch of 32 squeezes over 14 x 14 x
    672 (six blocks) ran 0.62-0.95x, in chunks of rows and prefetched as it was tried, and 32 x 28 x 28 x 240
    (two blocks) 0.88x (0.74x on two threads), while at batch 1 (in cache) they ran 1.3-1.8x."""
    capacity = target.num_vector_registers // 2 * target.vector_bits // 64  # float64 elements
    return inner <= max(vw, capacity // vw * vw)


def _at(b: ir.IRBuilder, row, j, lanes: int, ety):
    """Pointer to element(s) ``j`` of a row of ``ety`` (a typed pointer on the stack, or a buffer's)."""
    p = b.gep(row, [j], source_etype=ety)
    return p if lanes == 1 else b.bitcast(p, ir.VectorType(ety, lanes).as_pointer())


def _rows_in_registers(k: Kernel, kind: str, ety, acc_row, vw: int, lo, hi, row_base: Callable, inner_groups,
                       px, inner: int) -> None:
    """``acc_row`` (``ety``, in memory, initialized) combined with reduced rows [lo, hi) of the first reduced
    group (row r at ``row_base(r)``; every position of ``inner_groups`` within it): the accumulators are
    copied to a fixed-size row that lives in registers (:func:`accumulators_fit`), the rows combined into it
    one after another, and copied back. So each column is combined row after row as one row in memory would
    (the same bits), without waiting on a store per row."""
    fb, b = k.fn, k.b
    reg = fb.entry.bitcast(fb.entry.alloca(ir.ArrayType(ety, inner), name="acc_regs"), ety.as_pointer())
    align = 8 if ety == F64 else 4  # (a vector load or store without it would assume the vector's own)

    def typ(lanes):
        return ety if lanes == 1 else ir.VectorType(ety, lanes)

    vec_end = inner // vw * vw
    starts = [(j, vw) for j in range(0, vec_end, vw)] + [(j, 1) for j in range(vec_end, inner)]
    for j, lanes in starts:
        b.store(b.load(_at(b, acc_row, i64(j), lanes, ety), typ=typ(lanes), align=align),
                _at(b, reg, i64(j), lanes, ety), align=align)

    def accumulate(off):
        for j, lanes in starts:
            q = _at(b, reg, i64(j), lanes, ety)
            v = b.load(b.gep(px, [b.add(off, i64(j))], source_etype=F32),
                       typ=F32 if lanes == 1 else ir.VectorType(F32, lanes), align=4)
            if ety != F32:
                v = b.fpext(v, typ(lanes))
            b.store(_combine(k, kind, b.load(q, typ=typ(lanes), align=align), v), q, align=align)

    with fb.loop(lo, hi, name="r") as r:
        _reduce_loops(k, inner_groups, row_base(r), accumulate)
    for j, lanes in starts:
        b.store(b.load(_at(b, reg, i64(j), lanes, ety), typ=typ(lanes), align=align),
                _at(b, acc_row, i64(j), lanes, ety), align=align)


def _reduce_keep_inner_wide(kb, out, x, groups, kind, count):
    """``_reduce_keep_inner`` for sums, accumulating in a float64 row: the input is still streamed
    once, each contiguous row widened and added into the accumulator row, rounded to float32 once."""
    inner = groups[-1][1]
    kouter = [g for g in groups[:-1] if not g[0]]
    rgroups = [g for g in groups if g[0]]
    parts = reduce_parts(count, rgroups[0][1])
    n_items = dims.product([g[1] for g in kouter]) if kouter else 1
    vw = kb.vw
    vec_end = (inner // vw) * vw
    partial = kb.temp((dims.mul(n_items, parts * inner),), "float64") if parts > 1 else None

    def typ(t, lanes):
        return t if lanes == 1 else ir.VectorType(t, lanes)

    def row_pass(fb, fnc):
        if vec_end:
            with fb.loop(0, i64(vec_end), vw, name="v") as j:
                fnc(j, vw)
        if vec_end < inner:
            with fb.loop(i64(vec_end), i64(inner), name="s") as j:
                fnc(j, 1)

    def f64_ptr(b, row, j, lanes):
        return _at(b, row, j, lanes, F64)

    def finish(k, b, acc, ooff, j, lanes):
        """Output element(s) ``j`` of the row at ``ooff`` from the float64 sum ``acc``."""
        if kind in ("mean", "meansq"):
            scale = b.fdiv(ir.Constant(F64, 1.0), b.sitofp(k.dim(count), F64))
            acc = b.fmul(acc, k.splat(scale, lanes) if lanes > 1 else scale)
        b.store(b.fptrunc(acc, typ(F32, lanes)), b.gep(k.ptr(out), [b.add(ooff, j)], source_etype=F32), align=4)

    flat = _flat(rgroups, inner, vw)
    k = kb.kernel(f"reduce_{kind}")
    fb, b = k.fn, k.b
    px = k.ptr(x)
    acc_row = fb.entry.alloca(F64, size=i64(inner), name="acc64")  # a typed double*
    in_registers = not flat and accumulators_fit(inner, vw, kb.target)
    with fb.loop(k.begin, k.end, name="item") as item:
        if parts > 1:
            kept, part = b.sdiv(item, i64(parts)), b.srem(item, i64(parts))
            first = rgroups[0][1]
            lo = b.sdiv(b.mul(part, i64(first)), i64(parts))
            hi = b.sdiv(b.mul(b.add(part, i64(1)), i64(first)), i64(parts))
        else:
            kept, lo, hi = item, i64(0), k.dim(rgroups[0][1])
        xoff = _decompose(k, kept, kouter)
        row_pass(fb, lambda j, lanes: b.store(k.m.const(0.0, typ(F64, lanes)), f64_ptr(b, acc_row, j, lanes), align=8))

        def accumulate(off):
            def step(j, lanes):
                q = f64_ptr(b, acc_row, j, lanes)
                acc = b.load(q, typ=typ(F64, lanes), align=8)
                v = b.load(b.gep(px, [b.add(off, j)], source_etype=F32), typ=typ(F32, lanes), align=4)
                b.store(_combine(k, kind, acc, b.fpext(v, typ(F64, lanes))), q, align=8)

            row_pass(fb, step)

        if flat:
            def fold(j, total):
                q = f64_ptr(b, acc_row, i64(j), 1)
                b.store(b.fadd(b.load(q, typ=F64, align=8), total), q, align=8)

            _flat_rows(k, px, kind, inner, vw, F64, lo, hi, xoff, fold, accumulate)
        elif in_registers:
            _rows_in_registers(k, kind, F64, acc_row, vw, lo, hi,
                          lambda r: b.add(xoff, b.mul(r, k.dim(rgroups[0][2]))), rgroups[1:], px, inner)
        else:
            with fb.loop(lo, hi, name="r") as r:
                _reduce_loops(k, rgroups[1:], b.add(xoff, b.mul(r, k.dim(rgroups[0][2]))), accumulate)
        if parts > 1:
            dst = b.gep(k.ptr(partial), [b.mul(item, i64(inner))], source_etype=F64)

            def spill(j, lanes):
                v = b.load(f64_ptr(b, acc_row, j, lanes), typ=typ(F64, lanes), align=8)
                b.store(v, f64_ptr(b, dst, j, lanes), align=8)

            row_pass(fb, spill)
        else:
            row_pass(fb, lambda j, lanes: finish(k, b, b.load(f64_ptr(b, acc_row, j, lanes), typ=typ(F64, lanes),
                                                              align=8), b.mul(item, i64(inner)), j, lanes))
    kb.launch(k, dims.mul(n_items, parts), count // parts * inner if isinstance(count, int) else 4096)
    if parts == 1:
        return
    k = kb.kernel(f"reduce_{kind}_parts")
    fb, b = k.fn, k.b
    with fb.loop(k.begin, k.end, name="item") as item:
        src = b.gep(k.ptr(partial), [b.mul(item, i64(parts * inner))], source_etype=F64)

        def add_parts(j, lanes):
            acc = b.load(f64_ptr(b, src, j, lanes), typ=typ(F64, lanes), align=8)
            for q in range(1, parts):
                row = b.gep(src, [i64(q * inner)], source_etype=F64)
                acc = b.fadd(acc, b.load(f64_ptr(b, row, j, lanes), typ=typ(F64, lanes), align=8))
            finish(k, b, acc, b.mul(item, i64(inner)), j, lanes)

        row_pass(fb, add_parts)
    kb.launch(k, n_items, parts * inner)


def _reduce_inner(kb, out, x, groups, kind, count):
    inner = groups[-1][1]
    kgroups = [g for g in groups if not g[0]]
    rgroups = [g for g in groups[:-1] if g[0]]
    k = kb.kernel(f"reduce_{kind}")
    fb, b, m = k.fn, k.b, k.m
    px, po = k.ptr(x), k.ptr(out)
    vw = kb.vw
    n_inner = k.dim(inner)
    vec_end = b.mul(b.sdiv(n_inner, i64(vw)), i64(vw))
    vt = ir.VectorType(F32, vw)
    n_items = dims.product([g[1] for g in kgroups]) if kgroups else 1
    with fb.loop(k.begin, k.end, name="item") as item:
        xoff = _decompose(k, item, kgroups)
        vacc = fb.var(vt, name="vacc")
        sacc = fb.var(F32, name="sacc")
        vacc.set(m.const(_INIT[kind], vt))
        sacc.set(m.const(_INIT[kind], F32))

        def accumulate(off):
            with fb.loop(0, vec_end, vw, name="v") as j:
                v = b.load(b.gep(px, [b.add(off, j)], source_etype=F32), typ=vt, align=4)
                vacc.set(_combine(k, kind, vacc.get(), v))
            with fb.loop(vec_end, n_inner, name="s") as j:
                v = b.load(b.gep(px, [b.add(off, j)], source_etype=F32), typ=F32, align=4)
                sacc.set(_combine(k, kind, sacc.get(), v))

        _reduce_loops(k, rgroups, xoff, accumulate)
        total = _combine(k, "sum" if kind in _SUMS else kind, _horizontal(k, kind, vacc.get(), vw), sacc.get())
        if kind in ("mean", "meansq"):
            total = b.fdiv(total, b.sitofp(k.dim(count), F32))
        b.store(total, b.gep(po, [item], source_etype=F32), align=4)
    cost = count if isinstance(count, int) else 4096
    kb.launch(k, n_items, cost)


def _axis_split(shape, axis):
    outer = dims.product(shape[:axis])
    inner = dims.product(shape[axis + 1:])
    return outer, shape[axis], inner


def emit_softmax(kb: KernelBuilder, out: Tensor, x: Tensor, axis: int, *, log: bool) -> None:
    outer, n, inner = _axis_split(x.shape, axis)
    if inner == 1:
        _softmax_rows(kb, out, x, outer, n, log)
    else:
        _softmax_strided(kb, out, x, outer, n, inner, log)


def _larger(b, a, v):
    """``a > v ? a : v``: one ``vmaxps``. Not NaN-propagating (``maximum`` is, in five instructions and a
    longer dependency chain): a softmax does not need it, since a NaN anywhere in the row makes every
    ``e^{x - max}``'s sum NaN, whatever the maximum came out as."""
    return b.select(b.fcmp_ordered(">", a, v), a, v)


def tree_reduce(k: Kernel, v, lanes: int, combine: Callable):
    """``combine`` over the lanes of ``v`` in log2(lanes) vector steps (the upper half folded onto the
    lower each time), then lane 0."""
    b = k.b
    width = lanes
    while width > 1:
        width //= 2
        order = [width + i if i < width else i for i in range(lanes)]  # lanes past `width` are not read
        upper = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, lanes), order))
        v = combine(v, upper)
    return b.extract_element(v, i32(0))


def _softmax_rows(kb, out, x, outer, n, log):
    """Softmax (or log-softmax) over contiguous rows: the row's maximum (cheap ``max`` in vectors, a
    tree across lanes), then e^{x - max} stored and summed into two accumulators (two vectors a step,
    so that the adds of consecutive vectors do not wait on each other), then the row scaled by
    1 / sum (or x - max - log sum). Against the kernel before (NaN-propagating maxima, one sum chain,
    lane-by-lane reductions), ``python -m benchmarks.softmax`` on Zen 4: 512 rows of 17-512, softmax
    1.63-3.07x, log_softmax 1.59-2.22x (rows of 128, the attention scores of 4 heads x 128 tokens:
    81 -> 39 us)."""
    k = kb.kernel("log_softmax" if log else "softmax")
    fb, b, m = k.fn, k.b, k.m
    px, po = k.ptr(x), k.ptr(out)
    vw = kb.vw
    vt = ir.VectorType(F32, vw)
    nn = k.dim(n)
    vec_end = b.mul(b.sdiv(nn, i64(vw)), i64(vw))
    pair_end = b.mul(b.sdiv(nn, i64(2 * vw)), i64(2 * vw))
    with fb.loop(k.begin, k.end, name="row") as row:
        base = b.mul(row, nn)

        def ld(p, j, t):
            return b.load(b.gep(p, [b.add(base, j)], source_etype=F32), typ=t, align=4)

        def st(p, j, v):
            b.store(v, b.gep(p, [b.add(base, j)], source_etype=F32), align=4)

        vmax = fb.var(vt, name="vmax")
        smax = fb.var(F32, name="smax")
        vmax.set(m.const(-math.inf, vt))
        smax.set(m.const(-math.inf, F32))
        with fb.loop(0, vec_end, vw, name="v") as j:
            vmax.set(_larger(b, vmax.get(), ld(px, j, vt)))
        with fb.loop(vec_end, nn, name="s") as j:
            smax.set(_larger(b, smax.get(), ld(px, j, F32)))
        mx = _larger(b, tree_reduce(k, vmax.get(), vw, lambda p, q: _larger(b, p, q)), smax.get())
        mxv = k.splat(mx, vw)
        sums = [fb.var(vt, name=f"vsum{i}") for i in range(2)]
        for acc in sums:
            acc.set(m.const(0.0, vt))
        ssum = fb.var(F32, name="ssum")
        ssum.set(m.const(0.0, F32))

        def exp_at(j, acc, t):
            e = m.exp(b.fsub(ld(px, j, t), mxv if t is vt else mx))
            if not log:
                st(po, j, e)
            acc.set(b.fadd(acc.get(), e))

        with fb.loop(0, pair_end, 2 * vw, name="v") as j:
            exp_at(j, sums[0], vt)
            exp_at(b.add(j, i64(vw)), sums[1], vt)
        with fb.loop(pair_end, vec_end, vw, name="v") as j:
            exp_at(j, sums[0], vt)
        with fb.loop(vec_end, nn, name="s") as j:
            exp_at(j, ssum, F32)
        total = b.fadd(tree_reduce(k, b.fadd(sums[0].get(), sums[1].get()), vw, b.fadd), ssum.get())
        if log:  # (x - max) - log(sum): x - (max + log(sum)) loses log(sum) beside a large max
            log_sum = mathlib.libm(b, "logf", total)
            lv = k.splat(log_sum, vw)
            with fb.loop(0, vec_end, vw, name="v") as j:
                st(po, j, b.fsub(b.fsub(ld(px, j, vt), mxv), lv))
            with fb.loop(vec_end, nn, name="s") as j:
                st(po, j, b.fsub(b.fsub(ld(px, j, F32), mx), log_sum))
        else:
            inv = b.fdiv(ir.Constant(F32, 1.0), total)
            iv = k.splat(inv, vw)
            with fb.loop(0, vec_end, vw, name="v") as j:
                st(po, j, b.fmul(ld(po, j, vt), iv))
            with fb.loop(vec_end, nn, name="s") as j:
                st(po, j, b.fmul(ld(po, j, F32), inv))
    kb.launch(k, outer, dims.mul(n, 20) if isinstance(n, int) else 4096)


def _softmax_strided(kb, out, x, outer, n, inner, log):
    k = kb.kernel("log_softmax" if log else "softmax")
    fb, b, m = k.fn, k.b, k.m
    px, po = k.ptr(x), k.ptr(out)
    nn, ni = k.dim(n), k.dim(inner)
    with fb.loop(k.begin, k.end, name="o") as o:
        base = b.mul(o, b.mul(nn, ni))
        with fb.loop(0, ni, name="c") as c:
            start = b.add(base, c)

            def ld(p, i):
                return b.load(b.gep(p, [b.add(start, b.mul(i, ni))], source_etype=F32), typ=F32, align=4)

            def st(p, i, v):
                b.store(v, b.gep(p, [b.add(start, b.mul(i, ni))], source_etype=F32), align=4)

            mx = fb.var(F32, name="mx")
            mx.set(m.const(-math.inf, F32))
            with fb.loop(0, nn, name="i") as i:
                mx.set(m.maximum(mx.get(), ld(px, i)))
            s = fb.var(F32, name="sum")
            s.set(m.const(0.0, F32))
            with fb.loop(0, nn, name="i") as i:
                e = m.exp(b.fsub(ld(px, i), mx.get()))
                if not log:
                    st(po, i, e)
                s.set(b.fadd(s.get(), e))
            if log:  # (x - max) - log(sum), as the row kernel
                log_sum = mathlib.libm(b, "logf", s.get())
                with fb.loop(0, nn, name="i") as i:
                    st(po, i, b.fsub(b.fsub(ld(px, i), mx.get()), log_sum))
            else:
                inv = b.fdiv(ir.Constant(F32, 1.0), s.get())
                with fb.loop(0, nn, name="i") as i:
                    st(po, i, b.fmul(ld(po, i), inv))
    kb.launch(k, outer, 4096)


def emit_argmax(kb: KernelBuilder, out: Tensor, x: Tensor, axis: int) -> None:
    """Index of the first maximum along ``axis`` (NaN counts as the maximum, as in NumPy)."""
    outer, n, inner = _axis_split(x.shape, axis)
    k = kb.kernel("argmax")
    fb, b = k.fn, k.b
    px, po = k.ptr(x), k.ptr(out)
    nn, ni = k.dim(n), k.dim(inner)
    with fb.loop(k.begin, k.end, name="o") as o:
        base = b.mul(o, b.mul(nn, ni))
        with fb.loop(0, ni, name="c") as c:
            start = b.add(base, c)
            best = fb.var(F32, name="best")
            besti = fb.var(I64, name="besti")
            best.set(b.load(b.gep(px, [start], source_etype=F32), typ=F32))
            besti.set(i64(0))
            with fb.loop(1, nn, name="i") as i:
                v = b.load(b.gep(px, [b.add(start, b.mul(i, ni))], source_etype=F32), typ=F32)
                cur = best.get()
                # take v if it is larger, or if it is NaN and the best so far is not
                better = b.or_(b.fcmp_ordered(">", v, cur),
                               b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", cur, cur)))
                best.set(b.select(better, v, cur))
                besti.set(b.select(better, i, besti.get()))
            oi = b.add(b.mul(o, ni), c)
            val = besti.get()
            if out.dtype != "int64":
                val = b.trunc(val, out.ir_type)
            b.store(val, b.gep(po, [oi], source_etype=out.ir_type))
    kb.launch(k, outer, 4096)
