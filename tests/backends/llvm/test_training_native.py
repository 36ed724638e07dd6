"""Native training steps (graphc.build(model, target="native", training=True)) against the
reference interpreter's: every seed model, the recurrent layers' backward passes (LSTM, GRU,
SimpleRNN: sequences, reversed, initial states) and dropout's random masks."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm import build_native
from graphc.backends.llvm.builder import NativeLoweringError
from graphc.backends.llvm.kernels.random import uniform_reference
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops.builder import OpBuilder
from graphc.ops.registry import get
from tests.programs.seed_models import SEED_MODELS

# RMSprop's first steps divide each gradient by its own magnitude, so float32 summation-order
# noise in gradients near zero moves a weight by a visible fraction of the learning rate:
# an absolute tolerance of a few 1e-5 (lr = 1e-3) next to rtol 1e-4.
RTOL, ATOL = 1e-4, 5e-5
SHORT = {"multi_output": 300, "qa_two_inputs": 5, "siamese_lstm": 3, "two_heads_text": 9}


def _pair(make):
    """Two identical compiled models (same weights)."""
    a, b = make(), make()
    b.set_weights(a.get_weights())
    return a, b


def _compare_steps(a, b, x, y, steps=(1, 3)):
    """Run native steps on ``a`` and reference steps on ``b``; compare after each count in ``steps``."""
    native = graphc.build(a, target="native", training=True)
    reference = graphc.build(b, target="reference", training=True)
    for k in range(1, max(steps) + 1):
        got, want = native.train_step(x, y), reference.train_step(x, y)
        if k not in steps:
            continue
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=RTOL, atol=1e-6, err_msg=f"loss, step {k}")
        for i, (p, q) in enumerate(zip(a.get_weights(), b.get_weights())):
            np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL, err_msg=f"weight {i} after {k} steps")
    return native, reference


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_model_trains_natively(name, rng):
    build, _, lengths = SEED_MODELS[name]

    def make():
        graphc.utils.set_random_seed(11)
        model, _ = build(graphc)
        return model

    a, b = _pair(make)
    _, data = build(graphc)
    x = data(rng, 2) if lengths is None else data(rng, 2, SHORT.get(name, lengths[0]))
    preds = a.predict(x)
    preds = preds if isinstance(preds, list) else [preds]
    ys = [rng.random(p.shape, dtype=np.float32) for p in preds]
    for m in (a, b):
        m.compile(optimizer="rmsprop", loss=["mse"] * len(ys))
    before = [w.copy() for w in a.get_weights()]
    _compare_steps(a, b, x, ys)
    if before:  # the steps did train (merge has no weights)
        assert any(not np.array_equal(p, q) for p, q in zip(before, a.get_weights()))


def _recurrent(kind: str, units: int, features: int, state: bool, **kw):
    def make():
        graphc.utils.set_random_seed(3)
        seq = Input(shape=(None, features))
        cls = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}[kind]
        inputs = [seq]
        if state:
            inits = [Input(shape=(units,)) for _ in range(2 if kind == "lstm" else 1)]
            inputs += inits
            h = cls(units, **kw)(seq, initial_state=inits)
        else:
            h = cls(units, **kw)(seq)
        if kw.get("return_sequences"):
            h = layers.GlobalAveragePooling1D()(h)
        model = Model(inputs if state else seq, layers.Dense(3, activation="softmax")(h))
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        return model

    return make


RECURRENT_CASES = [
    ("lstm", 7, 5, False, {}),
    ("lstm", 1, 3, True, {"return_sequences": True, "go_backwards": True}),
    ("lstm", 17, 1, False, {"activation": "relu", "recurrent_activation": "hard_sigmoid"}),
    ("gru", 7, 5, False, {"return_sequences": True}),
    ("gru", 3, 4, True, {"go_backwards": True}),
    ("simple_rnn", 7, 5, False, {"go_backwards": True}),
    ("simple_rnn", 3, 2, True, {"return_sequences": True, "activation": "sigmoid"}),
]


@pytest.mark.parametrize("kind,units,features,state,kw", RECURRENT_CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(c[4]) or 'plain'}{'-state' if c[3] else ''}"
                              for c in RECURRENT_CASES])
def test_recurrent_backward_matches_reference(kind, units, features, state, kw, rng):
    a, b = _pair(_recurrent(kind, units, features, state, **kw))
    n, t = 3, 4
    x = [rng.normal(size=(n, t, features)).astype(np.float32)]
    if state:
        x += [rng.normal(size=(n, units)).astype(np.float32) for _ in range(2 if kind == "lstm" else 1)]
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=n), 3)
    _compare_steps(a, b, x if state else x[0], y)
    # one time step, and a batch of one
    _compare_steps(a, b, [v[:1, :1] if v.ndim == 3 else v[:1] for v in x] if state else x[0][:1, :1], y[:1],
                   steps=(1,))


def test_gru_without_reset_after_is_refused(rng):
    a, _ = _pair(_recurrent("gru", 4, 3, False, reset_after=False))
    native = graphc.build(a, target="native", training=True)
    with pytest.raises(NativeLoweringError, match="reset_after=False"):
        native.train_step(rng.normal(size=(2, 3, 3)).astype(np.float32), np.eye(3, dtype=np.float32)[:2])


# ---------------------------------------------------------------------------- dropout
def _uniform_graph(shape=("batch", 7), seed=3):
    g = Graph("uniform")
    x = g.add_input("x", TensorType("float32", shape))
    u = OpBuilder(g).random_uniform_like(x, seed=seed)
    g.set_outputs([u])
    return g, u


def test_random_uniform_statistics_and_stream():
    g, u = _uniform_graph(("batch", 13), seed=5)
    native = build_native(g)
    x = np.zeros((4001, 13), np.float32)
    draws = [native.run({"x": x})[u] for _ in range(3)]
    for k, d in enumerate(draws):
        assert d.shape == x.shape and d.dtype == np.float32
        assert d.min() >= 0.0 and d.max() < 1.0
        assert abs(d.mean() - 0.5) < 0.01 and abs(d.var() - 1 / 12) < 0.005
        # deciles equally filled; neighbours uncorrelated
        counts = np.histogram(d, bins=10, range=(0, 1))[0]
        assert np.all(np.abs(counts / d.size - 0.1) < 0.01)
        assert abs(np.corrcoef(d.ravel()[:-1], d.ravel()[1:])[0, 1]) < 0.02
        # exactly the documented hash of (seed, op, call, index)
        np.testing.assert_array_equal(d, uniform_reference(5, 0, k, x.shape))
    assert not np.array_equal(draws[0], draws[1])
    assert not np.array_equal(uniform_reference(5, 0, 0, (9,)), uniform_reference(6, 0, 0, (9,)))
    assert not np.array_equal(uniform_reference(None, 0, 0, (9,)), uniform_reference(None, 1, 0, (9,)))
    # a free batch of one row
    np.testing.assert_array_equal(native.run({"x": x[:1]})[u], uniform_reference(5, 0, 3, (1, 13)))


def _dropout_model(rate: float):
    def make():
        graphc.utils.set_random_seed(9)
        i = Input(shape=(11,))
        h = layers.Dropout(rate, seed=21)(layers.Dense(19, activation="relu")(i))
        model = Model(i, layers.Dense(3, activation="softmax")(h))
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        return model

    return make


def test_dropout_step_equals_the_reference_step_with_the_same_masks(rng, monkeypatch):
    """The native step draws its masks from the counter-based hash; the reference, given those
    same masks (its random op replaced by the hash's NumPy form), takes the same steps."""
    a, b = _pair(_dropout_model(0.5))
    x = rng.normal(size=(5, 11)).astype(np.float32)
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=5), 3)
    native = graphc.build(a, target="native", training=True)
    got = [native.train_step(x, y) for _ in range(3)]
    (step,) = [s for s in native._steps.values() if s.training]
    (index,) = [i for i, op in enumerate(step.graph.ops()) if op.type == "random_uniform_like"]
    calls = iter(range(3))
    monkeypatch.setattr(get("random_uniform_like"), "reference",
                        lambda v, *, seed: uniform_reference(seed, index, next(calls), v.shape))
    reference = graphc.build(b, target="reference", training=True)
    want = [reference.train_step(x, y) for _ in range(3)]
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g["loss"], w["loss"], rtol=RTOL, err_msg=f"step {k}")
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL)
    # the masks changed between steps: the same batch gave different losses
    assert len({float(g["loss"]) for g in got}) == 3


