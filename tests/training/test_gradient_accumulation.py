"""``gradient_accumulation_steps`` against Keras 3: ``fit`` over batch counts that the window does not
divide (the window runs across epochs), on the reference and native trainers; every optimizer, with
clipping, weight decay and a learning-rate schedule; iterations, accumulators and saved state.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import optimizers

pytestmark = pytest.mark.keras


def _mlp(lib):
    inp = lib.Input(shape=(7,))
    h = lib.layers.Dense(5, activation="tanh")(inp)
    h = lib.layers.Dense(4, activation="relu", kernel_constraint=lib.constraints.MaxNorm(0.9))(h)
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(h))


def _data(rng, n=13):
    x = rng.standard_normal((n, 7)).astype("float32")
    return x, np.eye(3, dtype="float32")[rng.integers(0, 3, size=n)]


def _fit_both(keras, rng, name, kwargs, target, epochs=2, batch_size=3):
    """graphc and Keras fit on the same data (13 samples in batches of 3: 5 batches an epoch)."""
    model, kmodel = _mlp(graphc), _mlp(keras)
    # Weights of unit scale, drawn from the test's rng: the softmax is then far from uniform, so the
    # accuracy metric compares decisions, not float32 ties between near-equal probabilities (which the
    # run-order-dependent default initialization sometimes gave).
    model.set_weights([rng.standard_normal(w.shape).astype("float32") for w in model.get_weights()])
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=getattr(optimizers, name)(**kwargs), loss="categorical_crossentropy", metrics=["acc"])
    kmodel.compile(optimizer=getattr(keras.optimizers, name)(**kwargs), loss="categorical_crossentropy",
                   metrics=["acc"])
    if target == "native":
        graphc.build(model, target="native", training=True)
    x, y = _data(rng)
    gh = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    kh = kmodel.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model, kmodel, gh, kh


def _assert_same(model, kmodel, gh, kh):
    assert list(gh.history) == list(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(gh.history[key], kh.history[key], rtol=1e-4, atol=1e-6, err_msg=key)
    for var, gw, kw in zip(model.weights, model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=var.path)
    assert model.optimizer.iterations == int(kmodel.optimizer.iterations)
    assert model.optimizer._iterations == int(kmodel.optimizer._iterations)


CORE = [("SGD", {"learning_rate": 0.1, "momentum": 0.9}), ("Adam", {"learning_rate": 0.01}),
        ("RMSprop", {"learning_rate": 0.01})]


@pytest.mark.parametrize("target", ["reference", "native"])
@pytest.mark.parametrize("steps", [None, 2, 3])
@pytest.mark.parametrize("name,kwargs", CORE, ids=[c[0] for c in CORE])
def test_fit_with_accumulation_equals_keras(keras, rng, name, kwargs, steps, target):
    _assert_same(*_fit_both(keras, rng, name, {**kwargs, "gradient_accumulation_steps": steps}, target))


OTHERS = [
    ("Adagrad", {"learning_rate": 0.1}),
    ("Adadelta", {"learning_rate": 1.0, "weight_decay": 0.1}),
    ("Adamax", {"learning_rate": 0.02, "global_clipnorm": 0.1}),
    ("Nadam", {"learning_rate": 0.02, "clipvalue": 0.02, "weight_decay": 0.05}),
    ("Lion", {"learning_rate": 0.003, "weight_decay": 0.2}),
    ("Ftrl", {"learning_rate": 0.2, "l1_regularization_strength": 0.01, "l2_regularization_strength": 0.02}),
    ("AdamW", {"learning_rate": 0.01, "clipnorm": 0.05}),
    ("SGD", {"learning_rate": 0.1, "nesterov": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("RMSprop", {"momentum": 0.5, "centered": True, "global_clipnorm": 0.3}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True, "weight_decay": 0.01}),
]


@pytest.mark.parametrize("name,kwargs", OTHERS, ids=[f"{c[0]}-{i}" for i, c in enumerate(OTHERS)])
def test_every_optimizer_accumulates_like_keras(keras, rng, name, kwargs):
    """Clipping and weight decay act on the window's mean gradient, on update batches only."""
    _assert_same(*_fit_both(keras, rng, name, {**kwargs, "gradient_accumulation_steps": 3}, "reference"))


