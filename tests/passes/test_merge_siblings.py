"""Sibling products reading the same tensor merge into one wider product plus channel slices."""

from __future__ import annotations

import numpy as np

from graphc import Input, Model, layers
from graphc.api import lower
from tests.passes.models import randomize_biases
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph

O2_TAIL = ("conv1x1_to_matmul", "fuse_epilogue", "merge_sibling_products", "dce")


def inception(channels=5):
    inp = Input((9, 9, channels))
    a = layers.Conv2D(3, 1, activation="relu", strides=2)(inp)
    b = layers.Conv2D(4, 1, activation="relu")(inp)
    b = layers.Conv2D(7, 3, activation="relu", strides=2, padding="same")(b)
    c = layers.AveragePooling2D(3, strides=2, padding="same")(inp)
    c = layers.Conv2D(7, 1, activation="relu", padding="same")(c)
    d = layers.Conv2D(6, 1, activation="relu")(inp)
    d = layers.Conv2D(6, 3, activation="relu", padding="same")(d)
    d = layers.Conv2D(6, 3, activation="relu", strides=2, padding="same")(d)
    return Model(inp, layers.concatenate([a, b, c, d], axis=-1))


def test_inception_branches_b_and_d_share_one_matmul(rng):
    model = inception()
    randomize_biases(model, rng)
    g = lower(model)
    out, report = apply(g, *O2_TAIL)
    assert report.events()["merge_sibling_products: 2 sibling matmuls merged"] == 1
    merged = [op for op in out.ops() if op.type == "fused_matmul" and op.inputs[0] == g.inputs[0]]
    assert len(merged) == 1 and out.type_of(merged[0].inputs[1]).shape == (5, 10)
    slices = sorted((op.attrs["start"], op.attrs["stop"]) for op, _ in out.consumers(merged[0].outputs[0]))
    assert slices in ([(0, 4), (4, 10)], [(0, 6), (6, 10)])  # branch b's 4 channels and d's 6
    assert_equivalent(g, out, rng, batches=(1, 2))


def test_merged_weights_and_biases_are_concatenated(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3, 7)))
    w1, w2 = const(b, rng, (7, 2), "w1"), const(b, rng, (7, 17), "w2")
    b1, b2 = const(b, rng, (2,), "b1"), const(b, rng, (17,), "b2")
    y1 = b.fused_matmul(x, w1, b1, has_bias=True, activation="relu")
    y2 = b.fused_matmul(x, w2, b2, has_bias=True, activation="relu")
    g.set_outputs([b.tanh(y1), y2])
    out, _ = apply(g, "merge_sibling_products", "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 3, 7)))
    m = eb.fused_matmul(ex, const(eb, rng, (7, 19)), const(eb, rng, (19,)), has_bias=True, activation="relu")
    e.set_outputs([eb.tanh(eb.slice(m, axis=-1, start=0, stop=2, step=1)),
                   eb.slice(m, axis=-1, start=2, stop=19, step=1)])
    assert_same_structure(out, e)
    kernel = next(op.inputs[1] for op in out.ops() if op.type == "fused_matmul")
    np.testing.assert_array_equal(out.constants[kernel], np.concatenate([g.constants[w1], g.constants[w2]], 1))
    assert out.outputs == g.outputs
    assert_equivalent(g, out, rng)


def test_sibling_convs_with_the_same_window_merge(rng):
    inp = Input((7, 6, 3))
    a = layers.Conv2D(2, 3, padding="same", activation="relu")(inp)
    b = layers.Conv2D(5, 3, padding="same", activation="relu")(inp)
    c = layers.Conv2D(5, 3, strides=2, padding="same", activation="relu")(inp)  # other strides: kept apart
    model = Model(inp, [a, b, c])
    randomize_biases(model, rng)
    g = lower(model)
    out, report = apply(g, *O2_TAIL)
    assert out.op_counts() == {"fused_conv": 2, "slice": 2}
    assert report.events()["merge_sibling_products: 2 sibling convs merged"] == 1
    assert_equivalent(g, out, rng)


def test_different_epilogues_do_not_merge(rng):
    g, b, (x,) = new_graph(("x", ("batch", 4)))
    w = const(b, rng, (4, 3))
    g.set_outputs([b.fused_matmul(x, w, activation="relu"), b.fused_matmul(x, w, activation="tanh"),
                   b.fused_matmul(x, w, const(b, rng, (3,)), has_bias=True, activation="relu"),
                   b.fused_matmul(x, w, b.relu(b.matmul(x, w)), has_residual=True, activation="relu")])
    out, report = apply(g, "merge_sibling_products")
    assert not report.passes["merge_sibling_products"].changed
