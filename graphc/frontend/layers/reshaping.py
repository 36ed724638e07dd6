"""Shape and resampling layers: ZeroPadding1D/2D/3D, Cropping1D/2D/3D, UpSampling1D/2D/3D,
RepeatVector, Permute and Identity (Keras 3).

Constructor arguments, defaults, validation and configs are Keras's; both data formats are
accepted where Keras takes one (they only decide which axes are spatial). Padding lowers to
the ``pad`` op, cropping to ``slice``, upsampling and RepeatVector to the ``resize`` op
(PyTorch's interpolation, as on Keras's torch backend; nearest at an integer factor repeats
each element); free spatial dims stay free throughout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.frontend import nest
from graphc.frontend.layer import Layer
from graphc.frontend.layers.core import single
from graphc.frontend.lowering import LowerContext
from graphc.ir import dims
from graphc.ir.types import is_float
from graphc.ops.registry import ShapeError

__all__ = ["ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
           "UpSampling1D", "UpSampling2D", "UpSampling3D", "RepeatVector", "Permute", "Identity"]

_ORDINALS = ("1st", "2nd", "3rd")
_SPATIAL = {1: "steps", 2: "height, width", 3: "depth, height, width"}
UPSAMPLING_INTERPOLATIONS = ("nearest", "bilinear")


# ---------------------------------------------------------------------------- argument checks
def data_format_of(value: Any, layer: str) -> str:
    """Keras's ``standardize_data_format``: None means channels_last (the default image format)."""
    if value is None:
        return "channels_last"
    fmt = value.lower() if isinstance(value, str) else value
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError(f"{layer}: data_format must be 'channels_last' or 'channels_first', got {value!r}")
    return fmt


def spatial_axes(rank: int, data_format: str) -> tuple[int, ...]:
    """The axes of the ``rank`` spatial dims of a (batch, ..., channels) tensor in ``data_format``."""
    first = 2 if data_format == "channels_first" else 1
    return tuple(range(first, first + rank))


def int_tuple(value: Any, n: int, name: str, layer: str, *, allow_zero: bool) -> tuple[int, ...]:
    """An int or n ints as n ints, non-negative (``allow_zero``) or positive (Keras's ``standardize_tuple``)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != n or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{layer}: the `{name}` argument must be a tuple of {n} integers, got {name}={value!r}")
    low = 0 if allow_zero else 1
    if any(v < low for v in items):
        raise ValueError(f"{layer}: the `{name}` argument must be {'>= 0' if allow_zero else '> 0'}, "
                         f"got {name}={value!r}")
    return tuple(int(v) for v in items)


def pair_per_axis(value: Any, rank: int, name: str, layer: str) -> tuple[tuple[int, int], ...]:
    """``padding``/``cropping`` of a 2-D or 3-D layer: an int, ``rank`` ints (symmetric), or ``rank``
    (before, after) pairs."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{layer}: `{name}` cannot be negative, got {name}={value!r}")
        return ((int(value), int(value)),) * rank
    if not hasattr(value, "__len__") or isinstance(value, str):
        raise ValueError(f"{layer}: `{name}` must be an int, a tuple of {rank} ints or a tuple of {rank} "
                         f"tuples of 2 ints, got {name}={value!r}")
    if len(value) != rank:
        raise ValueError(f"{layer}: `{name}` should have {rank} elements, got {name}={value!r}")
    return tuple(int_tuple(v, 2, f"{_ORDINALS[i]} entry of {name}", layer, allow_zero=True)  # type: ignore[misc]
                 for i, v in enumerate(value))


def upsample(ctx: LowerContext, x: str, factors: dict[int, int], mode: str) -> str:
    """``x`` enlarged ``factors[axis]`` times along each given axis by the ``resize`` op: "nearest"
    repeats each element (PyTorch's nearest-exact at an integer factor), "linear" interpolates."""
    factors = {a: f for a, f in factors.items() if f != 1}
    if not factors:
        return ctx.identity(x)
    shape = ctx.shape(x)
    return ctx.resize(x, axes=tuple(factors), size=tuple(dims.mul(shape[a], f) for a, f in factors.items()),
                      mode=mode)


