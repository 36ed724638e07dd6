"""The native training step profiled kernel by kernel (graphc.bench.native_profile.profile_training_step)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.bench.native_profile import profile_training_step


def _conv_model():
    x = Input(shape=(9, 8, 3), name="image")
    h = layers.Conv2D(5, 3, padding="same", activation="relu", name="conv")(x)
    y = layers.Dense(2, name="out")(layers.Flatten(name="flat")(h))
    model = Model(x, y, name="conv_step")
    model.compile(optimizer="rmsprop", loss="mse")
    return model


def test_training_step_kernels_are_named_by_layer_and_state_is_untouched(rng):
    model = _conv_model()
    graphc.build(model, target="native", training=True, threads=1)
    x = rng.standard_normal((4, 9, 8, 3)).astype(np.float32)
    y = rng.standard_normal((4, 2)).astype(np.float32)
    report = profile_training_step(model, x, y, runs=2, peak=None)
    ops = {r.op for r in report.rows}
    # forward, backward (both convolution gradients are not needed: the input's is) and the update
    assert {"conv_grad_kernel"} <= ops and any("matmul" in op for op in ops), sorted(ops)
    assert any(r.name == "optimizer" for r in report.rows)
    assert report.row("conv").launches >= 1 and report.runs == 2
    assert sum(r.share for r in report.rows) == pytest.approx(1.0)
    assert 0 < report.kernel_ms <= report.run_ms * 1.01
    assert "training step" in report.to_markdown()
    # the profiled instance is a second one: the model's weights and iteration count are untouched
    before = model.get_weights()
    profile_training_step(model, x, y, runs=1, peak=None)
    assert model.optimizer._iterations == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)

def test_rows_follow_the_order_the_native_step_runs(rng):
    """The step runs its in-place state updates last (ops reordered): the profile's op numbers are that
    schedule's, so each row carries the name and op of the kernel that was timed."""
    from graphc.backends.llvm.in_place import native_schedule
    from graphc.training.loop import standardize_x, standardize_y

    model = _conv_model()
    graphc.build(model, target="native", training=True, threads=1)
    x = rng.standard_normal((4, 9, 8, 3)).astype(np.float32)
    y = rng.standard_normal((4, 2)).astype(np.float32)
    report = profile_training_step(model, x, y, runs=1, peak=None)
    trainer = model._graphc_trainer
    graph = trainer.runner.compiled(trainer._step(standardize_x(model, x), standardize_y(model, y), True)).graph
    scheduled, in_place = native_schedule(graph)
    assert in_place and [op.id for op in scheduled.ops()] != [op.id for op in graph.ops()]
    ops = scheduled.ops()
    assert [(r.name, r.op) for r in report.rows] == [(ops[r.index].layer or ops[r.index].id, ops[r.index].type)
                                                     for r in report.rows]
    last = max(report.rows, key=lambda r: r.index)
    assert last.name == "optimizer", last


def test_a_model_without_a_native_step_is_refused(rng):
    model = _conv_model()
    x = np.zeros((2, 9, 8, 3), np.float32)
    with pytest.raises(ValueError, match="training=True"):
        profile_training_step(model, x, np.zeros((2, 2), np.float32), runs=1, peak=None)
