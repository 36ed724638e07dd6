"""The kernel gradient of dense convolutions on the packed GEMM (graphc/backends/llvm/kernels/conv_grad_gemm.py)
against the reference, at shapes that reach its edges: channel counts 1, 3, 7, 17, 40 (1 and 3 under a 3x3
kernel take the direct kernel: taps * C below one panel; the others have runs of columns across taps and
partial panels), output channels past one register tile and past one row block, strides, dilations,
padding on one side, 1-D (also of a free length) and 3-D, more pixels than one reduction block (partial
sums), and the depthwise (per-tap accumulators) and grouped kernels beside it. All cases are one graph,
compiled once, run at two sizes on 1 and 2 threads."""

from __future__ import annotations

import pytest

from tests.backends.llvm.helpers import assert_matches_reference, load
from tests.backends.llvm.test_ops import build_family, draw
from tests.backends.onnx.test_ops import Case, In, W

CASES: list[Case] = []


def grad_case(x_shape, dy_shape, kernel, *, id, **attrs):
    CASES.append(Case("conv_grad_kernel", [In(x_shape, draw="small"), In(dy_shape, draw="small"), W(*kernel)],
                      attrs, id=id))


_P1 = ((1, 1), (1, 1))
for _c in (1, 3, 7, 17, 40):
    grad_case(("batch", 9, 7, _c), ("batch", 9, 7, 5), (3, 3, _c, 5), pads=_P1, id=f"c{_c}_same")
grad_case(("batch", 8, 8, 32), ("batch", 8, 8, 13), (3, 3, 32, 13), pads=_P1, id="c32_whole_panels")
grad_case(("batch", 6, 5, 64), ("batch", 6, 5, 29), (1, 1, 64, 29), id="pointwise_c64")
grad_case(("batch", 5, 4, 7), ("batch", 5, 4, 250), (3, 3, 7, 250), pads=_P1, id="o250_two_row_blocks")
grad_case(("batch", 11, 9, 7), ("batch", 5, 4, 17), (3, 3, 7, 17), strides=(2, 2), pads=((0, 0), (0, 0)),
          id="stride2_valid")
grad_case(("batch", 10, 9, 17), ("batch", 5, 5, 12), (3, 3, 17, 12), strides=(2, 2), pads=((0, 1), (1, 1)),
          id="stride2_asymmetric_pads")
grad_case(("batch", 12, 11, 3), ("batch", 8, 9, 7), (3, 2, 3, 7), dilations=(2, 2), id="dilated_2x2")
grad_case(("batch", 9, 8, 40), ("batch", 9, 8, 24), (3, 3, 40, 24), dilations=(2, 1), pads=((2, 2), (1, 1)),
          id="dilated_padded_c40")
grad_case(("batch", 37, 17), ("batch", 37, 40), (5, 17, 40), pads=((4, 0),), id="conv1d_causal_c17")
grad_case(("batch", 41, 7), ("batch", 19, 3), (5, 7, 3), strides=(2,), id="conv1d_stride2")
grad_case(("batch", 300, 3), ("batch", 300, 1), (3, 3, 1), pads=((1, 1),), id="conv1d_o1_many_pixels")
grad_case(("batch", 20, 19, 7), ("batch", 10, 10, 33), (3, 3, 7, 33), strides=(2, 2), pads=_P1,
          id="stride2_several_pixel_blocks")
grad_case(("batch", "seq", 17), ("batch", "seq", 9), (3, 17, 9), pads=((1, 1),), id="conv1d_free_length_c17")
grad_case(("batch", 5, 4, 6, 5), ("batch", 5, 4, 6, 7), (3, 1, 3, 5, 7), pads=((1, 1), (0, 0), (1, 1)),
          id="conv3d_c5")
grad_case(("batch", 7, 6, 3), ("batch", 7, 6, 6), (3, 3, 1, 6), groups=3, pads=_P1, id="depthwise_multiplier2")
# depthwise with multiplier 1: per-tap accumulators over channel vectors (a partial last vector at 17 and 40),
# taps in groups of 16 (5x5: two groups, 7x7: four)
grad_case(("batch", 7, 6, 3), ("batch", 7, 6, 3), (3, 3, 1, 3), groups=3, pads=_P1, id="depthwise_c3")
grad_case(("batch", 9, 8, 40), ("batch", 5, 4, 40), (3, 3, 1, 40), groups=40, strides=(2, 2), pads=((1, 1), (1, 0)),
          id="depthwise_c40_stride2")
grad_case(("batch", 11, 10, 17), ("batch", 7, 10, 17), (5, 5, 1, 17), groups=17, dilations=(1, 2),
          pads=((0, 0), (4, 4)), id="depthwise_5x5_dilated_c17")
grad_case(("batch", 9, 9, 16), ("batch", 9, 9, 16), (7, 7, 1, 16), groups=16, pads=((3, 3), (3, 3)),
          id="depthwise_7x7_c16")
grad_case(("batch", 23, 7), ("batch", 23, 7), (5, 1, 7), groups=7, pads=((4, 0),), id="depthwise_conv1d_causal")
grad_case(("batch", "seq", 20), ("batch", "seq", 20), (3, 1, 20), groups=20, pads=((1, 1),),
          id="depthwise_conv1d_free_length")
grad_case(("batch", 7, 6, 8), ("batch", 7, 6, 6), (3, 3, 4, 6), groups=2, pads=_P1, id="grouped_2")


@pytest.mark.parametrize("threads,sizes", [(1, {"batch": 1, "seq": 7}), (2, {"batch": 3, "seq": 290})])
def test_conv_grad_kernel_matches_the_reference(threads, sizes, rng):
    graph, specs = build_family(CASES, "conv_grad_kernel_gemm")
    lib = load(graph)
    feeds = draw(graph, specs, sizes, rng)
    assert_matches_reference(graph, lib, feeds, threads=threads, label=f"conv_grad_kernel {sizes}")