@pytest.mark.parametrize("target", ["reference", "native"])
def test_schedules_count_batches_and_adam_counts_updates(keras, rng, target):
    """The learning rate is the schedule at the batches seen; Adam's bias correction counts updates."""
    def opt(lib):
        schedule = lib.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)
        return lib.optimizers.Adam(learning_rate=schedule, gradient_accumulation_steps=2)

    model, kmodel = _mlp(graphc), _mlp(keras)
    # Weights of unit scale, drawn from the test's rng: the softmax is then far from uniform, so the
    # accuracy metric compares decisions, not float32 ties between near-equal probabilities (which the
    # run-order-dependent default initialization sometimes gave).
    model.set_weights([rng.standard_normal(w.shape).astype("float32") for w in model.get_weights()])
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=opt(graphc), loss="categorical_crossentropy")
    kmodel.compile(optimizer=opt(keras), loss="categorical_crossentropy")
    if target == "native":
        graphc.build(model, target="native", training=True)
    x, y = _data(rng)
    gh = model.fit(x, y, batch_size=3, epochs=2, shuffle=False, verbose=0)
    kh = kmodel.fit(x, y, batch_size=3, epochs=2, shuffle=False, verbose=0)
    _assert_same(model, kmodel, gh, kh)
    assert model.optimizer.iterations == 5 and model.optimizer._iterations == 10
    assert np.isclose(model.optimizer.learning_rate, float(kmodel.optimizer.learning_rate), rtol=1e-6)


def test_accumulators_hold_the_window_and_save_like_keras(keras, rng, tmp_path):
    """After 5 batches with a window of 2 the accumulators hold the last batch's gradient; the optimizer's
    variables (iterations, learning rate, accumulators, slots) match Keras's and go through .keras files."""
    model, kmodel, gh, kh = _fit_both(keras, rng, "SGD", {"learning_rate": 0.1, "momentum": 0.9,
                                                          "gradient_accumulation_steps": 2}, "reference", epochs=1)
    _assert_same(model, kmodel, gh, kh)
    kvars = [np.asarray(v.numpy()) for v in kmodel.optimizer.variables]
    gvars = model.optimizer.variables
    assert len(gvars) == len(kvars) == 2 + 2 * len(model.trainable_weights)
    for i, (g, k) in enumerate(zip(gvars, kvars)):
        np.testing.assert_allclose(np.asarray(g, dtype=np.float64), k.astype(np.float64), rtol=1e-4, atol=2e-6,
                                   err_msg=f"optimizer variable {i}")
    assert any(np.abs(k).max() > 0 for k in kvars[2:2 + len(model.trainable_weights)])  # a window is open
    path = tmp_path / "acc.keras"
    kmodel.save(path)
    loaded = graphc.saving.load_model(path)
    assert loaded.optimizer.gradient_accumulation_steps == 2 and loaded.optimizer._iterations == 5
    for g, k in zip(loaded.optimizer.variables, kvars):
        np.testing.assert_allclose(np.asarray(g, dtype=np.float64), k.astype(np.float64), rtol=1e-6)
    x, y = _data(rng, 6)
    np.testing.assert_allclose(loaded.train_on_batch(x, y), [float(v) for v in kmodel.train_on_batch(x, y)],
                               rtol=1e-5)
    for var, gw, kw in zip(loaded.weights, loaded.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=var.path)
    back = tmp_path / "back.keras"
    loaded.save(back)
    reread = keras.saving.load_model(back)
    for g, k in zip(loaded.optimizer.variables, reread.optimizer.variables):
        np.testing.assert_allclose(np.asarray(g, dtype=np.float64), np.asarray(k.numpy(), dtype=np.float64),
                                   rtol=1e-6)


def test_iterations_count_updates(rng):
    opt = optimizers.SGD(gradient_accumulation_steps=3)
    opt._iterations = 7
    assert opt.iterations == 2
    opt.iterations = 4
    assert opt._iterations == 12 and opt.iterations == 4
    assert opt.get_config()["gradient_accumulation_steps"] == 3
    assert optimizers.deserialize(optimizers.serialize(opt)).gradient_accumulation_steps == 3


@pytest.mark.parametrize("steps", [1, 0.5])
def test_fewer_than_two_steps_are_refused_as_keras_does(keras, steps):
    with pytest.raises(ValueError, match="gradient_accumulation_steps` must be an integer >= 2"):
        keras.optimizers.SGD(gradient_accumulation_steps=steps)
    with pytest.raises(ValueError, match="gradient_accumulation_steps` must be an integer >= 2"):
        optimizers.SGD(gradient_accumulation_steps=steps)


def test_fractional_steps_are_refused_by_name():
    with pytest.raises(ValueError, match=r"Adam\(gradient_accumulation_steps=2.5\)"):
        optimizers.Adam(gradient_accumulation_steps=2.5)
