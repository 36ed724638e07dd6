"""Preprocessing layers inside models (Rescaling, Normalization, Resizing, CenterCrop): configs and
weights as Keras writes them, adapt() as Keras computes it, clear errors, and predictions equal to
Keras's through the reference, ONNX and native targets and through ``.keras`` files."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from tests.keras_parity import check_keras_file, check_predict


def normal(shape):
    def data(rng, n):
        return rng.standard_normal((n,) + shape).astype("float32")

    return data


def pixels(shape, dtype="float32"):
    def data(rng, n):
        return rng.integers(0, 256, size=(n,) + shape).astype(dtype)

    return data


# ---------------------------------------------------------------------------- configs
@pytest.mark.keras
@pytest.mark.parametrize("make", [
    lambda L: L.Rescaling(1 / 255),
    lambda L: L.Rescaling([1.0, 2.0, 3.0], offset=[0.0, -1.0, 0.5]),
    lambda L: L.Normalization(),
    lambda L: L.Normalization(axis=None, mean=2.0, variance=3.0),
    lambda L: L.Normalization(axis=(1, -1), mean=[[1.0, 2.0]], variance=[[3.0, 4.0]], invert=True),
    lambda L: L.Resizing(3, 7),
    lambda L: L.Resizing(5, 2, interpolation="nearest", pad_to_aspect_ratio=True, fill_value=0.5,
                         data_format="channels_first"),
    lambda L: L.CenterCrop(3, 1),
])
def test_configs_equal_keras(keras, make):
    ours = make(graphc.layers).get_config()
    theirs = make(keras.layers).get_config()
    for key in ("name", "dtype", "trainable"):
        ours.pop(key)
        theirs.pop(key)
    assert ours == theirs
    layer = make(graphc.layers)
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.keras
def test_numpy_scale_from_a_keras_config(keras):
    """Keras writes an array argument as a ``__numpy__`` dict."""
    config = keras.layers.Rescaling(np.array([0.5, 2.0], "float32")).get_config()
    assert config["scale"]["class_name"] == "__numpy__"
    layer = layers.Rescaling(scale=config["scale"])
    np.testing.assert_array_equal(layer(np.ones((1, 2), "float32")), [[0.5, 2.0]])


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("make,in_shape,out_shape", [
    (lambda: layers.Rescaling(0.5), (None, None, 3), (None, None, 3)),
    (lambda: layers.Normalization(mean=1.0, variance=4.0), (None, None, 3), (None, None, 3)),
    (lambda: layers.Normalization(axis=1), (None, 5, None), (None, 5, None)),
    (lambda: layers.Resizing(4, 9), (None, 7, 5, 3), (None, 4, 9, 3)),
    (lambda: layers.Resizing(4, 9, data_format="channels_first"), (None, 3, 7, 5), (None, 3, 4, 9)),
    (lambda: layers.CenterCrop(3, 5), (None, 7, 5, 1), (None, 3, 5, 1)),
    (lambda: layers.CenterCrop(9, 2), (None, 7, 5, 1), (None, 9, 2, 1)),
    (lambda: layers.Resizing(4, 9, interpolation="nearest"), (None, None, None, 3), (None, 4, 9, 3)),
])
def test_output_shapes(make, in_shape, out_shape):
    assert tuple(make()(Input(batch_shape=in_shape)).shape) == out_shape


def test_normalization_weights_follow_keras():
    norm = layers.Normalization(axis=(1, 2))
    norm(Input(shape=(3, 5, 7)))
    assert [(w.name, w.shape, w.dtype, w.trainable) for w in norm.weights] == [
        ("mean", (3, 5), "float32", False), ("variance", (3, 5), "float32", False), ("count", (), "int32", False)]
    given = layers.Normalization(mean=[1.0, 2.0], variance=[1.0, 1.0])
    given(Input(shape=(2,)))
    assert given.weights == []


# ---------------------------------------------------------------------------- adapt
@pytest.mark.keras
@pytest.mark.parametrize("axis,shape", [(-1, (11, 3)), ((1, 2), (9, 3, 4)), (None, (7, 2)), (1, (13, 5, 2))])
def test_adapt_on_an_array_equals_keras(keras, rng, axis, shape):
    data = rng.uniform(-2, 5, size=shape).astype("float32")
    ours, theirs = layers.Normalization(axis=axis), keras.layers.Normalization(axis=axis)
    ours.adapt(data)
    theirs.adapt(data)
    for got, want in zip(ours.get_weights(), theirs.get_weights()):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours(data), keras.ops.convert_to_numpy(theirs(data)), rtol=1e-5, atol=1e-5)


def test_adapt_on_batches_equals_adapt_on_their_concatenation(rng):
    """Keras folds batch moments into running ones (its iterable path needs TensorFlow to run, so the
    reference here is the moments of all the data at once, which the folding reproduces)."""
    batches = [rng.normal(3.0, 2.0, size=(n, 4, 2)).astype("float32") for n in (5, 1, 7)]
    by_batch, at_once = layers.Normalization(axis=-1, invert=True), layers.Normalization(axis=-1, invert=True)
    by_batch.adapt(iter(batches))
    at_once.adapt(np.concatenate(batches))
    for got, want in zip(by_batch.get_weights(), at_once.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    by_batch.adapt([(b, None) for b in batches])  # (x, y) batches: x is used
    np.testing.assert_allclose(by_batch.get_weights()[1], at_once.get_weights()[1], rtol=1e-5)


def test_adapt_values_and_use_in_a_model(rng):
    data = rng.normal(5.0, 3.0, size=(200, 3)).astype("float32")
    norm = layers.Normalization()
    norm.adapt(data)
    np.testing.assert_allclose(norm.get_weights()[0], data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.get_weights()[1], data.var(0), rtol=1e-5)
    inp = Input(shape=(3,))
    out = Model(inp, norm(inp)).predict(data)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-4)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,error,words", [
    (lambda: layers.Rescaling("half"), ValueError, ["Rescaling", "scale"]),
    (lambda: layers.Normalization(mean=1.0), ValueError, ["both `mean` and `variance`"]),
    (lambda: layers.Normalization(mean=[1.0, 2.0], variance=[1.0]), ValueError, ["same shape"]),
    (lambda: layers.Normalization(axis=-1, mean=[[1.0]], variance=[[1.0]]), ValueError, ["rank of `mean`"]),
    (lambda: layers.Normalization(axis="last"), ValueError, ["axis"]),
    (lambda: layers.Resizing(3, 4, interpolation="bicubic"), ValueError, ["'bicubic'", "not supported", "'bilinear'"]),
    (lambda: layers.Resizing(3, 4, interpolation="lanczos5"), ValueError, ["'lanczos5'"]),
    (lambda: layers.Resizing(3, 4, interpolation="area"), ValueError, ["'area'"]),
    (lambda: layers.Resizing(3, 4, antialias=True), ValueError, ["antialias"]),
    (lambda: layers.Resizing(3, 4, fill_mode="reflect"), ValueError, ["fill_mode", "'reflect'"]),
    (lambda: layers.Resizing(3, 4, crop_to_aspect_ratio=True, pad_to_aspect_ratio=True), ValueError,
     ["only one of"]),
    (lambda: layers.Resizing(0, 4), ValueError, ["height", "positive"]),
    (lambda: layers.Resizing(3, 4, bounding_box_format="xyxy"), ValueError, ["bounding_box_format"]),
    (lambda: layers.CenterCrop(3, 2.5), ValueError, ["CenterCrop", "width"]),
    (lambda: layers.CenterCrop(3, 3, data_format="NCHW"), ValueError, ["data_format"]),
])
def test_bad_arguments_are_refused(make, error, words):
    with pytest.raises(error) as info:
        make()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("make,in_shape,dtype,words", [
    (lambda: layers.Resizing(3, 3, crop_to_aspect_ratio=True), (None, None, 5, 3), "float32",
     ["Resizing", "known height and width", "crop_to_aspect_ratio"]),
    (lambda: layers.Resizing(3, 3, pad_to_aspect_ratio=True), (None, 5, None, 3), "float32", ["pad_to_aspect_ratio"]),
    (lambda: layers.CenterCrop(3, 3), (None, 7, None, 3), "float32", ["CenterCrop", "known height and width"]),
    (lambda: layers.Resizing(3, 3), (None, 7, 5), "float32", ["rank 4"]),
    (lambda: layers.Resizing(3, 3), (None, 7, 5, 3), "int32", ["bilinear", "float", "int32"]),
    (lambda: layers.Normalization(axis=3), (None, 7, 5), "float32", ["axis"]),
    (lambda: layers.Normalization(axis=1), (None, None, 5), "float32", ["known size", "axis 1"]),
])
def test_bad_inputs_are_refused(make, in_shape, dtype, words):
    with pytest.raises(ValueError) as info:
        make()(Input(batch_shape=in_shape, dtype=dtype))
    for word in words:
        assert word in str(info.value)


def test_adapt_errors(rng):
    with pytest.raises(ValueError, match="was given mean and variance"):
        layers.Normalization(mean=0.0, variance=1.0).adapt(np.ones((3, 2), "float32"))
    norm = layers.Normalization()
    norm.adapt(np.ones((3, 2), "float32"))
    with pytest.raises(ValueError, match=r"built for inputs of shape \(3, 2\)"):
        norm.adapt(np.ones((3, 4), "float32"))
    with pytest.raises(ValueError, match="empty iterable"):
        layers.Normalization().adapt([])
    with pytest.raises(ValueError, match="kept axis"):
        norm(Input(shape=(5,)))


# ---------------------------------------------------------------------------- against Keras
def _model(layer, kw, shape, dtype="float32"):
    def build(K):
        inp = K.Input(shape=shape, dtype=dtype)
        return K.Model(inp, getattr(K.layers, layer)(**kw)(inp))

    return build


PREDICT_CASES = {
    "rescaling": ("Rescaling", dict(scale=1 / 127.5, offset=-1.0), (7, 5, 3), pixels((7, 5, 3))),
    "rescaling_per_channel_int_input": ("Rescaling", dict(scale=[0.5, 2.0, -1.0], offset=[1.0, 0.0, 3.0]),
                                        (5, 3), pixels((5, 3), "int32")),
    "normalization_given": ("Normalization", dict(mean=[1.0, -2.0, 0.5], variance=[4.0, 0.25, 1e-16]), (7, 3), None),
    "normalization_given_scalar_axes": ("Normalization", dict(axis=(1, 2), mean=3.0, variance=2.0), (3, 5, 2), None),
    "normalization_given_inverted": ("Normalization", dict(axis=1, mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0],
                                                           invert=True), (3, 7), None),
    "normalization_adapted_state": ("Normalization", dict(axis=(-1,)), (5, 3), None),
    "normalization_axis_none": ("Normalization", dict(axis=None), (7,), None),
    "resizing_bilinear_up_and_down": ("Resizing", dict(height=4, width=11), (7, 5, 3), None),
    "resizing_bilinear_odd_ratios": ("Resizing", dict(height=17, width=3), (5, 7, 2), None),
    "resizing_nearest": ("Resizing", dict(height=5, width=3, interpolation="nearest"), (7, 17, 2), None),
    "resizing_nearest_int_pad": ("Resizing", dict(height=9, width=4, interpolation="nearest",
                                                  pad_to_aspect_ratio=True, fill_value=7.0), (5, 7, 1),
                                 pixels((5, 7, 1), "int32")),
    "resizing_crop_to_aspect_ratio": ("Resizing", dict(height=3, width=7, crop_to_aspect_ratio=True), (7, 5, 2),
                                      None),
    "resizing_pad_channels_first": ("Resizing", dict(height=5, width=3, pad_to_aspect_ratio=True, fill_value=-1.5,
                                                     data_format="channels_first"), (2, 3, 7), None),
    "center_crop": ("CenterCrop", dict(height=3, width=4), (7, 5, 3), None),
    "center_crop_smaller_input": ("CenterCrop", dict(height=9, width=3), (7, 5, 2), None),
    "center_crop_channels_first_int": ("CenterCrop", dict(height=5, width=1, data_format="channels_first"),
                                       (2, 7, 3), pixels((2, 7, 3), "int32")),
}


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(PREDICT_CASES))
def test_predict_matches_keras_on_every_target(keras, rng, name):
    layer, kw, shape, data = PREDICT_CASES[name]
    dtype = "int32" if name.endswith("int_input") or "_int" in name else "float32"
    check_predict(keras, _model(layer, kw, shape, dtype), data or normal(shape), rng)


@pytest.mark.keras
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_resizing_images_of_free_size_matches_keras(keras, rng, interpolation):
    """One compiled model resizes images of any size (the tables are computed once the size is bound)."""
    def build(K):
        inp = K.Input(shape=(None, None, 2))
        return K.Model(inp, K.layers.Resizing(5, 7, interpolation=interpolation)(inp))

    def data(rng, n):
        return rng.standard_normal((n, 1 + 8 * (n - 1), 11 - 7 * (n - 1), 2)).astype("float32")

    check_predict(keras, build, data, rng)


@pytest.mark.keras
def test_preprocessing_in_front_of_a_network_matches_keras(keras, rng):
    """EfficientNet's stem: Rescaling, adapted Normalization, a stride-2 convolution behind zero padding."""
    def build(K):
        inp = K.Input(shape=(17, 13, 3))
        h = K.layers.Resizing(9, 11)(inp)
        h = K.layers.Rescaling(1 / 255)(h)
        h = K.layers.Normalization()(h)
        h = K.layers.Rescaling([1 / 0.229, 1 / 0.224, 1 / 0.225])(h)
        h = K.layers.ZeroPadding2D(((0, 1), (0, 1)))(h)
        h = K.layers.Conv2D(4, 3, strides=2, activation="relu")(h)
        return K.Model(inp, K.layers.CenterCrop(3, 3)(h))

    check_predict(keras, build, pixels((17, 13, 3)), rng)


