"""Normalization layers: BatchNormalization, LayerNormalization, GroupNormalization, UnitNormalization.

Constructor arguments, defaults, weight names, order and initializers are Keras 3's.
BatchNormalization lowers to the ``batch_norm`` op with its moving statistics (Keras's
inference behaviour); in a training graph it normalizes with the batch's statistics and
records the moving averages' new values (Keras's momentum) in ``graph.meta["state_updates"]``.
LayerNormalization lowers to ``layer_norm``; with Keras's deprecated ``rms_scaling=True`` it
computes what Keras computes, ``x / sqrt(var(x) + epsilon) * gamma`` (the variance, not the
mean square, and no centering), composed from reductions. GroupNormalization and
UnitNormalization compose Keras's formulas from reductions too, so free spatial dimensions
work and every backend and the gradient come with them. A layer without ``scale``/``center``
has no gamma/beta weight (as in Keras). Regularizers and constraints
on gamma and beta are honoured in training (``Layer.add_weight``).
"""

from __future__ import annotations

import warnings

import numpy as np

from graphc.frontend import initializers, masking
from graphc.frontend.layer import Layer
from graphc.frontend.layers.core import axis_argument, single
from graphc.frontend.lowering import LowerContext
from graphc.frontend.operations.base import axes_of
from graphc.ops.registry import ShapeError

__all__ = ["BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization"]


def _masked_moments(ctx: LowerContext, x: str, mask: str, axes: tuple[int, ...]) -> tuple[str, str]:
    """Keras's BatchNormalization moments over the kept steps only (``mask`` has one axis fewer than
    ``x``): masked entries count for neither the mean nor the variance (epsilon 1e-7 in the divisors)."""
    dtype = ctx.dtype(x)
    kept = ctx.broadcast_like(ctx.expand_dims(masking.as_bool(ctx, mask), axis=-1), x)
    zero = ctx.constant(np.zeros((), dtype=dtype), "zero")
    weight = ctx.add(ctx.reduce_sum(ctx.cast(kept, dtype=dtype), axes=axes, keepdims=True),
                     ctx.constant(np.asarray(1e-7, dtype=dtype), "epsilon"))
    # keepdims, so the mean broadcasts against x whichever axis holds the channels
    mean = ctx.div(ctx.reduce_sum(ctx.where(kept, x, zero), axes=axes, keepdims=True), weight)
    spread = ctx.reduce_sum(ctx.square(ctx.where(kept, ctx.sub(x, mean), zero)), axes=axes, keepdims=True)
    channels = tuple(d for i, d in enumerate(ctx.shape(x)) if i not in axes)
    return ctx.reshape(mean, shape=channels), ctx.reshape(ctx.div(spread, weight), shape=channels)


def _replica_moments(ctx: LowerContext, x: str, axes: tuple[int, ...]) -> tuple[str, str]:
    """Keras's moments (E[x^2] - E[x]^2) over the global batch of data-parallel replicas: each replica's
    per-channel sums of x and x^2 and its count, summed across the replicas in one ``cross_replica_sum``
    (the identity on a single replica)."""
    dtype = ctx.dtype(x)
    channels = next(d for i, d in enumerate(ctx.shape(x)) if i not in axes)
    count = ctx.reshape(ctx.num_elements(x, axes=axes, dtype=dtype), shape=(1,))
    total = ctx.cross_replica_sum(ctx.concat(ctx.reduce_sum(x, axes=axes), ctx.reduce_sum(ctx.square(x), axes=axes),
                                             count, axis=0))
    n = ctx.slice(total, axis=0, start=2 * channels, stop=2 * channels + 1)
    mean = ctx.div(ctx.slice(total, axis=0, start=0, stop=channels), n)
    mean_square = ctx.div(ctx.slice(total, axis=0, start=channels, stop=2 * channels), n)
    return mean, ctx.sub(mean_square, ctx.square(mean))


