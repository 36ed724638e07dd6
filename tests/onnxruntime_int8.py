"""Where onnxruntime's own int8 kernels cannot be the judge of graphc's integer exports."""

from __future__ import annotations

import pytest


def skip_where_onnxruntime_saturates() -> None:
    """Skip on an x86 CPU without VNNI: there onnxruntime runs uint8 x int8 products on ``vpmaddubsw``, whose
    int16 pair sums saturate, so its results may differ from the exact integer sums graphc and the reference
    compute (onnxruntime's quantization guide, "When and why do I need to try U8U8?" / saturation on x86-64
    with AVX2 and AVX-512)."""
    from graphc.backends.llvm.target import host_target

    host = host_target()
    if host.arch == "x86_64" and not host.feature_set & {"avx512vnni", "avxvnni"}:
        pytest.skip("onnxruntime's uint8 x int8 kernels saturate on x86 without VNNI (documented)")
