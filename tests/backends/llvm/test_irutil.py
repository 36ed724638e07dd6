"""Dimension expressions in generated code (irutil.Fn.dim): Python's semantics (floor division of
negative numbers by positive and negative divisors, max), every sub-expression computed once."""

from __future__ import annotations

import ctypes
import itertools

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from graphc.backends.llvm.irutil import I64, PTR, Fn
from graphc.backends.llvm.target import host_target

EXPRESSIONS = [
    "a // 3", "a // 1", "(a - 7) // 4 + 1", "a // b", "(a + b) // (b - 5)", "max(a, b) // 2",
    "max(a // 3 + 1, (a // 3 + 1) * b)", "-a // 7", "(a * b - 4) // 16 * 16",
]


def _compile(expressions: list[str]):
    """``void k(i64* dims, i64* out)``: out[i] = expressions[i] over dims (a, b)."""
    mod = ir.Module("dims")
    fn = Fn(mod, "k", ir.VoidType(), [PTR, PTR], ["dims", "out"], internal=False)
    fn.set_dims(fn.args[0], ["a", "b"])
    for i, text in enumerate(expressions):
        fn.b.store(fn.dim(text), fn.b.gep(fn.args[1], [ir.Constant(I64, i)], source_etype=I64))
    fn.b.ret_void()
    fn.finish()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    info = host_target()
    machine = llvm.Target.from_triple(info.triple).create_target_machine(cpu=info.cpu, features=info.features)
    module = llvm.parse_assembly(str(mod))
    module.verify()
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    cfunc = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(engine.get_function_address("k"))
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
