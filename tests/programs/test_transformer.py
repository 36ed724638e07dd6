"""Transformers written once against Keras and graphc: a text classifier (token and position
embeddings, self-attention with the padding mask of ``Embedding(mask_zero=True)``, residual
connections and LayerNormalization, a feed-forward block, masked average pooling), a causal
decoder block and an encoder-decoder with cross-attention whose key differs from its value
(the source's padding as an explicit attention mask).

Each equals Keras in predict through the reference, ONNX and native targets (batches of 1 and
2, odd sizes), in one SGD and one Adam training step (loss and every weight, on the reference
and the native trainer), and through ``.keras`` files both ways.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from tests.frontend.layer_gradcheck import check_model_gradients
from tests.keras_parity import check_keras_file, check_predict, twins

pytestmark = pytest.mark.keras

VOCAB, LENGTH, WIDTH = 13, 7, 6


def position_embedding(K):
    """Learned positions added to a (batch, length, width) sequence; its mask passes through."""
    @K.saving.register_keras_serializable(package="graphc_transformer_tests", name="PositionEmbedding")
    class PositionEmbedding(K.layers.Layer):
        def __init__(self, length, **kwargs):
            super().__init__(**kwargs)
            self.length = length
            self.supports_masking = True

        def build(self, input_shape):
            self.positions = self.add_weight(shape=(self.length, input_shape[-1]), initializer="uniform",
                                             name="positions")

        def call(self, inputs):
            return inputs + self.positions

        def get_config(self):
            return {**super().get_config(), "length": self.length}

    return PositionEmbedding


def embed(K, ids, length=LENGTH, mask_zero=True):
    tokens = K.layers.Embedding(VOCAB, WIDTH, mask_zero=mask_zero)(ids)
    return position_embedding(K)(length)(tokens)


def encoder_block(K, x, heads=3, key_dim=2, hidden=17):
    attended = K.layers.MultiHeadAttention(heads, key_dim)(x, x)
    x = K.layers.LayerNormalization(epsilon=1e-6)(K.layers.Add()([x, attended]))
    ff = K.layers.Dense(WIDTH)(K.layers.Dense(hidden, activation="relu")(x))
    return K.layers.LayerNormalization(epsilon=1e-6)(K.layers.Add()([x, ff]))


def classifier(K, length=LENGTH):
    ids = K.Input((length,), dtype="int32")
    x = encoder_block(K, embed(K, ids, length))
    x = K.layers.GlobalAveragePooling1D()(x)
    return K.Model(ids, K.layers.Dense(3, activation="softmax")(K.layers.Dense(5, activation="tanh")(x)))


def decoder(K):
    """Causal self-attention (no padding), then a next-token distribution at every position."""
    ids = K.Input((LENGTH,), dtype="int32")
    x = embed(K, ids, mask_zero=False)
    attended = K.layers.MultiHeadAttention(2, 3, value_dim=4)(x, x, use_causal_mask=True)
    x = K.layers.LayerNormalization()(K.layers.Add()([x, attended]))
    ff = K.layers.Dense(WIDTH)(K.layers.Dense(11, activation="gelu")(x))
    x = K.layers.LayerNormalization()(K.layers.Add()([x, ff]))
    return K.Model(ids, K.layers.Dense(VOCAB, activation="softmax")(x))


def encoder_decoder(K):
    """The decoder attends to the encoder's output (values) through keys of their own, with the
    source's padding given as an attention mask (batch, 1, source length)."""
    source, target = K.Input((5,), dtype="int32"), K.Input((LENGTH,), dtype="int32")
    source_mask = K.Input((1, 5))
    memory = encoder_block(K, embed(K, source, 5, mask_zero=False))
    keys = K.layers.Dense(4, activation="tanh")(memory)
    y = embed(K, target, mask_zero=False)
    attended = K.layers.MultiHeadAttention(2, 3)(y, y, use_causal_mask=True)
    y = K.layers.LayerNormalization()(K.layers.Add()([y, attended]))
    crossed = K.layers.MultiHeadAttention(3, 2, value_dim=3)(y, memory, key=keys, attention_mask=source_mask)
    y = K.layers.LayerNormalization()(K.layers.Add()([y, crossed]))
    return K.Model([source, target, source_mask], K.layers.Dense(VOCAB, activation="softmax")(y))


def padded_ids(length=LENGTH):
    """Token ids padded with 0 at the end, every row keeping at least one token."""
    def data(rng, n):
        ids = rng.integers(1, VOCAB, size=(n, length))
        keep = rng.integers(1, length + 1, size=n)
        keep[0] = 1
        ids[np.arange(length)[None, :] >= keep[:, None]] = 0
        return ids.astype("int32")

    return data


def pair_data(rng, n):
    source = padded_ids(5)(rng, n)
    return [source, rng.integers(1, VOCAB, size=(n, LENGTH)).astype("int32"),
            (source != 0).astype("float32")[:, None, :]]


def stacked_classifier(K):
    """Two encoder blocks on a padded sequence. Keras's MultiHeadAttention removes the masks of
    the tensors it reads, so the residual Add after the first block carries no mask when the
    model runs: the second block attends to every position, while the pooling keeps the mask
    recorded when the model was built."""
    ids = K.Input((LENGTH,), dtype="int32")
    x = encoder_block(K, encoder_block(K, embed(K, ids)))
    return K.Model(ids, K.layers.Dense(3, activation="softmax")(K.layers.GlobalAveragePooling1D()(x)))


