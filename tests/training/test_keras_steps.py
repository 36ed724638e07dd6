"""Training steps compared with Keras 3: same initial weights, same batches, same optimizer.

After one and after three ``train_on_batch`` calls the losses Keras and graphc report and every
weight (BatchNorm moving statistics included) agree to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, layers, optimizers
from graphc.frontend import state

pytestmark = pytest.mark.keras


def _mlp(lib):
    inp = lib.Input(shape=(7,))
    h = lib.layers.Dense(5, activation="relu")(inp)
    h = lib.layers.Dense(4, activation="tanh")(h)
    out = lib.layers.Dense(3, activation="softmax")(h)
    return lib.Model(inp, out)


def _convnet(lib):
    inp = lib.Input(shape=(9, 8, 2))
    h = lib.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    h = lib.layers.SeparableConv2D(5, 2, activation="elu")(h)
    h = lib.layers.MaxPooling2D(2)(h)
    h = lib.layers.Flatten()(h)
    out = lib.layers.Dense(1, activation="sigmoid")(h)
    return lib.Model(inp, out)


def _lstm(lib):
    inp = lib.Input(shape=(None,), dtype="int32")
    h = lib.layers.Embedding(11, 4)(inp)
    h = lib.layers.LSTM(5, return_sequences=True)(h)
    h = lib.layers.GRU(3)(h)
    out = lib.layers.Dense(2)(h)
    return lib.Model(inp, out)


def _batchnorm(lib):
    inp = lib.Input(shape=(6, 3))
    h = lib.layers.Conv1D(4, 3, activation="relu")(inp)
    h = lib.layers.BatchNormalization()(h)
    h = lib.layers.GlobalAveragePooling1D()(h)
    h = lib.layers.Dense(5)(h)
    h = lib.layers.BatchNormalization(momentum=0.9, center=False)(h)
    out = lib.layers.Dense(3, activation="softmax")(h)
    return lib.Model(inp, out)


def _data(kind, rng, n=5):
    if kind == "mlp":
        return rng.standard_normal((n, 7)).astype("float32"), rng.integers(0, 3, size=(n,))
    if kind == "convnet":
        return rng.standard_normal((n, 9, 8, 2)).astype("float32"), rng.integers(0, 2, size=(n, 1)).astype("float32")
    if kind == "zoo":
        return ([rng.standard_normal((n, 6, 4)).astype("float32"), rng.standard_normal((n, 5)).astype("float32")],
                rng.integers(0, 2, size=(n, 2)).astype("float32"))
    if kind == "lstm":
        return rng.integers(0, 11, size=(n, 6)).astype("int32"), rng.standard_normal((n, 2)).astype("float32")
    x = rng.standard_normal((n, 6, 3)).astype("float32") * 2 + 1
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=n)]
    return x, y


CASES = [
    ("zoo", "binary_crossentropy", ("sgd", {"learning_rate": 0.1})),
    ("mlp", "sparse_categorical_crossentropy", ("rmsprop", {})),
    ("mlp", "sparse_categorical_crossentropy", ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True})),
    ("convnet", "binary_crossentropy", ("adam", {"learning_rate": 0.01})),
    ("convnet", "mse", ("rmsprop", {"momentum": 0.5, "centered": True})),
    ("lstm", "mse", ("rmsprop", {})),
    ("lstm", "mae", ("adamw", {"learning_rate": 0.01})),
    ("batchnorm", "categorical_crossentropy", ("sgd", {"learning_rate": 0.05})),
    ("batchnorm", "categorical_crossentropy", ("sgd", {"momentum": 0.5})),
    ("mlp", "sparse_categorical_crossentropy", ("adam", {"clipnorm": 0.1, "amsgrad": True})),
    ("mlp", "sparse_categorical_crossentropy", ("sgd", {"global_clipnorm": 0.05, "momentum": 0.9})),
    ("mlp", "sparse_categorical_crossentropy", ("rmsprop", {"clipvalue": 0.01})),
]
# BatchNormalization with optimizers that normalize the gradient (Adam, RMSprop) is left out: the
# second BatchNormalization cancels the first one's beta, whose true gradient is zero, and those
# optimizers turn its rounding noise into full-size steps of either sign.
def _zoo(lib):
    """Many layer kinds in one model: merges, a nested model, TimeDistributed, pooling, normalization."""
    L = lib.layers
    seq = lib.Input(shape=(6, 4), name="seq")
    vec = lib.Input(shape=(5,), name="vec")
    inner_in = lib.Input(shape=(6, 4))
    inner = lib.Model(inner_in, L.LayerNormalization()(L.TimeDistributed(L.Dense(4, activation="gelu"))(inner_in)))
    h = inner(seq)
    h = L.Add()([h, seq])
    h = L.AveragePooling1D(2, padding="same")(L.DepthwiseConv1D(3, padding="same", activation="softplus")(h))
    h = L.SimpleRNN(5, go_backwards=True)(L.Reshape((3, 4))(h))
    v = L.Dense(5, activation="selu")(vec)
    m = L.Multiply()([h, v])
    d = L.Dot(axes=1, normalize=True)([h, v])
    merged = L.Concatenate()([L.Maximum()([m, v]), L.Subtract()([h, v]), L.Average()([m, h]), d])
    out = L.Dense(2, activation="sigmoid")(L.Activation("swish")(merged))
    return lib.Model([seq, vec], out)


BUILDERS = {"zoo": _zoo, "mlp": _mlp, "convnet": _convnet, "lstm": _lstm, "batchnorm": _batchnorm}
KERAS_OPTIMIZERS = {"rmsprop": "RMSprop", "sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
GRAPHC_OPTIMIZERS = {"rmsprop": optimizers.RMSprop, "sgd": optimizers.SGD, "adam": optimizers.Adam,
                     "adamw": optimizers.AdamW}


class _GraphcLib:
    Input = staticmethod(Input)
    Model = Model
    layers = layers


@pytest.mark.parametrize("kind,loss,opt", CASES, ids=[f"{c[0]}-{c[1]}-{c[2][0]}" for c in CASES])
def test_train_steps_match_keras(keras, kind, loss, opt, rng):
    # initial weights from a seeded generator, so that a failure reproduces (the process-wide one is
    # unseeded, its draws following whatever the process built before): where a weight's gradient is a
    # near-cancellation (a few 1e-7), Adam's first step g / (|g| + eps) turns its rounding into a visible
    # difference, which one draw in CI met (an embedding element 3.6e-6 apart after step 0; 300 seeds
    # of the lstm-mae-adamw case pass)
    state.set_random_seed(0)
    name, kwargs = opt
    g_model = BUILDERS[kind](_GraphcLib)
    k_model = BUILDERS[kind](keras)
    k_model.set_weights(g_model.get_weights())
    g_model.compile(optimizer=GRAPHC_OPTIMIZERS[name](**kwargs), loss=loss)
    k_model.compile(optimizer=getattr(keras.optimizers, KERAS_OPTIMIZERS[name])(**kwargs), loss=loss)
    for step in range(3):
        x, y = _data(kind, rng)
        g_loss = g_model.train_on_batch(x, y)
        k_loss = float(k_model.train_on_batch(x, y))
        assert np.isclose(g_loss, k_loss, rtol=1e-5, atol=1e-6), f"step {step}: loss {g_loss} vs Keras {k_loss}"
        for gw, kw, var in zip(g_model.get_weights(), k_model.get_weights(), g_model.weights):
            np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=f"step {step}: {var.path}")


def test_fit_history_and_evaluate_match_keras(keras, rng):
    """Several epochs of fit (no shuffling) and evaluate: the same losses and accuracies as Keras."""
    x = rng.standard_normal((37, 7)).astype("float32")
    y = rng.integers(0, 3, size=(37,))
    g_model, k_model = _mlp(_GraphcLib), _mlp(keras)
    k_model.set_weights(g_model.get_weights())
    g_model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["acc"])
    k_model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["acc"])
    gh = g_model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, validation_split=0.2)
    kh = k_model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, validation_split=0.2)
    assert list(gh.history) == list(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(gh.history[key], kh.history[key], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(g_model.evaluate(x, y, verbose=0), k_model.evaluate(x, y, verbose=0), rtol=1e-4)


def test_sequential_multi_output_names_match_keras(keras, rng):
    """Per-output loss and metric names in History, in Keras's order."""
    def build(lib):
        inp = lib.Input(shape=(4,), name="x")
        h = lib.layers.Dense(3, activation="relu")(inp)
        a = lib.layers.Dense(1, name="age")(h)
        g = lib.layers.Dense(1, activation="sigmoid", name="gender")(h)
        return lib.Model(inp, [a, g])

    x = rng.standard_normal((10, 4)).astype("float32")
    ys = [rng.standard_normal((10, 1)).astype("float32"), rng.integers(0, 2, size=(10, 1)).astype("float32")]
    g_model, k_model = build(_GraphcLib), build(keras)
    k_model.set_weights(g_model.get_weights())
    for m in (g_model, k_model):
        m.compile(optimizer="sgd", loss=["mse", "binary_crossentropy"], loss_weights=[0.5, 2.0],
                  metrics=[["mae"], ["acc"]])
    gh = g_model.fit(x, ys, epochs=2, batch_size=4, shuffle=False, verbose=0)
    kh = k_model.fit(x, ys, epochs=2, batch_size=4, shuffle=False, verbose=0)
    assert list(gh.history) == list(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(gh.history[key], kh.history[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert np.allclose(g_model.evaluate(x, ys, verbose=0), k_model.evaluate(x, ys, verbose=0), rtol=1e-4)

