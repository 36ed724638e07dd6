"""Attention layers: ``Attention`` (Luong), ``AdditiveAttention`` (Bahdanau) and ``MultiHeadAttention``.

All three lower to existing ops — batched ``matmul`` for the score and combine products,
``softmax`` on the last axis, ``where`` for masks — so every backend and the gradient come
with them. ``MultiHeadAttention`` keeps Keras's four ``EinsumDense`` sublayers (``query``,
``key``, ``value``, ``attention_output``; weights in that order, at Keras's paths in
``.keras`` files), and puts the heads next to the batch before multiplying:
``(B, T, N, H) -> (B, N, T, H)``.

Masks are bool "keep" tensors, as in Keras (true: attend), combined by a logical and, and
applied the way the Keras code path they mirror applies them, since
the paths disagree on a query row whose keys are all masked:

- ``MultiHeadAttention`` on rank-3 inputs without dropout or returned scores goes through
  Keras's ``dot_product_attention``, which adds ``-0.7 * 3.38953e38`` to masked scores and
  does not zero anything: a fully masked row attends uniformly to every key (and, the bias
  being added, passes gradient to all of them);
- otherwise Keras's masked ``Softmax`` fills masked scores with ``-1e9`` and zeroes the
  masked probabilities afterwards: a fully masked row gives zeros;
- ``Attention``/``AdditiveAttention`` subtract ``1e9`` from masked scores and zero the
  output rows the query mask drops.

Causal and sliding-window masks are built as constants from the static sequence lengths;
a free (None) length is refused for them, naming the layer and the option.
"""

from __future__ import annotations

import math
import string

import numpy as np

from graphc.frontend import constraints, initializers, masking, nest, regularizers
from graphc.frontend.layer import Layer
from graphc.frontend.layers.core import Dropout
from graphc.frontend.layers.einsum_dense import EinsumDense
from graphc.frontend.lowering import LowerContext
from graphc.frontend.tensor import KerasTensor
from graphc.ir.types import is_float
from graphc.ops.registry import ShapeError

__all__ = ["Attention", "AdditiveAttention", "MultiHeadAttention"]

# What Keras's torch backend adds to masked scores in dot_product_attention.
SDPA_MASK_VALUE = -0.7 * 3.38953e38
# What Keras's Softmax layer writes into masked scores.
SOFTMAX_MASK_VALUE = -1e9
# What Attention and AdditiveAttention subtract from masked scores.
ATTENTION_MASK_OFFSET = 1e9


# ---------------------------------------------------------------------------- mask helpers
def _scalar(ctx: LowerContext, value: float, name: str, dtype: str = "float32") -> str:
    return ctx.constant(np.asarray(value, dtype=dtype), name)


def both(ctx: LowerContext, a: str | None, b: str | None) -> str | None:
    """The logical and of two keep masks (broadcasting); None is "keep everything"."""
    if a is None or b is None:
        return a if b is None else b
    return masking.logical_and(ctx, [a, b])


def _static_length(layer: Layer, dim, what: str) -> int:
    if not isinstance(dim, int):
        raise ShapeError(f"layer {layer.name!r} ({type(layer).__name__}): {what} needs static sequence lengths, "
                         f"got a free dimension {dim!r}; give the Input a fixed length")
    return dim


def band_keep(ctx: LowerContext, q_len: int, k_len: int, *, causal: bool, window: int | None) -> str:
    """(1, q_len, k_len) bool constant: query i keeps key j when j <= i (causal) and |i - j| < window."""
    i = np.arange(q_len)[:, None]
    j = np.arange(k_len)[None, :]
    keep = np.ones((q_len, k_len), dtype=bool)
    if causal:
        keep &= j <= i
    if window is not None:
        keep &= np.abs(i - j) < window
    return ctx.constant(keep[None], "causal_mask" if causal else "window_mask")


def _check_float(layer: Layer, t, what: str) -> None:
    if not is_float(t.dtype):
        raise ShapeError(f"{type(layer).__name__} needs a float {what}, got {t.dtype}")


