"""Stride-1 convolutions by Winograd (3x3, 5x5, 1x7, 7x1, 1x3, 3x1 kernels) against the implicit GEMM, shape by shape.

::

    python -m benchmarks.conv_winograd                      # the shapes below, batch 1 and 32, 1 thread
    python -m benchmarks.conv_winograd --batch 1 --threads 1,2 --repeat 15
    python -m benchmarks.conv_winograd --stack 4 --match streamed --batch 1 --threads 1,2

For each shape (image, channels in -> out, 'same' padding, bias and ReLU fused), one process builds the
convolution alone twice, ``GRAPHC_CONV_WINOGRAD=force`` and ``=0`` (the build cache keys them apart), and
times both interleaved (:func:`graphc.bench.measure`). The last column says what a build picks by
default on this machine (:func:`graphc.backends.llvm.kernels.winograd.winograd_applies`): the table is
the evidence for that rule. Alone, a layer's weights stay in the caches between calls; inside a model
at batch 1 they come from memory, which is where the rule's L2 limit matters (see the module).
``--stack N`` builds N such convolutions in a row instead (the first C -> K, the others K -> K), each
with its own weights, so that every layer's come from beyond L2 at every call, as in a model: the
evidence for the rule where the transformed weights stream. Writes
``benchmarks/results/<date>-conv_winograd.md`` (``-conv_winograd-stack.md`` with ``--stack``) and ``.json``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from benchmarks.switched_builds import build_with, machine_line, main_over_shapes

# (image side, channels in, channels out, kernel, where the shape comes from)
SHAPES = [
    (32, 64, 64, "3x3", "residual seed model"),
    (32, 64, 128, "3x3", "residual seed model"),
    (28, 128, 128, "3x3", "inception seed model; ResNet50 conv3"),
    (56, 64, 64, "3x3", "ResNet50 conv2"),
    (14, 256, 256, "3x3", "ResNet50 conv4"),
    (7, 512, 512, "3x3", "ResNet50 conv5, streamed"),
    (35, 64, 96, "3x3", "InceptionV3 mixed"),
    (147, 32, 64, "3x3", "InceptionV3 stem"),
    (17, 48, 48, "3x3", "odd size"),
    (9, 16, 24, "3x3", "few channels"),
    (64, 16, 16, "3x3", "one vector of outputs"),
    (32, 8, 3, "3x3", "few channels"),
    (32, 3, 32, "3x3", "an image's channels"),
    (17, 128, 128, "1x7", "InceptionV3 mixed4"),
    (17, 128, 192, "7x1", "InceptionV3 mixed4"),
    (17, 160, 160, "7x1", "InceptionV3 mixed5"),
    (17, 192, 192, "1x7", "InceptionV3 mixed7"),
    (8, 384, 384, "1x3", "InceptionV3 mixed9"),
    (8, 448, 384, "3x1", "InceptionV3 mixed9's 3x1 size, over 448"),
    (35, 48, 64, "5x5", "InceptionV3 mixed0-2"),
    (32, 32, 64, "5x5", "a GoogLeNet-style 5x5 branch"),
    (14, 128, 128, "5x5", "5x5 over more channels"),
    (32, 64, 64, "1x3", "one axis, few channels"),
    (13, 16, 24, "7x1", "one axis, few channels"),
    # transformed weights beyond a quarter of L3 (AMD Zen's rule: streamed from memory), or a few tiles
    (28, 512, 512, "3x3", "VGG16 block4, streamed"),
    (14, 512, 512, "3x3", "VGG16 block5, streamed"),
    (8, 448, 384, "3x3", "InceptionV3 mixed9, streamed"),
    (7, 256, 256, "3x3", "two blocks, streamed"),
    (14, 256, 256, "5x5", "5x5 over 256, streamed"),
    (7, 512, 512, "5x5", "5x5 at 7x7, streamed"),
    (17, 768, 768, "1x7", "1x7 over 768, streamed"),
]


def _kernel(kernel: str) -> tuple[int, int]:
    kh, kw = kernel.split("x")
    return int(kh), int(kw)


def _model(side: int, C: int, K: int, kernel: str = "3x3", stack: int = 1):
    import graphc
    from graphc import layers

    inp = graphc.Input((side, side, C))
    x = inp
    for _ in range(stack):
        x = layers.Conv2D(K, _kernel(kernel), padding="same", activation="relu")(x)
    return graphc.Model(inp, x)


@functools.cache
def _picked(side: int, C: int, K: int, kernel: str) -> bool:
    """Whether a default build of this shape runs Winograd here (once per shape: every batch and thread
    count of a row gets the same answer)."""
    from graphc.backends.llvm.kernels import winograd

    picked: list = []
    real = winograd.emit_winograd
    winograd.emit_winograd = lambda *a, **kw: (picked.append(True), real(*a, **kw))[1]
    try:
        import graphc

        graphc.build(_model(side, C, K, kernel), "native", threads=1)
    finally:
        winograd.emit_winograd = real
    return bool(picked)


def _picked_in_stack(side: int, C: int, K: int, kernel: str, stack: int) -> str:
    """What a default build runs the stack's convolutions by: the first's shape (C -> K) and, in a stack,
    the others' (K -> K)."""
    first = _picked(side, C, K, kernel)
    rest = first if stack == 1 or C == K else _picked(side, K, K, kernel)
    if first == rest:
        return "Winograd" if first else "implicit GEMM"
    return "Winograd for the first" if first else "Winograd after the first"


