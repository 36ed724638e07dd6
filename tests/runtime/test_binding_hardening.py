"""The Python side of the native backend off the well-behaved path: the ctypes binding after a
failed call, integer ids beyond int32, names that would inject code into the generated C, models
without weights built with external weights, the thread limit."""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

from graphc.backends.llvm import build_native, compile_library, export_files
from graphc.backends.llvm.codegen import c_comment, c_identifier, c_string, generate, library_symbol
from graphc.backends.llvm.target import host_target
from graphc.backends.llvm.toolchain import runtime_dir
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library, NativeError
from tests.backends.llvm.helpers import load, run_native
from tests.runtime.conftest import abi_graph, abi_inputs

INJECTION = "x*/ int injected = 42; /*"


# ------------------------------------------------------------------ defect 2: stale cached shapes

def test_a_call_that_failed_in_the_binding_leaves_no_stale_shapes(abi):
    inst = abi.instance(threads=1)
    good = abi_inputs(3, 5)
    want = inst.run(good)
    inst.run(good)  # the output shapes of this input shape are now remembered
    long_ids = np.full((3, 400), 49, np.int32)
    with pytest.raises(NativeError, match="rank 9, more than 8"):
        inst.run([long_ids, np.zeros((1,) * 9, np.float32)])
    got = inst.run(good)  # the same shapes as before the failed call
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


def test_an_input_that_is_not_contiguous_leaves_no_stale_shapes(abi):
    inst = abi.instance(threads=1)
    good = abi_inputs(2, 3, seed=1)
    want = inst.run(good)
    strided = np.zeros((2, 16), np.float32)[:, ::2]
    with pytest.raises(NativeError, match="C-contiguous"):
        inst.run([np.zeros((2, 300), np.int32), strided])
    for w, g in zip(want, inst.run(good)):
        np.testing.assert_array_equal(g, w)


# ------------------------------------------------------------------ defect 3: ids beyond int32

@pytest.fixture(scope="module")
def abi_native():
    return build_native(abi_graph())


@pytest.mark.parametrize("dtype, bad", [("int64", 2**32 + 5), ("uint64", 2**32 + 5), ("int64", -(2**40)),
                                        ("uint64", 2**63 + 5), ("float64", 2.0**32 + 5)])
def test_ids_beyond_the_models_integer_type_are_refused(abi_native, dtype, bad):
    ids = np.array([[1, 5, 7]], dtype=np.int64).astype(dtype)
    ids[0, 1] = bad
    x = np.zeros((1, 8), np.float32)
    with pytest.raises(NativeError, match=r"input 'ids'.*out of range for int32") as info:
        abi_native.run({"ids": ids, "x": x})
    assert info.value.code_name == "GC_OUT_OF_RANGE"


def test_ids_within_range_in_a_wider_type_still_work(abi_native):
    ids = np.array([[1, 5, 7]], np.int64)
    x = np.zeros((1, 8), np.float32)
    want = abi_native.run({"ids": ids.astype(np.int32), "x": x})
    for dtype in ("int64", "uint64", "uint8", "float32"):
        got = abi_native.run({"ids": ids.astype(dtype), "x": x})
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


# ------------------------------------------------------------------ defect 4: code injection

