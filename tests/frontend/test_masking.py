"""Keras masks: Embedding(mask_zero=True) and Masking create them, layers that support masking
carry or combine them, recurrent layers and GlobalAveragePooling1D consume them. Each model is
compared with Keras 3 on every target (padded batches, odd lengths, gaps, all-padding samples)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from graphc import Input, Model, layers
from graphc.frontend.to_ir import lower_model
from tests.keras_parity import check_keras_file, check_predict

pytestmark = pytest.mark.keras


def padded_ids(rng, n: int, t: int = 7, vocab: int = 11) -> np.ndarray:
    """Ids padded with zeros to ``t`` steps; a gap in sample 0, all padding but one step in sample 1."""
    x = rng.integers(1, vocab, size=(n, t)).astype("int32")
    for i in range(n):
        x[i, rng.integers(1, t + 1):] = 0
    x[0, min(1, t - 1)] = 0
    if n > 1:
        x[1] = 0
        x[1, t - 1] = 3
    return x


def padded_features(rng, n: int, t: int = 6, f: int = 3) -> np.ndarray:
    """Float sequences whose masked steps are all zeros (Masking's mask_value)."""
    x = rng.normal(size=(n, t, f)).astype("float32")
    for i in range(n):
        x[i, rng.integers(1, t + 1):] = 0.0
    x[0, 1] = 0.0
    return x


# ---------------------------------------------------------------- symbolic masks
def test_symbolic_tensors_carry_the_masks_keras_gives(keras):
    def shapes(K):
        ids = K.Input((None,), dtype="int32")
        e = K.layers.Embedding(11, 4, mask_zero=True)(ids)
        d = K.layers.Dense(3)(e)
        r = K.layers.LSTM(2, return_sequences=True)(d)
        last = K.layers.GRU(2)(d)
        pooled = K.layers.GlobalAveragePooling1D()(d)
        flat = K.layers.Flatten()(K.layers.Embedding(11, 4, mask_zero=True)(K.Input((5,), dtype="int32")))
        return [getattr(t, "_keras_mask", None) for t in (e, d, r, last, pooled, flat)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = shapes(type("G", (), {"Input": Input, "layers": layers})), shapes(keras)
    for got, want in zip(ours, theirs):
        assert (got is None) == (want is None)
        if want is not None:
            assert got.shape == tuple(want.shape) and got.dtype == "bool"


def test_a_layer_without_masking_warns_and_drops_the_mask():
    ids = Input((5,), dtype="int32")
    e = layers.Embedding(11, 4, mask_zero=True)(ids)
    with pytest.warns(UserWarning, match="'flat' .* does not support masking"):
        out = layers.Flatten(name="flat")(e)
    assert out._keras_mask is None


def test_the_output_mask_is_recorded_for_training():
    ids = Input((None,), dtype="int32", name="ids")
    out = layers.Dense(2, name="head")(layers.Embedding(11, 4, mask_zero=True)(ids))
    graph, _ = lower_model(Model(ids, out))
    mask = graph.meta["output_masks"]["head"]
    assert graph.type_of(mask).dtype == "bool" and graph.type_of(mask).shape == ("batch", "ids_len")


# ---------------------------------------------------------------- consumers and carriers
@pytest.mark.parametrize("kind", ["GRU", "SimpleRNN", "LSTM"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_masked_recurrent_layers_match_keras(keras, rng, kind, go_backwards, return_sequences):
    def build(K):
        ids = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(11, 4, mask_zero=True)(ids)
        out = getattr(K.layers, kind)(5, go_backwards=go_backwards, return_sequences=return_sequences)(h)
        return K.Model(ids, out)

    check_predict(keras, build, padded_ids, rng, batches=(1, 3))


def test_masking_layer_then_recurrent_layers_match_keras(keras, rng):
    def build(K):
        inp = K.Input((None, 3))
        h = K.layers.Masking(mask_value=0.0)(inp)
        a = K.layers.SimpleRNN(4, return_sequences=True, go_backwards=True)(h)
        b = K.layers.GRU(3, return_sequences=True, zero_output_for_mask=True)(h)
        return K.Model(inp, [K.layers.GlobalAveragePooling1D()(a), b, K.layers.LSTM(2, return_state=True)(h)[2]])

    check_predict(keras, build, padded_features, rng, batches=(2, 5))


def test_masked_average_pooling_matches_keras(keras, rng):
    def build(K):
        ids = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(11, 6, mask_zero=True)(ids)
        h = K.layers.Dropout(0.3)(K.layers.Dense(5, activation="relu")(h))
        a = K.layers.GlobalAveragePooling1D()(h)
        b = K.layers.GlobalAveragePooling1D(keepdims=True)(K.layers.LayerNormalization()(h))
        return K.Model(ids, [a, b])

    def data(rng, n):
        x = padded_ids(rng, n)
        x[:, 0] = np.maximum(x[:, 0], 1)  # no all-padding sample: Keras divides zero by zero there
        return x

    check_predict(keras, build, data, rng)


MERGES = {
    "add": lambda K, a, b, plain: K.layers.Add()([a, b]),
    "multiply": lambda K, a, b, plain: K.layers.Multiply()([a, b]),
    "maximum": lambda K, a, b, plain: K.layers.Maximum()([a, b]),
    "minimum": lambda K, a, b, plain: K.layers.Minimum()([a, b, a]),
    "average_one_unmasked": lambda K, a, b, plain: K.layers.Average()([a, plain]),
    "concatenate": lambda K, a, b, plain: K.layers.Concatenate()([a, b]),
    "concatenate_time_one_unmasked": lambda K, a, b, plain: K.layers.Concatenate(axis=1)([a, plain]),
    "concatenate_features_one_unmasked": lambda K, a, b, plain: K.layers.Concatenate()([b, plain]),
}


@pytest.mark.parametrize("merge", sorted(MERGES))
def test_merges_and_concatenate_combine_masks_as_keras(keras, rng, merge):
    """Keras's models.layers order follows its mask operations too, which graphc does not build:
    weights are given to the Keras twin layer by layer name."""
    from graphc.frontend import state

    def build(K):
        ids, other = K.Input((None,), dtype="int32"), K.Input((None,), dtype="int32")
        a = K.layers.Embedding(11, 4, mask_zero=True, name="a")(ids)
        b = K.layers.Embedding(11, 4, mask_zero=True, name="b")(other)
        plain = K.layers.Dense(4, name="plain")(K.layers.Embedding(11, 4, name="c")(other))
        merged = MERGES[merge](K, a, b, plain)
        return K.Model([ids, other], K.layers.SimpleRNN(3, return_sequences=True, name="rnn")(merged))

    state.clear_session()
    model = build(type("G", (), {"Input": Input, "Model": Model, "layers": layers}))
    kmodel = build(keras)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.weights])
            kmodel.get_layer(layer.name).set_weights(layer.get_weights())
    import graphc

    for n in (1, 3):
        x = [padded_ids(rng, n), padded_ids(rng, n)[:, ::-1].copy()]
        want = kmodel.predict(x, verbose=0)
        for target in ("reference", "onnx", "native"):
            np.testing.assert_allclose(graphc.build(model, target=target).predict(x), want, rtol=1e-4, atol=1e-5,
                                       err_msg=f"{target}, batch {n}")


def test_time_distributed_and_nested_models_carry_masks(keras, rng):
    def build(K):
        inner_in = K.Input((None, 4))
        inner = K.Model(inner_in, K.layers.TimeDistributed(K.layers.Dense(4, activation="tanh"))(inner_in))
        ids = K.Input((None,), dtype="int32")
        h = inner(K.layers.Embedding(11, 4, mask_zero=True)(ids))
        h = K.layers.Activation("relu")(K.layers.BatchNormalization()(h))
        return K.Model(ids, K.layers.GRU(3, go_backwards=True)(h))

    check_predict(keras, build, padded_ids, rng, batches=(1, 3))


def test_explicit_mask_argument_is_honoured(keras, rng):
    def build(K):
        inp, flags = K.Input((None, 3)), K.Input((None,), dtype="bool")
        return K.Model([inp, flags], K.layers.LSTM(4, return_sequences=True)(inp, mask=flags))

    def data(rng, n):
        return [rng.normal(size=(n, 6, 3)).astype("float32"), rng.random((n, 6)) < 0.6]

    check_predict(keras, build, data, rng)


def test_masked_models_keras_files_both_ways(keras, rng, tmp_path):
    def build(K):
        ids = K.Input((None,), dtype="int32")
        h = K.layers.Embedding(11, 4, mask_zero=True)(ids)
        h = K.layers.GRU(5, return_sequences=True, go_backwards=True)(h)
        return K.Model(ids, K.layers.GlobalAveragePooling1D()(K.layers.Dense(3)(h)))

    def data(rng, n):
        x = padded_ids(rng, n)
        x[:, 0] = np.maximum(x[:, 0], 1)
        return x

    check_keras_file(keras, build, data, rng, tmp_path)


def test_masking_layer_config_and_values(keras):
    ours, theirs = layers.Masking(mask_value=-1.0, name="m"), keras.layers.Masking(mask_value=-1.0, name="m")
    assert ours.get_config()["mask_value"] == theirs.get_config()["mask_value"]
    x = np.array([[[-1.0, -1.0], [1.0, -1.0], [-1.0, -1.0]]], "float32")
    np.testing.assert_array_equal(ours(x), np.asarray(theirs(x)))
    with pytest.raises(ValueError, match="mask_value must be a number"):
        layers.Masking(mask_value="zero")


def test_masks_of_the_wrong_shape_are_refused():
    seq = Input((None, 3))
    with pytest.raises(ValueError, match="the mask passed to TimeDistributed must be at least 2-D"):
        layers.TimeDistributed(layers.LSTM(2))(Input((None, 4, 3)), mask=Input(()))
    with pytest.raises(ValueError, match="BatchNormalization: the mask should have one dimension less"):
        layers.BatchNormalization()(seq, mask=seq)
    # A mask for a pooled sequence is (batch, steps), not shaped like the sequence
    with pytest.raises(ValueError, match="GlobalAveragePooling1D: the mask must have shape \\(batch, steps\\)"):
        layers.GlobalAveragePooling1D()(seq, mask=seq)


def test_time_distributed_gives_the_wrapped_recurrent_layer_its_step_masks(keras, rng):
    def build(K):
        ids = K.Input((3, None), dtype="int32")
        h = K.layers.Embedding(11, 4, mask_zero=True)(ids)
        return K.Model(ids, K.layers.TimeDistributed(K.layers.GRU(3, go_backwards=True))(h))

    def data(rng, n):
        return np.stack([padded_ids(rng, n, t=5) for _ in range(3)], axis=1)

    check_predict(keras, build, data, rng, batches=(1, 2))


def test_sequential_models_carry_masks(keras, rng):
    def build(K):
        return K.Sequential([K.Input((None,), dtype="int32"), K.layers.Embedding(11, 4, mask_zero=True),
                             K.layers.Dense(4, activation="relu"), K.layers.LSTM(3, return_sequences=True),
                             K.layers.SimpleRNN(2)])

    check_predict(keras, build, padded_ids, rng)
