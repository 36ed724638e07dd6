"""State updates written over their weights by the training step's kernels (graphc/backends/llvm/in_place.py):
which updates qualify, an op order in which every reader of an old value runs before its writer and the
writers run last, the random draws kept in place, and native steps that train as the reference does and
leave the weights untouched when a step fails."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm.in_place import schedule_in_place
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.runtime import Library, NativeError
from graphc.training.loop import standardize_x
from graphc.training.native_step import _target_like, linked_step_graphs, train_step_library
from tests.training import small_models


def _step_graph(model) -> Graph:
    trainer = model._graphc_trainer
    targets = [_target_like(model, i, loss) for i, loss in enumerate(trainer.loss_objects)]
    feeds = standardize_x(model, [np.zeros((1,) + tuple(1 if d is None else int(d) for d in t.shape[1:]),
                                           dtype=t.dtype) for t in model.inputs])
    graph, _ = linked_step_graphs(trainer._step(feeds, targets, True), trainer._step(feeds, targets, False), True)
    return graph


def _assert_valid(original: Graph, scheduled: Graph, in_place: set[str]) -> None:
    """Same ops, a topological order, every reader of an overwritten weight before its writer, writers last."""
    ops = scheduled.ops()
    assert sorted(op.id for op in ops) == sorted(op.id for op in original.ops())
    position = {op.id: i for i, op in enumerate(ops)}
    for op in ops:
        for v in op.inputs:
            producer = scheduled.values[v].producer
            assert producer is None or position[producer] < position[op.id], f"{op.id} before its input {v}"
    updates = scheduled.meta["state_updates"]
    writers = {scheduled.values[updates[w]].producer for w in in_place}
    first_writer = min(position[w] for w in writers)
    assert all(position[op.id] < first_writer for op in ops if op.id not in writers), "a writer is not last"
    for w in in_place:
        writer = scheduled.values[updates[w]].producer
        for op in ops:
            if w in op.inputs and op.id != writer:
                assert position[op.id] < position[writer], f"{op.id} reads {w} after it is overwritten"


@pytest.mark.parametrize("build, optimizer", [(small_models.mlp, "adam"), (small_models.conv_bn, "rmsprop"),
                                              (small_models.lstm, "sgd"), (small_models.dropout, "adam")])
def test_every_weight_slot_and_counter_of_a_step_is_written_in_place(build, optimizer):
    model = build()
    model.compile(optimizer=optimizer, loss="mse")
    graph = _step_graph(model)
    scheduled, in_place = schedule_in_place(graph)
    updates = graph.meta["state_updates"]
    draws = [i for i, op in enumerate(graph.ops()) if op.type.startswith("random_")]
    if not draws:  # with dropout, the updates computed before the last draw keep their place and are copied
        # every weight, optimizer slot and the counter; a moving statistic may be computed by a fused op whose
        # other results the backward pass reads (that op cannot run last)
        missing = set(updates) - set(graph.outputs) - in_place
        assert all("moving_" in w for w in missing), sorted(missing)
    assert any("iteration" in w for w in in_place) and any("kernel" in w for w in in_place), sorted(in_place)
    _assert_valid(graph, scheduled, in_place)
    assert [op.id for op in scheduled.ops() if op.type.startswith("random_")] == \
        [op.id for op in graph.ops() if op.type.startswith("random_")]
    assert [i for i, op in enumerate(scheduled.ops()) if op.type.startswith("random_")] == draws


def _two_weights(cross: bool) -> Graph:
    """Weights a and b, each updated by an elementwise op; with ``cross`` each update reads the other weight."""
    g = Graph("updates")
    x = g.add_input("x", TensorType("float32", (3,)))
    a = g.add_constant("a", np.ones(3, np.float32))
    b = g.add_constant("b", np.full(3, 2.0, np.float32))
    ob = OpBuilder(g, layer="optimizer")
    new_a = ob.add(a, b) if cross else ob.add(a, ob.mul(b, x))  # b read by the writer itself, or before it
    new_b = ob.sub(b, a) if cross else ob.sub(b, x)
    loss = ob.emit("reduce_sum", ob.mul(a, x), axes=(0,))
    g.set_outputs([loss, new_a, new_b])
    g.meta["state_updates"] = {"a": new_a, "b": new_b}
    g.meta["train_step"] = {"reported": 1}
    return g


def test_readers_of_an_old_value_run_before_its_writer():
    g = _two_weights(cross=False)
    scheduled, in_place = schedule_in_place(g)
    assert in_place == {"a", "b"}
    _assert_valid(g, scheduled, in_place)


def test_writers_reading_each_others_old_values_fall_back_to_a_copy():
    g = _two_weights(cross=True)  # a's writer reads b and b's reads a: no order writes both in place
    scheduled, in_place = schedule_in_place(g)
    assert len(in_place) == 1
    _assert_valid(g, scheduled, in_place)


def test_a_writer_whose_result_another_op_reads_is_copied():
    g = _two_weights(cross=False)
    ob = OpBuilder(g, layer="metrics")
    norm = ob.emit("reduce_sum", ob.mul(g.meta["state_updates"]["a"], g.meta["state_updates"]["a"]), axes=(0,))
    g.set_outputs(list(g.outputs) + [norm])
    scheduled, in_place = schedule_in_place(g)
    assert in_place == {"b"}
    _assert_valid(g, scheduled, in_place)


def _embedding_model() -> Model:
    graphc.utils.set_random_seed(3)
    ids = Input(shape=(4,), dtype="int32")
    h = layers.GlobalAveragePooling1D()(layers.Embedding(300, 16)(ids))
    model = Model(ids, layers.Dense(2)(h))
    model.compile(optimizer="rmsprop", loss="mse")
    return model


def _embedding_library():
    model = _embedding_model()
    files = train_step_library(model)
    return model, Library(files.shared, files.symbol)


def test_in_place_steps_train_as_the_reference_does(rng):
    model, lib = _embedding_library()
    assert "embedding/embeddings" in schedule_in_place(_step_graph(model))[1]  # the table is written in place
    twin = _embedding_model()  # the same weights, trained on the reference
    reference = graphc.build(twin, target="reference", training=True)
    inst = lib.instance(threads=1)
    for step in range(3):
        ids = rng.integers(0, 300, (5, 4)).astype(np.int32)
        y = rng.standard_normal((5, 2)).astype(np.float32)
        got = inst.train_step([ids], [y])
        want = reference.train_step(ids, y)  # its loss: the running mean over the steps so far
        if step == 0:
            np.testing.assert_allclose(got[0], want["loss"], rtol=1e-5)
    for mine, var in zip(model.weights, twin.weights):
        np.testing.assert_allclose(inst.get_weight(mine.path), np.asarray(var.value), rtol=1e-5, atol=1e-6,
                                   err_msg=mine.path)


def test_a_failed_step_leaves_every_weight_as_it_was(rng):
    _, lib = _embedding_library()
    inst = lib.instance(threads=1)
    y = rng.standard_normal((5, 2)).astype(np.float32)
    inst.train_step([rng.integers(0, 300, (5, 4)).astype(np.int32)], [y])
    before = {w.name: inst.get_weight(w.name) for w in lib.weights}
    bad = rng.integers(0, 300, (5, 4)).astype(np.int32)
    bad[2, 1] = 300  # past the table: the gather fails, after the forward has started
    with pytest.raises(NativeError, match="300"):
        inst.train_step([bad], [y])
    for name, value in before.items():
        np.testing.assert_array_equal(inst.get_weight(name), value, err_msg=name)
