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


def test_an_application_built_over_images_of_any_size(keras, rng, tmp_path):
    """MobileNetV3Small as ``MobileNetV3Small()`` builds it by default, over images of any size
    (``input_shape=(None, None, 3)``): one native build predicts what Keras predicts at several sizes, square
    and not, its depthwise spans and padded copies sized at run time."""
    path, kmodel = save_application(keras, "MobileNetV3Small", tmp_path, rng, (None, None, 3))
    state.clear_session()
    model = graphc.models.load_model(path)
    native = graphc.build(model, target="native", threads=2)
    for shape in ((32, 32, 3), (57, 40, 3), (96, 96, 3)):
        x = application_inputs("MobileNetV3Small", rng, 2, shape)
        assert_outputs_close(native.predict(x), kmodel.predict(x, verbose=0), rtol=1e-4, atol=1e-4,
                             what=f"MobileNetV3Small over {shape}")
