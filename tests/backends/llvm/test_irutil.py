"""Dimension expressions in generated code (irutil.Fn.dim): Python's semantics (floor division of
negative numbers by positive and negative divisors, max), every sub-expression computed once."""

from __future__ import annotations

import ctypes
import itertools
import re

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from graphc.backends.llvm.irutil import I64, PTR, Fn, broadcast, constant, vector_constant
from graphc.backends.llvm.target import host_target

EXPRESSIONS = [
    "a // 3", "a // 1", "(a - 7) // 4 + 1", "a // b", "(a + b) // (b - 5)", "max(a, b) // 2",
    "max(a // 3 + 1, (a // 3 + 1) * b)", "-a // 7", "(a * b - 4) // 16 * 16",
]


def _jit(mod: ir.Module, *argtypes):
    """``mod``'s void function ``k`` compiled in memory for this machine: (callable, engine to keep)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    info = host_target()
    machine = llvm.Target.from_triple(info.triple).create_target_machine(cpu=info.cpu, features=info.features)
    module = llvm.parse_assembly(str(mod))
    module.verify()
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    return ctypes.CFUNCTYPE(None, *argtypes)(engine.get_function_address("k")), engine


def _compile(expressions: list[str]):
    """``void k(i64* dims, i64* out)``: out[i] = expressions[i] over dims (a, b)."""
    mod = ir.Module("dims")
    fn = Fn(mod, "k", ir.VoidType(), [PTR, PTR], ["dims", "out"], internal=False)
    fn.set_dims(fn.args[0], ["a", "b"])
    for i, text in enumerate(expressions):
        fn.b.store(fn.dim(text), fn.b.gep(fn.args[1], [ir.Constant(I64, i)], source_etype=I64))
    fn.b.ret_void()
    fn.finish()
    cfunc, engine = _jit(mod, ctypes.c_void_p, ctypes.c_void_p)
    return cfunc, engine, str(mod)


def test_dimension_expressions_have_pythons_semantics():
    cfunc, _engine, _ = _compile(EXPRESSIONS)
    for a, b in itertools.product([-17, -9, -4, -1, 0, 1, 3, 7, 16, 33], [-6, -3, -1, 1, 2, 7]):
        if b == 5:
            continue
        dims = np.array([a, b], np.int64)
        out = np.zeros(len(EXPRESSIONS), np.int64)
        cfunc(dims.ctypes.data, out.ctypes.data)
        want = [eval(e, {"max": max}, {"a": a, "b": b}) for e in EXPRESSIONS]  # noqa: S307 - our own literals
        assert out.tolist() == want, (a, b)


def test_shared_sub_expressions_are_computed_once():
    nested = "max(((a + 3) // 4) * 4, ((a + 3) // 4) * 4 + b)"
    _, _engine, text = _compile([nested, "((a + 3) // 4) * 4"])
    body = text[text.index("define"):]
    assert body.count("sdiv") == 1  # (a + 3) // 4, once for both expressions and both of its uses


def _store_size(t: ir.VectorType) -> int:
    """Bytes LLVM stores a vector of ``t`` in (i1 lanes packed a bit each)."""
    bits = {ir.FloatType: 32, ir.DoubleType: 64}.get(type(t.element)) or t.element.width
    return (t.count * bits + 7) // 8


def _store_vectors(values: list[ir.Constant]):
    """``void k(out*)``: every vector of ``values`` stored one after the other; returns (cfunc, engine,
    text, bytes)."""
    mod = ir.Module("vectors")
    fn = Fn(mod, "k", ir.VoidType(), [PTR], ["out"], internal=False)
    offset = 0
    for v in values:
        p = fn.b.gep(fn.args[0], [ir.Constant(I64, offset)], source_etype=ir.IntType(8))
        fn.b.store(v, p, align=1)
        offset += _store_size(v.type)
    fn.b.ret_void()
    fn.finish()
    cfunc, engine = _jit(mod, ctypes.c_void_p)
    return cfunc, engine, str(mod), offset


def test_vector_constants_are_spelled_short_and_hold_their_lanes():
    f32x7, f64x3, i64x5, i32x16, i1x9 = (ir.VectorType(t, n) for t, n in
                                          ((ir.FloatType(), 7), (ir.DoubleType(), 3), (I64, 5),
                                           (ir.IntType(32), 16), (ir.IntType(1), 9)))
    cases = [(f32x7, 1.5), (f32x7, -0.0), (f32x7, 0.0), (f32x7, None), (f32x7, float("inf")),
             (f32x7, 1e-45), (f64x3, -2.25), (f64x3, None), (i64x5, -3), (i64x5, 0), (i32x16, 7),
             (i1x9, 1), (i1x9, 0)]
    values = [constant(t, v) for t, v in cases]
    cfunc, _engine, text, size = _store_vectors(values)
    body = text[text.index("define"):]
    assert re.search(r"<\d+ x \w+> <", body) is None  # no constant spelled lane by lane
    assert body.count("zeroinitializer") == 5 and "splat (float 0x8000000000000000)" in body  # -0.0 is no zero
    out = np.full(size, 0xAB, np.uint8)
    cfunc(out.ctypes.data)
    offset = 0
    for (t, v), dtype in zip(cases, ["f4"] * 6 + ["f8"] * 2 + ["i8"] * 2 + ["i4"] + ["u1"] * 2):
        nbytes = _store_size(t)
        got = out[offset:offset + nbytes]
        offset += nbytes
        if dtype == "u1":  # <9 x i1> is stored as 2 bytes, a bit per lane
            bits = np.unpackbits(got, bitorder="little")[:t.count]
            assert bits.tolist() == [v] * t.count, (t, v)
            continue
        want = np.full(t.count, 0 if v is None else v, dtype)
        assert got.view(dtype).tobytes() == want.tobytes(), (t, v)


def test_undefined_vectors_and_broadcasts_are_spelled_short():
    mod = ir.Module("broadcast")
    fn = Fn(mod, "k", ir.VoidType(), [PTR, ir.FloatType()], ["out", "x"], internal=False)
    fn.b.store(broadcast(fn.b, fn.args[1], 8), fn.args[0], align=4)
    fn.b.ret_void()
    fn.finish()
    text = str(mod)
    assert "<8 x float> undef" in text and "<8 x i32> zeroinitializer" in text and "i32 0, i32 0" not in text
    assert str(vector_constant(ir.VectorType(I64, 4), ir.Undefined)) == "<4 x i64> undef"
    llvm.parse_assembly(text).verify()