# ---------------------------------------------------------------------------- Attention
class Attention(Layer):
    """Dot-product (Luong) attention: ``softmax(query @ key^T) @ value`` on ``[query, value(, key)]``."""

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if score_mode not in ("dot", "concat"):
            raise ValueError(f"{type(self).__name__} {self.name!r}: score_mode must be 'dot' or 'concat', "
                             f"got {score_mode!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{type(self).__name__} {self.name!r}: dropout must be in [0, 1], got {dropout}")
        self.use_scale = bool(use_scale)
        self.score_mode = score_mode
        self.dropout = float(dropout)
        self.seed = seed
        self._dropout_layer = Dropout(self.dropout, seed=seed, name=f"{self.name}_dropout") if dropout > 0 else None

    # -------------------------------------------------------------- checks and weights
    def _split(self, inputs) -> list:
        if not isinstance(inputs, (list, tuple)):
            raise ShapeError(f"{type(self).__name__} must be called on a list [query, value] or [query, value, key], "
                             f"got a single tensor")
        if not 2 <= len(inputs) <= 3:
            raise ShapeError(f"{type(self).__name__} takes [query, value] or [query, value, key], got "
                             f"{len(inputs)} inputs")
        return list(inputs)

    def check_inputs(self, inputs) -> None:
        parts = self._split(inputs)
        query, value = parts[0], parts[1]
        key = parts[2] if len(parts) > 2 else value
        for t, what in ((query, "query"), (value, "value"), (key, "key")):
            _check_float(self, t, what)
            if len(t.shape) < 3:
                raise ShapeError(f"{type(self).__name__} needs {what} of rank >= 3 (batch, time, dim), got "
                                 f"shape {t.shape}")
        if value.shape[-2] is not None and key.shape[-2] is not None and value.shape[-2] != key.shape[-2]:
            raise ShapeError(f"{type(self).__name__}: value and key must have the same length, got value "
                             f"{value.shape} and key {key.shape}")
        if query.shape[-1] is not None and key.shape[-1] is not None and query.shape[-1] != key.shape[-1]:
            raise ShapeError(f"{type(self).__name__}: query and key must have the same last dimension, got "
                             f"query {query.shape} and key {key.shape}")

    def build(self, input_shape):
        self.scale = self.add_weight("scale", (), "ones") if self.use_scale else None
        self.concat_score_weight = self.add_weight("concat_score_weight", (), "ones") \
            if self.score_mode == "concat" else None

    # -------------------------------------------------------------- lowering
    def _scores(self, ctx: LowerContext, query: str, key: str) -> str:
        if self.score_mode == "dot":
            rank = ctx.rank(key)
            key_t = ctx.transpose(key, perm=tuple(range(rank - 2)) + (rank - 1, rank - 2))
            scores = ctx.matmul(query, key_t)
            return ctx.mul(scores, ctx.param(self.scale)) if self.scale is not None else scores
        pairs = ctx.add(ctx.expand_dims(query, axis=-2), ctx.expand_dims(key, axis=-3))
        if self.scale is not None:
            pairs = ctx.mul(pairs, ctx.param(self.scale))
        summed = ctx.reduce_sum(ctx.tanh(pairs), axes=(-1,), keepdims=False)
        return ctx.mul(summed, ctx.param(self.concat_score_weight))

    def lower(self, ctx: LowerContext, inputs, mask=None, training=None, return_attention_scores=False,
              use_causal_mask=False, **kwargs):
        if kwargs:
            raise ShapeError(f"{type(self).__name__} {self.name!r} got unexpected call argument(s) {sorted(kwargs)}")
        parts = self._split(inputs)
        query, value = parts[0], parts[1]
        key = parts[2] if len(parts) > 2 else value
        query_mask = value_mask = None
        if mask is not None:
            masks = nest.flatten(mask) if isinstance(mask, (list, tuple)) else None
            if masks is None or not 2 <= len(masks) <= 3:
                raise ShapeError(f"{type(self).__name__} {self.name!r}: mask must be a list [query_mask, value_mask], "
                                 f"got {mask!r}")
            query_mask, value_mask = masks[0], masks[1]
        scores = self._scores(ctx, query, key)
        keep = None
        if value_mask is not None:
            keep = ctx.expand_dims(masking.as_bool(ctx, value_mask), axis=-2)
        if use_causal_mask:
            shape = ctx.shape(scores)
            q_len = _static_length(self, shape[-2], "use_causal_mask")
            k_len = _static_length(self, shape[-1], "use_causal_mask")
            keep = both(ctx, keep, band_keep(ctx, q_len, k_len, causal=True, window=None))
        if keep is not None:
            lowered = ctx.sub(scores, _scalar(ctx, ATTENTION_MASK_OFFSET, "mask_offset", ctx.dtype(scores)))
            scores = ctx.where(keep, scores, lowered)
        weights = ctx.softmax(scores, axis=-1)
        dropped = weights
        if self._dropout_layer is not None:
            dropped = self._dropout_layer.lower(ctx, weights, training=training)
        out = ctx.matmul(dropped, value)
        if query_mask is not None:
            row_keep = ctx.expand_dims(masking.as_bool(ctx, query_mask), axis=-1)
            out = ctx.where(row_keep, out, _scalar(ctx, 0.0, "zero", ctx.dtype(out)))
        return (out, weights) if return_attention_scores else out

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        """The output keeps the query's mask (Keras's ``compute_mask``)."""
        return nest.flatten(mask)[0] if mask is not None else None

    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale, "score_mode": self.score_mode,
                "dropout": self.dropout, "seed": self.seed}


