"""The autodiff driver: accumulation over several uses, unreachable values, symbolic shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, layers
from graphc.autodiff import NotDifferentiableError, gradients
from graphc.autodiff.core import prune
from graphc.backends.reference import run
from graphc.frontend.to_ir import lower_model
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import REGISTRY, OpBuilder, OpDef, register


def _graph():
    g = Graph("t")
    b = OpBuilder(g)
    x = g.add_input("x", TensorType("float64", ("batch", 3)))
    return g, b, x


def test_fan_out_cotangents_are_summed():
    g, b, x = _graph()
    y = b.mul(x, x)  # used twice by one op
    z = b.add(b.tanh(x), y)
    loss = b.reduce_sum(b.mul(z, x), axes=(0, 1))
    grads = gradients(g, loss, [x])
    g.set_outputs([grads[x]])
    xv = np.random.default_rng(0).standard_normal((4, 3))
    got = run(g, {"x": xv})[grads[x]]
    t = np.tanh(xv)
    want = (1 - t * t) * xv + t + 3 * xv ** 2
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_values_the_loss_does_not_depend_on_get_no_gradient():
    g, b, x = _graph()
    other = g.add_input("other", TensorType("float64", (3,)))
    b.add(x, other)  # dead branch
    loss = b.reduce_sum(x, axes=(0, 1))
    grads = gradients(g, loss, [x, other])
    assert list(grads) == [x]


def test_gradients_keep_free_dimensions_symbolic():
    inp = Input(shape=(None, 2))
    out = layers.Dense(1)(layers.LSTM(3, return_sequences=True)(inp))
    model = Model(inp, out)
    graph, params = lower_model(model)
    b = OpBuilder(graph)
    y = graph.outputs[0]
    loss = b.reduce_mean(b.square(y), axes=(0, 1, 2))
    kernel = next(c for c in graph.constants if c.endswith("lstm/kernel"))
    grads = gradients(graph, loss, [kernel, graph.inputs[0]])
    assert graph.type_of(grads[graph.inputs[0]]).shape == graph.type_of(graph.inputs[0]).shape
    graph.set_outputs([grads[kernel], grads[graph.inputs[0]]])
    prune(graph)
    for n, t in ((2, 5), (3, 1)):
        out = run(graph, {graph.inputs[0]: np.ones((n, t, 2), dtype="float32")})
        assert out[grads[graph.inputs[0]]].shape == (n, t, 2)


def test_errors_name_the_op_and_the_problem():
    g, b, x = _graph()
    with pytest.raises(ValueError, match="must be a scalar"):
        gradients(g, b.tanh(x), [x])
    with pytest.raises(ValueError, match="not a value"):
        gradients(g, x, ["nope"])
    ids = g.add_input("ids", TensorType("int32", (3,)))
    with pytest.raises(ValueError, match="must be a float tensor"):
        gradients(g, ids, [x])
    register(OpDef("_no_grad_test", lambda types: types[0], lambda a: a, num_inputs=1))
    try:
        g2, b2, x2 = _graph()
        b2.layer = "my_layer"
        y = b2.emit("_no_grad_test", x2)
        loss = b2.reduce_sum(y, axes=(0, 1))
        with pytest.raises(NotDifferentiableError, match="_no_grad_test, layer 'my_layer'.*no gradient"):
            gradients(g2, loss, [x2])
    finally:
        del REGISTRY["_no_grad_test"]


def test_not_differentiable_ops_stop_the_gradient():
    g, b, x = _graph()
    idx = b.cast(b.argmax(x, axis=-1), dtype="float64")
    loss = b.reduce_sum(b.add(b.reduce_sum(x, axes=(1,)), idx), axes=(0,))
    grads = gradients(g, loss, [x])
    g.set_outputs([grads[x]])
    assert np.allclose(run(g, {"x": np.ones((2, 3))})[grads[x]], 1.0)
