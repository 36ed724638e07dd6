"""Every seed model (../shared/spec/programs, plus the stereo Xception) compiled to native code
and compared with the reference interpreter.

Random weights (near their initial values, so a misplaced parameter shows); the optimized
graph (level 2: fused ops) and, for a few models, the plain one; batch sizes 1 and 3; for
models with a free sequence length, two lengths. rtol 1e-4 / atol 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, Model, applications, layers
from tests.backends.onnx.checks import randomize_weights
from tests.programs.seed_models import SEED_MODELS

PLAIN_TOO = {"mlp", "qa_two_inputs", "merge"}


def _outputs(y) -> list[np.ndarray]:
    if isinstance(y, dict):
        return [y[k] for k in sorted(y)]
    return list(y) if isinstance(y, (list, tuple)) else [y]


def assert_close(got, want, what: str) -> None:
    g, w = _outputs(got), _outputs(want)
    assert len(g) == len(w), what
    for i, (a, b) in enumerate(zip(g, w)):
        assert a.shape == b.shape, f"{what} output {i}: shape {a.shape} != {b.shape}"
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{what} output {i}")


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_model(name, rng):
    build, _, lengths = SEED_MODELS[name]
    model, data = build(graphc)
    randomize_weights(model, rng)
    reference = graphc.build(model, level=0)
    for level in ((0, 2) if name in PLAIN_TOO else (2,)):
        native = graphc.build(model, target="native", level=level)
        for batch, k in ((1, 0), (3, 1)):
            x = data(rng, batch) if lengths is None else data(rng, batch, lengths[k])
            assert_close(native.predict(x), reference.predict(x), f"{name} level {level} batch {batch}")


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_model_bits_do_not_depend_on_the_thread_count(name, rng):
    """Every kernel computes an item the same way whichever thread runs it, and the split into items never
    changes how a value is computed (a depthwise span is never cut by a thread's share): 1, 2 and 3
    threads give the same bits."""
    build, _, lengths = SEED_MODELS[name]
    model, data = build(graphc)
    randomize_weights(model, rng)
    x = data(rng, 3) if lengths is None else data(rng, 3, lengths[1])
    want = _outputs(graphc.build(model, target="native", threads=1).predict(x))
    for threads in (2, 3):
        got = _outputs(graphc.build(model, target="native", threads=threads).predict(x))
        assert [a.tobytes() for a in got] == [b.tobytes() for b in want], f"{name} on {threads} threads"


def test_mobilenet_v2_bits_do_not_depend_on_the_thread_count(rng):
    """Depthwise convolutions over images of 2 to 48 rows (rows split into channel chunks below 4 per
    thread), products whose micro-tiles have 12, 8 or 7 rows: 1, 2 and 3 threads give the same bits."""
    model = applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.5)
    randomize_weights(model, rng)
    x = rng.random((2, 96, 96, 3), dtype=np.float32)
    want = graphc.build(model, target="native", threads=1).predict(x)
    np.testing.assert_allclose(want, graphc.build(model, level=0).predict(x), rtol=1e-4, atol=1e-5)
    for threads in (2, 3):
        got = graphc.build(model, target="native", threads=threads).predict(x)
        assert got.tobytes() == want.tobytes(), f"{threads} threads"


def test_stereo_xception(rng):
    """Program 07's dual-camera model: one Xception base shared by two 250x250 views."""
    base = applications.Xception(weights=None, include_top=False)
    left, right = Input(shape=(250, 250, 3)), Input(shape=(250, 250, 3))
    stereo = Model([left, right], layers.concatenate([base(left), base(right)], axis=-1))
    randomize_weights(stereo, rng)
    native = graphc.build(stereo, target="native")
    x = [rng.random((2, 250, 250, 3), dtype=np.float32) for _ in range(2)]
    got = native.predict(x)
    assert got.shape == (2, 8, 8, 4096)
    # the reference interpreter is slow on this model: compare one sample, and the batch of two
    # with the native batch-1 results (the free batch dimension)
    first = [v[:1] for v in x]
    assert_close(native.predict(first), graphc.build(stereo, level=0).predict(first), "stereo xception batch 1")
    assert_close(got[1:], native.predict([v[1:] for v in x]), "stereo xception batch 2 vs 1")
