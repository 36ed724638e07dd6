"""Elementwise kernels with NumPy broadcasting: ``out = fn(m, *inputs)``.

The output's index space is reduced by :func:`~.layout.merge_axes` to ``outer... x inner``.
Work items are the outer index combinations (each item one inner row), or, when there is no
outer axis, blocks of ``BLOCK`` elements of the single flat axis. The inner row runs as a
vector loop of ``vw`` lanes (operands broadcast along it are loaded once and splatted) and a
scalar remainder; ``fn`` is called once for each, so it must be type-generic (VMath is).

Free dims may be 1 at run time: an operand's free dim that is not the output's is read with a
stride that is 0 when it is 1 (see :func:`~.layout.broadcast_strides`), and every launch first
checks that the operands do broadcast to the output at the bound sizes (the reference's NumPy
raises where they do not; reading past an operand would give a silent wrong answer instead).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llvmlite import ir

from graphc.backends.llvm.builder import Kernel, KernelBuilder, Tensor
from graphc.backends.llvm.irutil import DTYPE_IR, i64
from graphc.backends.llvm.kernels.layout import broadcast_strides, contiguous_strides, merge_axes, runtime_broadcast
from graphc.ir import dims
from graphc.ir.dims import Dim
from graphc.ops.common import fmt_shape

BLOCK = 4096


_I1 = ir.IntType(1)


def emit_map(kb: KernelBuilder, out: Tensor, inputs: list[Tensor], fn: Callable, *, name: str, cost: int) -> None:
    """``out = fn(m, *inputs)``, one loop."""
    emit_maps(kb, [out], inputs, [(fn, list(range(len(inputs))), out.dtype)], [len(inputs)], name=name, cost=cost)


def emit_maps(kb: KernelBuilder, outs: list[Tensor], inputs: list[Tensor], bodies: Sequence[tuple],
              outputs: Sequence[int], *, name: str, cost: int) -> None:
    """One loop over the outputs' shape computing a program per element: ``outs[j] = env[outputs[j]]``, where
    ``env`` is ``inputs`` then each body's result, in order. ``bodies``: ``(fn, refs, dtype)`` per step,
    ``fn(m, *[env[r] for r in refs])`` its value (type-generic: called on vectors, then on scalars).
    Intermediate values stay in registers; a comparison's i1 result is widened to the i8 a bool tensor holds."""
    shape = list(outs[0].shape)
    n_out = len(outs)
    strides = [contiguous_strides(shape)] * n_out + [broadcast_strides(x.shape, shape) for x in inputs]
    mshape, mstrides = merge_axes(shape, strides)
    outer, inner = mshape[:-1], mshape[-1]
    inner_strides = [st[-1] for st in mstrides]
    # the vector loop loads consecutive lanes: only for operands read contiguously or splatted
    vw = kb.vw if all(st in (0, 1) for st in inner_strides) else 1
    k = kb.kernel(name)
    fb, b = k.fn, k.b
    _check_broadcast(kb, k, outs[0], inputs)
    tensors = outs + inputs
    ptrs = [k.ptr(t) for t in tensors]
    inner_len = k.dim(inner)
    if outer:
        n_items = dims.product(outer)
        item_cost = dims.mul(inner, cost) if isinstance(inner, int) else BLOCK * cost
    else:
        n_items = dims.ceildiv(inner, BLOCK) if not isinstance(inner, int) else -(-inner // BLOCK)
        item_cost = BLOCK * cost
    with fb.loop(k.begin, k.end, name="item") as item:
        if outer:
            bases = [i64(0)] * len(tensors)
            rem = item
            for g in range(len(outer) - 1, -1, -1):
                length = k.dim(outer[g])
                idx = b.srem(rem, length)
                rem = b.sdiv(rem, length)
                bases = [base if st[g] == 0 else b.add(base, b.mul(idx, k.dim(st[g])))
                         for base, st in zip(bases, mstrides)]
            lo, hi = i64(0), inner_len
        else:
            lo = b.mul(item, i64(BLOCK))
            hi = fb.min_(b.add(lo, i64(BLOCK)), inner_len)
            bases = [i64(0)] * len(tensors)
        # operands broadcast along the inner axis: one scalar per row
        row_scalars = {}
        for i in range(n_out, len(tensors)):
            if inner_strides[i] == 0:
                t = tensors[i]
                row_scalars[i] = b.load(b.gep(ptrs[i], [bases[i]], source_etype=t.ir_type), typ=t.ir_type)
        vec_end = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), i64(vw)), i64(vw))) if vw > 1 else lo

        def body(j, lanes):
            env = []
            for i in range(n_out, len(tensors)):
                t = tensors[i]
                if i in row_scalars:
                    env.append(k.splat(row_scalars[i], lanes) if lanes > 1 else row_scalars[i])
                    continue
                step = j if inner_strides[i] == 1 else b.mul(j, k.dim(inner_strides[i]))
                p = b.gep(ptrs[i], [b.add(bases[i], step)], source_etype=t.ir_type)
                typ = t.ir_type if lanes == 1 else ir.VectorType(t.ir_type, lanes)
                env.append(b.load(p, typ=typ, align=t.type.itemsize))
            for fn, refs, dtype in bodies:
                env.append(_widen_bool(b, fn(k.m, *[env[r] for r in refs]), dtype, lanes))
            for o, r in enumerate(outputs):
                t = tensors[o]
                value = env[r]
                if lanes > 1 and not isinstance(value.type, ir.VectorType):  # a step that ignored its vector
                    value = k.splat(value, lanes)
                p = b.gep(ptrs[o], [b.add(bases[o], j)], source_etype=t.ir_type)
                b.store(value, p, align=t.type.itemsize)

        if vw > 1:
            with fb.loop(lo, vec_end, vw, name="v") as j:
                body(j, vw)
        with fb.loop(vec_end, hi, name="s") as j:
            body(j, 1)
    kb.launch(k, n_items, item_cost)


