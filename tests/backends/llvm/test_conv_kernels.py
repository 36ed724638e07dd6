"""Native convolution kernels against the reference on the paths the kernels choose between.

- depthwise and separable windows: pixels whose window lies inside the input (taps at constant
  distances, no bounds checks) beside pixels whose window reaches into the padding, with
  strides, dilations, channel multipliers, C below, at and above one vector, and inputs so
  small that every window crosses the border;
- im2col GEMMs with K in one block (up to 1280) and in several (whole taps per block, or
  channel ranges of one tap), with row counts that leave partial row blocks and micro-tiles;
- GEMM row blocks on two threads (evenly sized blocks, a multiple of the claim blocks), and
  weights too large for L2 (prefetched ahead).

All cases go into one graph per group, compiled once, run at several batch sizes.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm.kernels.gemm_items import THREADS_DIM
from graphc.ir import dims
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import assert_matches_reference, load

P1 = ((1, 1), (1, 1))


def _conv(g: Graph, name: str, x_shape, w_shape, rng, **attrs) -> str:
    x = g.add_input(f"{name}/x", TensorType("float32", ("batch", *x_shape)))
    scale = 1.0 / np.sqrt(np.prod(w_shape[:-1]))  # outputs near 1, where float32 sums stay within atol
    w = g.add_constant(f"{name}/w", (scale * rng.standard_normal(w_shape)).astype(np.float32))
    return OpBuilder(g, layer=name).emit("conv", x, w, **attrs)


def _separable(g: Graph, name: str, x_shape, mult: int, n_out: int, rng, **attrs) -> str:
    C = x_shape[-1]
    x = g.add_input(f"{name}/x", TensorType("float32", ("batch", *x_shape)))
    dw = g.add_constant(f"{name}/dw", rng.standard_normal((3, 3, 1, C * mult)).astype(np.float32))
    pw = g.add_constant(f"{name}/pw", (0.3 * rng.standard_normal((C * mult, n_out))).astype(np.float32))
    bias = g.add_constant(f"{name}/b", rng.standard_normal(n_out).astype(np.float32))
    return OpBuilder(g, layer=name).emit("fused_separable_conv", x, dw, pw, bias, groups=C, has_bias=True,
                                         activation="relu", **attrs)


def _depthwise_bias_relu(g: Graph, name: str, x_shape, rng) -> str:
    """A 3x3 depthwise convolution ('same') with its bias and ReLU fused (the kernel's epilogue)."""
    C = x_shape[-1]
    x = g.add_input(f"{name}/x", TensorType("float32", ("batch", *x_shape)))
    w = g.add_constant(f"{name}/w", (0.3 * rng.standard_normal((3, 3, 1, C))).astype(np.float32))
    bias = g.add_constant(f"{name}/b", rng.standard_normal(C).astype(np.float32))
    return OpBuilder(g, layer=name).emit("fused_conv", x, w, bias, groups=C, has_bias=True, activation="relu",
                                         pads=P1)


def _feeds(g: Graph, batch: int, rng) -> dict[str, np.ndarray]:
    return {n: rng.standard_normal(g.type_of(n).concrete_shape({"batch": batch})).astype(np.float32)
            for n in g.inputs}


def _check(g: Graph, batches, rng, threads: int = 1) -> None:
    lib = load(g)
    for batch in batches:
        assert_matches_reference(g, lib, _feeds(g, batch, rng), threads=threads, label=f"batch {batch}")


def test_depthwise_and_separable_windows_inside_and_across_the_border():
    rng = np.random.default_rng(0)
    g = Graph("depthwise_windows")
    outs = [
        # C = 3 (a first layer), same padding: border ring and interior
        _separable(g, "sep_c3_same", (9, 11, 3), 1, 17, rng, pads=P1),
        # valid padding: every window inside
        _separable(g, "sep_c20_valid", (7, 8, 20), 1, 33, rng),
        # stride 2 with asymmetric padding, multiplier 2, C above one vector
        _separable(g, "sep_c17_s2_m2", (10, 9, 17), 2, 19, rng, strides=(2, 2), pads=((0, 1), (1, 0))),
        # dilation 2: the window spans 5 pixels
        _separable(g, "sep_c40_dil2", (9, 12, 40), 1, 21, rng, dilations=(2, 2), pads=((2, 2), (2, 2))),
        # 1x1 and 3x1 inputs with padding: no window inside
        _separable(g, "sep_c7_tiny", (1, 1, 7), 1, 5, rng, pads=P1),
        _separable(g, "sep_c33_row", (3, 1, 33), 1, 9, rng, pads=P1),
        # channels of whole vectors: one K block (32), three of 176 (528), three of 174 (520: a rest)
        _separable(g, "sep_c32_whole", (6, 7, 32), 1, 24, rng, pads=P1),
        _separable(g, "sep_c528_blocks", (4, 5, 528), 1, 20, rng, pads=P1),
        _separable(g, "sep_c520_rest", (5, 4, 520), 1, 11, rng, strides=(2, 2), pads=P1),
        # plain depthwise (groups == C), multipliers 1 and 3
        _conv(g, "dw_c37", (8, 7, 37), (3, 3, 1, 37), rng, groups=37, pads=P1),
        _conv(g, "dw_c5_m3_s2", (7, 6, 5), (3, 3, 1, 15), rng, groups=5, strides=(2, 2), pads=P1),
    ]
    g.set_outputs(outs)
    _check(g, (1, 3), rng)


def test_im2col_k_in_one_block_and_in_several():
    rng = np.random.default_rng(1)
    g = Graph("im2col_blocks")
    outs = [
        # K = 1152 (3x3 over 128): one block, tiles of fewer rows; 13x11 pixels: partial tiles;
        # 35 outputs (the default micro-tile), 70 and 130 (wider tiles with a partial panel)
        _conv(g, "k1152", (13, 11, 128), (3, 3, 128, 35), rng, pads=P1),
        _conv(g, "k1152_n70", (13, 11, 128), (3, 3, 128, 70), rng, pads=P1),
        _conv(g, "k288_n130", (7, 9, 32), (3, 3, 32, 130), rng, strides=(1, 2), pads=P1),
        # K = 1440 (3x3 over 160): nine blocks of one tap, partial sums through C
        _conv(g, "k1440_taps", (6, 7, 160), (3, 3, 160, 20), rng, pads=P1),
        # K = 2 x 2 x 300: channel ranges of one tap per block, stride 2
        _conv(g, "k1200_c300", (5, 6, 300), (2, 2, 300, 18), rng, strides=(2, 2), pads=((0, 1), (0, 0))),
        # K = 3x3x3 (a first layer): one block filled tap by tap
        _conv(g, "k27_c3", (17, 9, 3), (3, 3, 3, 16), rng, strides=(2, 2), pads=P1),
    ]
    g.set_outputs(outs)
    _check(g, (1, 2), rng)


@pytest.mark.parametrize("threads", [1, 3])
def test_im2col_rows_of_taps_over_a_few_channels(threads):
    """A first layer's tile rows filled by kernel rows (``kw * C`` consecutive floats, one or two vectors)
    where a row of taps lies inside the input, tap by tap where it reaches into the padding: 'same' and
    explicit padding on odd sizes, strides, a 7-wide kernel, a kernel one tap wide, a dilated row (tap by
    tap), 1-D and 3-D windows."""
    rng = np.random.default_rng(3)
    g = Graph("im2col_small_rows")
    g.set_outputs([
        _conv(g, "stem_3x3_s2", (23, 19, 3), (3, 3, 3, 32), rng, strides=(2, 2), pads=((0, 1), (0, 1))),
        _conv(g, "stem_7x7_s2", (21, 17, 3), (7, 7, 3, 20), rng, strides=(2, 2), pads=((3, 3), (3, 3))),
        _conv(g, "k5x1_c4", (13, 9, 4), (5, 1, 4, 12), rng, pads=((2, 2), (0, 0))),
        _conv(g, "dil2_c2", (11, 15, 2), (3, 3, 2, 9), rng, dilations=(2, 2), pads=((2, 2), (2, 2))),
        _conv(g, "k6_c8_1d", (29, 8), (6, 8, 17), rng, pads=((2, 3),)),
        _conv(g, "k3_c1_3d", (5, 7, 9, 1), (3, 3, 3, 1, 6), rng, pads=((1, 1),) * 3),
    ])
    _check(g, (1, 2), rng, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_row_blocks_over_threads(threads):
    """Row counts 1, 7*9, 17*17 and 32*32 per image (below one micro-tile, a few, many blocks)."""
    rng = np.random.default_rng(2)
    g = Graph("row_blocks")
    outs = [
        _conv(g, "px1", (1, 1, 24), (1, 1, 24, 40), rng),
        _conv(g, "px63", (7, 9, 16), (3, 3, 16, 48), rng, pads=P1),
        _conv(g, "px289", (17, 17, 8), (3, 3, 8, 64), rng, pads=P1),
        _conv(g, "px1024", (32, 32, 4), (1, 1, 4, 33), rng),
        # weights above 1 MiB: prefetched a panel ahead, no extra row blocks
        _conv(g, "big_weights", (5, 6, 512), (1, 1, 512, 520), rng),
        _conv(g, "big_weights_im2col", (9, 9, 120), (3, 3, 120, 300), rng, pads=P1),
    ]
    g.set_outputs(outs)
    _check(g, (1, 3), rng, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_depthwise_spans_of_neighbouring_pixels(threads):
    """Spans of up to 8 pixels of one row computed together (each weight and input vector loaded once
    for all of them): rows whose width is not a multiple of the span, spans stopped by the padding,
    by the row's end and by the end of a thread's share of pixels, strides, dilations, 5x5 and 1-D
    and 3-D windows, channels below and above one vector, the fused epilogue, and separable
    convolutions whose depthwise tile rows start anywhere in a row."""
    rng = np.random.default_rng(7)
    g = Graph("depthwise_spans")
    outs = [
        _conv(g, "dw_s1_same", (9, 23, 35), (3, 3, 1, 35), rng, groups=35, pads=P1),
        _conv(g, "dw_5x5_s2", (11, 29, 16), (5, 5, 1, 16), rng, groups=16, strides=(2, 2),
              pads=((1, 2), (1, 2))),
        _conv(g, "dw_dil2_valid", (8, 21, 7), (3, 3, 1, 7), rng, groups=7, dilations=(2, 2)),
        _conv(g, "dw_1d", (37, 17), (3, 1, 17), rng, groups=17, pads=((1, 1),)),
        _conv(g, "dw_3d", (4, 5, 19, 3), (3, 3, 3, 1, 3), rng, groups=3, pads=((1, 1),) * 3),
        _conv(g, "dw_wide_m2", (5, 19, 6), (3, 3, 1, 12), rng, groups=6, pads=P1),
        _separable(g, "sep_spans", (13, 20, 48), 1, 40, rng, pads=P1),
        _separable(g, "sep_spans_s2", (15, 31, 9), 1, 24, rng, strides=(2, 2)),
    ]
    outs.append(_depthwise_bias_relu(g, "dw_epi", (6, 17, 20), rng))
    g.set_outputs(outs)
    _check(g, (1, 3), rng, threads=threads)


def test_depthwise_rows_split_into_channel_chunks(monkeypatch, tmp_path):
    """Rows of output pixels are work items, split into chunks of whole channel vectors where an image
    has fewer rows than 4 per thread: chunks of a vector and a tail, or of whole vectors only, 5x5 and
    strided windows, a 1-D row, the bias taken at the chunk's channels; each equals the reference on 1, 2
    and 3 threads, and every thread count gives the same bits (a row's spans are never cut by a thread's
    share);
    ``GRAPHC_DEPTHWISE_ITEMS=pixels`` (one item per pixel, for measuring) equals the reference too, and the
    same bits where its spans are cut (a pixel alone sums its window as a span does, its rows of taps in
    the padding adding 0 * w); another value is refused."""
    from graphc.backends.llvm.kernels import conv
    from tests.backends.llvm.helpers import run_native

    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(conv.DEPTHWISE_ITEMS_ENV, raising=False)
    rng = np.random.default_rng(11)
    g = Graph("depthwise_chunks")
    outs = [
        _conv(g, "dw_5x7", (5, 7, 40), (3, 3, 1, 40), rng, groups=40, pads=P1),
        _conv(g, "dw_7x7", (7, 7, 200), (3, 3, 1, 200), rng, groups=200, pads=P1),
        _conv(g, "dw_5x5_k", (7, 7, 72), (5, 5, 1, 72), rng, groups=72, pads=((2, 2), (2, 2))),
        _conv(g, "dw_s2", (3, 11, 33), (3, 3, 1, 33), rng, groups=33, strides=(2, 2), pads=P1),
        _conv(g, "dw_1d", (9, 70), (3, 1, 70), rng, groups=70, pads=((1, 1),)),
        # one image of 45 pixels: pixel items on 2 and 3 threads end inside its top and bottom rows
        _conv(g, "dw_cut_rows", (5, 9, 200), (3, 3, 1, 200), rng, groups=200, pads=P1),
        # channels of whole vectors (of 8 and of 16 lanes): no code for a rest of the channels
        _conv(g, "dw_whole_5x5", (7, 7, 96), (5, 5, 1, 96), rng, groups=96, pads=((2, 2), (2, 2))),
        _conv(g, "dw_whole_s2", (9, 13, 48), (3, 3, 1, 48), rng, groups=48, strides=(2, 2), pads=P1),
    ]
    outs.append(_depthwise_bias_relu(g, "dw_epi", (3, 9, 52), rng))
    g.set_outputs(outs)
    geo = conv.Geometry(*_geometry_tensors_of(g, "dw_7x7/x", outs[1]), (3, 3), (1, 1), (1, 1), P1)
    chunks = conv.depthwise_chunks(geo, 1, 200, 16, 32)  # 7 rows, 13 vectors of channels
    assert [dims.evaluate(chunks, {THREADS_DIM: t}) for t in (1, 2, 3, 8, 64)] == [1, 2, 2, 5, 13]
    assert conv.depthwise_chunks(geo, 2, 400, 16, 32) is None  # a channel multiplier: one pixel at a time
    for threads in (1, 2, 3):
        _check(g, (1, 3), rng, threads=threads)
    lib = load(g)
    feeds = _feeds(g, 2, rng)
    one = run_native(lib, feeds, 1)
    for threads in (2, 3):
        for a, b in zip(one, run_native(lib, feeds, threads)):
            assert a.tobytes() == b.tobytes(), f"{threads} threads changed the bits"
    monkeypatch.setenv(conv.DEPTHWISE_ITEMS_ENV, "pixels")
    assert conv.depthwise_chunks(geo, 1, 200, 16, 32) is None
    _check(g, (2,), rng, threads=2)
    pixels = load(g)
    feeds = _feeds(g, 1, rng)
    one = run_native(lib, feeds, 1)
    for threads in (1, 2, 3):  # spans cut where a thread's pixels end, on rows crossing the padding too
        for a, b in zip(one, run_native(pixels, feeds, threads)):
            assert a.tobytes() == b.tobytes(), f"pixel items on {threads} threads changed the bits"
    monkeypatch.setenv(conv.DEPTHWISE_ITEMS_ENV, "rows")
    with pytest.raises(ValueError, match="GRAPHC_DEPTHWISE_ITEMS must be unset or pixels, got 'rows'"):
        load(g)


def test_depthwise_spans_switched_off_and_a_refused_setting(monkeypatch, tmp_path):
    """``GRAPHC_DEPTHWISE_SPANS=0`` (one pixel at a time, for measuring the spans) gives the same outputs as
    the default build; a value other than 0 or 1 is refused, naming the variable."""
    from graphc.backends.llvm.kernels import conv
    from tests.backends.llvm.helpers import run_native

    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(8)
    g = Graph("depthwise_spans_off")
    g.set_outputs([_conv(g, "dw", (6, 19, 21), (3, 3, 1, 21), rng, groups=21, pads=P1)])
    feeds = _feeds(g, 2, rng)
    geo = conv.Geometry(*_geometry_tensors(g), (3, 3), (1, 1), (1, 1), P1)
    assert conv.span_pixels(geo, 1, 32) == (8,)  # an interior of 17: spans of 8, the last pixel alone
    with_spans = run_native(load(g), feeds)[0]
    monkeypatch.setenv(conv.SPANS_ENV, "0")
    assert conv.span_pixels(geo, 1, 32) == (1,)
    np.testing.assert_allclose(run_native(load(g), feeds)[0], with_spans, rtol=1e-6, atol=1e-6)
    monkeypatch.setenv(conv.SPANS_ENV, "yes")
    with pytest.raises(ValueError, match="GRAPHC_DEPTHWISE_SPANS must be 0 or 1, got 'yes'"):
        load(g)


def _geometry_tensors(g: Graph):
    """Stand-ins for the (x, out) tensors of the graph's one convolution, as Geometry reads them."""
    (x,) = g.inputs
    return _geometry_tensors_of(g, x, g.outputs[0])


def _geometry_tensors_of(g: Graph, x: str, out: str):
    """Stand-ins for the tensors ``x`` and ``out`` of a convolution, as Geometry reads them."""
    from types import SimpleNamespace

    shape, out_shape = g.type_of(x).shape, g.type_of(out).shape
    return SimpleNamespace(rank=len(shape), shape=shape), SimpleNamespace(rank=len(out_shape), shape=out_shape)


def _free_and_static(layer, C: int, nsp: int = 2):
    """(optimized graph over free spatial sizes, size -> optimized graph over that static size) of one layer
    (its weights shared)."""
    import graphc
    from graphc import Input, Model
    from graphc.passes import optimize

    def graph(shape):
        x = Input(shape)
        return optimize(graphc.lower(Model(x, layer(x))), 2)

    return graph((None,) * nsp + (C,)), lambda size: graph(tuple(size) + (C,))


@pytest.mark.parametrize("case", [
    "k3_s1_same", "k3_s2_same", "k5_s1_same", "k5_s2_same", "k3_s1_valid", "k5_s2_valid", "k3_dil2_same",
    "k5_c19_same", "separable_k3_same", "separable_k5_s2_same", "depthwise_1d_k5_same"])
def test_depthwise_spans_over_free_spatial_sizes(case):
    """A depthwise convolution over images of any size (``Input((None, None, C))``, as MobileNetV3's) runs
    spans of 8, 4, (3) and 2 pixels whose rows of taps sit at offsets computed at run time, and windows of 5
    or more over a zero-padded copy of sizes computed at run time (Keras 'same' padding with stride 2: the
    padding itself an expression of the size): at every size (1 x 1 to 17 x 23, rows too short for any
    span) and on 1, 2 and 3 threads the outputs equal the reference and those of a build whose sizes are
    static; for 3x3 windows bit for bit (each pixel sums its window in one chain, taps in order, whichever
    span computes it; a padded copy, or a separable convolution's GEMM tiled for another row count, sums
    in another order)."""
    from graphc import layers
    from graphc.backends.llvm.kernels import conv
    from tests.backends.llvm.helpers import run_native

    k = 5 if "k5" in case else 3
    C = 19 if "c19" in case else 40
    strides = 2 if "_s2" in case else 1
    padding = "valid" if "valid" in case else "same"
    dil = 2 if "dil2" in case else 1
    if case.startswith("separable"):
        def layer_of():
            return layers.SeparableConv2D(24, k, strides=strides, padding=padding, activation="relu")
    elif case.startswith("depthwise_1d"):
        def layer_of():
            return layers.DepthwiseConv1D(k, padding=padding, activation="relu")
    else:
        def layer_of():
            return layers.DepthwiseConv2D(k, strides=strides, padding=padding, dilation_rate=dil, activation="relu")
    nsp = 1 if "1d" in case else 2
    free, static = _free_and_static(layer_of(), C, nsp)
    conv_op = next(op for op in free.ops() if op.type in ("fused_conv", "fused_separable_conv", "conv"))
    assert any(not isinstance(d, int) for d in free.type_of(conv_op.inputs[0]).shape[1:-1])
    lib = load(free)
    rng = np.random.default_rng(3)
    sizes = [(1, 1), (3, 2), (7, 7), (5, 9), (14, 14), (17, 23)] if nsp == 2 else [(1,), (4,), (9,), (31,)]
    smallest = (k - 1) * dil + 1 if padding == "valid" else 1
    for size in sizes:
        if min(size) < smallest:
            continue
        feeds = {free.inputs[0]: rng.standard_normal((2, *size, C)).astype(np.float32)}
        for threads in (1, 2, 3):
            assert_matches_reference(free, lib, feeds, threads=threads, label=f"{case} {size} {threads} threads")
        got = run_native(lib, feeds, 2)
        fixed = static(size)
        want = run_native(load(fixed), {fixed.inputs[0]: feeds[free.inputs[0]]}, 2)
        for a, b in zip(got, want):
            if k == 3 and not case.startswith("separable"):
                assert a.tobytes() == b.tobytes(), f"{case} {size}: free sizes changed the bits"
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{case} {size}")
    if nsp == 2 and not case.startswith("separable"):
        tensors = _geometry_tensors_of(free, conv_op.inputs[0], conv_op.outputs[0])
        g = conv.Geometry(*tensors, (k, k), (strides,) * 2, (dil,) * 2, P1)
        assert conv.span_pixels(g, 1, 32) == (8, 4, 2)  # rows of taps in the padding: no span of 3
        assert conv.pad_first(g, P1) == (k >= 5)
        g = conv.Geometry(*tensors, (k, k), (strides,) * 2, (dil,) * 2, ((0, 0), (1, 1)))
        assert conv.span_pixels(g, 1, 32) == (8, 4, 3, 2) and conv.span_pixels(g, 1, 16) == (4, 3, 2)


@pytest.mark.parametrize("case", ["c3_k3_s2_same", "c3_k7_s2_same", "c5_k3_s1_valid", "c4_k3_dil2_same",
                                  "c40_k3_s1_same", "c300_k3_s1_same"])
def test_im2col_tiles_read_in_place_over_free_spatial_sizes(case):
    """A convolution over images of any size reads its im2col tiles in place (the runs' offsets from the
    window's corner computed once, in the kernel's entry, from the run-time sizes) as with static sizes:
    runs of a kernel row's taps (few channels) and of whole taps, K in one block or several (300 channels:
    blocks that split a tap, copied); the outputs equal the reference at every size and on 1 and 2 threads,
    and those of a build with the sizes static."""
    from graphc import layers
    from tests.backends.llvm.helpers import run_native

    C, k = (int(p[1:]) for p in case.split("_")[:2])
    strides = 2 if "_s2" in case else 1
    dil = 2 if "dil2" in case else 1
    padding = "valid" if "valid" in case else "same"
    free, static = _free_and_static(
        layers.Conv2D(17, k, strides=strides, padding=padding, dilation_rate=dil, activation="relu"), C)
    from graphc.backends.llvm.kernels import conv

    op = next(op for op in free.ops() if op.type in ("conv", "fused_conv"))
    pads = op.attrs.get("pads") or ((0, 0), (0, 0))
    geo = conv.Geometry(*_geometry_tensors_of(free, op.inputs[0], op.outputs[0]), (k, k), (strides,) * 2,
                        (dil,) * 2, pads)
    source = conv.Im2colA(None, geo, 16)
    if C == 300:  # K blocks of neither whole taps nor whole channel ranges: copied, as with static sizes
        assert source.direct_stride(12) is None
    else:  # tiles read in place, not copied, at offsets known at run time
        assert source.direct_stride(12) == C * strides
        assert any(not isinstance(o, int) for o in source._runs(C * k * k)[2])
    lib = load(free)
    rng = np.random.default_rng(5)
    for size in [(1, 1), (7, 7), (9, 13), (17, 23)]:
        if padding == "valid" and min(size) < k:
            continue
        feeds = {free.inputs[0]: rng.standard_normal((2, *size, C)).astype(np.float32)}
        for threads in (1, 2):
            assert_matches_reference(free, lib, feeds, threads=threads, label=f"{case} {size} {threads} threads")
        fixed = static(size)
        want = run_native(load(fixed), {fixed.inputs[0]: feeds[free.inputs[0]]}, 2)
        for a, b in zip(run_native(lib, feeds, 2), want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{case} {size}")
