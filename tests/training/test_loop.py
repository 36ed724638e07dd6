"""compile / fit / evaluate / train_on_batch: data handling, names, results, errors, the step graph."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.ir.verify import verify
from graphc.models import Sequential
from graphc.ops.registry import infer_op


def _two_in_two_out():
    a = Input(shape=(3,), name="a")
    b = Input(shape=(2,), name="b")
    h = layers.Dense(4, activation="relu")(layers.concatenate([a, b]))
    out1 = layers.Dense(1, name="score")(h)
    out2 = layers.Dense(3, activation="softmax", name="kind")(h)
    return Model([a, b], [out1, out2])


def _data(rng, n=13):
    return ([rng.standard_normal((n, 3)).astype("float32"), rng.standard_normal((n, 2)).astype("float32")],
            [rng.standard_normal((n, 1)).astype("float32"), rng.integers(0, 3, size=(n,))])


def test_fit_takes_lists_and_dicts_and_names_per_output_losses(rng):
    model = _two_in_two_out()
    model.compile(optimizer="adam", loss={"score": "mse", "kind": "sparse_categorical_crossentropy"},
                  loss_weights={"score": 0.5, "kind": 1.0}, metrics={"kind": ["acc"]})
    (xa, xb), (y1, y2) = _data(rng)
    h1 = model.fit([xa, xb], [y1, y2], epochs=2, batch_size=4, verbose=0)
    h2 = model.fit({"a": xa, "b": xb}, {"score": y1, "kind": y2}, epochs=1, batch_size=5, verbose=0)
    assert list(h1.history) == ["kind_acc", "kind_loss", "loss", "score_loss"]
    assert list(h2.history) == list(h1.history)
    assert len(h1.history["loss"]) == 2 and len(h2.history["loss"]) == 1
    logs = h2.history
    assert np.isclose(logs["loss"][0], 0.5 * logs["score_loss"][0] + logs["kind_loss"][0], rtol=1e-5)
    result = model.evaluate([xa, xb], [y1, y2], verbose=0)
    as_dict = model.evaluate([xa, xb], [y1, y2], verbose=0, return_dict=True)
    # Keras's order: the loss, the per-output losses, then (by name) what metrics_names does not list
    assert result == pytest.approx([as_dict[k] for k in ("loss", "score_loss", "kind_loss", "kind_acc")])


def test_one_loss_for_several_outputs_applies_to_each(rng):
    model = _two_in_two_out()
    model.compile(optimizer="sgd", loss="mse", loss_weights=[1.0, 0.2])
    (xa, xb), (y1, _) = _data(rng)
    y2 = rng.random((13, 3)).astype("float32")
    logs = model.fit([xa, xb], [y1, y2], epochs=1, batch_size=13, verbose=0, shuffle=False).history
    assert np.isclose(logs["loss"][0], logs["score_loss"][0] + 0.2 * logs["kind_loss"][0], rtol=1e-5)


def test_evaluate_returns_a_float_for_the_loss_alone_and_matches_numpy(rng):
    inp = Input(shape=(4,))
    model = Model(inp, layers.Dense(2)(inp))
    model.compile(loss="mse")
    x = rng.standard_normal((7, 4)).astype("float32")
    y = rng.standard_normal((7, 2)).astype("float32")
    score = model.evaluate(x, y, batch_size=3, verbose=0)
    assert isinstance(score, float)
    want = np.mean((model.predict(x) - y) ** 2)
    assert score == pytest.approx(want, rel=1e-5)


def test_training_reduces_the_loss_and_predict_sees_the_new_weights(rng):
    x = rng.standard_normal((64, 5)).astype("float32")
    y = (x @ rng.standard_normal((5, 1)) > 0).astype("float32")
    model = Sequential([layers.Dense(8, activation="relu", input_shape=(5,)), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=graphc.optimizers.Adam(0.02), loss="binary_crossentropy", metrics=["accuracy"])
    before = model.predict(x)
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8
    assert not np.allclose(model.predict(x), before)
    assert model.optimizer.iterations == 15 * 4


def test_validation_split_keeps_the_last_samples_and_validation_data_is_evaluated(rng):
    inp = Input(shape=(2,))
    model = Model(inp, layers.Dense(1)(inp))
    model.compile(optimizer="sgd", loss="mae")
    x = rng.standard_normal((10, 2)).astype("float32")
    y = rng.standard_normal((10, 1)).astype("float32")
    h = model.fit(x, y, validation_split=0.3, epochs=1, verbose=0, shuffle=False)
    assert model.evaluate(x[7:], y[7:], verbose=0) == pytest.approx(h.history["val_loss"][0], rel=1e-6)
    h = model.fit(x, y, validation_data=(x[:4], y[:4]), epochs=1, verbose=0)
    assert model.evaluate(x[:4], y[:4], verbose=0) == pytest.approx(h.history["val_loss"][0], rel=1e-6)


def test_train_and_test_on_batch(rng):
    inp = Input(shape=(3,))
    model = Model(inp, layers.Dense(2, activation="softmax")(inp))
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["acc"])
    x = rng.standard_normal((6, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, size=6)]
    loss0, acc0 = model.test_on_batch(x, y)
    assert model.test_on_batch(x, y, return_dict=True) == {"loss": pytest.approx(loss0), "acc": pytest.approx(acc0)}
    weights = [w.copy() for w in model.get_weights()]
    loss1, _ = model.train_on_batch(x, y)
    assert loss1 == pytest.approx(loss0, rel=1e-6)  # the loss before the update
    assert not all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert model.test_on_batch(x, y)[0] < loss0


def test_dropout_is_random_while_training_and_the_identity_otherwise(rng):
    inp = Input(shape=(200,))
    out = layers.Dropout(0.5)(inp)
    model = Model(inp, out)
    x = np.ones((3, 200), dtype="float32")
    assert np.array_equal(model.predict(x), x)
    graph = graphc.lower(model, training=True)
    from graphc.backends.reference import run

    y = run(graph, {graph.inputs[0]: x})[graph.outputs[0]]
    kept = y != 0
    assert 0.3 < kept.mean() < 0.7
    assert np.allclose(y[kept], 2.0)
    # noise_shape: one mask per sample and feature, shared over the time axis
    inp = Input(shape=(5, 40))
    graph = graphc.lower(Model(inp, layers.Dropout(0.5, noise_shape=(None, 1, 40), seed=3)(inp)), training=True)
    y = run(graph, {graph.inputs[0]: np.ones((2, 5, 40), dtype="float32")})[graph.outputs[0]]
    assert np.all(y == y[:, :1, :]) and 0 < (y != 0).mean() < 1


def test_batchnorm_trains_on_batch_statistics_and_updates_moving_averages(rng):
    inp = Input(shape=(4,))
    bn = layers.BatchNormalization(momentum=0.8)
    model = Model(inp, bn(inp))
    model.compile(optimizer="sgd", loss="mse")
    x = (3 * rng.standard_normal((9, 4)) + 2).astype("float32")
    model.train_on_batch(x, np.zeros((9, 4), dtype="float32"))
    mean, var = x.mean(axis=0), x.var(axis=0)
    assert np.allclose(bn.moving_mean.value, 0.2 * mean, rtol=1e-5, atol=1e-6)
    assert np.allclose(bn.moving_variance.value, 0.8 + 0.2 * var, rtol=1e-4)


def test_the_train_step_graph_verifies_and_declares_its_state_updates(rng):
    from graphc.training.losses import get
    from graphc.training.optimizers import Adam
    from graphc.training.step import OutputSpec, Step

    inp = Input(shape=(3,))
    h = layers.BatchNormalization()(layers.Dense(4)(inp))
    model = Model(inp, layers.Dense(1)(h))
    y = rng.standard_normal((5, 1)).astype("float32")
    step = Step(model, [OutputSpec(model.output_names[0], get("mse"))], [y], Adam(), training=True)
    verify(step.graph, infer_op)
    updates = step.graph.meta["state_updates"]
    state = {c for c in updates}
    assert {c for c, v in step.params.items() if v.trainable} <= state  # every trainable weight
    assert any("moving_mean" in c for c in state) and any("iterations" in c for c in state)
    assert all(v in step.graph.outputs for v in updates.values())
    assert "learning_rate" in step.graph.inputs


def test_free_sequence_lengths_train_through_one_graph(rng):
    inp = Input(shape=(None,), dtype="int32")
    h = layers.Embedding(20, 3)(inp)
    out = layers.Dense(1)(layers.SimpleRNN(4)(h))
    model = Model(inp, out)
    model.compile(optimizer="sgd", loss="mse")
    for t in (3, 7):
        model.train_on_batch(rng.integers(0, 20, size=(5, t)), rng.standard_normal((5, 1)))
    assert len(model._graphc_trainer._steps) == 1


# ---------------------------------------------------------------------------- errors
def test_fit_before_compile_is_refused(rng):
    inp = Input(shape=(2,))
    model = Model(inp, layers.Dense(1)(inp))
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0)


def test_data_errors_name_what_is_wrong(rng):
    model = _two_in_two_out()
    model.compile(loss=["mse", "sparse_categorical_crossentropy"])
    (xa, xb), (y1, y2) = _data(rng)
    with pytest.raises(ValueError, match="cardinality"):
        model.fit([xa, xb[:5]], [y1, y2], verbose=0)
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        model.fit({"a": xa}, [y1, y2], verbose=0)
    with pytest.raises(ValueError, match="not model outputs"):
        model.fit([xa, xb], {"nope": y1}, verbose=0)
    with pytest.raises(ValueError, match="2 outputs"):
        model.fit([xa, xb], y1, verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit([xa, xb], [y1, y2], validation_split=1.5, verbose=0)


def test_compile_errors_name_what_is_wrong():
    model = _two_in_two_out()
    with pytest.raises(ValueError, match="list of 3 entries"):
        model.compile(loss=["mse", "mse", "mse"])
    with pytest.raises(ValueError, match="not model outputs"):
        model.compile(loss={"scor": "mse"})
    with pytest.raises(ValueError, match="`loss_weights` must match"):
        model.compile(loss="mse", loss_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="unknown loss 'msee'"):
        model.compile(loss="msee")
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        model.compile(optimizer="adamx", loss="mse")
    with pytest.raises(ValueError, match="unknown metric 'accuracyy'"):
        model.compile(loss="mse", metrics=["accuracyy"])
    model.compile(loss=None)
    with pytest.raises(ValueError, match="No loss to compute"):
        model.fit([np.zeros((2, 3)), np.zeros((2, 2))], [np.zeros((2, 1)), np.zeros((2,))], verbose=0)


def test_labels_out_of_range_are_reported(rng):
    inp = Input(shape=(2,))
    model = Model(inp, layers.Dense(3, activation="softmax")(inp))
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(Exception, match="class index 7 is out of range for 3 classes"):
        model.train_on_batch(np.zeros((2, 2)), np.array([1, 7]))


def test_progress_bar_prints_keras_style_lines(rng, capsys):
    inp = Input(shape=(2,))
    model = Model(inp, layers.Dense(1)(inp))
    model.compile(loss="mse", metrics=["mae"])
    model.fit(np.zeros((10, 2)), np.zeros((10, 1)), epochs=2, batch_size=4)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "3/3" in out and "step - loss: 0.0000e+00 - mae: 0.0000e+00" in out
    model.fit(np.zeros((10, 2)), np.zeros((10, 1)), epochs=2, batch_size=4, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(np.zeros((10, 2)), np.zeros((10, 1)), epochs=1, batch_size=4, verbose=2)
    assert capsys.readouterr().out.startswith("3/3 - ")


def test_a_sequential_model_can_be_compiled_before_it_is_built(rng):
    model = Sequential([layers.Dense(4, activation="relu"), layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x, y = rng.random((10, 3)).astype("float32"), rng.random((10, 1)).astype("float32")
    history = model.fit(x, y, verbose=0, epochs=2)
    assert list(history.history) == ["loss", "mae"]
    assert model.evaluate(x, y, verbose=0)[0] == pytest.approx(np.mean((model.predict(x) - y) ** 2), rel=1e-5)


def test_steps_run_through_a_pluggable_runner(rng):
    from graphc.backends.reference import run

    inp = Input(shape=(3,))
    model = Model(inp, layers.Dense(1)(inp))
    model.compile(optimizer="sgd", loss="mse")
    trainer = model._graphc_trainer
    graphs = []

    def runner(graph, feeds):
        graphs.append(graph)
        return run(graph, feeds)

    trainer.runner = runner
    x, y = rng.random((4, 3)).astype("float32"), rng.random((4, 1)).astype("float32")
    logs = trainer.train_step(x, y)
    assert set(logs) == {"loss"} and graphs and "learning_rate" in graphs[0].inputs
    assert trainer.test_step(x, y)["loss"] < 10