@pytest.mark.keras
def test_keras_files_round_trip(keras, rng, tmp_path):
    def build(K):
        inp = K.Input(shape=(7, 5, 3))
        h = K.layers.Rescaling(np.array([0.5, 1.0, 2.0], "float32"), offset=-1.0)(inp)
        h = K.layers.Normalization(axis=(2, 3))(h)
        h = K.layers.Normalization(mean=[0.5, 1.0, 1.5], variance=[1.0, 2.0, 3.0], invert=True)(h)
        h = K.layers.Resizing(6, 3, crop_to_aspect_ratio=True)(h)
        return K.Model(inp, K.layers.CenterCrop(4, 3)(h))

    loaded = check_keras_file(keras, build, normal((7, 5, 3)), rng, tmp_path)
    assert [type(layer).__name__ for layer in loaded.layers[1:]] == [
        "Rescaling", "Normalization", "Normalization", "Resizing", "CenterCrop"]


@pytest.mark.keras
def test_keras_adapted_normalization_loads_from_its_file(keras, rng, tmp_path):
    """As in keras.applications.EfficientNetB0: mean=None/variance=None in the config, the adapted
    state in the weights file."""
    data = rng.normal(2.0, 3.0, size=(50, 5, 3)).astype("float32")
    keras.utils.clear_session(free_memory=False)
    inp = keras.Input(shape=(5, 3))
    norm = keras.layers.Normalization()
    norm.adapt(data)
    kmodel = keras.Model(inp, keras.layers.Dense(2)(norm(inp)))
    path = tmp_path / "adapted.keras"
    kmodel.save(path)
    model = graphc.models.load_model(path)
    loaded = model.layers[1]
    assert isinstance(loaded, layers.Normalization) and loaded.input_mean is None
    np.testing.assert_allclose(loaded.get_weights()[0], data.reshape(-1, 3).mean(0), rtol=1e-5)
    want = kmodel.predict(data[:3], verbose=0)
    for target in ("reference", "onnx", "native"):
        got = graphc.build(model, target=target).predict(data[:3])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=target)