def _symbols(path) -> set[str]:
    out = subprocess.run(["nm", "-g", "--defined-only", str(path)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("name", [INJECTION, "9lives", "has space", "naïve", "", "a.b", "x" * 200])
def test_library_names_must_be_c_identifiers(abi_native, tmp_path, name):
    with pytest.raises(ValueError, match="C identifier"):
        abi_native.export_library(tmp_path, name=name)
    with pytest.raises(ValueError, match="C identifier"):
        compile_library(abi_graph(), name=name)


def test_a_model_name_is_only_ever_data_in_the_generated_c(tmp_path):
    """Any model (display) name, layer name or value name ends up in C string literals and comments
    that keep it inert: no symbol or declaration can be added through them."""
    g = abi_graph(INJECTION + " \n\"?\\%s%n")
    for op in g.ops():
        op.layer = INJECTION + "%s%n"
    files = compile_library(g)
    assert files.symbol == c_identifier(g.name)
    assert "injected" not in _symbols(files.shared)
    code = re.sub(r"/\*.*?\*/", " ", files.header.read_text(), flags=re.S)  # what the compiler reads
    assert not re.search(r"int\s+injected", code), code
    lib = Library(files.shared, files.symbol)
    assert lib.name == g.name
    exported = export_files(files, tmp_path)
    program = tmp_path / "main.c"
    program.write_text(f'#include "{files.symbol}.h"\nint main(void) {{ return injected; }}\n')
    proc = subprocess.run(["cc", "-std=c11", f"-I{tmp_path}", str(program), str(exported["static"]), "-lpthread",
                           "-lm", "-o", str(tmp_path / "main")], capture_output=True, text=True)
    assert proc.returncode != 0 and "injected" in proc.stderr


def test_op_error_messages_are_safe_printf_formats():
    """The runtime formats a failed op's message with the failing value: each message has exactly
    one %lld, whatever the layer and op names contain."""
    g = abi_graph()
    for op in g.ops():
        op.layer = "evil%s%n%%lld"
    program = generate(g, "m", host_target(None), graphc_h=(runtime_dir() / "include/graphc/graphc.h").read_text())
    block = re.search(r"op_errors\[\] = \{(.*?)\};", program.descriptor_c, re.S).group(1)
    messages = re.findall(r'"((?:[^"\\]|\\.)*)"', block)
    assert messages
    for m in messages:
        conversions = re.findall(r"%[^%]", m.replace("%%", ""))
        assert conversions == ["%l"] and "%lld" in m.replace("%%", ""), m


@pytest.mark.parametrize("text", ["plain", INJECTION, 'q"uote', "back\\slash", "??=trigraph", "new\nline", "naïve",
                                  "nul\0byte"])
def test_c_strings_and_comments_round_trip_through_the_compiler(tmp_path, text):
    """c_string gives back the exact bytes; c_comment never ends the comment early."""
    source = tmp_path / "s.c"
    source.write_text(f"/* {c_comment(text)} */\n#include <stdio.h>\n#include <string.h>\n"
                      f"static const char s[] = {c_string(text)};\n"
                      "int main(void) { fwrite(s, 1, sizeof s - 1, stdout); return 0; }\n")
    subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-Wno-trigraphs", str(source), "-o", str(tmp_path / "s")],
                   check=True)
    out = subprocess.run([str(tmp_path / "s")], capture_output=True, check=True).stdout
    assert out == text.encode()


def test_library_symbol():
    assert library_symbol("mlp") == "mlp"
    assert library_symbol(None, default="my-model 2") == "my_model_2"
    with pytest.raises(ValueError, match="C identifier"):
        library_symbol("int injected;")


@pytest.mark.parametrize("name", ["t", "input", "output", "weight", "num_inputs"])
def test_library_symbol_never_redeclares_the_runtime(name):
    """``gc_model_t``, ``gc_model_input``...: a model so named builds as ``NAME_model``; the name given
    explicitly is refused, naming the clash."""
    assert library_symbol(None, default=name) == f"{name}_model"
    with pytest.raises(ValueError, match=f"gc_model_{name}"):
        library_symbol(name)


def test_model_named_t_builds_and_runs(rng):
    g = Graph("t")
    x = g.add_input("x", TensorType("float32", ("batch", 3)))
    g.set_outputs([OpBuilder(g, layer="act").relu(x)])
    lib = load(g)
    inputs = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_native(lib, {"x": inputs})[0], np.maximum(inputs, 0))


# ------------------------------------------------------------------ defect 5: external weights, no weights

def _weightless_graph() -> Graph:
    g = Graph("weightless")
    x = g.add_input("x", TensorType("float32", ("batch", 5)))
    ob = OpBuilder(g, layer="act")
    y = ob.add(ob.relu(x), x)
    g.set_outputs([y])
    return g


def test_a_model_without_weights_needs_no_weights_file():
    files = compile_library(_weightless_graph(), weights="external")
    lib = Library(files.shared, files.symbol)
    assert not lib.has_embedded_weights
    x = np.linspace(-2, 2, 10, dtype=np.float32).reshape(2, 5)
    (y,) = lib.instance(threads=1).run([x])
    np.testing.assert_array_equal(y, np.maximum(x, 0) + x)
    (y,) = lib.instance(threads=1, weights_path=str(files.weights)).run([x])  # its (empty) file also loads
    np.testing.assert_array_equal(y, np.maximum(x, 0) + x)


def test_a_model_with_weights_still_needs_its_file():
    files = compile_library(abi_graph("abi_external"), weights="external")
    lib = Library(files.shared, files.symbol)
    with pytest.raises(NativeError, match="weights_path"):
        lib.instance()
    out = lib.instance(weights_path=str(files.weights)).run(abi_inputs(2, 3))
    assert out[0].shape == (2, 4)


# ------------------------------------------------------------------ defect 11: the thread limit

def test_the_thread_limit_is_described_and_applied(abi):
    limit = min(4 * os.cpu_count(), 1024)
    assert abi.describe()["max_threads"] == limit
    assert abi.instance(threads=10**6).threads == limit
    assert abi.instance(threads=1).threads == 1


def test_describe_names_everything_a_caller_needs(abi):
    d = abi.describe()
    assert d["name"] == "abi_model" and d["api_version"] == 6 and d["embedded_weights"] is True
    assert d["target"]["cpu"] == abi.target_cpu != ""
    assert [t["name"] for t in d["inputs"]] == ["ids", "x"]
    assert d["inputs"][0]["shape"] == ["batch", "seq"] and d["inputs"][0]["dtype"] == "int32"
    assert [t["name"] for t in d["outputs"]] == ["y", "pooled"]
    assert {t["name"] for t in d["weights"]} == {"table", "w", "b"}


def test_a_python_instance_used_from_two_threads_refuses_the_second(abi):
    import threading

    inst = abi.instance(threads=1)
    arrays = abi_inputs(64, 64)
    want = inst.run(arrays)
    refused, wrong = [], []

    def hammer():
        for _ in range(3000):
            try:
                got = inst.run(arrays)
            except NativeError as exc:
                (refused if "in use by another thread" in exc.message else wrong).append(exc.message)
                continue
            if not all(np.array_equal(g, w) for g, w in zip(got, want)):
                wrong.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong and refused
