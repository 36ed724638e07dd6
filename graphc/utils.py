"""Utilities with Keras's names: seeding, one-hot labels, model plots."""

from __future__ import annotations

import gc

import numpy as np

from graphc.frontend import state
from graphc.frontend.state import set_random_seed
from graphc.plot import model_to_dot, plot_model


def clear_session(free_memory: bool = True) -> None:
    """Reset automatic layer names (the next Dense is ``dense`` again), as ``keras.utils.clear_session``;
    with ``free_memory`` (Keras's default) also run Python's garbage collector, as Keras does. A full
    collection in a large process takes a noticeable time (0.3 s beside torch and a few hundred models),
    which a loop that clears often may skip with ``free_memory=False``."""
    state.clear_session()
    if free_memory:
        gc.collect()


def to_categorical(x, num_classes: int | None = None) -> np.ndarray:
    """One-hot encode integer class labels (float32), as ``keras.utils.to_categorical``."""
    x = np.asarray(x)
    if x.size and not np.issubdtype(x.dtype, np.integer):
        if not np.all(x == np.round(x)):
            raise ValueError("to_categorical needs integer class labels")
        x = x.astype(np.int64)
    x = x.astype(np.int64)
    input_shape = x.shape
    if input_shape and input_shape[-1] == 1 and len(input_shape) > 1:
        input_shape = input_shape[:-1]
    x = x.reshape(-1)
    if x.size and x.min() < 0:
        raise ValueError(f"class labels must be non-negative, got {x.min()}")
    if num_classes is None:
        num_classes = int(x.max()) + 1 if x.size else 0
    elif x.size and x.max() >= num_classes:
        raise ValueError(f"label {x.max()} is out of range for num_classes={num_classes}")
    out = np.zeros((x.shape[0], num_classes), dtype="float32")
    out[np.arange(x.shape[0]), x] = 1.0
    return out.reshape(input_shape + (num_classes,))


__all__ = ["to_categorical", "set_random_seed", "clear_session", "plot_model", "model_to_dot"]
