"""qlinear_matmul / qlinear_conv: the integer reference against the QDQ float graph it replaces, native
int8 kernels bit for bit against the reference on every dot product (VNNI 512 and 256 bits, vpmaddwd
on AVX-512 and AVX2, the generic one), odd shapes, per tensor and per channel, relu and relu6 fused,
uint8 and int8 activations; the ONNX export (QDQ) in onnxruntime; the dot product each target gets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from graphc.backends.llvm import native
from graphc.backends.llvm.kernels.gemm_int8 import dot_path
from graphc.backends.llvm.target import host_target, resolve_target
from graphc.backends.onnx import OnnxRuntimeGraph
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.ops.qlinear import multiplier
from graphc.ops.registry import ShapeError, get
from tests.backends.llvm.helpers import load, run_native

# (cpu given to the build, the dot product it must select); "vnni256" is the host without AVX512-VNNI
PATHS = [(None, "vnni512"), ("vnni256", "vnni256"), ("x86-64-v4", "pmaddwd512"), ("x86-64-v3", "pmaddwd256"),
         ("x86-64", "generic")]
# (x dtype, y dtype, per-channel weights, activation, max_value)
EPILOGUES = [("uint8", "uint8", True, "relu", None), ("int8", "int8", False, "linear", None),
             ("uint8", "int8", True, "relu", 6.0), ("int8", "uint8", True, "linear", None)]


def _host_has(feature: str) -> bool:
    return feature in host_target().feature_set


def _host_without_avx512_vnni():
    h = host_target()
    features = ",".join("-avx512vnni" if f == "+avx512vnni" else f for f in h.features.split(","))
    return dataclasses.replace(h, features=features, vector_bits=256)


@pytest.fixture
def build_for(monkeypatch):
    """load(graph) for a cpu of PATHS, skipping what this machine cannot run."""

    def build(graph, cpu, path):
        if path.startswith("vnni") and not (_host_has("avx512vnni") and _host_has("avxvnni")):
            pytest.skip("this CPU has no AVX512-VNNI / AVX-VNNI")
        if cpu == "vnni256":
            target = _host_without_avx512_vnni()
            assert dot_path(target).name == "vnni256"
            monkeypatch.setattr(native, "resolve_target", lambda triple=None, cpu=None: target)
            return load(graph)
        assert dot_path(resolve_target(None, cpu)).name == path
        return load(graph, cpu=cpu)

    return build


def qlinear_graph(rng, K: int, N: int, x_dtype: str, y_dtype: str, per_channel: bool, activation: str,
                  max_value, conv: dict | None = None, residual: tuple | None = None) -> Graph:
    """One integer op; ``residual``: (its dtype, post_activation, post_max_value) adds a residual input."""
    g = Graph("qlinear")
    spatial = conv["spatial"] if conv else ()
    x = g.add_input("x", TensorType(x_dtype, ("batch", *spatial, K)))
    wshape = (*conv["kernel"], K, N) if conv else (K, N)

    def const(name, value):
        return g.add_constant(name, np.asarray(value))

    xs = const("x_scale", np.float32(0.05))
    xz = const("x_zero", np.array(3 if x_dtype == "int8" else 121, x_dtype))
    w = const("w", rng.integers(-127, 128, size=wshape).astype(np.int8))
    scale = rng.uniform(0.004, 0.02, size=N) if per_channel else rng.uniform(0.004, 0.02)
    ws = const("w_scale", np.asarray(scale, np.float32))
    wz = const("w_zero", np.zeros(N if per_channel else (), np.int8))
    bias = const("bias", rng.integers(-4000, 4000, size=N).astype(np.int32))
    # an output scale that spreads the results over the output's range (few saturate)
    depth = K * (int(np.prod(conv["kernel"])) if conv else 1)
    ys = const("y_scale", np.float32(0.05 * 0.012 * 74 * 73 * np.sqrt(depth) / 40))
    yz = const("y_zero", np.array(-7 if y_dtype == "int8" else 97, y_dtype))
    b = OpBuilder(g)
    extra, epilogue = [], {"activation": activation, "max_value": max_value}
    if residual is not None:
        r_dtype, post, post_max = residual
        out_shape = ("batch", *(conv["out"] if conv else ()), N)
        extra = [g.add_input("r", TensorType(r_dtype, out_shape)), const("r_scale", np.float32(0.04)),
                 const("r_zero", np.array(-2 if r_dtype == "int8" else 130, r_dtype))]
        epilogue.update(has_residual=True, post_activation=post, post_max_value=post_max)
    if conv:
        y = b.emit("qlinear_conv", x, xs, xz, w, ws, wz, bias, ys, yz, *extra, **epilogue,
                   strides=conv["strides"], pads=conv["pads"], dilations=conv.get("dilations"))
    else:
        y = b.emit("qlinear_matmul", x, xs, xz, w, ws, wz, bias, ys, yz, *extra, **epilogue)
    g.set_outputs([y])
    return g


def _input(rng, dtype, shape):
    lo, hi = (-128, 128) if dtype == "int8" else (0, 256)
    return rng.integers(lo, hi, size=shape).astype(dtype)


def _qdq_twin(q: Graph) -> Graph:
    """The QDQ float graph the integer op stands for: dequantize, float product, bias, relu, quantize."""
    op = next(iter(q.ops()))
    g = Graph("qdq")
    x = g.add_input("x", q.values["x"].type)
    c = {name: g.add_constant(name, q.constants[name]) for name in q.constants}
    b = OpBuilder(g)
    xd = b.emit("dequantize_linear", x, c["x_scale"], c["x_zero"])
    wd = b.emit("dequantize_linear", c["w"], c["w_scale"], c["w_zero"])
    bias_scale = g.add_constant("bias_scale", (q.constants["x_scale"] * q.constants["w_scale"]).astype(np.float32))
    bz = g.add_constant("bias_zero", np.zeros(q.constants["w_scale"].shape, np.int32))
    bd = b.emit("dequantize_linear", c["bias"], bias_scale, bz, axis=0)
    if op.type == "qlinear_conv":
        y = b.emit("conv", xd, wd, strides=op.attrs["strides"], pads=op.attrs["pads"],
                   dilations=op.attrs.get("dilations"))
    else:
        y = b.emit("matmul", xd, wd)
    y = b.emit("add", y, bd)
    if op.attrs["activation"] == "relu":
        y = b.emit("relu", y, max_value=op.attrs["max_value"])
    g.set_outputs([b.emit("quantize_linear", y, c["y_scale"], c["y_zero"])])
    return g


MATMUL_SHAPES = [(1, 3, 1), (3, 7, 17), (17, 64, 33), (7, 130, 40), (2, 1, 3)]
CONVS = [
    {"spatial": (5, 6), "kernel": (3, 3), "strides": (1, 1), "pads": ((1, 1), (1, 1)), "out": (5, 6)},
    {"spatial": (7,), "kernel": (3,), "strides": (2,), "pads": ((1, 0),), "out": (3,)},
    {"spatial": (9, 7), "kernel": (3, 2), "strides": (2, 1), "pads": ((0, 1), (1, 1)), "dilations": (1, 2),
     "out": (4, 7)},
    {"spatial": (3, 3), "kernel": (1, 1), "strides": (1, 1), "pads": ((0, 0), (0, 0)), "out": (3, 3)},
]
# (residual dtype, post_activation, post_max_value)
RESIDUALS = [("uint8", "linear", None), ("int8", "relu", None), ("uint8", "relu", 6.0)]


def _residual_feeds(rng, g, x):
    feeds = {"x": x}
    if "r" in g.inputs:
        feeds["r"] = _input(rng, g.values["r"].type.dtype, (len(x), *g.values["r"].type.shape[1:]))
    return feeds


@pytest.mark.parametrize("epilogue", EPILOGUES, ids=lambda e: "-".join(map(str, e)))
def test_reference_is_the_qdq_graph_within_one_step_and_mostly_equal(rng, epilogue):
    x_dtype, y_dtype, per_channel, activation, max_value = epilogue
    total = differ = 0
    for M, K, N in MATMUL_SHAPES:
        g = qlinear_graph(rng, K, N, x_dtype, y_dtype, per_channel, activation, max_value)
        x = _input(rng, x_dtype, (M, K))
        got = run(g, {"x": x})[g.outputs[0]].astype(np.int64)
        want_graph = _qdq_twin(g)
        want = run(want_graph, {"x": x})[want_graph.outputs[0]].astype(np.int64)
        assert np.abs(got - want).max() <= 1
        total, differ = total + got.size, differ + int((got != want).sum())
    assert differ <= max(1, total // 100)


def test_the_reference_computes_the_defined_formula_on_a_hand_example():
    g = Graph("hand")
    x = g.add_input("x", TensorType("uint8", (1, 2)))
    c = [g.add_constant(n, np.asarray(v)) for n, v in [
        ("x_scale", np.float32(0.5)), ("x_zero", np.uint8(10)), ("w", np.array([[2, -1], [3, 4]], np.int8)),
        ("w_scale", np.array([0.25, 1.0], np.float32)), ("w_zero", np.zeros(2, np.int8)),
        ("bias", np.array([1, -40], np.int32)), ("y_scale", np.float32(0.5)), ("y_zero", np.uint8(5))]]
    y = OpBuilder(g).emit("qlinear_matmul", x, *c, activation="relu")
    g.set_outputs([y])
    # x - 10 = (2, 6): acc = (2*2 + 6*3 + 1, -2 + 24 - 40) = (23, -18); m = (0.25, 1.0)
    # t = (5.75, -18) -> relu clamp (5.75, 0) -> rint (6, 0) + 5
    out = run(g, {"x": np.array([[12, 16]], np.uint8)})[y]
    np.testing.assert_array_equal(out, [[11, 5]])
    np.testing.assert_array_equal(multiplier(np.float32(0.5), np.float32([0.25, 1.0]), np.float32(0.5)), [0.25, 1.0])


@pytest.mark.parametrize("cpu,path", PATHS, ids=[p for _, p in PATHS])
def test_native_matmul_equals_the_reference_bit_for_bit(rng, build_for, cpu, path):
    for M, K, N in MATMUL_SHAPES:
        for epilogue in EPILOGUES:
            g = qlinear_graph(rng, K, N, *epilogue)
            x = _input(rng, epilogue[0], (M, K))
            want = run(g, {"x": x})[g.outputs[0]]
            got = run_native(build_for(g, cpu, path), {"x": x})[0]
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want, err_msg=f"{path} {M}x{K}x{N} {epilogue}")
            if M * N > 100 and epilogue[4] is None:
                assert len(np.unique(want)) > 20  # results spread over the range, not saturated


@pytest.mark.parametrize("cpu,path", PATHS, ids=[p for _, p in PATHS])
def test_native_conv_equals_the_reference_bit_for_bit(rng, build_for, cpu, path):
    for conv in CONVS:
        for C, out_ch in [(3, 5), (17, 33)]:
            for epilogue in (EPILOGUES[0], EPILOGUES[1], EPILOGUES[2]):
                g = qlinear_graph(rng, C, out_ch, *epilogue, conv=conv)
                x = _input(rng, epilogue[0], (3, *conv["spatial"], C))
                want = run(g, {"x": x})[g.outputs[0]]
                got = run_native(build_for(g, cpu, path), {"x": x})[0]
                np.testing.assert_array_equal(got, want, err_msg=f"{path} {conv} {C}->{out_ch} {epilogue}")


@pytest.mark.parametrize("cpu,path", PATHS, ids=[p for _, p in PATHS])
def test_native_residual_epilogue_equals_the_reference_bit_for_bit(rng, build_for, cpu, path):
    for conv, (K, N) in [(None, (7, 17)), (None, (64, 40)), (CONVS[0], (3, 5)), (CONVS[2], (17, 33))]:
        for epilogue, residual in zip(EPILOGUES, RESIDUALS + RESIDUALS[:1]):
            g = qlinear_graph(rng, K, N, *epilogue, conv=conv, residual=residual)
            x = _input(rng, epilogue[0], (3, *(conv["spatial"] if conv else ()), K))
            feeds = _residual_feeds(rng, g, x)
            want = run(g, feeds)[g.outputs[0]]
            got = run_native(build_for(g, cpu, path), feeds)[0]
            np.testing.assert_array_equal(got, want, err_msg=f"{path} {conv} {K}->{N} {epilogue} {residual}")


def test_residual_reference_is_the_qdq_graph_within_one_step(rng):
    for conv in (None, CONVS[0]):
        g = qlinear_graph(rng, 17, 9, "uint8", "uint8", True, "relu", None, conv=conv,
                          residual=("uint8", "relu", None))
        x = _input(rng, "uint8", (4, *(conv["spatial"] if conv else ()), 17))
        feeds = _residual_feeds(rng, g, x)
        want = run(g, feeds)[g.outputs[0]].astype(np.int64)
        got = OnnxRuntimeGraph(g).run(feeds)[g.outputs[0]].astype(np.int64)  # the QDQ export
        assert np.abs(got - want).max() <= 1 and (got != want).mean() <= 0.02


@pytest.mark.parametrize("triple", ["aarch64-linux-gnu", "wasm32-wasi"])
def test_generic_dot_product_on_other_architectures(rng, triple):
    """The generic int16-pair kernel built for AArch64 (NEON) and wasm32 (SIMD128), run under the emulator."""
    from graphc.backends.llvm import compile_library
    from tests.backends.llvm.emulation import EmulatedLibrary, require_emulation

    require_emulation(triple)
    assert dot_path(resolve_target(triple)).name == "generic"
    cases = [(None, (7, 17), EPILOGUES[1], None), (CONVS[0], (3, 5), EPILOGUES[0], None),
             (CONVS[2], (17, 9), EPILOGUES[2], RESIDUALS[1])]
    for conv, (K, N), epilogue, residual in cases:
        g = qlinear_graph(rng, K, N, *epilogue, conv=conv, residual=residual)
        x = _input(rng, epilogue[0], (3, *(conv["spatial"] if conv else ()), K))
        feeds = _residual_feeds(rng, g, x)
        lib = EmulatedLibrary(compile_library(g, triple=triple), g, triple)
        np.testing.assert_array_equal(run_native(lib, feeds)[0], run(g, feeds)[g.outputs[0]])


@pytest.mark.parametrize("in_dtype,out_dtype", [("uint8", "uint8"), ("uint8", "int8"), ("int8", "uint8")])
def test_requantize_is_dequantize_then_quantize_bit_for_bit(rng, in_dtype, out_dtype):
    g = Graph("requantize")
    x = g.add_input("x", TensorType(in_dtype, ("batch", 17)))
    in_zero, out_zero = (np.array(v, d) for v, d in ((-3 if in_dtype == "int8" else 120, in_dtype),
                                                     (5 if out_dtype == "int8" else 97, out_dtype)))
    consts = [g.add_constant(n, np.asarray(v)) for n, v in [("s1", np.float32(0.05)), ("z1", in_zero),
                                                            ("s2", np.float32(0.1)), ("z2", out_zero)]]
    b = OpBuilder(g)
    g.set_outputs([b.emit("requantize_linear", x, *consts),
                   b.emit("quantize_linear", b.emit("dequantize_linear", x, consts[0], consts[1]), consts[2],
                          consts[3])])
    q = _input(rng, in_dtype, (7, 17))  # s2 = 2 * s1: every odd step lands on a tie
    want = run(g, {"x": q})
    np.testing.assert_array_equal(want[g.outputs[0]], want[g.outputs[1]])
    got = run_native(load(g), {"x": q})
    np.testing.assert_array_equal(got[0], want[g.outputs[1]])
    np.testing.assert_array_equal(got[1], want[g.outputs[1]])


def test_native_batch_sizes_and_threads(rng):
    g = qlinear_graph(rng, 37, 50, "uint8", "uint8", True, "relu", None)
    lib = load(g)
    for M in (1, 2, 65, 300):
        x = _input(rng, "uint8", (M, 37))
        want = run(g, {"x": x})[g.outputs[0]]
        for threads in (1, 2):
            np.testing.assert_array_equal(run_native(lib, {"x": x}, threads)[0], want)


def test_onnx_export_runs_within_one_step(rng):
    for conv in (None, CONVS[0], CONVS[1]):
        g = qlinear_graph(rng, 17, 9, "uint8", "uint8", True, "relu", 6.0, conv=conv)
        x = _input(rng, "uint8", (2, *(conv["spatial"] if conv else ()), 17))
        want = run(g, {"x": x})[g.outputs[0]].astype(np.int64)
        got = OnnxRuntimeGraph(g).run({"x": x})[g.outputs[0]].astype(np.int64)
        assert np.abs(got - want).max() <= 1


def test_dot_product_follows_the_target():
    assert dot_path(resolve_target("x86_64-linux-gnu", "x86-64-v4")).name == "pmaddwd512"
    assert dot_path(resolve_target("x86_64-linux-gnu", "x86-64-v3")).name == "pmaddwd256"
    assert dot_path(resolve_target("x86_64-linux-gnu", "generic")).name == "generic"
    assert dot_path(resolve_target("aarch64-linux-gnu", "neoverse-n1")).name == "generic"
    if _host_has("avx512vnni"):
        assert dot_path(host_target()).name == "vnni512"


def test_bad_operands_are_refused_naming_them(rng):
    g = qlinear_graph(rng, 3, 4, "uint8", "uint8", True, "linear", None)
    x, xs, xz, w, ws, wz, bias, ys, yz = next(iter(g.ops())).inputs
    b = OpBuilder(g)
    with pytest.raises(ShapeError, match="bias must be int32"):
        b.emit("qlinear_matmul", x, xs, xz, w, ws, wz, ws, ys, yz)
    with pytest.raises(ShapeError, match="max_value"):
        b.emit("qlinear_matmul", x, xs, xz, w, ws, wz, bias, ys, yz, max_value=6.0)
    with pytest.raises(ShapeError, match="input and its zero point"):
        b.emit("qlinear_matmul", x, xs, wz, w, ws, wz, bias, ys, yz)
    with pytest.raises(ShapeError, match="has_residual needs the residual"):
        b.emit("qlinear_matmul", x, xs, xz, w, ws, wz, bias, ys, yz, has_residual=True)
    with pytest.raises(ShapeError, match="residual .* must have the output's shape"):
        b.emit("qlinear_matmul", x, xs, xz, w, ws, wz, bias, ys, yz, x, xs, xz, has_residual=True)


@pytest.mark.parametrize("cpu,path", PATHS, ids=[p for _, p in PATHS])
def test_native_conv_wide_channels_and_blocks_across_images(rng, build_for, cpu, path):
    """Channels copied in whole vectors and a remainder (64 + 7, 2 x 64 + 2), and blocks of rows that
    start inside an image and run across into the next (the im2col position is stepped, not divided)."""
    conv = {"spatial": (5, 7), "kernel": (3, 3), "strides": (1, 2), "pads": ((1, 1), (0, 1)), "out": (5, 3)}
    for C, out_ch in [(71, 33), (130, 7)]:
        g = qlinear_graph(rng, C, out_ch, *EPILOGUES[1], conv=conv)
        lib = build_for(g, cpu, path)
        for batch in (1, 5):
            x = _input(rng, "int8", (batch, *conv["spatial"], C))
            want = run(g, {"x": x})[g.outputs[0]]
            for threads in (1, 2):
                np.testing.assert_array_equal(run_native(lib, {"x": x}, threads)[0], want,
                                              err_msg=f"{path} {C}->{out_ch} batch {batch}")


def qlinear_add_graph(shape: tuple, a_dtype: str, b_dtype: str, y_dtype: str) -> tuple[Graph, Graph]:
    """(the one qlinear_add, the dequantize / add / quantize graph it stands for)."""
    zeros = {"uint8": 131, "int8": -5}
    params = [(np.float32(0.037), np.array(zeros[a_dtype], a_dtype)),
              (np.float32(0.052), np.array(zeros[b_dtype] - 9, b_dtype)),
              (np.float32(0.061), np.array(zeros[y_dtype] + 4, y_dtype))]
    graphs = []
    for fused in (True, False):
        g = Graph("qadd" if fused else "qdq_add")
        a = g.add_input("a", TensorType(a_dtype, ("batch", *shape)))
        b = g.add_input("b", TensorType(b_dtype, ("batch", *shape)))
        c = [g.add_constant(f"{n}{i}", v) for i, pair in enumerate(params) for n, v in zip(("s", "z"), pair)]
        ob = OpBuilder(g)
        if fused:
            y = ob.emit("qlinear_add", a, c[0], c[1], b, c[2], c[3], c[4], c[5])
        else:
            total = ob.emit("add", ob.emit("dequantize_linear", a, c[0], c[1]),
                            ob.emit("dequantize_linear", b, c[2], c[3]))
            y = ob.emit("quantize_linear", total, c[4], c[5])
        g.set_outputs([y])
        graphs.append(g)
    return graphs[0], graphs[1]


@pytest.mark.parametrize("dtypes", [("uint8", "uint8", "uint8"), ("int8", "uint8", "int8"), ("uint8", "int8", "int8")],
                         ids="-".join)
def test_qlinear_add_is_dequantize_add_quantize_bit_for_bit(rng, dtypes):
    """The reference, the native kernel and the native unfused chain agree to the bit, on odd shapes and over
    the operands' whole byte range (the sum saturates at both ends)."""
    for shape in [(1,), (3, 7), (17, 3, 1)]:
        fused, chain = qlinear_add_graph(shape, *dtypes)
        lib, chain_lib = load(fused), load(chain)
        for batch in (1, 3):
            feeds = {n: _input(rng, t, (batch, *shape)) for n, t in zip("ab", dtypes)}
            want = run(chain, feeds)[chain.outputs[0]]
            np.testing.assert_array_equal(run(fused, feeds)[fused.outputs[0]], want)
            np.testing.assert_array_equal(run_native(lib, feeds)[0], want)
            np.testing.assert_array_equal(run_native(chain_lib, feeds)[0], want)


