"""Losses, metrics and optimizer updates against independent NumPy formulas (and Keras where cheap)."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import losses, metrics, optimizers
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder

EPS = 1e-7


def _probs(rng, n, c):
    p = rng.random((n, c)).astype("float32") + 0.05
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n", [1, 3, 17])
def test_losses_match_numpy_formulas(rng, n):
    y = rng.standard_normal((n, 7)).astype("float32")
    p = rng.standard_normal((n, 7)).astype("float32")
    assert losses.mean_squared_error(y, p) == pytest.approx(np.mean((y - p) ** 2, axis=-1), rel=1e-5)
    assert losses.MeanAbsoluteError()(y, p) == pytest.approx(np.mean(np.abs(y - p)), rel=1e-5)
    t = rng.integers(0, 2, size=(n, 3)).astype("float32")
    q = np.clip(rng.random((n, 3)).astype("float32"), EPS, 1 - EPS)
    bce = -(t * np.log(q) + (1 - t) * np.log(1 - q)).mean(axis=-1)
    assert losses.binary_crossentropy(t, q) == pytest.approx(bce, rel=1e-5)
    logits = rng.standard_normal((n, 3)).astype("float32")
    sig = 1 / (1 + np.exp(-logits))
    want = -(t * np.log(sig) + (1 - t) * np.log(1 - sig)).mean()
    assert losses.BinaryCrossentropy(from_logits=True)(t, logits) == pytest.approx(want, rel=1e-4)
    probs = _probs(rng, n, 5) * 3.0  # not normalized: Keras renormalizes first
    labels = rng.integers(0, 5, size=n)
    onehot = np.eye(5, dtype="float32")[labels]
    cce = -np.log(np.clip(probs / probs.sum(-1, keepdims=True), EPS, 1 - EPS))[np.arange(n), labels]
    assert losses.categorical_crossentropy(onehot, probs) == pytest.approx(cce, rel=1e-5)
    assert losses.sparse_categorical_crossentropy(labels, probs) == pytest.approx(cce, rel=1e-5)
    assert losses.SparseCategoricalCrossentropy()(labels[:, None], probs) == pytest.approx(cce.mean(), rel=1e-5)
    smooth = onehot * 0.9 + 0.1 / 5
    want = -(smooth * np.log(np.clip(probs / probs.sum(-1, keepdims=True), EPS, 1 - EPS))).sum(-1).mean()
    assert losses.CategoricalCrossentropy(label_smoothing=0.1)(onehot, probs) == pytest.approx(want, rel=1e-5)


def test_loss_reductions_and_sample_weights(rng):
    y, p = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    per = np.mean((y - p) ** 2, axis=-1)
    assert losses.MeanSquaredError(reduction="sum")(y, p) == pytest.approx(per.sum(), rel=1e-5)
    assert losses.MeanSquaredError(reduction=None)(y, p) == pytest.approx(per, rel=1e-5)
    w = np.array([1.0, 0.0, 2.0, 0.5])
    assert losses.MeanSquaredError()(y, p, sample_weight=w) == pytest.approx((per * w).sum() / 4, rel=1e-5)
    with pytest.raises(ValueError, match="Invalid value for argument `reduction`"):
        losses.MeanSquaredError(reduction="avg")


def test_loss_shape_rules_and_errors(rng):
    # rank differing by one on a size-1 last axis: squeezed, as Keras does
    y = rng.standard_normal((5,)).astype("float32")
    p = rng.standard_normal((5, 1)).astype("float32")
    assert losses.mean_squared_error(y, p) == pytest.approx((y - p[:, 0]) ** 2, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        losses.mean_squared_error(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="do not match predictions"):
        losses.sparse_categorical_crossentropy(np.zeros((3, 2)), np.full((3, 4), 0.25))
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("hinge_loss_that_does_not_exist")
    assert losses.get("mse").name == "mse" and isinstance(losses.get("MeanSquaredError"), losses.MeanSquaredError)
    config = losses.serialize(losses.BinaryCrossentropy(from_logits=True))
    assert losses.deserialize(config).from_logits is True


@pytest.mark.keras
def test_losses_agree_with_keras(keras, rng):
    t = rng.integers(0, 2, size=(6, 1)).astype("float32")
    q = rng.random((6, 1)).astype("float32")
    q[0] = 0.0  # clipped
    for name in ("binary_crossentropy", "mse", "mae"):
        want = float(keras.losses.get(name)(t, q).cpu().numpy().mean())
        assert float(np.mean(losses.get(name)(t, q))) == pytest.approx(want, rel=1e-5), name


def test_metrics_match_numpy(rng):
    n = 17
    p = _probs(rng, n, 4)
    labels = rng.integers(0, 4, size=n)
    acc = np.mean(p.argmax(-1) == labels)
    m = metrics.SparseCategoricalAccuracy()
    m.update_state(labels[:9], p[:9])
    m.update_state(labels[9:, None], p[9:])
    assert m.result() == pytest.approx(acc)
    c = metrics.CategoricalAccuracy()
    c.update_state(np.eye(4)[labels], p)
    assert c.result() == pytest.approx(acc)
    b = metrics.BinaryAccuracy(threshold=0.3)
    t = rng.integers(0, 2, size=(n, 2)).astype("float32")
    q = rng.random((n, 2)).astype("float32")
    b.update_state(t, q)
    assert b.result() == pytest.approx(np.mean(t == (q > 0.3)))
    b.reset_state()
    assert b.result() == 0.0
    mean = metrics.Mean()
    mean.update_state([1.0, 2.0, 3.0], sample_weight=[1.0, 0.0, 1.0])
    assert mean.result() == pytest.approx(2.0)


def test_accuracy_resolution_follows_keras():
    assert isinstance(metrics.get("acc", (8, 1), (8, 1)), metrics.BinaryAccuracy)
    assert isinstance(metrics.get("accuracy", (8,), (8, 5)), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("acc", (8, 1), (8, 5)), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("acc", (8, 5), (8, 5)), metrics.CategoricalAccuracy)
    assert metrics.get("acc", (8, 5), (8, 5)).name == "acc"
    assert metrics.get("mae").name == "mae"
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.get("precision_at_k")


# ---------------------------------------------------------------------------- optimizers
def _one_step(opt, w, g, steps=1):
    """Run ``steps`` updates of a (w, constant gradient g) pair through the optimizer's graph ops."""
    from graphc.training.optimizers import ParamUpdate

    w = w.copy()
    for _ in range(steps):
        graph = Graph("opt")
        grad = graph.add_input("g", TensorType.of(g))
        lr = graph.add_input("lr", TensorType("float32", ()))
        const = graph.add_constant("w", w, trainable=True)
        it = graph.add_constant("it", np.asarray(opt.iterations, dtype=np.int64))
        updates, slots = opt.emit_updates(OpBuilder(graph), [ParamUpdate(const, grad, "w")], {const: w}, lr, it)
        graph.set_outputs(list(updates.values()))
        out = run(graph, {"g": g, "lr": np.float32(opt.learning_rate)})
        for c, v in updates.items():
            if c in slots:
                key, slot = slots[c]
                opt.slots[key][slot] = out[v]
        w = out[updates[const]]
        opt.iterations += 1
    return w


