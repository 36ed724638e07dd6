"""``keras.applications`` models as a user brings them: built by Keras, saved as ``.keras``.

Used by the compatibility tests and by ``python -m benchmarks.applications``, so both measure
the same models. Weights are Keras's random initialisation (``weights=None``: nothing is
downloaded) with random BatchNorm statistics, so that BatchNorm folding changes numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# Keras application -> (smallest input it accepts, the input it was designed for)
APPLICATIONS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "VGG16": ((32, 32, 3), (224, 224, 3)),
    "MobileNet": ((32, 32, 3), (224, 224, 3)),
    "MobileNetV2": ((32, 32, 3), (224, 224, 3)),
    "MobileNetV3Small": ((32, 32, 3), (224, 224, 3)),
    "MobileNetV3Large": ((32, 32, 3), (224, 224, 3)),
    "ResNet50": ((32, 32, 3), (224, 224, 3)),
    "ResNet50V2": ((32, 32, 3), (224, 224, 3)),
    "EfficientNetB0": ((32, 32, 3), (224, 224, 3)),
    "EfficientNetV2B0": ((32, 32, 3), (224, 224, 3)),
    "ConvNeXtTiny": ((32, 32, 3), (224, 224, 3)),
    "Xception": ((71, 71, 3), (299, 299, 3)),
    "InceptionV3": ((75, 75, 3), (299, 299, 3)),
    "DenseNet121": ((32, 32, 3), (224, 224, 3)),
    "InceptionResNetV2": ((75, 75, 3), (299, 299, 3)),
}

# Applications that scale pixels themselves (a Rescaling layer inside): inputs in [0, 255].
_PIXEL_INPUTS = ("EfficientNet", "MobileNetV3", "ConvNeXt")


def keras_application(keras: Any, name: str, rng: np.random.Generator, input_shape=None, classes: int = 10):
    """The Keras model ``name`` (logits, ``classes`` outputs) with random BatchNorm statistics."""
    if name not in APPLICATIONS:
        raise ValueError(f"unknown application {name!r}; known: {', '.join(APPLICATIONS)}")
    keras.utils.clear_session()
    shape = tuple(input_shape or APPLICATIONS[name][0])
    model = getattr(keras.applications, name)(weights=None, input_shape=shape, classes=classes,
                                               classifier_activation=None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([_bn_value(w.path.rsplit("/", 1)[-1], tuple(w.shape), rng) for w in layer.weights])
    return model


def _bn_value(kind: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    draw = {"moving_variance": lambda: rng.uniform(0.5, 1.5, shape), "moving_mean": lambda: rng.normal(0, 0.1, shape),
            "gamma": lambda: rng.uniform(0.8, 1.2, shape), "beta": lambda: rng.normal(0, 0.1, shape)}
    return np.asarray(draw[kind](), dtype=np.float32)


def application_inputs(name: str, rng: np.random.Generator, n: int, input_shape=None) -> np.ndarray:
    """Images for ``name``: pixels in [0, 255] where the model rescales them itself, else [0, 1]."""
    shape = tuple(input_shape or APPLICATIONS[name][0])
    high = 255.0 if name.startswith(_PIXEL_INPUTS) else 1.0
    return rng.uniform(0.0, high, (n, *shape)).astype(np.float32)


def save_application(keras: Any, name: str, directory: Path, rng: np.random.Generator, input_shape=None):
    """Build ``name`` with Keras and save it as ``directory/name.keras``; returns (path, keras model)."""
    model = keras_application(keras, name, rng, input_shape)
    path = Path(directory) / f"{name}.keras"
    model.save(path)
    return path, model


def transformer_encoder(keras: Any, rng: np.random.Generator, *, seq: int = 128, vocab: int = 1000,
                        d_model: int = 256, heads: int = 4, ff: int = 1024, blocks: int = 2, classes: int = 10):
    """A BERT-style text classifier as Keras users write it: token embeddings (no position embedding:
    what is timed is the encoder), ``blocks`` post-norm encoder blocks (MultiHeadAttention, a ReLU
    feed-forward network, LayerNormalization), mean pooling and a linear head. Weights are Keras's
    initialisation, then drawn from ``rng``."""
    keras.utils.clear_session()
    layers = keras.layers
    ids = keras.Input((seq,), dtype="int32", name="ids")
    x = layers.Embedding(vocab, d_model)(ids)
    for _ in range(blocks):
        attention = layers.MultiHeadAttention(heads, d_model // heads)(x, x)
        x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, attention]))
        hidden = layers.Dense(ff, activation="relu")(x)
        x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, layers.Dense(d_model)(hidden)]))
    logits = layers.Dense(classes)(layers.GlobalAveragePooling1D()(x))
    model = keras.Model(ids, logits, name="transformer_encoder")
    model.set_weights([rng.normal(0.0, 0.05, tuple(w.shape)).astype(np.float32) if w.ndim > 1 else
                       np.asarray(w) for w in model.get_weights()])
    return model

