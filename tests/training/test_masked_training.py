"""Training with masks and recurrent dropout, compared with Keras 3.

- An output that carries a mask weights its loss and metrics by it: the masked BiLSTM tagger's
  training steps (reference and native trainers), evaluate and fit equal Keras's.
- ``dropout`` / ``recurrent_dropout`` act in training as Keras's cells: given the same dropout
  masks (Keras's cell and graphc's random draws both replaced by the same choices), one
  training step equals Keras's, for LSTM (per-gate masks), GRU, SimpleRNN and a stack of cells.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.ops import get
from tests.keras_parity import twins

pytestmark = pytest.mark.keras


def _ids(rng, n: int, t: int = 9) -> np.ndarray:
    x = rng.integers(1, 13, size=(n, t)).astype("int32")
    for i in range(n):
        x[i, rng.integers(1, t + 1):] = 0
    x[0, 1] = 0
    return x


def tagger(K):
    inp = K.Input((None,), dtype="int32")
    h = K.layers.Embedding(13, 5, mask_zero=True)(inp)
    h = K.layers.Bidirectional(K.layers.LSTM(7, return_sequences=True))(h)
    out = K.layers.TimeDistributed(K.layers.Dense(4, activation="softmax"))(h)
    return K.Model(inp, out)


def _compiled(keras, build, rng, loss, metrics=(), lr=0.5):
    model, kmodel = twins(keras, build, rng)
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=lr), loss=loss, metrics=list(metrics))
    kmodel.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss=loss, metrics=list(metrics))
    return model, kmodel


def _assert_same_weights(model, kmodel, what=""):
    for w, got, want in zip(model.weights, model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6, err_msg=f"{what} {w.path}")


@pytest.mark.parametrize("target", ["reference", "native"])
def test_masked_tagger_training_steps_equal_keras(keras, rng, target):
    model, kmodel = _compiled(keras, tagger, rng, "sparse_categorical_crossentropy", ["acc"])
    graphc.build(model, target=target, training=True)
    for step in range(2):
        x, y = _ids(rng, 5), rng.integers(0, 4, size=(5, 9))
        got = model.train_on_batch(x, y, return_dict=True)
        want = kmodel.train_on_batch(x, y, return_dict=True)
        for key in ("loss", "acc"):
            assert np.isclose(got[key], want[key], rtol=1e-5, atol=1e-6), f"step {step} {key}: {got} vs {want}"
        _assert_same_weights(model, kmodel, f"step {step}")
    # the mask matters: the unmasked mean differs from Keras's loss on this batch
    x = _ids(rng, 4)
    p = model.predict(x)
    y = rng.integers(0, 4, size=(4, 9))
    plain = float(np.mean(-np.log(np.take_along_axis(p, y[..., None], -1))))
    assert not np.isclose(plain, model.evaluate(x, y, verbose=0, return_dict=True)["loss"], rtol=1e-3)


def test_masked_regression_evaluate_and_fit_equal_keras(keras, rng):
    def build(K):
        inp = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(13, 4, mask_zero=True)(inp)
        return K.Model(inp, K.layers.GRU(3, return_sequences=True, go_backwards=True)(h))

    model, kmodel = _compiled(keras, build, rng, "mse", ["mae"], lr=0.1)
    x, y = _ids(rng, 12), rng.normal(size=(12, 9, 3)).astype("float32")
    got, want = model.evaluate(x, y, verbose=0, return_dict=True), kmodel.evaluate(x, y, verbose=0, return_dict=True)
    for key in want:
        assert np.isclose(got[key], want[key], rtol=1e-5), f"{key}: {got} vs {want}"
    gh = model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    kh = kmodel.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    for key in kh.history:
        np.testing.assert_allclose(gh.history[key], kh.history[key], rtol=1e-4, err_msg=key)
    _assert_same_weights(model, kmodel, "after fit")


def test_a_consumed_mask_leaves_the_loss_unweighted(keras, rng):
    def build(K):
        inp = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(13, 4, mask_zero=True)(inp)
        h = K.layers.Dense(3, activation="tanh")(h)
        h = K.layers.BatchNormalization()(h)  # batch statistics over the kept steps
        return K.Model(inp, K.layers.Dense(2)(K.layers.GlobalAveragePooling1D()(h)))

    model, kmodel = _compiled(keras, build, rng, "mae", lr=0.2)
    x, y = _ids(rng, 6), rng.normal(size=(6, 2)).astype("float32")
    x[:, 0] = np.maximum(x[:, 0], 1)
    assert np.isclose(model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y)), rtol=1e-5)
    _assert_same_weights(model, kmodel)


# ---------------------------------------------------------------- recurrent dropout
class _SameDropoutMasks:
    """Keep-patterns given in the order the masks are drawn, to Keras's cells as their dropout
    masks and to graphc's random draws as uniforms that keep exactly those entries."""

    def __init__(self, rng, keras, monkeypatch):
        self.rng = rng
        self.graphc_queue: list[np.ndarray] = []
        self.keras_queue: list = []
        from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

        original = DropoutRNNCell._create_dropout_mask

        def keras_mask(cell, step_input, rate):
            if getattr(getattr(step_input, "device", None), "type", "") == "meta" or not self.keras_queue:
                return original(cell, step_input, rate)  # a symbolic build, or inference (masks unused)
            count = getattr(cell, "dropout_mask_count", None)
            masks = [self.keras_queue.pop(0) for _ in range(count or 1)]
            return masks if count else masks[0]

        monkeypatch.setattr(DropoutRNNCell, "_create_dropout_mask", keras_mask)
        monkeypatch.setattr(get("random_uniform_like"), "reference",
                            lambda like, *, seed: self.graphc_queue.pop(0).astype(like.dtype))

    def plan(self, cells: list[tuple[int, int, int, float, float, int]]) -> None:
        """Per cell: (batch, features, units, dropout, recurrent_dropout, gate masks per kind)."""
        import torch

        for n, f, u, rate, rrate, count in cells:
            if rate:
                keeps = [self.rng.random((n, f)) >= 0.5 for _ in range(count)]
                self.keras_queue += [torch.tensor(k / (1 - rate), dtype=torch.float32) for k in keeps]
                self.graphc_queue += [np.where(k, 0.99, 0.0)[:, None, :] for k in keeps]
            if rrate:
                keeps = [self.rng.random((n, u)) >= 0.5 for _ in range(count)]
                self.keras_queue += [torch.tensor(k / (1 - rrate), dtype=torch.float32) for k in keeps]
                self.graphc_queue.append(np.concatenate([np.where(k, 0.99, 0.0) for k in keeps], axis=1))


