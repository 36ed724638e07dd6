"""``graphc.applications`` against ``keras.applications``: the same architecture layer for layer.

Each application graphc builds with its own front end has the layers Keras builds (names, classes,
connections, configurations, weight paths and shapes), the same ``summary()`` and parameter count;
given its Keras twin's weights (random BatchNorm statistics, so folding changes numbers), its
reference, ONNX and native targets predict what Keras predicts at batch 1 and 2 on the smallest
input the architecture accepts; ``.keras`` files go both ways.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import Input, applications
from graphc.applications import efficientnet, mobilenet_v2, resnet
from graphc.bench.keras_applications import application_inputs, keras_application
from graphc.frontend import state
from tests.keras_parity import assert_outputs_close

pytestmark = pytest.mark.keras

# (application, extra keyword arguments); the big variants are slow only because Keras builds them slowly.
FAST = [("ResNet50", {}), ("ResNet50V2", {}), ("MobileNetV2", {}), ("MobileNetV2", {"alpha": 0.35}),
        ("MobileNetV2", {"alpha": 1.4}), ("EfficientNetB0", {})]
SLOW = [("ResNet101", {}), ("ResNet152", {}), ("ResNet101V2", {}), ("ResNet152V2", {})] + \
    [(f"EfficientNetB{i}", {}) for i in range(1, 8)]
VARIANTS = [pytest.param(n, kw, id=f"{n}-{kw['alpha']}" if kw else n) for n, kw in FAST] + \
    [pytest.param(n, kw, id=n, marks=pytest.mark.slow) for n, kw in SLOW]
# (include_top, input_shape, pooling): the top on the smallest input; odd sizes without it; free sizes.
HEADS = [pytest.param(True, (32, 32, 3), None, id="top"), pytest.param(False, (33, 47, 3), "max", id="max"),
         pytest.param(False, None, "avg", id="free-avg")]
PREDICTED = ["ResNet50", "ResNet50V2", "MobileNetV2", "EfficientNetB0"]


@pytest.fixture
def columns(monkeypatch):
    """A fixed terminal width, so that Keras and graphc size their summary tables alike."""
    monkeypatch.setenv("COLUMNS", "200")


def _both(keras, name: str, **kwargs):
    """The graphc application and Keras's, each built in a fresh session (same automatic names)."""
    state.clear_session()
    model = getattr(applications, name)(weights=None, **kwargs)
    keras.utils.clear_session(free_memory=False)
    return model, getattr(keras.applications, name)(weights=None, **kwargs)


def _inbound(layer) -> list[list[str]]:
    return [[t._keras_history[0].name for t in node.input_tensors] for node in layer._inbound_nodes]


