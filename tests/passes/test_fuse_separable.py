"""The pointwise half of a separable convolution fused behind its depthwise half."""

from __future__ import annotations

import pytest

from graphc import Input, Sequential, layers
from graphc.api import lower
from tests.passes.models import randomize_biases
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph


@pytest.mark.parametrize("channels,filters,multiplier", [(8, 1, 1), (3, 7, 2), (17, 4, 1)])
def test_separable_conv_becomes_one_op(channels, filters, multiplier, rng):
    model = Sequential([Input((7, 6, channels)),
                        layers.SeparableConv2D(filters, 3, depth_multiplier=multiplier, strides=2, padding="same")])
    randomize_biases(model, rng)
    g = lower(model)
    out, report = apply(g, "constant_fold", "conv1x1_to_matmul", "fuse_separable_conv", "dce")
    e, eb, (ex,) = new_graph((g.inputs[0], ("batch", 7, 6, channels)))
    conv = next(op for op in g.ops() if op.type == "conv")
    y = eb.fused_separable_conv(ex, const(eb, rng, (3, 3, 1, channels * multiplier)),
                                const(eb, rng, (channels * multiplier, filters)), strides=conv.attrs["strides"],
                                pads=conv.attrs["pads"], dilations=conv.attrs["dilations"], groups=channels)
    e.set_outputs([eb.bias_add(y, const(eb, rng, (filters,)))])
    assert_same_structure(out, e)
    assert report.events()["fuse_separable_conv: depthwise conv + pointwise matmul"] == 1
    assert_equivalent(g, out, rng)


@pytest.mark.parametrize("channels", [1, 3, 7])
def test_a_depthwise_conv_of_a_few_channels_stays_apart(channels, rng):
    """Under 8 channels, one output each, the depthwise kernel's flat rows beat the fused kernel's fill."""
    model = Sequential([Input((9, 11, channels)), layers.SeparableConv2D(5, 3, padding="same")])
    randomize_biases(model, rng)
    g = lower(model)
    out, report = apply(g, "constant_fold", "conv1x1_to_matmul", "fuse_separable_conv", "dce")
    assert not report.passes["fuse_separable_conv"].changed
    assert [op.type for op in out.ops() if op.type in ("conv", "matmul")] == ["conv", "matmul"]
    assert_equivalent(g, out, rng)


def test_a_depthwise_result_read_twice_is_not_fused(rng):
    g, b, (x,) = new_graph(("x", ("batch", 5, 5, 3)))
    d = b.conv(x, const(b, rng, (3, 3, 1, 3)), groups=3)
    g.set_outputs([b.matmul(d, const(b, rng, (3, 4))), d])
    out, report = apply(g, "fuse_separable_conv")
    assert not report.passes["fuse_separable_conv"].changed


def test_a_regular_conv_before_a_matmul_is_not_fused(rng):
    g, b, (x,) = new_graph(("x", ("batch", 5, 5, 3)))
    g.set_outputs([b.matmul(b.conv(x, const(b, rng, (3, 3, 3, 3))), const(b, rng, (3, 4)))])
    out, report = apply(g, "fuse_separable_conv")
    assert not report.passes["fuse_separable_conv"].changed