def test_qlinear_add_refuses_what_it_does_not_compute(rng):
    fused, _ = qlinear_add_graph((3,), "uint8", "uint8", "uint8")
    op = next(iter(fused.ops()))
    types = [fused.type_of(v) for v in op.inputs]
    infer = get("qlinear_add").infer_types
    with pytest.raises(ShapeError, match="one shape"):
        infer([*types[:3], TensorType("uint8", ("batch", 4)), *types[4:]], {})
    with pytest.raises(ShapeError, match="first scale must be a scalar"):
        infer([types[0], TensorType("float32", (3,)), *types[2:]], {})
    with pytest.raises(ShapeError, match="second operand and its zero point"):
        infer([*types[:3], TensorType("float32", ("batch", 3)), *types[4:]], {})


def depthwise_graph(rng, C: int, conv: dict, epilogue: tuple) -> Graph:
    """One depthwise qlinear_conv: kernel (*k, 1, C), groups = C."""
    x_dtype, y_dtype, per_channel, activation, max_value = epilogue
    g = Graph("qdepthwise")
    x = g.add_input("x", TensorType(x_dtype, ("batch", *conv["spatial"], C)))

    def const(name, value):
        return g.add_constant(name, np.asarray(value))

    scale = rng.uniform(0.004, 0.02, size=C) if per_channel else rng.uniform(0.004, 0.02)
    taps = int(np.prod(conv["kernel"]))
    operands = [const("x_scale", np.float32(0.05)), const("x_zero", np.array(3 if x_dtype == "int8" else 121, x_dtype)),
                const("w", rng.integers(-127, 128, size=(*conv["kernel"], 1, C)).astype(np.int8)),
                const("w_scale", np.asarray(scale, np.float32)), const("w_zero", np.zeros(C if per_channel else (),
                                                                                            np.int8)),
                const("bias", rng.integers(-2000, 2000, size=C).astype(np.int32)),
                const("y_scale", np.float32(0.05 * 0.012 * 74 * 73 * np.sqrt(taps) / 40)),
                const("y_zero", np.array(-7 if y_dtype == "int8" else 97, y_dtype))]
    y = OpBuilder(g).emit("qlinear_conv", x, *operands, activation=activation, max_value=max_value,
                          strides=conv["strides"], pads=conv["pads"], dilations=conv.get("dilations"), groups=C)
    g.set_outputs([y])
    return g


