"""The size goal of int8 quantization on native libraries: every weight tensor (kernels, embedding tables)
is stored in one byte per element, so the weight tensors of a quantized library are a quarter of the float32
library's; what else the blob carries (per-channel scales, int32 biases, zero points, alignment) is a small
fixed part that keeps the totals of the larger seed models within a few percent of 4x."""

from __future__ import annotations

import pytest

from benchmarks.int8_size import measure


@pytest.mark.slow
@pytest.mark.parametrize("name", ["residual", "conv1d_text", "mlp"])
def test_int8_weight_tensors_are_a_quarter_of_float32(name):
    r = measure(name)
    f, q = r["float32"], r["int8"]
    assert q["unread"] == 0, "the int8 library carries constants no op reads"
    assert q["float_weights"] == {}, f"weight tensors left in float32: {q['float_weights']}"
    assert sum(f["weight_tensors"].values()) == 4 * sum(q["weight_tensors"].values())
    if name != "mlp":  # 3.3 KiB of kernels: the rest is a quarter of its library
        assert f["total"] / q["total"] >= 3.9
