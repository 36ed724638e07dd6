"""``sample_weight`` and ``class_weight`` in fit, evaluate and train_on_batch, and Python generators and
PyDataset-like objects as data, against Keras (reference and native trainers)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc

pytestmark = pytest.mark.keras


def _mlp(lib):
    inp = lib.Input(shape=(6,))
    h = lib.layers.Dense(5, activation="tanh")(inp)
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(h))


def _two_outputs(lib):
    inp = lib.Input(shape=(6,))
    h = lib.layers.Dense(4, activation="relu")(inp)
    return lib.Model(inp, [lib.layers.Dense(2, name="reg")(h),
                           lib.layers.Dense(1, activation="sigmoid", name="cls")(h)])


def _pair(keras, build, loss, metrics=None, optimizer=("SGD", {"learning_rate": 0.1, "momentum": 0.5})):
    model, kmodel = build(graphc), build(keras)
    kmodel.set_weights(model.get_weights())
    name, kwargs = optimizer
    model.compile(optimizer=getattr(graphc.optimizers, name)(**kwargs), loss=loss, metrics=metrics)
    kmodel.compile(optimizer=getattr(keras.optimizers, name)(**kwargs), loss=loss, metrics=metrics)
    return model, kmodel


def _same_weights(model, kmodel, what=""):
    for var, gw, kw in zip(model.weights, model.get_weights(), kmodel.get_weights()):
        np.testing.assert_allclose(gw, kw, rtol=1e-4, atol=2e-6, err_msg=f"{what} {var.path}")


def _same_logs(got, want):
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("target", ["reference", "native"])
def test_train_on_batch_with_sample_and_class_weights_equals_keras(keras, rng, target):
    model, kmodel = _pair(keras, _mlp, "sparse_categorical_crossentropy", ["acc"])
    graphc.build(model, target=target, training=True)
    class_weight = {0: 0.5, 1: 2.0, 2: 1.5}
    for step in range(3):
        x, y = rng.standard_normal((7, 6)).astype("float32"), rng.integers(0, 3, size=(7,))
        kwargs = {"sample_weight": rng.uniform(0, 2, size=(7,))} if step != 1 else {"class_weight": class_weight}
        got = model.train_on_batch(x, y, return_dict=True, **kwargs)
        want = kmodel.train_on_batch(x, y, return_dict=True, **kwargs)
        for key in want:
            assert np.isclose(got[key], want[key], rtol=1e-5, atol=1e-6), f"step {step} {key}: {got} vs {want}"
        _same_weights(model, kmodel, f"step {step}")
    x, y = rng.standard_normal((7, 6)).astype("float32"), rng.integers(0, 3, size=(7,))
    sw = rng.uniform(0, 2, size=(7,))
    np.testing.assert_allclose(model.test_on_batch(x, y, sample_weight=sw),
                               kmodel.test_on_batch(x, y, sample_weight=sw), rtol=1e-5)


def test_fit_and_evaluate_with_sample_weights_equal_keras(keras, rng):
    model, kmodel = _pair(keras, _two_outputs, ["mse", "binary_crossentropy"], [["mae"], ["acc"]])
    x = rng.standard_normal((19, 6)).astype("float32")
    ys = [rng.standard_normal((19, 2)).astype("float32"), rng.integers(0, 2, size=(19, 1)).astype("float32")]
    sw = rng.uniform(0, 2, size=(19,)).astype("float32")
    kwargs = dict(sample_weight=[sw, sw], batch_size=4, epochs=2, shuffle=False, verbose=0, validation_split=0.25)
    gh, kh = model.fit(x, ys, **kwargs), kmodel.fit(x, ys, **kwargs)
    _same_logs(gh.history, kh.history)
    _same_weights(model, kmodel)
    per_output = [sw, rng.uniform(0, 2, size=(19,))]
    got = model.evaluate(x, ys, sample_weight=per_output, batch_size=5, verbose=0, return_dict=True)
    want = kmodel.evaluate(x, ys, sample_weight=per_output, batch_size=5, verbose=0, return_dict=True)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_fit_with_class_weight_and_weighted_validation_equals_keras(keras, rng):
    model, kmodel = _pair(keras, _mlp, "categorical_crossentropy", ["acc"], ("Adam", {"learning_rate": 0.01}))
    x = rng.standard_normal((21, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=21)]
    val = (x[:6], y[:6], rng.uniform(0, 2, size=(6,)).astype("float32"))
    kwargs = dict(class_weight={0: 3.0, 2: 0.25}, batch_size=5, epochs=2, shuffle=False, verbose=0,
                  validation_data=val)
    _same_logs(model.fit(x, y, **kwargs).history, kmodel.fit(x, y, **kwargs).history)
    _same_weights(model, kmodel)


def test_bad_weights_are_refused_naming_them(rng):
    model = _mlp(graphc)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = rng.standard_normal((4, 6)).astype("float32"), rng.integers(0, 3, size=(4,))
    with pytest.raises(ValueError, match="sample_weight"):
        model.fit(x, y, sample_weight=np.ones(3), verbose=0)
    with pytest.raises(ValueError, match="class_weight"):
        model.fit(x, y, sample_weight=np.ones(4), class_weight={0: 1.0}, verbose=0)


def _batches(rng, n_batches, size=4, weighted=False):
    out = []
    for _ in range(n_batches):
        x, y = rng.standard_normal((size, 6)).astype("float32"), rng.integers(0, 3, size=(size,))
        out.append((x, y, rng.uniform(0, 2, size=(size,)).astype("float32")) if weighted else (x, y))
    return out


class _Dataset:
    """A PyDataset-like object: batches by index, a length, on_epoch_end."""

    def __init__(self, batches):
        self.batches, self.epochs_ended = batches, 0

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]

    def on_epoch_end(self):
        self.epochs_ended += 1


@pytest.mark.parametrize("target", ["reference", "native"])
def test_fit_on_generators_with_steps_per_epoch_equals_keras(keras, rng, target):
    batches = _batches(rng, 6, weighted=True)
    val = _batches(rng, 3)

    def forever(items):
        while True:
            yield from items

    model, kmodel = _pair(keras, _mlp, "sparse_categorical_crossentropy", ["acc"])
    graphc.build(model, target=target, training=True)
    val_arrays = (np.concatenate([b[0] for b in val]), np.concatenate([b[1] for b in val]))
    kwargs = dict(steps_per_epoch=4, epochs=3, verbose=0, validation_data=val_arrays)
    gh = model.fit(forever(batches), **kwargs)
    kh = kmodel.fit(forever(batches), **kwargs)
    _same_logs(gh.history, kh.history)
    _same_weights(model, kmodel)
    got = model.evaluate((b for b in val), verbose=0, return_dict=True)
    want = kmodel.evaluate((b for b in val), verbose=0, return_dict=True)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_fit_on_pydataset_like_objects_equals_keras(keras, rng):
    batches = _batches(rng, 5, size=3)

    class KerasDataset(keras.utils.PyDataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return batches[i]

    model, kmodel = _pair(keras, _mlp, "sparse_categorical_crossentropy", ["acc"], ("Adam", {"learning_rate": 0.01}))
    ours = _Dataset(batches)
    gh = model.fit(ours, epochs=2, verbose=0, class_weight={1: 2.0}, validation_data=_Dataset(batches[:2]),
                   shuffle=False)
    kh = kmodel.fit(KerasDataset(), epochs=2, verbose=0, class_weight={1: 2.0}, validation_data=KerasDataset(),
                    shuffle=False)
    assert ours.epochs_ended == 2
    # validation on the first two batches in graphc and all five in Keras differ: compare training logs
    for key in ("loss", "acc"):
        np.testing.assert_allclose(gh.history[key], kh.history[key], rtol=1e-4, atol=1e-6, err_msg=key)
    _same_weights(model, kmodel)
    # a Keras PyDataset itself is data for graphc too
    np.testing.assert_allclose(model.evaluate(KerasDataset(), verbose=0), kmodel.evaluate(KerasDataset(), verbose=0),
                               rtol=1e-5)
    # fit's default shuffles the batch order (as Keras's PyDataset adapter): the same batches, another order
    np.random.seed(3)
    assert np.isfinite(model.fit(ours, epochs=1, verbose=0).history["loss"][0]) and ours.epochs_ended == 3


def test_generator_misuse_is_refused_naming_the_argument(rng):
    model = _mlp(graphc)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    batches = _batches(rng, 2)
    with pytest.raises(ValueError, match="`y`"):
        model.fit(iter(batches), np.zeros(4), verbose=0)
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(iter(batches), validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(*batches[0], steps_per_epoch=2, verbose=0)


def test_evaluate_steps_on_arrays_equals_keras(keras, rng):
    model, kmodel = _pair(keras, _mlp, "sparse_categorical_crossentropy", ["acc"])
    x, y = rng.standard_normal((13, 6)).astype("float32"), rng.integers(0, 3, size=(13,))
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=4, steps=2, verbose=0),
                               kmodel.evaluate(x, y, batch_size=4, steps=2, verbose=0), rtol=1e-5)
