"""The TensorBoard callback: its event files, read back by TensorBoard's own event reader."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import graphc
from graphc import Input, Model, callbacks, layers


def _read(run_dir) -> EventAccumulator:
    files = [f for f in os.listdir(run_dir) if f.startswith("events.out.tfevents.")]
    assert len(files) == 1, files
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return acc


def _model(rng):
    inp = Input(shape=(3,), name="features")
    hidden = layers.Dense(5, activation="relu", name="hidden")(inp)
    model = Model(inp, layers.Dense(1, name="out")(hidden))
    model.compile(optimizer=graphc.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    x = rng.standard_normal((12, 3)).astype("float32")
    y = rng.standard_normal((12, 1)).astype("float32")
    return model, x, y


def test_scalars_histograms_and_steps(rng, tmp_path):
    model, x, y = _model(rng)
    logdir = tmp_path / "logs"
    model.fit(x, y, epochs=3, batch_size=3, validation_split=0.25, verbose=0,
              callbacks=[callbacks.TensorBoard(log_dir=logdir, histogram_freq=2, update_freq=2)])
    history = model.history.history
    train = _read(logdir / "train")
    epoch_loss = train.Scalars("epoch_loss")
    assert [e.step for e in epoch_loss] == [0, 1, 2]
    np.testing.assert_allclose([e.value for e in epoch_loss], history["loss"], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in train.Scalars("epoch_mae")], history["mae"], rtol=1e-6)
    assert [e.value for e in train.Scalars("epoch_learning_rate")] == pytest.approx([0.01] * 3)
    # 9 training samples in batches of 3: 3 batches an epoch, 9 in all; every 2nd is written
    assert [e.step for e in train.Scalars("batch_loss")] == [2, 4, 6, 8]
    # histograms at epochs 0 and 2 (histogram_freq=2), one per weight, counting every element
    tags = train.Tags()["histograms"]
    assert sorted(tags) == ["hidden/bias/histogram", "hidden/kernel/histogram", "out/bias/histogram",
                            "out/kernel/histogram"]
    kernel = model.get_layer("hidden").kernel.value
    hist = train.Histograms("hidden/kernel/histogram")
    assert [h.step for h in hist] == [0, 2]
    last = hist[-1].histogram_value
    assert last.num == kernel.size and sum(last.bucket) == kernel.size
    assert last.min == pytest.approx(kernel.min()) and last.max == pytest.approx(kernel.max())
    assert last.sum == pytest.approx(kernel.sum(), rel=1e-5)
    val = _read(logdir / "validation")
    np.testing.assert_allclose([e.value for e in val.Scalars("epoch_loss")], history["val_loss"], rtol=1e-6)
    # Keras's evaluation_<metric>_vs_iterations: the validation results at the optimizer's step (3 a epoch)
    assert [e.step for e in val.Scalars("evaluation_loss_vs_iterations")] == [3, 6, 9]


def test_graph_is_named_by_layers(rng, tmp_path):
    model, x, y = _model(rng)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.TensorBoard(log_dir=tmp_path)])
    graph = _read(tmp_path / "train").Graph()
    nodes = {n.name: n for n in graph.node}
    assert nodes["features"].op == "Placeholder"
    assert [d.size for d in nodes["features"].attr["shape"].shape.dim] == [-1, 3]
    assert nodes["hidden/kernel"].op == "VariableV2" and nodes["out/bias"].op == "VariableV2"
    by_layer = {}
    for name, node in nodes.items():
        by_layer.setdefault(name.split("/")[0], []).append(node.op)
    assert sorted(by_layer) == ["features", "hidden", "out"]
    assert sorted(by_layer["hidden"]) == ["VariableV2", "VariableV2", "bias_add", "matmul", "relu"]
    matmul = next(n for n in graph.node if n.name.startswith("hidden/") and n.op == "matmul")
    assert list(matmul.input) == ["features", "hidden/kernel"]
    relu = next(n for n in graph.node if n.op == "relu")
    out_matmul = next(n for n in graph.node if n.name.startswith("out/") and n.op == "matmul")
    assert list(out_matmul.input) == [relu.name, "out/kernel"]
    assert [d.size for d in relu.attr["_output_shapes"].list.shape[0].dim] == [-1, 5]


def test_no_graph_without_write_graph_and_epoch_only_scalars(rng, tmp_path):
    model, x, y = _model(rng)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.TensorBoard(log_dir=tmp_path, write_graph=False)])
    train = _read(tmp_path / "train")
    assert not train.Tags()["graph"]
    assert "batch_loss" not in train.Tags()["scalars"] and not train.Tags()["histograms"]
    assert not (tmp_path / "validation").exists()


def test_steps_per_second_and_weight_images(rng, tmp_path):
    model, x, y = _model(rng)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0,
              callbacks=[callbacks.TensorBoard(log_dir=tmp_path, histogram_freq=1, write_images=True,
                                               write_steps_per_second=True, update_freq="batch")])
    train = _read(tmp_path / "train")
    assert train.Scalars("epoch_steps_per_second")[0].value > 0
    assert [e.step for e in train.Scalars("batch_steps_per_second")] == [1, 2, 3]
    # a (3, 5) Dense kernel is drawn 3 high and 5 wide; its (5,) bias as one column, as Keras reshapes it
    kernel = train.Images("hidden/kernel/image")[-1]
    assert (kernel.height, kernel.width) == (3, 5)
    bias = train.Images("hidden/bias/image")[-1]
    assert (bias.height, bias.width) == (5, 1)


def test_options_checked(tmp_path):
    with pytest.raises(ValueError, match="update_freq"):
        callbacks.TensorBoard(log_dir=tmp_path, update_freq="sometimes")
    with pytest.raises(ValueError, match="histogram_freq"):
        callbacks.TensorBoard(log_dir=tmp_path, histogram_freq=-1)
    with pytest.raises(ValueError, match="profile_batch"):
        callbacks.TensorBoard(log_dir=tmp_path, profile_batch=2)
    with pytest.raises(ValueError, match="embeddings_freq"):
        callbacks.TensorBoard(log_dir=tmp_path, embeddings_freq=1)


def test_missing_tensorboardx_names_the_package(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def without_tensorboardx(name, *args, **kwargs):
        if name == "tensorboardX" or name.startswith("tensorboardX."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_tensorboardx)
    with pytest.raises(ImportError, match="pip install tensorboardX"):
        callbacks.TensorBoard(log_dir=tmp_path)