def test_dropout_rate_zero_and_without_dropout_match_the_reference(rng):
    x = rng.normal(size=(4, 11)).astype(np.float32)
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=4), 3)
    _compare_steps(*_pair(_dropout_model(0.0)), x, y)
    _compare_steps(*_pair(_dropout_model(1.0)), x, y)


def test_dropout_masks_keep_the_expected_fraction(rng):
    """Training mode, native: about 1 - rate of the activations survive, scaled by 1 / (1 - rate)."""
    def make():
        i = Input(shape=(2000,))
        model = Model(i, layers.Dropout(0.3)(i, training=True))
        return model

    native = graphc.build(make(), target="native", level=0)
    x = np.ones((3, 2000), np.float32)
    first, second = native.predict(x), native.predict(x)
    for out in (first, second):
        kept = out != 0
        assert abs(kept.mean() - 0.7) < 0.02
        np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    assert not np.array_equal(first, second)


# ---------------------------------------------------------------------------- grouped convolutions
def _grouped(rank: int):
    def make():
        graphc.utils.set_random_seed(13)
        if rank == 2:
            x = Input(shape=(7, 5, 4))
            h = layers.Conv2D(6, 3, groups=2, padding="same", activation="relu")(x)
            h = layers.Conv2D(4, (3, 2), groups=2, strides=2, dilation_rate=1)(h)
        else:
            x = Input(shape=(17, 6))
            h = layers.Conv1D(9, 3, groups=3, dilation_rate=2, padding="same", activation="tanh")(x)
            h = layers.Conv1D(3, 1, groups=3, strides=3)(h)
        model = Model(x, layers.Dense(3, activation="softmax")(layers.Flatten()(h)))
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
        return model

    return make


