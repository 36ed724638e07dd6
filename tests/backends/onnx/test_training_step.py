"""``graphc.onnx.export_training_step``: the whole training step as one ONNX graph in onnxruntime.

Each model runs three steps three ways from the same weights: the exported step in onnxruntime
(its ``.next`` outputs fed back as the state inputs), graphc's reference trainer and the native
trainer (``graphc.build(model, "native", training=True)``). Every weight, moving statistic,
optimizer slot and the iteration count agree to rtol 1e-4 of their scale, and so do the losses.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import graphc
from graphc import examples, layers
from graphc.backends.onnx import OnnxExportError, make_session

STEPS = 3


def _mlp():
    model = graphc.Sequential([graphc.Input((7,), name="features"), layers.Dense(3, activation="tanh"),
                               layers.Dense(5, activation="relu"), layers.Dense(1)], name="mlp_adam")
    return model, graphc.optimizers.Adam(0.01), "mse", ["mae"]


def _conv():
    model = graphc.Sequential([
        graphc.Input((7, 7, 3), name="image"), layers.Conv2D(5, 3, padding="same"), layers.BatchNormalization(),
        layers.ReLU(), layers.MaxPooling2D(2), layers.Conv2D(3, 2, strides=2, padding="same"),
        layers.AveragePooling2D(2, strides=1, padding="same"), layers.Flatten(), layers.Dense(3, activation="softmax"),
    ], name="conv_bn_pool")
    return model, graphc.optimizers.SGD(0.05, momentum=0.9), "categorical_crossentropy", ["accuracy"]


def _lstm():
    model = graphc.Sequential([graphc.Input((7,), dtype="int32", name="tokens"), layers.Embedding(11, 3),
                               layers.LSTM(5, return_sequences=True), layers.GRU(3), layers.Dense(1)],
                              name="embedding_lstm_gru")
    return model, graphc.optimizers.RMSprop(0.01), "mse", None


def _batches(model, rng, batch: int) -> list[tuple]:
    out = []
    for _ in range(STEPS):
        t = model.inputs[0]
        shape = (batch, *t.shape[1:])
        x = rng.integers(0, 11, size=shape).astype("int32") if t.dtype.startswith("int") else \
            rng.standard_normal(shape).astype("float32")
        units = model.outputs[0].shape[-1]
        y = np.eye(units, dtype="float32")[rng.integers(0, units, size=batch)] if units > 1 else \
            rng.standard_normal((batch, 1)).astype("float32")
        out.append((x, y))
    return out


def _twins(make, n: int):
    """``n`` copies of one model with the same weights, each compiled with its own optimizer."""
    models = []
    for _ in range(n):
        model, opt, loss, metrics = make()
        if models:
            model.set_weights(models[0].get_weights())
        model.compile(optimizer=opt, loss=loss, metrics=metrics)
        models.append(model)
    return models


def _run_onnx(model, batches) -> tuple[dict[str, np.ndarray], list[float]]:
    exported = graphc.onnx.export_training_step(model, y=batches[0][1])
    session = make_session(exported.model)
    state = dict(exported.state)
    losses = []
    for x, y in batches:
        feeds = dict(zip(exported.batch_inputs, [x, y]))
        feeds[exported.learning_rate] = np.asarray(model.optimizer.learning_rate, dtype=np.float32)
        names = [exported.loss, *exported.updates.values()]
        result = dict(zip(names, session.run(names, {**feeds, **state})))
        state = {k: result[v] for k, v in exported.updates.items()}
        losses.append(float(result[exported.loss]))
    return state, losses


_MAX_POOLS = (layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D)
_GLOBAL_MAX_POOLS = (layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D)


def _max_pool_near_ties(model, x, rel: float = 2e-6) -> int:
    """How many max-pooling windows of ``model`` on ``x`` (training mode) hold a second value within ``rel``
    of the pooled input's scale below their maximum, the maximum above zero.

    At such a near tie the gradient's route depends on the last bits of the forward pass, which differ
    between float32 engines that sum in different orders (OpenBLAS's AVX2 and AVX-512 kernels among
    them): two correct trainers then send the window's whole gradient to different positions, and every
    layer below diverges. A comparison of trainers is only well posed away from those points, as a
    gradient check is only away from a ReLU's kink. ``rel``: four times the largest difference seen
    between onnxruntime's and the reference's float32 forward passes at a pooled input (5.4e-8 of a
    scale of 0.1 at multi_output's conv1d_2, on an AVX2 host)."""
    pools = [layer for layer in model.layers if isinstance(layer, _MAX_POOLS + _GLOBAL_MAX_POOLS)]
    if not pools:
        return 0
    features = graphc.Model(inputs=model.inputs, outputs=[layer.input for layer in pools])(x, training=True)
    features = features if isinstance(features, (list, tuple)) else [features]
    near = 0
    for layer, a in zip(pools, features):
        a = np.asarray(a, dtype=np.float64)  # (batch, *spatial, channels)
        spatial = tuple(range(1, a.ndim - 1))
        if isinstance(layer, _GLOBAL_MAX_POOLS):
            windows = np.moveaxis(a, -1, 1).reshape(a.shape[0], a.shape[-1], -1)
        else:
            assert layer.padding == "valid" and layer.data_format == "channels_last", layer.name
            view = np.lib.stride_tricks.sliding_window_view(a, layer.pool_size, axis=spatial)
            view = view[(slice(None), *(slice(None, None, s) for s in layer.strides))]
            windows = view.reshape(*view.shape[:a.ndim], -1)
        top = np.sort(windows, axis=-1)[..., -2:]
        near += int(np.sum((top[..., 1] > 0) & (top[..., 1] - top[..., 0] <= rel * np.abs(a).max())))
    return near


def _close(got, want, what: str) -> None:
    want = np.asarray(want)
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(scale, 1e-3), err_msg=what)


