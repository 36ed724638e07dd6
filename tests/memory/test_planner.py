"""Memory plans of real graphs: sharing (views, in place, concatenation), schedules, bounds, errors.

Every plan is also executed by ``tests.memory.arena.run_in_arena`` (each tensor stored where the
plan says, in one byte arena) and compared with the reference interpreter.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, Sequential, layers
from graphc.backends.reference import run
from graphc.memory import MemoryPlanner, plan_memory
from tests.memory.arena import run_in_arena
from tests.passes.util import const, feeds_for, new_graph


def check_plan(graph, plan, rng, batch):
    plan.check()
    feeds = feeds_for(graph, rng, batch)
    got, want = run_in_arena(graph, plan, feeds), run(graph, feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def chain(rng):
    g, b, (x,) = new_graph(("x", ("batch", 7)))
    h = b.relu(b.matmul(x, const(b, rng, (7, 16))))
    h = b.tanh(b.bias_add(h, const(b, rng, (16,))))
    g.set_outputs([b.matmul(h, const(b, rng, (16, 3)))])
    return g


def test_a_chain_runs_in_place(rng):
    g = chain(rng)
    plan = plan_memory(g, batch_size=4)
    check_plan(g, plan, rng, 4)
    assert plan.stats["in_place"] == 3 and len(plan.buffers) == 1
    assert plan.arena_bytes == plan.peak_live_bytes == 4 * 16 * 4
    assert plan.naive_bytes == 4 * align(4 * 16 * 4)
    t = plan.tensors
    relu = next(op.outputs[0] for op in g.ops() if op.type == "relu")
    assert t[relu].how == "in-place" and t[relu].offset == plan.offsets[relu]
    assert t[g.outputs[0]].region == "output" and t["x"].region == "input"


def align(n):
    return -(-n // 64) * 64


def test_no_in_place_while_the_input_is_still_needed(rng):
    g, b, (x,) = new_graph(("x", ("batch", 5)))
    h = b.matmul(x, const(b, rng, (5, 5)))
    r = b.relu(h)
    g.set_outputs([b.add(b.matmul(r, const(b, rng, (5, 5))), h)])  # h read again after relu
    plan = plan_memory(g, batch_size=3)
    check_plan(g, plan, rng, 3)
    assert plan.tensors[r].how == "" and plan.tensors[r].buffer != plan.tensors[h].buffer


def test_concat_inputs_are_written_into_the_output(rng):
    g, b, (x,) = new_graph(("x", ("batch", 6)))
    parts = [b.relu(b.matmul(x, const(b, rng, (6, n)))) for n in (1, 3, 7)]
    g.set_outputs([b.concat(*parts, axis=-1)])
    plan = plan_memory(g, batch_size=2)
    check_plan(g, plan, rng, 2)
    out = g.outputs[0]
    assert plan.stats["concat_parts"] == 3 and plan.arena_bytes == 64  # the matmul results, one at a time
    assert [plan.tensors[p].offset for p in parts] == [0, 4, 16]  # element offsets 0, 1, 4 in a row
    assert all(plan.tensors[p].buffer == out and plan.tensors[p].strides == (11, 1) for p in parts)


def test_concat_of_an_input_or_a_repeated_value_copies(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    r = b.relu(x)
    g.set_outputs([b.concat(x, r, r, axis=-1)])
    plan = plan_memory(g, batch_size=2)
    check_plan(g, plan, rng, 2)
    assert plan.stats["concat_parts"] == 0


def test_nested_concats_share_one_buffer(rng):
    g, b, (x, y) = new_graph(("x", ("batch", 2, 4)), ("y", ("batch", 3, 8)))
    a, c, d = b.relu(x), b.tanh(x), b.neg(y)
    inner = b.concat(a, c, axis=2)
    g.set_outputs([b.sigmoid(b.concat(inner, d, axis=1))])
    plan = plan_memory(g, batch_size=3)
    check_plan(g, plan, rng, 3)
    assert {plan.tensors[v].buffer for v in (a, c, d, inner)} == {plan.tensors[inner].buffer} != {inner}


def test_slices_and_reshapes_are_views(rng):
    g, b, (x,) = new_graph(("x", ("batch", 6, 6, 3)))
    h = b.relu(b.conv(x, const(b, rng, (1, 1, 3, 4))))
    s = b.slice(b.slice(h, axis=1, start=1, stop=None, step=2), axis=2, start=0, stop=5, step=2)
    flat = b.reshape(h, shape=("batch", 144))
    g.set_outputs([b.tanh(s), b.matmul(flat, const(b, rng, (144, 2)))])
    plan = plan_memory(g, batch_size=2)
    check_plan(g, plan, rng, 2)
    ts = plan.tensors
    assert ts[s].how == "view" and ts[s].buffer == ts[h].buffer and ts[s].strides == (144, 48, 8, 1)
    assert ts[s].offset == ts[h].offset + 4 * 24 and not ts[s].contiguous
    assert ts[flat].how == "view" and ts[flat].contiguous
    assert plan.stats["views"] == 3


def test_without_strided_views_slices_get_their_own_buffers(rng):
    g, b, (x,) = new_graph(("x", ("batch", 6, 5)))
    h = b.relu(x)
    s = b.slice(h, axis=2, start=1, stop=4)
    lead = b.slice(h, axis=0, start=0, stop=1)
    g.set_outputs([b.tanh(s), b.tanh(lead), b.concat(b.neg(x), b.abs(x), axis=-1)])
    plan = plan_memory(g, batch_size=1, strided_views=False)
    check_plan(g, plan, rng, 1)
    assert plan.tensors[s].how == "" and plan.tensors[lead].how == "view"  # the leading-axis slice is flat
    assert plan.stats["concat_parts"] == 0
    with_views = plan_memory(g, batch_size=1)
    assert with_views.tensors[s].how == "view" and with_views.stats["concat_parts"] == 2


def test_outputs_are_never_aliased_and_dead_values_are_planned(rng):
    g, b, (x,) = new_graph(("x", ("batch", 4)))
    y = b.relu(x)
    b.tanh(y)  # nothing reads it
    g.set_outputs([y, b.reshape(y, shape=("batch", 2, 2))])
    plan = plan_memory(g, batch_size=5)
    check_plan(g, plan, rng, 5)
    assert all(plan.tensors[o].region == "output" and plan.tensors[o].how == "" for o in g.outputs)
    dead = next(op.outputs[0] for op in g.ops() if op.type == "tanh")
    assert plan.tensors[dead].first == plan.tensors[dead].last


def test_lifetimes_follow_the_schedule(rng):
    g = chain(rng)
    plan = plan_memory(g, batch_size=1)
    index = {op_id: i for i, op_id in enumerate(plan.schedule)}
    for name, (first, last) in plan.lifetimes.items():
        if name in g.inputs:
            continue
        assert first == index[g.values[name].producer]
        readers = [index[op.id] for op, _ in g.consumers(name)]
        assert last == (len(plan.schedule) if name in g.outputs else max(readers, default=first))


def test_schedule_lowers_the_peak(rng):
    # Two long branches: interleaving them keeps both alive, finishing one first does not.
    g, b, (x,) = new_graph(("x", ("batch", 8)))
    branches = []
    for _ in range(2):
        h = b.matmul(x, const(b, rng, (8, 64)))
        values = [h]
        for _ in range(3):
            values.append(b.matmul(values[-1], const(b, rng, (64, 64))))
        values.append(b.matmul(values[-1], const(b, rng, (64, 1))))
        branches.append(values)
    g.set_outputs([b.add(branches[0][-1], branches[1][-1])])
    interleaved = [g.values[v].producer for pair in zip(*branches) for v in pair]
    interleaved += [op.id for op in g.ops() if op.id not in interleaved]
    bad = plan_memory(g, batch_size=1, schedule=interleaved)
    good = plan_memory(g, batch_size=1)
    check_plan(g, bad, rng, 1)
    check_plan(g, good, rng, 1)
    assert good.peak_live_bytes < bad.peak_live_bytes
    for name in ("default", "greedy", "dfs", "dfs_heavy"):
        assert plan_memory(g, batch_size=1, schedule=name).peak_live_bytes >= good.peak_live_bytes


def test_replanning_for_new_sizes_keeps_the_analysis(rng):
    g = graphc.optimize(graphc.lower(_inception(5, 9)), 2)
    planner = MemoryPlanner(g, bindings={"batch": 1})
    one, many = planner.plan(batch_size=1), planner.plan(batch_size=7)
    assert one.schedule == many.schedule and one.stats == many.stats
    assert many.peak_live_bytes == 7 * one.peak_live_bytes
    check_plan(g, many, rng, 7)
    assert "memory plan of" in many.format() and g.outputs[0] in many.format()


def test_errors_name_what_is_wrong(rng):
    g = chain(rng)
    with pytest.raises(ValueError, match=r"free dimension\(s\) \['batch'\] need values; pass batch_size="):
        plan_memory(g)
    with pytest.raises(ValueError, match=r"has no free dimension\(s\) \['seq'\]; its free dimensions are \['batch'\]"):
        plan_memory(g, batch_size=1, seq=3)
    with pytest.raises(ValueError, match="must be >= 0"):
        plan_memory(g, batch_size=-1)
    with pytest.raises(ValueError, match="alignment must be a power of two"):
        plan_memory(g, batch_size=1, alignment=24)
    with pytest.raises(ValueError, match="unknown schedule 'fastest'"):
        plan_memory(g, batch_size=1, schedule="fastest")
    ops = [op.id for op in g.ops()]
    with pytest.raises(ValueError, match="must list each of the graph's 5 ops once, got 4"):
        plan_memory(g, batch_size=1, schedule=ops[:-1])
    with pytest.raises(ValueError, match=f"schedule runs op '{ops[1]}' before"):
        plan_memory(g, batch_size=1, schedule=[ops[1], ops[0]] + ops[2:])
    static, _, _ = new_graph(("x", (2, 3)))
    static.set_outputs([static.add_op("relu", ["x"], [static.type_of("x")]).outputs[0]])
    assert plan_memory(static, batch_size=2).bindings == {}
    with pytest.raises(ValueError, match="no free batch dimension .* batch_size=3 cannot apply"):
        plan_memory(static, batch_size=3)


def test_check_catches_overlapping_buffers(rng):
    g, b, (x,) = new_graph(("x", ("batch", 4)))
    g.set_outputs([b.matmul(b.relu(b.matmul(x, const(b, rng, (4, 4)))), const(b, rng, (4, 4)))])
    plan = plan_memory(g, batch_size=1, inplace=False)
    assert len(plan.buffers) == 2
    plan.buffers[1] = type(plan.buffers[1])(**{**plan.buffers[1].__dict__, "offset": plan.buffers[0].offset})
    with pytest.raises(AssertionError, match="overlap"):
        plan.check()


def _inception(channels=256, size=28):
    inp = Input(shape=(size, size, channels))
    a = layers.Conv2D(64, 1, activation="relu", strides=2)(inp)
    b = layers.Conv2D(64, 1, activation="relu")(inp)
    b = layers.Conv2D(128, 3, activation="relu", strides=2, padding="same")(b)
    c = layers.AveragePooling2D(3, strides=2, padding="same")(inp)
    c = layers.Conv2D(128, 1, activation="relu", padding="same")(c)
    d = layers.Conv2D(128, 1, activation="relu")(inp)
    d = layers.Conv2D(128, 3, activation="relu", padding="same")(d)
    d = layers.Conv2D(128, 3, activation="relu", strides=2, padding="same")(d)
    return Model(inp, layers.concatenate([a, b, c, d], axis=-1), name="inception_module")


def _residual(projection):
    x = Input(shape=(32, 32, 128))
    y = layers.Conv2D(128, 3, activation="relu", padding="same")(x)
    y = layers.Conv2D(128, 3, activation="relu", padding="same")(y)
    if projection:
        y = layers.MaxPooling2D(2, strides=2)(y)
        return Model(x, layers.add([y, layers.Conv2D(128, 1, strides=2, padding="same")(x)]))
    y = layers.Conv2D(128, 3, activation="relu", padding="same")(y)
    return Model(x, layers.add([y, x]))


def _separable():
    model = Sequential([Input((64, 64, 3))])
    for filters, pool in ((32, False), (64, True), (64, False), (128, True), (64, False), (128, False)):
        model.add(layers.SeparableConv2D(filters, 3, activation="relu"))
        if pool:
            model.add(layers.MaxPooling2D(2))
    model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dense(32, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    return model


def _conv_bn():
    return Sequential([Input((64, 64, 3)), layers.Conv2D(32, 3, activation="relu"), layers.BatchNormalization(),
                       layers.Flatten(), layers.Dense(32, activation="relu"), layers.BatchNormalization(),
                       layers.Dense(10, activation="softmax")])


SEEDS = {"inception": _inception, "identity_block": lambda: _residual(False),
         "projection_block": lambda: _residual(True), "separable": _separable, "conv_bn": _conv_bn}


@pytest.mark.parametrize("name", sorted(SEEDS))
@pytest.mark.parametrize("level", [0, 2])
def test_seed_models_pack_within_ten_percent_of_the_peak(name, level):
    g = graphc.optimize(graphc.lower(SEEDS[name]()), level)
    planner = MemoryPlanner(g)
    for batch in (1, 32):
        plan = planner.plan(batch_size=batch)
        plan.check()
        assert plan.peak_live_bytes <= plan.arena_bytes <= 1.10 * plan.peak_live_bytes
        assert plan.arena_bytes <= plan.naive_bytes


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_model_plans_run(name, rng):
    g = graphc.optimize(graphc.lower(SEEDS[name]() if name != "inception" else _inception(5, 9)), 2)
    check_plan(g, plan_memory(g, batch_size=2), rng, 2)


def test_stereo_xception_plan():
    base = graphc.applications.Xception(weights=None, include_top=False)
    left, right = Input(shape=(250, 250, 3)), Input(shape=(250, 250, 3))
    g = graphc.optimize(graphc.lower(Model([left, right], layers.concatenate([base(left), base(right)]))), 2)
    planner = MemoryPlanner(g)
    for batch in (1, 32):
        plan = planner.plan(batch_size=batch)
        plan.check()
        assert plan.arena_bytes <= 1.10 * plan.peak_live_bytes
    assert plan.stats["concat_parts"] == 2  # both feature maps are written into the output
