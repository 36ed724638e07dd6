"""``keras.ops`` on symbolic tensors: operators and ``graphc.ops`` functions as functional-graph nodes.

Each architecture is written once against ``K`` (``keras`` or ``graphc``) and checked with
``tests.keras_parity``: graphc's reference, ONNX and native targets predict what Keras predicts,
and ``.keras`` files go both ways. The same functions on NumPy arrays compute at once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers, ops
from tests.keras_parity import check_keras_file, check_predict


def _arithmetic(K):
    x = K.Input((3, 7), name="x")
    y = K.Input((3, 7), name="y")
    h = K.layers.Dense(7)(x)
    a = (h + 3.0) * y - 2.0 / (K.ops.abs(y) + 1.0)
    b = 1.5 - (-h) ** 2 + K.ops.sqrt(K.ops.square(y) + 0.5) + x @ K.ops.transpose(y, (0, 2, 1))[:, :, :1]
    c = K.ops.maximum(K.ops.minimum(h, y), -0.25) + K.ops.clip(h, -0.5, 0.75) + K.ops.exp(K.ops.clip(y, -2.0, 2.0))
    d = K.ops.log(K.ops.abs(h) + 1.0) + K.ops.negative(y) ** 3 + K.ops.power(K.ops.abs(x) + 1.0, y)
    return K.Model([x, y], [a, b, c, d])


def _reductions(K):
    x = K.Input((5, 3, 4), name="x")
    h = K.layers.Dense(4)(x)
    outs = [K.ops.mean(h, axis=-1, keepdims=True), K.ops.sum(h, axis=(1, 2)), K.ops.max(h, axis=1),
            K.ops.min(h, axis=2, keepdims=True), K.ops.var(h, axis=-1), K.ops.std(h, axis=(1, 3), keepdims=True),
            K.ops.mean(h, axis=[-2, 1])]
    return K.Model(x, outs)


def _shapes(K):
    x = K.Input((3, 4), name="x")
    y = K.Input((4, 3), name="y")
    h = K.layers.Dense(5)(x)
    a = K.ops.concatenate([K.ops.transpose(y, (0, 2, 1)), x, h], axis=-1)
    b = K.ops.stack([x, K.ops.reshape(y, (-1, 3, 4))], axis=1)
    c = K.ops.squeeze(K.ops.expand_dims(h, 2), axis=2)
    d = K.ops.expand_dims(K.ops.reshape(h, (-1, 15)), (1, -1))
    return K.Model([x, y], [a, b, c, d])


def _activations(K):
    x = K.Input((3, 5), name="x")
    h = K.layers.Dense(5)(x) * 3.0
    outs = [K.ops.softmax(h), K.ops.softmax(h, axis=1), K.ops.log_softmax(h, axis=-1), K.ops.relu(h),
            K.ops.relu6(h), K.ops.sigmoid(h), K.ops.tanh(h), K.ops.gelu(h), K.ops.gelu(h, approximate=False),
            K.ops.silu(h), K.ops.softplus(h), K.ops.softsign(h), K.ops.elu(h, alpha=0.5),
            K.ops.leaky_relu(h, negative_slope=0.1), K.ops.hard_sigmoid(h), K.ops.hard_silu(h), K.ops.selu(h)]
    return K.Model(x, outs)


def _logic(K):
    x = K.Input((4, 3), name="x")
    y = K.Input((4, 3), name="y")
    mask = (x > 0.2) & ~(y <= -0.3) | (x == y)
    a = K.ops.where(mask, x, y * 2.0)
    b = K.ops.cast(x >= y, "float32") + K.ops.cast(x < 0.0, "float32") * 2.0 + K.ops.cast(x != y, "float32")
    c = K.ops.where(K.ops.logical_or(x > 1.0, K.ops.logical_not(y > 0.0)), 1.0, x)
    return K.Model([x, y], [a, b, c])


def _indexing(K):
    x = K.Input((5, 6, 4), name="x")
    h = K.layers.Dense(4)(x)
    outs = [h[:, 0], h[:, -1, 1:5:2], h[:, 1:4, None, ..., ::3], h[..., 2], h[:, :, -2:, None],
            x[:, 3, 2, -1], K.ops.take(h, [0, 2, 2, -1], axis=2), K.ops.take(h, [[1, 0], [4, 3]], axis=1)]
    return K.Model(x, outs)


def _products(K):
    x = K.Input((3, 4), name="x")
    y = K.Input((4, 5), name="y")
    q = K.layers.Dense(6)(x)
    k = K.layers.Dense(6)(x)
    scores = K.ops.softmax(K.ops.matmul(q, K.ops.transpose(k, (0, 2, 1))) / 6.0 ** 0.5)
    outs = [K.ops.matmul(x, y), K.ops.matmul(scores, x), K.ops.einsum("bij,bjk->bik", x, y),
            K.ops.einsum("bqd,bkd->bqk", q, k), K.ops.einsum("bij->bji", x), K.ops.einsum("bij,bij->bi", q, k),
            K.ops.einsum("bij,bkl->bjl", x, y)]
    return K.Model([x, y], outs)


def _creation(K):
    ids = K.Input((5,), dtype="int32", name="ids")
    f = K.Input((5, 3), name="f")
    outs = [K.ops.one_hot(ids, 4), K.ops.one_hot(ids, 4, axis=1), K.ops.zeros_like(f) + f,
            K.ops.ones_like(f) * 2.0, K.ops.full_like(f, 0.5) - f, K.ops.one_hot(ids, 4, dtype="int32")]
    return K.Model([ids, f], outs)


ARCHITECTURES = {
    "creation": (_creation, lambda rng, n: [rng.integers(0, 4, size=(n, 5)).astype("int32"),
                                            rng.normal(size=(n, 5, 3)).astype("float32")]),
    "arithmetic": (_arithmetic, lambda rng, n: [rng.normal(size=(n, 3, 7)).astype("float32") for _ in range(2)]),
    "reductions": (_reductions, lambda rng, n: rng.normal(size=(n, 5, 3, 4)).astype("float32")),
    "shapes": (_shapes, lambda rng, n: [rng.normal(size=(n, 3, 4)).astype("float32"),
                                        rng.normal(size=(n, 4, 3)).astype("float32")]),
    "activations": (_activations, lambda rng, n: rng.normal(size=(n, 3, 5)).astype("float32")),
    "logic": (_logic, lambda rng, n: [np.round(rng.normal(size=(n, 4, 3)), 1).astype("float32") for _ in range(2)]),
    "indexing": (_indexing, lambda rng, n: rng.normal(size=(n, 5, 6, 4)).astype("float32")),
    "products": (_products, lambda rng, n: [rng.normal(size=(n, 3, 4)).astype("float32"),
                                            rng.normal(size=(n, 4, 5)).astype("float32")]),
}


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_predict_equals_keras_on_every_target(name, keras, rng):
    build, data = ARCHITECTURES[name]
    check_predict(keras, build, data, rng)


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_keras_files_both_ways(name, keras, rng, tmp_path):
    build, data = ARCHITECTURES[name]
    check_keras_file(keras, build, data, rng, tmp_path)


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_config_entries_equal_keras(name, keras):
    """Each operation's entry in the model config (module, class, config, inbound node) is Keras's."""
    build, _ = ARCHITECTURES[name]
    graphc.utils.clear_session(free_memory=False)
    ours = json.loads(json.dumps(build(graphc).get_config()["layers"]))
    keras.utils.clear_session(free_memory=False)
    theirs = json.loads(json.dumps(build(keras).get_config()["layers"]))

    def ops_only(entries):
        return sorted((e for e in entries if e["module"].startswith("keras.src.ops")), key=lambda e: e["name"])

    want = ops_only(theirs)
    assert want, "the architecture has no operations"
    assert ops_only(ours) == want


@pytest.mark.keras
def test_summary_equals_keras(keras, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    build, _ = ARCHITECTURES["indexing"]
    texts = []
    for K in (graphc, keras):
        K.utils.clear_session(free_memory=False)
        out = []
        build(K).summary(print_fn=out.append)
        texts.append(out[0])
    assert texts[0] == texts[1]


@pytest.mark.keras
def test_one_sgd_step_through_ops_equals_keras(keras, rng):
    """Gradients flow through the ops: one SGD step updates the weights as Keras does."""
    def build(K):
        x = K.Input((4, 5), name="x")
        q = K.layers.Dense(6, name="q")(x)
        k = K.layers.Dense(6, name="k")(x)
        att = K.ops.softmax(K.ops.einsum("bqd,bkd->bqk", q, k) * 0.4)
        h = K.ops.matmul(att, K.layers.Dense(3, name="v")(x))
        h = K.ops.concatenate([h[:, 0], K.ops.mean(h, axis=1), K.ops.max(h ** 2, axis=1)], axis=-1)
        return K.Model(x, K.layers.Dense(2, name="out")(K.ops.tanh(h) - 0.5 * h))

    x = rng.normal(size=(7, 4, 5)).astype("float32")
    y = rng.normal(size=(7, 2)).astype("float32")
    graphc.utils.clear_session(free_memory=False)
    model = build(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel = build(keras)
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.1), loss="mse")
    kmodel.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    loss, kloss = model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
    assert np.isclose(loss, kloss, rtol=1e-5)
    for got, want, var in zip(model.get_weights(), kmodel.get_weights(), model.weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6, err_msg=var.path)


# ---------------------------------------------------------------------- eager
def test_functions_on_arrays_compute_at_once(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    y = rng.normal(size=(4, 5)).astype("float32")
    cases = [
        (ops.add(x, 1.5), x + 1.5), (ops.subtract(2, x), 2 - x), (ops.multiply(x, x), x * x),
        (ops.divide(x, 4), x / 4), (ops.power(x, 2), x ** 2), (ops.matmul(x, y), x @ y),
        (ops.matmul(x, y[:, 0]), x @ y[:, 0]), (ops.mean(x, axis=0), x.mean(0)), (ops.sum(x), x.sum()),
        (ops.max(x, axis=1, keepdims=True), x.max(1, keepdims=True)), (ops.transpose(x), x.T),
        (ops.reshape(x, (2, -1)), x.reshape(2, -1)), (ops.concatenate([x, x], axis=1), np.concatenate([x, x], 1)),
        (ops.stack([x, x]), np.stack([x, x])), (ops.expand_dims(x, 1), x[:, None]),
        (ops.where(x > 0, x, 0.0), np.where(x > 0, x, 0)), (ops.take(x, [2, 0], axis=1), x[:, [2, 0]]),
        (ops.get_item(x, (slice(None), 1)), x[:, 1]), (ops.einsum("ij,jk->ik", x, y), x @ y),
        (ops.softmax(x), np.exp(x) / np.exp(x).sum(-1, keepdims=True)), (ops.clip(x, -0.5, 0.5), np.clip(x, -0.5, 0.5)),
        (ops.abs(np.array([-3, 2], "int32")), np.array([3, 2])), (ops.argmax(x, axis=1), x.argmax(1)),
        (ops.cast(x > 0, "int32"), (x > 0).astype("int32")), (ops.sign(x), np.sign(x)),
        (ops.arange(3), np.arange(3)), (ops.arange(1.0, 2.0, 0.25), np.arange(1.0, 2.0, 0.25)),
        (ops.zeros((2, 3)), np.zeros((2, 3))), (ops.ones_like(x), np.ones_like(x)), (ops.full_like(x, 3), x * 0 + 3),
        (ops.one_hot(np.array([2, -1, 0]), 3), np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]])),
        (ops.one_hot(np.array([[1, 0]]), 2, axis=1), np.array([[[0, 1], [1, 0]]])),
    ]
    for i, (got, want) in enumerate(cases):
        assert isinstance(got, np.ndarray), f"case {i}"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"case {i}")
    assert ops.argmax(x, axis=1).dtype == np.int32 and ops.arange(3).dtype == np.int32
    assert ops.shape(x) == (3, 4)


def test_python_numbers_take_the_tensor_dtype():
    i = Input((3,), dtype="int32")
    assert (i + 2).dtype == "int32"
    assert (i + 2.5).dtype == "float32"
    assert (i / 2).dtype == "float32"
    assert ops.mean(i).dtype == "float32"
    assert (i > 1).dtype == "bool"
    assert ops.cast(i, "float32").dtype == "float32"


def test_numpy_arrays_on_the_left_defer_to_the_tensor(rng):
    x = Input((3,), name="x")
    y = np.float32(2.0) * x + np.ones(3, "float32")
    model = Model(x, y)
    data = rng.normal(size=(2, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(data), 2 * data + 1, rtol=1e-6)


# ---------------------------------------------------------------------- naming and structure
def test_operations_are_named_like_keras_and_listed_as_nodes():
    graphc.utils.clear_session(free_memory=False)
    x = Input((4,), name="x")
    a = x + 1.0
    b = layers.Add()([a, x])
    c = ops.add(b, x)
    d = -c
    model = Model(x, [a[:, 0], d / 2])
    names = [entry["name"] for entry in model.get_config()["layers"]]
    assert {"add", "add_1", "add_2", "negative", "get_item", "true_divide"} <= set(names)
    assert type(model.get_layer("add_1")).__module__ == "graphc.frontend.layers.merge"


def test_operation_on_incompatible_shapes_names_the_op():
    x, y = Input((3,)), Input((4,))
    with pytest.raises(ValueError, match=r"'add' \(Add\).*cannot be broadcast"):
        _ = x + y


@pytest.mark.parametrize("fn,match", [
    (lambda x: x[:, ::-1], "positive step"),
    (lambda x: x[:, 5], "out of bounds"),
    (lambda x: x[:, 0, 0, 0], "too many indices"),
    (lambda x: x[..., ...], "one Ellipsis"),
    (lambda x: x[:, x], "use graphc.ops.take"),
    (lambda x: ops.reshape(x, (None, 4)), "use ints and -1"),
    (lambda x: ops.where(x > 0), "data-dependent shape"),
    (lambda x: ops.max(x, initial=0.0), "initial"),
    (lambda x: ops.einsum("...i->i", x), "ellipses"),
    (lambda x: ops.einsum("ii->i", x), "diagonal"),
    (lambda x: ops.matmul(ops.cast(x, "int32"), ops.cast(x, "int32")), "float only"),
])
def test_unsupported_uses_are_refused_clearly(fn, match):
    x = Input((4,))
    with pytest.raises((ValueError, TypeError), match=match):
        fn(x)


def test_symbolic_tensors_have_no_truth_value_or_iteration():
    x = Input((4,))
    with pytest.raises(TypeError, match="no truth value"):
        bool(x > 0)
    with pytest.raises(TypeError, match="not iterable"):
        iter(x)
    assert (x == x) is True  # identity: tensors stay usable as keys and list members
