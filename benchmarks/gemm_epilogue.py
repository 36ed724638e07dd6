"""Convolutions: the epilogue applied to the micro-kernel's registers against the tile buffered, shape by shape.

::

    python -m benchmarks.gemm_epilogue                  # the shapes below, batch 1, 1 thread
    python -m benchmarks.gemm_epilogue --threads 1,2 --repeat 15

For each shape (1x1 convolutions of MobileNetV2 and EfficientNetB0, and first layers' 3x3 stride-2
convolutions over 3 channels: image, channels in and out, kernel, stride, the fused activation), one
process builds the layer alone twice, with ``GRAPHC_GEMM_FUSED_EPILOGUE=1`` (the default: products of
one K block store their tiles through the epilogue from the registers,
:func:`graphc.backends.llvm.kernels.gemm.store_tile_fused`) and ``=0`` (every tile written to the thread's
buffer, then read back by the epilogue's loop), checks that both give the same bits, and times them
interleaved (:func:`graphc.bench.measure`). Writes ``benchmarks/results/<date>-gemm_epilogue.md`` and
``.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.switched_builds import build_with, machine_line, main_over_shapes

# (image side, channels in, channels out, kernel, stride, activation, where the shape comes from)
SHAPES = [
    (112, 32, 16, 1, 1, "linear", "MobileNetV2 expanded_conv_project"),
    (112, 16, 96, 1, 1, "relu6", "MobileNetV2 block_1_expand"),
    (56, 96, 24, 1, 1, "linear", "MobileNetV2 block_1_project"),
    (56, 24, 144, 1, 1, "relu6", "MobileNetV2 block_2_expand"),
    (28, 32, 192, 1, 1, "relu6", "MobileNetV2 block_4_expand"),
    (14, 64, 384, 1, 1, "relu6", "MobileNetV2 block_7_expand"),
    (14, 384, 64, 1, 1, "linear", "MobileNetV2 block_7_project"),
    (112, 16, 96, 1, 1, "swish", "EfficientNetB0 block2a_expand"),
    (56, 24, 144, 1, 1, "swish", "EfficientNetB0 block2b_expand"),
    (28, 40, 240, 1, 1, "swish", "EfficientNetB0 block3b_expand"),
    (14, 80, 480, 1, 1, "swish", "EfficientNetB0 block4b_expand"),
    (17, 27, 40, 1, 1, "relu", "odd size"),
    (224, 3, 32, 3, 2, "relu6", "MobileNetV2 Conv1"),
    (224, 3, 32, 3, 2, "swish", "EfficientNetB0 stem_conv"),
    (299, 3, 32, 3, 2, "relu", "InceptionV3 conv2d"),
]


def _model(side: int, cin: int, cout: int, kernel: int, stride: int, activation: str):
    import graphc
    from graphc import layers

    inp = graphc.Input((side, side, cin))
    return graphc.Model(inp, layers.Conv2D(cout, kernel, strides=stride, padding="same", activation=activation)(inp))


def measure_shape(side: int, cin: int, cout: int, kernel: int, stride: int, activation: str, batch: int,
                  threads: int, repeat: int) -> dict:
    from graphc.bench import _Runner, measure

    x = np.random.default_rng(0).standard_normal((batch, side, side, cin)).astype(np.float32)
    model = _model(side, cin, cout, kernel, stride, activation)
    fused = build_with(model, threads, "GRAPHC_GEMM_FUSED_EPILOGUE", "1")
    buffered = build_with(model, threads, "GRAPHC_GEMM_FUSED_EPILOGUE", "0")
    y = fused.predict(x)
    assert np.array_equal(y.view(np.uint32), buffered.predict(x).view(np.uint32)), "the two builds differ"
    res = measure([_Runner("fused", lambda: fused.predict(x)), _Runner("buffered", lambda: buffered.predict(x))],
                  repeat, min_sample_s=0.02, settle_s=0.1 if threads > 1 else 0.0)
    a, b = res["fused"].median_ms, res["buffered"].median_ms
    pixels = y.shape[0] * y.shape[1] * y.shape[2]
    return {"side": side, "cin": cin, "cout": cout, "kernel": kernel, "stride": stride, "activation": activation,
            "batch": batch, "threads": threads, "fused_ms": a, "buffered_ms": b, "speedup": b / a,
            "gflops": 2 * kernel * kernel * cin * cout * pixels / (a * 1e6)}


def to_markdown(machine: dict, rows: Sequence[dict], shapes: dict) -> str:
    lines = ["# Convolutions: epilogue from the registers vs the tile buffered", "",
             machine_line(machine) + ". `python -m benchmarks.gemm_epilogue`: each Conv2D alone ('same' "
             "padding, bias and activation fused), both builds in one process, interleaved; medians in ms; GFLOP/s "
             "of the fused build.",
             "",
             "| image | in | out | kernel | activation | from | batch | threads | fused ms | buffered ms | speedup "
             "| GFLOP/s |",
             "| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        key = (r['side'], r['cin'], r['cout'], r['kernel'], r['stride'], r['activation'])
        lines.append(f"| {r['side']}x{r['side']} | {r['cin']} | {r['cout']} | {r['kernel']}x{r['kernel']} "
                     f"s{r['stride']} | {r['activation']} | {shapes[key]} | {r['batch']} | {r['threads']} | "
                     f"{r['fused_ms']:.4f} | {r['buffered_ms']:.4f} | {r['speedup']:.2f}x | {r['gflops']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    return main_over_shapes(argv, __doc__.split("\n\n")[0], "gemm_epilogue", SHAPES, measure_shape, to_markdown)


if __name__ == "__main__":
    raise SystemExit(main())
