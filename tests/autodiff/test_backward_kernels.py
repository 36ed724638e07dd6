"""Recurrent ops differentiate through their dedicated backward kernels.

The values of those gradients are checked against central differences in
test_op_gradients.py; here the graph is checked to use ``lstm_grad``, ``gru_grad`` and
``simple_rnn_grad`` (one backward op per recurrence, not an unrolled chain), and the
backward kernel's reference is checked on its own against a finite difference of the forward.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.autodiff import gradients
from graphc.backends.reference import run
from graphc.ir import Graph, TensorType
from graphc.ops import OpBuilder

GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


@pytest.mark.parametrize("op,kernel", [("lstm", "lstm_grad"), ("gru", "gru_grad"), ("simple_rnn", "simple_rnn_grad")])
def test_recurrence_gradient_is_one_backward_kernel_and_matches_differences(op, kernel, rng):
    n, t, f, u = 2, 3, 4, 5
    g = Graph(op)
    b = OpBuilder(g, layer="rnn")
    x = g.add_input("x", TensorType("float64", (n, t, f)))
    k = g.add_constant("k", rng.normal(0, 0.5, size=(f, GATES[op] * u)))
    r = g.add_constant("r", rng.normal(0, 0.5, size=(u, GATES[op] * u)))
    bias_shape = (2, GATES[op] * u) if op == "gru" else (GATES[op] * u,)
    bias = g.add_constant("bias", rng.normal(0, 0.1, size=bias_shape))
    out = b.emit(op, x, k, r, bias, return_sequences=True)
    seq = out[0] if isinstance(out, tuple) else out
    loss = b.reduce_sum(b.square(seq), axes=(0, 1, 2))
    grads = gradients(g, loss, ["x"])
    assert g.op_counts().get(kernel) == 1
    g.set_outputs([loss, grads["x"]])
    xs = rng.normal(size=(n, t, f))
    result = run(g, {"x": xs})
    v = rng.normal(size=xs.shape)
    h = 1e-6
    plus = run(g, {"x": xs + h * v})[loss]
    minus = run(g, {"x": xs - h * v})[loss]
    np.testing.assert_allclose(np.sum(result[grads["x"]] * v), (plus - minus) / (2 * h), rtol=1e-5)
