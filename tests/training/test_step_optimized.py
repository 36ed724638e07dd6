"""Optimized training steps: the step graph goes through the optimizer before native code (simplified,
epilogues fused, elementwise chains fused), launches far fewer kernels, updates each weight and its
optimizer slots in one kernel, keeps every state constant, and trains exactly as the unoptimized
reference step does (rtol 1e-4 after 3 steps) for MLP, conv+BatchNorm, LSTM and dropout models under
SGD with momentum, Adam, RMSprop and AdamW."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm.kernels.random import uniform_reference
from graphc.backends.reference import run
from graphc.ops.registry import get
from graphc.training.loop import standardize_x
from graphc.training.native_step import train_step_library
from graphc.training.optimizers import SGD, Adam, AdamW, Ftrl, Lion, Nadam, RMSprop
from graphc.training.step_optimizer import optimize_step_graph
from tests.training import small_models

RTOL, ATOL = 1e-4, 5e-5  # RMSprop's first steps divide gradients by their own size (see test_training_native.py)


MODELS = {"mlp": (small_models.mlp, (7,)), "conv_bn": (small_models.conv_bn, (9, 9, 3)),
          "lstm": (small_models.lstm, (5, 4)), "dropout": (small_models.dropout, (11,))}
OPTIMIZERS = {
    "sgd_momentum": lambda: SGD(learning_rate=0.05, momentum=0.9),
    "adam": lambda: Adam(learning_rate=0.01),
    "rmsprop": lambda: RMSprop(learning_rate=0.01),
    "adamw": lambda: AdamW(learning_rate=0.01, weight_decay=0.05),
}


def _compiled(build, optimizer: str, seed: int = 5):
    graphc.utils.set_random_seed(seed)
    model = build()
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss="mse")
    return model


def _step(model, x, y):
    trainer = model._graphc_trainer
    return trainer._step(standardize_x(model, x), [y], True)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_native_optimized_step_equals_the_reference_step(name, optimizer, rng, monkeypatch):
    build, shape = MODELS[name]
    a, b = _compiled(build, optimizer), _compiled(build, optimizer)
    b.set_weights(a.get_weights())
    x = rng.normal(size=(5,) + shape).astype(np.float32)
    y = rng.normal(size=(5, 3)).astype(np.float32)
    native = graphc.build(a, target="native", training=True)
    got = [native.train_step(x, y) for _ in range(3)]
    if name == "dropout":  # the reference draws the native masks: the hash of (seed, op position, call)
        (step,) = [s for s in native._steps.values() if s.training]
        (index,) = [i for i, op in enumerate(step.graph.ops()) if op.type == "random_uniform_like"]
        optimized = optimize_step_graph(step.graph, keep=step.params)[0]
        assert [op.type for op in optimized.ops()][index] == "random_uniform_like"  # kept at its position
        calls = iter(range(3))
        monkeypatch.setattr(get("random_uniform_like"), "reference",
                            lambda v, *, seed: uniform_reference(seed, index, next(calls), v.shape))
    reference = graphc.build(b, target="reference", training=True)
    want = [reference.train_step(x, y) for _ in range(3)]
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g["loss"], w["loss"], rtol=RTOL, err_msg=f"loss, step {k}")
    for i, (p, q) in enumerate(zip(a.get_weights(), b.get_weights())):
        np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL, err_msg=f"weight {i} after 3 steps")
    assert len(a.optimizer.slots) == len(b.optimizer.slots)
    for (key, got_slots), want_slots in zip(a.optimizer.slots.items(), b.optimizer.slots.values()):  # same order
        for slot, value in want_slots.items():
            np.testing.assert_allclose(got_slots[slot], value, rtol=RTOL, atol=ATOL,
                                       err_msg=f"optimizer slot {key}/{slot}")
    assert a.optimizer._iterations == b.optimizer._iterations == 3


MORE_OPTIMIZERS = {
    "adam_accumulated_clipped": lambda: Adam(0.01, global_clipnorm=1.0, gradient_accumulation_steps=2),
    "sgd_nesterov_clipvalue": lambda: SGD(0.05, momentum=0.9, nesterov=True, clipvalue=0.1),
    "nadam": lambda: Nadam(0.01),
    "lion": lambda: Lion(0.001),
    "ftrl": lambda: Ftrl(0.05),
}


@pytest.mark.parametrize("optimizer", sorted(MORE_OPTIMIZERS))
def test_other_updates_fuse_and_train_as_the_reference(optimizer, rng):
    """Clipping, gradient accumulation (``where`` on the update batches), shared slots (Nadam), sign (Lion)."""

    def build():
        graphc.utils.set_random_seed(3)
        x = Input(shape=(7,))
        model = Model(x, layers.Dense(3, activation="sigmoid")(layers.Dense(17, activation="gelu")(x)))
        model.compile(optimizer=MORE_OPTIMIZERS[optimizer](), loss="mse")
        return model

    a, b = build(), build()
    b.set_weights(a.get_weights())
    x, y = rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    native = graphc.build(a, target="native", training=True)
    reference = graphc.build(b, target="reference", training=True)
    for k in range(4):
        np.testing.assert_allclose(native.train_step(x, y)["loss"], reference.train_step(x, y)["loss"], rtol=RTOL,
                                   err_msg=f"loss, step {k}")
    for i, (p, q) in enumerate(zip(a.get_weights(), b.get_weights())):
        np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL, err_msg=f"weight {i} after 4 steps")


def test_mlp_adam_step_launches_fewer_kernels_and_one_per_weight_update():
    model = _compiled(small_models.mlp, "adam")
    before = train_step_library(model, optimize=False).stats["kernels"]
    after = train_step_library(model, optimize=True).stats["kernels"]
    assert after < before / 3, (before, after)

    rng = np.random.default_rng(0)
    step = _step(model, rng.normal(size=(2, 7)).astype(np.float32), rng.normal(size=(2, 3)).astype(np.float32))
    graph, report = optimize_step_graph(step.graph, keep=step.params, verify=True)
    updates = graph.meta["state_updates"]
    weights = [c for c in step.graph.constants if step.graph.values[c].trainable]
    assert len(weights) == 4
    for w in weights:
        key = step.params[w].path
        slots = [c for c, (k, _) in step.slots.items() if k == key]
        assert len(slots) == 2  # Adam's m and v
        producers = {graph.values[updates[c]].producer for c in [w, *slots]}
        assert len(producers) == 1, (w, producers)  # the weight, m and v: one op ...
        op = graph.op(producers.pop())
        assert op.type == "fused_elementwise" and len(op.outputs) == 3  # ... one kernel, three outputs
    assert report.ops_after.get("mul", 0) == 0 and report.ops_after.get("sqrt", 0) == 0


def test_state_constants_survive_with_their_names_order_and_outputs():
    """Adam's zero slots of one bias are equal bytes: they must stay two constants (no CSE, no folding)."""
    model = _compiled(small_models.mlp, "adam")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32)
    step = _step(model, x, y)
    graph, _ = optimize_step_graph(step.graph, keep=step.params, verify=True)
    assert graph.inputs == step.graph.inputs and graph.outputs == step.graph.outputs
    state = list(step.graph.meta["state_updates"])
    assert [c for c in graph.constants if c in state] == [c for c in step.graph.constants if c in state]
    for c in state:
        assert graph.values[c].kind == "constant" and graph.num_uses(c) > 0
        assert graph.values[c].trainable == step.graph.values[c].trainable
    feeds = {step.graph.inputs[0]: x, step.graph.inputs[1]: y, step.graph.inputs[2]: np.asarray(0.01, np.float32)}
    want, got = run(step.graph, feeds), run(graph, feeds)
    for name in step.graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_two_draws_of_one_value_stay_two_draws():
    """Two Dropout layers on the same tensor with the same seed: two random ops after optimization."""
    x = Input(shape=(6,))
    h = layers.Dense(5)(x)
    out = layers.Add()([layers.Dropout(0.5, seed=3)(h), layers.Dropout(0.5, seed=3)(h)])
    graphc.utils.set_random_seed(2)
    model = Model(x, out)
    model.compile(optimizer="sgd", loss="mse")
    step = _step(model, np.ones((2, 6), np.float32), np.ones((2, 5), np.float32))
    graph, _ = optimize_step_graph(step.graph, keep=step.params, verify=True)
    assert graph.op_counts()["random_uniform_like"] == step.graph.op_counts()["random_uniform_like"] == 2
