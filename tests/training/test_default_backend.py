"""The default backend ("auto"): fit, evaluate, predict and train_on_batch run native code when a C
compiler is found, equal to the reference; without a compiler, or for a layer with no native kernel in
training, they fall back to the reference with one warning saying why; predict sees every weight
change; the setting is validated. (The rest of the suite runs on the reference: tests/conftest.py.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphc
from graphc import config
from graphc.backends.llvm import toolchain
from graphc.config import BackendFallbackWarning
from graphc.predictor import NativePredictor
from graphc.training.auto_step import AutoStepRunner
from graphc.training.loop import standardize_x
from graphc.training.native_step import NativeStepRunner
from tests.training import small_models

RTOL = 1e-4


@pytest.fixture
def auto():
    """The process default as a user has it: "auto"."""
    config.set_backend("auto")
    yield
    config.set_backend(None)


def _no_cc():
    raise toolchain.ToolchainError("no C compiler was found (looked for cc, gcc, clang on PATH)")


@pytest.fixture
def no_compiler(monkeypatch):
    monkeypatch.setattr(toolchain, "find_cc", _no_cc)


BUILDERS = {"mlp": small_models.mlp, "conv_bn": small_models.conv_bn, "lstm": small_models.lstm}


def _twins(build, **compile_args):
    """A model compiled with the default backend and its twin (same weights) on the reference."""
    graphc.utils.set_random_seed(5)
    model = build()
    graphc.utils.set_random_seed(5)
    twin = build()
    args = {"optimizer": "adam", "loss": "mse", "metrics": ["mae"], **compile_args}
    model.compile(**args)
    twin.compile(**args, backend="reference")
    return model, twin


def _data(model, rng, n: int = 20):
    shape = tuple(model.inputs[0].shape[1:])
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    y = rng.standard_normal((n, 3)).astype(np.float32)
    return x, y


def _close(got, want, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want))), 1e-6)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def _same_weights(model, twin) -> None:
    for i, (p, q) in enumerate(zip(model.get_weights(), twin.get_weights())):
        _close(p, q, f"weight {i}")


def _perturbed(model, rng) -> list[np.ndarray]:
    return [w + np.abs(rng.standard_normal(w.shape)).astype(w.dtype) * 0.1 for w in model.get_weights()]


def _reference_predict(model, x):
    """What the model's current weights predict on the reference (built afresh)."""
    return graphc.build(model, "reference", level=0).predict(x)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_default_runs_native_and_equals_the_reference(auto, name, rng):
    model, twin = _twins(BUILDERS[name])
    x, y = _data(model, rng)
    runner = model._graphc_trainer.runner
    assert isinstance(runner, AutoStepRunner) and twin._graphc_trainer.runner is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        got = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, validation_data=(x, y), verbose=0).history
        want = twin.fit(x, y, batch_size=8, epochs=2, shuffle=False, validation_data=(x, y), verbose=0).history
        assert list(got) == list(want)
        for key in want:
            _close(got[key], want[key], key)
        # one library: the training step and, run by validation through gc_instance_eval_step, its evaluation step
        assert runner.fallback is None and len(runner._compiled) == 1
        compiled = next(iter(runner._compiled.values()))[1]
        assert compiled.library.has_eval_step and compiled.evaluation is not None
        _close(model.evaluate(x, y, batch_size=8, verbose=0), twin.evaluate(x, y, batch_size=8, verbose=0),
               "evaluate")
        _close(model.predict(x, batch_size=8), twin.predict(x, batch_size=8), "predict after fit")
        assert isinstance(model._compiled_cache["native"], NativePredictor)
        _close(model.train_on_batch(x[:5], y[:5]), twin.train_on_batch(x[:5], y[:5]), "train_on_batch")
        _close(model.predict_on_batch(x), twin.predict_on_batch(x), "predict after train_on_batch")
        _close(model.test_on_batch(x, y), twin.test_on_batch(x, y), "test_on_batch")
    assert len(runner._compiled) == 1  # every batch size, training and evaluation: one library
    _same_weights(model, twin)


def test_no_compiler_falls_back_with_one_warning(auto, no_compiler, rng):
    model, twin = _twins(small_models.mlp)
    x, y = _data(model, rng)
    with pytest.warns(BackendFallbackWarning) as record:
        got = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        loss = model.evaluate(x, y, verbose=0)
        out = model.predict(x)
    fallbacks = [w for w in record if issubclass(w.category, BackendFallbackWarning)]
    assert len(fallbacks) == 1, [str(w.message) for w in fallbacks]
    assert "no C compiler" in str(fallbacks[0].message) and repr(model.name) in str(fallbacks[0].message)
    runner = model._graphc_trainer.runner
    assert runner.fallback and not runner._compiled and "native" not in model._compiled_cache
    want = twin.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    for key in want:
        _close(got[key], want[key], key)
    _close(loss, twin.evaluate(x, y, verbose=0), "evaluate")
    _close(out, twin.predict(x), "predict")