@pytest.mark.parametrize("kind,gates,rate,rrate", [
    ("LSTM", 4, 0.3, 0.4), ("GRU", 3, 0.25, 0.5), ("SimpleRNN", 1, 0.5, 0.2), ("LSTM", 4, 0.4, 0.0),
    ("GRU", 3, 0.0, 0.3)])
def test_dropout_training_step_equals_keras_with_the_same_masks(keras, rng, monkeypatch, kind, gates, rate, rrate):
    n, t, f, u = 4, 6, 3, 5

    def build(K):
        inp = K.Input((t, f))
        h = getattr(K.layers, kind)(u, dropout=rate, recurrent_dropout=rrate, return_sequences=True)(inp)
        return K.Model(inp, K.layers.Dense(2)(h))

    masks = _SameDropoutMasks(rng, keras, monkeypatch)
    model, kmodel = _compiled(keras, build, rng, "mse", lr=0.3)
    x, y = rng.normal(size=(n, t, f)).astype("float32"), rng.normal(size=(n, t, 2)).astype("float32")
    per_gate = gates if rrate else 1  # Keras draws one mask per gate once recurrent dropout is on
    masks.plan([(n, f, u, rate, rrate, per_gate)])
    got, want = model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
    assert not masks.graphc_queue and not masks.keras_queue
    assert np.isclose(got, want, rtol=1e-5), f"loss {got} vs Keras {want}"
    _assert_same_weights(model, kmodel)
    np.testing.assert_allclose(model.predict(x), kmodel.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_stacked_cells_with_dropout_and_masks_equal_keras(keras, rng, monkeypatch):
    def build(K):
        inp = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(13, 3, mask_zero=True)(inp)
        cells = [K.layers.GRUCell(4, dropout=0.5, recurrent_dropout=0.25), K.layers.LSTMCell(3, dropout=0.2)]
        return K.Model(inp, K.layers.RNN(cells, go_backwards=True)(h))

    masks = _SameDropoutMasks(rng, keras, monkeypatch)
    model, kmodel = _compiled(keras, build, rng, "mse", lr=0.3)
    x, y = _ids(rng, 4), rng.normal(size=(4, 3)).astype("float32")
    masks.plan([(4, 3, 4, 0.5, 0.25, 3), (4, 4, 3, 0.2, 0.0, 1)])
    assert np.isclose(model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y)), rtol=1e-5)
    _assert_same_weights(model, kmodel)


def test_native_trainer_refuses_recurrent_dropout_naming_it(rng):
    inp = graphc.Input((5, 3))
    out = graphc.layers.GRU(4, recurrent_dropout=0.2, name="slow_gru")(inp)
    model = graphc.Model(inp, out)
    model.compile(optimizer="sgd", loss="mse")
    graphc.build(model, target="native", training=True)
    x, y = rng.normal(size=(2, 5, 3)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")
    with pytest.raises(Exception, match="slow_gru.*recurrent_dropout"):
        model.train_on_batch(x, y)


def test_input_dropout_trains_natively_and_is_off_at_inference(rng):
    inp = graphc.Input((5, 3))
    model = graphc.Model(inp, graphc.layers.LSTM(4, dropout=0.5)(inp))
    model.compile(optimizer="sgd", loss="mse")
    x, y = rng.normal(size=(3, 5, 3)).astype("float32"), rng.normal(size=(3, 4)).astype("float32")
    before = model.predict(x)
    plain = graphc.Model(inp, graphc.layers.LSTM(4)(inp))
    plain.set_weights(model.get_weights())
    np.testing.assert_array_equal(before, plain.predict(x))
    graphc.build(model, target="native", training=True)
    losses = {round(float(model.train_on_batch(x, y)), 6) for _ in range(3)}
    assert len(losses) == 3  # fresh masks each step
