"""The split training step: a gradient step (forward, loss, backward into one flat gradient buffer) and an
apply step (the optimizer's update, clipping included, from that buffer) equal the fused step exactly, on
the reference interpreter and in native libraries (gc_instance_gradient_step, gc_instance_apply_gradients,
gc_instance_gradient_buffer), and the apply step reads the buffer as it is when it runs."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers, optimizers
from graphc.runtime import Library, NativeError
from graphc.training.loop import standardize_x
from graphc.training.native_step import train_step_library
from graphc.training.step import gradient_views

OPTIMIZERS = {
    "adam_global_clipnorm": lambda: optimizers.Adam(learning_rate=0.05, global_clipnorm=0.3),
    "sgd_momentum_clipnorm": lambda: optimizers.SGD(learning_rate=0.1, momentum=0.9, clipnorm=0.2),
}


def _model(optimizer, target: str, batchnorm: bool = True):
    graphc.utils.set_random_seed(3)
    x = Input(shape=(4,))
    h = layers.Dense(6, activation="relu")(x)
    if batchnorm:
        h = layers.BatchNormalization()(h)
    model = Model(x, layers.Dense(3)(h))
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    if target == "native":
        graphc.build(model, target="native", training=True, threads=1)
    return model


def _step(model, x, y):
    return model._graphc_trainer._step(standardize_x(model, x), [y], True)


def _batches(rng, n: int = 3):
    return [(rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32))
            for _ in range(n)]


def _state(model):
    opt = model._graphc_trainer.optimizer
    slots = [(name, np.array(value)) for per in opt.slots.values() for name, value in per.items()]  # layer names differ
    return [np.array(w) for w in model.get_weights()], slots, opt._iterations


@pytest.mark.parametrize("target", ["reference", "native"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_gradient_then_apply_equals_the_fused_step(target, opt, rng):
    fused, split = _model(OPTIMIZERS[opt](), target), _model(OPTIMIZERS[opt](), target)
    for x, y in _batches(rng):
        want = _step(fused, x, y).run(standardize_x(fused, x), [y])
        step = _step(split, x, y)
        got = step.compute_gradients(standardize_x(split, x), [y])
        step.apply_gradients()
        for name in list(step.graph.outputs[:step.graph.meta["train_step"]["reported"]]):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    (w_want, s_want, i_want), (w_got, s_got, i_got) = _state(fused), _state(split)
    assert i_got == i_want == 3
    for a, b in zip(w_got, w_want):
        np.testing.assert_array_equal(a, b)
    assert [k for k, _ in s_got] == [k for k, _ in s_want] and s_got
    for (name, a), (_, b) in zip(s_got, s_want):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_native_gradients_equal_the_reference_gradients(rng):
    (x, y), = _batches(rng, 1)
    steps = {}
    for target in ("reference", "native"):
        model = _model(OPTIMIZERS["adam_global_clipnorm"](), target)
        steps[target] = _step(model, x, y)
        steps[target].compute_gradients(standardize_x(model, x), [y])
    ref, nat = steps["reference"].gradient_buffer(), steps["native"].gradient_buffer()
    assert ref.dtype == nat.dtype == np.float32 and ref.shape == nat.shape
    assert ref.size == sum(int(np.prod(e.type.shape)) for e in steps["native"].split().entries)
    np.testing.assert_allclose(nat, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    # the entries follow the optimizer's order: each is its weight's gradient, shaped like it
    split = steps["native"].split()
    for view, e in zip(gradient_views(nat, split.entries), split.entries):
        assert view.shape == split.gradient.type_of(e.value).shape == e.type.shape


@pytest.mark.parametrize("target", ["reference", "native"])
def test_global_clipnorm_clips_the_buffer_as_the_apply_step_finds_it(target, rng):
    """What a collective leaves in the buffer (here: replaced by known values) is what the optimizer clips."""
    model = _model(optimizers.SGD(learning_rate=1.0, global_clipnorm=1.0), target, batchnorm=False)
    (x, y), = _batches(rng, 1)
    step = _step(model, x, y)
    step.compute_gradients(standardize_x(model, x), [y])
    before = [np.array(w) for w in model.get_weights()]
    buffer = step.gradient_buffer()
    assert buffer is step.gradient_buffer() or np.shares_memory(buffer, step.gradient_buffer())
    g = np.linspace(-2.0, 3.0, buffer.size).astype(np.float32)
    buffer[...] = g
    step.apply_gradients()
    after = [np.array(w) for w in model.get_weights()]
    delta = np.concatenate([(b - a).reshape(-1) for a, b in zip(after, before)])  # w - w' = lr * clip(g)
    order = {e.weight: k for k, e in enumerate(step.split().entries)}
    index = {id(v): i for i, v in enumerate(model.weights)}
    expected = np.zeros_like(delta)
    offsets = np.cumsum([0] + [w.size for w in before])
    views = gradient_views(g, step.split().entries)
    for const, var in step.params.items():
        if const in order:
            i = index[id(var)]
            expected[offsets[i]:offsets[i + 1]] = views[order[const]].reshape(-1) / np.linalg.norm(g)
    np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-7)


def test_c_abi_of_the_split_step(rng):
    model = _model(OPTIMIZERS["sgd_momentum_clipnorm"](), "reference")
    files = train_step_library(model, name="split_abi", split_step=True)
    library = Library(files.shared, files.symbol)
    assert library.has_gradient_step and library.has_train_step and library.has_eval_step
    train = _step(model, *_batches(rng, 1)[0])
    entries = train.split().entries
    assert [(info.name, info.shape, off) for info, off in library.gradients] == \
        [(e.weight, e.type.shape, e.offset) for e in entries]
    fused, split = library.instance(1), library.instance(1)
    buffer = split.gradient_buffer()
    assert buffer.dtype == np.float32 and buffer.nbytes == train.split().nbytes
    for x, y in _batches(rng):
        want = fused.train_step([x], [y])
        got = split.gradient_step([x], [y])
        split.apply_gradients()
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert np.shares_memory(buffer, split.gradient_buffer()) and np.any(buffer != 0)
    for info in library.weights:
        np.testing.assert_array_equal(split.get_weight(info.name), fused.get_weight(info.name), err_msg=info.name)
    # a library built without the split step refuses its calls, naming what is missing
    plain = Library(train_step_library(model, name="split_abi_plain").shared, "split_abi_plain")
    assert not plain.has_gradient_step and plain.gradients == []
    inst = plain.instance(1)
    for call in (inst.gradient_buffer, inst.apply_gradients, lambda: inst.gradient_step([x], [y])):
        with pytest.raises(NativeError, match="without a split step") as err:
            call()
        assert err.value.code_name == "GC_UNIMPLEMENTED"
