"""One loop for a ``fused_elementwise`` op: every step of its program per element, all outputs stored.

The loop is :func:`~.elementwise.emit_map`'s (the iteration shape reduced by ``merge_axes``, work items
of one inner row or of ``BLOCK`` elements, a vector loop of ``vw`` lanes with operands broadcast
along the inner axis splatted, a scalar remainder), with several outputs of the iteration shape. The
body of each step is the one its op's own ``lower`` facet hands to ``kb.map``
(:func:`graphc.ops.fused_elementwise.capture_bodies`), called on vectors and then on scalars, so the
math is written once. Intermediate values stay in registers; a comparison's i1 result is widened
to the i8 a bool tensor holds, exactly as if it had been stored and loaded again.
"""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from graphc.backends.llvm.builder import KernelBuilder, Tensor
from graphc.backends.llvm.irutil import DTYPE_IR, i64
from graphc.backends.llvm.kernels.elementwise import BLOCK, _check_broadcast
from graphc.backends.llvm.kernels.layout import broadcast_strides, contiguous_strides, merge_axes
from graphc.ir import dims

_I1 = ir.IntType(1)


def _widen_bool(b: ir.IRBuilder, value: ir.Value, dtype: str, lanes: int) -> ir.Value:
    if getattr(value.type, "element", value.type) != _I1:
        return value
    t = DTYPE_IR[dtype]
    return b.zext(value, t if lanes == 1 else ir.VectorType(t, lanes))


def emit_fused_elementwise(kb: KernelBuilder, outs: list[Tensor], inputs: list[Tensor], bodies: Sequence[tuple],
                           outputs: Sequence[int]) -> None:
    """``outs[j] = env[outputs[j]]`` where ``env`` is ``inputs`` then each body's result, in order.

    ``bodies``: ``(fn, refs, dtype)`` per step, ``fn(m, *[env[r] for r in refs])`` its value.
    """
    shape = list(outs[0].shape)
    n_out = len(outs)
    strides = [contiguous_strides(shape)] * n_out + [broadcast_strides(x.shape, shape) for x in inputs]
    mshape, mstrides = merge_axes(shape, strides)
    outer, inner = mshape[:-1], mshape[-1]
    inner_strides = [st[-1] for st in mstrides]
    vw = kb.vw if all(st in (0, 1) for st in inner_strides) else 1
    cost = max(1, len(bodies))
    k = kb.kernel("fused_elementwise")
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
