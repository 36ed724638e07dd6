"""Elementwise-chain fusion: groups of one shape become one ``fused_elementwise`` op that computes what
the unfused graph computes on the reference, on native code (one kernel) and on onnxruntime; groups
never close a cycle, values read outside stay outputs, random draws are never fused."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.onnx import OnnxRuntimeGraph
from graphc.backends.reference import run
from graphc.ir.types import TensorType
from graphc.ops import get
from graphc.ops.registry import ShapeError
from graphc.passes import pipeline_for_level
from tests.backends.llvm.helpers import assert_matches_reference, load
from tests.passes.util import apply, assert_equivalent, const, feeds_for, new_graph


def _chain(rng):
    """Odd shapes with broadcasting; three values of the group are read outside it."""
    g, b, (a, s, c) = new_graph(("a", (3, 5, 7)), ("s", (5, 1)), ("c", (7,)))
    k = const(b, rng, (), "k")
    t1 = b.mul(a, s)
    t2 = b.add(t1, c)
    t3 = b.tanh(t2)
    t4 = b.sub(t3, k)
    neg = b.neg(t4)
    t5 = b.where(b.greater(t4, k), t4, neg)
    t6 = b.unary_grad(t5, t3, activation="relu", activation_attrs=())
    total = b.reduce_sum(t3, axes=(2,), keepdims=False)  # t3 escapes to a reduction
    g.set_outputs([t6, t2, total])
    return g


def test_a_chain_becomes_one_op_with_an_output_per_escaping_value(rng):
    g = _chain(rng)
    fused, report = apply(g, "fuse_elementwise")
    counts = fused.op_counts()
    assert counts == {"fused_elementwise": 1, "reduce_sum": 1}, counts
    op = next(o for o in fused.ops() if o.type == "fused_elementwise")
    assert len(op.outputs) == 3  # t6 (output), t2 (output), t3 (read by reduce_sum)
    assert [s[0] for s in op.attrs["program"]] == ["mul", "add", "tanh", "sub", "neg", "greater", "where",
                                                   "unary_grad"]
    assert report.events()["fuse_elementwise: groups fused"] == 1
    assert_equivalent(g, fused, rng, rtol=1e-6, atol=1e-6)


def test_native_fused_loop_equals_the_unfused_graph(rng):
    g = _chain(rng)
    fused, _ = apply(g, "fuse_elementwise")
    feeds = feeds_for(g, rng, 1)
    want = run(g, feeds)
    lib = load(fused, "fused_chain")
    assert lib is not None
    assert_matches_reference(fused, lib, feeds, rtol=1e-5, atol=1e-6)
    got = run(fused, feeds)
    for name in g.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_native_free_dims_broadcast_and_bool_outputs(rng, batch):
    """A free batch dim, operands broadcast along inner and outer axes, an odd inner length (vector
    loop plus remainder), a bool output and an integer cast inside the group."""
    g, b, (x, row, col) = new_graph(("x", ("batch", 11)), ("row", (1, 11)), ("col", ("batch", 1)))
    y = b.mul(b.add(x, row), col)
    mask = b.greater_equal(y, row)
    ints = b.cast(b.mul(y, b.constant(np.asarray(4.0, np.float32), "four")), dtype="int32")
    back = b.cast(ints, dtype="float32")
    z = b.where(mask, b.sqrt(b.abs(y)), back)
    g.set_outputs([z, mask])
    fused, _ = apply(g, "fuse_elementwise")
    assert fused.op_counts() == {"fused_elementwise": 1}
    lib = load(fused, "fused_free")
    feeds = feeds_for(g, rng, batch)
    assert_matches_reference(fused, lib, feeds, rtol=1e-6, atol=1e-6)
    assert_matches_reference(g, lib, feeds, rtol=1e-6, atol=1e-6)  # the same outputs as the unfused graph


def test_onnxruntime_runs_the_expanded_program(rng):
    g = _chain(rng)
    fused, _ = apply(g, "fuse_elementwise")
    feeds = feeds_for(g, rng, 1)
    got = OnnxRuntimeGraph(fused, threads=1).run(feeds)
    want = run(g, feeds)
    for name in g.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_the_program_survives_saving_and_loading(rng, tmp_path):
    from graphc.ir import serialize

    g = _chain(rng)
    fused, _ = apply(g, "fuse_elementwise")
    serialize.save(fused, tmp_path / "fused.graphc")
    loaded = serialize.load(tmp_path / "fused.graphc")
    assert str(loaded) == str(fused)
    feeds = feeds_for(g, rng, 1)
    want, got = run(fused, feeds), run(loaded, feeds)
    for name in fused.outputs:
        np.testing.assert_array_equal(got[name], want[name])


def test_a_group_never_reads_a_value_computed_from_itself(rng):
    """softmax-like: exp -> reduce_sum -> div; div cannot join exp (the sum depends on exp)."""
    g, b, (x,) = new_graph(("x", (3, 7)))
    e = b.exp(b.sub(x, b.reduce_max(x, axes=(1,), keepdims=True)))
    s = b.reduce_sum(e, axes=(1,), keepdims=True)
    y = b.mul(b.div(e, s), b.constant(np.asarray(2.0, np.float32), "two"))
    g.set_outputs([y])
    fused, _ = apply(g, "fuse_elementwise")
    assert fused.is_acyclic()
    assert fused.op_counts()["fused_elementwise"] == 2  # sub+exp before the sum, div+mul after it
    assert_equivalent(g, fused, rng, rtol=1e-6, atol=1e-6)


def test_different_shapes_are_not_fused_and_a_lone_op_stays(rng):
    g, b, (x, v) = new_graph(("x", (3, 7)), ("v", (7,)))
    small = b.tanh(v)  # (7,): another shape than its reader
    y = b.add(x, small)
    g.set_outputs([y])
    fused, report = apply(g, "fuse_elementwise")
    assert fused.op_counts() == {"tanh": 1, "add": 1}
    assert not report.passes["fuse_elementwise"].changed


def test_random_draws_are_not_fused(rng):
    """A dropout mask: the draw keeps its own op (its own call counter), what follows it fuses."""
    g, b, (x,) = new_graph(("x", (3, 7)))
    keep = b.greater_equal(b.random_uniform_like(x, seed=3), b.constant(np.asarray(0.5, np.float32), "rate"))
    y = b.where(keep, b.mul(x, b.constant(np.asarray(2.0, np.float32), "scale")),
                b.constant(np.asarray(0.0, np.float32), "zero"))
    g.set_outputs([y])
    fused, _ = apply(g, "fuse_elementwise")
    assert fused.op_counts() == {"random_uniform_like": 1, "fused_elementwise": 1}


def test_program_errors_name_the_step():
    t = TensorType("float32", (3,))
    infer = get("fused_elementwise").infer
    with pytest.raises(ShapeError, match="reads"):
        infer([t], program=(("neg", (1,), ()),), outputs=(1,))
    with pytest.raises(ShapeError, match="cannot be fused"):
        infer([t], program=(("matmul", (0, 0), ()),), outputs=(1,))
    with pytest.raises(ShapeError, match="must name steps"):
        infer([t], program=(("neg", (0,), ()),), outputs=(0,))
    with pytest.raises(ShapeError, match="iteration shape"):
        infer([t, TensorType("float32", (2, 3))], program=(("neg", (0,), ()),), outputs=(2,))
    assert infer([t, t], program=(("add", (0, 1), ()), ("exp", (2,), ())), outputs=(3, 2)) == [t, t]


def test_inference_levels_leave_elementwise_chains_to_epilogues():
    """Inference pipelines do not run it (additions stay visible to the quantizer); step graphs do."""
    from graphc.training.step_optimizer import step_pipeline

    assert all("fuse_elementwise" not in pipeline_for_level(level).pass_names() for level in (0, 1, 2, 3))
    assert "fuse_elementwise" in step_pipeline().pass_names()
