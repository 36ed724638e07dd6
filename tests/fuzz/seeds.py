"""The seed corpora of the fuzzers.

- ``corpus/keras``: small models of every common kind, each saved by graphc and by Keras 3 (the
  files a user brings are written by Keras);
- ``corpus/weights``: weights files of tests/runtime's "abi_model" for the native loader's target
  (one mode byte, then the file: see tests/fuzz/fuzz_weights.c).

    KERAS_BACKEND=torch python -m tests.fuzz.seeds     # rewrites both
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from tests.fuzz.keras_files import CORPUS  # noqa: E402

WEIGHTS_CORPUS = CORPUS.parent / "weights"


def mlp(K):
    x = K.Input((6,), name="features")
    h = K.layers.Dense(5, activation="relu")(x)
    h = K.layers.Dropout(0.2)(h)
    return K.Model(x, K.layers.Dense(3, activation="softmax", name="probs")(h), name="mlp")


def conv(K):
    x = K.Input((9, 9, 2), name="image")
    h = K.layers.Conv2D(3, 3, padding="same", activation="relu")(x)
    h = K.layers.BatchNormalization()(h)
    h = K.layers.MaxPooling2D(2)(h)
    h = K.layers.DepthwiseConv2D(2)(h)
    return K.Model(x, K.layers.Dense(2)(K.layers.Flatten()(h)), name="conv")


def text(K):
    ids = K.Input((None,), dtype="int32", name="ids")
    h = K.layers.Embedding(20, 4)(ids)
    h = K.layers.LSTM(3, return_sequences=True)(h)
    h = K.layers.GlobalAveragePooling1D()(h)
    return K.Model(ids, K.layers.Dense(1, activation="sigmoid")(h), name="text")


def merge(K):
    a = K.Input((5,), name="a")
    b = K.Input((5,), name="b")
    shared = K.layers.Dense(4, activation="tanh")
    ha, hb = shared(a), shared(b)
    h = K.layers.Concatenate()([K.layers.Add()([ha, hb]), K.layers.Multiply()([ha, hb])])
    return K.Model([a, b], [K.layers.Dense(2, name="out")(h), K.layers.Dense(1, name="aux")(ha)], name="merge")


def sequential(K):
    return K.Sequential([K.Input((4,)), K.layers.Dense(3), K.layers.LayerNormalization(),
                         K.layers.Activation("gelu"), K.layers.Dense(2)], name="sequential")


def sequence(K):
    x = K.Input((None, 3), name="signal")
    h = K.layers.Conv1D(4, 3, strides=2, padding="same")(x)
    h = K.layers.MaxPooling1D(2, strides=3, padding="same")(h)
    return K.Model(x, K.layers.GRU(2)(h), name="sequence")


MODELS = {f.__name__: f for f in (mlp, conv, text, merge, sequential, sequence)}


def write_corpus() -> None:
    import keras

    import graphc
    from graphc.frontend import state

    rng = np.random.default_rng(0)
    CORPUS.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        state.clear_session()
        model = build(graphc)
        model.set_weights([rng.standard_normal(np.shape(w)).astype(np.float32) * 0.5 for w in model.get_weights()])
        model.save(CORPUS / f"{name}-graphc.keras")
        keras.utils.clear_session(free_memory=False)
        kmodel = build(keras)
        kmodel.set_weights(model.get_weights())
        kmodel.save(CORPUS / f"{name}-keras.keras")


def abi_weights_file() -> bytes:
    """The weights file of tests/runtime's abi_model, as export_library(weights="external") writes it."""
    import tempfile
    from pathlib import Path

    from graphc.backends.llvm.codegen import weights_blob, weights_layout
    from graphc.backends.llvm.native import write_weights_file
    from tests.runtime.conftest import abi_graph

    graph = abi_graph()
    entries, total, digest = weights_layout(graph)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "abi_model.weights"
        write_weights_file(path, digest, weights_blob(graph, entries, total))
        return path.read_bytes()


def write_weights_corpus() -> None:
    data = abi_weights_file()
    WEIGHTS_CORPUS.mkdir(parents=True, exist_ok=True)
    seeds = {"valid": b"\x00" + data, "valid-fix-checksum": b"\x01" + data,
             "header-only": b"\x00" + data[:32], "half-payload": b"\x01" + data[: 32 + (len(data) - 32) // 2],
             "empty": b"\x00"}
    for name, blob in seeds.items():
        (WEIGHTS_CORPUS / name).write_bytes(blob)


if __name__ == "__main__":
    write_corpus()
    write_weights_corpus()
