"""Depthwise convolutions: spans of neighbouring output pixels against one pixel at a time, shape by shape.

::

    python -m benchmarks.depthwise                      # the shapes below, batch 1, 1 thread
    python -m benchmarks.depthwise --batch 1,8 --threads 1,2 --repeat 15

For each shape (MobileNetV2's and EfficientNetB0's depthwise layers: image, channels, kernel, stride,
'same' padding, ReLU fused), one process builds the layer alone twice, with ``GRAPHC_DEPTHWISE_SPANS=1``
(the default: up to 8 pixels of a row computed together, see
:func:`graphc.backends.llvm.kernels.conv.span_pixels`) and ``=0`` (the build cache keys them apart), checks
that both give the same outputs, and times them interleaved (:func:`graphc.bench.measure`). GFLOP/s and
GB/s (the input read and the output written once) say which bound a layer sits at. Writes
``benchmarks/results/<date>-depthwise.md`` and ``.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.switched_builds import build_with, machine_line, main_over_shapes

# (image side, channels, kernel, stride, where the shape comes from)
SHAPES = [
    (112, 32, 3, 1, "MobileNetV2 expanded_conv"),
    (112, 96, 3, 2, "MobileNetV2 block_1"),
    (56, 144, 3, 1, "MobileNetV2 block_2"),
    (28, 192, 3, 1, "MobileNetV2 block_4"),
    (14, 576, 3, 1, "MobileNetV2 block_11"),
    (7, 960, 3, 1, "MobileNetV2 block_14"),
    (56, 144, 5, 2, "EfficientNetB0 block3a"),
    (28, 240, 5, 1, "EfficientNetB0 block3b"),
    (14, 480, 5, 1, "EfficientNetB0 block5a"),
    (7, 1152, 5, 1, "EfficientNetB0 block6b"),
    (17, 40, 3, 1, "odd size"),
]


def _model(side: int, C: int, k: int, stride: int):
    import graphc
    from graphc import layers

    inp = graphc.Input((side, side, C))
    return graphc.Model(inp, layers.DepthwiseConv2D(k, strides=stride, padding="same", activation="relu")(inp))


def measure_shape(side: int, C: int, k: int, stride: int, batch: int, threads: int, repeat: int) -> dict:
    from graphc.bench import _Runner, measure

    x = np.random.default_rng(0).random((batch, side, side, C), dtype=np.float32)
    model = _model(side, C, k, stride)
    spans = build_with(model, threads, "GRAPHC_DEPTHWISE_SPANS", "1")
    single = build_with(model, threads, "GRAPHC_DEPTHWISE_SPANS", "0")
    y = spans.predict(x)
    np.testing.assert_allclose(y, single.predict(x), rtol=1e-5, atol=1e-5)
    res = measure([_Runner("spans", lambda: spans.predict(x)), _Runner("one pixel", lambda: single.predict(x))],
                  repeat, min_sample_s=0.02, settle_s=0.1 if threads > 1 else 0.0)
    a, b = res["spans"].median_ms, res["one pixel"].median_ms
    out_pixels = y.shape[0] * y.shape[1] * y.shape[2]
    return {"side": side, "C": C, "k": k, "stride": stride, "batch": batch, "threads": threads, "spans_ms": a,
            "single_ms": b, "speedup": b / a, "gflops": 2 * k * k * C * out_pixels / (a * 1e6),
            "gbs": 4 * (x.size + y.size) / (a * 1e6)}


def to_markdown(machine: dict, rows: Sequence[dict], shapes: dict) -> str:
    lines = ["# Depthwise convolutions: spans of neighbouring pixels vs one pixel at a time", "",
             machine_line(machine) + ". `python -m benchmarks.depthwise`: each DepthwiseConv2D alone "
             "('same' padding, ReLU fused), both builds in one process, interleaved; medians in ms. GFLOP/s and "
             "GB/s (input read and output written once) of the spans' build.", "",
             "| image | channels | kernel | stride | from | batch | threads | spans ms | one pixel ms | speedup "
             "| GFLOP/s | GB/s |",
             "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['side']}x{r['side']} | {r['C']} | {r['k']}x{r['k']} | {r['stride']} | "
                     f"{shapes[(r['side'], r['C'], r['k'], r['stride'])]} | {r['batch']} | {r['threads']} | "
                     f"{r['spans_ms']:.4f} | {r['single_ms']:.4f} | {r['speedup']:.2f}x | {r['gflops']:.0f} | "
                     f"{r['gbs']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    return main_over_shapes(argv, __doc__.split("\n\n")[0], "depthwise", SHAPES, measure_shape, to_markdown)


if __name__ == "__main__":
    raise SystemExit(main())
