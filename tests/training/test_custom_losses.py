"""The user's loss and metric functions and Loss subclasses, written with graphc ops, against the same
code written with keras.ops: ``fit`` histories, weights and ``evaluate`` on the reference and native
trainers, on arrays, through ``.keras`` files both ways (``custom_objects`` and registration), and
the errors for Python that needs a tensor's value.
"""

from __future__ import annotations

import inspect
import json
import zipfile

import numpy as np
import pytest

import graphc
from graphc.frontend.tracing import TracingError

pytestmark = pytest.mark.keras


def _functions(ops):
    """A loss and two metrics in Keras's style, for graphc.ops or keras.ops (same names, same formulas)."""
    def soft_hinge(y_true, y_pred):
        margin = 1.0 - (2.0 * y_true - 1.0) * (2.0 * y_pred - 1.0)
        squared = ops.where(margin > 0.5, margin - 0.25, ops.square(margin))
        return ops.mean(ops.maximum(squared, 0.0), axis=-1) + 0.1 * ops.mean(ops.abs(y_pred), axis=-1)

    def log_error(y_true, y_pred):
        return ops.log(1.0 + ops.abs(y_true - y_pred))

    def top_hit(y_true, y_pred):
        return ops.cast(ops.equal(ops.argmax(y_true, axis=-1), ops.argmax(y_pred, axis=-1)), "float32")

    return soft_hinge, log_error, top_hit


def _loss_class(lib, ops):
    class ScaledError(lib.losses.Loss):
        def __init__(self, scale=1.5, power=2.0, name="scaled_error", reduction="sum_over_batch_size"):
            super().__init__(name=name, reduction=reduction)
            self.scale = scale
            self.power = power

        def call(self, y_true, y_pred):
            return self.scale * ops.mean(ops.power(ops.abs(y_true - y_pred) + 1e-3, self.power), axis=-1)

        def get_config(self):
            return {**super().get_config(), "scale": self.scale, "power": self.power}

    return ScaledError


def _mlp(lib):
    inp = lib.Input(shape=(6,))
    h = lib.layers.Dense(5, activation="tanh")(inp)
    return lib.Model(inp, lib.layers.Dense(3, activation="sigmoid")(h))


def _data(rng, n=11):
    x = rng.standard_normal((n, 6)).astype("float32")
    return x, np.eye(3, dtype="float32")[rng.integers(0, 3, size=n)]


def _assert_histories(gh, kh):
    assert list(gh.history) == list(kh.history)
    for key in kh.history:
        np.testing.assert_allclose(gh.history[key], kh.history[key], rtol=1e-4, atol=1e-6, err_msg=key)


def _assert_weights(model, kmodel):
    for var, gw, kw in zip(model.weights, model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=var.path)


def _train_both(keras, rng, target, loss, kloss, metrics, kmetrics):
    model, kmodel = _mlp(graphc), _mlp(keras)
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=graphc.optimizers.Adam(0.02), loss=loss, metrics=metrics)
    kmodel.compile(optimizer=keras.optimizers.Adam(0.02), loss=kloss, metrics=kmetrics)
    if target == "native":
        graphc.build(model, target="native", training=True)
    x, y = _data(rng)
    gh = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, validation_split=0.25)
    kh = kmodel.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, validation_split=0.25)
    _assert_histories(gh, kh)
    _assert_weights(model, kmodel)
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=3, verbose=0),
                               kmodel.evaluate(x, y, batch_size=3, verbose=0), rtol=1e-4, atol=1e-6)
    return model, kmodel


@pytest.mark.parametrize("target", ["reference", "native"])
def test_loss_and_metric_functions_train_like_keras(keras, rng, target):
    loss, error, hit = _functions(graphc.ops)
    kloss, kerror, khit = _functions(keras.ops)
    _train_both(keras, rng, target, loss, kloss, [error, hit, "mae"], [kerror, khit, "mae"])


@pytest.mark.parametrize("target", ["reference", "native"])
def test_loss_subclass_trains_like_keras(keras, rng, target):
    cls, kcls = _loss_class(graphc, graphc.ops), _loss_class(keras, keras.ops)
    _, error, _ = _functions(graphc.ops)
    _, kerror, _ = _functions(keras.ops)
    _train_both(keras, rng, target, cls(scale=2.0, power=1.5), kcls(scale=2.0, power=1.5), [error], [kerror])