def check_rank(x, rank: int, layer: str, what: str) -> None:
    if len(x.shape) != rank:
        raise ShapeError(f"{layer} expects an input of rank {rank} ({what}), got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------- padding
class _Spatial(Layer):
    """A layer over the ``rank`` spatial axes of a (batch, *spatial, channels) tensor, or
    (batch, channels, *spatial) with ``data_format="channels_first"``."""

    rank = 2
    data_format = "channels_last"

    def _layout(self) -> str:
        if self.data_format == "channels_first":
            return f"batch, channels, {_SPATIAL[self.rank]}"
        return f"batch, {_SPATIAL[self.rank]}, channels"

    def _axes(self) -> tuple[int, ...]:
        return spatial_axes(self.rank, self.data_format)

    def check_inputs(self, inputs) -> None:
        check_rank(single(inputs), self.rank + 2, type(self).__name__, self._layout())


class _ZeroPadding(_Spatial):
    """Zeros before and after each spatial axis (the ``pad`` op)."""

    def __init__(self, padding, data_format=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.data_format = data_format_of(data_format, cls)
        self.padding = pair_per_axis(padding, self.rank, "padding", cls) if self.rank > 1 \
            else int_tuple(padding, 2, "padding", cls, allow_zero=True)

    def _pairs(self) -> tuple[tuple[int, int], ...]:
        return (self.padding,) if self.rank == 1 else self.padding  # type: ignore[return-value]

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = single(inputs)
        pads = [(0, 0)] * ctx.rank(x)
        for axis, pair in zip(self._axes(), self._pairs()):
            pads[axis] = pair
        return ctx.pad(x, pads=tuple(pads))

    def get_config(self) -> dict:
        return {**super().get_config(), "padding": self.padding, "data_format": self.data_format}


class ZeroPadding1D(_ZeroPadding):
    """Zeros at the start and end of the steps axis: ``padding`` is an int or (before, after)."""

    rank = 1

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding2D(_ZeroPadding):
    """Rows and columns of zeros around images: ``((top, bottom), (left, right))``."""

    rank = 2

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


class ZeroPadding3D(_ZeroPadding):
    """Zeros around volumes: one (before, after) pair per spatial axis."""

    rank = 3

    def __init__(self, padding=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)


# ---------------------------------------------------------------------------- cropping
class _Cropping(_Spatial):
    """Elements removed at both ends of each spatial axis (one ``slice`` per cropped axis)."""

    def __init__(self, cropping, data_format=None, **kwargs):
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.data_format = data_format_of(data_format, cls)
        self.cropping = pair_per_axis(cropping, self.rank, "cropping", cls) if self.rank > 1 \
            else int_tuple(cropping, 2, "cropping", cls, allow_zero=True)

    def _pairs(self) -> tuple[tuple[int, int], ...]:
        return (self.cropping,) if self.rank == 1 else self.cropping  # type: ignore[return-value]

    def check_inputs(self, inputs) -> None:
        super().check_inputs(inputs)
        x = single(inputs)
        for axis, (before, after) in zip(self._axes(), self._pairs()):
            size = x.shape[axis]
            if size is not None and before + after >= size:
                raise ShapeError(f"{type(self).__name__}: cropping={self.cropping} must be smaller than the input "
                                 f"on each spatial axis, but axis {axis} has size {size}")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = single(inputs)
        for axis, (before, after) in zip(self._axes(), self._pairs()):
            if before or after:
                x = ctx.slice(x, axis=axis, start=before, stop=-after if after else None)
        return x if x != single(inputs) else ctx.identity(x)

    def get_config(self) -> dict:
        return {**super().get_config(), "cropping": self.cropping, "data_format": self.data_format}


class Cropping1D(_Cropping):
    """Steps removed at the start and end of (batch, steps, features): ``cropping`` is an int or a pair."""

    rank = 1

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(cropping, None, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        del config["data_format"]  # Keras's Cropping1D takes none
        return config


class Cropping2D(_Cropping):
    """Rows and columns removed from images: ``((top, bottom), (left, right))``."""

    rank = 2

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


class Cropping3D(_Cropping):
    """Elements removed from volumes: one (before, after) pair per spatial axis."""

    rank = 3

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(cropping, data_format, **kwargs)


# ---------------------------------------------------------------------------- upsampling
class UpSampling1D(Layer):
    """Each step repeated ``size`` times: (batch, steps, features) -> (batch, steps * size, features)."""

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
            raise TypeError(f"UpSampling1D: expected an integer value for `size`, got {type(size)}")
        if size <= 0:
            raise ValueError(f"UpSampling1D: argument `size` should be a positive integer, got size={size}")
        self.size = int(size)

    def check_inputs(self, inputs) -> None:
        check_rank(single(inputs), 3, "UpSampling1D", "batch, steps, features")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return upsample(ctx, single(inputs), {1: self.size}, "nearest")

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}


class _UpSampling(_Spatial):
    interpolation = "nearest"

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        mode = "nearest" if self.interpolation == "nearest" else "linear"
        return upsample(ctx, single(inputs), dict(zip(self._axes(), self.size)), mode)


class UpSampling2D(_UpSampling):
    """Images enlarged ``size`` times: rows and columns repeated ("nearest") or interpolated
    ("bilinear", PyTorch's half-pixel rule as on Keras's torch backend)."""

    rank = 2

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format_of(data_format, "UpSampling2D")
        self.size = int_tuple(size, 2, "size", "UpSampling2D", allow_zero=False)
        if not isinstance(interpolation, str):
            raise ValueError(f"UpSampling2D: interpolation must be a string, got {interpolation!r}")
        self.interpolation = interpolation.lower()
        if self.interpolation not in UPSAMPLING_INTERPOLATIONS:
            raise ValueError(f"UpSampling2D: interpolation={interpolation!r} is not supported by graphc; it "
                             f"implements {' and '.join(repr(i) for i in UPSAMPLING_INTERPOLATIONS)}")

    def check_inputs(self, inputs) -> None:
        super().check_inputs(inputs)
        x = single(inputs)
        if self.interpolation == "bilinear" and not is_float(x.dtype):
            raise ShapeError(f"UpSampling2D(interpolation='bilinear') needs a float input, got {x.dtype}")

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "data_format": self.data_format,
                "interpolation": self.interpolation}


class UpSampling3D(_UpSampling):
    """Volumes enlarged ``size`` times, each element repeated along the three spatial axes."""

    rank = 3

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format_of(data_format, "UpSampling3D")
        self.size = int_tuple(size, 3, "size", "UpSampling3D", allow_zero=False)

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "data_format": self.data_format}


