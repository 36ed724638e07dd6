"""Core layers: Dense, Activation, Dropout, Flatten, Reshape, Embedding, Masking."""

from __future__ import annotations

import numpy as np

from graphc.frontend import activations, initializers, masking, nest
from graphc.frontend.layer import Layer
from graphc.frontend.lowering import LowerContext
from graphc.ir.types import is_int
from graphc.ops.registry import ShapeError

__all__ = ["Dense", "Activation", "Dropout", "Flatten", "Reshape", "Embedding", "Masking"]


def refuse_options(layer: Layer, **options) -> None:
    """Refuse Keras options graphc does not implement (LoRA, quantization), naming them and the layer.

    Accepting them in silence would train and save a different model than the user asked for.
    """
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise ValueError(f"{type(layer).__name__} {layer.name!r}: graphc does not implement "
                         f"{', '.join(given)}; leave {'them' if len(given) > 1 else 'it'} None")


def single(inputs):
    flat = nest.flatten(inputs)
    if len(flat) != 1:
        raise ShapeError(f"expects a single input tensor, got {len(flat)}")
    return flat[0]


def axis_argument(axis, layer: str) -> int | list[int]:
    """A layer's Keras ``axis`` argument (an int, or a non-empty list of ints) as given; TypeError
    naming the layer for anything else."""
    def is_index(a) -> bool:
        return isinstance(a, (int, np.integer)) and not isinstance(a, bool)

    if isinstance(axis, (list, tuple)):
        if not axis or not all(is_index(a) for a in axis):
            raise TypeError(f"{layer} axis must be an int or a non-empty list of ints, got {axis!r}")
        return [int(a) for a in axis]
    if is_index(axis):
        return int(axis)
    raise TypeError(f"{layer} axis must be an int or a list of ints, got {axis!r}")


class Dense(Layer):
    """``activation(inputs @ kernel + bias)`` on the last axis."""

    supports_masking = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, lora_rank=None,
                 lora_alpha=None, quantization_config=None, **kwargs):
        super().__init__(**kwargs)
        refuse_options(self, lora_rank=lora_rank, lora_alpha=lora_alpha, quantization_config=quantization_config)
        if not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self._set_weight_options(kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                                 activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                                 bias_constraint=bias_constraint)

    def check_inputs(self, inputs):
        x = single(inputs)
        if len(x.shape) < 2:
            raise ShapeError(f"Dense needs an input of rank >= 2, got shape {x.shape}")
        if x.shape[-1] is None:
            raise ShapeError(f"the last dimension of the input to Dense must be known, got shape {x.shape}")
        if not x.dtype.startswith("float"):
            raise ShapeError(f"Dense needs a float input, got {x.dtype}")

    def build(self, input_shape):
        in_dim = input_shape[-1]
        self.kernel = self.add_weight("kernel", (in_dim, self.units), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        self.bias = self.add_weight("bias", (self.units,), self.bias_initializer, regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = single(inputs)
        y = ctx.matmul(x, ctx.param(self.kernel))
        if self.use_bias:
            y = ctx.bias_add(y, ctx.param(self.bias))
        return activations.lower(ctx, self.activation, y)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}


class Activation(Layer):
    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def lower(self, ctx, inputs, **kwargs):
        return activations.lower(ctx, self.activation, single(inputs))

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


class Dropout(Layer):
    """Randomly zeroes inputs while training; the identity at inference."""

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate <= 1:
            raise ValueError(f"Dropout rate must be in [0, 1], got {rate}")
        self.rate = float(rate)
        self.noise_shape = noise_shape
        self.seed = seed

    def lower(self, ctx, inputs, training=None, **kwargs):
        x = single(inputs)
        if self.rate >= 1.0:  # everything dropped while training; the identity at inference, as in Keras
            if ctx.training if training is None else training:
                return ctx.mul(x, ctx.constant(np.zeros((), dtype=ctx.dtype(x)), "zero"))
            return x
        if (ctx.training if training is None else training) and self.rate > 0:
            # Training: keep each element with probability 1 - rate, scaled by 1 / (1 - rate).
            dtype = ctx.dtype(x)
            shaped = x  # the mask's shape: x's, or noise_shape's (its 1s broadcast, as in Keras)
            if self.noise_shape is not None:
                ones = tuple(i for i, d in enumerate(self.noise_shape) if d == 1)
                shaped = ctx.reduce_max(x, axes=ones, keepdims=True) if ones else x
            keep = ctx.greater_equal(ctx.random_uniform_like(shaped, seed=self.seed),
                                     ctx.constant(np.asarray(self.rate, dtype=dtype), "rate"))
            scaled = ctx.mul(x, ctx.constant(np.asarray(1.0 / (1.0 - self.rate), dtype=dtype), "scale"))
            return ctx.where(keep, scaled, ctx.constant(np.zeros((), dtype=dtype), "zero"))
        return ctx.dropout(x, rate=self.rate, seed=self.seed)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed, "noise_shape": self.noise_shape}


