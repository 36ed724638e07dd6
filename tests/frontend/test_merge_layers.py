"""Merge layers: NumPy formulas on odd sizes, broadcasting, errors, and Keras cross-checks."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.frontend.layers import merge
from tests.helpers import assert_close

ELEMENTWISE = {
    "add": (layers.Add, layers.add, lambda xs: sum(xs[1:], xs[0])),
    "subtract": (layers.Subtract, layers.subtract, lambda xs: xs[0] - xs[1]),
    "multiply": (layers.Multiply, layers.multiply, lambda xs: np.prod(np.stack(np.broadcast_arrays(*xs)), 0)),
    "average": (layers.Average, layers.average, lambda xs: sum(xs[1:], xs[0]) / len(xs)),
    "maximum": (layers.Maximum, layers.maximum, lambda xs: np.maximum.reduce(np.broadcast_arrays(*xs))),
    "minimum": (layers.Minimum, layers.minimum, lambda xs: np.minimum.reduce(np.broadcast_arrays(*xs))),
}


def _model_predict(shapes, build, arrays):
    inputs = [Input(shape=s) for s in shapes]
    out = build(inputs)
    model = Model(inputs, out)
    return out, model.predict(arrays if len(arrays) > 1 else arrays[0])


def test_all_names_are_exported():
    for name in merge.__all__:
        assert getattr(layers, name) is getattr(merge, name)
    assert {"add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate", "dot"} <= set(merge.__all__)


# ---------------------------------------------------------------- elementwise, numerics
@pytest.mark.parametrize("kind", sorted(ELEMENTWISE))
@pytest.mark.parametrize("shape", [(1,), (3,), (7, 17), (3, 1, 17)])
@pytest.mark.parametrize("batch", [1, 3])
def test_elementwise_matches_numpy(kind, shape, batch, rng):
    cls, fn, formula = ELEMENTWISE[kind]
    xs = [rng.normal(size=(batch, *shape)).astype("float32") for _ in range(2)]
    out, got = _model_predict([shape, shape], fn, xs)
    assert out.shape == (None, *shape)
    assert_close(got, formula(xs), what=kind)
    assert_close(cls()(xs), formula(xs), what=f"{kind} eager")


@pytest.mark.parametrize("kind", ["add", "multiply", "average", "maximum", "minimum"])
@pytest.mark.parametrize("n", [3, 5])
def test_elementwise_many_inputs(kind, n, rng):
    cls, fn, formula = ELEMENTWISE[kind]
    xs = [rng.normal(size=(3, 7)).astype("float32") for _ in range(n)]
    out, got = _model_predict([(7,)] * n, fn, xs)
    assert_close(got, formula(xs), what=f"{kind} of {n}")


@pytest.mark.parametrize("kind", ["add", "multiply", "average", "maximum", "minimum"])
def test_single_input_list_is_the_identity(kind, rng):
    # Keras 3 accepts a one-element list for these merges and returns the input.
    cls, _, _ = ELEMENTWISE[kind]
    x = rng.normal(size=(3, 5)).astype("float32")
    assert_close(cls()([x]), x)


@pytest.mark.parametrize("kind", sorted(ELEMENTWISE))
@pytest.mark.parametrize("shapes, out_shape", [
    (((1,), (32,)), (None, 32)),
    (((17,), (1,)), (None, 17)),
    (((5,), (4, 5)), (None, 4, 5)),
    (((4, 1), (4,)), (None, 4, 4)),
    (((3, 1, 7), (1, 5, 1)), (None, 3, 5, 7)),
    (((7,), (3, 1, 7)), (None, 3, 1, 7)),
])
def test_elementwise_broadcasting(kind, shapes, out_shape, rng):
    cls, fn, formula = ELEMENTWISE[kind]
    xs = [rng.normal(size=(3, *s)).astype("float32") for s in shapes]
    out, got = _model_predict(shapes, fn, xs)
    assert out.shape == out_shape
    # Keras's rule: a lower-rank input gets unit axes inserted right after the batch axis.
    rank = max(x.ndim for x in xs)
    aligned = [x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:]) for x in xs]
    assert_close(got, formula(aligned), what=f"{kind} {shapes}")


def test_elementwise_with_free_dims(rng):
    a, b = Input(shape=(None, 4)), Input(shape=(None, 4))
    out = layers.add([a, b])
    assert out.shape == (None, None, 4)
    model = Model([a, b], out)
    for t in (1, 3, 7):
        xa, xb = (rng.normal(size=(2, t, 4)).astype("float32") for _ in range(2))
        assert_close(model.predict([xa, xb]), xa + xb)


def test_average_of_int_inputs_is_float(rng):
    xs = [rng.integers(-5, 5, size=(3, 7)).astype("int32") for _ in range(2)]
    got = layers.Average()(xs)
    assert got.dtype == np.float32
    assert_close(got, (xs[0] + xs[1]) / 2)


def test_mixed_dtypes_are_promoted_to_float(rng):
    x = rng.integers(-5, 5, size=(3, 7)).astype("int32")
    y = rng.normal(size=(3, 7)).astype("float32")
    got = layers.Add()([x, y])
    assert got.dtype == np.float32
    assert_close(got, x + y)
    assert layers.Concatenate()([x, y]).dtype == np.float32


def test_shared_merge_layer_and_ir(rng):
    a, b, c = Input(shape=(5,)), Input(shape=(5,)), Input(shape=(5,))
    add = layers.Add(name="adder")
    out = add([add([a, b]), c])
    model = Model([a, b, c], out)
    xs = [rng.normal(size=(2, 5)).astype("float32") for _ in range(3)]
    assert_close(model.predict(xs), xs[0] + xs[1] + xs[2])
    graph = graphc.lower(model)
    assert [op.type for op in graph.ops()].count("add") == 2
    assert all(op.layer == "adder" for op in graph.ops())
    assert add.count_params() == 0 and add.get_weights() == []


# ---------------------------------------------------------------- concatenate
@pytest.mark.parametrize("shapes, axis, out_shape", [
    (((3,), (1,), (17,)), -1, (None, 21)),
    (((3, 4), (5, 4)), 1, (None, 8, 4)),
    (((7, 1, 3), (7, 1, 3)), 2, (None, 7, 2, 3)),
    (((2, 3), (2, 7)), -1, (None, 2, 10)),
    (((2, 3), (2, 3)), -2, (None, 4, 3)),
])
def test_concatenate_matches_numpy(shapes, axis, out_shape, rng):
    xs = [rng.normal(size=(3, *s)).astype("float32") for s in shapes]
    out, got = _model_predict(shapes, lambda ins: layers.concatenate(ins, axis=axis), xs)
    assert out.shape == out_shape
    assert_close(got, np.concatenate(xs, axis=axis))
    assert_close(layers.Concatenate(axis=axis)(xs), np.concatenate(xs, axis=axis))


def test_concatenate_free_dims(rng):
    a, b = Input(shape=(None, 3)), Input(shape=(None, 3))
    out = layers.concatenate([a, b], axis=1)
    assert out.shape == (None, None, 3)
    model = Model([a, b], out)
    xa, xb = rng.normal(size=(2, 3, 3)).astype("float32"), rng.normal(size=(2, 5, 3)).astype("float32")
    assert_close(model.predict([xa, xb]), np.concatenate([xa, xb], axis=1))


def test_concatenate_on_the_batch_axis(rng):
    xs = [rng.normal(size=(n, 4)).astype("float32") for n in (1, 3)]
    assert_close(layers.Concatenate(axis=0)(xs), np.concatenate(xs, axis=0))


# ---------------------------------------------------------------- dot
def _batch_dot(x, y, axes):
    """Per-sample tensordot over one axis each; a rank-1 result becomes (N, 1)."""
    a0, a1 = axes
    out = np.stack([np.tensordot(x[n], y[n], axes=(a0 - 1, a1 - 1)) for n in range(x.shape[0])])
    return out.reshape(-1, 1) if out.ndim == 1 else out


def _normalize(x, axis):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-7)


@pytest.mark.parametrize("s1, s2, axes, out_shape", [
    ((17,), (17,), 1, (None, 1)),
    ((1,), (1,), -1, (None, 1)),
    ((3, 4), (5, 3), (1, 2), (None, 4, 5)),
    ((3, 4), (3, 5), 1, (None, 4, 5)),
    ((3, 4), (5, 4), 2, (None, 3, 5)),
    ((3, 4), (4, 5), (2, 1), (None, 3, 5)),
    ((3, 4), (5, 4), (-1, -1), (None, 3, 5)),
    ((3, 4), (4, 5), (-1, -2), (None, 3, 5)),
    ((7, 4), (4,), (2, 1), (None, 7)),
    ((4,), (7, 4), (1, 2), (None, 7)),
    ((3, 4, 5), (3, 6), 1, (None, 4, 5, 6)),
    ((3, 4, 5), (2, 5, 7), (3, 2), (None, 3, 4, 2, 7)),
])
@pytest.mark.parametrize("normalize", [False, True])
def test_dot_matches_numpy(s1, s2, axes, out_shape, normalize, rng):
    x = rng.normal(size=(3, *s1)).astype("float32")
    y = rng.normal(size=(3, *s2)).astype("float32")
    out, got = _model_predict([s1, s2], lambda ins: layers.dot(ins, axes=axes, normalize=normalize), [x, y])
    assert out.shape == out_shape
    ax = (axes, axes) if isinstance(axes, int) else axes
    ax = (ax[0] % x.ndim, ax[1] % y.ndim)
    if normalize:
        x, y = _normalize(x, ax[0]), _normalize(y, ax[1])
    want = _batch_dot(x, y, ax)
    assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_cosine_is_in_range_and_zero_vectors_give_zero(rng):
    x = rng.normal(size=(4, 9)).astype("float32")
    y = np.concatenate([x[:2] * 3.0, -x[2:3], np.zeros((1, 9), "float32")])
    got = layers.Dot(axes=1, normalize=True)([x, y])
    assert_close(got, np.array([[1.0], [1.0], [-1.0], [0.0]], "float32"), atol=1e-6)


def test_dot_with_free_time_dims(rng):
    a, b = Input(shape=(None, 8)), Input(shape=(None, 8))
    out = layers.Dot(axes=2)([a, b])
    assert out.shape == (None, None, None)
    model = Model([a, b], out)
    for t1, t2 in ((1, 1), (3, 5)):
        x = rng.normal(size=(2, t1, 8)).astype("float32")
        y = rng.normal(size=(2, t2, 8)).astype("float32")
        assert_close(model.predict([x, y]), np.einsum("nik,njk->nij", x, y), rtol=1e-5, atol=1e-5)


def test_dot_2d_lowers_to_a_reduction():
    a, b = Input(shape=(16,)), Input(shape=(16,))
    graph = graphc.lower(Model([a, b], layers.dot([a, b], axes=1)))
    assert [op.type for op in graph.ops()] == ["mul", "reduce_sum"]


# ---------------------------------------------------------------- errors
def test_incompatible_shapes_name_the_layer_and_both_shapes():
    with pytest.raises(ValueError, match=r"'add'.*\(None, 32\) and \(None, 16\)"):
        layers.add([Input(shape=(32,)), Input(shape=(16,))])
    with pytest.raises(ValueError, match=r"'my_max'.*\(None, 3, 4\) and \(None, 5\)"):
        layers.Maximum(name="my_max")([Input(shape=(3, 4)), Input(shape=(5,))])


def test_shared_merge_layer_checks_every_call():
    add = layers.Add()
    add([Input(shape=(4,)), Input(shape=(4,))])
    with pytest.raises(ValueError, match=r"\(None, 4\) and \(None, 5\)"):
        add([Input(shape=(4,)), Input(shape=(5,))])


@pytest.mark.parametrize("cls", [layers.Add, layers.Subtract, layers.Concatenate, layers.Average])
def test_merge_needs_a_list(cls):
    with pytest.raises(ValueError, match=r"list of tensors, got a single tensor of shape \(None, 16\)"):
        cls()(Input(shape=(16,)))
    with pytest.raises(ValueError, match="empty list"):
        cls()([])


def test_merge_inputs_must_be_tensors():
    with pytest.raises(ValueError, match="inputs must be tensors, got str"):
        layers.Add()([Input(shape=(4,)), "x"])


def test_subtract_and_dot_need_exactly_two_inputs():
    a = Input(shape=(4,))
    with pytest.raises(ValueError, match="exactly 2 inputs, got 3"):
        layers.subtract([a, a, a])
    with pytest.raises(ValueError, match="exactly 2 inputs, got 1"):
        layers.Subtract()([a])
    with pytest.raises(ValueError, match="exactly 2 inputs, got 3"):
        layers.dot([a, a, a], axes=1)
    with pytest.raises(ValueError, match="exactly 2 inputs, got 1"):
        layers.Dot(axes=1)([a])


def test_different_batch_sizes_are_refused():
    a, b = Input(batch_shape=(2, 4)), Input(batch_shape=(3, 4))
    with pytest.raises(ValueError, match=r"different batch sizes.*\(2, 4\), \(3, 4\)"):
        layers.add([a, b])
    with pytest.raises(ValueError, match="different batch sizes"):
        layers.dot([a, b], axes=1)


def test_concatenate_errors():
    with pytest.raises(ValueError, match=r"matching shapes except on the concatenation axis.*\(None, 3, 4\), "
                                         r"\(None, 5, 3\)"):
        layers.concatenate([Input(shape=(3, 4)), Input(shape=(5, 3))], axis=1)
    with pytest.raises(ValueError, match=r"same rank.*\(None, 3, 4\), \(None, 4\)"):
        layers.concatenate([Input(shape=(3, 4)), Input(shape=(4,))])
    with pytest.raises(ValueError, match="axis 3 is out of range for inputs of rank 3"):
        layers.concatenate([Input(shape=(3, 4)), Input(shape=(3, 4))], axis=3)
    with pytest.raises(TypeError, match="axis must be an integer"):
        layers.Concatenate(axis="last")


def test_dot_errors():
    a, b = Input(shape=(3, 4)), Input(shape=(5, 3))
    with pytest.raises(ValueError, match=r"3 \(axis 1 of \(None, 3, 4\)\) != 5 \(axis 1 of \(None, 5, 3\)\)"):
        layers.dot([a, b], axes=1)
    with pytest.raises(ValueError, match="cannot contract the batch axis 0"):
        layers.dot([a, a], axes=0)
    with pytest.raises(ValueError, match="axis 3 is out of range for an input of rank 3"):
        layers.dot([a, a], axes=3)
    with pytest.raises(ValueError, match=r"rank >= 2.*\(None,\)"):
        layers.dot([Input(shape=()), Input(shape=())], axes=1)
    with pytest.raises(ValueError, match="integer or a pair"):
        layers.Dot(axes=(1, 2, 3))
    with pytest.raises(ValueError, match="should be integers"):
        layers.Dot(axes=(1, "2"))
    with pytest.raises(TypeError, match="integer or a pair"):
        layers.Dot(axes="1")


def test_configs():
    assert layers.Concatenate(axis=1, name="c").get_config()["axis"] == 1
    config = layers.Dot(axes=(1, 2), normalize=True, name="d").get_config()
    assert config["axes"] == [1, 2] and config["normalize"] is True and config["name"] == "d"
    assert layers.Add(name="a").get_config()["name"] == "a"


# ---------------------------------------------------------------- Keras cross-checks
KERAS_CASES = [
    ("Add", {}, [(3, 7), (3, 7), (3, 7)]),
    ("Add", {}, [(3, 1), (3, 17)]),
    ("Add", {}, [(3, 5), (3, 4, 5)]),
    ("Subtract", {}, [(3, 4, 1), (3, 4)]),
    ("Multiply", {}, [(1, 17), (1, 17)]),
    ("Average", {}, [(3, 7), (3, 7), (3, 1)]),
    ("Maximum", {}, [(3, 2, 5), (3, 2, 5)]),
    ("Minimum", {}, [(3, 1, 5), (3, 2, 1)]),
    ("Concatenate", {}, [(3, 3), (3, 1), (3, 17)]),
    ("Concatenate", {"axis": 1}, [(3, 2, 5), (3, 7, 5)]),
    ("Dot", {"axes": 1}, [(3, 17), (3, 17)]),
    ("Dot", {"axes": 1, "normalize": True}, [(3, 17), (3, 17)]),
    ("Dot", {"axes": (1, 2)}, [(3, 3, 4), (3, 5, 3)]),
    ("Dot", {"axes": -1, "normalize": True}, [(3, 3, 4), (3, 5, 4)]),
    ("Dot", {"axes": (2, 1), "normalize": True}, [(3, 7, 4), (3, 4)]),
    ("Dot", {"axes": 1}, [(3, 3, 4, 5), (3, 3, 6)]),
]


@pytest.mark.keras
@pytest.mark.parametrize("name, kwargs, shapes", KERAS_CASES)
def test_matches_keras(keras, name, kwargs, shapes, rng):
    xs = [rng.normal(size=s).astype("float32") for s in shapes]
    want = keras.ops.convert_to_numpy(getattr(keras.layers, name)(**kwargs)(xs))
    got = getattr(layers, name)(**kwargs)(xs)
    assert_close(got, want, rtol=1e-5, atol=1e-5, what=name)
    k_out = getattr(keras.layers, name)(**kwargs)([keras.Input(shape=s[1:]) for s in shapes])
    g_out = getattr(layers, name)(**kwargs)([Input(shape=s[1:]) for s in shapes])
    assert g_out.shape == tuple(k_out.shape)


@pytest.mark.keras
@pytest.mark.parametrize("name, kwargs, shapes", [
    ("Add", {}, [(32,), (16,)]),
    ("Multiply", {}, [(3, 4), (5,)]),
    ("Concatenate", {"axis": 1}, [(3, 4), (5, 3)]),
    ("Dot", {"axes": 1}, [(3, 4), (5, 3)]),
    ("Subtract", {}, [(4,), (4,), (4,)]),
])
def test_refuses_what_keras_refuses(keras, name, kwargs, shapes):
    with pytest.raises(ValueError):
        getattr(keras.layers, name)(**kwargs)([keras.Input(shape=s) for s in shapes])
    with pytest.raises(ValueError):
        getattr(layers, name)(**kwargs)([Input(shape=s) for s in shapes])