def measure_shape(side: int, C: int, K: int, kernel: str, batch: int, threads: int, repeat: int,
                  stack: int = 1) -> dict:
    from graphc.bench import _Runner, measure

    x = np.random.default_rng(0).random((batch, side, side, C), dtype=np.float32)
    model = _model(side, C, K, kernel, stack)
    wino = build_with(model, threads, "GRAPHC_CONV_WINOGRAD", "force")
    direct = build_with(model, threads, "GRAPHC_CONV_WINOGRAD", "0")
    np.testing.assert_allclose(wino.predict(x), direct.predict(x), rtol=1e-4, atol=1e-4)
    res = measure([_Runner("winograd", lambda: wino.predict(x)), _Runner("implicit GEMM", lambda: direct.predict(x))],
                  repeat, min_sample_s=0.02, settle_s=0.1 if threads > 1 else 0.0)
    w, d = res["winograd"].median_ms, res["implicit GEMM"].median_ms
    taps = math.prod(_kernel(kernel))
    products = C * K + (stack - 1) * K * K
    return {"side": side, "C": C, "K": K, "kernel": kernel, "batch": batch, "threads": threads, "stack": stack,
            "winograd_ms": w, "direct_ms": d, "speedup": d / w,
            "gflops_direct_equivalent": 2 * taps * products * side * side * batch / (w * 1e6),
            "picked": _picked_in_stack(side, C, K, kernel, stack)}


def to_markdown(machine: dict, rows: Sequence[dict], shapes: dict, stack: int = 1) -> str:
    what = ("each convolution alone" if stack == 1 else
            f"{stack} convolutions in a row, each with its own weights (`--stack {stack}`; the first C -> K, the "
            "others K -> K; times for all of them)")
    lines = ["# Stride-1 convolutions: Winograd (F(2x2, 3x3); 5x5 as F(2, 3) + F(2, 2) along both axes; along one "
             "axis F(2, 3) + F(2, 4) for 7 taps, F(2, 3) for 3) vs the implicit GEMM", "",
             machine_line(machine) + f". `python -m benchmarks.conv_winograd`: {what} "
             "('same' padding, bias + ReLU fused), both builds in one process, interleaved; medians in ms. "
             "GFLOP/s counts the direct convolution's FLOPs. 'picked': what a default build runs here.", "",
             "| image | kernel | C -> K | from | batch | threads | Winograd ms | implicit GEMM ms | speedup | GFLOP/s "
             "(direct-equivalent) | picked |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        kernel = r.get("kernel", "3x3")
        lines.append(f"| {r['side']}x{r['side']} | {kernel} | {r['C']} -> {r['K']} "
                     f"| {shapes[(r['side'], r['C'], r['K'], kernel)]} "
                     f"| {r['batch']} | {r['threads']} | {r['winograd_ms']:.3f} | {r['direct_ms']:.3f} "
                     f"| {r['speedup']:.2f}x | {r['gflops_direct_equivalent']:.0f} | "
                     f"{r['picked']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    def too_large(shape, batch):  # the 147x147 stem at batch 32: 180 MB a call
        return batch * shape[0] ** 2 * shape[1] > 32 * 56 * 56 * 64

    def add_options(p):
        p.add_argument("--stack", type=int, default=1, help="convolutions in a row, each with its own weights")

    def name(options):
        return "conv_winograd" if options["stack"] == 1 else "conv_winograd-stack"

    return main_over_shapes(argv, __doc__.split("\n\n")[0], name, SHAPES, measure_shape, to_markdown, batch="1,32",
                            skip=too_large, add_options=add_options)


if __name__ == "__main__":
    raise SystemExit(main())
