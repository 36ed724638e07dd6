"""Every ``keras.applications`` architecture Keras 3 builds on the torch backend, as a user meets it:
Keras builds it (``weights=None``, random BatchNorm statistics so folding is exercised) and saves
it as ``.keras``; graphc loads the file, and its reference, ONNX and native targets predict what
Keras predicts at batch 1 and 2.

Inputs are the smallest each architecture accepts, so the zoo runs in minutes; the larger models
are marked slow (they still run in CI).
"""

from __future__ import annotations

import pytest

import graphc
from graphc.bench.keras_applications import APPLICATIONS, application_inputs, save_application
from graphc.frontend import state
from tests.keras_parity import assert_outputs_close

pytestmark = pytest.mark.keras

SLOW = ("Xception", "InceptionV3", "DenseNet121", "InceptionResNetV2")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else [])
                                  for n in APPLICATIONS])
def test_keras_file_compiles_and_matches_keras(name, keras, rng, tmp_path):
    path, kmodel = save_application(keras, name, tmp_path, rng)
    state.clear_session()
    model = graphc.models.load_model(path)
    assert model.count_params() == kmodel.count_params()
    compiled = {t: graphc.build(model, target=t) for t in ("reference", "onnx", "native")}
    for n in (1, 2):
        x = application_inputs(name, rng, n)
        want = kmodel.predict(x, verbose=0)
        for target, cm in compiled.items():
            assert_outputs_close(cm.predict(x), want, rtol=1e-4, atol=1e-4, what=f"{name} {target} n={n}")
