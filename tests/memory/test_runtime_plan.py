"""The memory plan a native instance reports (:mod:`graphc.memory.runtime_plan`, ``gc_instance_memory`` and
``gc_instance_scratch``): the plan of its last successful run, whole batches and sub-batches (one after
another and at once, a copy of the arena per thread), placed by graphc.memory's heap algorithm; errors
before a run, after a failed one, and for bad arguments through the C ABI."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import graphc
import graphc.bench
from graphc import examples
from graphc.backends.llvm import batch_split
from graphc.backends.reference.interpreter import InputError
from graphc.memory.planner import GreedyBySizeAllocator, align_up
from graphc.memory.runtime_plan import RuntimeBuffer, RuntimePlan
from graphc.runtime import GcMemoryInfo, GcScratchInfo, NativeError


def _plan_again(plan: RuntimePlan) -> GreedyBySizeAllocator:
    heap = GreedyBySizeAllocator()
    for b in plan.buffers:
        heap.add_buffer(b.nbytes, b.first, b.last)
    return heap


@pytest.mark.parametrize("name", ["inception", "separable_conv_bn", "siamese_lstm", "conv1d_text"])
@pytest.mark.parametrize("batch", [1, 3])
def test_the_plan_that_ran_is_graphc_memorys(name, batch, monkeypatch, tmp_path):
    """Buffers alive together lie apart inside the arena, and the runtime placed each where graphc.memory's
    allocator places it for the same sizes and lifetimes; the scratch holds the graph's values by name."""
    monkeypatch.setenv(batch_split.ENV, "0")  # the batch whole: the sizes are the call's
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    model = examples.build(name, seed=0)
    cm = graphc.build(model, target="native", threads=1)
    plan = cm.memory_plan(graphc.bench.benchmark_feeds(name, batch, model=model))
    plan.check()
    assert plan.buffers and plan.sub_batch == 0 and plan.arena_copies == 1 and plan.threads == 1
    heap = _plan_again(plan)
    assert [b.offset for b in plan.buffers] == heap.offsets() and plan.arena_bytes == heap.arena_bytes()
    assert plan.arena_bytes == max(b.offset + align_up(b.nbytes, 64) for b in plan.buffers)
    assert {b.name for b in plan.buffers} & set(cm.graph.values)
    assert plan.scratch_bytes == plan.arena_bytes + plan.thread_scratch_bytes
    assert cm.memory_plan() == plan  # the last call's plan, read again


def test_a_batch_in_sub_batches_reports_one_sub_batchs_plan(monkeypatch, tmp_path):
    """In sub-batches the buffers are one sub-batch's; one after another on one thread, at once on two
    (an arena per thread); the plan follows the batch size back and forth."""
    monkeypatch.setenv(batch_split.ENV, "64K")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    model = examples.build("residual", seed=0)
    one = graphc.build(model, target="native", threads=1)
    whole = one.memory_plan(graphc.bench.benchmark_feeds("residual", 1, model=model))
    assert whole.sub_batch == 0
    split = one.memory_plan(graphc.bench.benchmark_feeds("residual", 17, model=model))
    assert split.sub_batch == one.instance.sub_batch and split.sub_batch_count == one.instance.sub_batch_count
    assert 1 <= split.sub_batch < 17 and split.arena_copies == 1
    # the sizes of the sub-batch's rows: each buffer that many samples of the one-sample plan's
    for b, w in zip(split.buffers, whole.buffers):
        assert b.name == w.name and b.nbytes == split.sub_batch * w.nbytes
    assert "one after another" in split.format().splitlines()[0]
    two = graphc.build(model, target="native", threads=2)
    at_once = two.memory_plan(graphc.bench.benchmark_feeds("residual", 16, model=model))
    assert at_once.arena_copies == 2 == two.instance.sub_batch_threads and at_once.threads == 2
    assert at_once.scratch_bytes == 2 * at_once.arena_bytes + at_once.thread_scratch_bytes
    assert "at once, one per thread" in at_once.format().splitlines()[0]
    at_once.check()
    again = one.memory_plan(graphc.bench.benchmark_feeds("residual", 1, model=model))
    assert again == whole


def test_no_plan_before_a_run_or_after_a_failed_one(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    model = examples.build("mlp", seed=0)
    cm = graphc.build(model, target="native")
    with pytest.raises(NativeError, match="no memory plan to report: no run has succeeded yet"):
        cm.memory_plan()
    x = graphc.bench.benchmark_feeds("mlp", 2, model=model)
    assert cm.memory_plan(x).buffers
    with pytest.raises(InputError):
        cm.memory_plan(np.zeros((2, 3), np.float32))  # a wrong shape: the run fails before planning
    with pytest.raises(NativeError, match="no run has succeeded yet"):
        cm.memory_plan()


@pytest.mark.parametrize("target", ["reference", "onnx"])
def test_other_targets_say_the_plan_is_the_native_codes(target):
    cm = graphc.build(examples.build("mlp", seed=0), target=target)
    with pytest.raises(ValueError, match=rf"memory_plan\(\) reports the arena of the native code: build the model "
                                         rf"with target='native' \(this one is '{target}'\)"):
        cm.memory_plan()


def test_the_c_abi_refuses_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    model = examples.build("mlp", seed=0)
    cm = graphc.build(model, target="native")
    cm.predict(graphc.bench.benchmark_feeds("mlp", 2, model=model))
    lib, handle, library = cm.library.lib, cm.instance._handle, cm.library
    with pytest.raises(NativeError, match="out is NULL"):
        library.check(lib.gc_instance_memory(handle, None))
    with pytest.raises(NativeError, match="out is NULL"):
        library.check(lib.gc_instance_scratch(handle, 0, None))
    n = lib.gc_model_num_scratch(library.model)
    with pytest.raises(NativeError, match=f"scratch index {n} is out of range: model 'mlp' has {n} scratch"):
        library.check(lib.gc_instance_scratch(handle, n, ctypes.byref(GcScratchInfo())))
    info = GcMemoryInfo()
    library.check(lib.gc_instance_memory(handle, ctypes.byref(info)))
    assert info.arena_copies == 1 and info.arena_bytes == cm.memory_plan().arena_bytes
    assert lib.gc_model_num_scratch(None) == 0


def test_check_catches_overlapping_buffers():
    a, b = RuntimeBuffer("a", 0, 128, 0, 2), RuntimeBuffer("b", 64, 128, 1, 3)
    plan = RuntimePlan("m", 1, 256, 1, 0, 0, 0, 0, (a, b))
    with pytest.raises(AssertionError, match=r"buffers 'a' \[0, 128\) ops 0..2 and 'b' \[64, 192\) ops 1..3 overlap"):
        plan.check()
    with pytest.raises(AssertionError, match="ends at 128 beyond the arena"):
        RuntimePlan("m", 1, 100, 1, 0, 0, 0, 0, (a,)).check()
    RuntimePlan("m", 1, 256, 1, 0, 0, 0, 0, (a, RuntimeBuffer("b", 128, 128, 1, 3))).check()
