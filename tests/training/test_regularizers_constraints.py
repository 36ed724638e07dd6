"""Regularizers and constraints honoured as Keras 3 honours them.

- The penalties (L1, L2, L1L2, OrthogonalRegularizer) and projections (MaxNorm, MinMaxNorm,
  NonNeg, UnitNorm) equal Keras's on arrays, and serialize as Keras does.
- One and three training steps of models whose layers carry weight regularizers, activity
  regularizers and constraints equal Keras's steps (the reported loss and every weight), on the
  reference interpreter and in native code (the constraints run inside the step graph).
- fit's history and evaluate include the penalties as Keras's do; ``model.losses`` lists them.
- A ``.keras`` file Keras wrote with regularizers and constraints loads with them and trains like
  Keras; graphc's file gives Keras the same options back.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphc
from graphc import constraints, layers, regularizers
from graphc.saving.errors import UnsupportedKerasError
from tests.saving.helpers import edit_config, randomize

pytestmark = pytest.mark.keras


# ---------------------------------------------------------------------------- the objects themselves
def _keras_penalty(keras, regularizer, w):
    return float(keras.regularizers.get(regularizer)(keras.ops.convert_to_tensor(w)))


REGULARIZERS = [
    ("L1", lambda R: R.L1(0.03)),
    ("L2", lambda R: R.L2(0.2)),
    ("L1L2", lambda R: R.L1L2(l1=0.01, l2=0.05)),
    ("L1L2_l1_only", lambda R: R.L1L2(l1=0.3)),
    ("l1_name", lambda R: "l1"),
    ("l2_name", lambda R: "l2"),
    ("l1l2_name", lambda R: "l1l2"),
    ("orthogonal_rows", lambda R: R.OrthogonalRegularizer(0.1)),
    ("orthogonal_columns", lambda R: R.OrthogonalRegularizer(0.3, mode="columns")),
]


@pytest.mark.parametrize("name,make", REGULARIZERS, ids=[r[0] for r in REGULARIZERS])
def test_penalties_and_configs_equal_keras(keras, rng, name, make):
    w = rng.standard_normal((7, 5)).astype(np.float32)
    ours = regularizers.get(make(regularizers))
    theirs = keras.regularizers.get(make(keras.regularizers))
    np.testing.assert_allclose(float(ours(w)), _keras_penalty(keras, theirs, w), rtol=1e-6)
    assert regularizers.serialize(ours) == keras.regularizers.serialize(theirs)
    again = regularizers.get(json.loads(json.dumps(keras.regularizers.serialize(theirs))))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()


CONSTRAINTS = [
    ("max_norm", lambda C: C.MaxNorm(0.8)),
    ("max_norm_axes", lambda C: C.MaxNorm(1.5, axis=[0, 1, 2])),
    ("min_max_norm", lambda C: C.MinMaxNorm(0.5, 1.2, rate=0.7, axis=1)),
    ("non_neg", lambda C: "non_neg"),
    ("unit_norm", lambda C: C.UnitNorm(axis=-1)),
    ("unit_norm_name", lambda C: "unit_norm"),
]


@pytest.mark.parametrize("name,make", CONSTRAINTS, ids=[c[0] for c in CONSTRAINTS])
def test_projections_and_configs_equal_keras(keras, rng, name, make):
    w = (rng.standard_normal((3, 2, 4, 5)) * 0.7).astype(np.float32)
    ours = constraints.get(make(constraints))
    theirs = keras.constraints.get(make(keras.constraints))
    want = np.asarray(theirs(keras.ops.convert_to_tensor(w)))
    np.testing.assert_allclose(ours(w), want, rtol=1e-6, atol=1e-7)
    assert constraints.serialize(ours) == keras.constraints.serialize(theirs)
    again = constraints.get(keras.constraints.serialize(theirs))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()


@pytest.mark.parametrize("make,match", [
    (lambda: regularizers.get(lambda w: 0.01 * w), "Could not interpret regularizer identifier.*define emit"),
    (lambda: regularizers.get("l3"), "Could not interpret regularizer identifier: 'l3'"),
    (lambda: regularizers.L2(-0.1), "Invalid value for argument l2"),
    (lambda: regularizers.OrthogonalRegularizer(mode="diagonal"), "Received: mode=diagonal"),
    (lambda: regularizers.OrthogonalRegularizer()(np.ones((2, 3, 4), np.float32)), "must have rank 2"),
    (lambda: regularizers.get({"class_name": "Fancy", "config": {}}), "unknown regularizer class 'Fancy'"),
    (lambda: constraints.get("positive"), "Could not interpret constraint identifier: 'positive'"),
    (lambda: constraints.MaxNorm(axis=3)(np.ones((2, 3), np.float32)), "axis 3 is out of bounds"),
    (lambda: layers.Dense(3, kernel_constraint=lambda w: w), "Could not interpret constraint identifier"),
])
def test_refusals_name_what_is_wrong(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_documented_l1_l2_name_gives_its_documented_factors():
    assert regularizers.get("l1_l2").get_config() == {"l1": 0.01, "l2": 0.01}


# ---------------------------------------------------------------------------- training steps
def _dense(lib):
    R, C, L = lib.regularizers, lib.constraints, lib.layers
    inp = lib.Input(shape=(7,))
    h = L.Dense(6, activation="tanh", kernel_regularizer=R.L1L2(l1=0.01, l2=0.02), bias_regularizer="l2",
                activity_regularizer=R.L1(0.05), kernel_constraint=C.MaxNorm(0.6), bias_constraint="non_neg")(inp)
    h = L.ActivityRegularization(l1=0.02, l2=0.01)(h)
    h = L.Dense(5, activation="relu", kernel_regularizer=R.OrthogonalRegularizer(0.2),
                kernel_constraint=C.UnitNorm(), activity_regularizer=R.L2(0.1))(h)
    out = L.Dense(3, activation="softmax", kernel_regularizer=R.L2(0.1), bias_constraint=C.MinMaxNorm(0.1, 0.2))(h)
    return lib.Model(inp, out)


def _conv(lib):
    R, C, L = lib.regularizers, lib.constraints, lib.layers
    inp = lib.Input(shape=(9, 7, 3))
    h = L.Conv2D(4, 3, activation="relu", kernel_regularizer=R.L2(0.05), bias_regularizer=R.L1(0.1),
                 kernel_constraint=C.MaxNorm(0.5, axis=[0, 1, 2]), activity_regularizer=R.L2(0.01))(inp)
    h = L.SeparableConv2D(5, 2, depthwise_regularizer=R.L1(0.02), pointwise_regularizer="l2",
                          depthwise_constraint=C.NonNeg(), pointwise_constraint=C.UnitNorm(axis=[0, 1, 2]),
                          bias_constraint="non_neg")(h)
    h = L.DepthwiseConv2D(2, depthwise_regularizer=R.L1L2(0.01, 0.01), bias_regularizer="l1")(h)
    h = L.Conv2DTranspose(3, 2, strides=2, kernel_regularizer=R.L1(0.01),
                          kernel_constraint=C.MinMaxNorm(0.2, 0.4, rate=0.5, axis=[0, 1, 3]))(h)
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(1, kernel_regularizer="l1")(h)
    return lib.Model(inp, out)


def _sequence(lib):
    R, C, L = lib.regularizers, lib.constraints, lib.layers
    inp = lib.Input(shape=(6,), dtype="int32")
    h = L.Embedding(13, 4, embeddings_regularizer=R.L2(0.05), embeddings_constraint=C.MaxNorm(0.03, axis=1))(inp)
    h = L.Conv1D(5, 3, padding="same", kernel_regularizer="l2", kernel_constraint=C.MaxNorm(0.7))(h)
    h = L.LSTM(4, return_sequences=True, kernel_regularizer=R.L1(0.01), recurrent_regularizer=R.L2(0.02),
               bias_regularizer="l2", recurrent_constraint=C.MaxNorm(0.9), activity_regularizer=R.L1(0.01))(h)
    h = L.GRU(3, return_sequences=True, kernel_constraint="non_neg", recurrent_regularizer="l2",
              bias_constraint=C.UnitNorm(axis=1))(h)
    h = L.SimpleRNN(2, kernel_regularizer="l1", bias_constraint=C.MaxNorm(0.05), recurrent_constraint="unit_norm")(h)
    out = L.Dense(2)(h)
    return lib.Model(inp, out)


def _normalization(lib):
    R, C, L = lib.regularizers, lib.constraints, lib.layers
    inp = lib.Input(shape=(5, 4))
    h = L.Dense(6, kernel_regularizer="l2")(inp)
    h = L.BatchNormalization(gamma_regularizer=R.L2(0.1), beta_regularizer=R.L1(0.05), gamma_constraint=C.MaxNorm(2.0),
                             beta_constraint="non_neg")(h)
    h = L.LayerNormalization(gamma_constraint=C.MinMaxNorm(0.5, 1.5, axis=0), beta_regularizer="l2")(h)
    h = L.GlobalAveragePooling1D()(h)
    out = L.Dense(3, activation="softmax")(h)
    return lib.Model(inp, out)


def _data(kind, rng, n=5):
    if kind == "dense":
        return rng.standard_normal((n, 7)).astype("float32"), rng.integers(0, 3, size=(n,))
    if kind == "conv":
        return rng.standard_normal((n, 9, 7, 3)).astype("float32"), rng.standard_normal((n, 1)).astype("float32")
    if kind == "normalization":
        return rng.standard_normal((n, 5, 4)).astype("float32"), np.eye(3, dtype="float32")[rng.integers(0, 3, n)]
    return rng.integers(0, 13, size=(n, 6)).astype("int32"), rng.standard_normal((n, 2)).astype("float32")


BUILDERS = {"dense": _dense, "conv": _conv, "sequence": _sequence, "normalization": _normalization}
LOSSES = {"dense": "sparse_categorical_crossentropy", "conv": "mse", "sequence": "mae",
          "normalization": "categorical_crossentropy"}
STEP_CASES = [
    ("dense", "sgd", "reference"), ("dense", "adam", "reference"), ("dense", "sgd", "native"),
    ("conv", "sgd", "reference"), ("conv", "rmsprop", "native"),
    ("sequence", "sgd", "reference"), ("sequence", "adam", "native"),
    ("normalization", "sgd", "reference"), ("normalization", "sgd", "native"),
]


def _optimizer(lib, name):
    return {"sgd": lambda: lib.optimizers.SGD(0.1, momentum=0.5), "adam": lambda: lib.optimizers.Adam(0.02),
            "rmsprop": lambda: lib.optimizers.RMSprop(0.01)}[name]()


def _twins(keras, kind, rng, optimizer):
    model, kmodel = BUILDERS[kind](graphc), BUILDERS[kind](keras)
    randomize(model, rng)
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=_optimizer(graphc, optimizer), loss=LOSSES[kind])
    kmodel.compile(optimizer=_optimizer(keras, optimizer), loss=LOSSES[kind])
    return model, kmodel


def _assert_same_weights(model, kmodel, what):
    for w, kw in zip(model.weights, kmodel.weights):
        np.testing.assert_allclose(w.numpy(), np.asarray(kw.numpy()), rtol=1e-4, atol=2e-6, err_msg=f"{what}: {w.path}")


@pytest.mark.parametrize("kind,optimizer,target", STEP_CASES, ids=["-".join(c) for c in STEP_CASES])
def test_train_steps_equal_keras(keras, rng, kind, optimizer, target):
    model, kmodel = _twins(keras, kind, rng, optimizer)
    graphc.build(model, target, training=True)
    for step in range(3):
        x, y = _data(kind, rng)
        loss = model.train_on_batch(x, y)
        want = float(kmodel.train_on_batch(x, y))
        assert np.isclose(loss, want, rtol=1e-5, atol=1e-6), f"step {step}: loss {loss} vs Keras {want}"
        _assert_same_weights(model, kmodel, f"{target} step {step}")
    # evaluation reports the penalties too, as Keras's does
    x, y = _data(kind, rng)
    evaluated = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(evaluated, kmodel.evaluate(x, y, verbose=0), rtol=1e-5)
    plain = float(np.mean(np.asarray(keras.losses.get(LOSSES[kind])(y, kmodel.predict(x, verbose=0)))))
    assert evaluated > plain + 1e-3
    for layer in model.layers:
        for var in layer.trainable_weights:
            if isinstance(var.constraint, constraints.NonNeg):
                assert var.numpy().min() >= 0.0


def test_constraints_bind_after_the_step(keras, rng):
    model, kmodel = _twins(keras, "dense", rng, "sgd")
    x, y = _data("dense", rng)
    model.train_on_batch(x, y)
    kernel = model.layers[1].kernel.numpy()
    norms = np.sqrt((kernel ** 2).sum(axis=0))
    assert norms.max() <= 0.6 + 1e-6 and np.isclose(norms, 0.6, rtol=1e-5).any()
    np.testing.assert_allclose(np.sqrt((model.layers[3].kernel.numpy() ** 2).sum(axis=0)), 1.0, rtol=1e-5)
    assert model.layers[1].bias.numpy().min() >= 0.0


def test_fit_history_evaluate_and_losses_equal_keras(keras, rng):
    model, kmodel = _twins(keras, "dense", rng, "adam")
    x, y = _data("dense", rng, 23)
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, validation_split=0.25)
    khistory = kmodel.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, validation_split=0.25)
    for key in khistory.history:
        np.testing.assert_allclose(history.history[key], khistory.history[key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), kmodel.evaluate(x, y, verbose=0), rtol=1e-5)
    # model.losses: Keras lists the activity penalties of the last call first, then the weights'
    want = [float(v) for v in kmodel.losses][-len(model.losses):]
    np.testing.assert_allclose([float(v) for v in model.losses], want, rtol=1e-5)
    model(x)
    np.testing.assert_allclose([float(v) for v in model.losses], [float(v) for v in kmodel.losses], rtol=1e-5)


def test_frozen_layers_do_not_regularize(keras, rng):
    model, kmodel = _twins(keras, "dense", rng, "sgd")
    for m in (model, kmodel):
        m.layers[1].trainable = False
        m.compile(optimizer=_optimizer(graphc if m is model else keras, "sgd"), loss=LOSSES["dense"])
    for step in range(2):
        x, y = _data("dense", rng)
        np.testing.assert_allclose(model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y)), rtol=1e-5,
                                   err_msg=f"step {step}")
    _assert_same_weights(model, kmodel, "frozen")


# ---------------------------------------------------------------------------- .keras files
@pytest.mark.parametrize("kind", ["dense", "sequence"])
def test_keras_file_with_regularizers_loads_and_trains_like_keras(keras, rng, tmp_path, kind):
    kmodel = BUILDERS[kind](keras)
    path = tmp_path / "regularized.keras"
    kmodel.save(path)
    model = graphc.models.load_model(path)
    for layer, klayer in zip(model.layers, kmodel.layers):
        config, kconfig = layer.get_config(), klayer.get_config()
        for key in kconfig:
            if key.endswith(("_regularizer", "_constraint")):
                assert config.get(key) == json.loads(json.dumps(kconfig[key])), f"{layer.name}: {key}"
    model.set_weights([np.asarray(w) for w in kmodel.get_weights()])
    model.compile(optimizer=_optimizer(graphc, "sgd"), loss=LOSSES[kind])
    kmodel.compile(optimizer=_optimizer(keras, "sgd"), loss=LOSSES[kind])
    for step in range(3):
        x, y = _data(kind, rng)
        np.testing.assert_allclose(model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y)), rtol=1e-5,
                                   err_msg=f"step {step}")
    _assert_same_weights(model, kmodel, "loaded")


def test_graphc_file_gives_keras_the_same_options(keras, tmp_path):
    model = _conv(graphc)
    path = tmp_path / "graphc.keras"
    model.save(path)
    kmodel = keras.models.load_model(path)
    want = _conv(keras)
    for klayer, wlayer in zip(kmodel.layers, want.layers):
        for key, value in wlayer.get_config().items():
            if key.endswith(("_regularizer", "_constraint")):
                assert klayer.get_config()[key] == value, f"{klayer.name}: {key}"


def test_a_layer_without_the_option_refuses_it(keras, rng, tmp_path):
    kmodel = _conv(keras)
    path = tmp_path / "conv.keras"
    kmodel.save(path)
    pooling = {"module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.1}, "registered_name": None}
    edit_config(path, lambda c: c["config"]["layers"][5]["config"].__setitem__("kernel_regularizer", pooling))
    with pytest.raises(UnsupportedKerasError, match="the Keras option kernel_regularizer=.* of GlobalAveragePooling2D"):
        graphc.models.load_model(path)