class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention: scores ``sum(scale * tanh(query + key), -1)``."""

    def __init__(self, use_scale=True, dropout=0.0, seed=None, **kwargs):
        super().__init__(use_scale=use_scale, dropout=dropout, seed=seed, **kwargs)

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.scale = self.add_weight("scale", (dim,), "glorot_uniform") if self.use_scale else None
        self.concat_score_weight = None

    def _scores(self, ctx: LowerContext, query: str, key: str) -> str:
        pairs = ctx.tanh(ctx.add(ctx.expand_dims(query, axis=-2), ctx.expand_dims(key, axis=-3)))
        if self.scale is not None:
            pairs = ctx.mul(pairs, ctx.param(self.scale))
        return ctx.reduce_sum(pairs, axes=(-1,), keepdims=False)

    def get_config(self):
        config = super().get_config()
        del config["score_mode"]
        return config


# ---------------------------------------------------------------------------- MultiHeadAttention
def projection_equation(free: int, bound: int, out: int) -> tuple[str, str]:
    """Keras's projection einsum: ``free`` kept axes, ``bound`` contracted, ``out`` new ones;
    returns the equation and the bias axes (the new ones)."""
    letters = string.ascii_lowercase
    kept, contracted, new = letters[:free], letters[free:free + bound], letters[free + bound:free + bound + out]
    return f"{kept}{contracted},{contracted}{new}->{kept}{new}", new


def _shape_of(x) -> tuple:
    if isinstance(x, KerasTensor):
        return x.shape
    return tuple(np.shape(x))


class MultiHeadAttention(Layer):
    """Multi-head attention (Vaswani et al.) with Keras's sublayers, options and masks."""

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 attention_axes=None, sliding_window=None, flash_attention=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, use_gate=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        for option, value in (("num_heads", num_heads), ("key_dim", key_dim)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MultiHeadAttention {self.name!r}: {option} must be a positive integer, "
                                 f"got {value!r}")
        if value_dim is not None and (not isinstance(value_dim, (int, np.integer)) or value_dim <= 0):
            raise ValueError(f"MultiHeadAttention {self.name!r}: value_dim must be a positive integer or None, "
                             f"got {value_dim!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiHeadAttention {self.name!r}: dropout must be in [0, 1), got {dropout}")
        if sliding_window is not None and (not isinstance(sliding_window, int) or sliding_window <= 0):
            raise ValueError(f"MultiHeadAttention {self.name!r}: sliding_window must be None or a positive "
                             f"integer, got {sliding_window!r}")
        if use_gate:
            raise ValueError(f"MultiHeadAttention {self.name!r}: use_gate=True is not supported by graphc")
        if flash_attention:
            raise ValueError(f"MultiHeadAttention {self.name!r}: flash_attention=True is not supported by graphc "
                             "(it computes the same attention; leave it None or False)")
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim) if value_dim else self.key_dim
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        if output_shape:
            output_shape = (output_shape,) if isinstance(output_shape, (int, np.integer)) else output_shape
            output_shape = tuple(int(d) for d in output_shape)
        self._output_shape = output_shape or None
        if isinstance(attention_axes, (int, np.integer)):
            attention_axes = (int(attention_axes),)
        elif attention_axes is not None and not isinstance(attention_axes, (list, tuple)):
            raise ValueError(f"MultiHeadAttention {self.name!r}: attention_axes must be an int, list or tuple, "
                             f"got {attention_axes!r}")
        self.attention_axes = tuple(attention_axes) if attention_axes is not None else None
        self.sliding_window = sliding_window
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        # Keras hands these to the four projections (the layer's own output is not regularized)
        self._sublayer_options = {
            "kernel_regularizer": regularizers.get(kernel_regularizer),
            "bias_regularizer": regularizers.get(bias_regularizer),
            "activity_regularizer": regularizers.get(activity_regularizer),
            "kernel_constraint": constraints.get(kernel_constraint),
            "bias_constraint": constraints.get(bias_constraint)}
        self.seed = seed
        self._dropout_layer = Dropout(self.dropout, seed=seed, name=f"{self.name}_dropout")
        self.query_dense = self.key_dense = self.value_dense = self.output_dense = None
        self.supports_masking = True  # the output keeps the query's mask
        # as Keras's, it reads the masks its query, value and key carry and removes them from those
        # tensors (graphc.frontend.model replays this when it lowers a model)
        self.clears_input_masks = True

    def _sublayers(self) -> list[Layer]:
        return [d for d in (self.query_dense, self.key_dense, self.value_dense, self.output_dense) if d is not None]

    # -------------------------------------------------------------- calling
    def __call__(self, query=None, value=None, key=None, **kwargs):
        """``layer(query, value, key=None, attention_mask=..., ...)``, as Keras's call.

        The call is recorded with ``query`` as its input and ``value``/``key`` as keyword
        arguments, which Keras's ``MultiHeadAttention`` takes as well.
        """
        if query is None and "inputs" in kwargs:
            query = kwargs.pop("inputs")
        if query is None or value is None:
            raise ValueError(f"MultiHeadAttention {self.name!r} needs a query and a value: layer(query, value)")
        if not self.built:
            self.build(_shape_of(query), _shape_of(value), None if key is None else _shape_of(key))
        call_kwargs = {"value": value}
        if key is not None:
            call_kwargs["key"] = key
        for name, default in (("return_attention_scores", False), ("use_causal_mask", False)):
            if name in kwargs and kwargs[name] == default:
                del kwargs[name]
        call_kwargs.update({k: v for k, v in kwargs.items() if v is not None})
        return super().__call__(query, **call_kwargs)

    def get_build_config(self) -> dict:
        """Keras's ``build_config``: the shapes ``build(query_shape, value_shape, key_shape)`` took."""
        shapes = {"query_shape": list(self._query_shape), "value_shape": list(self._value_shape)}
        if self._key_shape is not None:
            shapes["key_shape"] = list(self._key_shape)
        return {"shapes_dict": shapes}

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        """Keras's signature: the query's shape, its last axis replaced by ``output_shape`` if given."""
        if value_shape is not None and key_shape is not None and tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(f"MultiHeadAttention {self.name!r}: value and key must agree on every dimension but "
                             f"the last, got value {tuple(value_shape)} and key {tuple(key_shape)}")
        return tuple(query_shape[:-1]) + (self._output_shape or tuple(query_shape[-1:]))

    def check_inputs(self, inputs) -> None:
        if isinstance(inputs, (list, tuple, dict)):
            raise ShapeError("MultiHeadAttention takes the query as its input and the value (and key) as "
                             "arguments: layer(query, value, key=None)")
        _check_float(self, inputs, "query")

    # -------------------------------------------------------------- weights
    def build(self, query_shape, value_shape=None, key_shape=None):
        if value_shape is None:
            raise ValueError(f"MultiHeadAttention {self.name!r}: build needs query_shape and value_shape")
        query_shape, value_shape = tuple(query_shape), tuple(value_shape)
        key_shape = None if key_shape is None else tuple(key_shape)
        self._query_shape, self._value_shape, self._key_shape = query_shape, value_shape, key_shape
        key_shape = value_shape if key_shape is None else key_shape
        for shape, what in ((query_shape, "query"), (value_shape, "value"), (key_shape, "key")):
            if len(shape) < 3:
                raise ValueError(f"MultiHeadAttention {self.name!r}: {what} must have rank >= 3 "
                                 f"(batch, ..., features), got shape {shape}")
            if shape[-1] is None:
                raise ValueError(f"MultiHeadAttention {self.name!r}: the last dimension of {what} must be known, "
                                 f"got shape {shape}")
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(f"MultiHeadAttention {self.name!r}: value and key must agree on every dimension but "
                             f"the last, got value {value_shape} and key {key_shape}")
        rank = len(query_shape) + 1  # the projected query: (batch, ..., heads, channels)
        axes = tuple(range(1, rank - 2)) if self.attention_axes is None else \
            tuple(a if a >= 0 else rank - 1 + a for a in self.attention_axes)
        if not axes or any(not 1 <= a <= rank - 3 for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"MultiHeadAttention {self.name!r}: attention_axes {self.attention_axes} must be "
                             f"distinct axes between 1 and {rank - 3} for a query of shape {query_shape}")
        self.attention_axes = tuple(sorted(axes))

        def projection(name, shape, heads_dim):
            equation, bias_axes = projection_equation(len(shape) - 1, 1, 2)
            dense = EinsumDense(equation, [None] * (len(shape) - 2) + [self.num_heads, heads_dim],
                                bias_axes=bias_axes if self.use_bias else None, name=name,
                                kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer,
                                **self._sublayer_options)
            dense.build(shape)
            return dense

        self.query_dense = projection("query", query_shape, self.key_dim)
        self.key_dense = projection("key", key_shape, self.key_dim)
        self.value_dense = projection("value", value_shape, self.value_dim)
        out_dims = self._output_shape or (query_shape[-1],)
        equation, bias_axes = projection_equation(len(query_shape) - 1, 2, len(out_dims))
        self.output_dense = EinsumDense(equation, [None] * (len(query_shape) - 2) + list(out_dims),
                                        bias_axes=bias_axes if self.use_bias else None, name="attention_output",
                                        kernel_initializer=self.kernel_initializer,
                                        bias_initializer=self.bias_initializer, **self._sublayer_options)
        self.output_dense.build(tuple(query_shape[:-1]) + (self.num_heads, self.value_dim))
        for dense in self._sublayers():  # Keras's paths: <layer>/<sublayer>/<weight>
            for var in dense.weights:
                var.path = f"{self.name}/{var.path}"

    # -------------------------------------------------------------- lowering
    def lower(self, ctx: LowerContext, inputs, value=None, key=None, mask=None, value_mask=None, key_mask=None,
              attention_mask=None, return_attention_scores=False, training=None, use_causal_mask=False,
              query_mask=None, **kwargs):
        """``mask`` is the query's own mask, ``value_mask``/``key_mask`` those of the value and the
        key (given, or carried by the tensors), as Keras's ``call`` reads them."""
        if kwargs:
            raise ShapeError(f"MultiHeadAttention {self.name!r} got unexpected call argument(s) {sorted(kwargs)}")
        if query_mask is not None:
            raise ShapeError(f"MultiHeadAttention {self.name!r}: an explicit query_mask= is not supported (Keras 3 "
                             "ignores it and reads the query's own mask): mask the query tensor (Embedding("
                             "mask_zero=True), Masking) or pass attention_mask=")
        query = inputs
        query_mask = nest.flatten(mask)[0] if mask is not None else None
        if value is None:
            raise ShapeError(f"MultiHeadAttention {self.name!r} needs a value: layer(query, value)")
        key = value if key is None else key
        keep = self._keep(ctx, query, value, query_mask, value_mask, key_mask, attention_mask, use_causal_mask)
        q = self.query_dense.lower(ctx, query)
        k = self.key_dense.lower(ctx, key)
        v = self.value_dense.lower(ctx, value)
        # Keras's dot_product_attention path: rank-4 projections, no dropout, no scores returned
        fused = self.dropout == 0.0 and not return_attention_scores and ctx.rank(q) == 4
        out, scores = self._attend(ctx, q, k, v, keep, fused=fused, training=training)
        out = self.output_dense.lower(ctx, out)
        return (out, scores) if return_attention_scores else out

    def _keep(self, ctx, query, value, query_mask, value_mask, key_mask, attention_mask, causal) -> str | None:
        """The combined keep mask, shaped like Keras's ``attention_mask`` (B, T, S) or broadcastable."""
        keep = None
        if query_mask is not None:
            keep = ctx.expand_dims(masking.as_bool(ctx, query_mask), axis=-1)
        for m in (value_mask, key_mask):
            if m is not None:
                keep = both(ctx, keep, ctx.expand_dims(masking.as_bool(ctx, m), axis=-2))
        if causal or self.sliding_window is not None:
            what = "use_causal_mask" if causal else "sliding_window"
            q_len = _static_length(self, ctx.shape(query)[1], what)
            k_len = _static_length(self, ctx.shape(value)[1], what)
            keep = both(ctx, keep, band_keep(ctx, q_len, k_len, causal=causal, window=self.sliding_window))
        if attention_mask is not None:
            keep = both(ctx, masking.as_bool(ctx, attention_mask), keep)
        return keep

    def _attend(self, ctx: LowerContext, q: str, k: str, v: str, keep: str | None, *, fused: bool, training):
        """Scaled dot-product attention of projected (B, ..., N, H) tensors over ``attention_axes``;
        returns the output (B, ..., N, Hv) and the scores in Keras's layout (batch dims, query
        attention dims, key attention dims)."""
        rank = ctx.rank(q)
        axes = self.attention_axes
        batch = tuple(i for i in range(rank - 1) if i not in axes)
        q_shape, k_shape = ctx.shape(q), ctx.shape(k)
        batch_dims = tuple(q_shape[i] for i in batch)
        q_att = tuple(q_shape[i] for i in axes)
        k_att = tuple(k_shape[i] for i in axes)
        flat = len(axes) > 1

        def collapse(x, dims_before, att, last):
            return ctx.reshape(x, shape=dims_before + (math.prod(att),) + last) if flat else x

        scale = _scalar(ctx, 1.0 / math.sqrt(float(self.key_dim)), "inverse_sqrt_key_dim", ctx.dtype(q))
        q_t = collapse(ctx.transpose(ctx.mul(q, scale), perm=batch + axes + (rank - 1,)), batch_dims, q_att,
                       (self.key_dim,))
        k_t = ctx.transpose(k, perm=batch + (rank - 1,) + axes)
        k_t = ctx.reshape(k_t, shape=batch_dims + (self.key_dim, math.prod(k_att))) if flat else k_t
        v_t = collapse(ctx.transpose(v, perm=batch + axes + (rank - 1,)), batch_dims, k_att, (self.value_dim,))
        scores = ctx.matmul(q_t, k_t)  # (*batch, Tq, Tk)
        keras_layout = batch_dims + q_att + k_att
        condition = None
        if keep is not None:
            keep_rank = len(keras_layout)
            while ctx.rank(keep) < keep_rank:  # Keras expands a mask just before the attention dims
                keep = ctx.expand_dims(keep, axis=-2 * len(axes) - 1)
            condition = keep
            if fused:  # added, as dot_product_attention's bias: masked scores still pass their gradient on
                bias = ctx.where(condition, _scalar(ctx, 0.0, "zero", ctx.dtype(scores)),
                                 _scalar(ctx, SDPA_MASK_VALUE, "mask_value", ctx.dtype(scores)))
                scores = self._in_layout(ctx, scores, keras_layout, lambda s: ctx.add(s, bias))
            else:  # written over, as the masked Softmax does: no gradient reaches masked scores
                fill = _scalar(ctx, SOFTMAX_MASK_VALUE, "mask_value", ctx.dtype(scores))
                scores = self._in_layout(ctx, scores, keras_layout, lambda s: ctx.where(condition, s, fill))
        probs = ctx.softmax(scores, axis=-1)
        if condition is not None and not fused:
            zero = _scalar(ctx, 0.0, "zero", ctx.dtype(probs))
            probs = self._in_layout(ctx, probs, keras_layout, lambda p: ctx.where(condition, p, zero))
        dropped = self._dropout_layer.lower(ctx, probs, training=training) if self.dropout > 0 else probs
        out = ctx.matmul(dropped, v_t)  # (*batch, Tq, Hv)
        if flat:
            out = ctx.reshape(out, shape=batch_dims + q_att + (self.value_dim,))
        order = batch + axes + (rank - 1,)
        out = ctx.transpose(out, perm=tuple(order.index(i) for i in range(rank)))
        scores_out = ctx.reshape(probs, shape=keras_layout) if flat else probs
        return out, scores_out

    @staticmethod
    def _in_layout(ctx: LowerContext, x: str, layout: tuple, fn) -> str:
        """``fn`` applied to ``x`` viewed in Keras's scores layout (x is flat when axes > 1)."""
        if tuple(ctx.shape(x)) == tuple(layout):
            return fn(x)
        flat_shape = ctx.shape(x)
        return ctx.reshape(fn(ctx.reshape(x, shape=layout)), shape=flat_shape)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "dropout": self.dropout, "use_bias": self.use_bias,
                "use_gate": False, "output_shape": list(self._output_shape) if self._output_shape else None,
                "attention_axes": list(self.attention_axes) if self.attention_axes is not None else None,
                "sliding_window": self.sliding_window,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                **{key: regularizers.serialize(value) if key.endswith("_regularizer") else
                   constraints.serialize(value) for key, value in self._sublayer_options.items()},
                "seed": self.seed}
