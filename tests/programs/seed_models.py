"""The seed programs' architectures, written once against a Keras-compatible library.

Each builder takes the library module (``graphc`` or ``keras``) and returns a model plus a
function making random inputs for a batch size (and sequence length), so the same code
builds the graphc model and its Keras twin.
"""

from __future__ import annotations

import numpy as np


def mlp(K):
    inp = K.Input(shape=(64,))
    x = K.layers.Dense(32, activation="relu")(inp)
    x = K.layers.Dense(32, activation="relu")(x)
    out = K.layers.Dense(10, activation="softmax")(x)
    return K.Model(inp, out), lambda rng, n, t=None: rng.random((n, 64), dtype=np.float32)


def qa_two_inputs(K):
    text = K.Input(shape=(None,), dtype="int32", name="text")
    et = K.layers.Embedding(10000, 64)(text)
    enc_t = K.layers.LSTM(32)(et)
    question = K.Input(shape=(None,), dtype="int32", name="question")
    eq = K.layers.Embedding(10000, 32)(question)
    enc_q = K.layers.LSTM(16)(eq)
    x = K.layers.concatenate([enc_t, enc_q], axis=-1)
    answer = K.layers.Dense(500, activation="softmax")(x)

    def data(rng, n, t=7):
        return [rng.integers(1, 10000, size=(n, t)), rng.integers(1, 10000, size=(n, max(1, t - 3)))]

    return K.Model([text, question], answer), data


def multi_output(K):
    posts = K.Input(shape=(None,), dtype="int32", name="posts")
    x = K.layers.Embedding(50000, 256)(posts)
    x = K.layers.Conv1D(128, 5, activation="relu")(x)
    x = K.layers.MaxPooling1D(5)(x)
    x = K.layers.Conv1D(256, 5, activation="relu")(x)
    x = K.layers.Conv1D(256, 5, activation="relu")(x)
    x = K.layers.MaxPooling1D(5)(x)
    x = K.layers.Conv1D(256, 5, activation="relu")(x)
    x = K.layers.Conv1D(256, 5, activation="relu")(x)
    x = K.layers.GlobalMaxPooling1D()(x)
    x = K.layers.Dense(128, activation="relu")(x)
    age = K.layers.Dense(1, name="age")(x)
    income = K.layers.Dense(10, activation="softmax", name="income")(x)
    gender = K.layers.Dense(1, activation="sigmoid", name="gender")(x)
    return K.Model(posts, [age, income, gender]), \
        lambda rng, n, t=300: rng.integers(1, 50000, size=(n, t))


def inception(K):
    inp = K.Input(shape=(28, 28, 256))
    L = K.layers
    a = L.Conv2D(64, 1, activation="relu", strides=2)(inp)
    b = L.Conv2D(64, 1, activation="relu")(inp)
    b = L.Conv2D(128, 3, activation="relu", strides=2, padding="same")(b)
    c = L.AveragePooling2D(3, strides=2, padding="same")(inp)
    c = L.Conv2D(128, 1, activation="relu", padding="same")(c)
    d = L.Conv2D(128, 1, activation="relu")(inp)
    d = L.Conv2D(128, 3, activation="relu", padding="same")(d)
    d = L.Conv2D(128, 3, activation="relu", strides=2, padding="same")(d)
    out = L.concatenate([a, b, c, d], axis=-1)
    return K.Model(inp, out), lambda rng, n, t=None: rng.random((n, 28, 28, 256), dtype=np.float32)


def residual_identity(K):
    L = K.layers
    x = K.Input(shape=(32, 32, 128))
    y = L.Conv2D(128, 3, activation="relu", padding="same")(x)
    y = L.Conv2D(128, 3, activation="relu", padding="same")(y)
    y = L.Conv2D(128, 3, activation="relu", padding="same")(y)
    y = L.add([y, x])
    return K.Model(x, y), lambda rng, n, t=None: rng.random((n, 32, 32, 128), dtype=np.float32)


def residual_projection(K):
    L = K.layers
    x = K.Input(shape=(32, 32, 128))
    y = L.Conv2D(128, 3, activation="relu", padding="same")(x)
    y = L.Conv2D(128, 3, activation="relu", padding="same")(y)
    y = L.MaxPooling2D(2, strides=2)(y)
    r = L.Conv2D(128, 1, strides=2, padding="same")(x)
    y = L.add([y, r])
    return K.Model(x, y), lambda rng, n, t=None: rng.random((n, 32, 32, 128), dtype=np.float32)


def siamese_lstm(K):
    lstm = K.layers.LSTM(32)
    left = K.Input(shape=(None, 128))
    right = K.Input(shape=(None, 128))
    merged = K.layers.concatenate([lstm(left), lstm(right)], axis=-1)
    pred = K.layers.Dense(1, activation="sigmoid")(merged)

    def data(rng, n, t=5):
        return [rng.random((n, t, 128), dtype=np.float32), rng.random((n, t + 2, 128), dtype=np.float32)]

    return K.Model([left, right], pred), data


def time_distributed_classifier(K):
    inputs = K.Input(shape=(784,))
    h = K.layers.Dense(64, activation="relu")(inputs)
    h = K.layers.Dense(64, activation="relu")(h)
    inner = K.Model(inputs, K.layers.Dense(10, activation="softmax")(h))
    seq = K.Input(shape=(20, 784))
    out = K.layers.TimeDistributed(inner)(seq)
    return K.Model(seq, out), lambda rng, n, t=None: rng.random((n, 20, 784), dtype=np.float32)


