"""Depthwise convolutions: spans of neighbouring output pixels against one pixel at a time, shape by shape.

::

    python -m benchmarks.depthwise                      # the shapes below, batch 1, 1 thread
    python -m benchmarks.depthwise --batch 1,8 --threads 1,2 --repeat 15
    python -m benchmarks.depthwise --free-sizes         # the layers over images of any size

For each shape (MobileNetV2's and EfficientNetB0's depthwise layers: image, channels, kernel, stride,
'same' padding, ReLU fused), one process builds the layer alone twice, with ``GRAPHC_DEPTHWISE_SPANS=1``
(the default: up to 8 pixels of a row computed together, see
:func:`graphc.backends.llvm.kernels.conv.span_pixels`) and ``=0`` (the build cache keys them apart), checks
that both give the same outputs, and times them interleaved (:func:`graphc.bench.measure`). GFLOP/s and
GB/s (the input read and the output written once) say which bound a layer sits at. ``--free-sizes`` builds
the layers over ``Input((None, None, C))`` (the sizes known at run time only, as MobileNetV3's), and times
a third build beside them with the sizes static. Writes ``benchmarks/results/<date>-depthwise.md`` (or
``-depthwise-free-sizes.md``) and ``.json``.
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
    (28, 120, 5, 1, "MobileNetV3Large expanded_conv_4"),
    (14, 672, 5, 2, "MobileNetV3Large expanded_conv_12"),
    (17, 40, 3, 1, "odd size"),
]


def _model(side: int | None, C: int, k: int, stride: int, layer=None):
    """The layer over ``side x side x C`` images (None: any size); ``layer``: that layer instance (its weights)."""
    import graphc
    from graphc import layers

    inp = graphc.Input((side, side, C))
    layer = layer or layers.DepthwiseConv2D(k, strides=stride, padding="same", activation="relu")
    return graphc.Model(inp, layer(inp))


def measure_shape(side: int, C: int, k: int, stride: int, batch: int, threads: int, repeat: int,
                  free_sizes: bool = False) -> dict:
    from graphc.bench import _Runner, measure

    x = np.random.default_rng(0).random((batch, side, side, C), dtype=np.float32)
    model = _model(None if free_sizes else side, C, k, stride)
    spans = build_with(model, threads, "GRAPHC_DEPTHWISE_SPANS", "1")
    single = build_with(model, threads, "GRAPHC_DEPTHWISE_SPANS", "0")
    runners = [_Runner("spans", lambda: spans.predict(x)), _Runner("one pixel", lambda: single.predict(x))]
    y = spans.predict(x)
    np.testing.assert_allclose(y, single.predict(x), rtol=1e-5, atol=1e-5)
    if free_sizes:
        static = build_with(_model(side, C, k, stride, model.layers[-1]), threads, "GRAPHC_DEPTHWISE_SPANS", "1")
        np.testing.assert_allclose(y, static.predict(x), rtol=1e-5, atol=1e-5)
        runners.append(_Runner("static sizes", lambda: static.predict(x)))
    res = measure(runners, repeat, min_sample_s=0.02, settle_s=0.1 if threads > 1 else 0.0)
    a, b = res["spans"].median_ms, res["one pixel"].median_ms
    out_pixels = y.shape[0] * y.shape[1] * y.shape[2]
    row = {"side": side, "C": C, "k": k, "stride": stride, "batch": batch, "threads": threads, "spans_ms": a,
           "single_ms": b, "speedup": b / a, "gflops": 2 * k * k * C * out_pixels / (a * 1e6),
           "gbs": 4 * (x.size + y.size) / (a * 1e6)}
    if free_sizes:
        row["static_ms"] = res["static sizes"].median_ms
    return row


def to_markdown(machine: dict, rows: Sequence[dict], shapes: dict, free_sizes: bool = False) -> str:
    static = " ms | static sizes ms" if free_sizes else " ms"
    lines = ["# Depthwise convolutions: spans of neighbouring pixels vs one pixel at a time"
             + (", sizes free" if free_sizes else ""), "",
             machine_line(machine) + ". `python -m benchmarks.depthwise"
             + (" --free-sizes" if free_sizes else "") + "`: each DepthwiseConv2D alone "
             "('same' padding, ReLU fused)" + (" over `Input((None, None, C))`, and the same layer with its sizes "
                                               "static" if free_sizes else "")
             + ", the builds in one process, interleaved; medians in ms. GFLOP/s and "
             "GB/s (input read and output written once) of the spans' build.", "",
             f"| image | channels | kernel | stride | from | batch | threads | spans ms | one pixel{static} | speedup "
             "| GFLOP/s | GB/s |",
             "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | " + ("---: | " if free_sizes else "")
             + "---: | ---: | ---: |"]
    for r in rows:
        extra = f" {r['static_ms']:.4f} |" if free_sizes else ""
        lines.append(f"| {r['side']}x{r['side']} | {r['C']} | {r['k']}x{r['k']} | {r['stride']} | "
                     f"{shapes[(r['side'], r['C'], r['k'], r['stride'])]} | {r['batch']} | {r['threads']} | "
                     f"{r['spans_ms']:.4f} | {r['single_ms']:.4f} |{extra} {r['speedup']:.2f}x | {r['gflops']:.0f} | "
                     f"{r['gbs']:.1f} |")
    return "\n".join(lines) + "\n"


def _options(p) -> None:
    p.add_argument("--free-sizes", action="store_true",
                   help="the layers over images of any size (Input((None, None, C))), beside a static build")


def main(argv: Sequence[str] | None = None) -> int:
    return main_over_shapes(argv, __doc__.split("\n\n")[0],
                            lambda o: "depthwise-free-sizes" if o.get("free_sizes") else "depthwise", SHAPES,
                            measure_shape, to_markdown, add_options=_options)


if __name__ == "__main__":
    raise SystemExit(main())
