"""Matmuls whose right operand is computed at run time run on the packed, register-blocked GEMM.

Both operands are graph inputs, so the product cannot use prepacked weights: odd sizes around
the micro-tile (rows) and panel (columns) widths, K over several blocks, N over many panels,
batched products with broadcast batch dims, free dims bound to 1 and more at run time, at
optimization levels 0 and 2, on one and two threads; and a native training step of a small
attention model (whose forward Q·Kᵀ, P·V and every backward product run on this kernel) equal to
the reference's.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm.kernels import gemm
from graphc.backends.llvm.target import host_target
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.passes import optimize
from tests.backends.llvm.helpers import assert_matches_reference, load

# (shape of a, shape of b): free dims are symbols, bound per run below
CASES = [
    ((1, 1), (1, 1)),
    ((3, 7), (7, 17)),
    ((17, 33), (33, 65)),
    ((65, 300), (300, 7)),
    ((33, 600), (600, 33)),  # K over three blocks: partial sums accumulate in C
    ((19, 40), (40, 600)),  # 19 panels, the last one cut by N
    ((7, 3, 17), (17, 65)),  # rank-3 a, 2-D b: one matrix of 21 rows
    ((2, 3, 13, 9), (2, 3, 9, 33)),
    ((2, 1, 5, 17), (3, 17, 7)),  # batch dims broadcast both ways
    ((1, 13, 9), (4, 9, 3)),
    (("m", "k"), ("k", "n")),
    (("b", "m", 17), ("b", 17, "n")),
    ((1, "m", "k"), ("b", "k", 7)),
]
BINDINGS = [{"m": 1, "k": 1, "n": 1, "b": 1}, {"m": 13, "k": 65, "n": 33, "b": 3}, {"m": 97, "k": 3, "n": 65, "b": 2}]


def _graph() -> Graph:
    g = Graph("runtime_gemm")
    outs = []
    for i, (sa, sb) in enumerate(CASES):
        a = g.add_input(f"a{i}", TensorType("float32", sa))
        b = g.add_input(f"b{i}", TensorType("float32", sb))
        outs.append(OpBuilder(g, layer=f"case{i}").emit("matmul", a, b))
    g.set_outputs(outs)
    return g


@pytest.mark.parametrize("level", [0, 2])
def test_products_of_run_time_operands_match_the_reference(level, rng):
    graph = _graph()
    compiled = optimize(graph, level) if level else graph
    lib = load(compiled)
    for threads, sizes in zip((1, 2, 1), BINDINGS):
        feeds = {name: rng.standard_normal(graph.type_of(name).concrete_shape(sizes)).astype(np.float32)
                 for name in graph.inputs}
        assert_matches_reference(compiled, lib, feeds, threads=threads, label=f"level {level} {sizes}")


def test_run_time_operands_use_the_packed_kernel(monkeypatch):
    """Every product of the graph goes through emit_runtime_gemm (no other kernel for them)."""
    calls = []
    original = gemm.emit_runtime_gemm
    monkeypatch.setattr(gemm, "emit_runtime_gemm", lambda *a, **kw: calls.append(a[1].shape) or original(*a, **kw))
    load(_graph(), "runtime_gemm_probe", cache=False)
    assert len(calls) == len(CASES)


def _attention_model():
    graphc.utils.set_random_seed(5)
    x = Input((7, 6))
    h = layers.MultiHeadAttention(2, 3)(x, x)
    h = layers.Dense(5, activation="tanh")(h)
    out = layers.Dense(3)(layers.GlobalAveragePooling1D()(h))
    return Model(x, out)


def test_attention_training_step_matches_the_reference(rng):
    a, b = _attention_model(), _attention_model()
    b.set_weights(a.get_weights())
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    y = rng.standard_normal((3, 3)).astype(np.float32)
    for m in (a, b):
        m.compile(optimizer="rmsprop", loss="mse")
    native = graphc.build(a, target="native", training=True)
    reference = graphc.build(b, target="reference", training=True)
    before = [w.copy() for w in a.get_weights()]
    for step in range(1, 4):
        got, want = native.train_step(x, y), reference.train_step(x, y)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-4, atol=1e-6, err_msg=f"loss, step {step}")
    for i, (p, q) in enumerate(zip(a.get_weights(), b.get_weights())):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=5e-5, err_msg=f"weight {i} after 3 steps")
    assert any(not np.array_equal(p, q) for p, q in zip(before, a.get_weights()))


@pytest.mark.parametrize("l3", ["2M", "4M"])
def test_chunks_of_b_known_only_at_run_time_fit_the_scratch(l3, monkeypatch, tmp_path, rng):
    """With N free, the chunks of B's panels a thread packs are cut at run time to at most the panels its
    scratch was sized for (an eighth of L3): a small L3 makes that a panel or a few, so one chunk of all
    the panels would overrun the scratch into the A tile and C tile after it (wrong sums, or a crash)."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", f"l3={l3}")
    g = Graph(f"chunks_free_{l3}")
    a = g.add_input("a", TensorType("float32", ("m", "k")))
    b = g.add_input("b", TensorType("float32", ("k", "n")))
    g.set_outputs([OpBuilder(g).emit("matmul", a, b)])
    lib = load(g, f"chunks_free_{l3}")
    for m, kk, n in ((37, 2100, 1100), (7, 300, 517), (1, 17, 3)):
        x = rng.standard_normal((m, kk)).astype(np.float32)
        y = rng.standard_normal((kk, n)).astype(np.float32)
        want = x.astype(np.float64) @ y.astype(np.float64)
        for threads in (1, 2):
            inst = lib.instance(threads)
            try:
                got = inst.run([x, y])[0]
            finally:
                inst.close()
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()),
                                       err_msg=f"{m}x{kk}x{n}, L3 {l3}, {threads} threads")


@pytest.mark.parametrize("free", [False, True])
def test_thread_scratch_stays_within_the_cache_budget(free, rng):
    """A thread's scratch holds its chunk of B (at most ``b_block``, an eighth of L3), its block of A's
    rows (at most a quarter of L2) and one C tile: with K and N known (2100 x 1100: two K blocks, 35
    panels) and with both free (bound to the same sizes at run time), on two threads."""
    g = Graph(f"scratch_budget_{free}")
    a = g.add_input("a", TensorType("float32", ("m", "k") if free else (37, 2100)))
    b = g.add_input("b", TensorType("float32", ("k", "n") if free else (2100, 1100)))
    g.set_outputs([OpBuilder(g).emit("matmul", a, b)])
    lib = load(g, f"scratch_budget_{free}")
    feeds = {"a": rng.standard_normal((37, 2100)).astype(np.float32),
             "b": rng.standard_normal((2100, 1100)).astype(np.float32)}
    inst = lib.instance(2)
    try:
        got = inst.run([feeds["a"], feeds["b"]])[0]
        plan = inst.memory_plan()
    finally:
        inst.close()
    want = feeds["a"].astype(np.float64) @ feeds["b"].astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    bl = gemm.gemm_blocking(host_target(), 12, 32)
    per_thread = plan.thread_scratch_bytes // plan.threads
    assert 0 < per_thread <= bl.b_block + bl.l2 // 4 + 12 * 64 * 4 + 64, (per_thread, bl)