def _masked_replica_moments(ctx: LowerContext, x: str, mask: str, axes: tuple[int, ...]) -> tuple[str, str]:
    """:func:`_masked_moments` over the global batch of data-parallel replicas: the kept counts and sums
    summed across the replicas first (one ``cross_replica_sum``), then the squared deviations from that
    global mean (a second one)."""
    dtype = ctx.dtype(x)
    shape = ctx.shape(x)
    channels = next(d for i, d in enumerate(shape) if i not in axes)
    keep_shape = tuple(1 if i in axes else d for i, d in enumerate(shape))
    kept = ctx.broadcast_like(ctx.expand_dims(masking.as_bool(ctx, mask), axis=-1), x)
    zero = ctx.constant(np.zeros((), dtype=dtype), "zero")
    local = ctx.concat(ctx.reduce_sum(ctx.cast(kept, dtype=dtype), axes=axes),
                       ctx.reduce_sum(ctx.where(kept, x, zero), axes=axes), axis=0)
    total = ctx.cross_replica_sum(local)
    weight = ctx.add(ctx.reshape(ctx.slice(total, axis=0, start=0, stop=channels), shape=keep_shape),
                     ctx.constant(np.asarray(1e-7, dtype=dtype), "epsilon"))
    mean = ctx.div(ctx.reshape(ctx.slice(total, axis=0, start=channels, stop=2 * channels), shape=keep_shape), weight)
    spread = ctx.cross_replica_sum(ctx.reduce_sum(ctx.square(ctx.where(kept, ctx.sub(x, mean), zero)), axes=axes,
                                                  keepdims=True))
    return ctx.reshape(mean, shape=(channels,)), ctx.reshape(ctx.div(spread, weight), shape=(channels,))


def _float_input(ctx: LowerContext, x: str) -> str:
    """Keras normalizes in (at least) float32: integer inputs are cast."""
    return x if ctx.dtype(x).startswith("float") else ctx.cast(x, dtype="float32")


def _rsqrt(ctx: LowerContext, variance: str, epsilon: float) -> str:
    eps = ctx.constant(np.asarray(epsilon, dtype=ctx.dtype(variance)), "epsilon")
    return ctx.reciprocal(ctx.sqrt(ctx.add(variance, eps)))


def _param(ctx: LowerContext, var, dtype: str) -> str:
    return ctx.param(var) if var.dtype == dtype else ctx.cast(ctx.param(var), dtype=dtype)


def _param_or(ctx: LowerContext, var, fill: float, shape: tuple, dtype: str, name: str) -> str:
    if var is not None:
        return _param(ctx, var, dtype)
    return ctx.constant(np.full(shape, fill, dtype=dtype), name)


class _ScaleShift(Layer):
    """What the normalization layers share: gamma and beta weights with Keras's initializer,
    regularizer and constraint options."""

    def _gamma_weight(self, shape):
        return self.add_weight("gamma", shape, self.gamma_initializer, regularizer=self.gamma_regularizer,
                               constraint=self.gamma_constraint)

    def _beta_weight(self, shape):
        return self.add_weight("beta", shape, self.beta_initializer, regularizer=self.beta_regularizer,
                               constraint=self.beta_constraint)


