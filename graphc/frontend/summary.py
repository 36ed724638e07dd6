"""Keras-style ``summary()`` tables (placeholder layout; see print_summary)."""

from __future__ import annotations

import numpy as np


def print_summary(model, line_length=None, positions=None, print_fn=None, expand_nested=False,
                  show_trainable=False) -> None:
    print_fn = print_fn or print
    print_fn(f'Model: "{model.name}"')
    for layer in model.layers:
        shape = layer.output_shape if layer._inbound_nodes else "?"
        n = sum(int(np.prod(w.shape)) for w in layer.weights)
        print_fn(f"{layer.name} ({type(layer).__name__})  {shape}  {n:,}")
    total = model.count_params()
    print_fn(f" Total params: {total:,}")
