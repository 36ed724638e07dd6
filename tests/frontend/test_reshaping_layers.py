"""Shape and resampling layers (ZeroPadding, Cropping, UpSampling, RepeatVector, Permute, Identity):
configs as Keras writes them, shapes with free dims, clear errors, and predictions equal to Keras's
through the reference, ONNX and native targets and through ``.keras`` files."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, layers
from tests.keras_parity import check_keras_file, check_predict


def normal(shape):
    def data(rng, n):
        return rng.standard_normal((n,) + shape).astype("float32")

    return data


# ---------------------------------------------------------------------------- configs
@pytest.mark.keras
@pytest.mark.parametrize("make", [
    lambda L: L.ZeroPadding1D(),
    lambda L: L.ZeroPadding1D((2, 0)),
    lambda L: L.ZeroPadding2D(),
    lambda L: L.ZeroPadding2D(3),
    lambda L: L.ZeroPadding2D((1, 2), data_format="channels_first"),
    lambda L: L.ZeroPadding2D(((0, 1), (2, 3))),
    lambda L: L.ZeroPadding3D((1, (0, 2), 3)),
    lambda L: L.Cropping1D(2),
    lambda L: L.Cropping2D(),
    lambda L: L.Cropping2D(((1, 0), 2), data_format="channels_first"),
    lambda L: L.Cropping3D(1),
    lambda L: L.UpSampling1D(3),
    lambda L: L.UpSampling2D(),
    lambda L: L.UpSampling2D((2, 3), interpolation="BILINEAR"),
    lambda L: L.UpSampling3D((1, 2, 3), data_format="channels_first"),
    lambda L: L.RepeatVector(5),
    lambda L: L.Permute((3, 1, 2)),
    lambda L: L.Identity(),
])
def test_configs_equal_keras(keras, make):
    import graphc

    ours = make(graphc.layers).get_config()
    theirs = make(keras.layers).get_config()
    for key in ("name", "dtype", "trainable"):
        ours.pop(key)
        theirs.pop(key)
    assert ours == theirs
    layer = make(graphc.layers)
    again = type(layer).from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("make,in_shape,out_shape", [
    (lambda: layers.ZeroPadding1D(2), (None, 7, 3), (None, 11, 3)),
    (lambda: layers.ZeroPadding1D((0, 3)), (None, None, 3), (None, None, 3)),
    (lambda: layers.ZeroPadding2D(((1, 2), (0, 1))), (None, 7, 5, 3), (None, 10, 6, 3)),
    (lambda: layers.ZeroPadding2D(1, data_format="channels_first"), (None, 3, 7, 5), (None, 3, 9, 7)),
    (lambda: layers.ZeroPadding2D(3), (None, None, 17, 1), (None, None, 23, 1)),
    (lambda: layers.ZeroPadding3D((1, 0, 2)), (None, 3, 5, 7, 2), (None, 5, 5, 11, 2)),
    (lambda: layers.Cropping1D((2, 1)), (None, 7, 3), (None, 4, 3)),
    (lambda: layers.Cropping1D(1), (None, None, 3), (None, None, 3)),
    (lambda: layers.Cropping2D(((1, 2), (0, 3))), (None, 7, 5, 3), (None, 4, 2, 3)),
    (lambda: layers.Cropping2D(1, data_format="channels_first"), (None, 3, 7, None), (None, 3, 5, None)),
    (lambda: layers.Cropping3D(((1, 0), (0, 0), (2, 2))), (None, 3, 5, 7, 2), (None, 2, 5, 3, 2)),
    (lambda: layers.UpSampling1D(3), (None, 7, 2), (None, 21, 2)),
    (lambda: layers.UpSampling1D(2), (None, None, 2), (None, None, 2)),
    (lambda: layers.UpSampling2D((2, 3)), (None, 7, 5, 3), (None, 14, 15, 3)),
    (lambda: layers.UpSampling2D(2, interpolation="bilinear"), (None, None, None, 3), (None, None, None, 3)),
    (lambda: layers.UpSampling2D((3, 1), data_format="channels_first", interpolation="bilinear"),
     (None, 3, 7, 5), (None, 3, 21, 5)),
    (lambda: layers.UpSampling3D(2), (None, 1, 3, 5, 2), (None, 2, 6, 10, 2)),
    (lambda: layers.RepeatVector(4), (None, 7), (None, 4, 7)),
    (lambda: layers.Permute((2, 1)), (None, 7, 3), (None, 3, 7)),
    (lambda: layers.Permute((3, 1, 2)), (None, None, 5, 3), (None, 3, None, 5)),
    (lambda: layers.Identity(), (None, 7), (None, 7)),
])
def test_output_shapes(make, in_shape, out_shape):
    layer = make()
    assert tuple(layer(Input(batch_shape=in_shape)).shape) == out_shape
    assert layer.weights == []


def test_identity_passes_structures_through():
    a, b = Input(shape=(3,)), Input(shape=(2, 5))
    out = layers.Identity()([a, b])
    assert [tuple(t.shape) for t in out] == [(None, 3), (None, 2, 5)]
    model = Model([a, b], out)
    xs = [np.ones((2, 3), "float32"), np.arange(20, dtype="float32").reshape(2, 2, 5)]
    for got, want in zip(model.predict(xs), xs):
        np.testing.assert_array_equal(got, want)


def test_free_sizes_run_at_every_length(rng):
    """One model with free spatial sizes: padding, cropping and both upsamplings at several sizes."""
    inp = Input(shape=(None, None, 2))
    h = layers.ZeroPadding2D(((1, 0), (2, 1)))(inp)
    h = layers.UpSampling2D((2, 3), interpolation="bilinear")(h)
    h = layers.Cropping2D(((0, 1), (2, 0)))(h)
    model = Model(inp, layers.UpSampling2D((1, 2))(h))
    for height, width in ((1, 1), (3, 5), (4, 2)):
        x = rng.standard_normal((1, height, width, 2)).astype("float32")
        fixed = Input(shape=(height, width, 2))
        f = layers.ZeroPadding2D(((1, 0), (2, 1)))(fixed)
        f = layers.UpSampling2D((2, 3), interpolation="bilinear")(f)
        f = layers.Cropping2D(((0, 1), (2, 0)))(f)
        want = Model(fixed, layers.UpSampling2D((1, 2))(f)).predict(x)
        np.testing.assert_allclose(model.predict(x), want, rtol=1e-6, atol=1e-6)


def test_eager_values():
    x = np.arange(6, dtype="float32").reshape(1, 3, 2)
    np.testing.assert_array_equal(layers.ZeroPadding1D((1, 0))(x)[0, :, 0], [0, 0, 2, 4])
    np.testing.assert_array_equal(layers.Cropping1D((1, 1))(x), x[:, 1:2])
    np.testing.assert_array_equal(layers.UpSampling1D(2)(x)[0, :, 1], [1, 1, 3, 3, 5, 5])
    np.testing.assert_array_equal(layers.RepeatVector(2)(x[:, 0]), [[[0, 1], [0, 1]]])
    row = np.array([[[[0.0], [4.0]]]], dtype="float32")  # (1, 1, 2, 1)
    up = layers.UpSampling2D((1, 2), interpolation="bilinear")(row)
    np.testing.assert_allclose(up[0, 0, :, 0], [0.0, 1.0, 3.0, 4.0])


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,error,words", [
    (lambda: layers.ZeroPadding2D((1, 2, 3)), ValueError, ["padding", "2 elements"]),
    (lambda: layers.ZeroPadding2D(((1, 2), (3,))), ValueError, ["2nd entry of padding", "2 integers"]),
    (lambda: layers.ZeroPadding1D(-1), ValueError, ["ZeroPadding1D", ">= 0"]),
    (lambda: layers.ZeroPadding3D("same"), ValueError, ["padding", "3 tuples"]),
    (lambda: layers.ZeroPadding2D(1, data_format="NHWC"), ValueError, ["data_format", "'NHWC'"]),
    (lambda: layers.Cropping2D(-1), ValueError, ["cropping", "negative"]),
    (lambda: layers.Cropping3D((1, 2)), ValueError, ["cropping", "3 elements"]),
    (lambda: layers.UpSampling1D(2.0), TypeError, ["UpSampling1D", "integer"]),
    (lambda: layers.UpSampling1D(0), ValueError, ["positive"]),
    (lambda: layers.UpSampling2D((2, 0)), ValueError, ["size", "> 0"]),
    (lambda: layers.UpSampling2D(interpolation="bicubic"), ValueError, ["'bicubic'", "not supported", "'bilinear'"]),
    (lambda: layers.UpSampling2D(interpolation="lanczos3"), ValueError, ["'lanczos3'"]),
    (lambda: layers.RepeatVector(0), ValueError, ["RepeatVector", "positive"]),
    (lambda: layers.RepeatVector("3"), TypeError, ["RepeatVector", "integer"]),
    (lambda: layers.Permute((1, 3)), ValueError, ["Permute", "consecutive"]),
    (lambda: layers.Permute((0, 1, 2)), ValueError, ["start from 1"]),
])
def test_bad_arguments_are_refused(make, error, words):
    with pytest.raises(error) as info:
        make()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("make,in_shape,words", [
    (lambda: layers.ZeroPadding2D(), (None, 7, 3), ["ZeroPadding2D", "rank 4", "(None, 7, 3)"]),
    (lambda: layers.Cropping1D(), (None, 7, 5, 3), ["Cropping1D", "rank 3"]),
    (lambda: layers.Cropping1D((3, 4)), (None, 7, 3), ["cropping=(3, 4)", "axis 1 has size 7"]),
    (lambda: layers.Cropping2D(((0, 0), (2, 3)), data_format="channels_first"), (None, 3, 7, 5),
     ["axis 3 has size 5"]),
    (lambda: layers.UpSampling3D(), (None, 4, 4, 3), ["UpSampling3D", "rank 5"]),
    (lambda: layers.RepeatVector(3), (None, 4, 3), ["RepeatVector", "rank 2"]),
    (lambda: layers.Permute((2, 1)), (None, 4, 3, 2), ["Permute", "rank 3"]),
])
def test_bad_inputs_are_refused(make, in_shape, words):
    with pytest.raises(ValueError) as info:
        make()(Input(batch_shape=in_shape))
    for word in words:
        assert word in str(info.value)


def test_bilinear_upsampling_of_integers_is_refused():
    with pytest.raises(ValueError, match="needs a float input, got int32"):
        layers.UpSampling2D(interpolation="bilinear")(Input(shape=(3, 3, 1), dtype="int32"))


# ---------------------------------------------------------------------------- against Keras
def _model(layer, kw, shape):
    def build(K):
        inp = K.Input(shape=shape)
        return K.Model(inp, getattr(K.layers, layer)(**kw)(inp))

    return build


PREDICT_CASES = {
    "zero_padding1d": ("ZeroPadding1D", dict(padding=(3, 1)), (7, 3)),
    "zero_padding2d_asymmetric": ("ZeroPadding2D", dict(padding=((1, 2), (0, 3))), (7, 5, 3)),
    "zero_padding2d_channels_first": ("ZeroPadding2D", dict(padding=(2, 1), data_format="channels_first"), (3, 5, 7)),
    "zero_padding3d": ("ZeroPadding3D", dict(padding=((1, 0), 2, (0, 1))), (3, 1, 5, 2)),
    "cropping1d": ("Cropping1D", dict(cropping=(2, 0)), (7, 3)),
    "cropping2d_channels_first": ("Cropping2D", dict(cropping=((1, 2), (0, 1)), data_format="channels_first"),
                                  (3, 7, 5)),
    "cropping3d": ("Cropping3D", dict(cropping=((0, 1), (1, 1), (2, 0))), (3, 5, 7, 2)),
    "up_sampling1d": ("UpSampling1D", dict(size=3), (7, 3)),
    "up_sampling2d_nearest": ("UpSampling2D", dict(size=(3, 2)), (5, 7, 3)),
    "up_sampling2d_bilinear": ("UpSampling2D", dict(size=(2, 3), interpolation="bilinear"), (7, 5, 3)),
    "up_sampling2d_bilinear_channels_first": ("UpSampling2D", dict(size=(3, 4), interpolation="bilinear",
                                                                   data_format="channels_first"), (2, 5, 1)),
    "up_sampling3d_channels_first": ("UpSampling3D", dict(size=(2, 1, 3), data_format="channels_first"), (2, 3, 5, 1)),
    "repeat_vector": ("RepeatVector", dict(n=7), (3,)),
    "permute": ("Permute", dict(dims=(3, 1, 2)), (7, 5, 3)),
    "identity": ("Identity", {}, (7, 3)),
}


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(PREDICT_CASES))
def test_predict_matches_keras_on_every_target(keras, rng, name):
    layer, kw, shape = PREDICT_CASES[name]
    check_predict(keras, _model(layer, kw, shape), normal(shape), rng)


@pytest.mark.keras
def test_free_spatial_sizes_match_keras(keras, rng):
    """Free height and width through padding, bilinear upsampling and cropping into a convolution."""
    def build(K):
        inp = K.Input(shape=(None, None, 3))
        h = K.layers.ZeroPadding2D(((1, 2), (0, 1)))(inp)
        h = K.layers.Conv2D(4, 3, activation="relu")(h)
        h = K.layers.UpSampling2D((2, 3), interpolation="bilinear")(h)
        h = K.layers.Cropping2D(((1, 0), (2, 1)))(h)
        return K.Model(inp, K.layers.UpSampling2D(2)(h))

    def data(rng, n):
        return rng.standard_normal((n, 3 + 2 * n, 7 - 2 * n, 3)).astype("float32")

    check_predict(keras, build, data, rng)


@pytest.mark.keras
def test_bilinear_upsampling_of_free_sizes_down_to_one_matches_keras(keras, rng):
    """Free sizes that are 1 at run time: the edge windows must not go empty (native code refuses
    empty intermediates)."""
    def build(K):
        inp = K.Input(shape=(None, None, 2))
        return K.Model(inp, K.layers.UpSampling2D((3, 2), interpolation="bilinear")(inp))

    def data(rng, n):
        return rng.standard_normal((n, 3 * n - 2, 5 - 2 * n, 2)).astype("float32")

    check_predict(keras, build, data, rng)


@pytest.mark.keras
def test_sequence_model_matches_keras(keras, rng):
    """RepeatVector and Permute around a recurrent layer, with a free sequence length upsampled."""
    def build(K):
        inp = K.Input(shape=(None, 3))
        h = K.layers.UpSampling1D(2)(K.layers.ZeroPadding1D((1, 2))(inp))
        h = K.layers.LSTM(5)(K.layers.Cropping1D((2, 1))(h))
        h = K.layers.RepeatVector(3)(h)
        return K.Model(inp, K.layers.Permute((2, 1))(h))

    def data(rng, n):
        return rng.standard_normal((n, 2 + 3 * n, 3)).astype("float32")

    check_predict(keras, build, data, rng)


@pytest.mark.keras
def test_keras_files_round_trip(keras, rng, tmp_path):
    def build(K):
        inp = K.Input(shape=(5, 7, 3))
        h = K.layers.ZeroPadding2D(((1, 0), (2, 1)), data_format="channels_first")(inp)
        h = K.layers.Conv2D(4, 3, padding="same")(h)
        h = K.layers.UpSampling2D((2, 1), interpolation="bilinear")(h)
        h = K.layers.Cropping2D(((1, 2), (0, 1)))(h)
        h = K.layers.Permute((2, 1, 3))(K.layers.Identity()(h))
        h = K.layers.Reshape((-1, 4))(h)
        h = K.layers.Cropping1D((1, 1))(K.layers.UpSampling1D(2)(h))
        v = K.layers.RepeatVector(2)(K.layers.GlobalAveragePooling1D()(h))
        w = K.layers.ZeroPadding3D(((0, 1), 1, (2, 0)))(K.layers.Reshape((2, 2, 2, 1))(v))
        w = K.layers.Cropping3D(((1, 0), (0, 1), 1))(K.layers.UpSampling3D((1, 2, 1))(w))
        return K.Model(inp, [h, K.layers.ZeroPadding1D(1)(v), w])

    loaded = check_keras_file(keras, build, normal((5, 7, 3)), rng, tmp_path)
    names = [type(layer).__name__ for layer in loaded.layers]
    for cls in ("ZeroPadding2D", "UpSampling2D", "Cropping2D", "Permute", "Identity", "Cropping1D", "UpSampling1D",
                "RepeatVector", "ZeroPadding1D", "ZeroPadding3D", "UpSampling3D", "Cropping3D"):
        assert cls in names


@pytest.mark.keras
def test_sgd_steps_through_the_layers_match_keras(keras, rng):
    """Gradients flow through padding, bilinear upsampling, cropping and permutes as in Keras."""
    import graphc

    def build(K):
        inp = K.Input(shape=(5, 7, 2))
        h = K.layers.ZeroPadding2D(((1, 2), (0, 1)))(inp)
        h = K.layers.Conv2D(3, 3, activation="tanh")(h)
        h = K.layers.UpSampling2D((2, 3), interpolation="bilinear")(h)
        h = K.layers.Cropping2D(((1, 2), (3, 0)))(K.layers.UpSampling2D((1, 2))(h))
        h = K.layers.Conv2D(2, 3, strides=2)(h)
        h = K.layers.Permute((3, 1, 2))(h)
        h = K.layers.RepeatVector(2)(K.layers.Flatten()(h))
        h = K.layers.UpSampling1D(2)(K.layers.ZeroPadding1D((1, 0))(h))
        return K.Model(inp, K.layers.Dense(1)(K.layers.Flatten()(K.layers.Cropping1D((0, 1))(h))))

    model, kmodel = build(graphc), build(keras)
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.05), loss="mse")
    kmodel.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    for step in range(2):
        x = rng.standard_normal((3, 5, 7, 2)).astype("float32")
        y = rng.standard_normal((3, 1)).astype("float32")
        loss, kloss = model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
        assert np.isclose(loss, kloss, rtol=1e-5, atol=1e-6), f"step {step}: loss {loss} vs Keras {kloss}"
        for got, want, var in zip(model.get_weights(), kmodel.get_weights(), model.weights):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6, err_msg=f"step {step}: {var.path}")
