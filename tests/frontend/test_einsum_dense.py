"""EinsumDense: Keras's weights, shapes and configs; predictions equal to Keras's through the
reference, ONNX and native targets and ``.keras`` files; the lowering to one GEMM; a gradient
checked against finite differences and a training step equal to Keras's; refused equations."""

from __future__ import annotations

import math

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.frontend.layers.einsum_dense import analyze
from tests.frontend.layer_gradcheck import check_model_gradients
from tests.keras_parity import check_keras_file, check_predict

# equation, output_shape, bias_axes, input shape (without batch)
CASES = [
    ("abc,cd->abd", (None, 5), "d", (3, 7)),
    ("abc,cde->abde", (None, 3, 5), "de", (7, 3)),
    ("abcd,cde->abe", (None, 7), "e", (5, 3, 1)),
    ("ab,bc->ac", (3,), None, (7,)),
    ("...b,bc->...c", (5,), "c", (3, 1, 7)),
    ("abc...,cd->abd...", (3, 5), "d", (3, 7, 2)),
    ("abc,bcd->abd", (3, 5), "bd", (3, 7)),  # b in input, kernel and output: one product per b
    ("abc,cd->adb", (5, 3), "d", (3, 7)),  # the output transposed
    ("abc,cd->abd", (3, 5), "bd", (3, 7)),  # a bias over two axes, one of them the input's
    ("abcd,cd->abc", (7, 3), None, (7, 3, 5)),  # no kernel-only axis
    ("abc,d->abcd", (3, 5, 7), "c", (3, 5)),  # an outer product
    ("abc,cd->ad", (5,), "d", (3, 7)),  # b summed away
]
IDS = [c[0] for c in CASES]


def _model(equation, output_shape, bias_axes, shape, activation="tanh"):
    def build(K):
        x = K.Input(shape)
        return K.Model(x, K.layers.EinsumDense(equation, output_shape, bias_axes=bias_axes, activation=activation)(x))

    return build


def _data(shape):
    def data(rng, n):
        return rng.standard_normal((n,) + shape).astype("float32")

    return data


@pytest.mark.keras
@pytest.mark.parametrize("equation,output_shape,bias_axes,shape", CASES, ids=IDS)
def test_predictions_equal_keras_on_every_target(keras, rng, equation, output_shape, bias_axes, shape):
    _, _, errors = check_predict(keras, _model(equation, output_shape, bias_axes, shape), _data(shape), rng)
    assert set(errors) == {"reference", "onnx", "native"}


@pytest.mark.keras
@pytest.mark.parametrize("equation,output_shape,bias_axes,shape", [CASES[1], CASES[4], CASES[6]],
                         ids=[CASES[1][0], CASES[4][0], CASES[6][0]])
def test_keras_files_round_trip(keras, rng, tmp_path, equation, output_shape, bias_axes, shape):
    check_keras_file(keras, _model(equation, output_shape, bias_axes, shape), _data(shape), rng, tmp_path)


@pytest.mark.keras
@pytest.mark.parametrize("make", [
    lambda L: L.EinsumDense("abc,cd->abd", (None, 5), bias_axes="d", activation="relu"),
    lambda L: L.EinsumDense("...b,bc->...c", 7),
    lambda L: L.EinsumDense("abc,cde->abde", (None, 3, 5), bias_axes="de", kernel_initializer="he_normal",
                            kernel_regularizer="l2", bias_constraint="non_neg"),
])
def test_configs_equal_keras(keras, make):
    ours, theirs = make(layers).get_config(), make(keras.layers).get_config()
    for key in ("name", "dtype", "trainable"):
        ours.pop(key)
        theirs.pop(key)
    theirs["output_shape"] = list(theirs["output_shape"])
    theirs.pop("quantization_config")
    for key in ("kernel_initializer", "bias_initializer"):
        theirs[key]["config"] = {k: v for k, v in theirs[key]["config"].items() if v is not None}
        ours[key]["config"] = {k: v for k, v in ours[key]["config"].items() if v is not None}
        ours[key].pop("module"), theirs[key].pop("module")
    assert {k: v for k, v in ours.items() if v is not None} == {k: v for k, v in theirs.items() if v is not None}
    again = layers.EinsumDense.from_config(make(layers).get_config())
    assert again.get_config()["equation"] == make(layers).get_config()["equation"]


def test_shapes_with_free_dims():
    x = Input((None, 7))
    y = layers.EinsumDense("abc,cde->abde", (None, 3, 5), bias_axes="de")(x)
    assert y.shape == (None, None, 3, 5)
    z = layers.EinsumDense("abcd,cde->abe", (None, 11))(y)
    assert z.shape == (None, None, 11)
    model = Model(x, z)
    out = graphc.build(model, target="native").predict(np.ones((2, 9, 7), np.float32))
    assert out.shape == (2, 9, 11)


