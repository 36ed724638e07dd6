"""Regressions found by the random-architecture tester (``test_random_models_vs_keras.py``), each
minimised to the smallest model that showed it and checked against Keras on every target."""

from __future__ import annotations

import numpy as np
import pytest

from tests.keras_parity import check_keras_file, check_predict

pytestmark = pytest.mark.keras


def _floats(*shape):
    return lambda rng, n: rng.standard_normal((n, *shape)).astype("float32")


def test_unit_normalization_over_an_axis_of_length_one(keras, rng):
    """Native sumsq over axes of length 1 only copied the input (x / sqrt(x) instead of sign(x))."""
    def build(K):
        x = K.Input((4, 1))
        return K.Model(x, K.layers.UnitNormalization(axis=-1)(x))

    check_predict(keras, build, _floats(4, 1), rng, batches=(1, 3))


def test_dot_normalize_of_length_one_vectors(keras, rng):
    """Dot(normalize=True) of (batch, 1) vectors goes through the same length-1 sum of squares."""
    def build(K):
        a, b = K.Input((1,)), K.Input((1,))
        return K.Model([a, b], K.layers.Dot(axes=-1, normalize=True)([a, b]))

    check_predict(keras, build, lambda rng, n: [_floats(1)(rng, n), _floats(1)(rng, n)], rng, batches=(1, 3))


def test_sum_of_squares_over_length_one_axes_native():
    """The native reduction of kind sumsq/meansq over axes of length 1 squares each element."""
    import graphc

    x = graphc.Input((3, 1))
    out = graphc.layers.LayerNormalization(axis=-1, rms_scaling=True)(graphc.layers.UnitNormalization(axis=-1)(x))
    model = graphc.Model(x, out)
    data = np.random.default_rng(0).standard_normal((2, 3, 1)).astype("float32")
    want = graphc.build(model, target="reference").predict(data)
    np.testing.assert_allclose(graphc.build(model, target="native").predict(data), want, rtol=1e-5, atol=1e-6)


def _sgd_step_matches_keras(keras, build, x, y):
    import graphc

    mine, theirs = build(graphc), build(keras)
    theirs.set_weights(mine.get_weights())
    mine.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.1), loss="mse")
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    got, want = mine.train_on_batch(x, y), theirs.train_on_batch(x, y)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for gw, kw, var in zip(mine.get_weights(), theirs.get_weights(), mine.weights):
        np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=var.path)


def test_batch_norm_moving_statistics_when_an_output_takes_their_name(keras, rng):
    """An output named after its layer ("add") took the name of BatchNormalization's moving-mean update
    (an internal "add"); the update still pointed at the name and the step assigned the output to it."""
    def build(K):
        x = K.Input((5, 2))
        h = K.layers.BatchNormalization(momentum=0.9)(x)
        return K.Model(x, K.layers.Add(name="add")([h, x]))

    x = rng.standard_normal((3, 5, 2)).astype("float32")
    _sgd_step_matches_keras(keras, build, x, rng.standard_normal((3, 5, 2)).astype("float32"))


def test_activity_loss_when_an_output_takes_its_name(keras, rng):
    """The same renaming moved an activity penalty's value (its last op, a "div" by the batch size): the
    loss then read the model's output in its place."""
    def build(K):
        x = K.Input((4,))
        h = K.layers.Dense(3, activity_regularizer=K.regularizers.L1L2(l1=0.01, l2=0.02))(x)
        return K.Model(x, K.layers.Add(name="div")([h, h]))

    x = rng.standard_normal((3, 4)).astype("float32")
    _sgd_step_matches_keras(keras, build, x, rng.standard_normal((3, 3)).astype("float32"))


def test_batch_norm_on_a_masked_sequence_over_the_steps_axis(keras, rng):
    """BatchNormalization(axis=1) of a masked sequence in training: the masked mean (per step) was
    broadcast against the last axis instead of axis 1, and lowering failed."""
    def build(K):
        ids = K.Input((5,), dtype="int32")
        h = K.layers.Embedding(9, 2, mask_zero=True)(ids)
        h = K.layers.BatchNormalization(axis=1, momentum=0.9)(h)
        return K.Model(ids, K.layers.Dense(3)(h))

    x = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 6, 0], [7, 8, 1, 2, 3]], dtype="int32")
    _sgd_step_matches_keras(keras, build, x, rng.standard_normal((3, 5, 3)).astype("float32"))