@pytest.mark.parametrize("reduction", ["sum", "none", "sum_over_batch_size"])
def test_losses_and_metrics_on_arrays_equal_keras(keras, rng, reduction):
    _, y = _data(rng, 5)
    pred = rng.uniform(size=(5, 3)).astype("float32")
    loss, error, hit = _functions(graphc.ops)
    kloss, kerror, khit = _functions(keras.ops)
    np.testing.assert_allclose(loss(y, pred), keras.ops.convert_to_numpy(kloss(y, pred)), rtol=1e-5)
    cls, kcls = _loss_class(graphc, graphc.ops), _loss_class(keras, keras.ops)
    got = cls(reduction=reduction)(y, pred, sample_weight=np.arange(5, dtype="float32"))
    want = kcls(reduction=reduction)(y, pred, sample_weight=np.arange(5, dtype="float32"))
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(want), rtol=1e-5)
    for fn, kfn in ((error, kerror), (hit, khit)):
        metric = graphc.metrics.MeanMetricWrapper(fn, name=fn.__name__)
        kmetric = keras.metrics.MeanMetricWrapper(kfn, name=fn.__name__)
        metric.update_state(y, pred)
        kmetric.update_state(y, pred)
        np.testing.assert_allclose(metric.result(), float(kmetric.result()), rtol=1e-5)


def test_per_output_custom_losses_and_metrics(keras, rng):
    """A dict of the user's losses and metrics over two outputs, with loss weights and a built-in loss."""
    def build(lib):
        inp = lib.Input(shape=(6,))
        h = lib.layers.Dense(4, activation="relu")(inp)
        return lib.Model(inp, [lib.layers.Dense(3, activation="sigmoid", name="probs")(h),
                               lib.layers.Dense(2, name="value")(h)])

    loss, error, _ = _functions(graphc.ops)
    kloss, kerror, _ = _functions(keras.ops)
    model, kmodel = build(graphc), build(keras)
    kmodel.set_weights(model.get_weights())
    model.compile("sgd", loss={"probs": loss, "value": "mse"}, loss_weights={"probs": 0.5, "value": 2.0},
                  metrics={"probs": [error], "value": [error, "mae"]})
    kmodel.compile("sgd", loss={"probs": kloss, "value": "mse"}, loss_weights={"probs": 0.5, "value": 2.0},
                   metrics={"probs": [kerror], "value": [kerror, "mae"]})
    x, y = _data(rng)
    ys = {"probs": y, "value": rng.standard_normal((len(x), 2)).astype("float32")}
    _assert_histories(model.fit(x, ys, batch_size=4, epochs=2, shuffle=False, verbose=0),
                      kmodel.fit(x, ys, batch_size=4, epochs=2, shuffle=False, verbose=0))
    _assert_weights(model, kmodel)


# ---------------------------------------------------------------------------- .keras files
def _compile_config(path) -> dict:
    return json.loads(zipfile.ZipFile(path).read("config.json"))["compile_config"]


def test_saved_with_custom_objects_both_ways(keras, rng, tmp_path):
    loss, error, _ = _functions(graphc.ops)
    kloss, kerror, _ = _functions(keras.ops)
    cls, kcls = _loss_class(graphc, graphc.ops), _loss_class(keras, keras.ops)
    x, y = _data(rng)
    model = _mlp(graphc)
    model.compile("adam", loss=cls(scale=3.0), metrics=[error])
    model.fit(x, y, batch_size=4, verbose=0)
    path = tmp_path / "graphc.keras"
    model.save(path)
    kmodel = _mlp(keras)
    kmodel.compile("adam", loss=kcls(scale=3.0), metrics=[kerror])
    kmodel.fit(x, y, batch_size=4, verbose=0)
    kpath = tmp_path / "keras.keras"
    kmodel.save(kpath)
    assert _compile_config(path)["loss"] == _compile_config(kpath)["loss"]
    assert _compile_config(path)["metrics"] == _compile_config(kpath)["metrics"]
    # graphc -> Keras and Keras -> graphc, each with its own functions
    kloaded = keras.saving.load_model(path, custom_objects={"ScaledError": kcls, "log_error": kerror})
    loaded = graphc.saving.load_model(kpath, custom_objects={"ScaledError": cls, "log_error": error})
    assert loaded._graphc_trainer.loss_objects[0].scale == 3.0
    for g, k in ((model, kloaded), (loaded, kmodel)):
        np.testing.assert_allclose(g.evaluate(x, y, verbose=0), k.evaluate(x, y, verbose=0), rtol=1e-4)
    # and on: the loaded model trains as Keras's does, from the same optimizer state
    _assert_histories(loaded.fit(x, y, batch_size=4, shuffle=False, verbose=0),
                      kmodel.fit(x, y, batch_size=4, shuffle=False, verbose=0))
    _assert_weights(loaded, kmodel)
    del loss, kloss


def test_registered_functions_load_without_custom_objects(rng, tmp_path):
    ops = graphc.ops

    @graphc.saving.register_keras_serializable(package="tests")
    def halved_error(y_true, y_pred):
        return 0.5 * ops.mean(ops.square(y_true - y_pred), axis=-1)

    model = _mlp(graphc)
    model.compile("sgd", loss=halved_error, metrics=[halved_error])
    path = tmp_path / "registered.keras"
    model.save(path)
    assert _compile_config(path)["loss"] == {"module": "builtins", "class_name": "function",
                                             "config": "tests>halved_error", "registered_name": "function"}
    loaded = graphc.saving.load_model(path)
    x, y = _data(rng)
    assert loaded.evaluate(x, y, verbose=0, return_dict=True) == model.evaluate(x, y, verbose=0, return_dict=True)


