"""graphc.bench.torch_twin: the PyTorch twin of a model computes what graphc's reference computes.

The applications are built as the benchmark builds them (Keras writes a ``.keras`` file, graphc
loads it) at the smallest input each accepts; each layer twin is checked alone at odd sizes
with options away from their defaults; options without a twin raise TwinError naming them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers

torch = pytest.importorskip("torch")

from graphc.bench.torch_twin import TwinError, torch_twin  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-4)


def _reference(model, arrays):
    cm = graphc.build(model, "reference", level=0)
    out = cm.run(dict(zip(cm.graph.inputs, arrays)))
    return [out[o] for o in cm.graph.outputs]


def _twin_outputs(model, arrays):
    twin = torch_twin(model)
    with torch.inference_mode():
        return twin.to_numpy(twin(*twin.to_torch(arrays)))


# ---------------------------------------------------------------------------- the bundled examples


@pytest.mark.parametrize("name", ["mlp", "inception", "residual", "conv1d_text", "qa_two_inputs", "siamese_lstm",
                                  "separable_conv_bn", "merge", "multi_output"])
def test_twins_of_examples_match_the_reference(name):
    from graphc import examples

    model = examples.build(name, seed=3)
    cm = graphc.build(model, "reference", level=0)
    feeds = cm.feeds(examples.inputs(name, np.random.default_rng(0), 3 if name != "multi_output" else 1))
    arrays = [np.asarray(feeds[n]).astype(cm.graph.type_of(n).dtype) for n in cm.graph.inputs]
    for got, want in zip(_twin_outputs(model, arrays), _reference(model, arrays)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * max(1.0, float(np.max(np.abs(want)))))


@pytest.mark.parametrize("size", [7, 8])
def test_twin_same_padding_at_odd_and_even_sizes(size, rng):
    x = Input(shape=(size, size, 3))
    a = layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh")(x)
    b = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    c = layers.AveragePooling2D(3, strides=2, padding="same")(x)
    d = layers.Conv2D(5, 2, padding="same")(x)
    e = layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same")(x)
    y = layers.Flatten()(layers.concatenate([a, b, c, e], axis=-1))
    model = Model(x, [y, layers.GlobalAveragePooling2D()(d)])
    arrays = [rng.standard_normal((3, size, size, 3)).astype(np.float32)]
    for got, want in zip(_twin_outputs(model, arrays), _reference(model, arrays)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_twin_free_length_conv1d_and_shared_lstm(rng):
    seq = Input(shape=(None, 6))
    y = layers.Conv1D(4, 4, padding="same", activation="relu")(seq)
    y = layers.MaxPooling1D(2)(y)
    y = layers.LSTM(3, return_sequences=True)(y)
    model = Model(seq, layers.GlobalMaxPooling1D()(y))
    for length in (7, 17):
        arrays = [rng.standard_normal((2, length, 6)).astype(np.float32)]
        np.testing.assert_allclose(_twin_outputs(model, arrays)[0], _reference(model, arrays)[0], rtol=1e-4,
                                   atol=1e-5)


def test_twin_same_padding_over_free_spatial_dims(rng):
    x = Input(shape=(None, None, 3))
    y = layers.Conv2D(4, 3, strides=2, padding="same")(x)
    y = layers.MaxPooling2D(3, strides=2, padding="same")(y)
    model = Model(x, layers.GlobalAveragePooling2D()(y))
    for size in (7, 8, 13):
        arrays = [rng.standard_normal((2, size, size + 1, 3)).astype(np.float32)]
        np.testing.assert_allclose(_twin_outputs(model, arrays)[0], _reference(model, arrays)[0], rtol=1e-4,
                                   atol=1e-5)
    with pytest.raises(TwinError, match="'same' average pooling over free dims"):
        torch_twin(Model(x, layers.AveragePooling2D(3, strides=2, padding="same")(x)))


def test_twin_errors_name_the_layer():
    inp = Input(shape=(4, 2))
    with pytest.raises(TwinError, match=r"layer 'my_gru' \(GRU\) has no PyTorch twin"):
        torch_twin(Model(inp, layers.GRU(3, name="my_gru")(inp)))
    with pytest.raises(TwinError, match="layer 'back': this LSTM configuration has no PyTorch twin"):
        torch_twin(Model(inp, layers.LSTM(3, go_backwards=True, name="back")(inp)))


@pytest.mark.parametrize("activation", ["elu", "selu", "softplus", "softsign", "swish", "gelu", "relu6",
                                        "hard_sigmoid", "exponential", "log_softmax"])
def test_twin_activations(activation, rng):
    inp = Input(shape=(5,))
    model = Model(inp, layers.Dense(4, activation=activation)(inp))
    arrays = [rng.standard_normal((3, 5)).astype(np.float32)]
    np.testing.assert_allclose(_twin_outputs(model, arrays)[0], _reference(model, arrays)[0], rtol=1e-4, atol=1e-5)


def _check(model, arrays, **tol):
    got, want = _twin_outputs(model, arrays), _reference(model, arrays)
    assert len(got) == len(want)
    for g, r in zip(got, want):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, **(tol or TOL))


def _images(rng, batch, *shape):
    return rng.standard_normal((batch, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------------------ applications


def _as_benchmarked(keras, name: str, rng):
    """``name`` as ``python -m benchmarks.run --apps`` loads it (Keras saves it, graphc loads the file),
    at the smallest input it accepts (the transformer: short sequence, small width)."""
    from graphc.bench.keras_applications import APPLICATIONS, keras_application, transformer_encoder

    if name == "TransformerEncoder":
        model = transformer_encoder(keras, rng, seq=7, vocab=50, d_model=16, heads=4, ff=24)
    else:
        model = keras_application(keras, name, rng, APPLICATIONS[name][0])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.keras"
        model.save(path)
        return graphc.saving.load_model(path)


def _app_inputs(name: str, rng, batch: int):
    from graphc.bench.keras_applications import application_inputs

    if name == "TransformerEncoder":
        return [rng.integers(0, 50, (batch, 7)).astype(np.int32)]
    return [application_inputs(name, rng, batch)]


@pytest.mark.keras
@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV2", "EfficientNetB0", "InceptionV3", "TransformerEncoder"])
def test_twins_of_benchmarked_applications_match_the_reference(keras, name):
    rng = np.random.default_rng(0)
    model = _as_benchmarked(keras, name, rng)
    for batch in (1, 3):
        _check(model, _app_inputs(name, rng, batch))


@pytest.mark.keras
@pytest.mark.parametrize("name", ["MobileNetV3Small", "ConvNeXtTiny", "DenseNet121", "InceptionResNetV2"])
def test_twins_of_other_applications_match_the_reference(keras, name):
    """keras.ops arithmetic and ReLU(6) (MobileNetV3), LayerScale and nested Sequentials (ConvNeXt),
    ZeroPadding (DenseNet), CustomScaleLayer (InceptionResNetV2)."""
    rng = np.random.default_rng(1)
    model = _as_benchmarked(keras, name, rng)
    _check(model, _app_inputs(name, rng, 2))


# ------------------------------------------------------------------------------------------ layer twins


@pytest.mark.parametrize("size", [1, 3, 7, 17])
def test_zero_padding_and_cropping(size, rng):
    x = Input(shape=(size, size + 2, 3))
    a = layers.ZeroPadding2D(((1, 2), (0, 3)))(x)
    b = layers.Cropping2D(((1, 0), (0, 2)))(layers.ZeroPadding2D(2)(x))
    c = layers.ZeroPadding2D(((0, 1), (2, 0)), data_format="channels_first")(x)
    d = layers.Cropping2D(((0, 1), (1, 1)), data_format="channels_first")(layers.ZeroPadding2D(1)(x))
    seq = Input(shape=(size, 5))
    e = layers.Cropping1D((1, 2))(layers.ZeroPadding1D((2, 1))(seq))
    f = layers.ZeroPadding1D(3, data_format="channels_first")(seq)
    vol = Input(shape=(size, 2, 3, 2))
    g = layers.Cropping3D(((0, 1), (1, 0), (1, 1)))(layers.ZeroPadding3D(((1, 2), (0, 1), (1, 1)))(vol))
    model = Model([x, seq, vol], [a, b, c, d, e, f, g])
    _check(model, [_images(rng, 3, size, size + 2, 3), _images(rng, 3, size, 5), _images(rng, 3, size, 2, 3, 2)])


@pytest.mark.parametrize("options", [
    {}, {"max_value": 6.0}, {"max_value": 2.5}, {"negative_slope": 0.1}, {"threshold": 0.5},
    {"negative_slope": 0.2, "threshold": 0.5}, {"max_value": 4.0, "negative_slope": 0.3, "threshold": 1.0},
    {"max_value": 3.0, "negative_slope": 0.1}])
def test_relu_options(options, rng):
    x = Input(shape=(7, 3))
    model = Model(x, layers.ReLU(**options)(x))
    values = np.concatenate([rng.uniform(-8, 8, (3, 6, 3)), np.full((3, 1, 3), options.get("threshold", 0.0))], 1)
    _check(model, [values.astype(np.float32)])


def test_other_activation_layers(rng):
    x = Input(shape=(3, 7, 4))
    y = layers.Conv2D(4, 1)(x)
    outs = [layers.LeakyReLU(0.17)(y), layers.ELU(0.5)(y), layers.PReLU(alpha_initializer="random_normal",
                                                                       shared_axes=[1, 2])(y),
            layers.PReLU(alpha_initializer="random_normal")(x),
            layers.Softmax(axis=1)(y), layers.Softmax(axis=[1, 2])(y), layers.Softmax()(y),
            layers.Activation("hard_swish")(y), layers.Activation("leaky_relu")(y)]
    _check(Model(x, outs), [_images(rng, 3, 3, 7, 4) * 3])


@pytest.mark.parametrize("size", [1, 17])
def test_rescaling_and_normalization(size, rng):
    x = Input(shape=(size, 3, 3))
    adapted = layers.Normalization(axis=-1)
    adapted.adapt(_images(rng, 5, size, 3, 3) * 4 + 1)
    outs = [layers.Rescaling(1 / 127.5, offset=-1)(x), layers.Rescaling([0.5, 2.0, -1.0], offset=[1.0, 0.0, 3.0])(x),
            layers.Rescaling(2.0)(layers.Conv2D(3, 1)(x)),
            layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[4.0, 0.25, 0.0])(x),
            layers.Normalization(axis=(1, 2), mean=rng.uniform(size=(size, 3)),
                                 variance=rng.uniform(size=(size, 3)))(x),
            layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[4.0, 0.25, 1.0], invert=True)(x),
            adapted(x)]
    _check(Model(x, outs), [_images(rng, 3, size, 3, 3) * 3])


@pytest.mark.parametrize("size", [1, 3, 7])
def test_broadcasting_merges_reshape_and_pooling_keepdims(size, rng):
    x = Input(shape=(size, size, 6))
    y = layers.Conv2D(6, 3, padding="same")(x)
    squeeze = layers.GlobalAveragePooling2D()(y)
    excite = layers.Conv2D(6, 1, activation="sigmoid")(layers.Reshape((1, 1, 6))(squeeze))
    kept = layers.GlobalAveragePooling2D(keepdims=True)(y)
    outs = [layers.Multiply()([y, excite]), layers.Multiply()([y, squeeze]), layers.Add()([y, kept, x]),
            layers.Subtract()([y, layers.GlobalMaxPooling2D(keepdims=True)(x)]),
            layers.GlobalAveragePooling2D(data_format="channels_first", keepdims=True)(y),
            layers.Reshape((-1, 3))(y), layers.Permute((3, 1, 2))(y),
            (y + 3.0) * (1.0 / 6.0), 2.0 - y * y / (kept + 10.0)]
    _check(Model(x, outs), [_images(rng, 3, size, size, 6)])


@pytest.mark.parametrize("size", [7, 17])
def test_depthwise_conv_with_depth_multiplier(size, rng):
    x = Input(shape=(size, size, 3))
    outs = [layers.DepthwiseConv2D(3, depth_multiplier=3, strides=2, padding="same", activation="relu6",
                                   bias_initializer="random_normal")(x),
            layers.DepthwiseConv2D((3, 2), depth_multiplier=2, dilation_rate=2, use_bias=False)(x)]
    _check(Model(x, outs), [_images(rng, 3, size, size, 3)])


@pytest.mark.parametrize("options", [
    {}, {"epsilon": 0.5, "center": False}, {"scale": False, "beta_initializer": "random_normal"},
    {"axis": [-2, -1], "gamma_initializer": "random_normal", "beta_initializer": "random_normal"},
    {"rms_scaling": True, "gamma_initializer": "random_normal"}])
def test_layer_normalization(options, rng):
    seq = Input(shape=(7, 5))
    img = Input(shape=(3, 1, 5))
    norm = layers.LayerNormalization(**options)
    image_norm = layers.LayerNormalization(**{k: v for k, v in options.items() if k != "axis"})
    model = Model([seq, img], [norm(seq), image_norm(layers.Conv2D(5, 1)(img))])
    _check(model, [_images(rng, 3, 7, 5) * 2 + 1, _images(rng, 3, 3, 1, 5)])


def test_group_normalization(rng):
    x = Input(shape=(7, 3, 6))
    model = Model(x, layers.GroupNormalization(3, epsilon=0.01, beta_initializer="random_normal")(x))
    _check(model, [_images(rng, 3, 7, 3, 6)])


@pytest.mark.parametrize("size", [1, 3])
def test_upsampling_and_repeat(size, rng):
    x = Input(shape=(size, size + 1, 2))
    seq = Input(shape=(size, 3))
    outs = [layers.UpSampling2D((2, 3))(x), layers.UpSampling2D(2, interpolation="bilinear")(x),
            layers.UpSampling2D((3, 2), data_format="channels_first")(x), layers.UpSampling1D(3)(seq),
            layers.RepeatVector(3)(layers.Flatten()(seq))]
    _check(Model([x, seq], outs), [_images(rng, 3, size, size + 1, 2), _images(rng, 3, size, 3)])


@pytest.mark.parametrize("steps", [1, 3, 7, 17])
def test_multi_head_attention(steps, rng):
    q = Input(shape=(steps, 6))
    kv = Input(shape=(5, 4))
    key = Input(shape=(5, 3))
    self_att = layers.MultiHeadAttention(2, 3, bias_initializer="random_normal")(q, q)
    cross = layers.MultiHeadAttention(3, 2, value_dim=5, use_bias=False, output_shape=7)(q, kv, key=key)
    shaped = layers.MultiHeadAttention(1, 4, output_shape=(2, 3), bias_initializer="random_normal")(q, kv)
    causal = layers.MultiHeadAttention(2, 2)(q, q, use_causal_mask=True)
    model = Model([q, kv, key], [self_att, cross, shaped, causal])
    _check(model, [_images(rng, 3, steps, 6), _images(rng, 3, 5, 4), _images(rng, 3, 5, 3)])


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_multi_head_attention_masks(dropout, rng):
    """An attention mask, with and without dropout (two mask conventions), a fully masked query row
    included; causal plus window masks; a window alone."""
    q = Input(shape=(7, 4))
    mask = Input(shape=(7, 7))
    masked = layers.MultiHeadAttention(2, 3, dropout=dropout)(q, q, attention_mask=mask)
    both = layers.MultiHeadAttention(2, 3, dropout=dropout)(q, q, attention_mask=mask, use_causal_mask=True)
    window = layers.MultiHeadAttention(2, 3, sliding_window=2)(q, q)
    keep = (rng.uniform(size=(3, 7, 7)) > 0.4).astype(np.float32)
    keep[:, 0, :] = 0.0
    keep[:, :, 0] = np.where(np.arange(7) > 0, 1.0, keep[:, :, 0])
    _check(Model([q, mask], [masked, both, window]), [_images(rng, 3, 7, 4), keep])


def test_shared_layers_and_weights_stay_one(rng):
    """A layer called twice has one module, one weight: the twin trains as the model does."""
    from graphc.applications.keras_layers import LayerScale

    a, b = Input(shape=(3, 3, 4)), Input(shape=(4,))
    scale = LayerScale(0.5, 4)
    model = Model([a, b], [scale(layers.Conv2D(4, 1)(a)), scale(layers.Dense(4)(b))])
    _check(model, [_images(rng, 3, 3, 3, 4), _images(rng, 3, 4)])
    twin = torch_twin(model, trainable=True)
    assert sum(p.numel() for p in twin.module.parameters()) == 4 + (4 * 4 + 4) * 2


# ------------------------------------------------------------------------------------------ refused options


def test_options_without_a_twin_are_refused_by_name():
    seq = Input(shape=(7, 4))
    with pytest.raises(TwinError, match=r"layer 'att' \(MultiHeadAttention\): the call argument "
                                        r"return_attention_scores=True"):
        torch_twin(Model(seq, layers.MultiHeadAttention(2, 2, name="att")(seq, seq, return_attention_scores=True)))
    with pytest.raises(TwinError, match=r"layer 'ln' \(LayerNormalization\): axis=\[1\] \(not the trailing axes\)"):
        torch_twin(Model(seq, layers.LayerNormalization(axis=1, name="ln")(seq)))
    ids = Input(shape=(5,), dtype="int32")
    with pytest.raises(TwinError, match=r"layer 'emb' \(Embedding\): the option mask_zero=True"):
        torch_twin(Model(ids, layers.GlobalAveragePooling1D()(layers.Embedding(9, 3, mask_zero=True, name="emb")(ids))))
    with pytest.raises(TwinError, match=r"layer 'drop' \(Dropout\): the call argument training=True"):
        torch_twin(Model(seq, layers.Dropout(0.5, name="drop")(seq, training=True)))
    keep = Input(shape=(7, 4))
    with pytest.raises(TwinError, match=r"layer 'sm' \(Softmax\): the call argument mask=<tensor>"):
        torch_twin(Model([seq, keep], layers.Softmax(name="sm")(seq, mask=keep)))

    class ReLU(layers.ReLU):
        """A user's layer that shares a name with graphc's but may compute anything."""

    with pytest.raises(TwinError, match=r"layer 'mine' \(ReLU\) has no PyTorch twin here"):
        torch_twin(Model(seq, ReLU(name="mine")(seq)))
    with pytest.raises(TwinError, match=r"layer 'relu' \(ReLU\): dtype='float16'"):
        torch_twin(Model(seq, layers.ReLU(dtype="float16", name="relu")(seq)))
    img = Input(shape=(2, 3, 5, 4))
    with pytest.raises(TwinError, match=r"layer 'mha' \(MultiHeadAttention\): a query of rank 5"):
        torch_twin(Model(img, layers.MultiHeadAttention(2, 2, name="mha")(img, img)))


def test_dropout_draws_masks_in_a_training_steps_twin(rng):
    """At inference dropout is the identity; in a training step's twin (``trainable``) Dropout and
    SpatialDropout2D zero inputs (whole channels for the spatial one) and scale the rest by 1 / (1 - rate), as
    Keras's do in training; the other noises are refused there by name."""
    img = Input(shape=(7, 9, 17))
    model = Model(img, layers.SpatialDropout2D(0.5, name="sdrop")(layers.Dropout(0.25, name="drop")(img)))
    x = rng.random((3, 7, 9, 17), dtype=np.float32) + 1.0  # no zero of its own
    _check(model, [x])  # eval mode: the identity
    twin = torch_twin(model, trainable=True)
    torch.manual_seed(0)
    y = twin.to_numpy(twin(*twin.to_torch([x])))[0]
    kept = y != 0
    assert 0 < kept.mean() < 0.75  # about 0.75 * 0.5 of the values survive
    np.testing.assert_allclose(y[kept], (x / 0.75 / 0.5)[kept], rtol=1e-6)
    channel_dropped = ~kept.any(axis=(1, 2))  # (image, channel): a channel dropped everywhere or nowhere
    assert channel_dropped.any() and not channel_dropped.all()
    assert kept[~np.broadcast_to(channel_dropped[:, None, None, :], kept.shape)].mean() > 0.6
    seq = Input(shape=(7, 4))
    for layer, option in ((layers.GaussianNoise(0.1, name="noise"), "stddev=0.1"),
                          (layers.AlphaDropout(0.2, name="noise"), "rate=0.2"),
                          (layers.Dropout(0.2, noise_shape=(None, 1, 4), name="noise"), r"noise_shape=\(None, 1, 4\)"),
                          (layers.LSTM(3, dropout=0.1, name="noise"), "dropout=0.1"),
                          (layers.MultiHeadAttention(2, 2, dropout=0.1, name="noise"), "dropout=0.1")):
        out = layer(seq, seq) if isinstance(layer, layers.MultiHeadAttention) else layer(seq)
        torch_twin(Model(seq, out))  # inference: the identity
        with pytest.raises(TwinError, match=rf"layer 'noise' \({type(layer).__name__}\): the option {option} "
                                            r"in a training step"):
            torch_twin(Model(seq, out), trainable=True)