@pytest.mark.parametrize("layer,shape", [
    (lambda L, act: L.Conv1D(2, 1, data_format="channels_first", activation=act), (6, 5)),
    (lambda L, act: L.Conv2D(3, 2, data_format="channels_first", activation=act), (2, 4, 5)),
    (lambda L, act: L.Conv2DTranspose(2, 2, strides=2, data_format="channels_first", activation=act), (3, 3, 4)),
    (lambda L, act: L.DepthwiseConv1D(3, data_format="channels_first", activation=act), (2, 7)),
    (lambda L, act: L.SeparableConv2D(2, 1, data_format="channels_first", activation=act), (3, 3, 5)),
], ids=["conv1d", "conv2d", "conv2d_transpose", "depthwise_conv1d", "separable_conv2d"])
@pytest.mark.parametrize("activation", ["softmax", "log_softmax", "sparsemax"])
def test_channels_first_convolution_activation_along_the_last_axis(keras, rng, layer, shape, activation):
    """A channels_first convolution applied softmax-like activations in channels-last layout (over the
    channels); Keras applies them to its output as laid out, along the last (spatial) axis."""
    def build(K):
        x = K.Input(shape)
        return K.Model(x, layer(K.layers, activation)(x))

    check_predict(keras, build, _floats(*shape), rng, batches=(1, 3))


def test_group_normalization_of_features_with_a_large_mean(keras, rng):
    """GroupNormalization's variance as E[x^2] - E[x]^2 cancelled in float32 when the mean is large
    against the spread: the native target missed Keras by 1e-3 on features of mean 1 and spread 0.03."""
    def build(K):
        x = K.Input((6, 4))
        return K.Model(x, K.layers.GroupNormalization(groups=2)(x))

    def data(rng, n):
        return (1.0 + 0.03 * rng.standard_normal((n, 6, 4))).astype("float32")

    check_predict(keras, build, data, rng, batches=(1, 3), randomize_weights=False)


def _padded_steps(rng, n):
    x = rng.standard_normal((n, 6, 4)).astype("float32")
    x[:, 4:] = 0.0
    x[0, 2:] = 0.0
    return x


def _masking_lstm(K):
    x = K.Input((6, 4))
    return K.Model(x, K.layers.LSTM(3)(K.layers.Masking()(x)))


def _masking_dense_lstm(K):
    x = K.Input((6, 4))
    return K.Model(x, K.layers.LSTM(3)(K.layers.Dense(3)(K.layers.Masking()(x))))


def _masking_attention_lstm(K):
    x = K.Input((6, 4))
    h = K.layers.Masking()(x)
    return K.Model(x, K.layers.LSTM(3, return_sequences=True)(K.layers.Attention()([h, h])))


@pytest.mark.parametrize("build", [_masking_lstm, _masking_dense_lstm, _masking_attention_lstm],
                         ids=["masking_lstm", "masking_dense_lstm", "masking_attention_lstm"])
def test_keras_file_with_the_mask_operations_keras_records(keras, rng, tmp_path, build):
    """Keras writes a Masking layer's mask computation into the functional graph as operations
    (NotEqual, Any; ConvertToTensor after an Attention) feeding the consumer's mask= argument:
    graphc refused the file, naming keras.src.ops.numpy.Any."""
    check_keras_file(keras, build, _padded_steps, rng, tmp_path)


def test_keras_file_with_convert_to_tensor_of_an_embedding_mask(keras, rng, tmp_path):
    def build(K):
        ids = K.Input((6,), dtype="int32")
        h = K.layers.Embedding(5, 4, mask_zero=True)(ids)
        return K.Model(ids, K.layers.GRU(3)(K.layers.Attention()([h, h])))

    ids = np.array([[1, 2, 0, 3, 0, 0], [4, 1, 1, 0, 0, 0], [2, 2, 2, 2, 2, 1]], dtype="int32")
    check_keras_file(keras, build, lambda rng, n: ids[:n], rng, tmp_path)


