"""Elementwise results written over an input that dies at their op (:mod:`graphc.backends.llvm.result_in_place`).

Which inputs are written over (an intermediate of the result's type whose buffer nothing reads later) and
which are not (graph inputs and outputs, values read later, views of them read later, broadcast operands,
strided concatenation parts); outputs against the reference on odd sizes, 1-3 threads, in sub-batches;
bit for bit against builds that give every result its own buffer; the runtime's plan holding fewer buffers.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm import batch_split, result_in_place
from graphc.backends.reference.interpreter import run as reference_run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from tests.backends.llvm.helpers import load


def _graph() -> tuple[Graph, dict[str, bool]]:
    """A graph and, per op result, whether it is written over one of its op's inputs."""
    g = Graph("result_in_place")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("N", 7, 5)))
    s = g.add_input("s", TensorType("float32", ("N", 1, 5)))
    a = ob.emit("mul", x, x)  # a graph input: never written over
    b = ob.emit("add", a, ob.emit("exp", a))  # a is read by exp, then dies at the add
    c = ob.emit("tanh", b)  # b dies here
    d = ob.emit("mul", c, s)  # broadcast s: c written over
    r = ob.emit("reshape", d, shape=("N", 35))  # a view of d, read after the next op
    e = ob.emit("sigmoid", d)  # d's buffer is still read (through r): not written over
    f = ob.emit("add", e, ob.emit("reshape", r, shape=("N", 7, 5)))
    kept = ob.emit("neg", f)  # f is also a graph output (the caller's buffer): not written over
    g.set_outputs([kept, f, ob.emit("abs", kept)])
    over = {b: True, c: True, d: True, e: False}  # the scratch results (the rest are outputs)
    return g, over


def _feeds(batch: int, rng) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((batch, 7, 5)).astype(np.float32),
            "s": rng.standard_normal((batch, 1, 5)).astype(np.float32)}


def _run(lib, feeds, threads=1):
    inst = lib.instance(threads)
    try:
        return inst.run([feeds[i.name] for i in lib.inputs]), inst.memory_plan()
    finally:
        inst.close()


def test_which_results_are_written_over_their_inputs(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    g, over = _graph()
    _, plan = _run(load(g), _feeds(3, np.random.default_rng(0)))
    own = {b.name for b in plan.buffers}  # a buffer is named by the first value it holds
    for v, written_over in over.items():
        assert (v not in own) == written_over, v


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_outputs_against_the_reference_and_separate_buffers(threads, monkeypatch, tmp_path):
    g, _ = _graph()
    rng = np.random.default_rng(threads)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "over"))
    lib = load(g)
    monkeypatch.setenv(result_in_place.ENV, "0")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "own"))
    apart = load(g)
    for batch in (1, 3, 7, 17):
        feeds = _feeds(batch, rng)
        want = reference_run(g, feeds)
        got, plan = _run(lib, feeds, threads)
        sep, sep_plan = _run(apart, feeds, threads)
        plan.check()
        assert len(plan.buffers) < len(sep_plan.buffers)
        for name, a, b in zip(g.outputs, got, sep):
            np.testing.assert_allclose(a, want[name], rtol=1e-5, atol=1e-6, err_msg=name)
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_in_sub_batches_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv(batch_split.ENV, "2K")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    g, _ = _graph()
    feeds = _feeds(17, np.random.default_rng(5))
    got, plan = _run(load(g), feeds, threads=2)
    assert plan.sub_batch and plan.arena_copies == 2
    want = reference_run(g, feeds)
    for name, a in zip(g.outputs, got):
        np.testing.assert_allclose(a, want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_setting(monkeypatch):
    monkeypatch.delenv(result_in_place.ENV, raising=False)
    assert result_in_place.enabled()
    monkeypatch.setenv(result_in_place.ENV, "0")
    assert not result_in_place.enabled()
    monkeypatch.setenv(result_in_place.ENV, "yes")
    with pytest.raises(ValueError, match="GRAPHC_RESULT_IN_PLACE must be 0 or 1, got 'yes'"):
        result_in_place.enabled()
