"""Products done in one K block apply their epilogue to the micro-kernel's registers.

:func:`graphc.backends.llvm.kernels.gemm.store_tile_fused` stores whole tiles through the epilogue
(bias, activation, residual, post-activation) straight into C, the micro-kernel inlined into the
product's kernel; ``GRAPHC_GEMM_FUSED_EPILOGUE=0`` sends every tile through the thread's buffer and
the shared micro-kernel instead. Both sum the same terms in the same order and apply the same
epilogue, so their outputs must be equal bit for bit, and equal to the reference: on Dense
products and 1x1 convolutions of odd shapes (rows read where they lie), half-width last vectors,
one and two threads; and convolutions through the implicit GEMM, whose tiles are read in place or
copied: fused where K is at most ``SMALL_K`` (a first layer over 1 or 3 channels), buffered above.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm.kernels import gemm
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import assert_matches_reference, load, run_native
from tests.backends.llvm.test_conv_direct import _conv_cases

# (M, K, N, activation, activation attrs, residual, post-activation)
PRODUCTS = [
    (1, 7, 17, "relu", (), False, "linear"),
    (13, 3, 24, "silu", (), True, "relu"),
    (37, 16, 96, "relu", (("max_value", 6.0),), False, "linear"),
    (61, 144, 40, "linear", (), True, "linear"),
    (25, 1, 8, "sigmoid", (), False, "linear"),
    (97, 200, 65, "tanh", (), True, "silu"),
    (300, 24, 144, "silu", (), False, "linear"),
]


def _products(rng) -> Graph:
    g = Graph("fused_epilogue")
    ob = OpBuilder(g, layer="dense")
    outs = []
    for i, (m, k, n, act, attrs, residual, post) in enumerate(PRODUCTS):
        x = g.add_input(f"a{i}", TensorType("float32", (m, k)))
        w = g.add_constant(f"w{i}", (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32))
        operands = [x, w, g.add_constant(f"bias{i}", rng.standard_normal(n).astype(np.float32))]
        if residual:
            operands.append(g.add_input(f"r{i}", TensorType("float32", (m, n))))
        outs.append(ob.emit("fused_matmul", *operands, has_bias=True, has_residual=residual, activation=act,
                            activation_attrs=attrs, post_activation=post))
    # a 1x1 convolution over a batch of images: rows read where they lie
    img = g.add_input("img", TensorType("float32", ("batch", 9, 11, 24)))
    w = g.add_constant("w_img", (rng.standard_normal((24, 40)) / 5).astype(np.float32))
    outs.append(ob.emit("fused_matmul", img, w, g.add_constant("b_img", rng.standard_normal(40).astype(np.float32)),
                        has_bias=True, activation="silu"))
    g.set_outputs(outs)
    return g


def _feeds(g: Graph, rng, batch: int = 3) -> dict[str, np.ndarray]:
    return {n: rng.standard_normal(g.type_of(n).concrete_shape({"batch": batch})).astype(np.float32)
            for n in g.inputs}


def _both_builds(graph: Graph, monkeypatch, tmp_path):
    """The library with the fused epilogue (the default) and without, from a fresh cache each."""
    libs = {}
    for mode in ("1", "0"):
        monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", mode)
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / f"cache{mode}"))
        libs[mode] = load(graph, f"{graph.name}_{mode}")
    return libs


@pytest.mark.parametrize("cases", ["products", "convolutions"])
def test_fused_epilogue_equals_the_buffered_one_and_the_reference(cases, monkeypatch, tmp_path):
    rng = np.random.default_rng(30)
    if cases == "products":
        graph = _products(rng)
    else:
        monkeypatch.setenv("GRAPHC_CONV_WINOGRAD", "0")  # the 3x3 stride-1 cases through the implicit GEMM
        graph = Graph("fused_epilogue_conv")
        graph.set_outputs(_conv_cases(graph, rng))
    libs = _both_builds(graph, monkeypatch, tmp_path)
    for threads in (1, 2):
        feeds = _feeds(graph, rng)
        fused = run_native(libs["1"], feeds, threads)
        buffered = run_native(libs["0"], feeds, threads)
        for name, a, b in zip(graph.outputs, fused, buffered):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"{name}, {threads} threads"
        assert_matches_reference(graph, libs["1"], feeds, threads=threads)


def test_one_k_block_inlines_the_micro_kernel(monkeypatch, tmp_path):
    """With the fused epilogue, products of one K block call no shared micro-kernel for whole tiles;
    a product of several K blocks (its partial sums kept in C) still does."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l1=4K")  # K blocks of 64 floats
    called = []  # for whole tiles (the row tail's tiles of EDGE_ROWS always call one)
    for name in ("tile_function", "direct_tile_function"):
        real = getattr(gemm, name)
        monkeypatch.setattr(gemm, name, lambda *a, _real=real, **kw:
                            (a[1] != gemm.EDGE_ROWS and called.append(a[3:5])) or _real(*a, **kw))
    rng = np.random.default_rng(31)
    for k, several in ((48, False), (300, True)):
        called.clear()
        g = Graph(f"fused_k{k}")
        x = g.add_input("x", TensorType("float32", (50, k)))
        w = g.add_constant("w", rng.standard_normal((k, 33)).astype(np.float32))
        g.set_outputs([OpBuilder(g).emit("fused_matmul", x, w, activation="relu")])
        lib = load(g, cache=False)
        assert bool(called) == several, (k, called)
        assert_matches_reference(g, lib, _feeds(g, rng), threads=2)


def test_switch_values(monkeypatch):
    monkeypatch.setenv("GRAPHC_GEMM_FUSED_EPILOGUE", "yes")
    with pytest.raises(ValueError, match="GRAPHC_GEMM_FUSED_EPILOGUE must be 0 or 1, got 'yes'"):
        gemm.fused_epilogue_mode()
