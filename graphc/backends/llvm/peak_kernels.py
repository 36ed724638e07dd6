"""Kernels that measure the machine: chains of FMAs and streaming loops, JIT-compiled for the host.

Every efficiency graphc reports is against what this CPU can do, measured with code generated the
way graphc generates its kernels (llvmlite, explicit vectors, the host's CPU and features):

- ``fma_W(iters, a, b)``: ``ACCUMULATORS`` independent W-bit accumulators, each updated
  ``acc = acc * a + b`` (``llvm.fmuladd``: one FMA instruction where the CPU has FMA) ``UNROLL``
  times per iteration. Independent chains hide the FMA latency, so the loop runs at the FMA
  units' throughput. Returns a sum of the accumulators, so nothing is dead code.
- ``copy(dst, src, n)`` and ``triad(a, b, c, s, n)`` (``a = b + s * c``): n float32 elements in
  vectors of the widest width, for memory bandwidth.

The functions are plain C-ABI functions called through ctypes, which releases the GIL, so several
Python threads run them on several cores at once.
"""

from __future__ import annotations

import ctypes
from functools import cache

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.backends.llvm.irutil import F32, I64, PTR, intrinsic
from graphc.backends.llvm.target import TargetInfo, host_target

ACCUMULATORS = 12  # > FMA latency (4) x FMA ports (2), and fits 16 vector registers with a and b
UNROLL = 4



def vector_widths(info: TargetInfo) -> list[int]:
    """The float vector widths (bits) the target has: 128 always, 256 with AVX, 512 with AVX-512."""
    return [w for w in (128, 256, 512) if w <= info.vector_bits]


def flops_per_iteration(width: int) -> int:
    """Floating-point operations of one ``fma_W`` iteration (an FMA counts as two)."""
    return ACCUMULATORS * UNROLL * (width // 32) * 2


def _fmuladd(module: ir.Module, vec: ir.VectorType) -> ir.Function:
    return intrinsic(module, f"llvm.fmuladd.v{vec.count}f32", vec, [vec, vec, vec])


def _fma_chain(module: ir.Module, width: int) -> None:
    lanes = width // 32
    vec = ir.VectorType(F32, lanes)
    fmuladd = _fmuladd(module, vec)
    fn = ir.Function(module, ir.FunctionType(F32, [I64, F32, F32]), name=f"fma_{width}")
    iters, a, b = fn.args
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    e = ir.IRBuilder(entry)

    def splat(x):
        v = e.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        return e.shuffle_vector(v, ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                                                 [0] * lanes))

    va, vb = splat(a), splat(b)
    start = [ir.Constant(vec, [float(k + 1) / ACCUMULATORS] * lanes) for k in range(ACCUMULATORS)]
    e.branch(loop)
    lb = ir.IRBuilder(loop)
    i = lb.phi(I64, name="i")
    accs = [lb.phi(vec, name=f"acc{k}") for k in range(ACCUMULATORS)]
    cur = list(accs)
    for _ in range(UNROLL):
        cur = [lb.call(fmuladd, [c, va, vb]) for c in cur]
    nxt = lb.add(i, ir.Constant(I64, 1))
    i.add_incoming(ir.Constant(I64, 0), entry)
    i.add_incoming(nxt, loop)
    for phi, s, c in zip(accs, start, cur):
        phi.add_incoming(s, entry)
        phi.add_incoming(c, loop)
    lb.cbranch(lb.icmp_signed("<", nxt, iters), loop, done)
    db = ir.IRBuilder(done)
    total = cur[0]
    for c in cur[1:]:
        total = db.fadd(total, c)
    db.ret(db.extract_element(total, ir.Constant(ir.IntType(32), 0)))


def _stream(module: ir.Module, width: int, name: str) -> None:
    """``copy(dst, src, n)`` or ``triad(a, b, c, s, n)`` over n float32 (n a multiple of the lanes)."""
    lanes = width // 32
    vec = ir.VectorType(F32, lanes)
    args = [PTR, PTR, I64] if name == "copy" else [PTR, PTR, PTR, F32, I64]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name=name)
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    e = ir.IRBuilder(entry)
    n = fn.args[-1]
    if name == "triad":
        v = e.insert_element(ir.Constant(vec, ir.Undefined), fn.args[3], ir.Constant(ir.IntType(32), 0))
        scale = e.shuffle_vector(v, ir.Constant(vec, ir.Undefined),
                                 ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
    e.cbranch(e.icmp_signed(">", n, ir.Constant(I64, 0)), loop, done)
    lb = ir.IRBuilder(loop)
    i = lb.phi(I64, name="i")

    def at(ptr):
        return lb.gep(ptr, [i], source_etype=F32)

    if name == "copy":
        lb.store(lb.load(at(fn.args[1]), typ=vec, align=4), at(fn.args[0]), align=4)
    else:
        x = lb.load(at(fn.args[1]), typ=vec, align=4)
        y = lb.load(at(fn.args[2]), typ=vec, align=4)
        fmuladd = _fmuladd(module, vec)
        lb.store(lb.call(fmuladd, [y, scale, x]), at(fn.args[0]), align=4)
    nxt = lb.add(i, ir.Constant(I64, lanes))
    i.add_incoming(ir.Constant(I64, 0), entry)
    i.add_incoming(nxt, loop)
    lb.cbranch(lb.icmp_signed("<", nxt, n), loop, done)
    ir.IRBuilder(done).ret_void()


class PeakKernels:
    """The JIT-compiled measuring kernels of the host (ctypes callables; keep this object alive)."""

    def __init__(self, info: TargetInfo | None = None):
        self.info = info or host_target()
        self.widths = vector_widths(self.info)
        module = ir.Module(name="graphc.peak")
        module.triple = self.info.triple
        for w in self.widths:
            _fma_chain(module, w)
        self.stream_width = self.widths[-1]
        _stream(module, self.stream_width, "copy")
        _stream(module, self.stream_width, "triad")
        target = llvm.Target.from_triple(self.info.triple)
        tm = target.create_target_machine(cpu=self.info.cpu, features=self.info.features, opt=3, jit=True)
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
        self._engine = llvm.create_mcjit_compiler(parsed, tm)
        self._engine.finalize_object()
        self.assembly = tm.emit_assembly(llvm.parse_assembly(str(module)))
        fma_type = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float, ctypes.c_float)
        self.fma = {w: fma_type(self._engine.get_function_address(f"fma_{w}")) for w in self.widths}
        vp = ctypes.c_void_p
        self.copy = ctypes.CFUNCTYPE(None, vp, vp, ctypes.c_int64)(self._engine.get_function_address("copy"))
        self.triad = ctypes.CFUNCTYPE(None, vp, vp, vp, ctypes.c_float, ctypes.c_int64)(
            self._engine.get_function_address("triad"))

    @property
    def stream_lanes(self) -> int:
        """copy and triad process n in steps of this many float32 (n must be a multiple of it)."""
        return self.stream_width // 32


@cache
def peak_kernels() -> PeakKernels:
    """The host's measuring kernels, compiled once per process."""
    return PeakKernels()


__all__ = ["ACCUMULATORS", "UNROLL", "PeakKernels", "flops_per_iteration", "peak_kernels", "vector_widths"]
