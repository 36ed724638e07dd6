"""Counter-based uniform random numbers (dropout masks) for ``random_uniform_like``.

Element ``i`` of a call is a hash of ``(key, i)`` with ``key = mix(seed, op, call)``: a
SplitMix64 finalizer applied twice, its top 24 bits scaled to [0, 1) (exact in float32).
``call`` counts the calls of the op in the loaded library (a global incremented atomically
by a one-item kernel before the elements are drawn), so every step draws new values while a
given seed, op and call number always give the same ones. :func:`uniform_reference` is the
same function in NumPy.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.backends.llvm.builder import KernelBuilder, NativeLoweringError, Tensor
from graphc.backends.llvm.irutil import F32, I64, i64
from graphc.ir import dims

BLOCK = 4096
_GOLDEN, _M1, _M2, _OP = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD1B54A32D192ED03
_MASK = (1 << 64) - 1


def stream_key(seed: int | None, op_index: int, call: int) -> int:
    """The 64-bit key of one call (the same formula the kernel computes)."""
    base = ((seed if seed is not None else 0x5EED) * _GOLDEN + op_index * _OP) & _MASK
    return _splitmix(np.uint64((base + call * _GOLDEN) & _MASK))


def _splitmix(z):
    with np.errstate(over="ignore"):
        z = np.uint64(z) if np.isscalar(z) else z
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        return z ^ (z >> np.uint64(31))


def uniform_reference(seed: int | None, op_index: int, call: int, shape) -> np.ndarray:
    """The float32 values the kernel draws for ``(seed, op_index, call)``, in NumPy."""
    key = np.uint64(stream_key(seed, op_index, call))
    with np.errstate(over="ignore"):
        z = _splitmix(np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.uint64) + key)
    return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)).reshape(shape)


def _ir_splitmix(b: ir.IRBuilder, z: ir.Value) -> ir.Value:
    z = b.mul(b.xor(z, b.lshr(z, i64(30))), ir.Constant(I64, _M1))
    z = b.mul(b.xor(z, b.lshr(z, i64(27))), ir.Constant(I64, _M2))
    return b.xor(z, b.lshr(z, i64(31)))


def emit_random_uniform(kb: KernelBuilder, out: Tensor, seed: int | None) -> None:
    if out.dtype != "float32":
        raise NativeLoweringError(f"random_uniform_like of {out.dtype}")
    op_index = kb.op_index
    counter = ir.GlobalVariable(kb.module, I64, name=kb.unique("random_calls"))
    counter.linkage = "internal"
    counter.initializer = ir.Constant(I64, 0)
    call = kb.temp((1,), "int64")
    # 1. take this call's number
    k = kb.kernel("random_call")
    b = k.b
    c = b.atomic_rmw("add", counter, i64(1), "monotonic")
    b.store(c, k.ptr(call))
    kb.launch(k, 1)
    # 2. draw the elements
    total = dims.product(out.shape)
    k = kb.kernel("random_uniform")
    fb, b = k.fn, k.b
    base = ((seed if seed is not None else 0x5EED) * _GOLDEN + op_index * _OP) & _MASK
    cv = b.load(k.ptr(call), typ=I64)
    key = _ir_splitmix(b, b.add(ir.Constant(I64, base), b.mul(cv, ir.Constant(I64, _GOLDEN))))
    pout = k.ptr(out)
    n = k.dim(total)
    with fb.loop(k.begin, k.end, name="blk") as blk:
        start = b.mul(blk, i64(BLOCK))
        stop = fb.min_(b.add(start, i64(BLOCK)), n)
        with fb.loop(start, stop, name="e") as e:
            z = _ir_splitmix(b, b.add(e, key))
            u = b.fmul(b.uitofp(b.lshr(z, i64(40)), F32), ir.Constant(F32, 2.0 ** -24))
            b.store(u, b.gep(pout, [e], source_etype=F32))
    kb.launch(k, dims.ceildiv(total, BLOCK), BLOCK * 8)


__all__ = ["emit_random_uniform", "uniform_reference", "stream_key"]
