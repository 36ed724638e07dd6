"""Poolings done by the convolution before them (:mod:`graphc.backends.llvm.pool_fusion`,
:mod:`graphc.backends.llvm.kernels.pool_fused`).

Which poolings qualify; native results against the reference on odd sizes (images whose last rows and
columns no window covers, channels across panels and past them, 1-D and 2-D windows, max and average)
for every producer the GEMM runs: implicit GEMM and im2col convolutions (one K block and several),
separable convolutions, 1x1 convolutions, a residual epilogue; on one and two threads, batches 1 and 3 of
one build; NaNs reaching exactly the pooled values the unfused build gives them; the pooling launching no
kernel and the profile naming the fused kernel by both layers; producers on other kernels (Winograd)
leaving the pooling to its own kernel; a pooled result that is a concatenation's part; the switch.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import layers
from graphc.backends.llvm import pool_fusion
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import check_model


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))


def _model(inp, out, name):
    return graphc.Model(inp, out, name=name)


def _fused_rows(cm, x) -> list[str]:
    return [r.name for r in cm.profile(x, runs=2).rows if "+" in r.name]


def test_which_poolings_qualify():
    g = Graph("pools")
    x = g.add_input("x", TensorType("float32", ("batch", 9, 11, 8)))
    free = g.add_input("f", TensorType("float32", ("batch", "h", 11, 8)))
    w = g.add_constant("w", np.ones((3, 3, 8, 4), np.float32))
    ob = OpBuilder(g)
    conv = ob.emit("fused_conv", x, w, pads=((1, 1), (1, 1)))
    pooled = ob.emit("max_pool", conv, kernel=(2, 2), strides=(2, 2))  # qualifies
    conv2 = ob.emit("fused_conv", x, w)
    overlap = ob.emit("max_pool", conv2, kernel=(3, 3), strides=(2, 2))  # windows overlap
    conv3 = ob.emit("fused_conv", x, w)
    padded = ob.emit("avg_pool", conv3, kernel=(2, 2), strides=(2, 2), pads=((0, 1), (0, 1)))  # padding
    conv4 = ob.emit("fused_conv", x, w)
    twice = ob.emit("max_pool", conv4, kernel=(2, 2), strides=(2, 2))
    also = ob.emit("relu", conv4)  # the result read by another op
    conv5 = ob.emit("fused_conv", x, w)
    returned = ob.emit("avg_pool", conv5, kernel=(3, 1), strides=(3, 1))  # conv5 is a graph output
    conv6 = ob.emit("fused_conv", free, w)
    free_pool = ob.emit("max_pool", conv6, kernel=(2, 2), strides=(2, 2))  # a free spatial size
    relu = ob.emit("relu", x)
    not_gemm = ob.emit("max_pool", relu, kernel=(2, 2), strides=(2, 2))  # not a convolution's result
    avg = ob.emit("avg_pool", ob.emit("fused_conv", x, w), kernel=(3, 1), strides=(3, 1))
    g.set_outputs([pooled, overlap, padded, twice, also, returned, conv5, free_pool, not_gemm, avg])
    found = pool_fusion.fusable_pools(g)
    assert {v: (f.kind, f.window, f.result) for v, f in found.items()} == {
        conv: ("max", (2, 2), pooled), g.producer(avg).inputs[0]: ("avg", (3, 1), avg)}


def test_switch(monkeypatch):
    g = Graph("pools_switch")
    x = g.add_input("x", TensorType("float32", ("batch", 4, 4, 3)))
    w = g.add_constant("w", np.ones((1, 1, 3, 2), np.float32))
    ob = OpBuilder(g)
    g.set_outputs([ob.emit("max_pool", ob.emit("fused_conv", x, w), kernel=(2, 2), strides=(2, 2))])
    assert len(pool_fusion.fusable_pools(g)) == 1
    monkeypatch.setenv(pool_fusion.ENV, "0")
    assert pool_fusion.fusable_pools(g) == {}
    monkeypatch.setenv(pool_fusion.ENV, "yes")
    with pytest.raises(ValueError, match="GRAPHC_POOL_FUSION must be 0 or 1"):
        pool_fusion.fusable_pools(g)


# (layer before the pooling, pooling, input shape): odd sizes whose last rows / columns no window covers
CASES = {
    "separable_max": (lambda: layers.SeparableConv2D(17, 3, activation="relu"), lambda: layers.MaxPooling2D(2),
                      (9, 11, 5)),
    "separable_wide": (lambda: layers.SeparableConv2D(40, 3, padding="same"), lambda: layers.MaxPooling2D((3, 2)),
                       (7, 13, 8)),
    "conv_strided_avg": (lambda: layers.Conv2D(7, 3, strides=2, activation="relu"),
                         lambda: layers.AveragePooling2D((2, 3)), (17, 13, 3)),
    "conv_same_max33": (lambda: layers.Conv2D(33, 3, strides=(1, 2), padding="same"),
                        lambda: layers.MaxPooling2D(3), (11, 14, 6)),
    "pointwise_max": (lambda: layers.Conv2D(1, 1, activation="sigmoid"), lambda: layers.MaxPooling2D((1, 3)),
                      (5, 7, 9)),
    # columns of whole vectors (of 8 and of 16 lanes): the pooling has no code for a rest
    "conv_whole_max": (lambda: layers.Conv2D(48, 3, padding="same", activation="relu"),
                       lambda: layers.MaxPooling2D(2), (9, 7, 5)),
    "conv1d_max5": (lambda: layers.Conv1D(33, 5, activation="relu"), lambda: layers.MaxPooling1D(5), (41, 6)),
    "conv1d_avg": (lambda: layers.Conv1D(3, 7, dilation_rate=2), lambda: layers.AveragePooling1D(4), (37, 16)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_pooling_equals_reference(case):
    make_conv, make_pool, shape = CASES[case]
    rng = np.random.default_rng(len(case))
    inp = graphc.Input(shape)
    model = _model(inp, make_pool()(make_conv()(inp)), case)
    cm = check_model(model, shape, rng)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    assert len(_fused_rows(cm, x)) == 1, case
    assert cm.compile_stats["fused_ops"]


def test_several_k_blocks_and_residual_epilogue():
    """A 3x3 stride-2 convolution over 160 channels (K = 1440: two K blocks, partial sums through the
    strip) with a residual added in its epilogue, then 2x2 pooling; a second pooled convolution reads it."""
    rng = np.random.default_rng(3)
    inp = graphc.Input((13, 15, 160))
    skip = graphc.Input((6, 7, 24))
    y = layers.Conv2D(24, 3, strides=2)(inp)
    y = layers.ReLU()(layers.Add()([y, skip]))
    y = layers.MaxPooling2D(2)(y)
    y = layers.AveragePooling2D(2)(layers.Conv2D(12, 1, activation="tanh")(y))
    model = graphc.Model([inp, skip], y, name="pool_kblocks")
    ref = graphc.build(model, "reference")
    for t in (1, 2):
        cm = graphc.build(model, "native", threads=t)
        for n in (1, 3):
            feeds = [rng.standard_normal((n, 13, 15, 160)).astype(np.float32),
                     rng.standard_normal((n, 6, 7, 24)).astype(np.float32)]
            np.testing.assert_allclose(cm.predict(feeds), ref.predict(feeds), rtol=1e-4, atol=2e-5)
    assert _fused_rows(cm, feeds) == ["conv2d+max_pooling2d", "conv2d_1+average_pooling2d"]


def test_nans_reach_the_pooled_values_the_unfused_build_gives(monkeypatch):
    rng = np.random.default_rng(5)
    inp = graphc.Input((10, 12, 4))
    model = _model(inp, layers.MaxPooling2D(2)(layers.Conv2D(9, 3, strides=1, padding="same")(inp)), "pool_nan")
    x = rng.standard_normal((2, 10, 12, 4)).astype(np.float32)
    x[0, 3, 4, 1] = np.nan
    x[1, 9, 11, 0] = np.nan  # a corner: its window reaches one pooled pixel
    fused = graphc.build(model, "native").predict(x)
    monkeypatch.setenv(pool_fusion.ENV, "0")
    unfused = graphc.build(model, "native").predict(x)
    assert np.isnan(fused).any()
    np.testing.assert_array_equal(np.isnan(fused), np.isnan(unfused))
    np.testing.assert_allclose(fused, unfused, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_winograd_pools_its_tiles(kind, monkeypatch):
    """A 3x3 stride-1 convolution over 16 channels runs by Winograd's F(2x2, 3x3): a 2x2 pooling of it is
    done on each tile as it leaves the output transform (11x13 images: the last row and column of tiles,
    past the last whole window, are not stored), with a residual in the epilogue; 1x7 (tiles of 1x2)
    takes a (1, 2) pooling, 5x5 (tiles of 2x2, as 3x3) a 2x2 one."""
    from graphc.backends.llvm.kernels import winograd

    pooled_by_winograd = []
    real = winograd.emit_winograd

    def spy(kb, *args, **kw):
        real(kb, *args, **kw)
        pooled_by_winograd.append(kb.pool_taken)

    monkeypatch.setattr(winograd, "emit_winograd", spy)
    rng = np.random.default_rng(6)
    inp = graphc.Input((11, 13, 16))
    pool = layers.MaxPooling2D if kind == "max" else layers.AveragePooling2D
    y = layers.Conv2D(40, 3, padding="same")(inp)
    y = layers.ReLU()(layers.Add()([y, layers.Conv2D(40, 1)(inp)]))
    z = layers.Conv2D(24, (1, 7), padding="same", activation="relu")(inp)
    v = layers.Conv2D(17, 5, padding="same", activation="tanh")(inp)
    model = _model(inp, [pool(2)(y), pool((1, 2))(z), pool(2)(v)], f"pool_winograd_{kind}")
    cm = check_model(model, (11, 13, 16), rng)
    x = rng.standard_normal((1, 11, 13, 16)).astype(np.float32)
    assert len(_fused_rows(cm, x)) == 3
    assert pooled_by_winograd and all(pooled_by_winograd)


def test_other_kernels_leave_the_pooling_to_its_own():
    """Producers whose kernels do not pool keep the pooling kernel, and the results are the reference's: a
    Winograd convolution under a 3x3 window (its tiles are 2x2), a depthwise convolution."""
    rng = np.random.default_rng(9)
    inp = graphc.Input((12, 12, 16))
    a = layers.MaxPooling2D(3)(layers.Conv2D(32, 3, padding="same")(inp))
    b = layers.MaxPooling2D(2)(layers.DepthwiseConv2D(3, padding="same")(inp))
    model = _model(inp, [a, b], "pool_not_taken")
    cm = check_model(model, (12, 12, 16), rng, threads=(1,), batches=(2,))
    x = rng.standard_normal((1, 12, 12, 16)).astype(np.float32)
    rows = cm.profile(x, runs=2).rows
    assert sorted(r.op for r in rows if r.op == "max_pool") == ["max_pool", "max_pool"]
    assert not cm.compile_stats["fused_ops"]


def test_pooled_result_written_into_a_concatenation():
    """The pooled result is a concatenation's part (rows written the concatenation's width apart)."""
    rng = np.random.default_rng(7)
    inp = graphc.Input((9, 10, 6))
    a = layers.MaxPooling2D(2)(layers.Conv2D(5, 3, padding="same", activation="relu")(inp))
    b = layers.AveragePooling2D(2)(layers.SeparableConv2D(11, 3, padding="same")(inp))
    model = _model(inp, layers.Concatenate()([a, b, layers.MaxPooling2D(2)(inp)]), "pool_concat")
    cm = check_model(model, (9, 10, 6), rng)
    assert len(_fused_rows(cm, rng.standard_normal((1, 9, 10, 6)).astype(np.float32))) == 2


def test_fused_and_unfused_builds_agree_on_a_seed_model(monkeypatch):
    from graphc import examples

    model = examples.build("separable_conv_bn", seed=0)
    x = examples.inputs("separable_conv_bn", np.random.default_rng(0), 5)
    fused = graphc.build(model, "native", threads=2)
    monkeypatch.setenv(pool_fusion.ENV, "0")
    unfused = graphc.build(model, "native", threads=2)
    np.testing.assert_allclose(fused.predict(x), unfused.predict(x), rtol=1e-5, atol=1e-6)
    assert _fused_rows(fused, x) == ["separable_conv2d_1+max_pooling2d",
                                                  "separable_conv2d_3+max_pooling2d_1"]
    assert _fused_rows(unfused, x) == []


def test_kernels_shared_only_by_ops_pooling_alike():
    """Four convolutions of one type (of four inputs, so that none are merged as siblings): the first and
    third pooled the same way share kernels, the second (unpooled) and the fourth (pooled otherwise) get
    their own; all equal the reference."""
    rng = np.random.default_rng(8)
    inps = [graphc.Input((8, 10, 5)) for _ in range(4)]
    convs = [layers.Conv2D(6, 3, strides=(1, 2), activation="relu")(i) for i in inps]
    outs = [layers.MaxPooling2D(2)(convs[0]), convs[1], layers.MaxPooling2D(2)(convs[2]),
            layers.AveragePooling2D(2)(convs[3])]
    model = graphc.Model(inps, outs, name="pool_shared")
    ref = graphc.build(model, "reference")
    cm = graphc.build(model, "native", threads=2)
    x = [rng.standard_normal((3, 8, 10, 5)).astype(np.float32) for _ in range(4)]
    for got, want in zip(cm.predict(x), ref.predict(x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    assert len(_fused_rows(cm, x)) == 3


@pytest.mark.parametrize("strides", [(1, 2), (1, 1)])
def test_bf16_build_pools_correctly(strides):
    """A bf16 build's strided convolution runs the bf16 GEMM, which does not pool: the pooling keeps its
    kernel. A stride-1 3x3 runs by Winograd on bf16 products where the CPU has no AMX, which pools its
    2x2 tiles as the float32 kernel does (where the CPU has no bf16 products the build falls back to
    float32 and pools there): either way the results are the reference's within bf16's precision."""
    import warnings

    from graphc.backends.llvm.kernels.winograd import bf16_products
    from graphc.backends.llvm.target import host_target, with_precision

    rng = np.random.default_rng(10)
    inp = graphc.Input((9, 10, 24))
    model = _model(inp, layers.MaxPooling2D(2)(layers.Conv2D(32, 3, strides=strides, activation="relu")(inp)),
                   "pool_bf16")
    x = rng.standard_normal((2, 9, 10, 24)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = graphc.build(model, "native", precision="bf16")
    np.testing.assert_allclose(cm.predict(x), graphc.build(model, "reference").predict(x), rtol=5e-2, atol=5e-2)
    pooled_by_winograd = strides == (1, 1) and bf16_products(with_precision(host_target(), "bf16")[0])
    assert bool(_fused_rows(cm, x)) == (pooled_by_winograd or cm.precision != "bf16")


def test_three_spatial_axes():
    """Conv3D then MaxPooling3D / AveragePooling3D: bands of w_0 planes, windows over the other two axes."""
    rng = np.random.default_rng(11)
    inp = graphc.Input((5, 7, 6, 3))
    a = layers.MaxPooling3D((2, 3, 2))(layers.Conv3D(9, 2, activation="relu")(inp))
    b = layers.AveragePooling3D(2)(layers.Conv3D(4, (1, 3, 3), padding="same")(inp))
    cm = check_model(_model(inp, [a, b], "pool_3d"), (5, 7, 6, 3), rng)
    assert len(_fused_rows(cm, rng.standard_normal((1, 5, 7, 6, 3)).astype(np.float32))) == 2


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes(seed):
    """Random image sizes, channels, kernels, strides and windows (one convolution and its pooling), batches
    1 and 5 (runs of bands across images), one and two threads."""
    rng = np.random.default_rng(100 + seed)
    h, w = (int(v) for v in rng.integers(4, 30, 2))
    c_in, c_out = int(rng.integers(1, 20)), int(rng.choice([1, 5, 16, 31, 33, 64, 97]))
    kernel = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    strides = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    oh, ow = (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1
    window = (int(rng.integers(1, min(4, oh) + 1)), int(rng.integers(1, min(4, ow) + 1)))
    inp = graphc.Input((h, w, c_in))
    conv = layers.Conv2D(c_out, kernel, strides=strides, activation="relu")(inp)
    pool = (layers.MaxPooling2D if seed % 2 == 0 else layers.AveragePooling2D)(window)
    label = f"{h}x{w}x{c_in} -> {c_out}, kernel {kernel}, strides {strides}, window {window}"
    cm = check_model(_model(inp, pool(conv), f"pool_random_{seed}"), (h, w, c_in), rng, batches=(1, 5))
    fused = _fused_rows(cm, rng.standard_normal((1, h, w, c_in)).astype(np.float32))
    # Winograd (stride 1, a kernel it has, 8 channels or more) pools only windows of its tile
    from graphc.backends.llvm.kernels.winograd import ALGORITHMS

    winograd = strides == (1, 1) and kernel in ALGORITHMS and c_in >= 8
    tile = (ALGORITHMS[kernel][0].m, ALGORITHMS[kernel][1].m) if winograd else None
    assert len(fused) == (0 if winograd and window != tile else 1), label
