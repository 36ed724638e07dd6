"""Precision, Recall, AUC, TopKCategoricalAccuracy and SparseTopKCategoricalAccuracy against Keras:
values on arrays, accumulated over an epoch in fit and evaluate (reference and native trainers),
configs, and refusals of what graphc does not implement.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import metrics

pytestmark = pytest.mark.keras


def _binary(lib):
    inp = lib.Input(shape=(6,))
    h = lib.layers.Dense(5, activation="tanh")(inp)
    return lib.Model(inp, lib.layers.Dense(3, activation="sigmoid")(h))


def _classifier(lib):
    inp = lib.Input(shape=(6,))
    h = lib.layers.Dense(5, activation="tanh")(inp)
    return lib.Model(inp, lib.layers.Dense(7, activation="softmax")(h))


BINARY = [
    (lambda m: m.Precision(), {}),
    (lambda m: m.Precision(thresholds=0.3, class_id=1, name="p1"), {}),
    (lambda m: m.Recall(), {}),
    (lambda m: m.Recall(thresholds=[0.7]), {}),
    (lambda m: m.AUC(), {}),
    (lambda m: m.AUC(num_thresholds=17, curve="PR"), {}),
    (lambda m: m.AUC(num_thresholds=9, summation_method="minoring"), {}),
    (lambda m: m.AUC(curve="PR", summation_method="majoring", thresholds=[0.2, 0.5, 0.6]), {}),
]
CATEGORICAL = [
    (lambda m: m.TopKCategoricalAccuracy(), "onehot"),
    (lambda m: m.TopKCategoricalAccuracy(k=2, name="top2"), "onehot"),
    (lambda m: m.SparseTopKCategoricalAccuracy(), "sparse"),
    (lambda m: m.SparseTopKCategoricalAccuracy(k=3), "sparse"),
]


def _binary_data(rng, n):
    return rng.standard_normal((n, 6)).astype("float32"), rng.integers(0, 2, size=(n, 3)).astype("float32")


def _categorical_data(rng, n, kind):
    labels = rng.integers(0, 7, size=(n,))
    y = np.eye(7, dtype="float32")[labels] if kind == "onehot" else labels
    return rng.standard_normal((n, 6)).astype("float32"), y


@pytest.mark.parametrize("make", [c[0] for c in BINARY], ids=[f"binary{i}" for i in range(len(BINARY))])
def test_confusion_metrics_accumulate_like_keras_on_arrays(keras, rng, make):
    g, k = make(metrics), make(keras.metrics)
    for _ in range(3):
        y_true = rng.integers(0, 2, size=(11, 3)).astype("float32")
        y_pred = rng.uniform(size=(11, 3)).astype("float32")
        g.update_state(y_true, y_pred)
        k.update_state(y_true, y_pred)
        np.testing.assert_allclose(g.result(), float(k.result()), rtol=1e-5, atol=1e-7)
    g.reset_state()
    k.reset_state()
    assert g.result() == float(k.result()) == 0.0


@pytest.mark.parametrize("make,kind", CATEGORICAL, ids=[f"topk{i}" for i in range(len(CATEGORICAL))])
def test_top_k_metrics_equal_keras_on_arrays(keras, rng, make, kind):
    g, k = make(metrics), make(keras.metrics)
    for _ in range(2):
        _, y = _categorical_data(rng, 9, kind)
        pred = rng.uniform(size=(9, 7)).astype("float32")
        pred[0, :] = 0.5  # ties count as in the top k
        g.update_state(y, pred)
        k.update_state(y, pred)
    np.testing.assert_allclose(g.result(), float(k.result()), rtol=1e-6)


@pytest.mark.parametrize("target", ["reference", "native"])
def test_fit_and_evaluate_logs_equal_keras(keras, rng, target):
    """Epoch logs accumulate the confusion counts over every batch (not a mean of batch values)."""
    x, y = _binary_data(rng, 23)
    model, kmodel = _binary(graphc), _binary(keras)
    kmodel.set_weights(model.get_weights())
    names = [lambda m: m.Precision(name="precision"), lambda m: m.Recall(name="rec"), lambda m: m.AUC(name="auc"),
             lambda m: m.AUC(curve="PR", name="pr_auc")]
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[f(metrics) for f in names])
    kmodel.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[f(keras.metrics) for f in names])
    graphc.build(model, target=target, training=True)
    gh = model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0, validation_split=0.3)
    kh = kmodel.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0, validation_split=0.3)
    assert list(gh.history) == list(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(gh.history[key], kh.history[key], rtol=1e-4, atol=1e-6, err_msg=key)
    got = model.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    want = kmodel.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("target", ["reference", "native"])
def test_top_k_metrics_by_name_in_fit_equal_keras(keras, rng, target):
    x, y = _categorical_data(rng, 17, "sparse")
    model, kmodel = _classifier(graphc), _classifier(keras)
    kmodel.set_weights(model.get_weights())
    for m, lib in ((model, metrics), (kmodel, keras.metrics)):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["sparse_top_k_categorical_accuracy", lib.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    graphc.build(model, target=target, training=True)
    gh = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    kh = kmodel.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert list(gh.history) == list(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(gh.history[key], kh.history[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", ["Precision", "Recall", "AUC", "TopKCategoricalAccuracy",
                                  "SparseTopKCategoricalAccuracy"])
def test_configs_equal_keras(keras, name):
    g, k = getattr(metrics, name)(), getattr(keras.metrics, name)()
    g_config, k_config = g.get_config(), k.get_config()
    assert k.name.startswith(g.name)  # Keras numbers the names of later instances
    assert {key: g_config[key] for key in k_config if key not in ("dtype", "name")} == \
        {key: v for key, v in k_config.items() if key not in ("dtype", "name")}
    again = metrics.get({"class_name": name, "config": {key: v for key, v in k_config.items() if key != "dtype"}})
    assert type(again) is type(g)


def test_unsupported_options_are_refused_naming_them():
    with pytest.raises(ValueError, match="top_k"):
        metrics.Precision(top_k=2)
    with pytest.raises(ValueError, match="thresholds"):
        metrics.Recall(thresholds=[0.2, 0.4])
    with pytest.raises(ValueError, match="multi_label"):
        metrics.AUC(multi_label=True)
    with pytest.raises(ValueError, match="curve"):
        metrics.AUC(curve="PRGAIN")
    with pytest.raises(ValueError, match="from_sorted_ids"):
        metrics.SparseTopKCategoricalAccuracy(from_sorted_ids=True)
