"""Keras 3 <-> graphc through files: Keras saves, graphc loads (and the reverse), same predictions.

Every architecture is written once against a Keras-compatible library (``K`` is ``keras`` or
``graphc``), so the same code builds both twins. Besides predictions, the weights files the
two libraries write for the same architecture must list the same datasets with the same
shapes: that pins graphc's HDF5 layout to Keras's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphc
from graphc import models
from graphc.frontend import state
from graphc.saving import supported_keras_layers
from graphc.saving.layout import keras_layer_order
from tests.programs.seed_models import SEED_MODELS
from tests.programs.test_seed_models import KERAS_POOL_EDGE_BUG
from tests.saving.helpers import as_list, assert_same_outputs, randomize, read_members, weight_listing

pytestmark = pytest.mark.keras


# ---------------------------------------------------------------------- architectures
def dense_zoo(K):
    """Rank-2 layers, merges, shared layers and dict outputs."""
    L = K.layers
    a = K.Input(shape=(6,), name="a")
    b = K.Input(shape=(6,), name="b")
    shared = L.Dense(6, activation="tanh", use_bias=False, name="shared")
    sa, sb = shared(a), shared(b)
    x = L.concatenate([L.add([sa, sb]), L.subtract([sa, sb]), L.multiply([sa, sb]), L.average([sa, sb]),
                       L.maximum([sa, sb]), L.minimum([sa, sb]), L.Dot(axes=1, normalize=True)([sa, sb])])
    x = L.Dense(12, kernel_initializer="he_normal", bias_initializer="ones")(x)
    x = L.BatchNormalization(momentum=0.9, epsilon=1e-3)(x)
    x = L.Activation("relu")(x)
    x = L.Dropout(0.3)(x)
    x = L.LayerNormalization(epsilon=1e-5)(x)
    y = L.Reshape((3, 4))(x)
    y = L.Flatten()(y)
    return K.Model([a, b], {"sum": L.Dense(1, name="sum")(y), "probs": L.Dense(3, activation="softmax")(x)})


def sequence_zoo(K):
    """Rank-3 layers: 1-D convolutions and pooling, recurrent layers, TimeDistributed."""
    L = K.layers
    inp = K.Input(shape=(12, 4))
    c = L.Conv1D(5, 3, strides=1, padding="same", activation="relu", dilation_rate=2)(inp)
    c = L.SeparableConv1D(6, 3, depth_multiplier=2, padding="valid")(c)
    c = L.DepthwiseConv1D(3, depth_multiplier=1, padding="same")(c)
    c = L.MaxPooling1D(2, padding="same")(c)
    c = L.AveragePooling1D(2)(c)
    g = L.concatenate([L.GlobalMaxPooling1D()(c), L.GlobalAveragePooling1D()(c)])
    s = L.LSTM(5, return_sequences=True, go_backwards=True)(inp)
    s = L.GRU(4, return_sequences=True, recurrent_activation="hard_sigmoid")(s)
    s = L.TimeDistributed(L.Dense(3, activation="relu"))(s)
    r = L.SimpleRNN(3, activation="relu")(s)
    lstm_out, h, cstate = L.LSTM(2, return_state=True, unit_forget_bias=False)(inp)
    return K.Model(inp, [g, r, L.concatenate([lstm_out, h, cstate])])


def image_zoo(K):
    """Rank-4 and rank-5 layers: 2-D/3-D convolutions and pooling."""
    L = K.layers
    img = K.Input(shape=(9, 9, 3))
    x = L.Conv2D(4, (3, 2), strides=(2, 1), padding="same", activation="relu")(img)
    x = L.SeparableConv2D(5, 3, padding="same", use_bias=False)(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2)(x)
    x = L.MaxPooling2D(2, strides=1, padding="same")(x)
    x = L.AveragePooling2D(2)(x)
    img_out = L.concatenate([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    vol = K.Input(shape=(4, 5, 6, 2))
    v = L.Conv3D(3, 2, activation="sigmoid")(vol)
    v = L.MaxPooling3D(2, padding="same")(v)
    v = L.AveragePooling3D(1)(v)
    vol_out = L.concatenate([L.GlobalAveragePooling3D()(v), L.GlobalMaxPooling3D()(v)])
    return K.Model([img, vol], [img_out, vol_out])


def nested(K):
    """A functional model called twice and a Sequential inside another model."""
    L = K.layers
    inner_in = K.Input(shape=(4,))
    inner = K.Model(inner_in, L.Dense(3, activation="relu")(inner_in), name="inner")
    stack = K.Sequential([K.Input(shape=(3,)), L.Dense(5), L.Dense(2)], name="stack")
    x = K.Input(shape=(4,), name="x")
    first = inner(x)
    second = inner(L.Dense(4)(x))
    return K.Model(x, [stack(first), L.subtract([first, second]), second])


def sequential_input_shape(K):
    return K.Sequential([K.layers.Dense(4, activation="relu", input_shape=(6,)), K.layers.Dense(2)])


def sequential_input(K):
    return K.Sequential([K.Input(shape=(None, 6)), K.layers.Embedding(7, 3), K.layers.Flatten()]) \
        if False else K.Sequential([K.Input(shape=(8,), dtype="int32"), K.layers.Embedding(20, 3),
                                    K.layers.Flatten(), K.layers.Dense(2)])


ZOO = {"dense_zoo": dense_zoo, "sequence_zoo": sequence_zoo, "image_zoo": image_zoo, "nested": nested,
       "sequential_input_shape": sequential_input_shape, "sequential_input": sequential_input}


def zoo_data(model, rng, n=3):
    arrays = []
    for t in model.inputs:
        shape = (n,) + tuple(t.shape[1:])
        if "int" in str(t.dtype):
            arrays.append(rng.integers(0, 20, size=shape).astype(np.int32))
        else:
            arrays.append(rng.normal(size=shape).astype(np.float32))
    return arrays[0] if len(arrays) == 1 else arrays


def keras_randomize(model, rng):
    weights = []
    for w in model.weights:
        if "variance" in w.path:
            weights.append(rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32))
        else:
            scale = np.float32(1.0 / np.sqrt(max(1, int(np.prod(w.shape[:-1])))))
            weights.append(rng.standard_normal(tuple(w.shape), dtype=np.float32) * scale)
    model.set_weights(weights)


def twins(keras, builder):
    state.clear_session()
    keras.utils.clear_session(free_memory=False)
    gmodel = builder(graphc)
    kmodel = builder(keras)
    return gmodel, kmodel


def compare(got, want, name, pool_edge=None):
    if pool_edge is not None:
        got = [np.delete(g, np.r_[pool_edge], axis=-1) for g in as_list(got)]
        want = [np.delete(np.asarray(w), np.r_[pool_edge], axis=-1) for w in as_list(want)]
    assert_same_outputs(got, want, rtol=1e-4, atol=1e-5, what=name)


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_both_ways(name, keras, tmp_path, rng):
    gmodel, kmodel = twins(keras, ZOO[name])
    keras_randomize(kmodel, rng)
    randomize(gmodel, rng)
    x = zoo_data(kmodel, rng)
    kmodel.save(tmp_path / "k.keras")
    gmodel.save(tmp_path / "g.keras")
    k_listing = weight_listing(read_members(tmp_path / "k.keras")["model.weights.h5"])
    assert weight_listing(read_members(tmp_path / "g.keras")["model.weights.h5"]) == k_listing

    from_keras_file = models.load_model(tmp_path / "k.keras")
    assert [lay.name for lay in keras_layer_order(from_keras_file)] == [lay.name for lay in kmodel.layers]
    compare(from_keras_file.predict(x), kmodel.predict(x, verbose=0), f"{name}: Keras file in graphc")

    from_graphc_file = keras.saving.load_model(tmp_path / "g.keras")
    assert [lay.name for lay in from_graphc_file.layers] == [lay.name for lay in keras_layer_order(gmodel)]
    compare(from_graphc_file.predict(x, verbose=0), gmodel.predict(x), f"{name}: graphc file in Keras")


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_models_both_ways(name, keras, tmp_path, rng):
    builder, _, lengths = SEED_MODELS[name]
    gmodel, kmodel = twins(keras, lambda K: builder(K)[0])
    _, data = builder(graphc)
    keras_randomize(kmodel, rng)
    randomize(gmodel, rng)
    kmodel.save(tmp_path / "k.keras")
    gmodel.save(tmp_path / "g.keras")
    assert weight_listing(read_members(tmp_path / "g.keras")["model.weights.h5"]) == \
        weight_listing(read_members(tmp_path / "k.keras")["model.weights.h5"])
    x = data(rng, 2) if lengths is None else data(rng, 2, lengths[-1])
    edge = KERAS_POOL_EDGE_BUG.get(name)
    compare(models.load_model(tmp_path / "k.keras").predict(x), kmodel.predict(x, verbose=0), name, edge)
    compare(keras.saving.load_model(tmp_path / "g.keras").predict(x, verbose=0), gmodel.predict(x), name, edge)


def _stereo(K, size=250):
    base = K.applications.Xception(weights=None, include_top=False)
    left, right = K.Input(shape=(size, size, 3)), K.Input(shape=(size, size, 3))
    return K.Model([left, right], K.layers.concatenate([base(left), base(right)], axis=-1))


@pytest.mark.slow
def test_stereo_xception_both_ways(keras, tmp_path, rng):
    """The dual-camera model of the seed programs, predicting at Xception's smallest input size.

    The weights and the layer structure do not depend on the image size: the seed program's
    250x250 graphc model is checked against the same Keras file at the end.
    """
    keras.utils.clear_session(free_memory=False)
    kmodel = _stereo(keras, 71)
    keras_randomize(kmodel, rng)
    kmodel.save(tmp_path / "k.keras")
    loaded = models.load_model(tmp_path / "k.keras")
    assert loaded.count_params() == kmodel.count_params() == 20861480
    assert [lay.name for lay in loaded.layers] == [lay.name for lay in kmodel.layers]
    kbase = kmodel.get_layer("xception")
    assert [lay.name for lay in loaded.get_layer("xception").layers] == [lay.name for lay in kbase.layers]
    x = [rng.random((1, 71, 71, 3), dtype=np.float32) for _ in range(2)]
    compare(loaded.predict(x), kmodel.predict(x, verbose=0), "stereo Xception: Keras file in graphc")

    loaded.save(tmp_path / "g.keras")
    assert weight_listing(read_members(tmp_path / "g.keras")["model.weights.h5"]) == \
        weight_listing(read_members(tmp_path / "k.keras")["model.weights.h5"])
    back = keras.saving.load_model(tmp_path / "g.keras")
    for a, b in zip(back.get_layer("xception").layers, kbase.layers, strict=True):
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb), err_msg=a.name)

    state.clear_session()
    stereo = _stereo(graphc)
    assert stereo.count_params() == 20861480
    assert [lay.name for lay in stereo.get_layer("xception").layers] == [lay.name for lay in kbase.layers]
    stereo.load_weights(tmp_path / "k.keras")
    for a, b in zip(stereo.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_compile_config_and_optimizer_state_through_keras(keras, tmp_path, rng):
    inp = keras.Input(shape=(5,))
    kmodel = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(4)(inp)))
    kmodel.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="binary_crossentropy",
                   metrics=["accuracy"], loss_weights=[0.5])
    kmodel.fit(rng.normal(size=(8, 5)), rng.integers(0, 2, size=(8, 1)), epochs=2, verbose=0)
    kmodel.save(tmp_path / "k.keras")
    loaded = models.load_model(tmp_path / "k.keras")
    assert loaded.compiled and loaded._compile_config["loss"] == "binary_crossentropy"
    assert loaded._compile_config["optimizer"]["class_name"] == "Adam"
    loaded.save(tmp_path / "g.keras")
    k_config = json.loads(read_members(tmp_path / "k.keras")["config.json"])["compile_config"]
    g_config = json.loads(read_members(tmp_path / "g.keras")["config.json"])["compile_config"]
    assert g_config == k_config
    assert loaded.optimizer.iterations == 2  # Keras's optimizer state, now graphc's
    back = keras.saving.load_model(tmp_path / "g.keras")
    assert int(back.optimizer.iterations.numpy()) == 2
    for a, b in zip(back.optimizer.variables, kmodel.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    assert back.optimizer.learning_rate.numpy() == pytest.approx(0.01)


def test_graphc_training_resumes_in_keras(keras, tmp_path, rng):
    x = rng.normal(size=(16, 5)).astype(np.float32)
    y = rng.integers(0, 2, size=(16, 1)).astype(np.float32)
    inp = graphc.Input(shape=(5,))
    model = graphc.Model(inp, graphc.layers.Dense(1, activation="sigmoid")(graphc.layers.Dense(4)(inp)))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "g.keras")
    back = keras.saving.load_model(tmp_path / "g.keras")
    assert int(back.optimizer.iterations.numpy()) == 4
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    back.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for layer in model.layers:
        for g, k in zip(layer.get_weights(), back.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_allclose(g, np.asarray(k), rtol=1e-5, atol=1e-6, err_msg=layer.name)


def test_graphc_compile_config_loads_in_keras(keras, tmp_path):
    inp = graphc.Input(shape=(3,))
    model = graphc.Model(inp, graphc.layers.Dense(1, activation="sigmoid")(inp))
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
    model.save(tmp_path / "g.keras")
    back = keras.saving.load_model(tmp_path / "g.keras")
    assert type(back.optimizer).__name__ == "RMSprop"
    assert back.loss == "binary_crossentropy"


def test_weights_files_both_ways(keras, tmp_path, rng):
    gmodel, kmodel = twins(keras, dense_zoo)
    keras_randomize(kmodel, rng)
    kmodel.save_weights(tmp_path / "k.weights.h5")
    gmodel.load_weights(tmp_path / "k.weights.h5")

    def assert_same_weights():
        for glayer in gmodel.layers:
            for g, k in zip(glayer.get_weights(), kmodel.get_layer(glayer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(g, np.asarray(k), err_msg=glayer.name)

    assert_same_weights()
    randomize(gmodel, rng)
    gmodel.save_weights(tmp_path / "g.weights.h5")
    kmodel.load_weights(tmp_path / "g.weights.h5")
    assert_same_weights()


def test_from_keras_imports_a_live_model(keras, rng):
    keras.utils.clear_session(free_memory=False)
    kmodel = nested(keras)
    keras_randomize(kmodel, rng)
    kmodel.compile(optimizer="adam", loss="mse")
    model = graphc.from_keras(kmodel)
    assert isinstance(model, graphc.Model) and model.compiled
    x = zoo_data(kmodel, rng)
    compare(model.predict(x), kmodel.predict(x, verbose=0), "from_keras")
    with pytest.raises(TypeError, match="imports a keras.Model, got Dense"):
        graphc.from_keras(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="is not built yet"):
        graphc.from_keras(keras.Sequential([keras.layers.Dense(2)]))


def test_from_keras_unsupported_layer_names_class_and_path(keras):
    keras.utils.clear_session(free_memory=False)
    inner_in = keras.Input(shape=(4,))
    inner = keras.Model(inner_in, keras.layers.Discretization(bin_boundaries=[0.0], name="noise")(inner_in),
                        name="encoder")
    x = keras.Input(shape=(4,))
    kmodel = keras.Model(x, inner(x), name="outer")
    with pytest.raises(graphc.saving.UnsupportedKerasError,
                       match=r"Keras layer class 'Discretization' \(layer 'outer/encoder/noise'\)"):
        graphc.from_keras(kmodel)


def test_keras_get_config_into_graphc_from_config(keras, rng):
    gmodel, kmodel = twins(keras, nested)
    config = kmodel.get_config()
    clone = graphc.Model.from_config(config)
    keras_randomize(kmodel, rng)
    clone.set_weights([np.asarray(w) for w in kmodel.get_weights()])
    x = zoo_data(kmodel, rng)
    compare(clone.predict(x), kmodel.predict(x, verbose=0), "Keras get_config -> graphc from_config")
    back = keras.Model.from_config(json.loads(json.dumps(gmodel.get_config())))
    assert [lay.name for lay in back.layers] == [lay.name for lay in gmodel.layers]


def test_supported_layers_cover_the_zoo():
    names = set(supported_keras_layers())
    used = {"Dense", "Activation", "Dropout", "Reshape", "Flatten", "Embedding", "BatchNormalization",
            "LayerNormalization", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
            "Dot", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D",
            "DepthwiseConv2D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
            "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
            "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "LSTM", "GRU",
            "SimpleRNN", "TimeDistributed", "InputLayer", "Functional", "Sequential"}
    assert used <= names, used - names


def test_layer_from_config_takes_keras_configs(keras):
    L = keras.layers
    for klayer in (L.Dense(3, activation="relu"), L.Conv1D(4, 3, padding="causal"), L.GRU(2, go_backwards=True),
                   L.TimeDistributed(L.Dense(2)), L.LayerNormalization(epsilon=1e-4), L.Dot(axes=(1, 2))):
        config = klayer.get_config()
        layer = getattr(graphc.layers, type(klayer).__name__).from_config(config)
        keras_again = type(klayer).from_config(graphc.saving.serialize(layer)["config"])
        as_json = lambda c: json.loads(json.dumps(c))
        assert as_json(keras_again.get_config()) == as_json(config), type(klayer).__name__