def test_unknown_function_loads_uncompiled_naming_it(rng, tmp_path):
    _, error, _ = _functions(graphc.ops)
    model = _mlp(graphc)
    model.compile("sgd", loss="mse", metrics=[error])
    path = tmp_path / "unknown.keras"
    model.save(path)
    with pytest.warns(UserWarning, match="Could not locate metric function 'log_error'.*custom_objects"):
        loaded = graphc.saving.load_model(path)
    with pytest.raises(RuntimeError, match="compile"):
        loaded.evaluate(*_data(rng), verbose=0)


# ---------------------------------------------------------------------------- what cannot be traced
def _line_of(fn, text: str) -> str:
    lines, start = inspect.getsourcelines(fn)
    return f"{inspect.getsourcefile(fn)}:{start + next(i for i, line in enumerate(lines) if text in line)}"


def _branching_loss(y_true, y_pred):
    error = graphc.ops.abs(y_true - y_pred)
    if graphc.ops.max(error) > 1.0:
        return error
    return graphc.ops.square(error)


def _numpy_metric(y_true, y_pred):
    return np.mean(np.abs(y_true - y_pred), axis=-1)


def _float_loss(y_true, y_pred):
    return graphc.ops.mean(y_pred, axis=-1) * float(graphc.ops.sum(y_true))


class _BranchingLoss(graphc.losses.Loss):
    def call(self, y_true, y_pred):
        for row in y_true:
            return row
        return y_pred


CASES = [
    ({"loss": _branching_loss}, "loss function '_branching_loss' uses the truth value of a tensor",
     (_branching_loss, "if graphc.ops")),
    ({"loss": "mse", "metrics": [_numpy_metric]},
     r"metric function '_numpy_metric' uses NumPy's absolute\(\) on a tensor \(use graphc.ops.absolute\)",
     (_numpy_metric, "np.mean")),
    ({"loss": _float_loss}, "loss function '_float_loss' uses a tensor as a Python float", (_float_loss, "float(")),
    ({"loss": _BranchingLoss()}, r"loss _BranchingLoss.call \('_+branching_loss'\) uses iteration over a tensor",
     (_BranchingLoss.call, "for row")),
]


@pytest.mark.parametrize("target", ["reference", "native"])
@pytest.mark.parametrize("compile_args,message,where", CASES, ids=["if", "numpy", "float", "loop"])
def test_untraceable_python_is_refused_naming_function_and_line(rng, compile_args, message, where, target):
    model = _mlp(graphc)
    model.compile("sgd", **compile_args)
    if target == "native":
        graphc.build(model, target="native", training=True)
    with pytest.raises(TracingError, match=message) as info:
        model.fit(*_data(rng), verbose=0)
    assert f" at {_line_of(*where)}." in str(info.value)


def test_keras_functions_are_refused_by_name(keras):
    model = _mlp(graphc)
    with pytest.raises(ValueError, match="loss 'mean_squared_error' is Keras's own"):
        model.compile("sgd", loss=keras.losses.mean_squared_error)
    with pytest.raises(ValueError, match="metric 'mean_absolute_error' is Keras's own"):
        model.compile("sgd", loss="mse", metrics=[keras.metrics.mean_absolute_error])


def test_mean_metric_wrapper_subclass_equals_keras(keras, rng):
    def wrapper(lib, ops):
        class WithinTenth(lib.metrics.MeanMetricWrapper):
            def __init__(self, name="within_tenth", dtype=None):
                super().__init__(lambda t, p: ops.cast(ops.abs(t - p) < 0.1, "float32"), name=name, dtype=dtype)

        return WithinTenth

    model, kmodel = _mlp(graphc), _mlp(keras)
    kmodel.set_weights(model.get_weights())
    model.compile("sgd", loss="mse", metrics=[wrapper(graphc, graphc.ops)()])
    kmodel.compile("sgd", loss="mse", metrics=[wrapper(keras, keras.ops)()])
    x, y = _data(rng)
    _assert_histories(model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0),
                      kmodel.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0))


def test_metrics_with_their_own_state_are_refused_by_name():
    class TruePositives(graphc.metrics.Metric):
        def __init__(self, name="true_positives"):
            super().__init__(name=name)
            self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    with pytest.raises(NotImplementedError, match="metric TruePositives: add_variable.. is not supported"):
        TruePositives()

    class Tally(graphc.metrics.Metric):
        def update_state(self, y_true, y_pred, sample_weight=None):
            self.total += 1

    with pytest.raises(ValueError, match="metric Tally: update_state.. is not supported by graphc"):
        _mlp(graphc).compile("sgd", loss="mse", metrics=[Tally()])
