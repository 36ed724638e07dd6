"""``.keras`` files with Keras operations and the layer classes of ``keras.applications``.

Files Keras writes for MobileNetV3Small (``Add``/``Multiply`` operations), ConvNeXt (``LayerScale``,
``StochasticDepth``, ``Add``) and InceptionResNetV2 (``CustomScaleLayer``) load in graphc with no
``custom_objects``, predict what Keras predicts through every target, and graphc's files of them
load back in Keras. Classes graphc does not know are refused with a message that says what to do.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.applications import keras_layers
from graphc.saving import UnsupportedKerasError
from tests.keras_parity import TARGETS, assert_outputs_close, check_keras_file, check_predict
from tests.saving.helpers import randomize

pytestmark = pytest.mark.keras


def _application(keras, name: str):
    if name == "ConvNeXtSmallDropPath":  # ConvNeXt with stochastic depth, small enough for a test
        from keras.src.applications.convnext import ConvNeXt

        return ConvNeXt(depths=[1, 1, 2, 1], projection_dims=[8, 16, 24, 32], drop_path_rate=0.3,
                        layer_scale_init_value=0.5, input_shape=(32, 32, 3), classes=5, name="convnext_small_test")
    shape = (75, 75, 3) if name == "InceptionResNetV2" else (32, 32, 3)
    return getattr(keras.applications, name)(weights=None, input_shape=shape, classes=7)


def _check_application(keras, name, rng, tmp_path, targets=TARGETS):
    keras.utils.clear_session(free_memory=False)
    kmodel = _application(keras, name)
    path = tmp_path / f"{name}.keras"
    kmodel.save(path)
    model = graphc.models.load_model(path)
    randomize(model, rng)
    kmodel.set_weights(model.get_weights())
    shape = tuple(kmodel.input_shape[1:])
    for target in targets:
        compiled = graphc.build(model, target=target)
        for n in (1, 2):
            x = rng.uniform(0.0, 255.0, size=(n,) + shape).astype("float32")
            assert_outputs_close(compiled.predict(x), kmodel.predict(x, verbose=0), what=f"{name} {target} n={n}")
    back = tmp_path / f"{name}_graphc.keras"
    model.save(back)
    keras.utils.clear_session(free_memory=False)
    reloaded = keras.models.load_model(back)
    x = rng.uniform(0.0, 255.0, size=(2,) + shape).astype("float32")
    assert_outputs_close(reloaded.predict(x, verbose=0), kmodel.predict(x, verbose=0), what=f"Keras loading {name}")
    return model


@pytest.mark.parametrize("name", [pytest.param("MobileNetV3Small", marks=pytest.mark.slow),
                                  pytest.param("ConvNeXtTiny", marks=pytest.mark.slow), "ConvNeXtSmallDropPath"])
def test_application_files_load_and_predict_as_keras(name, keras, rng, tmp_path):
    model = _check_application(keras, name, rng, tmp_path)
    kinds = {type(layer).__name__ for layer in model.layers}
    if name == "MobileNetV3Small":
        assert {"Add", "Multiply"} <= {k for k in kinds if graphc.saving.registry.is_operation(
            next(layer for layer in model.layers if type(layer).__name__ == k))}
    if name == "ConvNeXtSmallDropPath":
        assert {"LayerScale", "StochasticDepth"} <= kinds


@pytest.mark.slow
def test_inception_resnet_v2_file_loads_and_predicts_as_keras(keras, rng, tmp_path):
    model = _check_application(keras, "InceptionResNetV2", rng, tmp_path)
    assert sum(isinstance(layer, keras_layers.CustomScaleLayer) for layer in model.layers) == 40


# ---------------------------------------------------------------------- the applications' layer classes
def _keras_class(K, name: str):
    if K is graphc:
        return getattr(keras_layers, name)
    from keras.src.applications import convnext, inception_resnet_v2

    return getattr(convnext, name, None) or getattr(inception_resnet_v2, name)


def _scaled_residual(K):
    x = K.Input((5, 3, 6), name="x")
    h = K.layers.Conv2D(6, 3, padding="same")(x)
    h = _keras_class(K, "CustomScaleLayer")(0.17, name="scale")([x, h])
    h = _keras_class(K, "LayerScale")(0.3, 6, name="layer_scale")(h)
    h = _keras_class(K, "StochasticDepth")(0.25, name="drop_path")(h)
    return K.Model(x, K.layers.Add()([x, h]))


def _data(rng, n):
    return rng.normal(size=(n, 5, 3, 6)).astype("float32")


def test_application_layers_predict_as_keras(keras, rng):
    check_predict(keras, _scaled_residual, _data, rng)


def test_application_layers_in_files_both_ways_without_custom_objects(keras, rng, tmp_path):
    check_keras_file(keras, _scaled_residual, _data, rng, tmp_path)


def test_application_layers_train_like_keras(keras, rng):
    """One SGD step through CustomScaleLayer and LayerScale (StochasticDepth off) equals Keras's."""
    def build(K):
        x = K.Input((4, 3), name="x")
        h = K.layers.Dense(3)(x)
        h = _keras_class(K, "CustomScaleLayer")(0.5)([x, h])
        h = _keras_class(K, "LayerScale")(0.1, 3)(h)
        return K.Model(x, _keras_class(K, "StochasticDepth")(0.0)(h))

    graphc.utils.clear_session(free_memory=False)
    model = build(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel = build(keras)
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.3), loss="mse")
    kmodel.compile(optimizer=keras.optimizers.SGD(learning_rate=0.3), loss="mse")
    x, y = rng.normal(size=(5, 4, 3)).astype("float32"), rng.normal(size=(5, 4, 3)).astype("float32")
    assert np.isclose(model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y)), rtol=1e-5)
    for got, want in zip(model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)