# ---------------------------------------------------------------------------- others
class RepeatVector(Layer):
    """(batch, features) -> (batch, n, features), the input repeated n times."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"RepeatVector: expected an integer value for `n`, got {type(n)}")
        if n <= 0:
            raise ValueError(f"RepeatVector: argument `n` should be a positive integer, got n={n}")
        self.n = int(n)

    def check_inputs(self, inputs) -> None:
        check_rank(single(inputs), 2, "RepeatVector", "batch, features")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return upsample(ctx, ctx.expand_dims(single(inputs), axis=1), {1: self.n}, "nearest")

    def get_config(self) -> dict:
        return {**super().get_config(), "n": self.n}


class Permute(Layer):
    """The non-batch axes reordered: ``dims`` is a permutation of 1..rank-1 (the batch axis stays)."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        try:
            self.dims = tuple(int(d) for d in dims)
        except (TypeError, ValueError):
            raise ValueError(f"Permute: `dims` must be a tuple of integers, got dims={dims!r}") from None
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError("Permute: the indices in `dims` must be consecutive and start from 1 (the batch axis "
                             f"is not permuted), got dims={dims!r}")

    def check_inputs(self, inputs) -> None:
        check_rank(single(inputs), len(self.dims) + 1, "Permute", f"batch and the {len(self.dims)} permuted axes")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return ctx.transpose(single(inputs), perm=(0,) + self.dims)

    def get_config(self) -> dict:
        return {**super().get_config(), "dims": self.dims}


class Identity(Layer):
    """Its inputs, unchanged (any structure of tensors)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return nest.map_structure(ctx.identity, inputs)
