"""Keras options graphc does not implement are refused by name, never accepted and ignored."""

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