@pytest.mark.parametrize("compiler", ["found", "missing"])
def test_the_split_step_follows_the_default(auto, compiler, monkeypatch, rng):
    """Data parallelism's gradient and apply steps: native by default, else the reference."""
    if compiler == "missing":
        monkeypatch.setattr(toolchain, "find_cc", _no_cc)
    model, twin = _twins(small_models.mlp)
    x, y = _data(model, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BackendFallbackWarning)
        buffers, steps = [], []
        for m in (model, twin):
            for _ in range(2):
                feeds = standardize_x(m, x)
                step = m._graphc_trainer._step(feeds, [y], True)
                step.compute_gradients(feeds, [y])
                buffers.append(np.array(step.gradient_buffer()))
                step.apply_gradients()
            steps.append(step)
    for got, want in zip(buffers[:2], buffers[2:]):
        _close(got, want, "gradient buffer")
    _same_weights(model, twin)
    runner = model._graphc_trainer.runner
    if compiler == "found":
        assert runner.fallback is None and runner.compiled(steps[0]).library.has_gradient_step
    else:
        assert "no C compiler" in runner.fallback and not runner._compiled


def test_native_without_a_compiler_is_an_error(no_compiler, rng):
    config.set_backend("native")
    try:
        model = small_models.mlp()
        with pytest.raises(toolchain.ToolchainError, match="backend='native'.*no C compiler"):
            model.predict(_data(model, rng)[0])
    finally:
        config.set_backend(None)


def test_a_layer_without_a_native_gradient_falls_back_in_training(auto, rng):
    model, twin = _twins(small_models.gru_reset_before)
    x, y = _data(model, rng)
    with pytest.warns(BackendFallbackWarning, match=r"training and evaluation .*gru_grad.*layer 'gru'"):
        got = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    want = twin.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    for key in want:
        _close(got[key], want[key], key)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)  # the forward pass has native kernels
        _close(model.predict(x), twin.predict(x), "predict")
    assert isinstance(model._compiled_cache["native"], NativePredictor)
    _close(model.evaluate(x, y, verbose=0), twin.evaluate(x, y, verbose=0), "evaluate")


def test_predict_sees_every_weight_change(auto, rng, tmp_path):
    graphc.utils.set_random_seed(2)
    model = small_models.conv_bn()
    model.compile(optimizer="sgd", loss="mse")
    x, y = _data(model, rng)
    _close(model.predict(x), _reference_predict(model, x), "first predict")
    predictor = model._compiled_cache["native"]
    # set_weights (the BatchNormalization statistics too: level 2 folds them into the convolution)
    model.set_weights(_perturbed(model, rng))
    _close(model.predict(x), _reference_predict(model, x), "after set_weights")
    # Fresh statistics fold into a zero bias that the optimizer shares with the zero moving mean: a graph
    # of another structure, so the library was built again once. From here on the structure stays.
    builds = predictor.builds
    # load_weights of another model's file
    graphc.utils.set_random_seed(9)
    other = small_models.conv_bn()
    other.set_weights(_perturbed(other, rng))
    other.save_weights(tmp_path / "other.weights.h5")
    model.load_weights(tmp_path / "other.weights.h5")
    _close(model.predict(x), other.predict(x), "after load_weights")
    # native training: the instance holds the weights; predict, get_weights and save see them
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert isinstance(model._graphc_trainer.runner, AutoStepRunner) and model._graphc_trainer.runner._compiled
    trained = model.predict(x)
    _close(trained, _reference_predict(model, x), "after native fit")
    model.save(tmp_path / "trained.keras")
    _close(graphc.models.load_model(tmp_path / "trained.keras").predict(x), trained, "saved after native fit")
    # a layer frozen: a new training step (its own library) starts from the instance's weights
    model.get_layer(index=1).trainable = False
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    _close(model.predict(x), _reference_predict(model, x), "after fit with a frozen layer")
    # training on the other backend
    graphc.build(model, "reference", training=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    _close(model.predict(x), _reference_predict(model, x), "after reference fit")
    assert predictor is model._compiled_cache["native"]
    assert predictor.builds == builds and predictor.refreshes == 4  # weights written into the instance


def test_one_build_serves_every_batch_size(auto, rng):
    model = small_models.lstm()
    x, _ = _data(model, rng, n=41)
    for n, batch_size in ((1, None), (5, None), (41, 16)):
        _close(model.predict(x[:n], batch_size=batch_size), _reference_predict(model, x[:n]), f"{n} samples")
    assert model._compiled_cache["native"].builds == 1


def test_backend_setting_is_validated_and_chooses_the_runner(monkeypatch):
    model = small_models.mlp()
    with pytest.raises(ValueError, match=r"model.compile\(\) got backend='gpu'; graphc's backends are 'auto'"):
        model.compile(optimizer="sgd", loss="mse", backend="gpu")
    with pytest.raises(ValueError, match=r"set_backend\(\) got backend='fast'"):
        config.set_backend("fast")
    monkeypatch.setenv("GRAPHC_BACKEND", "cuda")
    with pytest.raises(ValueError, match=r"\$GRAPHC_BACKEND got backend='cuda'"):
        model.compile(optimizer="sgd", loss="mse")
    monkeypatch.setenv("GRAPHC_BACKEND", "auto")
    model.compile(optimizer="sgd", loss="mse")
    assert isinstance(model._graphc_trainer.runner, AutoStepRunner)
    model.compile(optimizer="sgd", loss="mse", backend="native")
    assert type(model._graphc_trainer.runner) is NativeStepRunner
    model.compile(optimizer="sgd", loss="mse", backend="reference")
    assert model._graphc_trainer.runner is None
    assert "backend" not in model._compile_config  # Keras's compile has no such argument: never saved
