"""bf16 builds: an embedding gather whose every reader is an im2col convolution writes its rows in bf16,
and the convolutions take them as their bf16 copy instead of converting a float32 result.

The outputs must be bit for bit those of the same build with the gather writing float32 (the
convolutions then round it to bf16 themselves, to nearest even, as the gather does); the gather takes
that path only where every reader converts (not read by anything else, not a graph output, rows of
whole 512-bit vectors, no pointwise or few-channel reader), and replayed ops (same shapes) keep the
two kinds apart.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import layers
from graphc.backends.llvm import codegen
from graphc.backends.llvm.target import host_target

pytestmark = pytest.mark.skipif(not host_target().has_avx512_bf16, reason="this CPU has no AVX512-BF16")


@pytest.fixture
def decisions(monkeypatch, tmp_path):
    """Each gather's decision (True: written in bf16), with a fresh build cache."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    seen: list[bool] = []
    real = codegen._Codegen._result_in_bf16

    def recording(self, op):
        result = real(self, op)
        if op.type == "gather":
            seen.append(result)
        return result

    monkeypatch.setattr(codegen._Codegen, "_result_in_bf16", recording)
    return seen


def _model(dim: int, readers: str, seq: int = 37):
    ids = graphc.Input((seq,), dtype="int32")
    e = layers.Embedding(500, dim)(ids)
    outs = []
    if readers in ("conv", "two_convs", "conv_and_pool"):
        outs.append(layers.GlobalMaxPooling1D()(layers.Conv1D(24, 5, activation="relu")(e)))
    if readers == "two_convs":
        outs.append(layers.GlobalMaxPooling1D()(layers.Conv1D(40, 3, padding="same")(e)))
    if readers == "conv_and_pool":
        outs.append(layers.GlobalAveragePooling1D()(e))
    if readers == "pointwise":
        outs.append(layers.GlobalMaxPooling1D()(layers.Conv1D(24, 1)(e)))
    if readers == "output":
        outs += [layers.GlobalMaxPooling1D()(layers.Conv1D(24, 5)(e)), e]
    return graphc.Model(ids, outs if len(outs) > 1 else outs[0])


def _ids(batch: int, seq: int = 37) -> np.ndarray:
    return np.random.default_rng(batch).integers(0, 500, (batch, seq)).astype(np.int32)


@pytest.mark.parametrize("readers, dim, expected", [
    ("conv", 32, True), ("two_convs", 64, True),
    ("conv_and_pool", 32, False), ("pointwise", 32, False), ("output", 32, False), ("conv", 20, False),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_gather_in_bf16_equals_the_converting_build(decisions, monkeypatch, readers, dim, expected, threads):
    model = _model(dim, readers)
    cm = graphc.build(model, "native", precision="bf16", threads=threads)
    assert decisions == [expected]
    monkeypatch.setattr(codegen._Codegen, "_result_in_bf16", lambda self, op: False)
    plain = graphc.build(model, "native", precision="bf16", threads=threads)
    for batch in (1, 3, 8):
        got, want = cm.predict(_ids(batch)), plain.predict(_ids(batch))
        for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
            np.testing.assert_array_equal(g, w)


def test_replayed_readers_keep_the_two_kinds_apart(decisions, monkeypatch):
    """Two convolutions of the same shapes, one reading a bf16-written gather and one a float32 value
    of the same shape: the second is not replayed from the first (it must convert its input)."""
    ids = graphc.Input((37,), dtype="int32")
    dense_in = graphc.Input((37, 32))
    conv = layers.Conv1D(24, 5)
    a = layers.GlobalMaxPooling1D()(conv(layers.Embedding(500, 32)(ids)))
    b = layers.GlobalMaxPooling1D()(conv(dense_in))
    model = graphc.Model([ids, dense_in], [a, b])
    cm = graphc.build(model, "native", precision="bf16")
    assert decisions == [True]
    x = np.random.default_rng(0).standard_normal((3, 37, 32)).astype(np.float32)
    got = cm.predict([_ids(3), x])
    ref = graphc.build(model, "native").predict([_ids(3), x])
    # the shared convolution on a float32 input agrees with float32 within bf16 rounding
    np.testing.assert_allclose(got[1], ref[1], rtol=0.05, atol=0.05)
    monkeypatch.setattr(codegen._Codegen, "_result_in_bf16", lambda self, op: False)
    plain = graphc.build(model, "native", precision="bf16").predict([_ids(3), x])
    for g, w in zip(got, plain):
        np.testing.assert_array_equal(g, w)
