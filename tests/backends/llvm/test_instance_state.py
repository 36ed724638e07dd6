"""Native training state lives in the instance: no weight byte crosses the C ABI between steps,
the host reads weights and optimizer slots back only when asked, hyperparameters change without
recompiling, and the random state is per instance (same seed, same masks; instances of one
library never disturb each other)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm.kernels.random import uniform_reference
from graphc.training.native_step import NativeStepRunner

RTOL, ATOL = 1e-4, 5e-5


def _mlp(seed: int = 4, *, dropout: float = 0.0, batchnorm: bool = False, optimizer="adam"):
    graphc.utils.set_random_seed(seed)
    x = Input(shape=(7,))
    h = layers.Dense(17, activation="relu")(x)
    if batchnorm:
        h = layers.BatchNormalization()(h)
    if dropout:
        h = layers.Dropout(dropout)(h)
    y = layers.Dense(3)(h)
    model = Model(x, y)
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    return model


def _data(rng, n: int = 8):
    return rng.standard_normal((n, 7)).astype(np.float32), rng.standard_normal((n, 3)).astype(np.float32)


def _train_step(trainer) -> object:
    """The trainer's (only) training step object."""
    return next(s for s in trainer._steps.values() if s.training)


def test_no_weight_bytes_cross_the_abi_between_steps(rng):
    model = _mlp()
    x, y = _data(rng)
    trainer = graphc.build(model, target="native", training=True)
    trainer.train_step(x, y)  # the first step pushes the host's initial state in
    inst = trainer.runner.compiled(_train_step(trainer)).instance
    after_first = dict(inst.transfers)
    assert after_first["set_calls"] > 0
    for _ in range(5):
        trainer.train_step(x, y)
    assert inst.transfers == after_first, "a training step moved weights through set_weight/get_weight"
    # asked for, the weights come back once (one get_weight per weight), then no more
    weights = model.get_weights()
    pulled = inst.transfers["get_calls"] - after_first["get_calls"]
    assert pulled == len(weights)
    model.get_weights()
    assert inst.transfers["get_calls"] - after_first["get_calls"] == pulled
    # and the next step moves nothing in (the host copies equal the instance's)
    before = dict(inst.transfers)
    trainer.train_step(x, y)
    assert inst.transfers == before


@pytest.mark.parametrize("batchnorm", [False, True])
def test_state_in_the_instance_equals_the_reference(batchnorm, rng):
    a, b = _mlp(batchnorm=batchnorm), _mlp(batchnorm=batchnorm)
    b.set_weights(a.get_weights())
    x, y = _data(rng)
    native = graphc.build(a, target="native", training=True)
    reference = graphc.build(b, target="reference", training=True)
    for k in range(1, 4):
        got, want = native.train_step(x, y), reference.train_step(x, y)
        if k in (1, 3):
            np.testing.assert_allclose(got["loss"], want["loss"], rtol=RTOL, atol=1e-6)
            for p, q in zip(a.get_weights(), b.get_weights()):  # moving statistics included
                np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL)
    assert native.optimizer.iterations == reference.optimizer.iterations == 3
    # the slots are keyed by weight path (the twins' layer names differ): compared in order
    native_slots, reference_slots = list(native.optimizer.slots.values()), list(reference.optimizer.slots.values())
    assert len(native_slots) == len(reference_slots) > 0
    for got_slots, want_slots in zip(native_slots, reference_slots):
        for name, want in want_slots.items():
            np.testing.assert_allclose(got_slots[name], want, rtol=RTOL, atol=ATOL)
    # the evaluation step (another library) sees the trained weights
    np.testing.assert_allclose(native.test_step(x, y)["loss"], reference.test_step(x, y)["loss"], rtol=RTOL)


def test_host_assignments_reach_the_instance(rng):
    a, b = _mlp(), _mlp()
    x, y = _data(rng)
    native = graphc.build(a, target="native", training=True)
    reference = graphc.build(b, target="reference", training=True)
    native.train_step(x, y)
    a.set_weights(b.get_weights())  # set on the host: pushed before the next step
    for slots in native.optimizer.slots.values():  # back to the reference's fresh optimizer state
        for name in list(slots):
            slots[name] = np.zeros_like(slots[name])
    native.optimizer.iterations = 0
    got, want = native.train_step(x, y), reference.train_step(x, y)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=RTOL)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL)


