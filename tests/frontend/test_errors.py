"""Front-end error messages: each says what was wrong and names the layer, input or tensor involved."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, Sequential, layers
from graphc.backends.reference.interpreter import InputError


def two_input_graph():
    i1 = Input((4,), name="i1")
    i2 = Input((4,), name="i2")
    h = layers.Dense(2, name="h")(i2)
    g = layers.Dense(3, name="g")(i1)
    out = layers.Dense(2, name="o")(layers.concatenate([g, h], name="cat"))
    return i1, i2, out


def test_graph_disconnected_names_the_missing_input():
    i1, i2, out = two_input_graph()
    with pytest.raises(ValueError, match=r"Graph disconnected: cannot obtain value for tensor i2 \(None, 4\) at "
                                         r"layer 'h': it comes from input 'i2', which is not among the model's "
                                         r"inputs \['i1'\]"):
        Model(i1, out)
    with pytest.raises(ValueError, match=r"Graph disconnected.*input 'i1'.*inputs \['i2'\]"):
        Model([i2], out)


def test_graph_disconnected_deep_in_the_graph():
    a = Input((3,), name="a")
    b = Input((3,), name="b")
    y = layers.Dense(1, name="y")(layers.Dense(2, name="mid")(layers.add([a, b], name="sum")))
    with pytest.raises(ValueError, match=r"at layer 'sum': it comes from input 'b'.*accessed without issue: \['a'\]"):
        Model(a, y)


def test_unrelated_input_as_in_program_01():
    x = Input((64,))
    out = layers.Dense(10)(layers.Dense(32)(x))
    unrelated = Input((32,), name="unrelated")
    with pytest.raises(ValueError, match="Graph disconnected.*'input_layer'.*not among the model's inputs "
                                         r"\['unrelated'\]"):
        Model(unrelated, out)


def test_dense_on_int_tensor_names_the_layer():
    ids = Input((4,), dtype="int32", name="ids")
    with pytest.raises(ValueError, match=r"Layer 'scores' \(Dense\) cannot be called on input of shape \(None, 4\) "
                                         r"int32: Dense needs a float input, got int32"):
        layers.Dense(3, name="scores")(ids)


def test_layer_incompatible_with_its_first_build():
    dense = layers.Dense(3, name="proj")
    dense(Input((4,)))
    with pytest.raises(ValueError, match="'proj'"):
        dense(Input((6,)))
    with pytest.raises(ValueError, match="'proj'"):
        dense(np.ones((2, 6), np.float32))


def test_calling_a_model_on_the_wrong_inputs():
    i = Input((4,), name="feat")
    model = Model(i, layers.Dense(2)(i), name="net")
    with pytest.raises(ValueError, match=r"'net' \(Model\) cannot be called on input of shape \(None, 5\) float32: "
                                         r"input 'feat' expects shape \(None, 4\), got \(None, 5\)"):
        model(Input((5,)))
    with pytest.raises(ValueError, match=r"model 'net' expects 1 input\(s\), got 2"):
        model([Input((4,)), Input((4,))])


def test_predict_input_errors_name_the_input():
    i = Input((4,), name="feat")
    model = Model(i, layers.Dense(2)(i))
    with pytest.raises(InputError, match=r"input 'feat' expects shape \(None, 4\), got \(2, 5\) "
                                         r"\(axis 1: expected 4, got 5\)"):
        model.predict(np.ones((2, 5)))
    with pytest.raises(InputError, match=r"input 'feat' expects shape \(None, 4\) \(rank 2\), got shape \(2,\)"):
        model.predict(np.ones((2,)))
    with pytest.raises(InputError, match="input 'feat': cannot use an array of Python objects"):
        model.predict(np.array([["a", "b", "c", "d"]], dtype=object))


def test_symbolic_tensors_have_no_values():
    t = Input((4,), name="sym")
    with pytest.raises(TypeError, match="name=sym.*is symbolic: it has no values"):
        np.asarray(t)
    with pytest.raises(TypeError, match="no truth value"):
        bool(t)
    with pytest.raises(TypeError, match="unknown first dimension"):
        len(t)
    assert len(Input(batch_shape=(3, 2))) == 3


@pytest.mark.parametrize("name", ["", "a/b", 3])
def test_invalid_layer_names(name):
    with pytest.raises(ValueError, match="invalid layer name"):
        layers.Dense(2, name=name)


def test_unknown_constructor_arguments():
    with pytest.raises(TypeError, match=r"Dropout got unexpected keyword argument\(s\) \['rat'\]"):
        layers.Dropout(0.5, rat=3)


def test_layer_history_errors():
    never = layers.Dense(2, name="never")
    with pytest.raises(AttributeError, match="'never' has never been called and thus has no defined output"):
        _ = never.output
    with pytest.raises(AttributeError, match="'never' has never been called and thus has no defined input"):
        _ = never.input
    with pytest.raises(ValueError, match="'never' is not built yet"):
        never.count_params()


def test_model_outputs_must_come_from_layers():
    i = Input((3,))
    with pytest.raises(TypeError, match="all model outputs must be symbolic tensors.*got int: 1"):
        Model(i, [[1, 2]])
    with pytest.raises(TypeError, match="all model inputs must be symbolic tensors.*ndarray"):
        Model(np.zeros(3), layers.Dense(2)(i))


def test_sequential_errors_name_the_model():
    with pytest.raises(ValueError, match="Sequential model 'stack' has no input shape yet"):
        Sequential([layers.Dense(2)], name="stack").build()
    with pytest.raises(ValueError, match="only Input tensors or layers"):
        Sequential().add(layers.Dense(2)(Input((3,))))
