"""Dead-code elimination."""

from __future__ import annotations

from tests.passes.util import apply, assert_equivalent, assert_same_structure, const, new_graph


def test_removes_ops_and_constants_no_output_needs(rng):
    g, b, (x,) = new_graph(("x", ("batch", 7)))
    w = const(b, rng, (7, 3))
    live = b.relu(b.matmul(x, w))
    b.tanh(b.matmul(x, const(b, rng, (7, 17), "unused_w")))  # dead branch
    b.constant(rng.standard_normal(5).astype("float32"), "orphan")
    g.set_outputs([live])
    out, report = apply(g, "dce")
    e, eb, (ex,) = new_graph(("x", ("batch", 7)))
    e.set_outputs([eb.relu(eb.matmul(ex, const(eb, rng, (7, 3))))])
    assert_same_structure(out, e)
    assert set(out.constants) == {w}
    assert report.events()["dce: ops removed"] == 2 and report.events()["dce: constants removed"] == 2
    assert_equivalent(g, out, rng)


def test_keeps_everything_an_output_reads(rng):
    g, b, (x,) = new_graph(("x", (3,)))
    y = b.relu(x)
    g.set_outputs([y, b.neg(y)])
    out, report = apply(g, "dce")
    assert str(out) == str(g) and not report.passes["dce"].changed
