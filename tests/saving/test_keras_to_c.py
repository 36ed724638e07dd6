"""The headline workflow: a model trained in Keras, saved as .keras, compiled by
``graphc compile`` into a native library and run from C, prints what Keras predicts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from graphc import cli
from tests.backends.llvm.test_embed_c import EXAMPLE, read_tensors

pytestmark = pytest.mark.keras


def write_tensors(path: Path, named) -> None:
    with path.open("w") as f:
        for name, a in named:
            f.write(f"{name} {a.ndim} {' '.join(str(d) for d in a.shape)}\n")
            f.write(" ".join(repr(float(v)) if a.dtype.kind == "f" else str(int(v)) for v in a.ravel()) + "\n")


def test_keras_trained_model_compiled_and_run_from_c(keras, tmp_path, rng):
    if shutil.which("make") is None:
        pytest.fail("make is needed to build examples/embed_c")
    keras.utils.set_random_seed(5)
    text = keras.Input(shape=(None,), dtype="int32", name="text")
    side = keras.Input(shape=(3,), name="side")
    x = keras.layers.Embedding(50, 8)(text)
    x = keras.layers.Conv1D(6, 3, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.concatenate([x, side])
    x = keras.layers.Dense(7, activation="tanh")(x)
    x = keras.layers.BatchNormalization()(x)
    out = keras.layers.Dense(2, activation="softmax", name="probs")(x)
    kmodel = keras.Model([text, side], out, name="kerasnet")
    kmodel.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    ids = rng.integers(0, 50, size=(64, 9)).astype("int32")
    feats = rng.normal(size=(64, 3)).astype("float32")
    labels = rng.integers(0, 2, size=(64,))
    kmodel.fit([ids, feats], labels, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "kerasnet.keras"
    kmodel.save(path)

    build = tmp_path / "build"
    assert cli.main(["compile", str(path), "--target", "native", "-o", str(build), "--name", "kerasnet"]) == 0
    test_ids = rng.integers(0, 50, size=(3, 11)).astype("int32")
    test_feats = rng.normal(size=(3, 3)).astype("float32")
    write_tensors(build / "inputs.txt", [("text", test_ids), ("side", test_feats)])
    exe = tmp_path / "embed"
    proc = subprocess.run(["make", "-s", "-C", str(EXAMPLE), "MODEL=kerasnet", f"BUILD={build}", f"OUT={exe}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(exe), str(build / "inputs.txt")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    (name, got), = read_tensors(run.stdout)
    want = np.asarray(kmodel.predict([test_ids, test_feats], verbose=0))
    assert name == "probs"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
