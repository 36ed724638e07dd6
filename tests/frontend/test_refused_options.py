"""Keras options: those graphc does not implement are refused by name, never accepted and ignored;
those it takes (Flatten's data_format) behave as in Keras."""

from __future__ import annotations

import pytest

from graphc import layers


@pytest.mark.parametrize("make,option", [
    (lambda: layers.Dense(3, lora_rank=4, name="d"), "lora_rank"),
    (lambda: layers.Dense(3, lora_alpha=8.0, name="d"), "lora_alpha"),
    (lambda: layers.Dense(3, quantization_config={"mode": "int8"}, name="d"), "quantization_config"),
    (lambda: layers.Embedding(10, 3, lora_rank=2, name="d"), "lora_rank"),
    (lambda: layers.Embedding(10, 3, quantization_config={"mode": "int8"}, name="d"), "quantization_config"),
])
def test_lora_and_quantization_options_are_refused(make, option):
    with pytest.raises(ValueError, match=rf"'d'.*does not implement {option}"):
        make()


def test_neutral_values_are_accepted():
    assert layers.Dense(3, lora_rank=None, lora_alpha=None, quantization_config=None).units == 3
    assert layers.Embedding(10, 3, lora_rank=None).output_dim == 3


@pytest.mark.keras
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 1, 5)])
def test_flatten_channels_first_matches_keras(keras, rng, shape):
    from tests.keras_parity import check_predict

    def build(K):
        x = K.Input(shape)
        return K.Model(x, K.layers.Dense(4)(K.layers.Flatten(data_format="channels_first")(x)))

    check_predict(keras, build, lambda r, n: r.standard_normal((n, *shape)).astype("float32"), rng)


def test_flatten_refuses_unknown_data_format():
    with pytest.raises(ValueError, match="data_format must be"):
        layers.Flatten(data_format="nchw")
