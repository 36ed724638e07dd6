"""Keras's 'same' padding on free sizes in ONNX: where a stride exceeds its window the pad total
``(ceil(n/s)-1)*s + k - n`` goes negative for some sizes and Keras clamps it at 0, which
onnxruntime's SAME_UPPER does not; the export must still equal the reference at every size."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import layers

pytest.importorskip("onnxruntime")

SIZES = (1, 3, 7, 9, 10, 17)


def _window_layer(kind: str, rank: int, k: int, s: int):
    if kind == "conv":
        return (layers.Conv1D, layers.Conv2D)[rank - 1](3, k, strides=s, padding="same")
    pool = {"max": (layers.MaxPooling1D, layers.MaxPooling2D), "avg": (layers.AveragePooling1D,
                                                                       layers.AveragePooling2D)}[kind]
    return pool[rank - 1](k, strides=s, padding="same")


@pytest.mark.parametrize("kind", ["conv", "max", "avg"])
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("k,s", [(1, 2), (2, 3), (3, 9), (3, 2)])
def test_same_window_on_free_sizes_equals_the_reference(rng, kind, rank, k, s):
    x_in = graphc.Input((None,) * rank + (2,))
    model = graphc.Model(x_in, _window_layer(kind, rank, k, s)(x_in))
    reference = graphc.build(model, target="reference")
    exported = graphc.build(model, target="onnx")
    for n in SIZES:
        x = rng.standard_normal((2,) + (n,) * rank + (2,)).astype("float32")
        want = reference.predict(x)
        got = exported.predict(x)
        assert got.shape == want.shape, f"size {n}: {got.shape} != {want.shape}"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"size {n}")


def test_strided_conv_to_one_step_then_gru(rng):
    """The fuzz finding: a Conv1D whose stride leaves one step, pooled and fed to a GRU."""
    x_in = graphc.Input((None, 3))
    t = layers.Conv1D(4, 3, strides=9, padding="same")(x_in)
    t = layers.MaxPooling1D(2, strides=3, padding="same")(t)
    model = graphc.Model(x_in, layers.GRU(2)(t))
    x = rng.standard_normal((2, 9, 3)).astype("float32")
    np.testing.assert_allclose(graphc.build(model, target="onnx").predict(x),
                               graphc.build(model, target="reference").predict(x), rtol=1e-5, atol=1e-6)
