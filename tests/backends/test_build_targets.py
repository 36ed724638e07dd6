"""graphc.build: every target predicts what the reference interpreter predicts."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers


def small_model():
    a = Input(shape=(None, 7), name="seq")
    b = Input(shape=(3,), name="side")
    x = layers.LSTM(5)(a)
    x = layers.concatenate([x, b])
    out = layers.Dense(4, activation="softmax", name="probs")(x)
    aux = layers.Dense(1, name="aux")(x)
    return Model([a, b], {"probs": out, "aux": aux})


def test_onnx_target_matches_reference_and_picks_up_new_weights(rng):
    model = small_model()
    x = {"seq": rng.normal(size=(3, 5, 7)).astype(np.float32), "side": rng.normal(size=(3, 3)).astype(np.float32)}
    ref = graphc.build(model, target="reference", level=0)
    onnx_cm = graphc.build(model, target="onnx", threads=1)
    assert onnx_cm.onnx_model.graph.output[0].name in ("probs", "aux")
    for cm_out, ref_out in [(onnx_cm.predict(x), ref.predict(x))]:
        assert set(cm_out) == {"probs", "aux"}
        for k in cm_out:
            np.testing.assert_allclose(cm_out[k], ref_out[k], rtol=1e-4, atol=1e-5)
    model.set_weights([w + 0.1 for w in model.get_weights()])
    np.testing.assert_allclose(onnx_cm.predict(x)["aux"], ref.predict(x)["aux"], rtol=1e-4, atol=1e-5)


def test_unknown_target_is_named():
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        graphc.build(small_model(), target="tpu")


def _mlp_for_training():
    graphc.utils.set_random_seed(3)
    i = Input(shape=(7,))
    o = layers.Dense(3, activation="softmax")(layers.Dense(17, activation="relu")(i))
    model = Model(i, o)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    return model


def test_build_training_step_on_the_reference_target(rng):
    model = _mlp_for_training()
    twin = _mlp_for_training()
    twin.set_weights(model.get_weights())
    x = rng.normal(size=(5, 7)).astype(np.float32)
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=5), 3)
    trainer = graphc.build(model, target="reference", training=True)
    logs = trainer.train_step(x, y)
    assert set(logs) == {"loss"} and np.isfinite(logs["loss"])
    np.testing.assert_allclose(logs["loss"], twin.train_on_batch(x, y), rtol=1e-6)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_build_training_refuses_uncompiled_models_and_onnx():
    i = Input(shape=(3,))
    model = Model(i, layers.Dense(2)(i))
    with pytest.raises(ValueError, match="not compiled"):
        graphc.build(model, training=True)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="not 'onnx'"):
        graphc.build(model, target="onnx", training=True)


@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("target", ["native", "onnx", "reference"])
def test_compiled_models_follow_weight_changes_at_every_level(target, level, rng):
    from tests.programs.seed_models import conv_bn

    model, data = conv_bn(graphc)
    x = data(rng, 2)
    compiled = graphc.build(model, target=target, level=level)
    np.testing.assert_allclose(compiled.predict(x), model.predict(x), rtol=1e-4, atol=1e-5)
    model.set_weights([w * 1.1 + 0.01 for w in model.get_weights()])  # BatchNorm folds these at level 2
    np.testing.assert_allclose(compiled.predict(x), model.predict(x), rtol=1e-4, atol=1e-5)
