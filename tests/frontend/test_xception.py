"""applications.Xception: Keras's architecture layer for layer (names, weights, outputs)."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, applications, layers
from graphc.applications import xception
from tests.helpers import assert_close

NO_TOP_PARAMS = 20_861_480
TOP_PARAMS = 22_910_480  # + the 2048 x 1000 classifier


def test_exports():
    assert applications.Xception is xception.Xception


def test_param_counts_and_output_shapes():
    base = applications.Xception(weights=None, include_top=False)
    assert base.count_params() == NO_TOP_PARAMS
    assert base.input.shape == (None, None, None, 3)
    assert base.output.shape == (None, None, None, 2048)
    assert len(base.layers) == 132
    assert base.name == "xception"

    full = applications.Xception(weights=None)
    assert full.count_params() == TOP_PARAMS
    assert full.input.shape == (None, 299, 299, 3)
    assert full.output.shape == (None, 1000)
    assert [lay.name for lay in full.layers[-2:]] == ["avg_pool", "predictions"]
    non_trainable = sum(int(np.prod(w.shape)) for w in full.non_trainable_weights)
    assert non_trainable == 54_528  # the BatchNormalization moving statistics


@pytest.mark.parametrize("pooling, out_shape", [(None, (None, 3, 3, 2048)), ("avg", (None, 2048)),
                                                ("max", (None, 2048))])
def test_pooling(pooling, out_shape):
    model = applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3), pooling=pooling)
    assert model.output.shape == out_shape
    assert model.count_params() == NO_TOP_PARAMS


@pytest.mark.parametrize("classes", [1, 7])
def test_classes(classes):
    model = applications.Xception(weights=None, classes=classes, input_shape=(80, 96, 3),
                                  classifier_activation=None, name="small")
    assert model.name == "small"
    assert model.output.shape == (None, classes)
    assert model.count_params() == NO_TOP_PARAMS + 2048 * classes + classes


def test_input_tensor_and_shared_base():
    image = Input(shape=(250, 250, 3), name="image")
    model = applications.Xception(weights=None, include_top=False, input_tensor=image)
    assert model.inputs[0] is image
    assert model.output.shape == (None, 8, 8, 2048)
    base = applications.Xception(weights=None, include_top=False, name="base")
    left, right = Input(shape=(250, 250, 3)), Input(shape=(250, 250, 3))
    merged = layers.concatenate([base(left), base(right)])
    assert merged.shape == (None, 8, 8, 4096)
    assert Model([left, right], merged).count_params() == base.count_params()


def test_errors():
    with pytest.raises(ValueError, match="does not download pretrained weights.*weights=None"):
        applications.Xception(weights="imagenet")
    with pytest.raises(ValueError, match="cannot load weight files"):
        applications.Xception(weights="/tmp/xception.h5")
    with pytest.raises(ValueError, match="pooling must be None, 'avg' or 'max', got 'sum'"):
        applications.Xception(weights=None, include_top=False, pooling="sum")
    with pytest.raises(ValueError, match=r"at least 71x71.*\(70, 90, 3\)"):
        applications.Xception(weights=None, include_top=False, input_shape=(70, 90, 3))
    with pytest.raises(ValueError, match=r"three integers.*\(71, 71\)"):
        applications.Xception(weights=None, include_top=False, input_shape=(71, 71))
    with pytest.raises(ValueError, match=r"static input_shape.*\(None, None, 3\)"):
        applications.Xception(weights=None, include_top=True, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="classes must be a positive integer, got 0"):
        applications.Xception(weights=None, classes=0)
    with pytest.raises(ValueError, match="input_tensor must be a symbolic tensor"):
        applications.Xception(weights=None, include_top=False, input_tensor=np.zeros((1, 71, 71, 3)))


def _randomized(model, rng) -> list[np.ndarray]:
    """The model's weights with BatchNormalization statistics and affine terms made non-trivial."""
    out = []
    for w in model.weights:
        name = w.path.rsplit("/", 1)[-1]
        if name == "moving_variance":
            out.append(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif name in ("moving_mean", "beta"):
            out.append(rng.normal(0.0, 0.1, w.shape).astype("float32"))
        elif name == "gamma":
            out.append(rng.uniform(0.8, 1.2, w.shape).astype("float32"))
        else:
            out.append(w.numpy())
    return out


@pytest.mark.keras
def test_matches_keras(keras, rng):
    keras.backend.clear_session()
    k_model = keras.applications.Xception(weights=None, include_top=True, input_shape=(71, 71, 3), classes=7,
                                          classifier_activation=None)
    g_model = applications.Xception(weights=None, include_top=True, input_shape=(71, 71, 3), classes=7,
                                    classifier_activation=None)
    assert [lay.name for lay in g_model.layers] == [lay.name for lay in k_model.layers]
    assert [type(lay).__name__ for lay in g_model.layers] == [type(lay).__name__ for lay in k_model.layers]
    assert [w.shape for w in g_model.weights] == [tuple(w.shape) for w in k_model.weights]
    assert g_model.count_params() == k_model.count_params()

    weights = _randomized(g_model, rng)
    g_model.set_weights(weights)
    k_model.set_weights(weights)
    x = rng.uniform(-1, 1, (1, 71, 71, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(k_model(x, training=False))
    got = g_model.predict(x)
    assert_close(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