class BatchNormalization(_ScaleShift):
    """Normalizes along ``axis`` with the moving mean and variance (inference form); training
    with a mask takes the batch statistics over the kept steps, as Keras does.

    ``sync_replicas`` (set by ``graphc.distribute.DataParallel(sync_batchnorm=True)``, not a Keras
    argument): training graphs take the batch statistics over the global batch of the data-parallel
    replicas (``cross_replica_sum``: on a single replica the same statistics)."""

    supports_masking = True

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, renorm=False, renorm_clipping=None,
                 renorm_momentum=0.99, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"BatchNormalization axis must be an integer, got {axis!r}")
        if not epsilon > 0:
            raise ValueError(f"BatchNormalization epsilon must be positive, got {epsilon}")
        self._set_weight_options(beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
                                 beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        if renorm:
            raise ValueError(f"BatchNormalization {self.name!r}: renorm=True is not supported by graphc")
        if synchronized:
            raise ValueError("Argument synchronized=True is only supported with the TensorFlow backend")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.renorm = False
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = renorm_momentum
        self.synchronized = False
        self.sync_replicas = False
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None

    def _check_shape(self, shape) -> int:
        rank = len(shape)
        if not -rank <= self.axis < rank:
            raise ShapeError(f"axis {self.axis} is out of bounds for input shape {tuple(shape)}")
        size = shape[self.axis]
        if size is None:
            raise ShapeError(f"axis {self.axis} of the input must have a known size, got shape {tuple(shape)}")
        return int(size)

    def check_inputs(self, inputs):
        self._check_shape(single(inputs).shape)

    def build(self, input_shape):
        try:
            shape = (self._check_shape(input_shape),)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} (BatchNormalization) cannot be built for input "
                             f"shape {input_shape}: {exc}") from None
        if self.scale:
            self.gamma = self._gamma_weight(shape)
        if self.center:
            self.beta = self._beta_weight(shape)
        self.moving_mean = self.add_weight("moving_mean", shape, self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape, self.moving_variance_initializer,
                                               trainable=False)
        self.built = True

    def lower(self, ctx: LowerContext, inputs, training=None, mask=None, **kwargs):
        if mask is not None and ctx.rank(mask) != ctx.rank(single(inputs)) - 1:
            raise ShapeError(f"BatchNormalization: the mask should have one dimension less than the inputs, "
                             f"got mask shape {ctx.shape(mask)} and input shape {ctx.shape(single(inputs))}")
        x = _float_input(ctx, single(inputs))
        dtype = ctx.dtype(x)
        shape = self.moving_mean.shape
        gamma = _param_or(ctx, self.gamma, 1.0, shape, dtype, f"{self.name}/no_gamma")
        beta = _param_or(ctx, self.beta, 0.0, shape, dtype, f"{self.name}/no_beta")
        mean = _param_or(ctx, self.moving_mean, 0.0, shape, dtype, f"{self.name}/moving_mean")
        variance = _param_or(ctx, self.moving_variance, 1.0, shape, dtype, f"{self.name}/moving_variance")
        if (ctx.training if training is None else training) and self.trainable:
            # Batch statistics (Keras's moments: E[x^2] - E[x]^2) and the moving averages' updates.
            rank = ctx.rank(x)
            axes = tuple(i for i in range(rank) if i != self.axis % rank)
            if self.sync_replicas:
                batch_mean, batch_var = (_replica_moments(ctx, x, axes) if mask is None
                                         else _masked_replica_moments(ctx, x, mask, axes))
            elif mask is None:
                batch_mean = ctx.reduce_mean(x, axes=axes)
                batch_var = ctx.sub(ctx.reduce_mean(ctx.square(x), axes=axes), ctx.square(batch_mean))
            else:
                batch_mean, batch_var = _masked_moments(ctx, x, mask, axes)
            if ctx.training:
                m = ctx.constant(np.asarray(self.momentum, dtype=dtype), "momentum")
                rest = ctx.constant(np.asarray(1.0 - self.momentum, dtype=dtype), "one_minus_momentum")
                updates = ctx.graph.meta.setdefault("state_updates", {})
                for moving, stat in ((mean, batch_mean), (variance, batch_var)):
                    if moving in ctx.graph.constants:
                        # A layer called several times (shared) moves its averages once per call, in
                        # call order, each from the last call's result, as Keras's assign() does.
                        last = updates.get(moving, moving)
                        updates[moving] = ctx.add(ctx.mul(last, m), ctx.mul(stat, rest))
            mean, variance = batch_mean, batch_var
        return ctx.batch_norm(x, gamma, beta, mean, variance, axis=self.axis, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
                "synchronized": self.synchronized, "renorm": self.renorm,
                "renorm_clipping": self.renorm_clipping, "renorm_momentum": self.renorm_momentum}