@pytest.mark.parametrize("make", [_mlp, _conv, _lstm], ids=["mlp_adam", "conv_bn_pool_sgd_momentum",
                                                             "embedding_lstm_gru_rmsprop"])
@pytest.mark.parametrize("batch", [1, 3])
def test_three_steps_agree_with_the_reference_and_native_trainers(make, batch, rng):
    onnx_model, ref, native = _twins(make, 3)
    batches = _batches(ref, rng, batch)
    state, onnx_losses = _run_onnx(onnx_model, batches)
    graphc.build(native, "native", training=True)
    for step, (x, y) in enumerate(batches):
        ref_loss = ref.train_on_batch(x, y)
        ref_loss = ref_loss[0] if isinstance(ref_loss, list) else ref_loss
        native_loss = native.train_on_batch(x, y)
        native_loss = native_loss[0] if isinstance(native_loss, list) else native_loss
        _close(onnx_losses[step], ref_loss, f"step {step}: onnxruntime loss vs reference")
        _close(native_loss, ref_loss, f"step {step}: native loss vs reference")
    # the twins name their layers apart (dense, dense_3...): weights pair up by position
    for var, ref_var, want, got_native in zip(onnx_model.weights, ref.weights, ref.get_weights(),
                                              native.get_weights()):
        assert var.path in state, f"{var.path} is not among the exported state inputs {sorted(state)}"
        _close(state[var.path], want, f"{var.path}: onnxruntime vs reference after {STEPS} steps")
        _close(got_native, want, f"{var.path}: native vs reference after {STEPS} steps")
        for slot, slot_want in ref.optimizer.slots.get(ref_var.path, {}).items():
            name = f"{onnx_model.optimizer.name}/{var.path}/{slot}"
            assert name in state, f"optimizer slot {name} is not among the exported state inputs"
            _close(state[name], slot_want, f"{name}: onnxruntime vs reference after {STEPS} steps")
    iterations = [v for k, v in state.items() if k.endswith("/iterations")]
    assert [int(v) for v in iterations] == [STEPS] == [ref.optimizer.iterations]


