"""Property tests: plans of random graphs are valid by construction and by execution.

Random DAGs mix what the planner treats specially (elementwise ops that may run in place,
slices and reshapes that are views, concatenations written in place, fused ops overwriting
their residual) with plain matmuls. For each, the plan must pass ``MemoryPlan.check`` (no two
buffers alive at once overlap, every offset aligned, arena >= peak) and running the graph in
the planned arena must give the reference interpreter's results.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.backends.reference import run
from graphc.memory import plan_memory
from tests.memory.arena import run_in_arena
from tests.passes.util import feeds_for, new_graph

KINDS = ("relu", "tanh", "add", "mul", "matmul", "concat", "slice", "reshape", "bias_add", "fused", "scale")


@st.composite
def random_graph(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    g, b, (x,) = new_graph(("x", ("batch", draw(st.integers(1, 9)))))
    pool = [x]
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(KINDS))
        v = draw(st.sampled_from(pool))
        width = g.type_of(v).shape[-1]
        same = [u for u in pool if g.type_of(u) == g.type_of(v)]
        w = lambda shape: b.constant(rng.standard_normal(shape).astype(np.float32), "w")  # noqa: E731
        if kind in ("relu", "tanh"):
            out = b.emit(kind, v)
        elif kind in ("add", "mul"):
            out = b.emit(kind, v, draw(st.sampled_from(same)))
        elif kind == "matmul":
            out = b.matmul(v, w((width, draw(st.integers(1, 9)))))
        elif kind == "concat":
            parts = [v] + draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2))
            out = b.concat(*parts, axis=-1)
        elif kind == "slice":
            start = draw(st.integers(0, width - 1))
            out = b.slice(v, axis=-1, start=start, stop=draw(st.integers(start + 1, width)),
                          step=draw(st.integers(1, 2)))
        elif kind == "reshape":
            out = b.reshape(b.reshape(v, shape=("batch", 1, width)), shape=("batch", width))
        elif kind == "bias_add":
            out = b.bias_add(v, w((width,)))
        elif kind == "scale":
            out = b.scale_shift(v, w((width,)), w((width,)))
        else:
            out = b.fused_matmul(v, w((width, width)), draw(st.sampled_from(same)), has_residual=True,
                                 activation="relu")
        pool.append(out)
    outputs = [pool[-1]] + draw(st.lists(st.sampled_from(pool[1:] or pool), max_size=2))
    g.set_outputs(list(dict.fromkeys(o for o in outputs if o != x)) or [b.relu(x)])
    return g


@settings(max_examples=100, deadline=None)
@given(graph=random_graph(), batch=st.integers(1, 4), alignment=st.sampled_from([4, 64]),
       inplace=st.booleans(), strided=st.booleans(), schedule=st.sampled_from(["auto", "greedy", "dfs"]))
def test_random_graph_plans_are_valid_and_run(graph, batch, alignment, inplace, strided, schedule):
    plan = plan_memory(graph, batch_size=batch, alignment=alignment, inplace=inplace, strided_views=strided,
                       schedule=schedule)
    plan.check()
    for t in plan.tensors.values():
        if t.region == "arena":
            buffer = next(b for b in plan.buffers if b.name == t.buffer)
            assert buffer.offset <= t.offset < buffer.offset + buffer.size or t.nbytes == 0
    feeds = feeds_for(graph, np.random.default_rng(batch), batch)
    got, want = run_in_arena(graph, plan, feeds), run(graph, feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
