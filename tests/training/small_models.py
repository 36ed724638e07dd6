"""Small models of each kind the training tests check native steps on (odd sizes; three outputs)."""

from __future__ import annotations

from graphc import Input, Model, layers


def mlp() -> Model:
    x = Input(shape=(7,))
    h = layers.Dense(17, activation="relu")(x)
    return Model(x, layers.Dense(3)(h))


def conv_bn() -> Model:
    x = Input(shape=(9, 9, 3))
    h = layers.Conv2D(5, 3, padding="same", use_bias=False)(x)  # a bias before BatchNorm gets no gradient
    h = layers.BatchNormalization()(h)
    h = layers.ReLU()(h)
    h = layers.GlobalAveragePooling2D()(h)
    return Model(x, layers.Dense(3)(h))


def lstm() -> Model:
    x = Input(shape=(5, 4))
    return Model(x, layers.Dense(3)(layers.LSTM(6)(x)))


def gru_reset_before() -> Model:
    x = Input(shape=(5, 4))
    return Model(x, layers.Dense(3)(layers.GRU(6, reset_after=False)(x)))


def dropout() -> Model:
    x = Input(shape=(11,))
    h = layers.Dropout(0.5, seed=21)(layers.Dense(19, activation="tanh")(x))
    return Model(x, layers.Dense(3)(h))
