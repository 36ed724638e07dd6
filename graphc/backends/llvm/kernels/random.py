"""Counter-based random numbers: uniform (dropout masks, ``random_uniform_like``) and standard
normal (Gaussian noise, ``random_normal_like``).

Element ``i`` of a call is a hash of ``(key, i)`` with ``key = mix(seed, op, stream)``: a
SplitMix64 finalizer applied twice, its top 24 bits scaled to [0, 1) (exact in float32).
``stream`` is ``call + 2**32 * instance_seed``: ``call`` counts the op's calls on this instance
and ``instance_seed`` is the instance's seed (``gc_options_t.seed``), both in the instance's
random state (``frame->random``: ``[0]`` the seed, ``[1 + op]`` the op's counter, incremented
atomically by a one-item kernel before the elements are drawn). Every step draws new values,
a given seed, op and call number always give the same ones, and instances never share a
counter. :func:`uniform_reference` is the same function in NumPy.

A normal draw takes two 24-bit fields of one hash, ``u1 = (bits 40..63 + 1) / 2^24`` in (0, 1]
and ``u2 = bits 16..39 / 2^24`` in [0, 1), through the Box–Muller transform
``sqrt(-2 log u1) cos(2 pi u2)`` (float32, the C library's ``logf`` and ``cosf``);
:func:`normal_reference` computes it in NumPy.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from graphc.backends.llvm import mathlib
from graphc.backends.llvm.builder import FRAME_RANDOM, KernelBuilder, NativeLoweringError, Tensor, frame_field
from graphc.backends.llvm.irutil import F32, I64, PTR, i64
from graphc.ir import dims

BLOCK = 4096
_GOLDEN, _M1, _M2, _OP = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xD1B54A32D192ED03
_MASK = (1 << 64) - 1


def stream_key(seed: int | None, op_index: int, call: int, instance_seed: int = 0) -> int:
    """The 64-bit key of one call (the same formula the kernel computes)."""
    base = ((seed if seed is not None else 0x5EED) * _GOLDEN + op_index * _OP) & _MASK
    stream = (call + (instance_seed << 32)) & _MASK
    return _splitmix(np.uint64((base + stream * _GOLDEN) & _MASK))


def _splitmix(z):
    with np.errstate(over="ignore"):
        z = np.uint64(z) if np.isscalar(z) else z
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        return z ^ (z >> np.uint64(31))


def uniform_reference(seed: int | None, op_index: int, call: int, shape, instance_seed: int = 0) -> np.ndarray:
    """The float32 values the kernel draws for ``(seed, op_index, call)``, in NumPy."""
    key = np.uint64(stream_key(seed, op_index, call, instance_seed))
    with np.errstate(over="ignore"):
        z = _splitmix(np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.uint64) + key)
    return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)).reshape(shape)


def normal_reference(seed: int | None, op_index: int, call: int, shape, instance_seed: int = 0) -> np.ndarray:
    """The float32 standard normal values the kernel draws for ``(seed, op_index, call)``, in NumPy
    (equal up to the last bit of the C library's ``logf``/``cosf``)."""
    key = np.uint64(stream_key(seed, op_index, call, instance_seed))
    with np.errstate(over="ignore"):
        z = _splitmix(np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.uint64) + key)
    scale = np.float32(2.0 ** -24)
    u1 = ((z >> np.uint64(40)) + np.uint64(1)).astype(np.float32) * scale
    u2 = ((z >> np.uint64(16)) & np.uint64(0xFFFFFF)).astype(np.float32) * scale
    radius = np.sqrt(np.float32(-2.0) * np.log(u1))
    return (radius * np.cos(np.float32(2 * np.pi) * u2)).astype(np.float32).reshape(shape)


def _ir_splitmix(b: ir.IRBuilder, z: ir.Value) -> ir.Value:
    z = b.mul(b.xor(z, b.lshr(z, i64(30))), ir.Constant(I64, _M1))
    z = b.mul(b.xor(z, b.lshr(z, i64(27))), ir.Constant(I64, _M2))
    return b.xor(z, b.lshr(z, i64(31)))


def emit_random_uniform(kb: KernelBuilder, out: Tensor, seed: int | None) -> None:
    if out.dtype != "float32":
        raise NativeLoweringError(f"random_uniform_like of {out.dtype}")
    _emit_draws(kb, out, seed, "random_uniform", _uniform, cost=8)


def emit_random_normal(kb: KernelBuilder, out: Tensor, seed: int | None) -> None:
    if out.dtype != "float32":
        raise NativeLoweringError(f"random_normal_like of {out.dtype}")
    _emit_draws(kb, out, seed, "random_normal", _normal, cost=40)


def _uniform(b: ir.IRBuilder, z: ir.Value) -> ir.Value:
    return b.fmul(b.uitofp(b.lshr(z, i64(40)), F32), ir.Constant(F32, 2.0 ** -24))


def _normal(b: ir.IRBuilder, z: ir.Value) -> ir.Value:
    scale = ir.Constant(F32, 2.0 ** -24)
    u1 = b.fmul(b.uitofp(b.add(b.lshr(z, i64(40)), i64(1)), F32), scale)
    u2 = b.fmul(b.uitofp(b.and_(b.lshr(z, i64(16)), i64(0xFFFFFF)), F32), scale)
    radius = mathlib.call(b, "sqrt", b.fmul(ir.Constant(F32, -2.0), mathlib.libm(b, "logf", u1)))
    angle = b.fmul(ir.Constant(F32, float(np.float32(2 * np.pi))), u2)
    return b.fmul(radius, mathlib.libm(b, "cosf", angle))


def _emit_draws(kb: KernelBuilder, out: Tensor, seed: int | None, name: str, draw, cost: int) -> None:
    """One call's elements: ``draw(builder, hash of (key, index))`` for each index of ``out``
    (``cost``: the estimated cycles of one draw, for the parallel split)."""
    op_index = kb.op_index
    call = kb.temp((1,), "int64")
    # 1. take this call's stream: the op's counter on this instance, plus the instance's seed
    k = kb.kernel("random_call")
    b = k.b
    state = b.load(frame_field(b, k.frame, FRAME_RANDOM), typ=PTR)
    counter = b.gep(state, [i64(1 + op_index)], source_etype=I64)
    c = b.atomic_rmw("add", counter, i64(1), "monotonic")
    instance_seed = b.load(state, typ=I64)
    b.store(b.add(c, b.shl(instance_seed, i64(32))), k.ptr(call))
    kb.launch(k, 1)
    # 2. draw the elements
    total = dims.product(out.shape)
    k = kb.kernel(name)
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
            b.store(draw(b, z), b.gep(pout, [e], source_etype=F32))
    kb.launch(k, dims.ceildiv(total, BLOCK), BLOCK * cost)


__all__ = ["emit_random_uniform", "emit_random_normal", "uniform_reference", "normal_reference", "stream_key"]
