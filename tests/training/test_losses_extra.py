"""The rest of Keras 3's losses (Huber, LogCosh, KLDivergence, Poisson, CosineSimilarity, the hinges,
MSLE, MAPE and the focal crossentropies) against Keras: values on arrays, one and three training
steps on the reference and native trainers (loss and every weight), configs and ``.keras`` files.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import losses

pytestmark = pytest.mark.keras


def _mlp(lib, activation):
    inp = lib.Input(shape=(7,))
    h = lib.layers.Dense(5, activation="tanh")(inp)
    return lib.Model(inp, lib.layers.Dense(3, activation=activation)(h))


def _targets(kind, rng, n=5):
    if kind == "real":
        return rng.standard_normal((n, 3)).astype("float32")
    if kind == "positive":
        return rng.uniform(0.1, 3.0, size=(n, 3)).astype("float32")
    if kind == "binary":
        return rng.integers(0, 2, size=(n, 3)).astype("float32")
    if kind == "signs":
        return (2 * rng.integers(0, 2, size=(n, 3)) - 1).astype("float32")
    if kind == "onehot":
        return np.eye(3, dtype="float32")[rng.integers(0, 3, size=n)]
    p = rng.uniform(0.05, 1.0, size=(n, 3)).astype("float32")  # "distribution"
    return p / p.sum(-1, keepdims=True)


# (graphc loss, the same loss in Keras (built from the keras module), output activation, targets)
CASES = [
    ("huber", lambda k: "huber", None, "real"),
    (lambda: losses.Huber(delta=0.3), lambda k: k.losses.Huber(delta=0.3), None, "real"),
    ("log_cosh", lambda k: "log_cosh", None, "real"),
    (lambda: losses.LogCosh(), lambda k: k.losses.LogCosh(), None, "real"),
    ("kld", lambda k: "kld", "softmax", "distribution"),
    (lambda: losses.KLDivergence(), lambda k: k.losses.KLDivergence(), "softmax", "distribution"),
    ("poisson", lambda k: "poisson", "softplus", "positive"),
    (lambda: losses.Poisson(), lambda k: k.losses.Poisson(), "exponential", "positive"),
    ("cosine_similarity", lambda k: "cosine_similarity", None, "real"),
    (lambda: losses.CosineSimilarity(axis=-1), lambda k: k.losses.CosineSimilarity(axis=-1), None, "real"),
    ("hinge", lambda k: "hinge", "tanh", "binary"),
    (lambda: losses.Hinge(), lambda k: k.losses.Hinge(), "tanh", "signs"),
    ("squared_hinge", lambda k: "squared_hinge", "tanh", "binary"),
    (lambda: losses.SquaredHinge(), lambda k: k.losses.SquaredHinge(), None, "signs"),
    ("categorical_hinge", lambda k: "categorical_hinge", None, "onehot"),
    (lambda: losses.CategoricalHinge(), lambda k: k.losses.CategoricalHinge(), "softmax", "onehot"),
    ("msle", lambda k: "msle", "softplus", "positive"),
    (lambda: losses.MeanSquaredLogarithmicError(), lambda k: k.losses.MeanSquaredLogarithmicError(), None, "real"),
    ("mape", lambda k: "mape", "softplus", "positive"),
    (lambda: losses.MeanAbsolutePercentageError(), lambda k: k.losses.MeanAbsolutePercentageError(), "relu",
     "positive"),
    ("binary_focal_crossentropy", lambda k: "binary_focal_crossentropy", "sigmoid", "binary"),
    (lambda: losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, gamma=1.5, label_smoothing=0.1),
     lambda k: k.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, gamma=1.5,
                                                label_smoothing=0.1), "sigmoid", "binary"),
    (lambda: losses.BinaryFocalCrossentropy(from_logits=True, gamma=3.0),
     lambda k: k.losses.BinaryFocalCrossentropy(from_logits=True, gamma=3.0), None, "binary"),
    ("categorical_focal_crossentropy", lambda k: "categorical_focal_crossentropy", "softmax", "onehot"),
    (lambda: losses.CategoricalFocalCrossentropy(from_logits=True, label_smoothing=0.2, alpha=0.5, gamma=1.0),
     lambda k: k.losses.CategoricalFocalCrossentropy(from_logits=True, label_smoothing=0.2, alpha=0.5, gamma=1.0),
     None, "onehot"),
]
IDS = [c[0] if isinstance(c[0], str) else f"{type(c[0]()).__name__}-{i}" for i, c in enumerate(CASES)]


def _graphc_loss(entry):
    return entry if isinstance(entry, str) else entry()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_loss_values_on_arrays_equal_keras(keras, rng, case):
    g_entry, k_entry, activation, targets = case
    y_true = _targets(targets, rng, 6)
    raw = rng.standard_normal((6, 3)).astype("float32")
    y_pred = {"softmax": np.exp(raw) / np.exp(raw).sum(-1, keepdims=True), "sigmoid": 1 / (1 + np.exp(-raw)),
              "softplus": np.log1p(np.exp(raw)), "exponential": np.exp(raw), "relu": np.maximum(raw, 0),
              "tanh": np.tanh(raw)}.get(activation, raw).astype("float32")
    g_loss = losses.get(_graphc_loss(g_entry))
    k_loss = keras.losses.get(k_entry(keras))
    if not isinstance(k_loss, keras.losses.Loss):  # a Keras loss function: per-sample values
        np.testing.assert_allclose(getattr(losses, g_entry)(y_true, y_pred), k_loss(y_true, y_pred).numpy(),
                                   rtol=1e-5, atol=1e-6)
        k_loss = keras.src.losses.LossFunctionWrapper(k_loss)
    np.testing.assert_allclose(g_loss(y_true, y_pred), float(k_loss(y_true, y_pred)), rtol=1e-5, atol=1e-6)
    sw = rng.uniform(0, 2, size=(6,)).astype("float32")
    np.testing.assert_allclose(g_loss(y_true, y_pred, sample_weight=sw),
                               float(k_loss(y_true, y_pred, sample_weight=sw)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", ["reference", "native"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_training_steps_equal_keras(keras, rng, case, target):
    g_entry, k_entry, activation, targets = case
    model, kmodel = _mlp(graphc, activation), _mlp(keras, activation)
    kmodel.set_weights(model.get_weights())
    loss = losses.get(_graphc_loss(g_entry))
    # MAPE is in percent: a hundredth of the step size keeps its steps the size of the other losses'
    lr = 0.001 if loss.name in ("mape", "mean_absolute_percentage_error") else 0.1
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=lr, momentum=0.5), loss=_graphc_loss(g_entry))
    kmodel.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.5), loss=k_entry(keras))
    graphc.build(model, target=target, training=True)
    for step in range(3):
        x, y = rng.standard_normal((5, 7)).astype("float32"), _targets(targets, rng)
        got, want = model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
        assert np.isclose(got, want, rtol=1e-5, atol=1e-6), f"step {step}: loss {got} vs Keras {want}"
        for var, gw, kw in zip(model.weights, model.get_weights(), kmodel.get_weights()):
            np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=f"step {step}: {var.path}")


CLASSES = ["Huber", "LogCosh", "KLDivergence", "Poisson", "CosineSimilarity", "Hinge", "SquaredHinge",
           "CategoricalHinge", "MeanSquaredLogarithmicError", "MeanAbsolutePercentageError",
           "BinaryFocalCrossentropy", "CategoricalFocalCrossentropy"]


@pytest.mark.parametrize("name", CLASSES)
def test_default_configs_and_names_equal_keras(keras, name):
    g, k = getattr(losses, name)(), getattr(keras.losses, name)()
    assert g.name == k.name
    g_config, k_config = g.get_config(), k.get_config()
    assert {key: g_config[key] for key in k_config if key != "dtype"} == \
        {key: v for key, v in k_config.items() if key != "dtype"}
    # a Keras-serialized loss deserializes in graphc, a graphc-serialized one in Keras
    assert type(losses.deserialize(keras.losses.serialize(k))).__name__ == name
    assert type(keras.losses.deserialize(losses.serialize(g))).__name__ == name


def test_options_survive_the_config(keras):
    focal = losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3, gamma=1.0, from_logits=True,
                                           label_smoothing=0.1, name="focal")
    again = losses.deserialize(losses.serialize(focal))
    assert again.get_config() == focal.get_config()
    k_again = keras.losses.deserialize(losses.serialize(focal))
    assert (k_again.alpha, k_again.gamma, k_again.from_logits, k_again.apply_class_balancing) == (0.3, 1.0, True, True)
    assert losses.deserialize(losses.serialize(losses.Huber(delta=0.25))).delta == 0.25


def test_compile_config_round_trips_through_keras_files(keras, rng, tmp_path):
    model = _mlp(graphc, "softmax")
    model.compile(optimizer="sgd", loss=losses.CategoricalFocalCrossentropy(gamma=1.5, label_smoothing=0.1))
    path = str(tmp_path / "focal.keras")
    model.save(path)
    kmodel = keras.saving.load_model(path)
    assert type(kmodel.loss).__name__ == "CategoricalFocalCrossentropy"
    assert (kmodel.loss.gamma, kmodel.loss.label_smoothing) == (1.5, 0.1)
    kmodel.compile(optimizer="sgd", loss=keras.losses.Huber(delta=0.5))
    kmodel.save(path)
    again, k_again = graphc.models.load_model(path), keras.saving.load_model(path)
    x, y = rng.standard_normal((4, 7)).astype("float32"), _targets("distribution", rng, 4)
    # (Keras writes Huber's config without its delta: both reload it with the default)
    np.testing.assert_allclose(again.evaluate(x, y, verbose=0), k_again.evaluate(x, y, verbose=0), rtol=1e-5)
    assert [type(loss).__name__ for loss in again._graphc_trainer.loss_objects] == ["Huber"]


def test_bad_targets_are_refused_naming_the_loss():
    with pytest.raises(ValueError, match="huber"):
        losses.huber(np.zeros((2, 3), "float32"), np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="categorical_hinge"):
        losses.CategoricalHinge()(np.zeros((2, 2), "float32"), np.zeros((2, 4), "float32"))