@pytest.mark.parametrize("name", ["mlp", "separable_conv_bn", "conv1d_text", "multi_output"])
def test_bundled_models_steps_agree_with_the_reference(name, rng):
    models = [examples.build(name, seed=3) for _ in range(2)]
    models[1].set_weights(models[0].get_weights())
    for model in models:
        model.compile(optimizer=graphc.optimizers.RMSprop(0.001), loss="mse")
    for _ in range(20):  # inputs without a max-pooling near tie (see _max_pool_near_ties)
        x = examples.inputs(name, rng, 2)
        if not _max_pool_near_ties(models[0], x):
            break
    else:
        pytest.fail(f"20 draws of {name}'s inputs all had a max-pooling window within rounding of a tie")
    ys = [rng.standard_normal((2, *out.shape[1:])).astype("float32") for out in models[0].outputs]
    y = ys if len(ys) > 1 else ys[0]
    exported = graphc.onnx.export_training_step(models[0], y=y)
    session = make_session(exported.model)
    xs = x if isinstance(x, dict) else dict(zip([t.name for t in models[0].inputs],
                                                  x if isinstance(x, list) else [x]))
    feeds = {**{k: np.asarray(v) for k, v in xs.items()},
             **dict(zip([n for n in exported.batch_inputs if n not in xs], ys))}
    dtypes = {i.name: "int32" if i.type == "tensor(int32)" else "int64" if i.type == "tensor(int64)" else "float32"
              for i in session.get_inputs()}
    feeds = {k: v.astype(dtypes[k]) for k, v in feeds.items()}
    state = dict(exported.state)
    for _ in range(2):
        result = dict(zip(exported.updates.values(), session.run(list(exported.updates.values()),
                                                                  {**feeds, **state})))
        state = {k: result[v] for k, v in exported.updates.items()}
        models[1].train_on_batch(x, y)
    for var, want in zip(models[0].weights, models[1].get_weights()):  # paired by position
        _close(state[var.path], want, f"{name} {var.path}: onnxruntime vs reference after 2 steps")


def test_inputs_outputs_and_metadata_are_named_in_pairs(tmp_path):
    model, opt, loss, metrics = _conv()
    model.compile(optimizer=opt, loss=loss, metrics=metrics)
    path = tmp_path / "step.onnx"
    exported = graphc.onnx.export_training_step(model, path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    assert inputs[:3] == ["image", f"{model.output_names[0]}_true", "learning_rate"]
    assert outputs[:3] == ["loss", "accuracy/total", "accuracy/count"]
    kernel, moving_mean = model.layers[0].weights[0].path, model.layers[1].weights[2].path
    assert kernel.endswith("/kernel") and moving_mean.endswith("/moving_mean")
    for name in (kernel, moving_mean, f"{model.optimizer.name}/iterations"):
        assert name in inputs and f"{name}.next" in outputs
    assert {i.name for i in proto.graph.initializer} >= set(exported.state) | {"learning_rate"}
    assert json.loads({p.key: p.value for p in proto.metadata_props}["graphc.state_updates"]) == exported.updates
    assert all(outputs.count(v) == 1 for v in exported.updates.values())
    assert len(exported.updates) == len(exported.state) and all(k in inputs for k in exported.state)


def test_training_mode_randomness_is_refused_naming_the_layer():
    model = graphc.Sequential([graphc.Input((4,)), layers.Dense(3), layers.Dropout(0.5, name="drop"),
                               layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(OnnxExportError, match=r"layer 'drop'.*draws random numbers in training mode"):
        graphc.onnx.export_training_step(model)


def test_a_free_sequence_length_is_refused_naming_the_recurrent_layer():
    model = graphc.Sequential([graphc.Input((None, 3)), layers.LSTM(2, name="free_lstm"), layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(OnnxExportError, match=r"layer 'free_lstm'.*fixed number of steps"):
        graphc.onnx.export_training_step(model)


def test_an_uncompiled_model_is_refused():
    model = graphc.Sequential([graphc.Input((4,)), layers.Dense(1)])
    with pytest.raises(RuntimeError, match="compiled model"):
        graphc.onnx.export_training_step(model)


def test_sample_weights_are_a_batch_input(rng):
    onnx_model, ref = _twins(_mlp, 2)
    x, y = _batches(ref, rng, 3)[0]
    sw = np.asarray([0.5, 2.0, 0.0], dtype=np.float32)
    exported = graphc.onnx.export_training_step(onnx_model, y=y, sample_weight=sw)
    assert exported.batch_inputs[2].endswith("_sample_weight")
    feeds = dict(zip(exported.batch_inputs, [x, y, sw]))
    names = [exported.loss, *exported.updates.values()]
    result = dict(zip(names, make_session(exported.model).run(names, feeds)))  # the state from its defaults
    want = ref.train_on_batch(x, y, sample_weight=sw)
    _close(result[exported.loss], want[0] if isinstance(want, list) else want, "weighted loss")
    for var, value in zip(onnx_model.weights, ref.get_weights()):
        _close(result[exported.updates[var.path]], value, f"{var.path} after a weighted step")