@pytest.mark.parametrize("rank", [1, 2])
def test_grouped_convolution_gradients_match_the_reference(rank, rng):
    a, b = _pair(_grouped(rank))
    shape = (3, 7, 5, 4) if rank == 2 else (3, 17, 6)
    x = rng.normal(size=shape).astype(np.float32)
    y = graphc.utils.to_categorical(rng.integers(0, 3, size=3), 3)
    _compare_steps(a, b, x, y)
    _compare_steps(a, b, x[:1], y[:1], steps=(1,))


# ---------------------------------------------------------------------------- the backward ops alone
GRAD_OPS = [
    ("lstm_grad", 4, 2, {"return_sequences": True}),
    ("lstm_grad", 4, 2, {"go_backwards": True, "activation": "softsign"}),
    ("gru_grad", 3, 1, {"return_sequences": True, "go_backwards": True}),
    ("gru_grad", 3, 1, {"recurrent_activation": "hard_sigmoid"}),
    ("simple_rnn_grad", 1, 1, {"activation": "relu"}),
    ("simple_rnn_grad", 1, 1, {"return_sequences": True}),
]


@pytest.mark.parametrize("op,gates,n_states,attrs", GRAD_OPS,
                         ids=[f"{o[0]}-{'-'.join(o[3])}" for o in GRAD_OPS])
def test_backward_op_with_states_and_every_cotangent(op, gates, n_states, attrs, rng):
    """Every output (including the initial states' gradients) for every cotangent, at odd sizes."""
    from tests.backends.llvm.helpers import assert_matches_reference, load

    units, features = 7, 3
    g = Graph(op)
    x = g.add_input("x", TensorType("float32", ("batch", "seq", features)))
    w = [g.add_constant(name, (0.4 * rng.standard_normal(shape)).astype(np.float32)) for name, shape in
         (("kernel", (features, gates * units)), ("recurrent", (units, gates * units)),
          ("bias", (2, gates * units) if op == "gru_grad" else (gates * units,)))]
    states = [g.add_input(f"state{i}", TensorType("float32", ("batch", units))) for i in range(n_states)]
    out_shape = ("batch", "seq", units) if attrs.get("return_sequences") else ("batch", units)
    cots = [g.add_input("d_out", TensorType("float32", out_shape))] + \
        [g.add_input(f"d_state{i}", TensorType("float32", ("batch", units))) for i in range(n_states)]
    outs = OpBuilder(g).emit(op, x, *w, *states, *cots, **attrs)
    g.set_outputs(list(outs))
    lib = load(g)
    for threads, (n, t) in ((1, (1, 5)), (2, (3, 1)), (2, (4, 6))):
        sizes = {"x": (n, t, features), "d_out": (n, t, units) if attrs.get("return_sequences") else (n, units)}
        feeds = {name: rng.standard_normal(sizes.get(name, (n, units))).astype(np.float32) for name in g.inputs}
        assert_matches_reference(g, lib, feeds, threads=threads, label=f"{op} batch {n} seq {t}")