def auxiliary_output(K):
    L = K.layers
    main_input = K.Input(shape=(100,), dtype="int32", name="main_input")
    x = L.Embedding(output_dim=512, input_dim=10000)(main_input)
    lstm_out = L.LSTM(32)(x)
    aux_out = L.Dense(1, activation="sigmoid", name="aux_output")(lstm_out)
    aux_input = K.Input(shape=(5,), name="aux_input")
    x = L.concatenate([lstm_out, aux_input])
    for _ in range(3):
        x = L.Dense(64, activation="relu")(x)
    main_out = L.Dense(1, activation="sigmoid", name="main_output")(x)

    def data(rng, n, t=None):
        return {"main_input": rng.integers(0, 10000, size=(n, 100)),
                "aux_input": rng.random((n, 5), dtype=np.float32)}

    return K.Model(inputs=[main_input, aux_input], outputs=[main_out, aux_out]), data


def separable_conv(K):
    L = K.layers
    m = K.Sequential()
    m.add(L.SeparableConv2D(32, 3, activation="relu", input_shape=(32, 32, 3)))
    m.add(L.SeparableConv2D(64, 3, activation="relu"))
    m.add(L.MaxPooling2D(2))
    m.add(L.SeparableConv2D(64, 3, activation="relu"))
    m.add(L.SeparableConv2D(128, 3, activation="relu"))
    m.add(L.MaxPooling2D(2))
    m.add(L.SeparableConv2D(64, 3, activation="relu"))
    m.add(L.SeparableConv2D(128, 3, activation="relu"))
    m.add(L.GlobalAveragePooling2D())
    m.add(L.Dense(32, activation="relu"))
    m.add(L.Dense(10, activation="softmax"))
    return m, lambda rng, n, t=None: rng.random((n, 32, 32, 3), dtype=np.float32)


def conv_bn(K):
    L = K.layers
    m = K.Sequential()
    m.add(L.Conv2D(32, 3, activation="relu", input_shape=(17, 17, 3)))
    m.add(L.BatchNormalization())
    m.add(L.Flatten())
    m.add(L.Dense(32, activation="relu"))
    m.add(L.BatchNormalization())
    m.add(L.Dense(10, activation="softmax"))
    return m, lambda rng, n, t=None: rng.random((n, 17, 17, 3), dtype=np.float32)


def merge(K):
    L = K.layers
    a = K.Input(shape=(16,), name="a")
    b = K.Input(shape=(16,), name="b")
    outs = [L.add([a, b]), L.subtract([a, b]), L.multiply([a, b]), L.average([a, b]), L.maximum([a, b]),
            L.minimum([a, b]), L.concatenate([a, b]), L.dot([a, b], axes=1),
            L.dot([a, b], axes=1, normalize=True)]

    def data(rng, n, t=None):
        return {"a": rng.normal(size=(n, 16)).astype(np.float32), "b": rng.normal(size=(n, 16)).astype(np.float32)}

    return K.Model([a, b], outs), data


def conv1d_text(K):
    L = K.layers
    m = K.Sequential()
    m.add(K.Input(shape=(500,)))
    m.add(L.Embedding(2000, 128, name="embed"))
    m.add(L.Conv1D(32, 7, activation="relu"))
    m.add(L.MaxPooling1D(5))
    m.add(L.Conv1D(32, 7, activation="relu"))
    m.add(L.GlobalMaxPooling1D())
    m.add(L.Dense(1))
    return m, lambda rng, n, t=None: rng.integers(1, 2000, size=(n, 500))


def two_heads_text(K):
    L = K.layers
    posts = K.Input(shape=(None,), dtype="int32", name="posts")
    x = L.Embedding(2000, 32)(posts)
    x = L.Conv1D(32, 5, activation="relu")(x)
    x = L.GlobalMaxPooling1D()(x)
    age = L.Dense(1, name="age")(x)
    gender = L.Dense(1, activation="sigmoid", name="gender")(x)
    return K.Model(posts, [age, gender]), lambda rng, n, t=50: rng.integers(1, 2000, size=(n, t))


# name -> (builder, parameter count Keras 3.15 reports, free sequence lengths to try or None)
SEED_MODELS = {
    "mlp": (mlp, 3466, None),
    "qa_two_inputs": (qa_two_inputs, 1000052, (7, 12)),
    "multi_output": (multi_output, 14146316, (300, 420)),
    "inception": (inception, 467712, None),
    "residual_identity": (residual_identity, 3 * (9 * 128 * 128 + 128), None),
    "residual_projection": (residual_projection, 2 * (9 * 128 * 128 + 128) + 128 * 128 + 128, None),
    "siamese_lstm": (siamese_lstm, 20673, (1, 6)),
    "time_distributed_classifier": (time_distributed_classifier, 784 * 64 + 64 + 64 * 64 + 64 + 650, None),
    "auxiliary_output": (auxiliary_output,
                         5120000 + 69760 + 33 + (37 * 64 + 64) + 2 * (64 * 64 + 64) + 65, None),
    "separable_conv": (separable_conv, None, None),
    "conv_bn": (conv_bn, None, None),
    "merge": (merge, 0, None),
    "conv1d_text": (conv1d_text, 291937, None),
    "two_heads_text": (two_heads_text, None, (9, 50)),
}