class Flatten(Layer):
    """(batch, ...) -> (batch, product of the rest).

    With ``data_format="channels_first"`` the input is (batch, channels, ...) and is moved to
    channels-last before flattening, as Keras does, so the flattened order (and so the next
    Dense layer's weights) is the same in both data formats.
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last", "channels_first"):
            raise ValueError(f"Flatten {self.name!r}: data_format must be 'channels_last' or 'channels_first', "
                             f"got {data_format!r}")
        self.data_format = data_format or "channels_last"

    def lower(self, ctx, inputs, **kwargs):
        x = single(inputs)
        if self.data_format == "channels_first" and ctx.rank(x) > 2:
            rank = ctx.rank(x)
            x = ctx.transpose(x, perm=(0, *range(2, rank), 1))
        shape = ctx.shape(x)
        rest = shape[1:]
        if all(isinstance(d, int) for d in rest):
            return ctx.reshape(x, shape=(shape[0], int(np.prod(rest, dtype=np.int64))))
        return ctx.reshape(x, shape=(shape[0], -1))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Reshape(Layer):
    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        if sum(1 for d in self.target_shape if d == -1) > 1:
            raise ValueError(f"Reshape target {self.target_shape} has more than one -1")

    def lower(self, ctx, inputs, **kwargs):
        x = single(inputs)
        shape = ctx.shape(x)
        target = self.target_shape
        if -1 not in target and all(isinstance(d, int) for d in shape[1:]):
            if int(np.prod(shape[1:])) != int(np.prod(target)):
                raise ShapeError(f"total size of the new shape {target} must equal that of the input "
                                 f"{tuple(shape[1:])}")
        return ctx.reshape(x, shape=(shape[0],) + target)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


class Embedding(Layer):
    """Rows of ``embeddings`` picked by integer ids: (batch, ...) -> (batch, ..., output_dim).

    With ``mask_zero`` the output carries the mask ``ids != 0`` (id 0 is padding), as in Keras.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 embeddings_constraint=None, mask_zero=False, weights=None, lora_rank=None, lora_alpha=None,
                 quantization_config=None, **kwargs):
        super().__init__(**kwargs)
        refuse_options(self, lora_rank=lora_rank, lora_alpha=lora_alpha, quantization_config=quantization_config)
        if input_dim <= 0 or output_dim <= 0:
            raise ValueError(f"Embedding needs positive input_dim and output_dim, got {input_dim}, {output_dim}")
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self._set_weight_options(embeddings_regularizer=embeddings_regularizer,
                                 embeddings_constraint=embeddings_constraint)
        self.mask_zero = bool(mask_zero)
        self._initial_weights = weights

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer, regularizer=self.embeddings_regularizer,
                                          constraint=self.embeddings_constraint)
        self.built = True
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)

    def lower(self, ctx, inputs, **kwargs):
        ids = single(inputs)
        if not is_int(ctx.dtype(ids)):
            ids = ctx.cast(ids, dtype="int32")
        return ctx.gather(ctx.param(self.embeddings), ids)

    def lower_mask(self, ctx, inputs, mask=None):
        return masking.not_equal(ctx, single(inputs), 0) if self.mask_zero else None

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
                "mask_zero": self.mask_zero}


class Masking(Layer):
    """Masks the time steps whose features all equal ``mask_value``: they become zeros and the
    output carries the mask (False there), so that layers downstream skip them, as in Keras."""

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float, np.integer, np.floating)):
            raise ValueError(f"Masking mask_value must be a number, got {mask_value!r}")
        self.mask_value = float(mask_value)

    def check_inputs(self, inputs):
        x = single(inputs)
        if len(x.shape) < 2:
            raise ShapeError(f"Masking needs an input of rank >= 2 (the last axis holds the features), "
                             f"got shape {x.shape}")

    def _kept(self, ctx, x: str, keepdims: bool) -> str:
        return masking.any_along(ctx, masking.not_equal(ctx, x, self.mask_value), -1, keepdims=keepdims)

    def lower(self, ctx, inputs, **kwargs):
        x = single(inputs)
        return ctx.where(self._kept(ctx, x, True), x, ctx.constant(np.zeros((), dtype=ctx.dtype(x)), "zero"))

    def lower_mask(self, ctx, inputs, mask=None):
        return self._kept(ctx, single(inputs), False)

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}