def test_weight_matrix_products_stay_gemms_with_the_bias_fused():
    """The projections of MultiHeadAttention ("abc,cde->abde") become one GEMM with the weight
    and its (N, H) bias: after optimization a single fused matmul, no transposes."""
    x = Input((7, 6))
    y = layers.EinsumDense("abc,cde->abde", (None, 3, 5), bias_axes="de", activation="relu")(x)
    graph = graphc.optimize(graphc.lower(Model(x, y)), 2)
    counts = graph.op_counts()
    assert counts.get("fused_matmul") == 1, counts
    assert "transpose" not in counts and "add" not in counts and "bias_add" not in counts, counts


def test_kernel_initializer_uses_the_equations_fans():
    """Keras gives variance-scaling initializers the kernel's input and output axes: for
    "abc,cde->abde" fan_in = c and fan_out = d * e (not the receptive-field rule)."""
    graphc.utils.set_random_seed(1)
    layer = layers.EinsumDense("abc,cde->abde", (None, 40, 50), kernel_initializer="glorot_uniform")
    layer.build((None, 3, 30))
    w = layer.kernel.numpy()
    limit = math.sqrt(6.0 / (30 + 40 * 50))
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit


def test_gradients_match_finite_differences(rng):
    x = Input((3, 5))
    h = layers.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", activation="tanh")(x)
    h = layers.EinsumDense("abcd,bde->aec", (5, 2), bias_axes="c")(h)
    h = layers.EinsumDense("...b,bc->...c", 2, bias_axes="c")(h)
    checked = check_model_gradients(Model(x, h), {"input_layer": rng.standard_normal((2, 3, 5))}, rng)
    assert len(checked) == 7  # the input and six weights


@pytest.mark.keras
def test_training_step_equals_keras(keras, rng):
    def build(K):
        x = K.Input((3, 5))
        h = K.layers.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", activation="tanh")(x)
        h = K.layers.EinsumDense("abcd,cde->abe", (None, 4), bias_axes="e")(h)
        return K.Model(x, K.layers.EinsumDense("abc,cd->ad", 2, bias_axes="d", activation="softmax")(h))

    g_model, k_model = build(graphc), build(keras)
    k_model.set_weights(g_model.get_weights())
    g_model.compile(optimizer=graphc.optimizers.SGD(0.5), loss="categorical_crossentropy")
    k_model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    x = rng.standard_normal((7, 3, 5)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, size=7)]
    trainer = graphc.build(g_model, target="native", training=True)  # train_on_batch runs native steps
    assert trainer.runner is not None
    for step in range(2):
        loss = g_model.train_on_batch(x, y)
        k_loss = float(k_model.train_on_batch(x, y))
        np.testing.assert_allclose(loss, k_loss, rtol=1e-5, err_msg=f"step {step}")
        for g, k, var in zip(g_model.get_weights(), k_model.get_weights(), g_model.weights):
            np.testing.assert_allclose(g, k, rtol=1e-4, atol=1e-6, err_msg=f"step {step}: {var.path}")


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("equation,message", [
    ("aab,bc->ac", "repeats a letter"),
    ("ab,bc->ad", "output letter 'd'"),
    ("ab,bcd->ac", "kernel letter 'd'"),
    ("a...b,bc->a...c", "not supported"),
    ("ab->b", "not supported"),
])
def test_equations_that_cannot_be_lowered_are_refused_by_name(equation, message):
    with pytest.raises(ValueError, match=message) as info:
        layers.EinsumDense(equation, (3,))
    assert equation in str(info.value)


def test_wrong_input_rank_and_output_shape_are_named():
    with pytest.raises(ValueError, match="needs an input of rank 3"):
        layers.EinsumDense("abc,cd->abd", (None, 4))(Input((5,)))
    with pytest.raises(ValueError, match="output_shape"):
        layers.EinsumDense("abc,cd->abd", (4,))(Input((3, 5)))
    with pytest.raises(ValueError, match="disagree on axis 'b'"):
        layers.EinsumDense("abc,cd->abd", (7, 4))(Input((3, 5)))
    with pytest.raises(ValueError, match="bias_axes='x'"):
        layers.EinsumDense("abc,cd->abd", (None, 4), bias_axes="x")
    with pytest.raises(ValueError, match="lora_rank=4 is not supported"):
        layers.EinsumDense("abc,cd->abd", (None, 4), lora_rank=4)


def test_ellipsis_letters_are_fresh():
    spec = analyze("...b,bc->...c", 4)
    assert spec.inputs[-1] == "b" and spec.output[-1] == "c" and len(set(spec.inputs[:3])) == 3
    assert not set(spec.inputs[:3]) & {"b", "c"}