@pytest.mark.parametrize("shape", [(1,), (3, 7)])
def test_optimizer_updates_match_their_formulas(rng, shape):
    w = rng.standard_normal(shape).astype("float32")
    g = rng.standard_normal(shape).astype("float32")
    lr = np.float32(0.01)
    # SGD with momentum, 2 steps: m1 = -lr g; m2 = 0.9 m1 - lr g
    m1 = -lr * g
    m2 = 0.9 * m1 - lr * g
    got = _one_step(optimizers.SGD(0.01, momentum=0.9), w, g, steps=2)
    np.testing.assert_allclose(got, w + m1 + m2, rtol=1e-5, atol=1e-7)
    # RMSprop, 2 steps
    v1 = 0.1 * g * g
    w1 = w - lr * g / np.sqrt(v1 + 1e-7)
    v2 = 0.9 * v1 + 0.1 * g * g
    got = _one_step(optimizers.RMSprop(0.01), w, g, steps=2)
    np.testing.assert_allclose(got, w1 - lr * g / np.sqrt(v2 + 1e-7), rtol=1e-5, atol=1e-7)
    # Adam, 1 step: m = 0.1 g, v = 0.001 g^2, alpha = lr sqrt(1 - 0.999) / (1 - 0.9)
    alpha = lr * np.sqrt(1 - 0.999) / (1 - 0.9)
    want = w - 0.1 * g * alpha / (np.sqrt(0.001 * g * g) + 1e-7)
    np.testing.assert_allclose(_one_step(optimizers.Adam(0.01), w, g), want, rtol=1e-5, atol=1e-7)
    # AdamW decays first
    want = w * (1 - 0.01 * 0.004) - 0.1 * g * alpha / (np.sqrt(0.001 * g * g) + 1e-7)
    np.testing.assert_allclose(_one_step(optimizers.AdamW(0.01), w, g), want, rtol=1e-5, atol=1e-7)
    # clipvalue
    got = _one_step(optimizers.SGD(1.0, clipvalue=0.1), w, g)
    np.testing.assert_allclose(got, w - np.clip(g, -0.1, 0.1), rtol=1e-6)


def test_optimizer_learning_rate_config_and_errors():
    opt = optimizers.get("RMSprop")
    assert isinstance(opt, optimizers.RMSprop) and opt.learning_rate == pytest.approx(0.001)
    opt.learning_rate = 0.5
    assert opt.get_config()["learning_rate"] == 0.5
    again = optimizers.deserialize(optimizers.serialize(opt))
    assert isinstance(again, optimizers.RMSprop) and again.learning_rate == 0.5 and again.rho == opt.rho
    sched = optimizers.SGD(learning_rate=lambda step: 0.1 / (1 + step))
    sched.iterations = 4
    assert sched.learning_rate == pytest.approx(0.02)
    with pytest.raises(TypeError, match="not settable"):
        sched.learning_rate = 0.3
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizers.get("adafactor")
    with pytest.raises(ValueError, match="Only one of"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="momentum"):
        optimizers.SGD(momentum=2.0)
