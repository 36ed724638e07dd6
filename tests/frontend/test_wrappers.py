"""TimeDistributed: per-step equality with the wrapped layer or Model, shared weights, free dims."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from tests.helpers import assert_close


def _classifier(d_in=12, hidden=7, classes=3):
    inputs = Input(shape=(d_in,))
    h = layers.Dense(hidden, activation="relu")(inputs)
    return Model(inputs, layers.Dense(classes, activation="softmax")(h))


@pytest.mark.parametrize("batch, steps, d_in, units", [(1, 1, 3, 1), (3, 7, 17, 5), (2, 3, 1, 17)])
def test_dense_matches_numpy(batch, steps, d_in, units, rng):
    td = layers.TimeDistributed(layers.Dense(units, activation="tanh"))
    seq = Input(shape=(steps, d_in))
    out = td(seq)
    assert out.shape == (None, steps, units)
    x = rng.normal(size=(batch, steps, d_in)).astype("float32")
    kernel, bias = td.get_weights()
    assert kernel.shape == (d_in, units) and bias.shape == (units,)
    want = np.tanh(x @ kernel + bias)
    assert_close(Model(seq, out).predict(x), want, rtol=1e-5, atol=1e-6)
    assert_close(td(x), want, rtol=1e-5, atol=1e-6)


def test_dense_on_rank_4_steps(rng):
    td = layers.TimeDistributed(layers.Dense(4))
    x = rng.normal(size=(2, 3, 5, 7)).astype("float32")
    got = td(x)
    kernel, bias = td.get_weights()
    assert got.shape == (2, 3, 5, 4)
    assert_close(got, x @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_weights_are_the_inner_layers(rng):
    dense = layers.Dense(5)
    td = layers.TimeDistributed(dense)
    with pytest.raises(ValueError, match="not built yet"):
        td.count_params()
    td(Input(shape=(4, 3)))
    assert [id(w) for w in td.weights] == [id(w) for w in dense.weights]
    assert td.count_params() == dense.count_params() == 3 * 5 + 5
    assert td.trainable_weights == dense.trainable_weights
    new = [rng.normal(size=(3, 5)).astype("float32"), rng.normal(size=(5,)).astype("float32")]
    td.set_weights(new)
    assert_close(dense.get_weights()[0], new[0])
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    assert_close(td(x), x @ new[0] + new[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch, steps", [(1, 1), (3, 20), (2, 7)])
def test_model_per_step_equality_and_shared_weights(batch, steps, rng):
    model = _classifier()
    seqs = Input(shape=(steps, 12))
    out = layers.TimeDistributed(model)(seqs)
    assert out.shape == (None, steps, 3)
    seq_model = Model(seqs, out)
    assert seq_model.count_params() == model.count_params()
    assert [id(w) for w in seq_model.weights] == [id(w) for w in model.weights]
    x = rng.random((batch, steps, 12)).astype("float32")
    got = seq_model.predict(x)
    for t in range(steps):
        assert_close(got[:, t], model.predict(x[:, t]), rtol=1e-5, atol=1e-6, what=f"step {t}")
    # New weights on the inner model show up in the sequence model.
    model.set_weights([w * 0.5 for w in model.get_weights()])
    got = seq_model.predict(x)
    assert_close(got[:, -1], model.predict(x[:, -1]), rtol=1e-5, atol=1e-6)


def test_free_time_dim(rng):
    model = _classifier()
    seqs = Input(shape=(None, 12))
    out = layers.TimeDistributed(model)(seqs)
    assert out.shape == (None, None, 3)
    seq_model = Model(seqs, out)
    graph = graphc.lower(seq_model)
    reshapes = [op for op in graph.ops() if op.type == "reshape"]
    assert [graph.type_of(op.outputs[0]).shape for op in reshapes] == [
        ("batch*input_layer_1_len", 12), ("batch", "input_layer_1_len", 3)]
    for steps in (1, 3, 7):
        x = rng.random((2, steps, 12)).astype("float32")
        got = seq_model.predict(x)
        assert got.shape == (2, steps, 3)
        assert_close(got.reshape(-1, 3), model.predict(x.reshape(-1, 12)), rtol=1e-5, atol=1e-6)


def test_nested_time_distributed(rng):
    dense = layers.Dense(2)
    inner = layers.TimeDistributed(dense)
    outer = layers.TimeDistributed(inner)
    x_in = Input(shape=(None, 3, 5))
    out = outer(x_in)
    assert out.shape == (None, None, 3, 2)
    x = rng.normal(size=(2, 4, 3, 5)).astype("float32")
    kernel, bias = dense.get_weights()
    assert_close(Model(x_in, out).predict(x), x @ kernel + bias, rtol=1e-5, atol=1e-6)
    assert outer.count_params() == 12


def test_errors():
    with pytest.raises(ValueError, match="wraps a layer.*got int"):
        layers.TimeDistributed(3)
    with pytest.raises(ValueError, match=r"rank >= 3 \(batch, time, \.\.\.\), got shape \(None, 4\)"):
        layers.TimeDistributed(layers.Dense(2))(Input(shape=(4,)))
    model = _classifier()
    with pytest.raises(ValueError, match=r"wrapped layer 'functional' \(Model\).*\(None, 100\)"):
        layers.TimeDistributed(model)(Input(shape=(20, 100)))
    with pytest.raises(ValueError, match="single input tensor, got 2"):
        layers.TimeDistributed(layers.Dense(2))([Input(shape=(3, 4)), Input(shape=(3, 4))])


def test_config_names_the_wrapped_layer():
    config = layers.TimeDistributed(layers.Dense(3, name="inner"), name="td").get_config()
    assert config["name"] == "td"
    assert config["layer"]["class_name"] == "Dense" and config["layer"]["config"]["name"] == "inner"


@pytest.mark.keras
def test_matches_keras_dense(keras, rng):
    x = rng.normal(size=(3, 7, 5)).astype("float32")
    k_td = keras.layers.TimeDistributed(keras.layers.Dense(4, activation="relu"))
    g_td = layers.TimeDistributed(layers.Dense(4, activation="relu"))
    g_out = g_td(x)
    k_td.build((None, 7, 5))
    k_td.set_weights(g_td.get_weights())
    assert [w.shape for w in k_td.get_weights()] == [w.shape for w in g_td.get_weights()]
    assert_close(g_out, keras.ops.convert_to_numpy(k_td(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.keras
def test_matches_keras_model(keras, rng):
    g_model = _classifier()
    k_in = keras.Input(shape=(12,))
    k_h = keras.layers.Dense(7, activation="relu")(k_in)
    k_model = keras.Model(k_in, keras.layers.Dense(3, activation="softmax")(k_h))
    k_model.set_weights(g_model.get_weights())

    k_seq = keras.Input(shape=(6, 12))
    k_out = keras.layers.TimeDistributed(k_model)(k_seq)
    k_seq_model = keras.Model(k_seq, k_out)
    g_seq = Input(shape=(6, 12))
    g_seq_model = Model(g_seq, layers.TimeDistributed(g_model)(g_seq))
    assert g_seq_model.output.shape == tuple(k_out.shape)
    assert g_seq_model.count_params() == k_seq_model.count_params()
    x = rng.random((3, 6, 12)).astype("float32")
    assert_close(g_seq_model.predict(x), k_seq_model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_conv2d_on_video_frames(rng):
    conv = layers.Conv2D(4, 3, padding="same", strides=2)
    td = layers.TimeDistributed(conv)
    frames = Input(shape=(None, 9, 7, 2))
    out = td(frames)
    assert out.shape == (None, None, 5, 4, 4)
    video = rng.normal(size=(2, 3, 9, 7, 2)).astype("float32")
    got = Model(frames, out).predict(video)
    for t in range(3):
        assert_close(got[:, t], conv(video[:, t]), rtol=1e-5, atol=1e-5, what=f"frame {t}")


@pytest.mark.keras
def test_matches_keras_conv2d(keras, rng):
    video = rng.normal(size=(2, 3, 9, 7, 2)).astype("float32")
    g_td = layers.TimeDistributed(layers.Conv2D(4, 3, activation="relu"))
    got = g_td(video)
    k_td = keras.layers.TimeDistributed(keras.layers.Conv2D(4, 3, activation="relu"))
    k_td.build((None, 3, 9, 7, 2))
    k_td.set_weights(g_td.get_weights())
    assert_close(got, keras.ops.convert_to_numpy(k_td(video)), rtol=1e-5, atol=1e-5)
