"""The recurrent backward kernel over groups of batch rows (its products on the GEMM micro-kernel),
the weight-gradient products without transposes, and the forward kernel keeping pre-activations
and states for it: native training steps equal the reference's on odd sizes (batches spanning
several groups and a partial one, units spanning several panels with a tail, masks); a backward
op without its forward op recomputes them; gradients nobody reads are not computed."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm import build_native
from graphc.backends.llvm.codegen import _Codegen
from graphc.backends.llvm.kernels.recurrent_grad import GROUP_ROWS
from graphc.backends.llvm.target import host_target
from graphc.backends.reference import run
from graphc.ir import Graph, TensorType
from graphc.ops import OpBuilder

RTOL, ATOL = 1e-4, 5e-5  # as tests/backends/llvm/test_training_native.py (RMSprop's first steps)
LAYERS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}


def _model(kind: str, units: int, features: int, *, masked: bool = False, state: bool = False, **kw):
    graphc.utils.set_random_seed(5)
    seq = Input(shape=(None, features))
    inputs = [seq]
    x = layers.Masking(0.0)(seq) if masked else seq
    if state:
        inputs += [Input(shape=(units,)) for _ in range(2 if kind == "lstm" else 1)]
        h = LAYERS[kind](units, **kw)(x, initial_state=inputs[1:])
    else:
        h = LAYERS[kind](units, **kw)(x)
    if kw.get("return_sequences"):
        h = layers.GlobalAveragePooling1D()(h)
    model = Model(inputs if state else seq, layers.Dense(3, activation="softmax")(h))
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
    return model


def _compare(make, x, y, steps: int = 3):
    a, b = make(), make()
    b.set_weights(a.get_weights())
    native = graphc.build(a, target="native", training=True)
    reference = graphc.build(b, target="reference", training=True)
    for k in range(1, steps + 1):
        got, want = native.train_step(x, y), reference.train_step(x, y)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=RTOL, atol=1e-6, err_msg=f"loss, step {k}")
    for i, (p, q) in enumerate(zip(a.get_weights(), b.get_weights())):
        np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL, err_msg=f"weight {i} after {steps} steps")


def _sequences(rng, n: int, t: int, f: int, masked: bool) -> np.ndarray:
    x = rng.normal(size=(n, t, f)).astype(np.float32)
    if masked:
        x[1, :] = 0.0  # a row with no kept step
        x[2, -2:] = 0.0  # a row whose last steps are masked
        x[3, 0] = 0.0  # a row whose first step is masked
        x[rng.random((n, t)) < 0.2] = 0.0
    return x


CASES = [
    ("lstm", 7, 5, {}),
    ("lstm", 33, 3, {"return_sequences": True, "go_backwards": True}),
    ("lstm", 17, 1, {"activation": "relu", "recurrent_activation": "hard_sigmoid"}),
    ("lstm", 65, 3, {}),  # 260 gate columns: the weight gradients through the transposes and the packed GEMM
    ("gru", 9, 4, {"return_sequences": True}),
    ("gru", 33, 2, {"go_backwards": True}),
    ("simple_rnn", 35, 5, {"go_backwards": True}),
    ("simple_rnn", 3, 2, {"return_sequences": True, "activation": "sigmoid"}),
]


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
@pytest.mark.parametrize("kind,units,features,kw", CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(c[3]) or 'plain'}" for c in CASES])
@pytest.mark.parametrize("batch", [2 * GROUP_ROWS + 3, GROUP_ROWS])
def test_backward_over_groups_equals_reference(kind, units, features, kw, masked, batch, rng):
    x = _sequences(rng, batch, 5, features, masked)
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=batch), 3)
    _compare(lambda: _model(kind, units, features, masked=masked, **kw), x, y)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_backward_over_groups_with_initial_states_equals_reference(kind, rng):
    n, units = GROUP_ROWS + 5, 19
    x = [rng.normal(size=(n, 4, 6)).astype(np.float32)]
    x += [rng.normal(size=(n, units)).astype(np.float32) for _ in range(2 if kind == "lstm" else 1)]
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=n), 3)
    _compare(lambda: _model(kind, units, 6, state=True, return_sequences=True), x, y)


def _grad_launches(model, x, y) -> list[int]:
    """Kernel launches of each recurrent backward op of the model's native training step."""
    from graphc.training.loop import standardize_x, standardize_y

    trainer = model._graphc_trainer
    compiled = trainer.runner.compiled(trainer._step(standardize_x(model, x), standardize_y(model, y), True))
    cg = _Codegen(compiled.graph, "step", host_target(), False)
    cg._setup()
    cg.lower_ops()
    grads = [i for i, op in enumerate(cg.graph.ops()) if op.type.endswith("_grad") and op.type != "matmul_grad"]
    return [sum(1 for launch in cg.kb.launches if launch.op_index == i) for i in grads]


