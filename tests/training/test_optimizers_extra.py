"""Adagrad, Adadelta, Adamax, Nadam, Lion and Ftrl, gradient clipping, weight decay and learning-rate
schedules against Keras: one and three training steps (loss and every weight, slots through the
weights) on the reference and native trainers, schedule values, configs.
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
    h = lib.layers.Dense(4, activation="relu")(h)
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(h))


CASES = [
    ("Adagrad", {"learning_rate": 0.1}),
    ("Adagrad", {"learning_rate": 0.05, "initial_accumulator_value": 0.5, "epsilon": 1e-3, "clipnorm": 0.05}),
    ("Adadelta", {"learning_rate": 1.0}),
    ("Adadelta", {"learning_rate": 0.5, "rho": 0.8, "epsilon": 1e-4, "weight_decay": 0.1}),
    ("Adamax", {"learning_rate": 0.01}),
    ("Adamax", {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.9, "global_clipnorm": 0.1}),
    ("Nadam", {"learning_rate": 0.01}),
    ("Nadam", {"learning_rate": 0.02, "beta_1": 0.8, "clipvalue": 0.02, "weight_decay": 0.05}),
    ("Lion", {"learning_rate": 0.01}),
    ("Lion", {"learning_rate": 0.003, "beta_1": 0.5, "beta_2": 0.9, "weight_decay": 0.2}),
    ("Ftrl", {"learning_rate": 0.1}),
    ("Ftrl", {"learning_rate": 0.2, "learning_rate_power": -0.3, "l1_regularization_strength": 0.01,
              "l2_regularization_strength": 0.02, "l2_shrinkage_regularization_strength": 0.03, "beta": 0.1}),
    ("SGD", {"learning_rate": 0.1, "weight_decay": 0.1, "momentum": 0.5}),
    ("RMSprop", {"weight_decay": 0.05, "clipnorm": 0.2}),
    ("Adam", {"learning_rate": 0.01, "weight_decay": 0.01, "global_clipnorm": 0.5}),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def _schedule(lib_schedules, kind):
    return {"exponential": lambda: lib_schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5),
            "piecewise": lambda: lib_schedules.PiecewiseConstantDecay([0, 1], [0.1, 0.05, 0.01]),
            "cosine": lambda: lib_schedules.CosineDecay(0.01, decay_steps=3, alpha=0.1, warmup_target=0.1,
                                                        warmup_steps=2),
            "inverse": lambda: lib_schedules.InverseTimeDecay(0.1, decay_steps=1, decay_rate=0.7, staircase=True),
            "polynomial": lambda: lib_schedules.PolynomialDecay(0.1, decay_steps=2, end_learning_rate=0.01,
                                                                power=2.0, cycle=True)}[kind]()


def _steps_equal_keras(keras, rng, target, g_opt, k_opt, steps=3):
    model, kmodel = _mlp(graphc), _mlp(keras)
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=g_opt, loss="categorical_crossentropy")
    kmodel.compile(optimizer=k_opt, loss="categorical_crossentropy")
    graphc.build(model, target=target, training=True)
    for step in range(steps):
        x = rng.standard_normal((5, 7)).astype("float32")
        y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=5)]
        got, want = model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
        assert np.isclose(got, want, rtol=1e-5, atol=1e-6), f"step {step}: loss {got} vs Keras {want}"
        for var, gw, kw in zip(model.weights, model.get_weights(), kmodel.get_weights()):
            np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=f"step {step}: {var.path}")
    assert model.optimizer.iterations == int(kmodel.optimizer.iterations)


@pytest.mark.parametrize("target", ["reference", "native"])
@pytest.mark.parametrize("name,kwargs", CASES, ids=IDS)
def test_training_steps_equal_keras(keras, rng, name, kwargs, target):
    _steps_equal_keras(keras, rng, target, getattr(optimizers, name)(**kwargs),
                       getattr(keras.optimizers, name)(**kwargs))


SCHEDULES = ["exponential", "piecewise", "cosine", "inverse", "polynomial"]


@pytest.mark.parametrize("kind", SCHEDULES)
def test_schedule_values_equal_keras(keras, kind):
    g, k = _schedule(optimizers.schedules, kind), _schedule(keras.optimizers.schedules, kind)
    for step in range(12):
        np.testing.assert_allclose(g(step), float(k(step)), rtol=1e-6, err_msg=f"step {step}")
    assert g.get_config() == k.get_config()


@pytest.mark.parametrize("target", ["reference", "native"])
@pytest.mark.parametrize("kind", SCHEDULES)
def test_training_steps_follow_schedules_as_keras(keras, rng, kind, target):
    _steps_equal_keras(keras, rng, target, optimizers.SGD(learning_rate=_schedule(optimizers.schedules, kind),
                                                          momentum=0.5),
                       keras.optimizers.SGD(learning_rate=_schedule(keras.optimizers.schedules, kind),
                                            momentum=0.5), steps=4)


@pytest.mark.parametrize("name", ["Adagrad", "Adadelta", "Adamax", "Nadam", "Lion", "Ftrl"])
def test_configs_equal_keras_and_round_trip(keras, name):
    g, k = getattr(optimizers, name)(), getattr(keras.optimizers, name)()
    g_config, k_config = g.get_config(), k.get_config()
    assert set(g_config) == set(k_config)
    assert k_config["name"].startswith(g_config["name"])  # Keras numbers the names of later instances
    for key, value in k_config.items():
        if key != "name":
            assert g_config[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    again = optimizers.deserialize(keras.optimizers.serialize(k))
    assert type(again) is type(g) and again.get_config() == {**g_config, "name": k_config["name"]}
    assert type(keras.optimizers.deserialize(optimizers.serialize(g))).__name__ == name


def test_schedule_configs_round_trip_through_keras(keras, rng, tmp_path):
    schedule = optimizers.schedules.CosineDecay(0.01, decay_steps=5, warmup_target=0.1, warmup_steps=3)
    opt = optimizers.Nadam(learning_rate=schedule)
    k_opt = keras.optimizers.deserialize(optimizers.serialize(opt))
    assert type(k_opt.learning_rate).__name__ != "float"
    again = optimizers.deserialize(keras.optimizers.serialize(k_opt))
    assert isinstance(again._learning_rate, optimizers.schedules.CosineDecay)
    assert again._learning_rate.get_config() == schedule.get_config()
    model = _mlp(graphc)
    model.compile(optimizer=opt, loss="categorical_crossentropy")
    path = str(tmp_path / "scheduled.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer.learning_rate).__name__ != "float"  # Keras keeps it a schedule


def test_bad_arguments_are_refused_naming_them():
    with pytest.raises(ValueError, match="beta_1"):
        optimizers.Lion(beta_1=0.0)
    with pytest.raises(ValueError, match="learning_rate_power"):
        optimizers.Ftrl(learning_rate_power=0.5)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        optimizers.Ftrl(initial_accumulator_value=-1.0)
    with pytest.raises(ValueError, match="decay_steps"):
        optimizers.schedules.ExponentialDecay(0.1, decay_steps=0, decay_rate=0.5)
    with pytest.raises(ValueError, match="boundaries"):
        optimizers.schedules.PiecewiseConstantDecay([1, 2], [0.1])
