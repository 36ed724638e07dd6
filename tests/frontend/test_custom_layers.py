"""Custom layers written the Keras way: subclass ``Layer``, write ``build`` and ``call``.

graphc traces ``call`` into IR ops, so a custom layer predicts like its Keras twin through every
target, travels in ``.keras`` files both ways once registered, and trains like a built-in one. A
``call`` that needs tensor values in Python is refused with the layer's name and the line.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import graphc
from graphc import Input, Model, Sequential, layers, ops
from graphc.frontend.tracing import TracingError
from tests.keras_parity import check_keras_file, check_predict


def define(K):
    """The same custom layers, written once against ``K`` (graphc or keras) and registered by name."""
    register = K.saving.register_keras_serializable

    @register(package="graphc_tests", name="GatedResidual")
    class GatedResidual(K.layers.Layer):
        """Weights from add_weight, a sublayer, operators and ops."""

        def __init__(self, units, epsilon=1e-3, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.epsilon = epsilon
            self.proj = K.layers.Dense(units, activation="tanh")

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform",
                                          name="kernel")
            self.gate_bias = self.add_weight(shape=(self.units,), initializer="zeros")

        def call(self, inputs, training=None):
            gate = K.ops.sigmoid(K.ops.matmul(inputs, self.kernel) + self.gate_bias)
            h = gate * self.proj(inputs) + (1.0 - gate) * inputs[..., : self.units]
            centered = h - K.ops.mean(h, axis=-1, keepdims=True)
            return centered / K.ops.sqrt(K.ops.mean(centered ** 2, axis=-1, keepdims=True) + self.epsilon)

        def get_config(self):
            return {**super().get_config(), "units": self.units, "epsilon": self.epsilon}

    @register(package="graphc_tests", name="SplitHeads")
    class SplitHeads(K.layers.Layer):
        """Two tensor arguments, a run-time batch size in a reshape, no get_config (constructor config)."""

        def __init__(self, heads=2, **kwargs):
            super().__init__(**kwargs)
            self.heads = heads

        def call(self, query, value):
            batch = K.ops.shape(query)[0]
            q = K.ops.reshape(query, (batch, -1, self.heads, query.shape[-1] // self.heads))
            v = K.ops.reshape(value, (batch, -1, self.heads, value.shape[-1] // self.heads))
            scores = K.ops.softmax(K.ops.einsum("bqhd,bkhd->bhqk", q, v) / float(query.shape[-1]) ** 0.5)
            out = K.ops.einsum("bhqk,bkhd->bqhd", scores, v)
            return K.ops.reshape(out, (batch, -1, query.shape[-1]))

    @register(package="graphc_tests", name="Block")
    class Block(K.layers.Layer):
        """A custom layer made of custom layers."""

        def __init__(self, units=4, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.first = GatedResidual(units)
            self.mix = SplitHeads(2)

        def call(self, x):
            h = self.first(x)
            return self.mix(h, h) + h

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    return GatedResidual, SplitHeads, Block


def _gated(K):
    GatedResidual, _, _ = define(K)
    x = K.Input((3, 7), name="x")
    return K.Model(x, K.layers.Dense(2)(GatedResidual(5, name="gated")(x)))


def _heads(K):
    _, SplitHeads, _ = define(K)
    q = K.Input((3, 6), name="q")
    v = K.Input((5, 6), name="v")
    return K.Model([q, v], SplitHeads(3, name="heads")(q, v))


def _block(K):
    _, _, Block = define(K)
    x = K.Input((5, 4), name="x")
    h = Block(4, name="block")(x)
    return K.Model(x, K.layers.GlobalAveragePooling1D()(h))


ARCHITECTURES = {
    "gated": (_gated, lambda rng, n: rng.normal(size=(n, 3, 7)).astype("float32")),
    "heads": (_heads, lambda rng, n: [rng.normal(size=(n, 3, 6)).astype("float32"),
                                      rng.normal(size=(n, 5, 6)).astype("float32")]),
    "block": (_block, lambda rng, n: rng.normal(size=(n, 5, 4)).astype("float32")),
}


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_predict_equals_keras_on_every_target(name, keras, rng):
    build, data = ARCHITECTURES[name]
    check_predict(keras, build, data, rng)


@pytest.mark.keras
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_registered_classes_travel_in_keras_files_both_ways(name, keras, rng, tmp_path):
    build, data = ARCHITECTURES[name]
    loaded = check_keras_file(keras, build, data, rng, tmp_path)
    assert any(type(layer).__name__ in ("GatedResidual", "SplitHeads", "Block") for layer in loaded.layers)


@pytest.mark.keras
def test_custom_objects_load_an_unregistered_class(keras, rng, tmp_path):
    class Scale(keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor - 1.0

    class GraphcScale(layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor - 1.0

    x = keras.Input((3,))
    kmodel = keras.Model(x, Scale(0.5, name="scale")(keras.layers.Dense(4)(x)))
    path = tmp_path / "m.keras"
    kmodel.save(path)
    loaded = graphc.models.load_model(path, custom_objects={"Scale": GraphcScale})
    assert loaded.get_layer("scale").factor == 0.5
    data = rng.normal(size=(2, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(data), kmodel.predict(data, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.keras
def test_one_sgd_step_equals_keras(keras, rng):
    """The traced call trains: losses and every updated weight (sublayers' included) equal Keras's."""
    build, data = ARCHITECTURES["block"]
    graphc.utils.clear_session(free_memory=False)
    model = build(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel = build(keras)
    assert [w.shape for w in model.weights] == [tuple(w.shape) for w in kmodel.weights]
    kmodel.set_weights(model.get_weights())
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.2), loss="mse")
    kmodel.compile(optimizer=keras.optimizers.SGD(learning_rate=0.2), loss="mse")
    for step in range(2):
        x, y = data(rng, 6), rng.normal(size=(6, 4)).astype("float32")
        loss, kloss = model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y))
        assert np.isclose(loss, kloss, rtol=1e-5), f"step {step}: {loss} vs {kloss}"
        for got, want, var in zip(model.get_weights(), kmodel.get_weights(), model.weights):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6, err_msg=f"step {step}: {var.path}")


# ---------------------------------------------------------------------- graphc behaviour
class Affine(layers.Layer):
    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units))
        self.b = self.add_weight(shape=(self.units,), initializer="ones")

    def call(self, x, training=None):
        y = ops.matmul(x, self.w) + self.b
        return y * 0.5 if training else y


def test_weights_config_and_isinstance():
    layer = Affine(4, name="affine")
    x = Input((6,))
    model = Model(x, layer(x))
    assert [w.path for w in model.weights] == ["affine/variable", "affine/variable_1"]
    np.testing.assert_array_equal(layer.b.numpy(), np.ones(4, "float32"))
    assert layer.get_config() == {"name": "affine", "trainable": True, "dtype": "float32", "units": 4}
    assert isinstance(layer, layers.Layer) and isinstance(layers.Dense(2), layers.Layer)
    assert issubclass(layers.Conv2D, layers.Layer) and not issubclass(layers.Dense, Affine)
    assert layer.compute_output_shape((None, 6)) == (None, 4)


def test_eager_call_sequential_and_training_flag(rng):
    layer = Affine(2)
    data = rng.normal(size=(3, 5)).astype("float32")
    eager = layer(data)
    np.testing.assert_allclose(eager, data @ layer.w.numpy() + 1.0, rtol=1e-5)
    model = Sequential([Input((5,)), layer])
    np.testing.assert_allclose(model.predict(data), eager, rtol=1e-6)
    inference, training = graphc.lower(model), graphc.lower(model, training=True)
    assert "mul" not in {op.type for op in inference.ops()}
    assert "mul" in {op.type for op in training.ops()}


def test_native_and_onnx_builds_of_a_traced_layer(rng):
    x = Input((None, 5), name="x")
    model = Model(x, ops.tanh(Affine(3)(x)))
    data = rng.normal(size=(2, 4, 5)).astype("float32")
    want = model.predict(data)
    for target in ("onnx", "native"):
        np.testing.assert_allclose(graphc.build(model, target=target).predict(data), want, rtol=1e-5, atol=1e-6)


def _line_of(fn, text: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


class Branchy(layers.Layer):
    def call(self, x):
        if x > 0:  # Python control flow on a tensor value
            return x
        return -x


class Floaty(layers.Layer):
    def call(self, x):
        return x * float(ops.mean(x))


class Loopy(layers.Layer):
    def call(self, x):
        return ops.stack([row * 2.0 for row in x])


class MakesLayers(layers.Layer):
    def call(self, x):
        return layers.Dense(2)(x)


@pytest.mark.parametrize("cls,marker,what", [
    (Branchy, "if x > 0", "the truth value of a tensor"),
    (Floaty, "float(ops.mean(x))", "a tensor as a Python float"),
    (Loopy, "for row in x", "iteration over a tensor"),
    (MakesLayers, None, "layer 'dense', which is not one of its sublayers"),
])
def test_untraceable_call_names_layer_and_line(cls, marker, what):
    x = Input((4,))
    with pytest.raises(TracingError) as info:
        cls(name="culprit")(x)
    message = str(info.value)
    assert f"layer 'culprit' ({cls.__name__})" in message
    assert what in message
    if marker is not None:
        assert f" at {__file__}:{_line_of(cls.call, marker)}. " in message
    else:  # found when call() returns: no line of call() to show
        assert __file__ not in message


def test_call_on_a_tensor_from_outside_is_refused():
    outside = Input((4,), name="outside")

    class Captures(layers.Layer):
        def call(self, x):
            return x + outside

    with pytest.raises(TracingError, match="the model input 'outside', which is not an argument of call"):
        Captures()(Input((4,)))


def test_unsupported_add_weight_options_are_refused():
    class Odd(layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(2,), overwrite_with_gradient=True)

        def call(self, x):
            return x

    with pytest.raises(NotImplementedError, match="overwrite_with_gradient"):
        Odd(name="odd")(Input((2,)))


def test_layer_without_call_or_plain_config_is_refused(tmp_path):
    class Nothing(layers.Layer):
        pass

    with pytest.raises(NotImplementedError, match="defines neither call"):
        Nothing()(Input((2,)))

    class Holder(layers.Layer):
        def __init__(self, table, **kwargs):
            super().__init__(**kwargs)
            self.table = table

        def call(self, x):
            return x

    x = Input((2,))
    model = Model(x, Holder(np.ones(2), name="holder")(x))
    with pytest.raises(NotImplementedError, match="'holder' \\(Holder\\).*define get_config"):
        model.save(tmp_path / "h.keras")


# ---------------------------------------------------------------------- masks
def _masked(K):
    @K.saving.register_keras_serializable(package="graphc_tests", name="MaskedMean")
    class MaskedMean(K.layers.Layer):
        """call() takes the inputs' mask; compute_mask ends it."""

        def call(self, x, mask=None):
            weights = K.ops.expand_dims(K.ops.cast(mask, "float32"), -1)
            return K.ops.sum(x * weights, axis=1) / K.ops.maximum(K.ops.sum(weights, axis=1), 1.0)

        def compute_mask(self, inputs, previous_mask):
            return None

    @K.saving.register_keras_serializable(package="graphc_tests", name="Doubled")
    class Doubled(K.layers.Layer):
        """Passes its input's mask on (supports_masking), without compute_mask."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.supports_masking = True

        def call(self, x):
            return x * 2.0

    ids = K.Input((6,), dtype="int32", name="ids")
    h = Doubled()(K.layers.Embedding(9, 4, mask_zero=True)(ids))
    return K.Model(ids, [MaskedMean()(h), K.layers.GlobalAveragePooling1D()(h)])


def _ids(rng, n):
    ids = rng.integers(1, 9, size=(n, 6)).astype("int32")
    ids[:, 4:] = 0
    ids[0, 2:] = 0
    return ids


@pytest.mark.keras
def test_masks_reach_call_and_pass_through_as_in_keras(keras, rng):
    check_predict(keras, _masked, _ids, rng)


# ---------------------------------------------------------------------- a transformer, as the Keras examples write it
def _transformer_classes(K):
    register = K.saving.register_keras_serializable

    @register(package="graphc_tests", name="TokenAndPositionEmbedding")
    class TokenAndPositionEmbedding(K.layers.Layer):
        def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
            super().__init__(**kwargs)
            self.token_emb = K.layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = K.layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):
            maxlen = K.ops.shape(x)[-1]
            positions = self.pos_emb(K.ops.arange(start=0, stop=maxlen, step=1))
            return self.token_emb(x) + positions

    @register(package="graphc_tests", name="TransformerBlock")
    class TransformerBlock(K.layers.Layer):
        def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
            super().__init__(**kwargs)
            self.att = K.layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
            self.ffn = K.Sequential([K.layers.Dense(ff_dim, activation="relu"), K.layers.Dense(embed_dim)])
            self.layernorm1 = K.layers.LayerNormalization(epsilon=1e-6)
            self.layernorm2 = K.layers.LayerNormalization(epsilon=1e-6)
            self.dropout1 = K.layers.Dropout(rate)
            self.dropout2 = K.layers.Dropout(rate)

        def call(self, inputs, training=None):
            attn_output = self.att(inputs, inputs)
            attn_output = self.dropout1(attn_output, training=training)
            out1 = self.layernorm1(inputs + attn_output)
            ffn_output = self.dropout2(self.ffn(out1), training=training)
            return self.layernorm2(out1 + ffn_output)

    return TokenAndPositionEmbedding, TransformerBlock


def _transformer(K):
    TokenAndPositionEmbedding, TransformerBlock = _transformer_classes(K)
    ids = K.Input((7,), dtype="int32", name="ids")
    h = TokenAndPositionEmbedding(7, 11, 6, name="embed")(ids)
    h = TransformerBlock(6, 2, 5, name="block")(h)
    h = K.ops.one_hot(K.ops.argmax(h, axis=-1), 6) + K.ops.zeros_like(h) + h
    return K.Model(ids, K.layers.Dense(3)(K.layers.GlobalAveragePooling1D()(h)))


def _tokens(rng, n):
    return rng.integers(0, 11, size=(n, 7)).astype("int32")


@pytest.mark.keras
def test_keras_example_transformer_equals_keras(keras, rng, tmp_path):
    """Sublayers (MultiHeadAttention, a Sequential, Dropout with training=), ops.arange positions."""
    check_predict(keras, _transformer, _tokens, rng)
    check_keras_file(keras, _transformer, _tokens, rng, tmp_path)


@pytest.mark.keras
def test_sublayer_called_on_values_inside_call_trains_like_keras(keras, rng):
    """``self.pos_emb(ops.arange(n))`` is part of the graph, not a constant: its weights train as in Keras."""
    def build(K):
        TokenAndPositionEmbedding, _ = _transformer_classes(K)
        ids = K.Input((7,), dtype="int32")
        return K.Model(ids, K.layers.Dense(2)(K.layers.Flatten()(TokenAndPositionEmbedding(7, 11, 6)(ids))))

    graphc.utils.clear_session(free_memory=False)
    model = build(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel = build(keras)
    kmodel.set_weights(model.get_weights())
    positions = model.layers[1].pos_emb.embeddings
    before = positions.numpy()
    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.5), loss="mse")
    kmodel.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="mse")
    x, y = _tokens(rng, 4), rng.normal(size=(4, 2)).astype("float32")
    assert np.isclose(model.train_on_batch(x, y), float(kmodel.train_on_batch(x, y)), rtol=1e-5)
    for got, want, var in zip(model.get_weights(), kmodel.get_weights(), model.weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6, err_msg=var.path)
    assert not np.allclose(positions.numpy(), before)
