"""Large batches as consecutive sub-batches (:mod:`graphc.backends.llvm.batch_split`).

Which graphs qualify (every input and output led by the batch, no op mixing samples), and on the native
runtime: outputs equal to the reference and, bit for bit, to separate calls over the sub-batches the run
reports (odd batches, a short last sub-batch, several inputs and outputs, caller buffers), sub-batches at
once on several threads, one instance going back and forth between batch sizes that split (at once or in
turn) and sizes that do not, one profiled run per call, a failure in a later sub-batch reported as in a
whole run.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

import graphc
import graphc.bench
from graphc import examples
from graphc.backends.llvm import batch_split, switches
from graphc.backends.llvm.kernels.gemm_blocking import CacheSizes, caches_for
from graphc.backends.reference.interpreter import run as reference_run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder
from graphc.passes import optimize
from tests.backends.llvm.helpers import load


def _graph(build) -> Graph:
    g = Graph("batch_split_case")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("N", 6, 5)))
    g.set_outputs([build(g, ob, x)])
    return g


def _weight(g, shape):
    return g.add_constant(f"w{len(g.constants)}", np.ones(shape, np.float32))


@pytest.mark.parametrize("name", [n for n in examples.names() if n != "stereo_xception"])
def test_the_examples_run_in_sub_batches(name):
    assert batch_split.batch_dim(optimize(graphc.lower(examples.build(name, seed=0)), 2)) == "batch"


PER_SAMPLE = {
    "softmax over the last axis": lambda g, ob, x: ob.emit("softmax", x, axis=-1),
    "reduce over axis 1": lambda g, ob, x: ob.emit("reduce_sum", x, axes=(1,), keepdims=False),
    "reshape keeping the batch": lambda g, ob, x: ob.emit("reshape", x, shape=("N", 30)),
    "rows of a product": lambda g, ob, x: ob.emit("reshape", ob.emit("matmul", ob.emit(
        "reshape", x, shape=(dims_mul("N", 6), 5)), _weight(g, (5, 3))), shape=("N", 6, 3)),
    "transpose keeping axis 0": lambda g, ob, x: ob.emit("transpose", x, perm=(0, 2, 1)),
    "a batched product per sample": lambda g, ob, x: ob.emit("matmul", x, ob.emit("transpose", x, perm=(0, 2, 1))),
    "a weight broadcast": lambda g, ob, x: ob.emit("add", x, _weight(g, (6, 5))),
    "a slice along axis 2 and softmax by default": lambda g, ob, x: ob.emit(
        "softmax", ob.emit("concat", ob.emit("slice", x, axis=2, start=0, stop=2), ob.emit("slice", x, axis=-1,
                                                                                            start=2), axis=2)),
}

MIXING = {
    "reduce over the batch": lambda g, ob, x: ob.emit("reduce_sum", x, axes=(0,), keepdims=True),
    "reduce over everything": lambda g, ob, x: ob.emit("add", x, ob.emit("reduce_sum", x, axes=(0, 1, 2),
                                                                          keepdims=True)),
    "softmax over the batch": lambda g, ob, x: ob.emit("softmax", x, axis=0),
    "transpose moving the batch": lambda g, ob, x: ob.emit("transpose", ob.emit("transpose", x, perm=(1, 0, 2)),
                                                            perm=(1, 0, 2)),
    "concat along the batch": lambda g, ob, x: ob.emit("concat", x, x, axis=0),
    "slice of the batch": lambda g, ob, x: ob.emit("concat", ob.emit("slice", x, axis=0, start=0, stop=1),
                                                   ob.emit("slice", x, axis=0, start=1), axis=0),
    "a product over the batch": lambda g, ob, x: ob.emit(
        "reshape", ob.emit("matmul", ob.emit("transpose", ob.emit("reshape", x, shape=("N", 30)), perm=(1, 0)),
                           ob.emit("reshape", x, shape=("N", 30))), shape=(30, 30)),
}


def dims_mul(a, b):
    from graphc.ir import dims

    return dims.mul(a, b)


@pytest.mark.parametrize("case", sorted(PER_SAMPLE))
def test_ops_that_keep_samples_apart_qualify(case):
    assert batch_split.batch_dim(_graph(PER_SAMPLE[case])) == "N"


@pytest.mark.parametrize("case", sorted(MIXING))
def test_ops_that_mix_samples_keep_the_batch_whole(case):
    assert batch_split.batch_dim(_graph(MIXING[case])) is None


def test_inputs_without_the_batch_and_training_steps_keep_it_whole():
    g = Graph("two_inputs")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("N", 4)))
    w = g.add_input("w", TensorType("float32", (4, 3)))  # an input every sample shares
    g.set_outputs([ob.emit("matmul", x, w)])
    assert batch_split.batch_dim(g) is None
    g2 = _graph(PER_SAMPLE["softmax over the last axis"])
    g2.meta["train_step"] = {"targets": []}
    assert batch_split.batch_dim(g2) is None


def test_budget_from_the_caches_and_the_environment(monkeypatch):
    caches = CacheSizes(l1=32 << 10, l2=1 << 20, l3=32 << 20)
    monkeypatch.delenv(batch_split.ENV, raising=False)
    assert batch_split.budget_bytes(caches) == 1 << 20
    monkeypatch.setenv(batch_split.ENV, "0")
    assert batch_split.budget_bytes(caches) == 0
    monkeypatch.setenv(batch_split.ENV, "123456")
    assert batch_split.budget_bytes(caches) == 123456
    monkeypatch.setenv(batch_split.ENV, "2M")
    assert batch_split.budget_bytes(caches) == 2 << 20
    for bad in ("-1", "lots"):
        monkeypatch.setenv(batch_split.ENV, bad)
        with pytest.raises(ValueError, match="GRAPHC_BATCH_SPLIT"):
            batch_split.budget_bytes(caches)


def _example(name: str):
    """(optimized graph, feeds(batch, seed)) of a bundled example: its own inputs (valid ids, lengths)."""
    model = examples.build(name, seed=0)
    graph = optimize(graphc.lower(model), 2)
    return graph, lambda batch, seed=0: graphc.bench.benchmark_feeds(name, batch, seed, model=model)


def _split_pieces(inst, feeds, names, batch: int, count: int):
    """The outputs of separate calls over the ``count`` sub-batches of the last run (as the instance reports
    them), concatenated."""
    starts = inst.sub_batch_starts
    assert len(starts) == count + 1 and starts[0] == 0 and starts[-1] == batch
    sizes = np.diff(starts)
    assert sizes.min() >= batch // count and sizes.max() == -(-batch // count)
    parts = [inst.run([np.ascontiguousarray(feeds[n][s:e]) for n in names]) for s, e in zip(starts, starts[1:])]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


@pytest.mark.parametrize("name", ["inception", "residual", "siamese_lstm", "qa_two_inputs", "multi_output",
                                  "conv1d_text", "merge", "mlp"])
def test_sub_batches_equal_separate_calls_and_the_reference(name, monkeypatch, tmp_path, rng):
    """A budget of one byte runs one sample at a time; one of a few kilobytes several (the last sub-batch
    shorter): the outputs equal the reference, and the outputs of separate calls over the same sub-batches
    bit for bit, on 1 and 2 threads, into the instance's buffers and into the caller's (every op per
    sub-batch: no batch's tail, whose ops run over the whole batch)."""
    monkeypatch.setenv(switches.BATCH_TAIL.name, "0")
    graph, make_feeds = _example(name)
    for budget in ("1", "60000"):
        monkeypatch.setenv(batch_split.ENV, budget)
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / budget))
        lib = load(graph, f"split_{name}_{budget}")
        names = [i.name for i in lib.inputs]
        for batch in (7, 17):
            feeds = make_feeds(batch, batch)
            want = reference_run(graph, feeds)
            for threads in (1, 2):
                inst = lib.instance(threads)
                try:
                    got = inst.run([feeds[n] for n in names])
                    rows, count = inst.sub_batch, inst.sub_batch_count
                    assert 0 < rows < batch if budget == "1" else 0 <= rows < batch
                    if budget == "1":
                        assert rows == 1
                    for out_name, g in zip(graph.outputs, got):
                        w = np.asarray(want[out_name])
                        assert g.shape == w.shape
                        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=f"{name} {out_name}")
                    buffers = [np.full_like(g, np.nan) for g in got]
                    inst.run([feeds[n] for n in names], out=buffers)
                    for g, b in zip(got, buffers):
                        np.testing.assert_array_equal(g, b)
                    if rows:
                        assert rows == -(-batch // count)
                        separate = _split_pieces(inst, feeds, names, batch, count)
                        for g, s in zip(got, separate):
                            np.testing.assert_array_equal(g, s)
                finally:
                    inst.close()


@contextmanager
def _instance(monkeypatch, tmp_path, name: str, budget: str, threads: int = 1):
    """(graph, library, instance, feeds(batch, seed)) of example ``name`` built with ``budget``."""
    monkeypatch.setenv(batch_split.ENV, budget)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    graph, make_feeds = _example(name)
    lib = load(graph, f"split_{name}_{budget}")
    inst = lib.instance(threads)
    try:
        yield graph, lib, inst, make_feeds
    finally:
        inst.close()


def test_one_instance_across_batch_sizes(monkeypatch, tmp_path):
    """Sizes that split and sizes that do not, in turn on one instance: every output has its call's batch
    and the reference's values (the plan, the output shapes and the choice follow the call)."""
    with _instance(monkeypatch, tmp_path, "inception", "1", threads=2) as (graph, lib, inst, make_feeds):
        for batch in (5, 1, 5, 3, 1, 9, 9):
            feeds = make_feeds(batch)
            got = inst.run([feeds[i.name] for i in lib.inputs])
            assert inst.sub_batch == (1 if batch > 1 else 0)
            assert inst.sub_batch_threads == (2 if batch == 9 else 1 if batch > 1 else 0)
            want = reference_run(graph, feeds)
            for out_name, g in zip(graph.outputs, got):
                assert g.shape[0] == batch
                np.testing.assert_allclose(g, want[out_name], rtol=1e-4, atol=1e-4)


def test_whole_batch_when_switched_off(monkeypatch, tmp_path):
    with _instance(monkeypatch, tmp_path, "residual", "0") as (graph, lib, inst, make_feeds):
        feeds = make_feeds(5)
        inst.run([feeds[i.name] for i in lib.inputs])
        assert inst.sub_batch == 0
        assert inst.sub_batch_count == 0 and inst.sub_batch_starts == []
        assert lib.lib.gc_instance_sub_batch_start(inst._handle, 0) == -1


def _profile_residual(monkeypatch, tmp_path, threads: int, batch: int):
    """The profile of the residual example over ``batch`` samples, one at a time or at once."""
    monkeypatch.setenv(batch_split.ENV, "1")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    model = examples.build("residual", seed=0)
    cm = graphc.build(model, target="native", threads=threads)
    x = graphc.bench.benchmark_feeds("residual", batch, model=model)
    return cm.profile(x, runs=3, warmup=1, peak=False)


def test_a_profiled_call_is_one_run(monkeypatch, tmp_path):
    report = _profile_residual(monkeypatch, tmp_path, 1, 6)
    assert report.sub_batch == 1 and "in sub-batches of 1 sample(s)" in str(report)
    assert report.runs == 3
    assert all(r.launches == 6 for r in report.rows)  # each kernel once per sample
    assert report.run_ms >= report.kernel_ms * 0.9  # the run spans its six sub-batches' kernels


def test_a_failure_in_a_later_sub_batch_is_reported(monkeypatch, tmp_path):
    """An id out of range in the last sample fails the call with the message a whole run gives."""
    with _instance(monkeypatch, tmp_path, "qa_two_inputs", "1") as (graph, lib, inst, make_feeds):
        feeds = make_feeds(6)
        first = lib.inputs[0].name
        feeds[first] = feeds[first].copy()
        feeds[first][-1, 0] = 10 ** 6
        with pytest.raises(Exception, match="1000000 is out of range"):
            inst.run([feeds[i.name] for i in lib.inputs])
        good = make_feeds(6, 1)
        got = inst.run([good[i.name] for i in lib.inputs])  # the instance runs on afterwards
        want = reference_run(graph, good)
        for out_name, g in zip(graph.outputs, got):
            np.testing.assert_allclose(g, want[out_name], rtol=1e-4, atol=1e-4)


def _at_once(batch: int, threads: int) -> bool:
    """Whether sub-batches of one sample run at once, one per thread (instance.c, gc__sub_batch_count): the
    threads share them evenly, or each has at least four, so that the last round costs little."""
    return batch % threads == 0 or batch >= 4 * threads


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("name", ["inception", "residual", "siamese_lstm", "qa_two_inputs", "multi_output"])
def test_sub_batches_at_once_one_per_thread(name, threads, monkeypatch, tmp_path):
    """On several threads, sub-batches run at once, each on its own thread and scratch, where they share
    out evenly enough (else in turn, each op over the threads): the outputs equal a one-thread instance's
    bit for bit (its sub-batches run one after another) and the reference, into the instance's buffers and
    the caller's."""
    with _instance(monkeypatch, tmp_path, name, "1", threads=threads) as (graph, lib, inst, make_feeds):
        one = lib.instance(1)
        names = [i.name for i in lib.inputs]
        try:
            for batch in (threads, 2 * threads + 1, 4 * threads + 1, 17, threads):
                feeds = make_feeds(batch, batch)
                got = inst.run([feeds[n] for n in names])
                assert inst.sub_batch == 1
                assert inst.sub_batch_threads == (threads if _at_once(batch, threads) else 1), batch
                turn = one.run([feeds[n] for n in names])
                assert one.sub_batch == 1 and one.sub_batch_threads == 1
                want = reference_run(graph, feeds)
                for out_name, g, t in zip(graph.outputs, got, turn):
                    np.testing.assert_array_equal(g, t, err_msg=f"{name} {out_name} batch {batch}")
                    np.testing.assert_allclose(g, want[out_name], rtol=1e-4, atol=1e-4)
                buffers = [np.full_like(g, np.nan) for g in got]
                inst.run([feeds[n] for n in names], out=buffers)
                for g, b in zip(got, buffers):
                    np.testing.assert_array_equal(g, b)
        finally:
            one.close()


def test_sub_batches_of_several_samples_at_once(monkeypatch, tmp_path):
    """A budget of a few samples: as many sub-batches as a multiple of the threads, their samples as even
    as the batch allows (each thread's share within a sample of the other's) and no more than the budget
    holds; the outputs those of separate calls over them."""
    with _instance(monkeypatch, tmp_path, "inception", "10000000", threads=2) as (graph, lib, inst, make_feeds):
        names = [i.name for i in lib.inputs]
        one = lib.instance(1)
        try:
            for batch in (16, 17, 18, 22, 31):  # 18 and 22: two sub-batches a sample longer, one per thread
                feeds = make_feeds(batch, batch)
                got = inst.run([feeds[n] for n in names])
                one.run([feeds[n] for n in names])
                rows, turn_rows, count = inst.sub_batch, one.sub_batch, inst.sub_batch_count
                assert 1 < rows <= turn_rows < batch, (rows, turn_rows)
                assert inst.sub_batch_threads == 2 and count % 2 == 0 and rows == -(-batch // count)
                assert count == 2 * -(-one.sub_batch_count // 2)  # the one-thread count made even
                # each thread runs a half of the sub-batches (gc__parallel_for starts the second at count / 2)
                starts = inst.sub_batch_starts
                shares = [starts[count // 2] - starts[0], starts[count] - starts[count // 2]]
                assert abs(shares[0] - shares[1]) <= 1, (batch, starts)
                start = lib.lib.gc_instance_sub_batch_start
                assert [start(inst._handle, b) for b in (-1, count + 1)] == [-1, -1]
                assert start(None, 0) == -1
                # one after another: the first batch % count one sample longer
                n1, s1 = one.sub_batch_count, one.sub_batch_starts
                assert s1 == [b * (batch // n1) + min(b, batch % n1) for b in range(n1 + 1)]
                separate = _split_pieces(inst, feeds, names, batch, count)
                for g, s in zip(got, separate):
                    np.testing.assert_array_equal(g, s)
                want = reference_run(graph, feeds)
                for out_name, g in zip(graph.outputs, got):
                    np.testing.assert_allclose(g, want[out_name], rtol=1e-4, atol=1e-4)
        finally:
            one.close()


def test_a_failure_in_a_sub_batch_run_at_once_is_reported(monkeypatch, tmp_path):
    """An id out of range in a sub-batch another thread runs fails the call with the whole run's message;
    the instance runs on."""
    with _instance(monkeypatch, tmp_path, "qa_two_inputs", "1", threads=2) as (graph, lib, inst, make_feeds):
        for bad in (7, 2):
            feeds = make_feeds(8)
            first = lib.inputs[0].name
            feeds[first] = feeds[first].copy()
            feeds[first][bad, 0] = 10 ** 6
            with pytest.raises(Exception, match="1000000 is out of range"):
                inst.run([feeds[i.name] for i in lib.inputs])
            good = make_feeds(8, 1)
            got = inst.run([good[i.name] for i in lib.inputs])
            assert inst.sub_batch_threads == 2
            want = reference_run(graph, good)
            for out_name, g in zip(graph.outputs, got):
                np.testing.assert_allclose(g, want[out_name], rtol=1e-4, atol=1e-4)


def test_a_profile_of_sub_batches_at_once(monkeypatch, tmp_path):
    """Each kernel is timed on the thread that ran it: once per sample, events naming both threads, the
    rows adding up the threads' times (about twice the run's), the trace one row per thread."""
    report = _profile_residual(monkeypatch, tmp_path, 2, 8)
    assert report.sub_batch == 1 and report.sub_batch_threads == 2
    assert "2 at a time, one per thread" in str(report)
    assert report.kernel_threads == 1 and report.to_dict()["sub_batch_threads"] == 2
    assert all(r.launches == 8 for r in report.rows)
    kernel_threads = {thread for op, _, _, thread in report.events if op >= 0}
    assert kernel_threads == {0, 1}
    assert report.kernel_ms <= 2 * report.run_ms
    assert report.dropped_events == 0
    trace = report.trace()
    assert {e["tid"] for e in trace["traceEvents"] if e.get("cat") == "kernel"} == {0, 1}


SMALL_CACHES = CacheSizes(l1=32 << 10, l2=128 << 10, l3=1 << 20)


def _product_per_sample(rows: int, features: int, units: int) -> Graph:
    """Each sample's ``rows`` rows of ``features`` (after a ReLU) times a (features, units) weight."""
    g = Graph(f"product_{rows}_rows")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("N", rows, features)))
    rows_of = ob.emit("reshape", ob.emit("relu", x), shape=(dims_mul("N", rows), features))
    w = g.add_constant("w", np.random.default_rng(1).standard_normal((features, units)).astype(np.float32))
    g.set_outputs([ob.emit("reshape", ob.emit("matmul", rows_of, w), shape=("N", rows, units))])
    return g


def test_weights_reread_from_memory_per_sample(monkeypatch):
    """A product of one row per sample by 2 MiB of weights does 0.5 FLOPs per byte: beyond a 1 MiB L3 a
    sample at a time waits for them; the same weights over 64 rows per sample, or within the L3, do not;
    a free dim besides the batch leaves a sample's work unknown."""
    monkeypatch.delenv(batch_split.ENV, raising=False)
    one_row = _product_per_sample(1, 1024, 512)
    assert batch_split.rereads_weights(one_row, "N", SMALL_CACHES)
    assert not batch_split.rereads_weights(_product_per_sample(64, 1024, 512), "N", SMALL_CACHES)
    assert not batch_split.rereads_weights(one_row, "N", CacheSizes(l1=32 << 10, l2=128 << 10, l3=4 << 20))
    g = Graph("free_rows")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("N", "T", 1024)))
    w = g.add_constant("w", np.ones((1024, 512), np.float32))
    g.set_outputs([ob.emit("matmul", x, w)])
    assert not batch_split.rereads_weights(g, "N", SMALL_CACHES)
    # with the product in the batch's tail the sub-batches read no weights; without a tail the default
    # budget gives the split up; a budget the user set splits as it says
    assert batch_split.split_plan(one_row, "N", SMALL_CACHES) == (128 << 10, 1)
    monkeypatch.setenv(switches.BATCH_TAIL.name, "0")
    assert batch_split.split_plan(one_row, "N", SMALL_CACHES) == (0, None)
    assert batch_split.split_plan(_product_per_sample(64, 1024, 512), "N", SMALL_CACHES) == (128 << 10, None)
    monkeypatch.setenv(batch_split.ENV, "64K")
    assert batch_split.split_plan(one_row, "N", SMALL_CACHES) == (64 << 10, None)


@pytest.mark.parametrize("budget, split", [("", False), ("64K", True)])
def test_a_model_that_rereads_its_weights_runs_whole(budget, split, monkeypatch, tmp_path, rng):
    """On the native runtime, with caches of 128 KiB (L2) and 1 MiB (L3): 64 x 256 features per sample take
    64 KiB of scratch, two samples a sub-batch, but their product of one row by 2 MiB of weights keeps the
    batch whole under the default budget where it cannot run in a batch's tail; a budget set in
    GRAPHC_BATCH_SPLIT still splits it. The outputs are the reference's either way."""
    monkeypatch.setenv(switches.BATCH_TAIL.name, "0")
    if budget:
        monkeypatch.setenv(batch_split.ENV, budget)
    else:
        monkeypatch.delenv(batch_split.ENV, raising=False)
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l2=128K,l3=1M")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    g = Graph("flat_product")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("N", 64, 256)))
    flat = ob.emit("reshape", ob.emit("relu", x), shape=("N", 64 * 256))
    w = g.add_constant("w", (rng.standard_normal((64 * 256, 32)) / 128).astype(np.float32))
    g.set_outputs([ob.emit("matmul", flat, w)])
    assert batch_split.batch_dim(g) == "N"
    lib = load(g, f"flat_product_{budget or 'default'}")
    inst = lib.instance(1)
    try:
        feeds = {"x": rng.standard_normal((7, 64, 256)).astype(np.float32)}
        got = inst.run([feeds["x"]])[0]
        assert (inst.sub_batch > 0) == split
        np.testing.assert_allclose(got, reference_run(g, feeds)[g.outputs[0]], rtol=1e-4, atol=1e-4)
    finally:
        inst.close()


def _graph_with_a_tail(rng) -> Graph:
    """Three elementwise ops over 64 KiB per sample (each result dead once the next is made, so that their
    buffers may share memory), then a product by 1 MiB of weights down to 16 values per sample."""
    g = Graph("with_a_tail")
    ob = OpBuilder(g)
    x = g.add_input("x", TensorType("float32", ("N", 32, 32, 16)))
    a = ob.emit("relu", x)
    b = ob.emit("mul", a, a)
    c = ob.emit("add", ob.emit("mul", b, b), b)
    w = g.add_constant("w", (rng.standard_normal((32 * 32 * 16, 16)) / 128).astype(np.float32))
    g.set_outputs([ob.emit("relu", ob.emit("matmul", ob.emit("reshape", c, shape=("N", 32 * 32 * 16)), w))])
    return g


@pytest.mark.parametrize("threads, batch", [(1, 5), (2, 6), (2, 5)])
def test_the_batch_tail_runs_once_over_the_whole_batch(threads, batch, monkeypatch, tmp_path, rng):
    """With a 64 KiB L2 and a 512 KiB L3, the tail forced, the elementwise ops run a sample at a time and the
    product (1 MiB of weights, 16 values per sample) once over the whole batch, reading the buffer the
    sub-batches filled: outputs equal
    the reference, and bit for bit those of a build that never splits (the elementwise ops do the same
    arithmetic either way). The buffer across the tail's first op is planned to live through every
    sub-batch (a buffer of an earlier op sharing its memory would overwrite the samples already there)."""
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l2=64K,l3=512K")
    monkeypatch.setenv(switches.BATCH_TAIL.name, "force")  # kept where a convolution gains; here to test
    monkeypatch.delenv(batch_split.ENV, raising=False)
    g = _graph_with_a_tail(rng)
    tail = batch_split.batch_tail(g, "N", caches_for(True))
    assert tail is not None and g.ops()[tail].type == "matmul"
    feeds = {"x": rng.standard_normal((batch, 32, 32, 16)).astype(np.float32)}
    want = reference_run(g, feeds)[g.outputs[0]]
    results = {}
    for budget in ("", "0"):
        if budget:
            monkeypatch.setenv(batch_split.ENV, budget)
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / (budget or "default")))
        lib = load(g, f"with_a_tail_{budget or 'default'}")
        assert lib.batch_tail_op == (tail if not budget else -1)
        inst = lib.instance(threads, profile=not budget)
        try:
            results[budget] = inst.run([feeds["x"]])[0]
            assert inst.sub_batch == (1 if not budget else 0)
            if not budget:
                plan = inst.memory_plan()
                plan.check()
                crossing = [b for b in plan.buffers if b.last >= tail and b.first < tail]
                assert crossing and all(b.first == 0 for b in crossing)
                launches = inst.profile().op_launches  # per op: the head's once per sample, the tail's once
                assert all(n in (0, batch) for n in launches[:tail])  # (0: a view, no kernel)
                assert any(launches[:tail]) and launches[tail] == 1
        finally:
            inst.close()
    np.testing.assert_allclose(results[""], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(results[""], results["0"])


def test_a_tail_that_does_not_pay_is_dropped(monkeypatch, tmp_path, rng):
    """By default the same graph's candidate tail (no convolution gaining from the batch) is dropped, and the
    weights rule then sees every op: the product by 1 MiB of weights beyond the 512 KiB L3, one row per
    sample, keeps the batch whole."""
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l2=64K,l3=512K")
    monkeypatch.delenv(switches.BATCH_TAIL.name, raising=False)
    monkeypatch.delenv(batch_split.ENV, raising=False)
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    g = _graph_with_a_tail(rng)
    assert batch_split.batch_tail(g, "N", caches_for(True)) is not None
    lib = load(g, "tail_dropped")
    assert lib.batch_tail_op == -1
    inst = lib.instance(1)
    try:
        feeds = {"x": rng.standard_normal((5, 32, 32, 16)).astype(np.float32)}
        got = inst.run([feeds["x"]])[0]
        assert inst.sub_batch == 0
        np.testing.assert_allclose(got, reference_run(g, feeds)[g.outputs[0]], rtol=1e-5, atol=1e-5)
    finally:
        inst.close()
