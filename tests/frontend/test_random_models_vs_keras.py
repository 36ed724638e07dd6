"""graphc against Keras 3 on random architectures it was never written for.

Each seed of ``tests/frontend/random_models.py`` gives a functional model built twice, with
graphc and with Keras; the twins must log the same steps (layer, shape, mask), get the same
random weights and predict the same on graphc's reference, ONNX and native targets, at batch 1
and 3 (free lengths at an odd size). Some seeds also go through ``.keras`` files both ways, some
take one SGD step (loss and every weight equal Keras's), and models with a Keras option graphc
does not implement must be refused with an error naming the option.

A plain run (CI's) covers ``SEEDS`` and the larger ``SLOW_SEEDS`` (marked ``slow``: about two minutes on
two cores); ``-m "not slow"`` leaves them out. A failing seed is
replayed alone with ``-k "seed_17"``; ``steps`` in the message shows its architecture.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

import graphc
from graphc.frontend import state
from graphc.ops.registry import ShapeError
from tests.frontend.random_models import FREE_LENGTHS, KERAS_ONLY, POISONS, RandomModel, random_model
from tests.keras_parity import TARGETS, as_list, assert_outputs_close
from tests.saving.helpers import randomize

pytestmark = [pytest.mark.keras, pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning")]

SEEDS = range(40)
SLOW_SEEDS = range(40, 240)


def build_twins(keras, seed: int, rng, *, trainable: bool = False) -> tuple[RandomModel, RandomModel]:
    """The graphc model of ``seed`` and its Keras twin, with the same random weights."""
    state.clear_session()
    mine = random_model(graphc, seed, trainable=trainable)
    keras.utils.clear_session(free_memory=False)
    theirs = random_model(keras, seed, trainable=trainable)
    for i, (got, want) in enumerate(zip(mine.steps, theirs.steps)):
        assert got == want, f"seed {seed}: step {i} differs from Keras's:\n  graphc {got}\n  keras  {want}\n" \
                            f"steps:\n  " + "\n  ".join(theirs.steps)
    assert len(mine.steps) == len(theirs.steps), f"seed {seed}: {len(mine.steps)} steps, Keras {len(theirs.steps)}"
    got_shapes = [tuple(w.shape) for w in mine.model.weights]
    want_shapes = [tuple(w.shape) for w in theirs.model.weights]
    assert got_shapes == want_shapes, f"seed {seed}: weight shapes {got_shapes} != Keras's {want_shapes}"
    randomize(mine.model, rng)
    theirs.model.set_weights(mine.model.get_weights())
    return mine, theirs


def describe(seed: int, model: RandomModel) -> str:
    return f"seed {seed}, steps:\n  " + "\n  ".join(model.steps)


def keras_float64_predict(keras, seed: int, weights: list[np.ndarray], x) -> list[np.ndarray]:
    """The seed's model evaluated by Keras in float64 with the same weights: the exact answer, near enough.

    Keras computes the statistics of BatchNormalization and GroupNormalization in
    ``result_type(dtype, "float32")``, which is float32 even for float64 inputs (and their variance as
    E[x²] - E[x]², which cancels); promoting float64 there keeps the whole twin in float64.
    """
    from keras.src import backend

    keras_result_type = backend.result_type

    def float64_result_type(*dtypes):
        got = keras_result_type(*dtypes)
        wide = any(backend.standardize_dtype(d) == "float64" for d in dtypes if d is not None)
        return "float64" if wide and str(got).startswith("float") else got

    floatx = keras.config.floatx()
    keras.utils.clear_session(free_memory=False)
    keras.config.set_floatx("float64")
    try:
        with mock.patch.object(backend, "result_type", float64_result_type):
            exact = random_model(keras, seed, float_dtype="float64").model
            exact.set_weights([w.astype(np.float64) if w.dtype == np.float32 else w for w in weights])
            xs = [a.astype(np.float64) if a.dtype == np.float32 else a for a in (x if isinstance(x, list) else [x])]
            return exact.predict(xs if isinstance(x, list) else xs[0], verbose=0)
    finally:
        keras.config.set_floatx(floatx)


def assert_as_accurate_as_keras(got, want, exact, *, what: str) -> None:
    """Where graphc and Keras disagree beyond the tolerance, the model amplifies float32 rounding (a
    difference of near-equal values normalised, say): then graphc's error against the float64 answer
    must be no larger than twice Keras's own float32 error (or within the tolerance of it)."""
    for i, (g, w, e) in enumerate(zip(as_list(got), as_list(want), as_list(exact))):
        e = np.asarray(e, dtype=np.float64)
        scale = max(1.0, float(np.abs(e).max()) if e.size else 1.0)
        mine = float(np.abs(g - e).max()) / scale if e.size else 0.0
        theirs = float(np.abs(np.asarray(w, dtype=np.float64) - e).max()) / scale if e.size else 0.0
        assert mine <= max(1e-5, 2.0 * theirs), (
            f"{what} output {i}: graphc is {mine:.3g} from the float64 answer, Keras (float32) {theirs:.3g}")


