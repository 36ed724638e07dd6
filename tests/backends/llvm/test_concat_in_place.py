"""Concatenation parts written in place by their producers (:mod:`graphc.backends.llvm.concat_in_place`).

Which parts qualify (producer, readers, axis, outputs); native results against the reference on odd
sizes for every producer kind (products with and without a residual epilogue, GEMM convolutions over
one K block and several, Winograd, pooling, slices, and the producers that go through a temporary:
depthwise and separable convolutions), on one and two threads; the concatenation launching no copy for
the parts written in place; kernels shared by ops writing into different concatenations; the switch.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import layers
from graphc.backends.llvm import concat_in_place
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import check_model


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))


def _concat_launches(cm, x) -> dict[str, float]:
    return {r.name: r.launches for r in cm.profile(x, runs=2).rows if r.op == "concat"}


def test_which_parts_qualify():
    g = Graph("parts")
    x = g.add_input("x", TensorType("float32", ("batch", 5, 6, 8)))
    w = g.add_constant("w", np.ones((1, 1, 8, 4), np.float32))
    ob = OpBuilder(g)
    once = ob.emit("fused_conv", x, w)  # read by the concatenation only: in place
    twice = ob.emit("fused_conv", x, w)  # also read by the next op
    pooled = ob.emit("max_pool", x, kernel=(3, 3), strides=(1, 1), pads=((1, 1), (1, 1)))
    out_too = ob.emit("fused_conv", x, w)  # a graph output
    act = ob.emit("relu", twice)  # an elementwise op: no strided output
    cat = ob.emit("concat", once, twice, pooled, out_too, act, x, axis=-1)
    outer = ob.emit("concat", ob.emit("fused_conv", x, w), ob.emit("fused_conv", x, w), axis=1)  # not the last axis
    g.set_outputs([cat, out_too, outer])
    parts = concat_in_place.concat_parts_in_place(g)
    assert parts == {once: concat_in_place.ConcatPart(cat, 0, 32), pooled: concat_in_place.ConcatPart(cat, 8, 32)}


def test_repeated_part_and_free_width_stay_copies():
    g = Graph("parts_repeated")
    x = g.add_input("x", TensorType("float32", ("batch", 4, "c")))
    y = g.add_input("y", TensorType("float32", ("batch", 4, 6)))
    w = g.add_constant("w", np.ones((6, 3), np.float32))
    ob = OpBuilder(g)
    p = ob.emit("fused_matmul", y, w)
    free = ob.emit("concat", ob.emit("fused_matmul", y, w), x, axis=-1)  # a free width
    twice = ob.emit("concat", p, p, axis=-1)  # the same part twice
    g.set_outputs([free, twice])
    assert concat_in_place.concat_parts_in_place(g) == {}


def test_inception_block_equals_reference_and_copies_nothing():
    """Producers of every kind in one concatenation: a 1x1 product (a residual added in its epilogue),
    3x3 and 1x7 convolutions on Winograd, max and average pooling; in a second, a strided 3x3 on the
    implicit GEMM beside a strided pool; 11x9 images, odd channel counts."""
    rng = np.random.default_rng(0)
    inp = graphc.Input((11, 9, 19))
    a = layers.Conv2D(17, 1, activation="relu")(inp)
    a = layers.Add()([a, layers.Conv2D(17, 1)(inp)])
    b = layers.Conv2D(24, 3, padding="same", activation="relu")(inp)
    c = layers.Conv2D(13, (1, 7), padding="same")(inp)
    d = layers.MaxPooling2D(3, strides=1, padding="same")(inp)
    e = layers.AveragePooling2D(3, strides=1, padding="same")(inp)
    cat = layers.Concatenate(name="block")([a, b, c, d, e])
    s1 = layers.Conv2D(9, 3, strides=2, activation="relu")(cat)
    s2 = layers.MaxPooling2D(3, strides=2)(cat)
    reduced = layers.Concatenate(name="reduction")([s1, s2])
    model = graphc.Model(inp, layers.GlobalAveragePooling2D()(layers.Conv2D(5, 1)(reduced)))
    cm = check_model(model, (11, 9, 19), rng)
    x = rng.standard_normal((2, 11, 9, 19)).astype(np.float32)
    assert _concat_launches(cm, x) == {}  # both concatenations: every part in place, nothing copied


def test_concatenation_as_graph_output_and_slices():
    """The concatenated result is the caller's output buffer; a slice of a wider product writes its part
    in place (its copy is the only one left), beside the input itself (copied)."""
    rng = np.random.default_rng(1)
    g = Graph("cat_output")
    x = g.add_input("x", TensorType("float32", ("batch", 7, 5)))
    w = g.add_constant("w", (rng.standard_normal((5, 11)) / 3).astype(np.float32))
    ob = OpBuilder(g)
    wide = ob.emit("fused_matmul", x, w)
    part = ob.emit("slice", wide, axis=-1, start=3, stop=10, step=1)
    other = ob.emit("fused_matmul", x, g.add_constant("w2", np.ones((5, 3), np.float32)))
    g.set_outputs([ob.emit("concat", part, x, other, axis=-1), wide])
    from tests.backends.llvm.helpers import assert_matches_reference, load

    lib = load(g)
    for threads in (1, 2):
        for n in (1, 4):
            feeds = {"x": rng.standard_normal((n, 7, 5)).astype(np.float32)}
            assert_matches_reference(g, lib, feeds, threads=threads, label=f"{threads} threads, batch {n}")


def test_producers_through_a_temporary():
    """Depthwise and separable convolutions (no strided output of their own) beside a 3x3 convolution:
    still equal to the reference."""
    rng = np.random.default_rng(2)
    inp = graphc.Input((8, 7, 6))
    dw = layers.DepthwiseConv2D(3, padding="same")(inp)
    sep = layers.SeparableConv2D(10, 3, padding="same")(inp)
    conv = layers.Conv2D(5, 3, padding="same")(inp)
    model = graphc.Model(inp, layers.Concatenate()([dw, sep, conv]))
    check_model(model, (8, 7, 6), rng)


def test_several_k_blocks_and_shared_kernels():
    """A 1x1 product over 700 channels (partial sums through C, rows 56 apart); identical 1x1 products
    (over different inputs, so not merged as siblings) into two columns of one concatenation (one kernel,
    replayed at another offset) and into a concatenation of another width (rows further apart: not the
    same kernel)."""
    rng = np.random.default_rng(3)
    inp = graphc.Input((5, 3, 700))
    big = layers.Conv2D(40, 1)(inp)
    small_a = layers.Conv2D(8, 1)(layers.ReLU()(inp))
    small_b = layers.Conv2D(8, 1)(layers.Activation("tanh")(inp))
    small_c = layers.Conv2D(8, 1)(layers.Activation("sigmoid")(inp))
    first = layers.Concatenate(name="first")([big, small_a, small_b])
    second = layers.Concatenate(name="second")([small_c, layers.MaxPooling2D(1)(inp)])
    model = graphc.Model(inp, [layers.Conv2D(3, 1)(first), layers.Conv2D(3, 1)(second)])
    cm = check_model(model, (5, 3, 700), rng, batches=(1, 2))
    assert _concat_launches(cm, rng.standard_normal((1, 5, 3, 700)).astype(np.float32)) == {}


def test_switched_off_copies_every_part(monkeypatch):
    rng = np.random.default_rng(4)
    inp = graphc.Input((6, 6, 8))
    model = graphc.Model(inp, layers.Conv2D(4, 1)(layers.Concatenate(name="cat")(
        [layers.Conv2D(5, 3, padding="same")(inp), layers.MaxPooling2D(3, strides=1, padding="same")(inp)])))
    x = rng.standard_normal((1, 6, 6, 8)).astype(np.float32)
    monkeypatch.setenv(concat_in_place.ENV, "0")
    cm = check_model(model, (6, 6, 8), rng, threads=(1,))
    assert _concat_launches(cm, x) == {"cat": 2}
    monkeypatch.setenv(concat_in_place.ENV, "yes")
    with pytest.raises(ValueError, match="GRAPHC_CONCAT_IN_PLACE must be 0 or 1, got 'yes'"):
        graphc.build(model, "native")
