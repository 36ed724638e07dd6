"""No-op removal: dropout, identities, neutral reshapes/transposes/slices/arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import Input, Model, layers
from graphc.api import lower
from tests.passes.util import apply, assert_equivalent, assert_same_structure, new_graph


def test_removes_dropout_and_identity_from_a_model(rng):
    x = Input(shape=(7,))
    h = layers.Dense(5, activation="relu")(x)
    h = layers.Dropout(0.5)(h)
    h = layers.Activation("linear")(h)
    model = Model(x, layers.Dense(3)(h))
    g = lower(model)
    out, report = apply(g, "remove_noops", "dce")
    assert "dropout" not in out.op_counts()
    assert report.events()["remove_noops: dropout removed"] == 1
    assert out.outputs == g.outputs
    assert_equivalent(g, out, rng, batches=(1, 17))


@pytest.mark.parametrize("build", [
    lambda b, x: b.reshape(x, shape=("batch", 3, 4)),
    lambda b, x: b.transpose(x, perm=(0, 1, 2)),
    lambda b, x: b.cast(x, dtype="float32"),
    lambda b, x: b.slice(x, axis=1, start=0, stop=None, step=1),
    lambda b, x: b.slice(x, axis=2, start=0, stop=4),
    lambda b, x: b.concat(x, axis=1),
    lambda b, x: b.add_n(x),
    lambda b, x: b.mul(x, b.constant(np.ones(4, np.float32))),
    lambda b, x: b.mul(b.constant(np.ones((1, 1, 4), np.float32)), x),
    lambda b, x: b.add(x, b.constant(np.zeros(4, np.float32))),
    lambda b, x: b.sub(x, b.constant(np.zeros((), np.float32))),
    lambda b, x: b.div(x, b.constant(np.ones(4, np.float32))),
    lambda b, x: b.transpose(b.transpose(x, perm=(0, 2, 1)), perm=(0, 2, 1)),
    lambda b, x: b.squeeze(b.expand_dims(x, axis=1), axis=1),
], ids=["reshape", "transpose", "cast", "slice", "slice_stop", "concat", "add_n", "mul1", "mul1_left",
        "add0", "sub0", "div1", "transpose_pair", "squeeze_expand"])
def test_neutral_ops_disappear(build, rng):
    g, b, (x,) = new_graph(("x", ("batch", 3, 4)))
    g.set_outputs([b.relu(build(b, x))])
    out, _ = apply(g, "remove_noops", "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 3, 4)))
    e.set_outputs([eb.relu(ex)])
    assert_same_structure(out, e)
    assert_equivalent(g, out, rng)


@pytest.mark.parametrize("build", [
    lambda b, x: b.mul(x, b.constant(np.full(4, 2.0, np.float32))),  # not neutral
    lambda b, x: b.add(x, b.constant(np.zeros((2, 3, 4), np.float32))),  # broadcasts batch 1 -> 2
    lambda b, x: b.slice(x, axis=2, start=1),
    lambda b, x: b.transpose(x, perm=(0, 2, 1)),
    lambda b, x: b.reshape(x, shape=("batch", 12)),
], ids=["mul2", "broadcasting_add", "slice_from_1", "transpose", "reshape"])
def test_real_ops_stay(build, rng):
    g, b, (x,) = new_graph(("x", ("batch", 3, 4)))
    g.set_outputs([b.relu(build(b, x))])
    out, report = apply(g, "remove_noops", "dce")
    assert str(out) == str(g) and not report.passes["remove_noops"].changed


def test_reshape_and_transpose_pairs_compose(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3, 4, 5)))
    r = b.reshape(b.reshape(x, shape=("batch", 12, 5)), shape=("batch", 60))
    t = b.transpose(b.transpose(x, perm=(0, 2, 1, 3)), perm=(0, 1, 3, 2))
    g.set_outputs([r, t])
    out, _ = apply(g, "remove_noops", "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 3, 4, 5)))
    e.set_outputs([eb.reshape(ex, shape=("batch", 60)), eb.transpose(ex, perm=(0, 2, 3, 1))])
    assert_same_structure(out, e)
    assert_equivalent(g, out, rng)


def test_an_output_that_is_an_input_keeps_its_identity(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    y = b.relu(x)
    g.set_outputs([b.identity(x), y, b.identity(y)])
    out, _ = apply(g, "remove_noops", "dce")
    assert out.outputs == g.outputs
    assert out.op_counts() == {"identity": 2, "relu": 1}  # x and y cannot both be two outputs
    assert_equivalent(g, out, rng)


def test_removed_identity_hands_its_output_name_over(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    y = b.identity(b.relu(x))
    g.rename_value(y, "result")
    g.set_outputs(["result"])
    out, _ = apply(g, "remove_noops", "dce")
    assert out.outputs == ["result"] and out.producer("result").type == "relu"
    assert_equivalent(g, out, rng)