def masked_decoder(K):
    """Padded targets: Keras's run-time masks, not those of the built model, weight the loss
    (after the first attention no mask is left on the output)."""
    ids = K.Input((LENGTH,), dtype="int32")
    x = embed(K, ids)
    attended = K.layers.MultiHeadAttention(2, 3)(x, x, use_causal_mask=True)
    x = K.layers.LayerNormalization()(K.layers.Add()([x, attended]))
    return K.Model(ids, K.layers.Dense(VOCAB, activation="softmax")(x))


MODELS = {
    "classifier": (classifier, padded_ids(), 3),
    "classifier_length_1": (lambda K: classifier(K, 1), padded_ids(1), 3),
    "decoder": (decoder, padded_ids(), None),
    "encoder_decoder": (encoder_decoder, pair_data, None),
    "stacked_classifier": (stacked_classifier, padded_ids(), 3),
    "masked_decoder": (masked_decoder, padded_ids(), None),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predictions_equal_keras_on_every_target(keras, rng, name):
    build, data, _ = MODELS[name]
    _, _, errors = check_predict(keras, build, data, rng)
    assert set(errors) == {"reference", "onnx", "native"}


@pytest.mark.parametrize("name", ["classifier", "decoder", "encoder_decoder", "stacked_classifier"])
def test_keras_files_round_trip(keras, rng, tmp_path, name):
    build, data, _ = MODELS[name]
    check_keras_file(keras, build, data, rng, tmp_path)


def _labels(rng, x, classes):
    if classes is not None:
        return rng.integers(0, classes, size=len(x))
    ids = x[1] if isinstance(x, list) else x
    return rng.integers(0, VOCAB, size=ids.shape)


@pytest.mark.parametrize("target", ["reference", "native"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["classifier", "decoder", "encoder_decoder"])
def test_training_step_equals_keras(keras, rng, name, optimizer, target):
    build, data, classes = MODELS[name]
    model, kmodel = twins(keras, build, rng)
    options = {"learning_rate": 0.1} if optimizer == "sgd" else {"learning_rate": 0.01}
    model.compile(optimizer=getattr(graphc.optimizers, optimizer.upper() if optimizer == "sgd" else "Adam")(**options),
                  loss="sparse_categorical_crossentropy")
    kmodel.compile(optimizer=getattr(keras.optimizers, optimizer.upper() if optimizer == "sgd" else "Adam")(**options),
                   loss="sparse_categorical_crossentropy")
    trainer = graphc.build(model, target=target, training=True)
    assert (trainer.runner is None) == (target == "reference")
    x = data(rng, 5)
    y = _labels(rng, x, classes)
    before = model.get_weights()
    loss, k_loss = model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
    np.testing.assert_allclose(loss, k_loss, rtol=1e-5)
    for got, want, old, var in zip(model.get_weights(), kmodel.get_weights(), before, model.weights):
        if var.path.endswith("/key/bias"):
            # The key bias adds the same q.b to every score of a query, which softmax ignores: its
            # true gradient is zero, and Adam turns the rounding noise (of either sign, on both
            # sides) into full steps; SGD leaves it where it was.
            if optimizer == "sgd":
                np.testing.assert_allclose(got, old, atol=1e-6, err_msg=var.path)
            continue
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=var.path)
        assert not np.array_equal(got, old), f"{var.path} did not train"


def test_classifier_gradients_match_finite_differences(rng):
    """The whole encoder, padding masks included, differentiated against central differences."""
    graphc.utils.set_random_seed(2)
    model = classifier(graphc, length=5)
    ids = padded_ids(5)(rng, 3)
    checked = check_model_gradients(model, {model.inputs[0]._keras_history[0].name: ids}, rng)
    assert len(checked) == len([w for w in model.weights if w.trainable])


@pytest.mark.parametrize("name", ["stacked_classifier", "masked_decoder"])
def test_training_through_fully_masked_queries(keras, rng, name):
    """Where padded queries reach the loss (their masks gone after the first attention, as in
    Keras), the loss equals Keras's and native steps equal the reference's. The weights are not
    compared with Keras: its torch backend's fused CPU attention kernel differentiates a query
    row whose keys are all masked as if every probability were 1 (the row's log-sum-exp absorbs
    log(length) next to -2.4e38), where the softmax gives 1/length."""
    build, data, classes = MODELS[name]
    (model, kmodel), twin = twins(keras, build, rng), build(graphc)
    twin.set_weights(model.get_weights())
    for m in (model, twin):
        m.compile(optimizer=graphc.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    kmodel.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    graphc.build(model, target="native", training=True)
    graphc.build(twin, target="reference", training=True)
    x = data(rng, 5)
    y = _labels(rng, x, classes)
    loss, reference, k_loss = model.train_on_batch(x, y), twin.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
    np.testing.assert_allclose(loss, k_loss, rtol=1e-5)
    np.testing.assert_allclose(loss, reference, rtol=1e-5)
    for got, want, var in zip(model.get_weights(), twin.get_weights(), model.weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=var.path)