def _same_values(got, want, where: str) -> None:
    """Config values equal wherever both have a key (graphc leaves out some keys Keras adds, such as
    activity_regularizer, which it refuses anyway when set)."""
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(got) & set(want)):
            _same_values(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        assert len(got) == len(want), f"{where}: {got} != Keras's {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            _same_values(g, w, f"{where}[{i}]")
    elif (got, want) != ("swish", "silu"):  # one function: Keras names it silu, graphc as it was given
        assert got == want, f"{where}: {got!r} != Keras's {want!r}"


def assert_same_architecture(model, kmodel) -> None:
    assert model.name == kmodel.name
    assert [layer.name for layer in model.layers] == [layer.name for layer in kmodel.layers]
    assert [type(layer).__name__ for layer in model.layers] == [type(layer).__name__ for layer in kmodel.layers]
    for layer, klayer in zip(model.layers, kmodel.layers):
        assert _inbound(layer) == _inbound(klayer), f"{layer.name}: inputs differ from Keras's"
    for entry, kentry in zip(model.get_config()["layers"], kmodel.get_config()["layers"]):
        _same_values(entry["config"], kentry["config"], entry["name"])
    assert [w.path for w in model.weights] == [w.path for w in kmodel.weights]
    assert [tuple(w.shape) for w in model.weights] == [tuple(w.shape) for w in kmodel.weights]
    assert [w.trainable for w in model.weights] == [w.trainable for w in kmodel.weights]
    assert model.count_params() == kmodel.count_params()
    assert tuple(model.output.shape) == tuple(kmodel.output.shape)


@pytest.mark.parametrize("include_top, input_shape, pooling", HEADS)
@pytest.mark.parametrize("name, kwargs", VARIANTS)
def test_same_architecture_as_keras(name, kwargs, include_top, input_shape, pooling, keras):
    model, kmodel = _both(keras, name, include_top=include_top, input_shape=input_shape, pooling=pooling,
                          classes=7, **kwargs)
    assert_same_architecture(model, kmodel)


@pytest.mark.parametrize("name", PREDICTED)
def test_same_summary_as_keras(name, keras, columns):
    texts = []
    for model in _both(keras, name, input_shape=(32, 32, 3), classes=7):
        out: list[str] = []
        model.summary(print_fn=out.append)
        texts.append(out[0])
    assert texts[0] == texts[1]


def test_efficientnet_builder_without_dropout_as_keras(keras):
    """Keras's EfficientNet builder: no Dropout layers when both rates are 0 (the deterministic
    training step), a custom activation and depth divisor."""
    from keras.src.applications.efficientnet import EfficientNet

    kwargs = dict(dropout_rate=0.0, drop_connect_rate=0.0, depth_divisor=16, activation="relu", name="tiny",
                  weights=None, input_shape=(32, 32, 3), classes=3)
    state.clear_session()
    model = efficientnet.EfficientNet(1.1, 0.5, 224, **kwargs)
    keras.utils.clear_session(free_memory=False)
    assert_same_architecture(model, EfficientNet(1.1, 0.5, 224, **kwargs))
    assert not any(isinstance(layer, graphc.layers.Dropout) for layer in model.layers)


@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV2", "EfficientNetB0"])
@pytest.mark.parametrize("include_top", [True, False])
def test_input_tensor_as_keras(name, include_top, keras):
    """An input tensor (96x96, one of MobileNetV2's trained sizes) becomes the model's input."""
    state.clear_session()
    image = Input(shape=(96, 96, 3), name="image")
    model = getattr(applications, name)(weights=None, include_top=include_top, input_tensor=image, classes=7)
    keras.utils.clear_session(free_memory=False)
    kimage = keras.Input(shape=(96, 96, 3), name="image")
    kmodel = getattr(keras.applications, name)(weights=None, include_top=include_top, input_tensor=kimage, classes=7)
    assert model.inputs[0] is image
    assert_same_architecture(model, kmodel)


def _twins(keras, name: str, rng):
    """Keras's application (10 logits, smallest input, random BatchNorm statistics) and graphc's,
    with Keras's weights."""
    kmodel = keras_application(keras, name, rng)
    state.clear_session()
    model = getattr(applications, name)(weights=None, input_shape=tuple(kmodel.input.shape[1:]), classes=10,
                                        classifier_activation=None)
    model.set_weights([np.asarray(w) for w in kmodel.get_weights()])
    return model, kmodel


@pytest.mark.slow
@pytest.mark.parametrize("name", PREDICTED)
def test_targets_predict_as_keras(name, keras, rng):
    model, kmodel = _twins(keras, name, rng)
    compiled = {t: graphc.build(model, target=t) for t in ("reference", "onnx", "native")}
    for n in (1, 2):
        x = application_inputs(name, rng, n)
        want = kmodel.predict(x, verbose=0)
        for target, cm in compiled.items():
            assert_outputs_close(cm.predict(x), want, rtol=1e-4, atol=1e-5, what=f"{name} {target} n={n}")


@pytest.mark.parametrize("name", PREDICTED)
def test_keras_file_round_trip(name, keras, rng, tmp_path):
    """graphc's model saved as .keras loads in Keras and predicts what the Keras twin predicts;
    Keras's file loads in graphc as the same architecture."""
    model, kmodel = _twins(keras, name, rng)
    x = application_inputs(name, rng, 2)
    want = kmodel.predict(x, verbose=0)
    model.save(tmp_path / "graphc.keras")
    keras.utils.clear_session(free_memory=False)
    assert_outputs_close(keras.models.load_model(tmp_path / "graphc.keras").predict(x, verbose=0), want,
                         what=f"Keras loading graphc's {name}")
    kmodel.save(tmp_path / "keras.keras")
    state.clear_session()
    loaded = graphc.models.load_model(tmp_path / "keras.keras")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert_outputs_close(loaded.predict(x), want, what=f"graphc loading Keras's {name}")


@pytest.mark.parametrize("build", [applications.ResNet50, applications.ResNet152V2, applications.MobileNetV2,
                                   applications.EfficientNetB0, applications.EfficientNetB7],
                         ids=lambda f: f.__name__)
def test_pretrained_weights_are_refused(build):
    with pytest.raises(ValueError, match=rf"{build.__name__}\(weights='imagenet'\): graphc does not download "
                                         r"pretrained weights.*weights=None.*set_weights"):
        build(weights="imagenet")
    with pytest.raises(ValueError, match=rf"{build.__name__}\(weights='/tmp/w.h5'\): graphc cannot load weight"):
        build(weights="/tmp/w.h5")


@pytest.mark.parametrize("build", [applications.ResNet50V2, applications.MobileNetV2, applications.EfficientNetB3],
                         ids=lambda f: f.__name__)
def test_bad_arguments_are_named(build):
    name = build.__name__
    with pytest.raises(ValueError, match=f"{name} pooling must be None, 'avg' or 'max', got 'sum'"):
        build(weights=None, include_top=False, pooling="sum")
    with pytest.raises(ValueError, match=rf"{name} input size must be at least 32x32.*\(31, 64, 3\)"):
        build(weights=None, include_top=False, input_shape=(31, 64, 3))
    with pytest.raises(ValueError, match=rf"{name} input_shape must be a tuple of three integers.*\(64, 64\)"):
        build(weights=None, include_top=False, input_shape=(64, 64))
    with pytest.raises(ValueError, match=rf"include_top is True, {name} needs a static input_shape"):
        build(weights=None, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match=f"{name} classes must be a positive integer, got 0"):
        build(weights=None, classes=0)
    with pytest.raises(ValueError, match=f"{name} input_tensor must be a symbolic tensor"):
        build(weights=None, include_top=False, input_tensor=np.zeros((1, 64, 64, 3)))


def test_bad_family_arguments_are_named():
    with pytest.raises(ValueError, match="MobileNetV2 alpha must be a positive number, got 0"):
        applications.MobileNetV2(weights=None, alpha=0)
    with pytest.raises(ValueError, match=r"input_tensor.shape\[2\] must equal input_shape\[1\]"):
        applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3),
                                 input_tensor=Input(shape=(64, 96, 3)))
    with pytest.raises(ValueError, match=r"EfficientNet drop_connect_rate must be a number in \[0, 1\), got 1.5"):
        efficientnet.EfficientNet(1.0, 1.0, 224, drop_connect_rate=1.5, weights=None)
    with pytest.raises(ValueError, match=r"blocks_args\[0\] must be a dict with the keys"):
        efficientnet.EfficientNet(1.0, 1.0, 224, blocks_args=[{"kernel_size": 3}], weights=None)
    args = [dict(efficientnet.DEFAULT_BLOCKS_ARGS[0], repeats=0)]
    with pytest.raises(ValueError, match=r"repeats in EfficientNet must be > 0.*repeats=0"):
        efficientnet.EfficientNet(1.0, 1.0, 224, blocks_args=args, weights=None)


def test_defaults_and_exports():
    assert applications.ResNet50 is resnet.ResNet50 and applications.MobileNetV2 is mobilenet_v2.MobileNetV2
    model = applications.ResNet50(weights=None)
    assert model.input.shape == (None, 224, 224, 3) and model.output.shape == (None, 1000)
    assert model.count_params() == 25_636_712
    assert applications.MobileNetV2(weights=None, include_top=False).name == "mobilenetv2_1.00_None"
    assert applications.EfficientNetB4(weights=None).input.shape == (None, 380, 380, 3)