def test_backward_reads_what_the_forward_kept_and_skips_unread_gradients(rng):
    """An LSTM on the model's input in a training step: the backward neither recomputes the input
    projection (the forward kernel kept the pre-activations and states) nor computes the input's
    or the zero initial states' gradients. It launches the backward recurrence, both weight
    gradients (one launch) and the bias's."""
    x = rng.normal(size=(5, 4, 3)).astype(np.float32)
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=5), 3)
    model = _model("lstm", 6, 3)
    graphc.build(model, target="native", training=True)
    model.train_on_batch(x, y)
    assert _grad_launches(model, x, y) == [3]


GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


@pytest.mark.parametrize("cpu", [None, "x86-64-v3"], ids=["host", "avx2"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_backward_op_alone_recomputes_and_equals_reference(kind, return_sequences, cpu, rng):
    """A backward op without its forward op in the graph recomputes the projection and the forward
    recurrence itself (over groups of rows, a partial last one, units over two panels); also with
    16 vector registers of 8 lanes (AVX2: a smaller register tile)."""
    n, t, f, u = 2 * GROUP_ROWS + 3, 4, 5, 33
    g = Graph(kind)
    ob = OpBuilder(g, layer="rnn")
    x = g.add_input("x", TensorType("float32", (n, t, f)))
    k = g.add_constant("k", rng.normal(0, 0.3, size=(f, GATES[kind] * u)).astype(np.float32))
    r = g.add_constant("r", rng.normal(0, 0.3, size=(u, GATES[kind] * u)).astype(np.float32))
    bias_shape = (2, GATES[kind] * u) if kind == "gru" else (GATES[kind] * u,)
    bias = g.add_constant("bias", rng.normal(0, 0.1, size=bias_shape).astype(np.float32))
    out_shape = (n, t, u) if return_sequences else (n, u)
    cots = [g.add_input("d_out", TensorType("float32", out_shape))]
    cots += [g.add_input(f"d_state{i}", TensorType("float32", (n, u))) for i in range(2 if kind == "lstm" else 1)]
    grads = ob.emit(f"{kind}_grad", x, k, r, bias, *cots, return_sequences=return_sequences)
    g.set_outputs(list(grads[:4]))
    feeds = {"x": rng.normal(size=(n, t, f)).astype(np.float32)}
    feeds.update({c: rng.normal(size=g.values[c].type.shape).astype(np.float32) for c in cots})
    want = run(g, feeds)
    got = build_native(g, cpu=cpu).run(feeds)
    for v in grads[:4]:
        scale = float(np.max(np.abs(want[v])))
        np.testing.assert_allclose(got[v], want[v], rtol=RTOL, atol=RTOL * scale, err_msg=v)


def _twin_towers(kind: str):
    """Two recurrences of one shape on two inputs of one shape."""
    def make():
        graphc.utils.set_random_seed(7)
        a, b = Input(shape=(None, 5)), Input(shape=(None, 5))
        h = layers.concatenate([LAYERS[kind](9)(a), LAYERS[kind](9)(b)])
        model = Model([a, b], layers.Dense(2)(h))
        model.compile(optimizer="rmsprop", loss="mse")
        return model

    return make


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_backward_of_twin_towers_reads_what_each_forward_kept(kind, rng):
    n = GROUP_ROWS + 3
    x = [rng.normal(size=(n, 6, 5)).astype(np.float32) for _ in range(2)]
    y = rng.normal(size=(n, 2)).astype(np.float32)
    _compare(_twin_towers(kind), x, y)
    model = _twin_towers(kind)()
    graphc.build(model, target="native", training=True)
    model.train_on_batch(x, y)
    assert _grad_launches(model, x, y) == [4 if kind == "gru" else 3] * 2  # GRU: two bias reductions
