"""Whole pipelines: every level against level 0 and against Keras, through graphc.build."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, Sequential, layers
from graphc.passes import fusion_summary, run_pipeline
from tests.helpers import copy_weights_to_keras
from tests.passes.models import randomize_biases, randomize_bn
from tests.passes.util import assert_equivalent, structure


def resnet_block(filters=8):  # 8 channels: its separable conv fuses (fuse_separable_conv)
    x = Input((9, 7, 3))
    h = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    h = layers.Activation("relu")(layers.BatchNormalization()(h))
    y = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(h)
    y = layers.BatchNormalization()(y)
    r = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=1, use_bias=False)(h))
    y = layers.Activation("relu")(layers.add([y, r]))
    y = layers.DepthwiseConv2D(3, strides=2, activation="relu")(layers.Dropout(0.3)(y))
    y = layers.GlobalAveragePooling2D()(y)
    return Model(x, layers.Dense(5, activation="softmax")(layers.Dense(7)(y)))


def text_model():
    x = Input((None, 4))
    h = layers.Conv1D(8, 3, strides=2, padding="same", activation="relu")(x)
    h = layers.Conv1D(5, 1)(h)
    return Model(x, layers.GlobalMaxPooling1D()(layers.BatchNormalization()(h)))


def lstm_model():
    x = Input((5, 3))
    h = layers.LSTM(4, return_sequences=True)(x)
    return Model(x, layers.Dense(2)(layers.Dropout(0.1)(h)))


MODELS = {"resnet_block": resnet_block, "text": text_model, "lstm": lstm_model}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("level", [1, 2, 3])
def test_every_level_computes_what_level_0_computes(name, level, rng):
    model = MODELS[name]()
    randomize_bn(model, rng)
    randomize_biases(model, rng)
    g = graphc.lower(model)
    out, report = run_pipeline(g, level, verify=True)
    assert len(out) <= len(g)
    assert_equivalent(g, out, rng, batches=(1, 3))
    again, _ = run_pipeline(out, level, verify=True)
    assert structure(again) == structure(out)  # a second run finds nothing left to do


def test_o2_on_a_residual_block(rng):
    g = graphc.lower(resnet_block())
    out, report = run_pipeline(g, 2)
    assert "batch_norm" not in out.op_counts() and "dropout" not in out.op_counts()
    # the 1x1 shortcut is a matmul; the two Dense layers fold into one matmul
    assert fusion_summary(out) == {"conv+bias+relu": 1, "depthwise_conv+bias+relu": 1, "matmul+bias": 2,
                                   "separable_conv+bias+add+relu": 1}
    assert out.op_counts() == {"fused_conv": 2, "fused_matmul": 2, "fused_separable_conv": 1, "reduce_mean": 1,
                               "softmax": 1}
    events = report.events()
    assert events["fold_batchnorm: batch_norm folded into conv"] == 3
    assert events["fold_linear_chains: matmul chain folded"] == 1  # Dense(7) then Dense(5)


def test_build_optimizes_and_predicts_like_level_0(rng):
    model = resnet_block()
    randomize_bn(model, rng)
    x = rng.standard_normal((3, 9, 7, 3)).astype(np.float32)
    o0, o2 = graphc.build(model, level=0), graphc.build(model)
    assert o2.level == 2 and len(o2.graph) < len(o0.graph)
    np.testing.assert_allclose(o2.predict(x), o0.predict(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x), o0.predict(x), rtol=1e-6, atol=1e-7)
    assert "batch_norm" in model._reference().graph.op_counts()  # Model.predict runs the plain graph


def test_an_optimized_build_follows_weight_changes(rng):
    model = Sequential([Input((4,)), layers.Dense(3), layers.BatchNormalization(), layers.Dense(2)])
    compiled = graphc.build(model, level=2)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    before = compiled.predict(x)
    randomize_bn(model, rng)
    after = compiled.predict(x)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, graphc.build(model, level=0).predict(x), rtol=1e-5, atol=1e-6)


def test_build_rejects_bad_levels(rng):
    with pytest.raises(ValueError, match="optimization level must be one of"):
        graphc.build(Sequential([Input((2,)), layers.Dense(1)]), level=5)


@pytest.mark.keras
def test_o2_matches_keras(keras, rng):
    model = resnet_block()
    randomize_bn(model, rng)
    randomize_biases(model, rng)
    k = keras.models.Model.from_config(model.get_config())
    copy_weights_to_keras(model, k)
    x = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
    want = np.asarray(k.predict(x, verbose=0))
    np.testing.assert_allclose(graphc.build(model, level=2).predict(x), want, rtol=1e-5, atol=1e-5)


def test_an_optimized_graph_differentiates_like_the_original(rng):
    from graphc.autodiff import gradients
    from graphc.backends.reference import run

    x = Input((5, 4, 3))
    h = layers.Conv2D(3, 3, padding="same", activation="relu")(x)
    y = layers.Activation("tanh")(layers.add([layers.Conv2D(3, 3, padding="same")(h), x]))  # residual = input
    y = layers.BatchNormalization()(layers.SeparableConv2D(4, 3, activation="relu")(y))
    model = Model(x, layers.Dense(2)(layers.Flatten()(y)))
    randomize_bn(model, rng)
    feeds = {"input_layer": rng.standard_normal((2, 5, 4, 3)).astype(np.float32)}
    grads = []
    for level in (0, 2):
        g = graphc.optimize(graphc.lower(model), level)
        b = graphc.ops.OpBuilder(g)
        loss = b.reduce_sum(b.mul(g.outputs[0], b.constant(np.array([1.0, -2.0], np.float32))), axes=(0, 1))
        dx = gradients(g, loss, ["input_layer"])["input_layer"]
        g.set_outputs([dx])
        grads.append(run(g, feeds)[dx])
    assert "fused_conv" in graphc.optimize(graphc.lower(model), 2).op_counts()
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4, atol=1e-5)