def _widen_bool(b: ir.IRBuilder, value: ir.Value, dtype: str, lanes: int) -> ir.Value:
    if getattr(value.type, "element", value.type) != _I1:
        return value
    t = DTYPE_IR[dtype]
    return b.zext(value, t if lanes == 1 else ir.VectorType(t, lanes))


def _check_broadcast(kb: KernelBuilder, k: Kernel, out: Tensor, inputs: list[Tensor]) -> None:
    """Fail the launch unless every operand broadcasts to ``out`` at the bound free-dim sizes.

    Checked where it depends on them: a free operand dim against another output dim (it must be
    1 or that dim), a fixed operand dim other than 1 against a free output dim (they must agree).
    """
    b = k.b
    checks: list[tuple[Dim, Dim]] = []
    for x in inputs:
        full = (1,) * (out.rank - x.rank) + tuple(x.shape)
        for d, o in zip(full, out.shape):
            if runtime_broadcast(d, o) or (isinstance(d, int) and d != 1 and not isinstance(o, int)):
                checks.append((d, o))
    if not checks:
        return
    if kb.op_error is None:
        shapes = " and ".join(fmt_shape(x.shape) for x in inputs)
        kb.fail_message(f"operands of shapes {shapes} do not broadcast to {fmt_shape(out.shape)} "
                        "at these input sizes (a dimension is %lld)")
    for d, o in checks:
        dv, ov = k.dim(d), k.dim(o)
        ok = b.icmp_signed("==", dv, ov)
        if not isinstance(d, int):
            ok = b.or_(ok, b.icmp_signed("==", dv, i64(1)))
        with b.if_then(b.not_(ok), likely=False):
            k.fail(dv if not isinstance(d, int) else ov)


def emit_fill(kb: KernelBuilder, out: Tensor, value: float) -> None:
    """Every element of ``out`` set to ``value``."""
    n = dims.product(out.shape)
    k = kb.kernel("fill")
    fb, b = k.fn, k.b
    po = k.ptr(out)
    vw = kb.vw
    vt = ir.VectorType(out.ir_type, vw)
    with fb.loop(k.begin, k.end, name="item") as item:
        lo = b.mul(item, i64(BLOCK))
        hi = fb.min_(b.add(lo, i64(BLOCK)), k.dim(n))
        vec_end = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), i64(vw)), i64(vw)))
        with fb.loop(lo, vec_end, vw, name="v") as j:
            b.store(k.m.const(value, vt), b.gep(po, [j], source_etype=out.ir_type), align=out.type.itemsize)
        with fb.loop(vec_end, hi, name="s") as j:
            b.store(k.m.const(value, out.ir_type), b.gep(po, [j], source_etype=out.ir_type),
                    align=out.type.itemsize)
    kb.launch(k, dims.ceildiv(n, BLOCK), BLOCK)


def emit_store_dim(kb: KernelBuilder, out: Tensor, d) -> None:
    """``out`` (one element) = the value of dimension ``d`` (free dims bound at run time)."""
    k = kb.kernel("store_dim")
    b = k.b
    v = k.dim(d)
    if out.dtype in ("float32", "float64"):
        v = b.sitofp(v, out.ir_type)
    elif out.ir_type.width < 64:
        v = b.trunc(v, out.ir_type)
    b.store(v, k.ptr(out))
    kb.launch(k, 1, 1)