class LayerNormalization(_ScaleShift):
    """Normalizes each sample over ``axis`` (an int or a list of ints) with its own moments."""

    supports_masking = True

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, rms_scaling=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis_argument(axis, "LayerNormalization")
        if not epsilon > 0:
            raise ValueError(f"LayerNormalization epsilon must be positive, got {epsilon}")
        if rms_scaling:
            warnings.warn("You passed `rms_scaling=True`, which is deprecated. This argument incorrectly scales "
                          "the input by the variance, not the root mean square.", stacklevel=2)
        self._set_weight_options(beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
                                 beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.rms_scaling = bool(rms_scaling)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.gamma = self.beta = None

    def _axes(self) -> list[int]:
        return list(self.axis) if isinstance(self.axis, list) else [self.axis]

    def _check_shape(self, shape) -> tuple[int, ...]:
        rank = len(shape)
        out = []
        for a in self._axes():
            if not -rank <= a < rank:
                raise ShapeError(f"axis {a} is out of bounds for input shape {tuple(shape)}")
            if shape[a] is None:
                raise ShapeError(f"axis {a} of the input must have a known size, got shape {tuple(shape)}")
        if len({a % rank for a in self._axes()}) != len(self._axes()):
            raise ShapeError(f"axis {self.axis} names an axis twice")
        for a in sorted(self._axes()):  # Keras's weight shape: the axes sorted as given
            out.append(int(shape[a]))
        return tuple(out)

    def check_inputs(self, inputs):
        self._check_shape(single(inputs).shape)

    def build(self, input_shape):
        try:
            shape = self._check_shape(input_shape)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} (LayerNormalization) cannot be built for input "
                             f"shape {input_shape}: {exc}") from None
        self.axis = sorted(self._axes())  # as Keras: a sorted list once built
        if self.scale or self.rms_scaling:
            self.gamma = self._gamma_weight(shape)
        if self.center and not self.rms_scaling:
            self.beta = self._beta_weight(shape)
        rank = len(input_shape)
        self._op_shape = tuple(int(input_shape[a]) for a in sorted(a % rank for a in self._axes()))
        self.built = True

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = _float_input(ctx, single(inputs))
        if self.rms_scaling:
            return self._lower_rms_scaling(ctx, x)
        dtype = ctx.dtype(x)
        shape = self._op_shape
        gamma = _param_or(ctx, self.gamma, 1.0, shape, dtype, f"{self.name}/no_gamma")
        beta = _param_or(ctx, self.beta, 0.0, shape, dtype, f"{self.name}/no_beta")
        if self.gamma is not None and self.gamma.shape != shape:
            # Mixed-sign axes: Keras reshapes its weights (row-major) onto the sorted axes.
            gamma = ctx.reshape(gamma, shape=shape)
        if self.beta is not None and self.beta.shape != shape:
            beta = ctx.reshape(beta, shape=shape)
        return ctx.layer_norm(x, gamma, beta, axes=tuple(self._axes()), epsilon=self.epsilon)

    def _lower_rms_scaling(self, ctx: LowerContext, x: str) -> str:
        """Keras's ``x * rsqrt(var(x) + epsilon) * gamma`` over the axes (gamma always exists here)."""
        rank = ctx.rank(x)
        axes = tuple(sorted(a % rank for a in self._axes()))
        mean = ctx.reduce_mean(x, axes=axes, keepdims=True)
        variance = ctx.reduce_mean(ctx.square(ctx.sub(x, mean)), axes=axes, keepdims=True)
        y = ctx.mul(x, _rsqrt(ctx, variance, self.epsilon))
        gamma = _param(ctx, self.gamma, ctx.dtype(x))
        along = tuple(int(ctx.shape(x)[i]) if i in axes else 1 for i in range(rank))
        return ctx.mul(y, ctx.reshape(gamma, shape=along))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale, "rms_scaling": self.rms_scaling,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer)}


