"""Lowering a Model to the IR: input names, free-dim names, output names."""

from __future__ import annotations

import numpy as np

import graphc
from graphc import Input, Model, layers


def test_outputs_carry_layer_names_even_when_an_op_id_holds_the_name(rng):
    a, b = Input(shape=(4,), name="a"), Input(shape=(4,), name="b")
    s = layers.add([a, b])                  # its layer is "add"; the dot below also emits an op "add"...
    d = layers.dot([a, b], axes=1, normalize=True)
    model = Model([a, b], [s, d])
    graph = graphc.lower(model)
    assert graph.outputs == ["add", "dot"]
    graphc.verify(graph)
    xa, xb = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    got = model.predict([xa, xb])
    np.testing.assert_allclose(got[0], xa + xb, rtol=1e-6)


def test_free_dims_are_named_after_inputs():
    text = Input(shape=(None,), dtype="int32", name="text")
    img = Input(shape=(None, None, 3), name="img")
    x = layers.Embedding(10, 2)(text)
    y = layers.GlobalAveragePooling2D()(img)
    graph = graphc.lower(Model([text, img], [x, y]))
    assert graph.type_of("text").shape == ("batch", "text_len")
    assert graph.type_of("img").shape == ("batch", "img_d1", "img_d2", 3)


def test_an_input_returned_as_output_keeps_its_input_name():
    x = Input(shape=(3,), name="x")
    model = Model(x, x)
    graph = graphc.lower(model)
    assert graph.inputs == ["x"] and graph.outputs != ["x"]
    np.testing.assert_array_equal(model.predict(np.ones((2, 3), np.float32)), np.ones((2, 3)))