def test_any_all_and_convert_to_tensor_operations(keras, rng):
    """keras.ops.any/all/convert_to_tensor on symbolic tensors, as functional-graph operations."""
    def build(K):
        x = K.Input((5, 3))
        hit = K.ops.any(K.ops.greater(x, 0.5), axis=-1, keepdims=True)
        every = K.ops.all(K.ops.greater(x, -1.0), axis=1)
        kept = K.ops.where(hit, x, K.ops.zeros_like(x))
        return K.Model(x, [kept, K.ops.cast(every, "float32"), K.ops.convert_to_tensor(x, dtype="float32") * 2.0])

    check_predict(keras, build, _floats(5, 3), rng, batches=(1, 3))


def test_relu_gradient_is_zero_where_relu_is_flat_even_under_an_infinite_cotangent(keras, rng):
    """sqrt(|relu(x)|): where relu is 0 the cotangent reaching it is inf * 0 = NaN; Keras (torch's
    threshold_backward) selects 0 there, graphc multiplied by the zero derivative and every weight
    became NaN after one step."""
    def build(K):
        x = K.Input((4,))
        return K.Model(x, K.ops.sqrt(K.ops.abs(K.layers.ReLU()(K.layers.Dense(4)(x)))))

    x = rng.standard_normal((3, 4)).astype("float32")
    _sgd_step_matches_keras(keras, build, x, np.ones((3, 4), dtype="float32"))


@pytest.mark.parametrize("attrs", [(), (("max_value", 6.0),), (("negative_slope", 0.0), ("threshold", 0.5))],
                         ids=["relu", "relu6", "thresholded"])
def test_relu_gradient_op_selects_zero_on_every_target(attrs):
    """The unary_grad op of relu on the reference, ONNX and native targets: 0 where the derivative is 0,
    whatever the cotangent (inf, NaN), dy * f'(x) elsewhere."""
    import graphc
    from graphc.ir.graph import Graph
    from graphc.ir.types import TensorType
    from graphc.ops import OpBuilder

    graph = Graph("relu_grad")
    x = graph.add_input("x", TensorType("float32", ("batch", 6)))
    dy = graph.add_input("dy", TensorType("float32", ("batch", 6)))
    graph.set_outputs([OpBuilder(graph, layer="relu").emit("unary_grad", x, dy, activation="relu",
                                                           activation_attrs=attrs)])
    xs = np.array([[-2.0, -0.5, 0.0, 0.25, 1.0, 7.0]] * 3, dtype="float32")
    dys = np.array([[np.inf, np.nan, -np.inf, 2.0, np.inf, 3.0], [1.0] * 6, [-1.0] * 6], dtype="float32")
    want = graphc.build(graph, target="reference", level=0).predict({"x": xs, "dy": dys})
    flat = np.array([[True, True, True, False, False, False]] * 3)
    if dict(attrs).get("threshold"):
        flat[:, 3] = True
    if dict(attrs).get("max_value"):
        flat[:, 5] = True
    assert (want[flat] == 0).all()
    for target in ("onnx", "native"):
        got = graphc.build(graph, target=target, level=0).predict({"x": xs, "dy": dys})
        np.testing.assert_array_equal(got, want, err_msg=target)


def test_shared_batch_norm_moves_its_averages_once_per_call(keras, rng):
    """A BatchNormalization called on two tensors (a shared, siamese block) in training: Keras moves
    the moving mean and variance after each call, from the previous call's values; graphc kept only
    the last call's update, computed from the values before the step."""
    def build(K):
        a, b = K.Input((5, 3)), K.Input((5, 3))
        norm = K.layers.BatchNormalization(momentum=0.9)
        dense = K.layers.Dense(2)
        return K.Model([a, b], K.layers.Add()([dense(norm(a)), dense(norm(K.layers.Dense(3)(b)))]))

    x = [rng.standard_normal((4, 5, 3)).astype("float32"), 2.0 + rng.standard_normal((4, 5, 3)).astype("float32")]
    _sgd_step_matches_keras(keras, build, x, rng.standard_normal((4, 5, 2)).astype("float32"))