def test_learning_rate_changes_without_recompiling(rng):
    a, b = _mlp(optimizer="sgd"), _mlp(optimizer="sgd")
    b.set_weights(a.get_weights())
    x, y = _data(rng)
    native = graphc.build(a, target="native", training=True)
    reference = graphc.build(b, target="reference", training=True)
    for lr in (0.01, 0.5, 0.0, 0.2):
        native.optimizer.learning_rate = lr
        reference.optimizer.learning_rate = lr
        np.testing.assert_allclose(native.train_step(x, y)["loss"], reference.train_step(x, y)["loss"], rtol=RTOL)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=RTOL, atol=ATOL)
    step = _train_step(native)
    assert len(native.runner._compiled) == 1
    assert native.runner.compiled(step).instance.get_hyperparameter("learning_rate") == pytest.approx(0.2)


def _dropout_trainer(seed: int):
    model = _mlp(dropout=0.5, optimizer="sgd")
    trainer = graphc.build(model, target="native", training=True, seed=seed)
    return model, trainer


def test_a_fresh_instance_with_the_same_seed_reproduces_dropout(rng):
    x, y = _data(rng)
    runs = []
    for seed in (7, 7, 8):
        model, trainer = _dropout_trainer(seed)
        losses = [trainer.train_step(x, y)["loss"] for _ in range(3)]
        runs.append((losses, model.get_weights()))
    assert runs[0][0] == runs[1][0]
    for p, q in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(p, q)
    assert runs[0][0] != runs[2][0]


def test_instance_seed_enters_the_documented_stream():
    assert not np.array_equal(uniform_reference(5, 0, 0, (9,), instance_seed=1), uniform_reference(5, 0, 0, (9,)))
    np.testing.assert_array_equal(uniform_reference(5, 0, 3, (9,), instance_seed=0), uniform_reference(5, 0, 3, (9,)))


def test_two_instances_of_one_library_do_not_disturb_each_other(rng):
    x, y = _data(rng)
    model, trainer = _dropout_trainer(3)
    trainer.train_step(x, y)  # compiles the step library
    step = _train_step(trainer)
    library = trainer.runner.compiled(step).library
    c = trainer.runner.compiled(step)
    xs, ys = [x.astype(np.float32)], [y.astype(np.float32)]
    weights = {w.name: c.instance.get_weight(w.name) for w in library.weights}

    def fresh():
        inst = library.instance(1, seed=3)
        for name, value in weights.items():
            inst.set_weight(name, value)
        return inst

    alone = fresh()
    alone_losses = [alone.train_step(xs, ys)[0] for _ in range(4)]
    first, second = fresh(), fresh()
    interleaved_first, interleaved_second = [], []
    for _ in range(4):
        interleaved_first.append(first.train_step(xs, ys)[0])
        interleaved_second.append(second.train_step(xs, ys)[0])
    np.testing.assert_array_equal(interleaved_first, alone_losses)
    np.testing.assert_array_equal(interleaved_second, alone_losses)
    for w in library.weights:
        np.testing.assert_array_equal(first.get_weight(w.name), alone.get_weight(w.name))
    assert len(set(np.asarray(alone_losses).tolist())) > 1  # each step drew new masks


def test_runner_without_a_train_step_graph_refuses_nothing(rng):
    """Evaluation graphs (no optimizer) run through gc_instance_run on their own library."""
    model = _mlp()
    x, y = _data(rng)
    trainer = graphc.build(model, target="native", training=True)
    assert isinstance(trainer.runner, NativeStepRunner)
    ev = trainer.test_step(x, y)
    ref = graphc.build(_clone(model), target="reference", training=True).test_step(x, y)
    np.testing.assert_allclose(ev["loss"], ref["loss"], rtol=RTOL)


def _clone(model):
    twin = _mlp()
    twin.set_weights(model.get_weights())
    return twin
