"""Zero padding folded into the convolution or (non-negative) max pool that reads it."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.api import lower
from graphc.passes import pipeline_for_level
from tests.passes.models import randomize_biases, randomize_bn
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph


def test_pad_then_conv_becomes_one_padded_conv(rng):
    g, b, (x,) = new_graph(("x", ("batch", 7, 5, 3)))
    w = const(b, rng, (3, 3, 3, 4))
    padded = b.pad(x, pads=((0, 0), (3, 3), (0, 1), (0, 0)))
    g.set_outputs([b.conv(padded, w, strides=(2, 2), pads=((1, 0), (0, 0)))])
    out, report = apply(g, "fold_pad", "dce")
    assert_equivalent(g, out, rng)
    e, eb, (ex,) = new_graph(("x", ("batch", 7, 5, 3)))
    e.set_outputs([eb.conv(ex, const(eb, rng, (3, 3, 3, 4)), strides=(2, 2), pads=((4, 3), (0, 1)))])
    assert_same_structure(out, e)
    assert report.events()["fold_pad: pad folded into conv"] == 1


def test_free_sizes_and_symbolic_same_padding(rng):
    g, b, (x,) = new_graph(("x", ("batch", "h", "w", 2)))
    w = const(b, rng, (3, 3, 2, 3))
    from graphc.ops.conv import keras_pads

    padded = b.pad(x, pads=((0, 0), (1, 2), (2, 0), (0, 0)))
    same = keras_pads("same", g.type_of(padded).shape[1:3], (3, 3), (2, 2))
    g.set_outputs([b.conv(padded, w, strides=(2, 2), pads=same)])
    out, _ = apply(g, "fold_pad", "dce")
    assert out.op_counts() == {"conv": 1}
    assert_equivalent(g, out, rng, batches=(1, 2))


@pytest.mark.parametrize("source,folds", [("relu", True), ("sigmoid", True), ("tanh", False), ("none", False)])
def test_max_pool_folds_only_over_non_negative_inputs(source, folds, rng):
    g, b, (x,) = new_graph(("x", ("batch", 6, 7, 3)))
    h = x if source == "none" else b.emit(source, x)
    padded = b.pad(h, pads=((0, 0), (1, 1), (1, 0), (0, 0)))
    g.set_outputs([b.max_pool(padded, kernel=(3, 3), strides=(2, 2))])
    out, _ = apply(g, "fold_pad", "dce")
    assert ("pad" not in out.op_counts()) == folds
    # negative inputs make the difference visible where the fold would be wrong
    assert_equivalent(g, out, rng)


def test_max_pool_keeps_a_pad_as_wide_as_its_window(rng):
    g, b, (x,) = new_graph(("x", ("batch", 6, 6, 2)))
    padded = b.pad(b.relu(x), pads=((0, 0), (2, 0), (0, 0), (0, 0)))
    g.set_outputs([b.max_pool(padded, kernel=(2, 2), strides=(2, 2))])
    out, _ = apply(g, "fold_pad", "dce")
    assert out.op_counts()["pad"] == 1
    assert_equivalent(g, out, rng)


@pytest.mark.parametrize("pads,value,reader", [
    (((0, 0), (1, 1), (1, 1), (0, 1)), 0.0, "conv"),  # pads channels
    (((1, 0), (1, 1), (1, 1), (0, 0)), 0.0, "conv"),  # pads the batch
    (((0, 0), (1, 1), (1, 1), (0, 0)), 1.0, "conv"),  # not zeros
    (((0, 0), (1, 1), (1, 1), (0, 0)), 0.0, "avg_pool"),  # averages leave padding out of their count
])
def test_other_pads_stay(pads, value, reader, rng):
    g, b, (x,) = new_graph(("x", ("batch", 5, 5, 2)))
    padded = b.pad(b.relu(x), pads=pads, value=value)
    c = g.type_of(padded).shape[-1]
    if reader == "conv":
        y = b.conv(padded, const(b, rng, (3, 3, c, 2)))
    else:
        y = b.avg_pool(padded, kernel=(2, 2), strides=(2, 2))
    g.set_outputs([y])
    out, report = apply(g, "fold_pad", "dce")
    assert out.op_counts()["pad"] == 1 and not report.events()


def test_a_pad_read_elsewhere_stays_for_that_reader(rng):
    g, b, (x,) = new_graph(("x", ("batch", 5, 4, 2)))
    padded = b.pad(x, pads=((0, 0), (1, 1), (0, 2), (0, 0)))
    y = b.conv(padded, const(b, rng, (2, 2, 2, 3)))
    g.set_outputs([y, padded])
    out, _ = apply(g, "fold_pad", "dce")
    assert out.op_counts() == {"pad": 1, "conv": 1}
    conv = next(op for op in out.ops() if op.type == "conv")
    assert conv.inputs[0] == "x" and tuple(conv.attrs["pads"]) == ((1, 1), (0, 2))
    assert_equivalent(g, out, rng)


def stem(K, depthwise=False):
    """The stems of ResNet50 (pad, 7x7/2 conv, BN, ReLU, pad, 3x3/2 max pool) and MobileNet (pad,
    depthwise 3x3/2 'valid')."""
    inp = K.Input(shape=(17, 15, 3))
    h = K.layers.ZeroPadding2D(3)(inp)
    h = K.layers.Conv2D(8, 7, strides=2)(h)
    h = K.layers.Activation("relu")(K.layers.BatchNormalization()(h))
    h = K.layers.MaxPooling2D(3, strides=2)(K.layers.ZeroPadding2D(1)(h))
    h = K.layers.ZeroPadding2D(((0, 1), (0, 1)))(h)
    h = K.layers.DepthwiseConv2D(3, strides=2)(h)
    return K.Model(inp, K.layers.SeparableConv2D(4, 3)(K.layers.ZeroPadding2D(1)(h)))


def test_keras_stems_lose_every_pad_at_level_2(rng):
    model = stem(graphc)
    randomize_bn(model, rng)
    randomize_biases(model, rng)
    g = lower(model)
    assert g.op_counts()["pad"] == 4
    out, report = apply(g, pipeline_for_level(2))
    assert "pad" not in out.op_counts()
    assert_equivalent(g, out, rng)
    x = rng.standard_normal((2, 17, 15, 3)).astype("float32")
    want = graphc.build(model, target="reference", level=0).predict(x)
    np.testing.assert_allclose(graphc.build(model, target="native").predict(x), want, rtol=1e-4, atol=1e-5)


def test_a_pad_read_through_a_transpose_moves_and_folds(rng):
    """channels_first layers: pad (N, C, H, W), transpose to channels-last, conv."""
    g, b, (x,) = new_graph(("x", ("batch", 3, 7, 5)))
    padded = b.pad(x, pads=((0, 0), (0, 0), (2, 1), (0, 3)))
    nhwc = b.transpose(padded, perm=(0, 2, 3, 1))
    g.set_outputs([b.conv(nhwc, const(b, rng, (3, 3, 3, 4)), strides=(2, 1))])
    out, report = apply(g, "fold_pad", "dce")
    assert_equivalent(g, out, rng)
    e, eb, (ex,) = new_graph(("x", ("batch", 3, 7, 5)))
    e.set_outputs([eb.conv(eb.transpose(ex, perm=(0, 2, 3, 1)), const(eb, rng, (3, 3, 3, 4)), strides=(2, 1),
                           pads=((2, 1), (0, 3)))])
    assert_same_structure(out, e)
    assert report.events()["fold_pad: pad moved after a transpose"] == 1


def test_channels_first_stem_loses_its_pad(rng):
    inp = graphc.Input(shape=(3, 17, 15))
    h = graphc.layers.ZeroPadding2D(3, data_format="channels_first")(inp)
    model = graphc.Model(inp, graphc.layers.Conv2D(8, 7, strides=2, data_format="channels_first")(h))
    g = lower(model)
    out, _ = apply(g, pipeline_for_level(2))
    assert "pad" not in out.op_counts()
    assert_equivalent(g, out, rng)
