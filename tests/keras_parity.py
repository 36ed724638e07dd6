"""Cross-checks of graphc against Keras 3 through every backend and through ``.keras`` files.

One architecture is written once against a Keras-compatible library (``K`` is ``keras`` or
``graphc``): ``build(K)`` returns a model, ``data(rng, n)`` its inputs for ``n`` samples. The
helpers build both twins, give them the same random weights and compare:

- ``check_predict``: graphc's reference, ONNX (onnxruntime) and native targets against
  ``keras_model.predict`` at several batch sizes;
- ``check_keras_file``: a ``.keras`` file written by Keras, loaded by graphc (and the
  reverse), predicts what Keras predicts.

Errors are measured relative to the output's scale (``atol * max(1, max|want|)``), as the
ONNX verification tables do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import graphc
from graphc.frontend import state
from tests.saving.helpers import as_list, randomize

TARGETS = ("reference", "onnx", "native")


def twins(keras, build: Callable, rng, *, randomize_weights: bool = True):
    """The graphc model and its Keras twin, with the same (random) weights."""
    state.clear_session()
    model = build(graphc)
    keras.utils.clear_session(free_memory=False)
    kmodel = build(keras)
    got_shapes = [tuple(w.shape) for w in model.weights]
    want_shapes = [tuple(w.shape) for w in kmodel.weights]
    assert got_shapes == want_shapes, f"weight shapes {got_shapes} != Keras's {want_shapes}"
    if randomize_weights:
        randomize(model, rng)
        kmodel.set_weights(model.get_weights())
    else:
        model.set_weights([np.asarray(w) for w in kmodel.get_weights()])
    return model, kmodel


def assert_outputs_close(got, want, *, rtol: float = 1e-4, atol: float = 1e-5, what: str = "") -> float:
    """Compare output structures; returns the largest error relative to each output's scale."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{what}: keys {list(got)} != {list(want)}"
        got, want = [got[k] for k in sorted(want)], [want[k] for k in sorted(want)]
    got, want = as_list(got), as_list(want)
    assert len(got) == len(want), f"{what}: {len(got)} outputs, Keras gives {len(want)}"
    worst = 0.0
    for i, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert g.shape == w.shape, f"{what} output {i}: shape {g.shape} != Keras's {w.shape}"
        scale = max(1.0, float(np.abs(w).max()) if w.size else 1.0)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=f"{what} output {i}")
        if w.size:
            worst = max(worst, float(np.abs(g.astype(np.float64) - w).max()) / scale)
    return worst


def check_predict(keras, build: Callable, data: Callable, rng, *, batches: Sequence[int] = (1, 2),
                  targets: Sequence[str] = TARGETS, level: int = 2, rtol: float = 1e-4, atol: float = 1e-5,
                  randomize_weights: bool = True):
    """graphc's targets predict what Keras predicts; returns (model, keras_model, {target: worst error})."""
    model, kmodel = twins(keras, build, rng, randomize_weights=randomize_weights)
    errors = {}
    compiled = {t: graphc.build(model, target=t, level=level) for t in targets}
    for n in batches:
        x = data(rng, n)
        want = kmodel.predict(x, verbose=0)
        for t, cm in compiled.items():
            err = assert_outputs_close(cm.predict(x), want, rtol=rtol, atol=atol, what=f"{t} n={n}")
            errors[t] = max(errors.get(t, 0.0), err)
    return model, kmodel, errors


def check_keras_file(keras, build: Callable, data: Callable, rng, tmp_path, *, rtol: float = 1e-4,
                     atol: float = 1e-5, custom_objects=None):
    """A ``.keras`` file Keras wrote loads in graphc and predicts the same; graphc's file loads in Keras."""
    model, kmodel = twins(keras, build, rng)
    x = data(rng, 2)
    want = kmodel.predict(x, verbose=0)
    path = tmp_path / "from_keras.keras"
    kmodel.save(path)
    state.clear_session()
    loaded = graphc.models.load_model(path, custom_objects=custom_objects)
    assert_outputs_close(loaded.predict(x), want, rtol=rtol, atol=atol, what="graphc loading Keras's file")
    back = tmp_path / "from_graphc.keras"
    model.save(back)
    keras.utils.clear_session(free_memory=False)
    reloaded = keras.models.load_model(back, custom_objects=custom_objects)
    assert_outputs_close(reloaded.predict(x, verbose=0), want, rtol=rtol, atol=atol,
                         what="Keras loading graphc's file")
    return loaded