def check_predict(keras, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mine, theirs = build_twins(keras, seed, rng)
    where = describe(seed, theirs)
    compiled = {t: graphc.build(mine.model, target=t) for t in TARGETS}
    for n, free in zip((1, 3), FREE_LENGTHS):  # free lengths differ between the calls
        x = theirs.data(rng, n, free)
        want = theirs.model.predict(x, verbose=0)
        exact = None
        for target, cm in compiled.items():
            got = cm.predict(x)
            try:
                assert_outputs_close(got, want, what=f"{target} n={n}, {where}")
            except AssertionError:
                if exact is None:
                    exact = keras_float64_predict(keras, seed, theirs.model.get_weights(), x)
                assert_as_accurate_as_keras(got, want, exact, what=f"{target} n={n}, {where}")


def check_keras_files(keras, seed: int, tmp_path) -> None:
    """Keras's file of the model loads in graphc and predicts the same; graphc's file loads in Keras."""
    rng = np.random.default_rng(seed)
    mine, theirs = build_twins(keras, seed, rng)
    where = describe(seed, theirs)
    x = theirs.data(rng, 3, FREE_LENGTHS[-1])
    want = theirs.model.predict(x, verbose=0)
    theirs.model.save(tmp_path / "keras.keras")
    state.clear_session()
    loaded = graphc.models.load_model(tmp_path / "keras.keras")
    assert_outputs_close(graphc.build(loaded, target="reference").predict(x), want,
                         what=f"graphc loading Keras's file, {where}")
    mine.model.save(tmp_path / "graphc.keras")
    keras.utils.clear_session(free_memory=False)
    reloaded = keras.models.load_model(tmp_path / "graphc.keras")
    assert_outputs_close(reloaded.predict(x, verbose=0), want, what=f"Keras loading graphc's file, {where}")


def check_train_step(keras, seed: int) -> None:
    """One SGD step on a mean squared error: the same loss and the same weights after it."""
    rng = np.random.default_rng(seed)
    mine, theirs = build_twins(keras, seed, rng, trainable=True)
    where = describe(seed, theirs)
    x = theirs.data(rng, 3, FREE_LENGTHS[-1])
    y = theirs.targets(rng, theirs.model.predict(x, verbose=0))
    mine.model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.1), loss="mse")
    theirs.model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    # The total loss; Keras's per-output losses are left out: it reports one value for every output
    # of a layer with several (Bidirectional(merge_mode=None)), under their shared name.
    got = np.ravel(mine.model.train_on_batch(x, y))[0]
    want = np.ravel(theirs.model.train_on_batch(x, y))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"loss, {where}")
    theirs_after = theirs.model.get_weights()
    if not all(np.isfinite(w).all() for w in theirs_after):
        # Keras's torch gradients of a norm at exactly zero (x / max(norm(x), eps)) are NaN, which graphc's
        # are not: nothing to compare with.
        assert all(np.isfinite(w).all() for w in mine.model.get_weights()), f"non-finite weights, {where}"
        pytest.skip(f"Keras's step gives non-finite weights, {where}")
    for gw, kw, var in zip(mine.model.get_weights(), theirs_after, mine.model.weights):
        scale = max(1.0, float(np.abs(kw).max()) if kw.size else 1.0)
        np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6 * scale, err_msg=f"{var.path}, {where}")


REFUSED = (ValueError, ShapeError, NotImplementedError)


