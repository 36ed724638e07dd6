"""Callbacks: hook order, History, EarlyStopping, ReduceLROnPlateau, LearningRateScheduler, CSVLogger,
ModelCheckpoint, LambdaCallback and TerminateOnNaN (TensorBoard: test_tensorboard.py)."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from graphc import Input, Model, callbacks, layers, models


def _model(rng, lr=0.01):
    inp = Input(shape=(3,))
    model = Model(inp, layers.Dense(1, name="out")(inp))
    model.compile(optimizer=__import__("graphc").optimizers.SGD(lr), loss="mse")
    x = rng.standard_normal((12, 3)).astype("float32")
    y = rng.standard_normal((12, 1)).astype("float32")
    return model, x, y


class _Recorder(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def set_model(self, model):
        super().set_model(model)
        self.calls.append("set_model")

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(f"batch_end {batch} {sorted(logs)}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")
        logs["extra"] = 1.0  # later callbacks (and the History) see it

    def on_test_begin(self, logs=None):
        self.calls.append("test_begin")

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_hooks_run_in_keras_order_and_history_sees_added_logs(rng):
    model, x, y = _model(rng)
    rec = _Recorder()
    history = model.fit(x, y, epochs=2, batch_size=5, callbacks=[rec], validation_data=(x, y), verbose=0,
                        initial_epoch=0)
    assert rec.calls[:3] == ["set_model", "train_begin", "epoch_begin 0"]
    assert rec.calls[3:6] == [f"batch_end {i} ['loss']" for i in range(3)]
    assert "test_begin" in rec.calls
    assert "epoch_end 0 ['loss', 'val_loss']" in rec.calls and rec.calls[-1] == "train_end"
    assert history is model.history and history.history["extra"] == [1.0, 1.0] and history.epoch == [0, 1]


def test_early_stopping_waits_patience_epochs():
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2)

    class Fake:
        stop_training = False

    stop.set_model(Fake())
    stop.on_train_begin()
    for epoch, value in enumerate([1.0, 0.9, 0.95, 0.89, 0.97, 0.99, 0.5]):
        stop.on_epoch_end(epoch, {"val_loss": value})
        if stop.model.stop_training:
            break
    # 0.95 waits one epoch, 0.89 improves (the wait starts again), 0.97 and 0.99 make two: stop
    assert epoch == 5 and stop.stopped_epoch == 5 and stop.best == 0.89


def test_early_stopping_with_accuracy_maximizes_and_restores_best_weights(rng):
    model, x, y = _model(rng)
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    stop = callbacks.EarlyStopping(monitor="loss", patience=0, restore_best_weights=True)
    stop.set_model(model)
    stop.on_train_begin()
    stop.on_epoch_end(0, {"loss": 1.0})
    best = model.get_weights()
    model.set_weights([w + 1 for w in best])
    stop.on_epoch_end(1, {"loss": 2.0})
    assert model.stop_training
    stop.on_train_end()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), best))
    acc = callbacks.EarlyStopping(monitor="val_acc")
    acc.set_model(model)
    acc._set_monitor_op()
    assert acc.monitor_op is np.greater
    with pytest.raises(ValueError, match="maximized or minimized"):
        odd = callbacks.EarlyStopping(monitor="val_weird")
        odd.set_model(model)
        odd._set_monitor_op()


def test_reduce_lr_on_plateau_and_scheduler_change_the_optimizer(rng):
    model, x, y = _model(rng, lr=0.5)
    reduce = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.1)
    reduce.set_model(model)
    reduce.on_train_begin()
    logs = [{"loss": v} for v in (1.0, 1.0, 1.0, 1.0, 1.0)]
    for epoch, entry in enumerate(logs):
        reduce.on_epoch_end(epoch, entry)
    assert [entry["learning_rate"] for entry in logs] == pytest.approx([0.5, 0.5, 0.25, 0.125, 0.1], rel=1e-6)
    sched = callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 * (epoch + 1))
    history = model.fit(x, y, epochs=3, callbacks=[sched], verbose=0)
    assert history.history["learning_rate"] == pytest.approx([0.01, 0.02, 0.03], rel=1e-6)
    bad = callbacks.LearningRateScheduler(lambda epoch: "fast")
    with pytest.raises(ValueError, match="should be a float"):
        model.fit(x, y, epochs=1, callbacks=[bad], verbose=0)


def test_learning_rate_changes_take_effect_in_the_train_step(rng):
    model, x, y = _model(rng)
    model.optimizer.learning_rate = 0.0
    before = model.get_weights()
    model.train_on_batch(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_csv_logger_writes_one_row_per_epoch(rng, tmp_path):
    model, x, y = _model(rng)
    path = tmp_path / "log.csv"
    model.fit(x, y, epochs=3, validation_split=0.25, callbacks=[callbacks.CSVLogger(path)], verbose=0)
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert list(rows[0]) == ["epoch", "loss", "val_loss"]
    model.fit(x, y, epochs=1, callbacks=[callbacks.CSVLogger(path, append=True)], verbose=0)
    assert len(list(csv.DictReader(open(path)))) == 4


def test_model_checkpoint_saves_the_best_model(rng, tmp_path):
    model, x, y = _model(rng)
    path = tmp_path / "ckpt-{epoch:02d}.keras"
    ckpt = callbacks.ModelCheckpoint(str(path), monitor="loss", save_best_only=True)
    ckpt.set_model(model)
    ckpt.on_epoch_end(0, {"loss": 1.0})
    ckpt.on_epoch_end(1, {"loss": 2.0})
    ckpt.on_epoch_end(2, {"loss": 0.5})
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01.keras", "ckpt-03.keras"]
    restored = models.load_model(tmp_path / "ckpt-03.keras")
    assert np.allclose(restored.predict(x), model.predict(x))
    weights = callbacks.ModelCheckpoint(str(tmp_path / "w.weights.h5"), save_weights_only=True)
    model.fit(x, y, epochs=1, callbacks=[weights], verbose=0)
    assert (tmp_path / "w.weights.h5").exists()
    with pytest.raises(ValueError, match="must end in `.keras`"):
        callbacks.ModelCheckpoint(str(tmp_path / "model.bin"))


def test_lambda_callback_and_terminate_on_nan(rng):
    model, x, y = _model(rng)
    seen = []
    cb = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, round(logs["loss"], 6))))
    model.fit(x, y, epochs=2, callbacks=[cb], verbose=0)
    assert [e for e, _ in seen] == [0, 1]
    y_nan = y.copy()
    y_nan[0] = np.nan
    history = model.fit(x, y_nan, epochs=3, batch_size=4, callbacks=[callbacks.TerminateOnNaN()], verbose=0)
    assert len(history.history["loss"]) == 1
    with pytest.raises(TypeError, match="Callback instances"):
        model.fit(x, y, callbacks=["not a callback"], verbose=0)
