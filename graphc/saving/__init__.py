"""Keras interoperability: Keras 3 ``.keras`` / ``.weights.h5`` files, model configs, live models.

- :func:`save_model` / :func:`load_model`: the ``.keras`` archive (config, weights, compile
  configuration and optimizer state);
- :func:`save_weights` / :func:`load_weights`: the ``.weights.h5`` file;
- :func:`serialize` / :func:`deserialize`: one layer or model in Keras's config format;
- :func:`from_keras`: a live ``keras.Model`` with its weights;
- :func:`register_keras_serializable`: custom layer classes that files name (``"package>Name"``).

Layers are matched by Keras class name (:func:`supported_keras_layers` lists them); file
layouts follow Keras 3.15 (see ``keras_format`` and ``layout``).
"""

from __future__ import annotations

from graphc.saving.custom_objects import get_registered_name, get_registered_object, register_keras_serializable
from graphc.saving.errors import KerasFormatError, UnsupportedKerasError
from graphc.saving.from_keras import from_keras
from graphc.saving.functional import model_config, model_from_config
from graphc.saving.functional import serialize_layer as serialize
from graphc.saving.keras_format import load_model, load_weights, save_model, save_weights
from graphc.saving.registry import supported_keras_layers


def deserialize(config: dict, custom_objects: dict | None = None):
    """A graphc layer or model from its Keras serialization (``{"class_name", "config", ...}``)."""
    from graphc.saving.functional import deserialize as _deserialize

    return _deserialize(config, custom_objects)[0]


__all__ = ["save_model", "load_model", "save_weights", "load_weights", "serialize", "deserialize", "model_config",
           "model_from_config", "from_keras", "supported_keras_layers", "register_keras_serializable",
           "get_registered_name", "get_registered_object", "KerasFormatError", "UnsupportedKerasError"]
