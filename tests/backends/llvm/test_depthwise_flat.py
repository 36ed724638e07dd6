"""Depthwise convolutions over a few channels, each row's interior as one flat run of lanes
(:mod:`graphc.backends.llvm.kernels.depthwise_flat`), and depthwise convolutions on a zero-padded copy of
their input (:func:`graphc.backends.llvm.kernels.conv.pad_first`).

Which convolutions take the path (one output per channel, at most half a vector of channels, unit stride
along the row, static sizes, an interior, a small table); against the reference on odd sizes: 1-8
channels (one to eight phases of the weight patterns, runs ending in a partial vector), 3x3 / 5x5 / 1x3
windows, 'same' and 'valid' padding, dilations, a vertical stride, 1-D and 3-D windows, rows with no
interior, the fused bias and activation, 1-3 threads; and bit for bit against the general kernel's spans.
The padded copy: which convolutions take it, and their outputs against the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm.kernels import conv, depthwise_flat
from graphc.backends.reference.interpreter import run as reference_run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import assert_matches_reference, load, run_native
from tests.backends.llvm.test_conv_kernels import P1, _conv, _feeds, _geometry_tensors_of


def _geometry(x_shape, out_shape, kernel, strides=(1, 1), dilations=(1, 1), pads=P1):
    g = Graph("geometry")
    x = g.add_input("x", TensorType("float32", ("batch", *x_shape)))
    out = g.add_input("out", TensorType("float32", ("batch", *out_shape)))
    return conv.Geometry(*_geometry_tensors_of(g, x, out), kernel, strides, dilations, pads)


def test_which_convolutions_run_flat():
    assert depthwise_flat.flat_phases(_geometry((9, 9, 3), (9, 9, 3), (3, 3)), 1, 16) == 3
    assert depthwise_flat.flat_phases(_geometry((9, 9, 8), (9, 9, 8), (3, 3)), 1, 16) == 1
    assert depthwise_flat.flat_phases(_geometry((9, 9, 6), (9, 9, 6), (3, 3)), 1, 16) == 3
    assert depthwise_flat.flat_phases(_geometry((9, 9, 9), (9, 9, 9), (3, 3)), 1, 16) == 0  # over half a vector
    assert depthwise_flat.flat_phases(_geometry((9, 9, 4), (9, 9, 4), (3, 3)), 1, 8) == 1  # AVX2
    assert depthwise_flat.flat_phases(_geometry((9, 9, 5), (9, 9, 5), (3, 3)), 1, 8) == 0
    assert depthwise_flat.flat_phases(_geometry((9, 9, 3), (9, 9, 6), (3, 3)), 2, 16) == 0  # a multiplier
    assert depthwise_flat.flat_phases(_geometry((9, 9, 3), (5, 5, 3), (3, 3), (2, 2)), 1, 16) == 0
    assert depthwise_flat.flat_phases(_geometry((9, 9, 3), (5, 9, 3), (3, 3), (2, 1)), 1, 16) == 3
    assert depthwise_flat.flat_phases(_geometry((9, 2, 3), (9, 2, 3), (3, 3)), 1, 16) == 0  # no interior
    assert depthwise_flat.flat_phases(_geometry(("h", 9, 3), ("h", 9, 3), (3, 3)), 1, 16) == 0
    assert depthwise_flat.flat_phases(_geometry((9, 99, 7), (9, 99, 7), (11, 11), pads=((5, 5), (5, 5))),
                                      1, 16) == 0  # 121 taps x 7 phases: a table over 16 KB
    assert _geometry((9, 9, 3), (9, 9, 3), (3, 3)).inside_range() == (1, 8)
    assert _geometry((9, 9, 3), (7, 7, 3), (3, 3), pads=((0, 0), (0, 0))).inside_range() == (0, 7)
    assert _geometry((9, 9, 3), (5, 9, 3), (3, 3), (2, 1)).inside_range(0) == (1, 4)  # strided
    assert _geometry((9, 9, 3), (9, 9, 3), (3, 3), dilations=(1, 2), pads=((1, 1), (2, 2))).inside_range() == (2, 7)
    assert _geometry((9, 2, 3), (9, 2, 3), (3, 3)).inside_range() == (0, 0)  # no window inside


def _bias_relu(g: Graph, name: str, x_shape, kernel, rng, **attrs) -> str:
    C = x_shape[-1]
    x = g.add_input(f"{name}/x", TensorType("float32", ("batch", *x_shape)))
    w = g.add_constant(f"{name}/w", (0.3 * rng.standard_normal((*kernel, 1, C))).astype(np.float32))
    bias = g.add_constant(f"{name}/b", rng.standard_normal(C).astype(np.float32))
    return OpBuilder(g, layer=name).emit("fused_conv", x, w, bias, groups=C, has_bias=True, activation="silu",
                                         **attrs)


def _cases(rng) -> Graph:
    g = Graph("depthwise_flat")
    g.set_outputs([
        _conv(g, "c1_same", (7, 17, 1), (3, 3, 1, 1), rng, groups=1, pads=P1),
        _conv(g, "c2_valid", (6, 23, 2), (3, 3, 1, 2), rng, groups=2),
        _conv(g, "c3_same", (9, 31, 3), (3, 3, 1, 3), rng, groups=3, pads=P1),
        _conv(g, "c5_5x5", (8, 19, 5), (5, 5, 1, 5), rng, groups=5, pads=((2, 2), (2, 2))),
        _conv(g, "c7_dil2", (9, 21, 7), (3, 3, 1, 7), rng, groups=7, dilations=(2, 2), pads=((2, 2), (2, 2))),
        _conv(g, "c8_1x3", (5, 13, 8), (1, 3, 1, 8), rng, groups=8, pads=((0, 0), (1, 1))),
        _conv(g, "c3_vstride", (11, 15, 3), (3, 3, 1, 3), rng, groups=3, strides=(2, 1), pads=P1),
        # one interior pixel (the general kernel then runs no spans: its sums differ in the last place)
        _conv(g, "c3_narrow", (4, 3, 3), (3, 3, 1, 3), rng, groups=3, pads=P1),
        _conv(g, "c3_1d", (29, 3), (3, 1, 3), rng, groups=3, pads=((1, 1),)),
        _conv(g, "c2_3d", (4, 5, 11, 2), (3, 3, 3, 1, 2), rng, groups=2, pads=((1, 1),) * 3),
        _bias_relu(g, "c3_epilogue", (7, 26, 3), (3, 3), rng, pads=P1),
    ])
    return g


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_flat_rows_against_the_reference(threads):
    rng = np.random.default_rng(11)
    g = _cases(rng)
    lib = load(g)
    for batch in (1, 3):
        assert_matches_reference(g, lib, _feeds(g, batch, rng), threads=threads, label=f"batch {batch}")


def test_flat_rows_give_the_general_kernels_bits(monkeypatch, tmp_path):
    """Each output is the same FMA chain over the taps, then the bias, as the general kernel's spans (all
    but the case of one interior pixel, where the general kernel runs no spans)."""
    rng = np.random.default_rng(12)
    g = _cases(rng)
    feeds = _feeds(g, 2, rng)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "flat"))
    flat = run_native(load(g), feeds)
    monkeypatch.setattr(conv, "flat_phases", lambda geo, mult, vw: 0)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "general"))
    general = run_native(load(g), feeds)
    narrow = g.outputs.index(next(v for v in g.outputs if g.producer(v).layer == "c3_narrow"))
    for i, (a, b) in enumerate(zip(flat, general)):
        if i != narrow:
            np.testing.assert_array_equal(a, b, err_msg=g.outputs[i])
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_flat_weight_patterns_follow_new_weights():
    """The weight and bias patterns are filled once per instance, from the weights: weights set on the
    instance afterwards are the ones the next run uses."""
    rng = np.random.default_rng(14)
    g = Graph("depthwise_flat_weights")
    g.set_outputs([_bias_relu(g, "c3", (5, 19, 3), (3, 3), rng, pads=P1)])
    lib = load(g)
    feeds = _feeds(g, 2, rng)
    inst = lib.instance(1)
    try:
        names = [i.name for i in lib.inputs]
        inst.run([feeds[n] for n in names])
        for name in ("c3/w", "c3/b"):
            g.constants[name] = (rng.standard_normal(g.constants[name].shape) + 2.0).astype(np.float32)
            inst.set_weight(name, g.constants[name])
        got = inst.run([feeds[n] for n in names])[0]
    finally:
        inst.close()
    np.testing.assert_allclose(got, reference_run(g, feeds)[g.outputs[0]], rtol=1e-4, atol=1e-5)


def test_which_depthwise_convolutions_pad_their_input_first(monkeypatch):
    """5x5 windows on small maps (most windows reach into the padding) copy their input into a padded
    buffer; 3x3 windows, larger maps, strided ones and unpadded ones do not; the setting forces or refuses."""
    same5, same3 = ((2, 2), (2, 2)), P1
    assert conv.pad_first(_geometry((14, 14, 8), (14, 14, 8), (5, 5), pads=same5), same5)
    assert conv.pad_first(_geometry((7, 7, 8), (7, 7, 8), (5, 5), pads=same5), same5)
    assert conv.pad_first(_geometry((28, 28, 8), (28, 28, 8), (5, 5), pads=same5), same5)
    assert not conv.pad_first(_geometry((14, 14, 8), (14, 14, 8), (3, 3)), same3)
    assert not conv.pad_first(_geometry((112, 112, 8), (112, 112, 8), (5, 5), pads=same5), same5)
    assert not conv.pad_first(_geometry((14, 14, 8), (7, 7, 8), (5, 5), (2, 2), pads=((1, 2), (1, 2))),
                              ((1, 2), (1, 2)))
    none = ((0, 0), (0, 0))
    assert not conv.pad_first(_geometry((14, 14, 8), (10, 10, 8), (5, 5), pads=none), none)
    monkeypatch.setenv(conv.PAD_ENV, "1")
    assert conv.pad_first(_geometry((14, 14, 8), (14, 14, 8), (3, 3)), same3)
    assert not conv.pad_first(_geometry((14, 14, 8), (10, 10, 8), (5, 5), pads=none), none)
    monkeypatch.setenv(conv.PAD_ENV, "0")
    assert not conv.pad_first(_geometry((7, 7, 8), (7, 7, 8), (5, 5), pads=same5), same5)
    monkeypatch.setenv(conv.PAD_ENV, "yes")
    with pytest.raises(ValueError, match="GRAPHC_DEPTHWISE_PAD must be auto, 0 or 1, got 'yes'"):
        conv.pad_first(_geometry((7, 7, 8), (7, 7, 8), (5, 5), pads=same5), same5)


@pytest.mark.parametrize("mode", ["auto", "1"])
def test_depthwise_on_a_padded_copy_against_the_reference(mode, monkeypatch, tmp_path):
    """Padded first (by the rule, and wherever there is padding): 5x5 and 3x3 windows, uneven padding, a
    stride, dilations, channel multipliers, few and many channels, the fused epilogue, 1 and 2 threads."""
    monkeypatch.setenv(conv.PAD_ENV, mode)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(13)
    g = Graph("depthwise_padded")
    g.set_outputs([
        _conv(g, "k5_c40", (9, 11, 40), (5, 5, 1, 40), rng, groups=40, pads=((2, 2), (2, 2))),
        _conv(g, "k5_c3", (7, 7, 3), (5, 5, 1, 3), rng, groups=3, pads=((2, 2), (2, 2))),
        _conv(g, "k5_s2", (13, 13, 24), (5, 5, 1, 24), rng, groups=24, strides=(2, 2), pads=((1, 2), (1, 2))),
        _conv(g, "k3_c17", (5, 6, 17), (3, 3, 1, 17), rng, groups=17, pads=((0, 1), (1, 0))),
        _conv(g, "k3_dil2", (9, 9, 16), (3, 3, 1, 16), rng, groups=16, dilations=(2, 2), pads=((2, 2), (2, 2))),
        _conv(g, "k3_m2", (6, 5, 5), (3, 3, 1, 10), rng, groups=5, pads=P1),
        _bias_relu(g, "k5_epilogue", (7, 9, 33), (5, 5), rng, pads=((2, 2), (2, 2))),
    ])
    lib = load(g)
    for threads in (1, 2):
        assert_matches_reference(g, lib, _feeds(g, 3, rng), threads=threads, label=f"{mode}, {threads} threads")
