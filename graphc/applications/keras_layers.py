"""The layer classes ``keras.applications`` defines for itself, as graphc built-ins.

Keras writes them with their own modules (``keras.src.applications.convnext`` ``LayerScale``),
so ``.keras`` files of those applications name them; graphc knows them under those names and
loads such files with no ``custom_objects``:

- ``CustomScaleLayer(scale)`` (InceptionResNetV2): ``inputs[0] + inputs[1] * scale``;
- ``LayerScale(init_values, projection_dim)`` (ConvNeXt): ``x * gamma``, one weight per channel;
- ``StochasticDepth(drop_path_rate)`` (ConvNeXt): the identity at inference; in training each
  sample's residual branch is kept with probability ``1 - drop_path_rate`` and scaled by its
  inverse, as Keras does.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import initializers, nest
from graphc.frontend.layer import Layer
from graphc.frontend.lowering import LowerContext
from graphc.ops.registry import ShapeError

__all__ = ["CustomScaleLayer", "LayerScale", "StochasticDepth", "KERAS_CLASSES"]

INCEPTION_RESNET_V2 = "keras.src.applications.inception_resnet_v2"
CONVNEXT = "keras.src.applications.convnext"


def _number(value, what: str, layer: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{layer}: {what} must be a number, got {value!r}")
    return float(value)


class CustomScaleLayer(Layer):
    """``inputs[0] + inputs[1] * scale``: InceptionResNetV2's scaled residual sum."""

    keras_module = INCEPTION_RESNET_V2

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = _number(scale, "scale", "CustomScaleLayer")

    def check_inputs(self, inputs):
        if len(nest.flatten(inputs)) != 2:
            raise ShapeError(f"CustomScaleLayer takes a list of two tensors, got {len(nest.flatten(inputs))}")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        shortcut, residual = nest.flatten(inputs)
        scale = ctx.constant(np.asarray(self.scale, dtype=ctx.dtype(residual)), "scale")
        return ctx.add(shortcut, ctx.mul(residual, scale))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class LayerScale(Layer):
    """``x * gamma`` with ``gamma`` of shape ``(projection_dim,)`` initialized to ``init_values``."""

    keras_module = CONVNEXT

    def __init__(self, init_values, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.init_values = _number(init_values, "init_values", "LayerScale")
        if isinstance(projection_dim, bool) or not isinstance(projection_dim, (int, np.integer)) or projection_dim < 1:
            raise ValueError(f"LayerScale: projection_dim must be a positive integer, got {projection_dim!r}")
        self.projection_dim = int(projection_dim)

    def check_inputs(self, inputs):
        x = nest.flatten(inputs)
        if len(x) != 1 or x[0].shape[-1:] not in ((self.projection_dim,), (None,)):
            raise ShapeError(f"LayerScale(projection_dim={self.projection_dim}) needs one input whose last "
                             f"dimension is {self.projection_dim}, got {[t.shape for t in x]}")

    def build(self, input_shape):
        self.gamma = self.add_weight("gamma", (self.projection_dim,), initializers.Constant(self.init_values))

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        (x,) = nest.flatten(inputs)
        return ctx.mul(x, ctx.param(self.gamma))

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values, "projection_dim": self.projection_dim}


class StochasticDepth(Layer):
    """Drops a residual branch per sample in training (Keras's batch-wise ``DropPath``); identity otherwise."""

    keras_module = CONVNEXT

    def __init__(self, drop_path_rate, **kwargs):
        super().__init__(**kwargs)
        rate = _number(drop_path_rate, "drop_path_rate", "StochasticDepth")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth: drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.drop_path_rate = rate

    def lower(self, ctx: LowerContext, inputs, training=None, **kwargs):
        (x,) = nest.flatten(inputs)
        if not (ctx.training if training is None else training) or self.drop_path_rate == 0.0:
            return ctx.identity(x)
        dtype = ctx.dtype(x)
        keep_prob = 1.0 - self.drop_path_rate
        per_sample = ctx.reduce_max(x, axes=tuple(range(1, ctx.rank(x))), keepdims=True) if ctx.rank(x) > 1 else x
        # floor(keep_prob + u) is 1 exactly when u >= drop_path_rate (u uniform in [0, 1)).
        keep = ctx.greater_equal(ctx.random_uniform_like(per_sample),
                                 ctx.constant(np.asarray(self.drop_path_rate, dtype=dtype), "rate"))
        scaled = ctx.div(x, ctx.constant(np.asarray(keep_prob, dtype=dtype), "keep_prob"))
        return ctx.where(keep, scaled, ctx.constant(np.zeros((), dtype=dtype), "zero"))

    def get_config(self):
        return {**super().get_config(), "drop_path_rate": self.drop_path_rate}


# (Keras module, Keras class name) -> graphc class
KERAS_CLASSES: dict[tuple[str, str], type] = {
    (cls.keras_module, cls.__name__): cls for cls in (CustomScaleLayer, LayerScale, StochasticDepth)}