class GroupNormalization(_ScaleShift):
    """Normalizes each sample's channels in ``groups`` groups (over the group's channels and every
    other non-batch axis), then scales and shifts per channel; ``groups=-1`` is instance normalization.
    A mask passes through, unused, as in Keras."""

    supports_masking = True

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or (groups <= 0 and groups != -1):
            raise ValueError(f"GroupNormalization groups must be a positive integer (or -1 for instance "
                             f"normalization), got groups={groups!r}")
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"GroupNormalization axis must be an integer, got {axis!r}")
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"GroupNormalization epsilon must be positive, got {epsilon}")
        self._set_weight_options(beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
                                 beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        self.groups = int(groups)
        self.axis = int(axis)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.gamma = self.beta = None

    def _channels(self, shape) -> int:
        rank = len(shape)
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ShapeError(f"axis {self.axis} must be a non-batch axis of the input shape {tuple(shape)}")
        size = shape[self.axis]
        if size is None:
            raise ShapeError(f"axis {self.axis} of the input should have a defined dimension, got shape "
                             f"{tuple(shape)}")
        groups = int(size) if self.groups == -1 else self.groups
        if size < groups:
            raise ShapeError(f"the number of groups ({groups}) cannot be more than the number of channels ({size})")
        if size % groups:
            raise ShapeError(f"the number of channels ({size}) must be a multiple of the number of groups "
                             f"({groups})")
        return int(size)

    def check_inputs(self, inputs):
        shape = single(inputs).shape
        size = self._channels(shape)
        if self.gamma is not None or self.beta is not None:
            built = (self.gamma or self.beta).shape[0]
            if size != built:
                raise ShapeError(f"axis {self.axis} has size {size}; the layer was built for {built} channels")

    def build(self, input_shape):
        try:
            size = self._channels(input_shape)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} (GroupNormalization) cannot be built for input "
                             f"shape {input_shape}: {exc}") from None
        if self.groups == -1:  # as Keras: the layer then records its number of groups
            self.groups = size
        if self.scale:
            self.gamma = self._gamma_weight((size,))
        if self.center:
            self.beta = self._beta_weight((size,))

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = _float_input(ctx, single(inputs))
        dtype = ctx.dtype(x)
        shape = ctx.shape(x)
        rank = len(shape)
        ax = self.axis % rank
        size = self._channels(shape)
        groups = size if self.groups == -1 else self.groups
        # (..., C, ...) -> (..., groups, C / groups, ...): statistics over every non-batch axis but `groups`
        grouped = ctx.reshape(x, shape=shape[:ax] + (groups, size // groups) + shape[ax + 1:])
        axes = tuple(i for i in range(1, rank + 1) if i != ax)
        along = tuple(groups if i == ax else size // groups if i == ax + 1 else 1 for i in range(rank + 1))
        # Keras's moments and its fused form: x * inv + (beta - mean * inv). The variance is the mean
        # square of the deviations: E[x^2] - E[x]^2 cancels catastrophically in float32 where the mean
        # is large against the spread, and the native kernels' float32 sums then miss Keras's by 1e-3.
        mean = ctx.reduce_mean(grouped, axes=axes, keepdims=True)
        variance = ctx.reduce_mean(ctx.square(ctx.sub(grouped, mean)), axes=axes, keepdims=True)
        inv = _rsqrt(ctx, variance, self.epsilon)
        if self.gamma is not None:
            inv = ctx.mul(inv, ctx.reshape(_param(ctx, self.gamma, dtype), shape=along))
        shift = ctx.neg(ctx.mul(mean, inv))
        if self.beta is not None:
            shift = ctx.add(shift, ctx.reshape(_param(ctx, self.beta, dtype), shape=along))
        return ctx.reshape(ctx.add(ctx.mul(grouped, inv), shift), shape=shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer)}


class UnitNormalization(Layer):
    """Scales each sample to unit L2 norm over ``axis`` (an int or a list of ints), as Keras's
    ``x * min(rsqrt(sum(x^2)), 1e12)``; a mask passes through, unused, as in Keras."""

    supports_masking = True

    _EPSILON = 1e-12  # Keras's: the norm is floored at it

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis_argument(axis, "UnitNormalization")

    def _axes(self, rank: int) -> tuple[int, ...]:
        return axes_of(self.axis, rank, "UnitNormalization")

    def check_inputs(self, inputs):
        self._axes(len(single(inputs).shape))

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = _float_input(ctx, single(inputs))
        axes = self._axes(ctx.rank(x))
        if len(axes) == 1:  # x / sqrt(max(sum(x^2), eps^2)) is Keras's formula
            return ctx.l2_normalize(x, axis=axes[0], epsilon=self._EPSILON ** 2)
        total = ctx.reduce_sum(ctx.square(x), axes=axes, keepdims=True)
        floor = ctx.constant(np.asarray(self._EPSILON ** 2, dtype=ctx.dtype(x)), "epsilon_squared")
        return ctx.div(x, ctx.sqrt(ctx.maximum(total, floor)))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