@pytest.mark.keras
def test_sgd_steps_behind_preprocessing_match_keras(keras, rng):
    """Training a network behind the preprocessing layers: the same updates as Keras, and the
    Normalization state (non-trainable) stays as it was."""
    def build(K):
        inp = K.Input(shape=(9, 7, 3))
        h = K.layers.Rescaling([0.5, 1.0, 2.0], offset=0.1)(inp)
        h = K.layers.Normalization(axis=-1)(h)
        h = K.layers.Resizing(5, 11)(h)
        h = K.layers.CenterCrop(4, 9)(h)
        h = K.layers.Conv2D(3, 3, activation="relu")(h)
        h = K.layers.Normalization(mean=[0.5, 0.0, 1.0], variance=[2.0, 1.0, 0.5], invert=True)(h)
        return K.Model(inp, K.layers.Dense(2)(K.layers.GlobalAveragePooling2D()(h)))

    model, kmodel = build(graphc), build(keras)
    model.layers[2].adapt(rng.normal(1.0, 2.0, size=(20, 9, 7, 3)).astype("float32"))
    kmodel.set_weights(model.get_weights())
    state = [w.copy() for w in model.layers[2].get_weights()]
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.1), loss="mse")
    kmodel.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    for step in range(2):
        x = rng.standard_normal((4, 9, 7, 3)).astype("float32")
        y = rng.standard_normal((4, 2)).astype("float32")
        loss, kloss = model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
        assert np.isclose(loss, kloss, rtol=1e-5, atol=1e-6), f"step {step}: loss {loss} vs Keras {kloss}"
        for got, want, var in zip(model.get_weights(), kmodel.get_weights(), model.weights):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6, err_msg=f"step {step}: {var.path}")
    for got, want in zip(model.layers[2].get_weights(), state):
        np.testing.assert_array_equal(got, want)


@pytest.mark.keras
def test_masks_pass_through_as_in_keras(keras, rng):
    """Rescaling, Normalization and Identity carry the mask of padded sequences on to the LSTM."""
    def build(K):
        inp = K.Input(shape=(None,), dtype="int32")
        h = K.layers.Embedding(9, 3, mask_zero=True)(inp)
        h = K.layers.Rescaling(2.0, offset=-0.5)(h)
        h = K.layers.Normalization(mean=[0.5, 1.0, -1.0], variance=[1.0, 4.0, 2.0])(h)
        h = K.layers.Identity()(K.layers.Normalization()(h))
        return K.Model(inp, K.layers.LSTM(4)(h))

    def data(rng, n):
        ids = rng.integers(1, 9, size=(n, 7)).astype("int32")
        ids[:, 5:] = 0
        ids[0, 3:] = 0
        return ids

    check_predict(keras, build, data, rng)