def test_stochastic_depth_drops_whole_samples_in_training(rng):
    layer = keras_layers.StochasticDepth(0.4)
    x = rng.uniform(1.0, 2.0, size=(4000, 3, 2)).astype("float32")
    y = layer(x, training=True)
    kept = np.all(np.isclose(y, x / 0.6, rtol=1e-6), axis=(1, 2))
    dropped = np.all(y == 0.0, axis=(1, 2))
    assert np.all(kept | dropped)
    assert abs(kept.mean() - 0.6) < 0.03
    np.testing.assert_array_equal(layer(x), x)


def test_application_layer_options_are_checked():
    with pytest.raises(ValueError, match="drop_path_rate must be in"):
        keras_layers.StochasticDepth(1.0)
    with pytest.raises(ValueError, match="projection_dim must be a positive integer"):
        keras_layers.LayerScale(0.1, 0)
    with pytest.raises(ValueError, match="LayerScale\\(projection_dim=4\\)"):
        keras_layers.LayerScale(0.1, 4)(graphc.Input((3,)))


def test_concrete_tensor_arguments_are_read(keras, rng, tmp_path):
    """Keras writes a backend tensor argument (``x + ops.arange(3)``) as ``__tensor__``."""
    x = keras.Input((2, 3))
    kmodel = keras.Model(x, [x + keras.ops.arange(3), x * np.array([1.0, -2.0, 0.5], "float32")])
    path = tmp_path / "tensor.keras"
    kmodel.save(path)
    data = rng.normal(size=(2, 2, 3)).astype("float32")
    assert_outputs_close(graphc.models.load_model(path).predict(data), kmodel.predict(data, verbose=0))


# ---------------------------------------------------------------------- refused files
def test_unregistered_custom_class_is_named_with_how_to_register(keras, tmp_path):
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = keras.Input((3,))
    path = tmp_path / "custom.keras"
    keras.Model(x, Doubler(name="doubler")(x), name="m").save(path)
    with pytest.raises(UnsupportedKerasError, match=r"custom\.keras: layer 'm/doubler' is of the custom class "
                                                    r"'Doubler'.*register_keras_serializable.*custom_objects="):
        graphc.models.load_model(path)


def test_unsupported_operation_is_named(keras, tmp_path):
    x = keras.Input((3,))
    path = tmp_path / "op.keras"
    keras.Model(x, keras.ops.cumsum(x, axis=1), name="m").save(path)
    with pytest.raises(UnsupportedKerasError, match=r"Keras class keras\.src\.ops\.numpy\.Cumsum \(layer "
                                                    r"'m/cumsum'\) is not supported by graphc; supported from "
                                                    r"keras\.src\.ops\.numpy: .*Add"):
        graphc.models.load_model(path)


def test_operation_options_graphc_refuses_are_named(keras, tmp_path):
    x = keras.Input((3,))
    path = tmp_path / "max.keras"
    keras.Model(x, keras.ops.max(x, axis=1, initial=1.0), name="m").save(path)
    with pytest.raises(UnsupportedKerasError, match=r"layer 'm/max'.*initial=1\.0"):
        graphc.models.load_model(path)