@pytest.mark.parametrize("C", [3, 7, 17, 33])
def test_native_depthwise_equals_the_reference_bit_for_bit(rng, C):
    """Depthwise (one group per channel) on the host's kernel: channels in whole vectors and one at a time,
    strides, dilations and uneven padding, 1-D and 2-D, every epilogue, batch 1 and 3 on 1 and 2 threads."""
    for conv in CONVS[:3]:
        for epilogue in EPILOGUES:
            g = depthwise_graph(rng, C, conv, epilogue)
            lib = load(g)
            for batch in (1, 3):
                x = _input(rng, epilogue[0], (batch, *conv["spatial"], C))
                want = run(g, {"x": x})[g.outputs[0]]
                if batch == 3 and epilogue[4] is None:
                    assert len(np.unique(want)) > min(20, want.size // 4)  # spread, not saturated
                for threads in (1, 2):
                    np.testing.assert_array_equal(run_native(lib, {"x": x}, threads)[0], want,
                                                  err_msg=f"{C} {conv} {epilogue} batch {batch}")


def test_other_grouped_convolutions_are_refused_natively(rng):
    g = Graph("grouped")
    x = g.add_input("x", TensorType("uint8", ("batch", 5, 5, 4)))
    c = [g.add_constant(n, np.asarray(v)) for n, v in [
        ("xs", np.float32(0.05)), ("xz", np.uint8(3)), ("w", np.ones((3, 3, 2, 4), np.int8)), ("ws", np.float32(0.01)),
        ("wz", np.int8(0)), ("b", np.zeros(4, np.int32)), ("ys", np.float32(0.1)), ("yz", np.uint8(0))]]
    g.set_outputs([OpBuilder(g).emit("qlinear_conv", x, *c, strides=(1, 1), pads=((1, 1), (1, 1)), groups=2)])
    with pytest.raises(Exception, match="depthwise"):
        load(g)
