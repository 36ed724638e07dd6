"""Sequential models: building (eager or deferred), add/pop, nesting, equivalence with functional."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, Sequential, layers
from tests.helpers import assert_close

# Keras's torch backend converts its outputs in a way NumPy 2 warns about; not graphc's concern.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def program01_sequential(K):
    m = K.Sequential()
    m.add(K.layers.Dense(32, activation="relu", input_shape=(64,)))
    m.add(K.layers.Dense(32, activation="relu"))
    m.add(K.layers.Dense(10, activation="softmax"))
    return m


def test_input_shape_on_first_layer_builds_at_once():
    m = program01_sequential(graphc)
    assert m.built and [lay.name for lay in m.layers] == ["dense", "dense_1", "dense_2"]
    assert m.inputs[0].shape == (None, 64) and m.outputs[0].shape == (None, 10)
    assert m.count_params() == 3466


def test_leading_input_is_not_a_layer():
    m = Sequential([Input((3,), name="x"), layers.Dense(5), layers.Dense(2)])
    assert [lay.name for lay in m.layers] == ["dense", "dense_1"]
    assert m.input_names == ["x"]
    assert m.get_layer(index=0).name == "dense"


def test_functional_twin_computes_the_same(rng):
    seq = program01_sequential(graphc)
    inp = Input(shape=(64,))
    x = layers.Dense(32, activation="relu")(inp)
    x = layers.Dense(32, activation="relu")(x)
    func = Model(inp, layers.Dense(10, activation="softmax")(x))
    assert func.count_params() == seq.count_params() == 3466
    func.set_weights(seq.get_weights())
    data = rng.random((9, 64), dtype=np.float32)
    assert_close(func.predict(data), seq.predict(data))


def test_deferred_build_on_predict(rng):
    m = Sequential([layers.Dense(4), layers.Dense(2)])
    assert not m.built
    with pytest.raises(ValueError, match="'sequential' is not built yet"):
        m.count_params()
    unbuilt: list[str] = []
    m.summary(print_fn=unbuilt.append)
    assert "│ ?" in unbuilt[0] and "0 (unbuilt)" in unbuilt[0]
    x = rng.random((3, 5), dtype=np.float32)
    out = m.predict(x)
    assert out.shape == (3, 2) and m.built and m.count_params() == 34
    assert m.inputs[0].shape == (None, 5)  # other batch sizes still work
    assert m.predict(rng.random((7, 5))).shape == (7, 2)
    first, second = m.layers
    assert_close(out, (x @ first.kernel.value + first.bias.value) @ second.kernel.value + second.bias.value)


def test_deferred_build_on_symbolic_call_and_build():
    m = Sequential([layers.Dense(3, activation="relu")], name="inner_seq")
    x = Input((6,))
    y = m(x)
    assert m.built and y.shape == (None, 3)
    assert [lay.name for lay in Model(x, y).layers] == ["input_layer", "inner_seq"]
    built = Sequential([layers.Dense(2)])
    built.build((None, 4))
    assert built.count_params() == 10
    with pytest.raises(ValueError, match="has no input shape yet"):
        Sequential([layers.Dense(2)]).build()


def test_add_and_pop_rebuild():
    m = Sequential([Input((5,)), layers.Dense(4), layers.Dense(2)])
    popped = m.pop()
    assert popped.name == "dense_1" and [lay.name for lay in m.layers] == ["dense"]
    assert m.outputs[0].shape == (None, 4)
    m.add(layers.Dense(7))
    assert m.outputs[0].shape == (None, 7) and m.count_params() == 24 + 35


def test_add_errors():
    m = Sequential([Input((3,)), layers.Dense(2, name="head")])
    with pytest.raises(TypeError, match="only Layer instances can be added to a Sequential model, got 3"):
        m.add(3)
    with pytest.raises(ValueError, match="an Input can only be the first element"):
        m.add(Input((3,)))
    with pytest.raises(ValueError, match='"head" is already the name of a layer in this model'):
        m.add(layers.Dense(2, name="head"))
    with pytest.raises(ValueError, match=r"Layer 'dense' \(Dense\) cannot be called on input of shape \(None, 2, 3\)"
                                         r".*float"):
        Sequential([Input((2, 3), dtype="int32"), layers.Dense(2)])
    with pytest.raises(IndexError, match="no layers"):
        Sequential().pop()


def test_nested_sequential_in_sequential(rng):
    inner = Sequential([layers.Dense(3, activation="relu")], name="inner_seq")
    outer = Sequential([Input((6,)), inner, layers.Dense(1)])
    assert [lay.name for lay in outer.layers] == ["inner_seq", "dense_1"]
    assert outer.count_params() == 21 + 4
    x = rng.random((4, 6), dtype=np.float32)
    core, head = inner.layers[0], outer.layers[1]
    want = np.maximum(x @ core.kernel.value + core.bias.value, 0) @ head.kernel.value + head.bias.value
    assert_close(outer.predict(x), want)


def test_sequential_config_round_trip(rng):
    m = Sequential([Input((5,)), layers.Dense(4, activation="tanh"), layers.Dropout(0.3), layers.Dense(2)],
                   name="stack")
    copy = Sequential.from_config(m.get_config())
    assert isinstance(copy, Sequential) and copy.name == "stack"
    assert [type(lay).__name__ for lay in copy.layers] == ["Dense", "Dropout", "Dense"]
    copy.set_weights(m.get_weights())
    x = rng.random((3, 5), dtype=np.float32)
    assert_close(copy.predict(x), m.predict(x))


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore:Do not pass an `input_shape`")
def test_matches_keras(keras, rng):
    model = program01_sequential(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel = program01_sequential(keras)
    assert [lay.name for lay in model.layers] == [lay.name for lay in kmodel.layers]
    assert [w.shape for w in model.weights] == [tuple(w.shape) for w in kmodel.weights]
    kmodel.set_weights(model.get_weights())
    x = rng.random((5, 64), dtype=np.float32)
    assert_close(model.predict(x), kmodel.predict(x, verbose=0))
