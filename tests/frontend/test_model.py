"""Functional models: inputs, structure, layer order, sharing, nesting, weights, predict, compile."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, InputLayer, Model, layers
from graphc.api import CompiledModel
from graphc.backends.reference.interpreter import InputError
from tests.helpers import assert_close

# Keras's torch backend converts its outputs in a way NumPy 2 warns about; not graphc's concern.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


# ---------------------------------------------------------------------------------------------
# Input


def test_input_shape_dtype_name():
    t = Input(shape=(32,))
    assert t.shape == (None, 32) and t.dtype == "float32"
    layer = t._keras_history[0]
    assert isinstance(layer, InputLayer) and layer.name == "input_layer"
    assert Input(shape=(None, 7), dtype="int32", name="ids").shape == (None, None, 7)
    q = Input(shape=(3,), batch_size=5, dtype="int32", name="q")
    assert q.shape == (5, 3) and q.dtype == "int32" and q._keras_history[0].name == "q"
    assert Input(batch_shape=(None, 3, 4)).shape == (None, 3, 4)
    assert Input(shape=7).shape == (None, 7)
    assert Input((2,), dtype=np.float64).dtype == "float64"


def test_input_automatic_names_count_up():
    names = [Input((1,))._keras_history[0].name for _ in range(3)]
    assert names == ["input_layer", "input_layer_1", "input_layer_2"]


@pytest.mark.parametrize("kwargs, message", [
    ({"shape": (3,), "batch_shape": (None, 3)}, "either shape= or batch_shape="),
    ({}, "needs shape="),
    ({"shape": (-1,)}, r"dimensions must be positive or None, got \(None, -1\)"),
    ({"batch_shape": (0, 3)}, r"got \(0, 3\)"),
    ({"shape": (3,), "sparse": True}, "sparse inputs are not supported"),
    ({"shape": (3,), "dtype": "complex64"}, "unsupported dtype 'complex64'"),
])
def test_input_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Input(**kwargs)


def test_input_config_round_trip():
    t = Input(batch_shape=(None, 5), dtype="int32", name="tokens")
    layer = t._keras_history[0]
    config = layer.get_config()
    assert config == {"batch_shape": [None, 5], "dtype": "int32", "sparse": False, "name": "tokens"}
    copy = InputLayer.from_config(config)
    assert copy.batch_shape == (None, 5) and copy.dtype == "int32" and copy.name == "tokens"


# ---------------------------------------------------------------------------------------------
# Structure: layers in Keras's order, names, get_layer


def branching(K):
    a = K.Input((8,), name="a")
    b = K.Input((6,), name="b")
    x = K.layers.Dense(4, name="x1")(a)
    y = K.layers.Dense(4, name="y1")(b)
    z = K.layers.Dense(4, name="z1")(a)
    x2 = K.layers.Dense(3, name="x2")(x)
    c = K.layers.concatenate([x2, y, z], name="cat")
    o1 = K.layers.Dense(2, name="o1")(c)
    o2 = K.layers.Dense(1, name="o2")(y)
    return K.Model([a, b], [o1, o2])


def unnamed_diamond(K):
    inp = K.Input((5,))
    left = K.layers.Dense(3, activation="relu")(inp)
    right = K.layers.Dense(3, activation="tanh")(K.layers.Dense(4)(inp))
    merged = K.layers.add([left, right])
    skip = K.layers.Dense(3)(inp)
    return K.Model(inp, K.layers.multiply([merged, skip]))


@pytest.mark.keras
@pytest.mark.parametrize("build", [branching, unnamed_diamond])
def test_layer_order_and_weights_order_as_keras(build, keras):
    model = build(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel = build(keras)
    assert [lay.name for lay in model.layers] == [lay.name for lay in kmodel.layers]
    assert [type(lay).__name__ for lay in model.layers] == \
        [type(lay).__name__.replace("Functional", "Model") for lay in kmodel.layers]
    assert [w.path for w in model.weights] == [w.path for w in kmodel.weights]
    assert [w.shape for w in model.weights] == [tuple(w.shape) for w in kmodel.weights]


def test_automatic_layer_names():
    inp = Input((4,))
    d0, d1, a0 = layers.Dense(2), layers.Dense(2), layers.Activation("relu")
    d0(inp)
    assert [d0.name, d1.name, a0.name] == ["dense", "dense_1", "activation"]
    assert layers.Dense(1, name="head").name == "head"
    graphc.utils.clear_session(free_memory=False)
    assert layers.Dense(1).name == "dense"
    assert Model(inp, d0(inp)).name == "functional"


def test_clear_session_frees_memory_as_keras_unless_told_not_to():
    """``free_memory`` (default True, as Keras's) runs the garbage collector: an unreachable cycle is gone
    after it, and still there (with automatic collection off) after ``free_memory=False``."""
    import gc
    import weakref

    class Node:
        pass

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        cycle = Node()
        cycle.self = cycle
        alive = weakref.ref(cycle)
        del cycle
        layers.Dense(1)
        graphc.utils.clear_session(free_memory=False)
        assert alive() is not None
        assert layers.Dense(1).name == "dense"
        graphc.utils.clear_session()
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()


def test_get_layer():
    model = branching(graphc)
    assert model.get_layer("cat").name == "cat"
    assert model.get_layer(index=0).name == "a"
    assert model.get_layer(index=3) is model.layers[3]
    with pytest.raises(ValueError, match=r"no such layer: 'nope'; existing layers are \['a', 'x1'"):
        model.get_layer("nope")
    with pytest.raises(ValueError, match="has 9 layers; asked for index 9"):
        model.get_layer(index=9)


def test_inputs_outputs_and_names():
    model = branching(graphc)
    assert [t.shape for t in model.inputs] == [(None, 8), (None, 6)]
    assert model.input_names == ["a", "b"]
    assert model.output_names == ["o1", "o2"]
    assert [t.shape for t in model.outputs] == [(None, 2), (None, 1)]
    assert isinstance(model.output, list) and len(model.output) == 2


def test_duplicate_layer_names_refused():
    x = Input((4,))
    y = layers.Dense(2, name="same")(layers.Dense(2, name="same")(x))
    with pytest.raises(ValueError, match='The name "same" is used 2 times in the model'):
        Model(x, y)


def test_model_inputs_must_be_input_tensors():
    x = Input((4,))
    h = layers.Dense(3, name="hidden")(x)
    with pytest.raises(ValueError, match="comes from layer 'hidden'"):
        Model(h, layers.Dense(2)(h))
    with pytest.raises(TypeError, match="symbolic tensors.*ndarray"):
        Model(x, np.zeros(3))
    with pytest.raises(ValueError, match="listed twice"):
        Model([x, x], h)
    with pytest.raises(ValueError, match="needs both inputs and outputs"):
        Model(x)


# ---------------------------------------------------------------------------------------------
# Shared layers and nested models


def test_shared_layer_nodes():
    d = layers.Dense(3)
    a, b = Input((4,)), Input((4,))
    oa, ob = d(a), d(b)
    assert d.output is oa and d.get_output_at(0) is oa and d.get_output_at(1) is ob
    assert d.get_input_at(1) is b and d.input is a
    assert d.output_shape == (None, 3) and d.input_shape == (None, 4)
    with pytest.raises(ValueError, match="has 2 node"):
        d.get_output_at(2)
    with pytest.raises(AttributeError, match="'dense_1' has never been called"):
        _ = layers.Dense(3).output
    model = Model([a, b], layers.add([oa, ob]))
    assert model.count_params() == 15 and len(model.weights) == 2


def test_shared_layer_computes_with_the_same_weights(rng):
    d = layers.Dense(3)
    a, b = Input((4,)), Input((4,))
    model = Model([a, b], [d(a), d(b)])
    x = rng.random((2, 4), dtype=np.float32)
    out_a, out_b = model.predict([x, x])
    assert_close(out_a, out_b)
    kernel, bias = d.get_weights()
    assert_close(out_a, x @ kernel + bias)


def test_nested_model_shares_weights_and_counts_them_once(rng):
    i = Input((4,))
    inner = Model(i, layers.Dense(4, activation="tanh")(i), name="inner")
    x = Input((4,))
    outer = Model(x, layers.Dense(2)(inner(inner(layers.Dense(4)(x)))))
    assert outer.count_params() == 20 + 20 + 10
    assert len(outer.weights) == 6
    # (the head is named first: Python creates the called layer before evaluating its argument)
    assert [lay.name for lay in outer.layers] == ["input_layer_1", "dense_2", "inner", "dense_1"]
    first, core, head = outer.get_layer("dense_2"), inner.get_layer("dense"), outer.get_layer("dense_1")

    def f(u):
        return np.tanh(u @ core.kernel.value + core.bias.value)

    v = rng.random((3, 4), dtype=np.float32)
    want = f(f(v @ first.kernel.value + first.bias.value)) @ head.kernel.value + head.bias.value
    assert_close(outer.predict(v), want, rtol=1e-5)
    # new weights in the inner model show up in the outer one
    inner.set_weights([w * 0 for w in inner.get_weights()])
    assert_close(outer.predict(v), np.broadcast_to(head.bias.value, (3, 2)))


def test_model_called_on_arrays_runs_eagerly(rng):
    i = Input((4,))
    model = Model(i, layers.Dense(2)(i))
    x = rng.random((5, 4), dtype=np.float32)
    assert_close(model(x), model.predict(x))


# ---------------------------------------------------------------------------------------------
# Weights


def test_get_and_set_weights_order_and_errors(rng):
    model = branching(graphc)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(8, 4), (4,), (4, 3), (3,), (6, 4), (4,), (8, 4), (4,),
                                          (11, 2), (2,), (4, 1), (1,)]
    new = [rng.normal(size=w.shape).astype(np.float32) for w in weights]
    model.set_weights(new)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), new))
    assert np.array_equal(model.get_layer("x2").kernel.value, new[2])
    got = model.get_weights()
    got[0][...] = 0  # get_weights returns copies
    assert not np.array_equal(model.get_weights()[0], got[0])
    with pytest.raises(ValueError, match=r"expects 12 weight arrays \(\['x1/kernel'.*got 11"):
        model.set_weights(new[:-1])
    bad = list(new)
    bad[4] = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"weight 'y1/kernel' has shape \(6, 4\), got an array of shape \(5, 4\)"):
        model.set_weights(bad)
    assert np.array_equal(model.get_weights()[0], new[0])  # nothing assigned on error


def test_set_weights_reaches_predict(rng):
    i = Input((3,))
    model = Model(i, layers.Dense(2)(i))
    x = rng.random((4, 3), dtype=np.float32)
    before = model.predict(x)
    kernel = rng.normal(size=(3, 2)).astype(np.float32)
    model.set_weights([kernel, np.ones(2, np.float32)])
    after = model.predict(x)
    assert not np.allclose(before, after)
    assert_close(after, x @ kernel + 1)


def test_trainable_flags():
    i = Input((3,))
    frozen = layers.Dense(2, trainable=False)
    model = Model(i, layers.Dense(4)(frozen(i)))
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 2
    model.trainable = False
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 4
    assert all(not lay.trainable for lay in model.layers)
    model.trainable = True
    assert len(model.trainable_weights) == 4 and frozen.trainable


# ---------------------------------------------------------------------------------------------
# predict


def two_in_two_out():
    a = Input((4,), name="a")
    b = Input((3,), name="b")
    h = layers.concatenate([a, b])
    return Model([a, b], [layers.Dense(2, name="y")(h), layers.Dense(1, name="z")(h)])


def test_predict_with_list_and_dict_inputs(rng):
    model = two_in_two_out()
    xa, xb = rng.random((5, 4), dtype=np.float32), rng.random((5, 3), dtype=np.float32)
    by_list = model.predict([xa, xb])
    by_dict = model.predict({"b": xb, "a": xa})
    assert isinstance(by_list, list) and len(by_list) == 2
    for p, q in zip(by_list, by_dict):
        assert_close(p, q)
    h = np.concatenate([xa, xb], axis=1)
    y = model.get_layer("y")
    assert_close(by_list[0], h @ y.kernel.value + y.bias.value)


def test_predict_with_dict_inputs_and_outputs(rng):
    a = Input((4,), name="a")
    b = Input((3,), name="b")
    h = layers.concatenate([a, b])
    model = Model({"a": a, "b": b}, {"score": layers.Dense(2)(h), "flag": layers.Dense(1)(h)})
    out = model.predict({"a": rng.random((2, 4)), "b": rng.random((2, 3))})
    assert isinstance(out, dict) and list(out) == ["score", "flag"]
    assert out["score"].shape == (2, 2) and out["flag"].shape == (2, 1)


def test_predict_single_output_list_unpacked_like_keras(rng):
    a = Input((4,))
    model = Model(a, [layers.Dense(2)(a)])
    out = model.predict(rng.random((3, 4)))
    assert isinstance(out, np.ndarray) and out.shape == (3, 2)
    assert model.predict([rng.random((3, 4))]).shape == (3, 2)


def test_predict_splits_into_batches(rng, monkeypatch):
    model = two_in_two_out()
    xa, xb = rng.random((7, 4), dtype=np.float32), rng.random((7, 3), dtype=np.float32)
    whole = model.predict([xa, xb], batch_size=100)
    sizes: list[int] = []
    original = CompiledModel.run

    def counting(self, feeds):
        sizes.append(len(feeds["a"]))
        return original(self, feeds)

    monkeypatch.setattr(CompiledModel, "run", counting)
    parts = model.predict([xa, xb], batch_size=3)
    assert sizes == [3, 3, 1]
    for p, q in zip(parts, whole):
        assert_close(p, q)
    sizes.clear()
    model.predict([xa, xb])  # default batch size 32
    assert sizes == [7]
    sizes.clear()
    model.predict_on_batch([xa, xb])
    assert sizes == [7]


def test_predict_input_errors(rng):
    model = two_in_two_out()
    xa, xb = rng.random((5, 4)), rng.random((5, 3))
    with pytest.raises(InputError, match=r"missing \['b'\]"):
        model.predict({"a": xa})
    with pytest.raises(InputError, match=r"unknown \['c'\]"):
        model.predict({"a": xa, "b": xb, "c": xb})
    with pytest.raises(InputError, match=r"takes 2 inputs \['a', 'b'\], got a list of 3"):
        model.predict([xa, xb, xb])
    with pytest.raises(InputError, match="different numbers of samples"):
        model.predict([xa, xb[:4]])
    with pytest.raises(InputError, match=r"input 'b' expects shape \(None, 3\), got \(5, 2\)"):
        model.predict([xa, xb[:, :2]])
    with pytest.raises(InputError, match="takes 2 inputs"):
        model.predict(xa)


def test_predict_on_other_sequence_lengths(rng):
    ids = Input((None,), dtype="int32", name="ids")
    model = Model(ids, layers.Dense(2)(layers.Embedding(50, 4)(ids)))
    for length in (1, 3, 17):
        out = model.predict(rng.integers(0, 50, size=(2, length)))
        assert out.shape == (2, length, 2)


# ---------------------------------------------------------------------------------------------
# compile


def test_compile_stores_config():
    model = two_in_two_out()
    assert not model.compiled
    model.compile(optimizer="rmsprop", loss=["mse", "mae"], loss_weights=[1.0, 0.2], metrics=["mae"])
    assert model.compiled
    assert model._compile_config["loss"] == ["mse", "mae"]
    assert model._compile_config["loss_weights"] == [1.0, 0.2]
    assert model._compile_config["optimizer"] == "rmsprop"


# ---------------------------------------------------------------------------------------------
# get_config / from_config


def test_model_config_round_trip(rng):
    model = branching(graphc)
    config = model.get_config()
    assert [lay["config"]["name"] for lay in config["layers"]] == [lay.name for lay in model.layers]
    copy = Model.from_config(config)
    assert [lay.name for lay in copy.layers] == [lay.name for lay in model.layers]
    assert [w.shape for w in copy.weights] == [w.shape for w in model.weights]
    assert copy.get_config() == config
    copy.set_weights(model.get_weights())
    xs = [rng.random((2, 8)), rng.random((2, 6))]
    for p, q in zip(copy.predict(xs), model.predict(xs)):
        assert_close(p, q)


@pytest.mark.keras
def test_model_config_matches_keras_structure(keras):
    model = unnamed_diamond(graphc)
    keras.utils.clear_session(free_memory=False)
    kconfig = unnamed_diamond(keras).get_config()
    config = model.get_config()
    assert config["input_layers"] == kconfig["input_layers"]
    assert config["output_layers"] == kconfig["output_layers"]
    assert [(lay["class_name"], lay["name"]) for lay in config["layers"]] == \
        [(lay["class_name"], lay["name"]) for lay in kconfig["layers"]]


def test_config_round_trip_with_shared_layer_and_nested_model(rng):
    i = Input((4,))
    inner = Model(i, layers.Dense(4, activation="tanh")(i), name="inner")
    a, b = Input((4,), name="a"), Input((4,), name="b")
    shared = layers.Dense(4, name="shared")
    model = Model([a, b], layers.Dense(1)(layers.concatenate([inner(shared(a)), inner(shared(b))])))
    config = model.get_config()
    copy = Model.from_config(config)
    assert copy.get_config() == config
    assert [lay.name for lay in copy.layers] == [lay.name for lay in model.layers]
    assert copy.count_params() == model.count_params() == 20 + 20 + 9
    assert len(copy.get_layer("shared")._inbound_nodes) == 2
    copy.set_weights(model.get_weights())
    xs = [rng.random((3, 4)), rng.random((3, 4))]
    assert_close(copy.predict(xs), model.predict(xs))