def check_refused(seed: int, poison: tuple) -> None:
    """A model with an option graphc does not implement is refused, naming the option."""
    state.clear_session()
    with pytest.raises(REFUSED) as caught:
        model = random_model(graphc, seed, poison=poison).model
        graphc.build(model, target="reference")
    assert poison[3] in str(caught.value), f"seed {seed}: the error does not name {poison[3]!r}: {caught.value}"


def check_refused_file(keras, seed: int, poison: tuple, tmp_path) -> None:
    """Keras's file of a model with an option (or a layer) graphc does not implement is refused by name."""
    keras.utils.clear_session(free_memory=False)
    path = tmp_path / "refused.keras"
    random_model(keras, seed, poison=poison).model.save(path)
    state.clear_session()
    with pytest.raises(REFUSED) as caught:
        graphc.build(graphc.models.load_model(path), target="reference")
    assert poison[3] in str(caught.value), f"seed {seed}: the error does not name {poison[3]!r}: {caught.value}"


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed_{s}" for s in SEEDS])
def test_random_model_predicts_as_keras(keras, seed):
    check_predict(keras, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS, ids=[f"seed_{s}" for s in SLOW_SEEDS])
def test_random_model_predicts_as_keras_many(keras, seed):
    check_predict(keras, seed)


@pytest.mark.parametrize("seed", SEEDS[::5], ids=[f"seed_{s}" for s in SEEDS[::5]])
def test_random_model_keras_files_both_ways(keras, seed, tmp_path):
    check_keras_files(keras, seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS[::5], ids=[f"seed_{s}" for s in SLOW_SEEDS[::5]])
def test_random_model_keras_files_both_ways_many(keras, seed, tmp_path):
    check_keras_files(keras, seed, tmp_path)


@pytest.mark.parametrize("seed", SEEDS[1::4], ids=[f"seed_{s}" for s in SEEDS[1::4]])
def test_random_model_sgd_step_as_keras(keras, seed):
    check_train_step(keras, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS[1::4], ids=[f"seed_{s}" for s in SLOW_SEEDS[1::4]])
def test_random_model_sgd_step_as_keras_many(keras, seed):
    check_train_step(keras, seed)


@pytest.mark.parametrize("poison", POISONS, ids=[f"{p[1]}-{p[3]}" for p in POISONS])
def test_unsupported_option_in_random_model_is_refused(poison):
    for seed in range(3):
        check_refused(seed * 7 + len(poison[1]), poison)


# Keras cannot build these here to save them: flash_attention=True needs a GPU in its torch backend,
# stateful=True a fixed batch size.
FILE_POISONS = [p for p in POISONS if p[3] not in ("flash_attention", "stateful")] + list(KERAS_ONLY)


@pytest.mark.parametrize("poison", FILE_POISONS, ids=[f"{p[1]}-{p[3]}" for p in FILE_POISONS])
def test_unsupported_option_in_keras_file_is_refused(keras, poison, tmp_path):
    check_refused_file(keras, 11 + len(poison[1]), poison, tmp_path)


def test_generator_covers_the_layer_families():
    """The default seeds reach every family the generator knows (so a family cannot drop out unseen)."""
    seen: set[str] = set()
    for seed in list(SEEDS) + list(SLOW_SEEDS):
        state.clear_session()
        seen |= random_model(graphc, seed).families
        state.clear_session()
        if seed % 4 == 1:
            seen |= random_model(graphc, seed, trainable=True).families
    wanted = {"dense", "activation_names", "activation_layers", "layer_norm", "layer_norm_rms", "unit_norm",
              "batch_norm", "group_norm", "spatial_dropout", "noise", "rescaling", "normalization", "ops_scalar",
              "ops_unary", "ops_reduce", "ops_slice", "ops_binary", "einsum_dense", "reshape", "flatten", "permute",
              "merge", "concatenate", "dot", "conv", "conv_channels_first", "conv_transpose", "conv_depthwise",
              "conv_separable", "pool", "pool_channels_first", "masked_pool", "zero_padding", "cropping",
              "upsampling", "upsampling_bilinear", "resizing", "center_crop", "recurrent", "recurrent_masked",
              "bidirectional", "rnn_cells", "attention", "attention_masked", "time_distributed", "conv_lstm",
              "repeat_vector", "embedding", "activity_regularization", "masking", "ops_shape", "ops_matmul",
              "recurrent_state", "attention_scores", "shared_layer", "nested_model"}
    assert wanted <= seen, f"never generated: {sorted(wanted - seen)}"
