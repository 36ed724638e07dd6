"""A sample's outputs are the same bits whatever else shares its batch.

The runtime runs a batch in sub-batches whose sizes follow the thread count and the caches
(:mod:`graphc.backends.llvm.batch_split`), and a product's rows fall into whole micro-tiles, edge
tiles or single rows depending on how many there are: every path sums a row's products in the same
order, so a sample computed alone, in a batch of 17 or in any sub-batch gives the same bits (and 1, 2
or 3 threads the same results). Checked per op family against one-sample calls and calls over
uneven pieces of the batch, with the batch whole (``GRAPHC_BATCH_SPLIT=0``: the kernels themselves)
and split as the runtime chooses.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import applications, layers
from graphc.backends.llvm import batch_split
from graphc.backends.llvm.kernels import winograd
from tests.backends.onnx.checks import randomize_weights

BATCH = 17
PIECES = (0, 1, 4, 11, 17)  # uneven pieces: 1, 3, 7 and 6 samples


def _model(kind: str):
    inp = graphc.Input
    if kind == "embedding_dense":  # 100 rows a sample: 3 samples are 300 rows, 2 + 1 are 200 and 100
        i = inp(shape=(100,), dtype="int32")
        return graphc.Model(i, layers.Dense(128)(layers.Embedding(1000, 512)(i)))
    if kind == "dense_rows":  # 7 rows a sample, 37 columns: two whole panels and a partial one
        i = inp(shape=(7, 33))
        return graphc.Model(i, layers.Dense(37, activation="relu")(i))
    if kind == "dense_k_blocks":  # one row a sample, K over several blocks, 5 panels: a group and one more
        i = inp(shape=(1100,))
        return graphc.Model(i, layers.Dense(80, activation="tanh")(i))
    if kind == "conv3x3":
        i = inp(shape=(9, 11, 5))
        return graphc.Model(i, layers.Conv2D(19, 3, padding="same")(i))
    if kind == "conv_block":  # 3x3 convolutions over 64 channels (Winograd where it pays) and a residual
        i = inp(shape=(14, 14, 64))
        y = layers.Conv2D(64, 3, padding="same", activation="relu")(i)
        return graphc.Model(i, layers.Activation("relu")(layers.add([i, layers.Conv2D(64, 3, padding="same")(y)])))
    if kind == "conv1x1_pool":
        i = inp(shape=(5, 7, 24))
        return graphc.Model(i, layers.GlobalAveragePooling2D()(layers.Conv2D(40, 1)(i)))
    if kind == "conv1d":
        i = inp(shape=(17, 6))
        return graphc.Model(i, layers.MaxPooling1D(2)(layers.Conv1D(21, 5, activation="relu")(i)))
    if kind == "separable_dilated":
        i = inp(shape=(15, 15, 6))
        y = layers.SeparableConv2D(23, 3, dilation_rate=2)(i)
        return graphc.Model(i, layers.DepthwiseConv2D(3, strides=2, padding="same")(y))
    if kind == "conv_transpose":
        i = inp(shape=(6, 5, 4))
        return graphc.Model(i, layers.Conv2DTranspose(7, 3, strides=2)(i))
    if kind == "lstm":  # 33 units: 132 gate columns, 8 whole panels and a partial one
        i = inp(shape=(5, 9))
        return graphc.Model(i, layers.LSTM(33, return_sequences=True)(i))
    if kind == "gru":
        i = inp(shape=(5, 9))
        return graphc.Model(i, layers.GRU(20)(i))
    if kind == "attention":  # products of two computed operands
        i = inp(shape=(13, 32))
        return graphc.Model(i, layers.LayerNormalization()(layers.MultiHeadAttention(2, 16)(i, i)))
    if kind == "dot":
        i, j = inp(shape=(7, 19)), inp(shape=(23, 19))
        return graphc.Model([i, j], layers.Softmax()(layers.Dot(axes=(2, 2))([i, j])))
    raise ValueError(kind)


KINDS = ["embedding_dense", "dense_rows", "dense_k_blocks", "conv3x3", "conv_block", "conv1x1_pool", "conv1d",
         "separable_dilated", "conv_transpose", "lstm", "gru", "attention", "dot"]


def _inputs(model, rng, batch: int) -> list[np.ndarray]:
    out = []
    for t in model.inputs:
        shape = (batch,) + tuple(t.shape[1:])
        if "int" in str(t.dtype):
            out.append(rng.integers(0, 1000, shape).astype(np.int32))
        else:
            out.append(rng.standard_normal(shape).astype(np.float32))
    return out


def _predict(cm, xs: list[np.ndarray], lo: int, hi: int) -> np.ndarray:
    part = [x[lo:hi] for x in xs]
    return np.asarray(cm.predict(part if len(part) > 1 else part[0]))


def _assert_invariant(cm, xs: list[np.ndarray], what: str) -> np.ndarray:
    whole = _predict(cm, xs, 0, BATCH)
    for s in range(BATCH):
        assert _predict(cm, xs, s, s + 1).tobytes() == whole[s:s + 1].tobytes(), f"{what}: sample {s} alone"
    pieces = np.concatenate([_predict(cm, xs, a, b) for a, b in zip(PIECES, PIECES[1:])])
    assert pieces.tobytes() == whole.tobytes(), f"{what}: in pieces {PIECES}"
    return whole


@pytest.mark.parametrize("kind", KINDS)
def test_a_sample_computes_alike_in_any_batch(kind, monkeypatch, tmp_path, rng):
    """The batch whole on one thread (the kernels' own paths), then on three threads with the runtime's
    sub-batches: the same bits, near the reference."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(batch_split.ENV, "0")
    model = _model(kind)
    randomize_weights(model, rng)
    xs = _inputs(model, rng, BATCH)
    whole = _assert_invariant(graphc.build(model, target="native", threads=1), xs, f"{kind}, 1 thread")
    want = np.asarray(graphc.build(model, level=0).predict(xs if len(xs) > 1 else xs[0]))
    np.testing.assert_allclose(whole, want, rtol=1e-4, atol=1e-5)
    monkeypatch.delenv(batch_split.ENV)
    got = _predict(graphc.build(model, target="native", threads=3), xs, 0, BATCH)
    assert got.tobytes() == whole.tobytes(), f"{kind} on 3 threads"


@pytest.mark.parametrize("mode", ["force", "0"])
def test_winograd_and_direct_convolutions_alike_in_any_batch(mode, monkeypatch, tmp_path, rng):
    """Winograd's products (their rows are tiles of every image in a block) and the implicit GEMM."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(batch_split.ENV, "0")
    monkeypatch.setenv(winograd.ENV, mode)
    model = _model("conv_block")
    randomize_weights(model, rng)
    _assert_invariant(graphc.build(model, target="native", threads=1), _inputs(model, rng, BATCH), mode)


@pytest.mark.slow
def test_mobilenet_v2_computes_a_sample_alike_in_any_batch(monkeypatch, tmp_path, rng):
    """Depthwise and pointwise convolutions, batch-normalization folded, global pooling and the classifier."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(batch_split.ENV, "0")
    model = applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35)
    randomize_weights(model, rng)
    _assert_invariant(graphc.build(model, target="native", threads=1), _inputs(model, rng, BATCH), "MobileNetV2")
