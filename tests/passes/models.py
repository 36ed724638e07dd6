"""Small front-end models for pass tests, with non-trivial BatchNorm statistics."""

from __future__ import annotations

import numpy as np

from graphc import layers


def randomize_bn(model, rng) -> None:
    """Give every BatchNormalization of ``model`` random gamma, beta, mean and (positive) variance."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            ws = layer.get_weights()
            new = []
            for w, kind in zip(ws, ("gamma", "beta", "mean", "variance")[-len(ws):] if len(ws) < 4 else
                               ("gamma", "beta", "mean", "variance")):
                if kind in ("gamma", "variance"):
                    new.append(rng.uniform(0.5, 2.0, w.shape).astype(w.dtype))
                else:
                    new.append(rng.standard_normal(w.shape).astype(w.dtype))
            layer.set_weights(new)
        elif hasattr(layer, "layers"):
            randomize_bn(layer, rng)


def randomize_biases(model, rng) -> None:
    """Non-zero biases, so that tests can tell whether a bias was kept."""
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.standard_normal(layer.bias.shape).astype(np.float32))
