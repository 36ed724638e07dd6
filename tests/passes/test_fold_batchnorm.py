"""BatchNorm folding into convolutions and dense layers, and lone BatchNorms as scale_shift."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, Sequential, layers
from graphc.api import lower
from tests.passes.models import randomize_biases, randomize_bn
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph


def folded(model, rng, *passes):
    randomize_bn(model, rng)
    randomize_biases(model, rng)
    g = lower(model)
    # The depthwise kernel is a reshape of the weight until constant folding.
    out, report = apply(g, *(passes or ("constant_fold", "fold_batchnorm", "dce")))
    assert_equivalent(g, out, rng, batches=(1, 3))
    return g, out, report


@pytest.mark.parametrize("units", [1, 7, 17])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_then_bn_folds_into_the_dense(units, use_bias, rng):
    model = Sequential([Input((5,)), layers.Dense(units, use_bias=use_bias), layers.BatchNormalization(),
                        layers.Activation("relu")])
    g, out, report = folded(model, rng)
    e, eb, (ex,) = new_graph(("input_layer", ("batch", 5)))
    e.set_outputs([eb.relu(eb.bias_add(eb.matmul(ex, const(eb, rng, (5, units))), const(eb, rng, (units,))))])
    assert_same_structure(out, e)
    assert report.events()["fold_batchnorm: batch_norm folded into matmul"] == 1


@pytest.mark.parametrize("layer", [
    lambda: layers.Conv2D(7, 3, padding="same", use_bias=False),
    lambda: layers.Conv2D(3, (1, 3), strides=2),
    lambda: layers.DepthwiseConv2D(3, depth_multiplier=2),
    lambda: layers.SeparableConv2D(5, 3, use_bias=False),
    lambda: layers.Conv2D(4, 1),
], ids=["conv_same", "conv_strided", "depthwise", "separable", "conv1x1"])
def test_conv_then_bn_folds(layer, rng):
    model = Sequential([Input((9, 8, 3)), layer(), layers.BatchNormalization()])
    g, out, report = folded(model, rng)
    assert "batch_norm" not in out.op_counts() and "scale_shift" not in out.op_counts()
    assert out.op_counts()["bias_add"] == 1
    assert sum(v for k, v in report.events().items() if "folded into" in k) == 1


def test_conv1d_then_bn_folds(rng):
    model = Sequential([Input((11, 3)), layers.Conv1D(4, 3, padding="causal"), layers.BatchNormalization()])
    _, out, _ = folded(model, rng)
    assert out.op_counts() == {"bias_add": 1, "conv": 1}


def test_bn_after_a_fused_conv_extends_its_bias(rng):
    g, b, (x,) = new_graph(("x", ("batch", 6, 6, 3)))
    y = b.fused_conv(x, const(b, rng, (3, 3, 3, 4)), const(b, rng, (4,), "b"), has_bias=True,
                     pads=((1, 1), (1, 1)))
    gamma, var = const(b, rng, (4,), "g", low=0.5), const(b, rng, (4,), "v", low=0.5)
    g.set_outputs([b.batch_norm(y, gamma, const(b, rng, (4,)), const(b, rng, (4,)), var, epsilon=0.01)])
    out, _ = apply(g, "fold_batchnorm", "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 6, 6, 3)))
    e.set_outputs([eb.fused_conv(ex, const(eb, rng, (3, 3, 3, 4)), const(eb, rng, (4,)), has_bias=True,
                                 pads=((1, 1), (1, 1)))])
    assert_same_structure(out, e)
    assert_equivalent(g, out, rng)


def test_bn_after_an_activation_becomes_scale_shift(rng):
    model = Sequential([Input((6, 6, 3)), layers.Conv2D(7, 3, activation="relu"), layers.BatchNormalization()])
    _, out, report = folded(model, rng)
    assert out.op_counts() == {"bias_add": 1, "conv": 1, "relu": 1, "scale_shift": 1}
    assert report.events()["fold_batchnorm: batch_norm -> scale_shift"] == 1


def test_bn_on_another_axis_becomes_scale_shift_on_that_axis(rng):
    model = Sequential([Input((4, 5)), layers.Dense(5), layers.BatchNormalization(axis=1)])
    _, out, _ = folded(model, rng)
    op = next(op for op in out.ops() if op.type == "scale_shift")
    assert op.attrs["axis"] == 1


def test_bn_whose_producer_has_other_readers_is_not_folded(rng):
    x = Input((5,))
    h = layers.Dense(3)(x)
    model = Model(x, [layers.BatchNormalization()(h), h])
    _, out, _ = folded(model, rng)
    assert out.op_counts()["scale_shift"] == 1 and out.op_counts()["matmul"] == 1


def test_bn_with_computed_statistics_is_left_alone(rng):
    g, b, (x, s) = new_graph(("x", ("batch", 3)), ("s", (3,)))
    one = const(b, rng, (3,), low=0.5)
    g.set_outputs([b.batch_norm(x, s, one, one, one)])
    out, report = apply(g, "fold_batchnorm")
    assert out.op_counts() == {"batch_norm": 1} and not report.passes["fold_batchnorm"].changed


def test_a_shared_conv_and_bn_fold_once(rng):
    conv, bn = layers.Conv2D(4, 3), layers.BatchNormalization()
    a, b = Input((6, 6, 2)), Input((6, 6, 2))
    model = Model([a, b], [bn(conv(a)), bn(conv(b))])
    g, out, _ = folded(model, rng)
    assert out.op_counts() == {"bias_add": 2, "conv": 2}
    kernels = {op.inputs[1] for op in out.ops() if op.type == "conv"}
    assert len(kernels) == 1


def test_folded_weights_keep_the_dtype_and_the_originals(rng):
    model = Sequential([Input((5,)), layers.Dense(3), layers.BatchNormalization()])
    g, out, _ = folded(model, rng)
    kernel = next(op.inputs[1] for op in out.ops() if op.type == "matmul")
    assert out.constants[kernel].dtype == np.float32 and kernel not in g.constants
    assert all(np.array_equal(g.constants[k], model.get_weights()[i]) for i, k in enumerate(g.constants))
