"""``graphc.from_keras``: import a live Keras 3 model object, with its weights.

The Keras model is written to a ``.keras`` archive in a temporary directory with Keras's
own saver and read back with graphc's loader, so a live model and a file take exactly the
same path (same layer support, same checks, compile configuration carried through).
"""

from __future__ import annotations

import os
import tempfile

from graphc.frontend.model import Model
from graphc.saving.keras_format import load_model


def from_keras(keras_model, compile: bool = True) -> Model:
    """The graphc equivalent of ``keras_model`` (a built ``keras.Model``), with the same weights."""
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("graphc.from_keras needs Keras 3 (pip install 'graphc[keras]')") from exc
    if not isinstance(keras_model, keras.Model):
        raise TypeError(f"graphc.from_keras imports a keras.Model, got {type(keras_model).__name__}")
    if not keras_model.built:
        raise ValueError(f"the Keras model {keras_model.name!r} is not built yet: call it on data or give it an "
                         "Input first, so that its weights exist")
    with tempfile.TemporaryDirectory(prefix="graphc-from-keras-") as directory:
        path = os.path.join(directory, "model.keras")
        keras_model.save(path)
        return load_model(path, compile=compile)


__all__ = ["from_keras"]
