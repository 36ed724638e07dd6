"""Epilogue fusion: bias, activation, residual add and a final activation join the product."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, Sequential, layers
from graphc.api import lower
from graphc.backends.reference import run
from graphc.passes import fusion_summary, optimize
from tests.passes.models import randomize_biases
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph

EPILOGUE = ("conv1x1_to_matmul", "fuse_separable_conv", "fuse_epilogue", "dce")


def fused(model, rng, passes=EPILOGUE):
    randomize_biases(model, rng)
    g = lower(model)
    out, report = apply(g, "constant_fold", *passes)
    assert_equivalent(g, out, rng)
    return out, report


@pytest.mark.parametrize("activation", ["relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu", "swish",
                                        "hard_sigmoid", "softplus", "linear"])
def test_dense_bias_activation_is_one_op(activation, rng):
    out, _ = fused(Sequential([Input((7,)), layers.Dense(3, activation=activation)]), rng)
    assert out.op_counts() == {"fused_matmul": 1}
    op = out.ops()[0]
    name = {"relu6": "relu", "swish": "silu", "linear": "linear"}.get(activation, activation)
    assert op.attrs["activation"] == name and op.attrs["has_bias"]
    if activation == "relu6":
        assert op.attrs["activation_attrs"] == (("max_value", 6.0),)


@pytest.mark.parametrize("layer,kind", [
    (lambda: layers.Conv2D(7, 3, activation="relu", padding="same"), "conv+bias+relu"),
    (lambda: layers.Conv2D(3, 1, strides=2, activation="relu"), "matmul+bias+relu"),
    (lambda: layers.DepthwiseConv2D(3, activation="relu"), "depthwise_conv+bias+relu"),
    (lambda: layers.SeparableConv2D(17, 3, activation="relu"), "separable_conv+bias+relu"),
    (lambda: layers.Conv2D(1, (3, 1), activation="tanh"), "conv+bias+tanh"),
], ids=["conv", "conv1x1", "depthwise", "separable", "conv_3x1"])
def test_convolutions_fuse(layer, kind, rng):
    out, _ = fused(Sequential([Input((9, 7, 8)), layer()]), rng)  # 8 channels: a separable conv fuses
    assert fusion_summary(out) == {kind: 1}


def test_conv1d_fuses(rng):
    out, _ = fused(Sequential([Input((11, 3)), layers.Conv1D(4, 3, activation="relu", padding="causal")]), rng)
    assert fusion_summary(out) == {"conv+bias+relu": 1}


def test_residual_block_is_one_op_per_conv(rng):
    x = Input((6, 5, 4))
    y = layers.Conv2D(4, 3, activation="relu", padding="same")(x)
    y = layers.Conv2D(4, 3, padding="same")(y)
    y = layers.Activation("relu")(layers.add([y, x]))
    out, report = fused(Model(x, y), rng)
    assert fusion_summary(out) == {"conv+bias+relu": 1, "conv+bias+add+relu": 1}
    e, eb, (ex,) = new_graph((out.inputs[0], ("batch", 6, 5, 4)))
    pads = ((1, 1), (1, 1))
    h = eb.fused_conv(ex, const(eb, rng, (3, 3, 4, 4)), const(eb, rng, (4,)), has_bias=True, activation="relu",
                      pads=pads, strides=(1, 1), dilations=(1, 1))
    e.set_outputs([eb.fused_conv(h, const(eb, rng, (3, 3, 4, 4)), const(eb, rng, (4,)), ex, has_bias=True,
                                 has_residual=True, post_activation="relu", pads=pads, strides=(1, 1),
                                 dilations=(1, 1))])
    assert_same_structure(out, e)
    assert report.events()["fuse_epilogue: conv+add+relu"] == 1


@pytest.mark.parametrize("size", [(3, 4), (7, 5), (17, 23)])
def test_a_residual_over_images_of_any_size_fuses(size, rng):
    """Over free spatial sizes, a padded stride-2 depthwise convolution (MobileNetV3's blocks) writes its
    output size one way while the pad folded into it re-infers it another; the add fuses all the same,
    because both are written in one normal form."""
    x = Input((None, None, 8))
    h = layers.Conv2D(16, 1, activation="relu")(x)
    h = layers.DepthwiseConv2D(3, strides=2)(layers.ZeroPadding2D(((0, 1), (0, 1)))(h))
    h = layers.Conv2D(8, 1)(h)
    y = layers.DepthwiseConv2D(3)(layers.ZeroPadding2D(1)(layers.Conv2D(16, 1)(h)))
    y = layers.add([h, layers.Conv2D(8, 1)(y)])
    model = Model(x, y)
    randomize_biases(model, rng)
    g = lower(model)
    out = optimize(g)
    assert "add" not in out.op_counts()
    assert fusion_summary(out)["matmul+bias+add"] == 1
    feeds = {g.inputs[0]: rng.standard_normal((2, *size, 8)).astype(np.float32)}
    np.testing.assert_allclose(run(out, feeds)[out.outputs[0]], run(g, feeds)[g.outputs[0]], rtol=1e-5, atol=1e-5)


def test_residual_with_an_activation_before_the_add(rng):
    x = Input((5, 5, 3))
    y = layers.Conv2D(3, 3, padding="same", activation="relu")(x)
    out, _ = fused(Model(x, layers.add([x, y])), rng)  # residual on the left
    assert fusion_summary(out) == {"conv+bias+relu+add": 1}


def test_projection_shortcut_takes_the_add(rng):
    x = Input((8, 8, 3))
    y = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu", padding="same")(x))
    r = layers.Conv2D(4, 1, strides=2)(x)
    out, _ = fused(Model(x, layers.add([y, r])), rng)
    assert fusion_summary(out) == {"conv+bias+relu": 1, "matmul+bias+add": 1}


@pytest.mark.parametrize("build,outside", [
    (lambda b, x, rng, p: b.bias_add(b.relu(p), const(b, rng, (4,))), "bias_add"),
    (lambda b, x, rng, p: b.add(b.add(b.relu(p), x), x), "add"),
    (lambda b, x, rng, p: b.add(p, const(b, rng, (4,))), "add"),  # broadcasts: not a residual
    (lambda b, x, rng, p: b.add(b.relu(p), p), "relu"),  # the product has two readers
    (lambda b, x, rng, p: b.softmax(p), "softmax"),  # not elementwise
], ids=["bias_after_activation", "second_residual", "broadcast_add", "shared", "softmax"])
def test_what_does_not_fit_the_epilogue_stays_outside(build, outside, rng):
    g, b, (x,) = new_graph(("x", ("batch", 4)))
    g.set_outputs([build(b, x, rng, b.matmul(x, const(b, rng, (4, 4))))])
    out, _ = apply(g, "fuse_epilogue", "dce")
    assert outside in out.op_counts() and len(out) > 1
    assert_equivalent(g, out, rng)


def test_second_residual_keeps_the_first(rng):
    g, b, (x,) = new_graph(("x", ("batch", 4)))
    p = b.matmul(x, const(b, rng, (4, 4)))
    g.set_outputs([b.add(b.add(p, x), x)])
    out, _ = apply(g, "fuse_epilogue", "dce")
    assert out.op_counts() == {"add": 1, "fused_matmul": 1}
    assert_equivalent(g, out, rng)


def test_graph_output_names_survive(rng):
    model = Sequential([Input((5,)), layers.Dense(3, activation="relu", name="head")])
    g = lower(model)
    out, _ = apply(g, *EPILOGUE)
    assert out.outputs == g.outputs == ["head"]
    assert out.producer("head").type == "fused_matmul"


def test_a_shortcut_does_not_take_the_add_when_that_keeps_a_large_tensor_alive(rng):
    from graphc.memory import plan_memory

    x = Input((8, 8, 3))
    h = layers.Conv2D(6, 3, padding="same", activation="relu")(x)  # an intermediate, read by both branches
    y = layers.Conv2D(6, 3, activation="relu", padding="same")(h)
    y = layers.MaxPooling2D(2)(layers.Conv2D(6, 3, activation="relu", padding="same")(y))
    r = layers.Conv2D(6, 1, strides=2)(h)  # its result is 4x smaller than h
    out, report = fused(Model(x, layers.add([y, r])), rng)
    assert out.op_counts()["add"] == 1
    assert report.events()["fuse_epilogue: add left unfused (memory)"] == 1
    full, quarter = 8 * 8 * 6 * 4, 4 * 4 * 6 * 4
    # The shortcut runs first and h dies at the first conv of the main branch; fused, h would
    # still be alive beside that conv's result and the next one's (3 * full).
    assert plan_memory(out, batch_size=1).peak_live_bytes == 2 * full + quarter
