"""The CPython call path into native instances (graphc/fastcall.py, c_runtime/python/fastcall.c):
every call it takes gives what the ctypes path gives, every call it cannot take (a new signature,
another dtype, a strided array, a busy instance, wrong output buffers) falls back to the path that
checks and explains, and changed weights are never missed."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import graphc
from graphc import layers
from graphc.backends.reference.interpreter import InputError
from graphc.fastcall import runner_type, unavailable_reason
from graphc.runtime import NativeError
from tests.runtime.conftest import abi_graph, abi_inputs


def _reference(inputs):
    out = graphc.api.run(abi_graph(), {"ids": inputs[0], "x": inputs[1]})
    return [out["y"], out["pooled"]]


def _mlp(units=(7, 3)):
    inp = graphc.Input((17,))
    h = layers.Dense(units[0], activation="relu")(inp)
    return graphc.Model(inp, layers.Dense(units[1], activation="softmax")(h))


def test_the_call_path_is_built_here():
    assert runner_type() is not None, unavailable_reason()


def test_fast_calls_equal_the_ctypes_path_across_changing_signatures(abi):
    fast = abi.instance(threads=1)
    slow = abi.instance(threads=1)
    slow._fast = None  # the ctypes path alone
    assert fast._fast is not None
    for batch, seq in [(1, 1), (3, 7), (3, 7), (17, 3), (1, 1), (17, 3), (17, 3), (7, 17)]:
        inputs = abi_inputs(batch, seq, seed=batch * seq)
        got, want = fast.run(inputs), slow.run(inputs)
        for g, w, r in zip(got, want, _reference(inputs)):
            np.testing.assert_array_equal(g, w)
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_inputs_the_call_path_cannot_take_get_the_checked_path(abi):
    inst = abi.instance(threads=1)
    good = abi_inputs(3, 5)
    want = inst.run(good)
    inst.run(good)
    with pytest.raises(NativeError, match="dtype"):
        inst.run([good[0].astype(np.int64), good[1]])
    strided = np.zeros((3, 16), np.float32)[:, ::2]
    with pytest.raises(NativeError, match="C-contiguous"):
        inst.run([good[0], strided])
    with pytest.raises(NativeError, match="2 input"):
        inst.run([good[0]])
    with pytest.raises(TypeError, match="sequence of input arrays"):
        inst.run(good[1])
    for w, g in zip(want, inst.run(good)):
        np.testing.assert_array_equal(g, w)


def test_outputs_into_caller_buffers(abi):
    inst = abi.instance(threads=1)
    inputs = abi_inputs(7, 3, seed=2)
    want = inst.run(inputs)
    for _ in range(2):  # the first call of a signature (ctypes path), then the call path
        out = [np.full(w.shape, np.nan, np.float32) for w in want]
        got = inst.run(inputs, out=out)
        assert all(g is o for g, o in zip(got, out))
        for w, o in zip(want, out):
            np.testing.assert_array_equal(o, w)
    with pytest.raises(NativeError, match=r"out\[0\] must be a writable C-contiguous float32 array of shape \(7, 4\)"):
        inst.run(inputs, out=[np.zeros((7, 5), np.float32), np.zeros((7, 8), np.float32)])
    read_only = np.zeros((7, 8), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(NativeError, match=r"out\[1\]"):
        inst.run(inputs, out=[np.zeros((7, 4), np.float32), read_only])
    with pytest.raises(NativeError, match="2 output"):
        inst.run(inputs, out=[np.zeros((7, 4), np.float32)])


def test_a_closed_instance_refuses_the_call(abi):
    inst = abi.instance(threads=1)
    inputs = abi_inputs(2, 2)
    inst.run(inputs)
    inst.close()
    with pytest.raises(NativeError, match="closed"):
        inst.run(inputs)


def test_threads_sharing_an_instance_get_answers_or_the_in_use_error(abi):
    inst = abi.instance(threads=1)
    inputs = abi_inputs(64, 50, seed=3)
    want = inst.run(inputs)
    outcomes: list[str] = []

    def worker():
        for _ in range(200):
            try:
                got = inst.run(inputs)
            except NativeError as exc:
                assert "in use by another thread" in exc.message
                outcomes.append("refused")
                continue
            for w, g in zip(want, got):
                np.testing.assert_array_equal(g, w)
            outcomes.append("ok")

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 600 and "ok" in outcomes


def test_compiled_model_predict_and_run(rng):
    model = _mlp()
    cm = graphc.build(model, "native", threads=1)
    name = cm.graph.inputs[0]
    for n in (1, 3, 17, 1, 3):
        x = rng.standard_normal((n, 17)).astype(np.float32)
        want = graphc.build(model, "reference").predict(x)
        for _ in range(2):
            np.testing.assert_allclose(cm.predict(x), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cm(x), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cm.predict(x.astype(np.float64)), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cm.predict([x]), want, rtol=1e-5, atol=1e-6)
            buf = np.empty((n, 3), np.float32)
            assert cm.run({name: x}, out=[buf])[cm.graph.outputs[0]] is buf
            np.testing.assert_allclose(buf, want, rtol=1e-5, atol=1e-6)
    x = rng.standard_normal((70, 17)).astype(np.float32)  # more than one batch of 32
    np.testing.assert_allclose(cm.predict(x), graphc.build(model, "reference").predict(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError):
        cm.predict(rng.standard_normal((3, 16)).astype(np.float32))


def test_changed_weights_are_seen_by_the_next_call(rng):
    model = _mlp()
    x = rng.standard_normal((3, 17)).astype(np.float32)
    cm = graphc.build(model, "native", threads=1)
    cm.predict(x)
    cm.predict(x)
    for _ in range(3):
        model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
        want = graphc.build(model, "reference").predict(x)
        np.testing.assert_allclose(cm.predict(x), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
        model.layers[1].kernel.assign(np.zeros((17, 7), np.float32))
        want = graphc.build(model, "reference").predict(x)
        np.testing.assert_allclose(cm.predict(x), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)


def test_compiled_model_serializes_threads(rng):
    model = _mlp((64, 5))
    cm = graphc.build(model, "native", threads=1)
    xs = [rng.standard_normal((n, 17)).astype(np.float32) for n in (1, 3, 7, 17)]
    wants = [cm.predict(x) for x in xs]
    errors = []

    def worker(k):
        try:
            for i in range(300):
                j = (i + k) % len(xs)
                np.testing.assert_array_equal(cm.predict(xs[j]), wants[j])
        except Exception as exc:  # reported below: a thread's assertion would be lost otherwise
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_switched_off_by_the_environment():
    code = ("import graphc.fastcall as f; assert f.runner_type() is None; print(f.unavailable_reason())")
    out = subprocess.run([sys.executable, "-c", code], env={"GRAPHC_FASTCALL": "0", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "$GRAPHC_FASTCALL=0" in out.stdout


def _training_instances(rng):
    """Two instances of one mlp training library, the second on the ctypes path alone."""
    from graphc.runtime import Library
    from graphc.training.native_step import train_step_library

    model = _mlp()
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    files = train_step_library(model, split_step=True)
    lib = Library(files.shared, files.symbol)
    fast, slow = lib.instance(threads=1), lib.instance(threads=1)
    slow._fast_steps = _NoRunners()
    return fast, slow


class _NoRunners(dict):
    """A step-runner table that never keeps one: every step goes through ctypes."""

    def __setitem__(self, key, value):
        pass


def test_training_steps_through_the_call_path_equal_the_ctypes_path(rng):
    fast, slow = _training_instances(rng)
    for batch in (5, 5, 5, 3, 3, 5, 1):
        x = rng.standard_normal((batch, 17)).astype(np.float32)
        y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, batch)]
        for step in ("train_step", "eval_step", "gradient_step"):
            got, want = getattr(fast, step)([x], [y]), getattr(slow, step)([x], [y])
            assert len(got) == len(want) and all(g.dtype == w.dtype for g, w in zip(got, want))
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w, err_msg=f"{step} at batch {batch}")
    assert set(fast._fast_steps) == {"gc_instance_train_step", "gc_instance_eval_step", "gc_instance_gradient_step"}
    for w in fast.library.weights:  # the two instances trained alike
        np.testing.assert_array_equal(fast.get_weight(w.name), slow.get_weight(w.name), err_msg=w.name)


def test_training_step_inputs_the_call_path_cannot_take_get_the_checked_path(rng):
    fast, _ = _training_instances(rng)
    x = rng.standard_normal((4, 17)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 4)]
    fast.train_step([x], [y])
    fast.train_step([x], [y])  # now on the call path
    with pytest.raises(NativeError, match=r"dense_1_true. expects shape \(batch, 3\), got \(4, 2\)"):
        fast.train_step([x], [y[:, :2].copy()])
    with pytest.raises(NativeError, match="C-contiguous"):
        fast.train_step([np.zeros((4, 34), np.float32)[:, ::2]], [y])
    with pytest.raises(NativeError, match="takes 1 target"):
        fast.train_step([x], [])
    assert np.isfinite(fast.train_step([x], [y])[0]).all()  # the known signature still takes the fast path
