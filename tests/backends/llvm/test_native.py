"""graphc.build(target="native") end to end: predict, inputs, weights, export, the library cache,
reproducible objects, kernel reuse, portable targets, Python threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm import compile_library, export_files
from graphc.backends.reference.interpreter import InputError
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library, NativeError
from tests.backends.llvm.helpers import assert_matches_reference, load, run_native


def mlp() -> Model:
    x = Input((17,), name="features")
    h = layers.Dense(33, activation="relu")(x)
    return Model(x, layers.Dense(5, activation="softmax", name="probs")(h))


def two_inputs() -> Model:
    a = Input((None,), dtype="int32", name="words")
    b = Input((3,), name="extra")
    e = layers.GlobalAveragePooling1D()(layers.Embedding(20, 4)(a))
    y = layers.Dense(2, name="out")(layers.concatenate([e, b]))
    return Model([a, b], y)


def test_predict_matches_the_reference_at_any_batch(rng):
    model = mlp()
    native = graphc.build(model, target="native")
    reference = graphc.build(model)
    assert type(native).__name__ == "NativeCompiledModel" and native.target == "native"
    for n in (1, 7, 40, 3):
        x = rng.standard_normal((n, 17)).astype(np.float32)
        np.testing.assert_allclose(native.predict(x), reference.predict(x), rtol=1e-4, atol=1e-6)
    x = rng.standard_normal((70, 17))  # float64 converts, predict batches by 32
    np.testing.assert_allclose(native.predict(x, batch_size=32), reference.predict(x), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(native(x[:2]), reference(x[:2]), rtol=1e-4, atol=1e-6)


def test_list_and_dict_inputs(rng):
    model = two_inputs()
    native, reference = graphc.build(model, target="native"), graphc.build(model)
    words = rng.integers(0, 20, size=(3, 6)).astype(np.int32)
    extra = rng.standard_normal((3, 3)).astype(np.float32)
    want = reference.predict([words, extra])
    np.testing.assert_allclose(native.predict([words, extra]), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(native.predict({"words": words, "extra": extra}), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(native.predict([words.astype(np.float64), extra]), want, rtol=1e-4, atol=1e-6)


def test_bad_inputs_raise_input_errors_naming_the_input(rng):
    native = graphc.build(two_inputs(), target="native")
    words = rng.integers(0, 20, size=(3, 6)).astype(np.int32)
    with pytest.raises(InputError, match=r"input 'extra' expects shape \(batch, 3\).*axis 1: expected 3, got 4"):
        native.predict([words, np.zeros((3, 4), np.float32)])
    with pytest.raises(InputError, match="input 'extra'.*'batch'\\) is 2, but an earlier input gives 'batch' = 3"):
        native.run({"words": words, "extra": np.zeros((2, 3), np.float32)})
    with pytest.raises(InputError, match=r"input 'words' expects integer ids \(int32\), got float64"):
        native.predict([words + 0.5, np.zeros((3, 3), np.float32)])
    with pytest.raises(InputError, match="input 'extra' expects float32, got <U1"):
        native.predict([words, np.full((3, 3), "a")])
    with pytest.raises(InputError, match=r"'words_len'\) is 0; it must be at least 1"):
        native.predict([np.zeros((3, 0), np.int32), np.zeros((3, 3), np.float32)])
    with pytest.raises(NativeError, match="index 20 is out of range for a table of 20 rows") as info:
        native.predict([np.full((3, 6), 20, np.int32), np.zeros((3, 3), np.float32)])
    assert info.value.code_name == "GC_OUT_OF_RANGE"
    with pytest.raises(InputError, match="missing"):
        native.predict({"words": words})


def test_model_weights_changed_after_build_are_used(rng):
    model = mlp()
    native = graphc.build(model, target="native", level=0)
    x = rng.standard_normal((4, 17)).astype(np.float32)
    before = native.predict(x)
    dense = model.layers[1]
    dense.kernel.assign(dense.kernel.value * 2.0)
    after = native.predict(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, graphc.build(model, level=0).predict(x), rtol=1e-4, atol=1e-6)
    name = next(w.name for w in native.library.weights if w.name.endswith("kernel"))
    np.testing.assert_array_equal(native.instance.get_weight(name), native.graph.constants[name])


def test_export_library_writes_so_a_and_header(tmp_path, rng):
    native = graphc.build(mlp(), target="native")
    files = native.export_library(tmp_path, name="classifier")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.h", "libclassifier.a", "libclassifier.so"]
    header = (tmp_path / "classifier.h").read_text()
    assert "const gc_model_t* gc_model_classifier(void);" in header
    assert "gc_instance_run" in header and "input 0: 'features' f32[batch, 17]" in header
    lib = Library(files["shared"], "classifier")
    assert lib.name == "classifier" and [i.name for i in lib.inputs] == ["features"]
    assert lib.inputs[0].shape == (None, 17) and lib.inputs[0].dim_names == ("batch", "17")
    assert [o.name for o in lib.outputs] == ["probs"]
    x = rng.standard_normal((2, 17)).astype(np.float32)
    np.testing.assert_allclose(lib.instance(1).run([x])[0], native.predict(x), rtol=1e-6)


def test_external_weights_file(tmp_path, rng):
    model = mlp()
    native = graphc.build(model, target="native")
    files = native.export_library(tmp_path, name="ext", weights="external")
    assert files["weights"].name == "ext.weights"
    lib = Library(files["shared"], "ext")
    assert not lib.has_embedded_weights
    x = rng.standard_normal((3, 17)).astype(np.float32)
    np.testing.assert_allclose(lib.instance(1, files["weights"]).run([x])[0], native.predict(x), rtol=1e-6)
    with pytest.raises(NativeError, match="compiled with external weights: set options.weights_path") as info:
        lib.instance(1)
    assert info.value.code_name == "GC_FAILED_PRECONDITION"
    data = files["weights"].read_bytes()
    (tmp_path / "short.weights").write_bytes(data[: len(data) // 2])
    with pytest.raises(NativeError, match="is truncated") as info:
        lib.instance(1, tmp_path / "short.weights")
    assert info.value.code_name == "GC_DATA_LOSS"
    (tmp_path / "junk.weights").write_bytes(b"not weights at all, sorry" * 3)
    with pytest.raises(NativeError, match="is not a graphc weights file"):
        lib.instance(1, tmp_path / "junk.weights")
    other = graphc.build(two_inputs(), target="native").export_library(tmp_path / "o", name="o", weights="external")
    with pytest.raises(NativeError, match="was written for another model") as info:
        lib.instance(1, other["weights"])
    assert info.value.code_name == "GC_INVALID_ARGUMENT"
    # an instance with embedded weights can load new ones from a file too
    inst = Library(native.files.shared, native.files.symbol).instance(1)
    inst.load_weights(files["weights"])
    np.testing.assert_allclose(inst.run([x])[0], native.predict(x), rtol=1e-6)


def _reuse_graph() -> Graph:
    """Two identical blocks (own weights): fused dense, layer norm, gather."""
    rng = np.random.default_rng(3)
    g = Graph("reuse")
    x = g.add_input("x", TensorType("float32", ("batch", 24)))
    ids = g.add_input("ids", TensorType("int32", ("batch", 5)))
    outs = []
    for blk in ("a", "b"):
        ob = OpBuilder(g, layer=f"block_{blk}")
        w = g.add_constant(f"{blk}/w", rng.standard_normal((24, 24)).astype(np.float32))
        bias = g.add_constant(f"{blk}/b", rng.standard_normal(24).astype(np.float32))
        gamma = g.add_constant(f"{blk}/gamma", rng.standard_normal(24).astype(np.float32))
        beta = g.add_constant(f"{blk}/beta", rng.standard_normal(24).astype(np.float32))
        table = g.add_constant(f"{blk}/table", rng.standard_normal((9 if blk == "a" else 9, 24)).astype(np.float32))
        x = ob.fused_matmul(x, w, bias, has_bias=True, activation="gelu")
        x = ob.layer_norm(x, gamma, beta, axes=(-1,))
        outs.append(ob.gather(table, ids))
    g.set_outputs([x] + outs)
    return g


def test_ops_of_the_same_shape_share_kernels(rng):
    g = _reuse_graph()
    lib = load(g)
    files = compile_library(g)
    assert files.stats["kernel_functions"] < files.stats["kernels"]
    feeds = {"x": rng.standard_normal((3, 24)).astype(np.float32),
             "ids": rng.integers(0, 9, size=(3, 5)).astype(np.int32)}
    assert_matches_reference(g, lib, feeds)
    bad = dict(feeds, ids=np.full((3, 5), 9, np.int32))
    with pytest.raises(NativeError, match="layer 'block_a'.*index 9 is out of range for a table of 9 rows"):
        run_native(lib, bad)


def test_identical_builds_give_byte_identical_objects():
    g = _reuse_graph()
    first = compile_library(g, "repro", cache=False)
    blobs = {k: p.read_bytes() for k, p in first.objects.items()}
    shared = first.shared.read_bytes()
    second = compile_library(g, "repro", cache=False)
    for k, p in second.objects.items():
        assert p.read_bytes() == blobs[k], f"{k} object differs between two builds"
    assert second.shared.read_bytes() == shared


@pytest.mark.parametrize("cpu", ["generic", "x86-64-v3"])
def test_portable_targets(cpu, rng):
    g = _reuse_graph()
    lib = load(g, cpu=cpu)
    feeds = {"x": rng.standard_normal((4, 24)).astype(np.float32),
             "ids": rng.integers(0, 9, size=(4, 5)).astype(np.int32)}
    assert_matches_reference(g, lib, feeds)


def test_python_threads_each_with_an_instance(rng):
    g = _reuse_graph()
    lib = load(g)
    inputs = [{"x": rng.standard_normal((5, 24)).astype(np.float32),
               "ids": rng.integers(0, 9, size=(5, 5)).astype(np.int32)} for _ in range(8)]
    expected = [run_native(lib, f) for f in inputs]
    failures = []

    def work(i):
        inst = lib.instance(1)
        for _ in range(30):
            got = inst.run([inputs[i]["x"], inputs[i]["ids"]])
            if not all(np.array_equal(a, b) for a, b in zip(got, expected[i])):
                failures.append(i)
                break
        inst.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_closed_instance_refuses_to_run():
    lib = load(_reuse_graph())
    inst = lib.instance(1)
    inst.close()
    with pytest.raises(NativeError, match="closed"):
        inst.run([np.zeros((1, 24), np.float32), np.zeros((1, 5), np.int32)])


def test_export_files_of_a_cached_library(tmp_path):
    files = compile_library(_reuse_graph(), "cached")
    out = export_files(files, tmp_path)
    assert out["static"].stat().st_size > 0 and out["header"].read_text().startswith("/* cached.h")


def test_a_missing_c_compiler_is_reported_with_what_to_install(monkeypatch):
    from graphc.backends.llvm import ToolchainError, toolchain

    monkeypatch.setenv("CC", "/nonexistent/bin/cc")
    toolchain.find_cc.cache_clear()
    try:
        with pytest.raises(ToolchainError, match=r"needs a C compiler.*/nonexistent/bin/cc.*Install gcc or clang"):
            toolchain.find_cc()
    finally:
        monkeypatch.delenv("CC")
        toolchain.find_cc.cache_clear()
    assert toolchain.find_cc()
