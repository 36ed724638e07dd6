"""Folding chains of linear maps (1x1 convs, dense layers, scale_shift) into one."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Sequential, layers
from graphc.api import lower
from tests.passes.models import randomize_biases, randomize_bn
from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph


def test_two_dense_layers_without_activation_fold(rng):
    model = Sequential([Input((7,)), layers.Dense(3), layers.Dense(5, activation="relu")])
    randomize_biases(model, rng)
    g = lower(model)
    out, report = apply(g, "fold_linear_chains", "dce")
    e, eb, (ex,) = new_graph((g.inputs[0], ("batch", 7)))
    e.set_outputs([eb.relu(eb.bias_add(eb.matmul(ex, const(eb, rng, (7, 5))), const(eb, rng, (5,))))])
    assert_same_structure(out, e)
    assert report.events()["fold_linear_chains: matmul chain folded"] == 1
    assert_equivalent(g, out, rng)


def test_a_chain_of_1x1_convs_folds_after_the_matmul_rewrite(rng):
    model = Sequential([Input((5, 7, 3)), layers.Conv2D(4, 1), layers.Conv2D(6, 1, use_bias=False),
                        layers.Conv2D(2, 1, strides=2, activation="relu")])
    randomize_biases(model, rng)
    g = lower(model)
    out, _ = apply(g, "conv1x1_to_matmul", "fold_linear_chains", "fold_linear_chains", "dce")
    assert out.op_counts() == {"bias_add": 1, "matmul": 1, "relu": 1, "slice": 2}
    assert_equivalent(g, out, rng)


def test_a_bottleneck_is_not_folded_unless_aggressive(rng):
    model = Sequential([Input((17,)), layers.Dense(2), layers.Dense(17)])
    g = lower(model)
    out, report = apply(g, "fold_linear_chains")
    assert out.op_counts()["matmul"] == 2 and not report.passes["fold_linear_chains"].changed
    out, _ = apply(g, "fold_linear_chains_aggressive", "dce")
    assert out.op_counts()["matmul"] == 1
    assert_equivalent(g, out, rng)


def test_scale_shift_folds_into_the_next_dense(rng):
    model = Sequential([Input((7,)), layers.Dense(5, activation="relu"), layers.BatchNormalization(),
                        layers.Dense(3)])
    randomize_bn(model, rng)
    g = lower(model)
    out, report = apply(g, "fold_batchnorm", "fold_linear_chains", "dce")
    assert out.op_counts() == {"bias_add": 2, "matmul": 2, "relu": 1}
    assert report.events()["fold_linear_chains: scale_shift folded into matmul"] == 1
    assert_equivalent(g, out, rng)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (6, 7)])
def test_scale_shift_folds_through_a_flatten(size, rng):
    model = Sequential([Input(size + (2,)), layers.Conv2D(3, 1, activation="relu"), layers.BatchNormalization(),
                        layers.Flatten(), layers.Dense(4)])
    randomize_bn(model, rng)
    g = lower(model)
    out, report = apply(g, "fold_batchnorm", "fold_linear_chains", "dce")
    assert "scale_shift" not in out.op_counts()
    assert report.events()["fold_linear_chains: scale_shift + flatten folded into matmul"] == 1
    assert_equivalent(g, out, rng)


@pytest.mark.parametrize("groups", [1, 3])
def test_scale_shift_folds_into_an_unpadded_conv(groups, rng):
    g, b, (x,) = new_graph(("x", ("batch", 6, 5, 6)))
    s = b.scale_shift(x, const(b, rng, (6,), low=0.5), const(b, rng, (6,)))
    g.set_outputs([b.conv(s, const(b, rng, (3, 2, 6 // groups, 3)), groups=groups, strides=(2, 1))])
    out, report = apply(g, "fold_linear_chains", "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 6, 5, 6)))
    e.set_outputs([eb.bias_add(eb.conv(ex, const(eb, rng, (3, 2, 6 // groups, 3)), groups=groups, strides=(2, 1)),
                               const(eb, rng, (3,)))])
    assert_same_structure(out, e)
    assert report.events()["fold_linear_chains: scale_shift folded into conv"] == 1
    assert_equivalent(g, out, rng)


def test_scale_shift_stays_before_a_padded_conv(rng):
    g, b, (x,) = new_graph(("x", ("batch", 5, 5, 2)))
    s = b.scale_shift(x, const(b, rng, (2,)), const(b, rng, (2,)))
    g.set_outputs([b.conv(s, const(b, rng, (3, 3, 2, 2)), pads=((1, 1), (1, 1)))])
    out, report = apply(g, "fold_linear_chains")
    assert not report.passes["fold_linear_chains"].changed


def test_nonlinear_or_shared_links_stop_the_fold(rng):
    g, b, (x,) = new_graph(("x", ("batch", 4)))
    h = b.matmul(x, const(b, rng, (4, 4)))
    g.set_outputs([b.matmul(b.relu(h), const(b, rng, (4, 4))), b.matmul(h, const(b, rng, (4, 4)))])
    h2 = b.matmul(x, const(b, rng, (4, 4)))
    g.set_outputs(g.outputs + [b.matmul(h2, const(b, rng, (4, 4))), h2])  # h2 is also an output
    out, report = apply(g, "fold_linear_chains")
    assert not report.passes["fold_linear_chains"].changed


def test_bias_pairs_merge(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    g.set_outputs([b.bias_add(b.bias_add(x, const(b, rng, (3,))), const(b, rng, (3,)))])
    out, _ = apply(g, "fold_linear_chains", "dce")
    assert out.op_counts() == {"bias_add": 1}
    assert_equivalent(g, out, rng)
    assert np.all(np.isfinite(next(iter(out.constants.values()))))
