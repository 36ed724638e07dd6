"""Preprocessing layers that live inside models: Rescaling, Normalization, Resizing, CenterCrop (Keras 3).

Constructor arguments, defaults, configs and weights are Keras's. Values follow Keras's torch
backend, the one graphc is checked against: Resizing is ``F.interpolate`` (``nearest-exact`` or
``bilinear`` with half-pixel centres: the ``resize`` op), and its aspect-ratio crop and pad use
the same boxes. Normalization keeps an adapted state as Keras saves it (the
non-trainable weights ``mean``, ``variance`` and ``count``), so ``.keras`` files with adapted
layers load; given ``mean``/``variance`` are constants of the graph, as in Keras. What graphc does
not implement (antialiasing, other interpolations, bounding boxes) is refused by name.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from graphc.frontend.layer import Layer
from graphc.frontend.layers.core import single
from graphc.frontend.layers.reshaping import data_format_of, spatial_axes
from graphc.frontend.lowering import LowerContext
from graphc.ir.types import is_float
from graphc.ops.registry import ShapeError

__all__ = ["Rescaling", "Normalization", "Resizing", "CenterCrop"]

EPSILON = 1e-7  # keras.backend.epsilon(): the floor of Normalization's standard deviation
RESIZE_INTERPOLATIONS = ("nearest", "bilinear")


def _compute_input(ctx: LowerContext, x: str, dtype: str) -> str:
    """``x`` in the layer's compute dtype (Keras casts inputs of preprocessing layers to it)."""
    return x if ctx.dtype(x) == dtype else ctx.cast(x, dtype=dtype)


def _float_dtype(layer: Layer) -> str:
    return layer.dtype if is_float(layer.dtype) else "float32"


def _numeric(value: Any, name: str, layer: str) -> Any:
    """A number, a nested list of numbers or an array; Keras's ``__numpy__`` config dict is decoded."""
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        config = value.get("config") or {}
        value = np.asarray(config.get("value"), dtype=config.get("dtype"))
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{layer}: `{name}` must be a number or a list of numbers, got {name}={value!r}") from None
    return array if isinstance(value, np.ndarray) else value


# ---------------------------------------------------------------------------- Rescaling
class Rescaling(Layer):
    """``inputs * scale + offset`` in float; ``scale`` and ``offset`` may be per-channel lists
    (they broadcast against the trailing axes, as NumPy does)."""

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = _numeric(scale, "scale", "Rescaling")
        self.offset = _numeric(offset, "offset", "Rescaling")
        self.supports_masking = True

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        dtype = _float_dtype(self)
        x = _compute_input(ctx, single(inputs), dtype)
        scaled = ctx.mul(x, ctx.constant(np.asarray(self.scale, dtype=dtype), f"{self.name}/scale"))
        return ctx.add(scaled, ctx.constant(np.asarray(self.offset, dtype=dtype), f"{self.name}/offset"))

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


# ---------------------------------------------------------------------------- Normalization
class Normalization(Layer):
    """``(x - mean) / max(sqrt(variance), 1e-7)`` per index of the kept ``axis`` (``invert``: the
    inverse map). ``mean``/``variance`` are given, or computed from data by :meth:`adapt`."""

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        if axis is None:
            axis = ()
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            axis = (int(axis),)
        try:
            self.axis = tuple(int(a) for a in axis)
        except (TypeError, ValueError):
            raise ValueError(f"Normalization: `axis` must be None, an int or a tuple of ints, got axis={axis!r}") \
                from None
        if (mean is None) != (variance is None):
            raise ValueError("Normalization: when setting values directly, both `mean` and `variance` must be set, "
                             f"got mean={mean} and variance={variance}")
        if mean is not None:
            mean = _numeric(mean, "mean", "Normalization")
            variance = _numeric(variance, "variance", "Normalization")
            if np.shape(mean) != np.shape(variance):
                raise ValueError("Normalization: `mean` and `variance` must have the same shape, got mean shape "
                                 f"{np.shape(mean)} and variance shape {np.shape(variance)}")
            if np.ndim(mean) > len(self.axis):
                raise ValueError(f"Normalization: the rank of `mean` must be at most the number of axes "
                                 f"({len(self.axis)}), got mean shape {np.shape(mean)} for axis {self.axis}")
        self.input_mean = mean
        self.input_variance = variance
        self.invert = bool(invert)
        self.adapt_mean = self.adapt_variance = self.count = None
        self.supports_masking = True

    # ------------------------------------------------------------ shapes and state
    def _geometry(self, input_shape) -> tuple[tuple[int, ...], tuple[int, ...], list]:
        """(kept axes, reduced axes, broadcast shape) for inputs of ``input_shape``."""
        ndim = len(input_shape)
        if any(not -ndim <= a < ndim for a in self.axis):
            raise ShapeError(f"Normalization: every axis must be in [-{ndim}, {ndim}) for inputs of rank {ndim}, "
                             f"got axis={self.axis}")
        keep = tuple(sorted(a % ndim for a in self.axis))
        for a in keep:
            if input_shape[a] is None:
                raise ShapeError(f"Normalization: the kept axes must have a known size, got axis={self.axis} and "
                                 f"input shape {tuple(input_shape)} (axis {a} is unknown)")
        reduce = tuple(a for a in range(ndim) if a not in keep)
        return keep, reduce, [int(input_shape[a]) if a in keep else 1 for a in range(ndim)]

    def check_inputs(self, inputs) -> None:
        shape = single(inputs).shape
        self._geometry(shape)
        if self.built:
            want = self._build_shape
            for a in self._keep:
                if len(shape) != len(want) or shape[a] != want[a]:
                    raise ShapeError(f"Normalization was built for inputs of shape {tuple(want)}; kept axis {a} "
                                     f"differs in {tuple(shape)}")

    def build(self, input_shape):
        self._keep, self._reduce, self._broadcast_shape = self._geometry(input_shape)
        self._build_shape = tuple(input_shape)
        if self.input_mean is None:
            shape = tuple(input_shape[a] for a in self._keep)
            self.adapt_mean = self.add_weight("mean", shape, "zeros", trainable=False)
            self.adapt_variance = self.add_weight("variance", shape, "ones", trainable=False)
            self.count = self.add_weight("count", (), "zeros", trainable=False, dtype="int32")

    def _given(self, value) -> np.ndarray:
        """A given mean or variance as an array of the broadcast shape (Keras aligns its axes with the
        kept axes from the right)."""
        value = np.asarray(value, dtype=_float_dtype(self))
        if value.ndim:
            expanded = [1] * len(self._broadcast_shape)
            for i in range(1, value.ndim + 1):
                expanded[self._keep[-i]] = value.shape[-i]
            value = value.reshape(expanded)
        return np.broadcast_to(value, self._broadcast_shape)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and variance the layer normalizes with now (given, or adapted), as arrays of the broadcast
        shape: for tools that hold the layer's numbers elsewhere (the benchmarks' PyTorch twin)."""
        if self.input_mean is not None:
            return self._given(self.input_mean), self._given(self.input_variance)
        shape = tuple(self._broadcast_shape)
        return self.adapt_mean.numpy().reshape(shape), self.adapt_variance.numpy().reshape(shape)

    def normalizes_batch_axis(self) -> bool:
        """Whether axis 0 (the batch) is one of the kept axes (each example its own statistics)."""
        return 0 in self._keep

    # ------------------------------------------------------------ adapt
    def adapt(self, data) -> None:
        """Set the mean and variance from ``data``: an array, or an iterable of batches (combined as
        Keras combines them)."""
        if self.input_mean is not None:
            raise ValueError(f"Normalization {self.name!r} was given mean and variance; it has no state to adapt")
        if isinstance(data, np.ndarray) or hasattr(data, "__array__"):
            batches, first = None, np.asarray(data)
        elif hasattr(data, "__iter__"):
            iterator = iter(data)
            first = next(iterator, None)
            if first is None:
                raise ValueError("Normalization.adapt() received an empty iterable: pass at least one batch")
            first = np.asarray(first[0] if isinstance(first, tuple) else first)
            batches = itertools.chain([first], (np.asarray(b[0] if isinstance(b, tuple) else b) for b in iterator))
        else:
            raise TypeError(f"Normalization.adapt() takes an array or an iterable of batches, got {type(data)}")
        if not self.built:
            shape = tuple(first.shape)
            try:
                self.build(shape)
            except ShapeError as exc:
                raise ValueError(f"Normalization {self.name!r} cannot adapt to data of shape {shape}: {exc}") from None
        if batches is None:
            self._check_adapt_shape(first.shape)
            mean, variance = np.mean(first, axis=self._reduce), np.var(first, axis=self._reduce)
        else:
            mean, variance = self._combined_moments(batches)
        self.adapt_mean.assign(np.asarray(mean, dtype=self.adapt_mean.dtype))
        self.adapt_variance.assign(np.asarray(variance, dtype=self.adapt_variance.dtype))

    def _check_adapt_shape(self, shape) -> None:
        for a in self._keep:
            if len(shape) != len(self._build_shape) or shape[a] != self._build_shape[a]:
                raise ValueError(f"Normalization {self.name!r} was built for inputs of shape {self._build_shape}, "
                                 f"but adapt() got data of shape {tuple(shape)}")

    def _combined_moments(self, batches) -> tuple[np.ndarray, np.ndarray]:
        """Each batch's moments folded into the running ones (the lack-of-fit sum of squares), as Keras does."""
        total_mean = np.zeros(self.adapt_mean.shape, np.float32)
        total_var = np.zeros(self.adapt_mean.shape, np.float32)
        total = 0
        for batch in batches:
            batch = batch.astype(np.float32)
            self._check_adapt_shape(batch.shape)
            batch_mean, batch_var = np.mean(batch, axis=self._reduce), np.var(batch, axis=self._reduce)
            count = math.prod(batch.shape[a] for a in self._reduce) if self._reduce else 1
            total += count
            weight = float(count) / total
            rest = 1.0 - weight
            new_mean = total_mean * rest + batch_mean * weight
            total_var = (total_var + (total_mean - new_mean) ** 2) * rest + (batch_var + (batch_mean - new_mean) ** 2) \
                * weight
            total_mean = new_mean
        return total_mean, total_var

    # ------------------------------------------------------------ lowering
    def lower(self, ctx: LowerContext, inputs, **kwargs):
        dtype = _float_dtype(self)
        x = _compute_input(ctx, single(inputs), dtype)
        if self.input_mean is not None:
            mean = ctx.constant(self._given(self.input_mean), f"{self.name}/mean")
            variance = ctx.constant(self._given(self.input_variance), f"{self.name}/variance")
        else:
            shape = tuple(self._broadcast_shape)
            mean = ctx.reshape(_as(ctx, ctx.param(self.adapt_mean), dtype), shape=shape)
            variance = ctx.reshape(_as(ctx, ctx.param(self.adapt_variance), dtype), shape=shape)
        std = ctx.maximum(ctx.sqrt(variance), ctx.constant(np.asarray(EPSILON, dtype=dtype), "epsilon"))
        if self.invert:
            return ctx.add(mean, ctx.mul(x, std))
        return ctx.div(ctx.sub(x, mean), std)

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis, "invert": self.invert,
                "mean": np.array(self.input_mean).tolist(), "variance": np.array(self.input_variance).tolist()}


def _as(ctx: LowerContext, value: str, dtype: str) -> str:
    return value if ctx.dtype(value) == dtype else ctx.cast(value, dtype=dtype)


# ---------------------------------------------------------------------------- image layers
class _ImageLayer(Layer):
    """A batch of images (batch, height, width, channels), or channels first."""

    def _image_axes(self) -> tuple[int, int]:
        return spatial_axes(2, self.data_format)  # type: ignore[return-value]

    def _needs_known_size(self) -> str | None:
        """Why the image size must be known (a crop box that depends on it), or None."""
        return None

    def check_inputs(self, inputs) -> None:
        cls = type(self).__name__
        x = single(inputs)
        if len(x.shape) != 4:
            layout = "batch, channels, height, width" if self.data_format == "channels_first" \
                else "batch, height, width, channels"
            raise ShapeError(f"{cls} expects a batch of images of rank 4 ({layout}), got shape {tuple(x.shape)}")
        why = self._needs_known_size()
        if why and any(x.shape[axis] is None for axis in self._image_axes()):
            raise ShapeError(f"{cls} needs images of known height and width in graphc ({why}), got shape "
                             f"{tuple(x.shape)}")


def _crop_to_aspect_ratio(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int, int, int]:
    """The centred box (top, left, height, width) of the target's aspect ratio (Keras's rule)."""
    crop_h = max(min(height, int(float(width * target_h) / target_w)), 1)
    crop_w = max(min(width, int(float(height * target_w) / target_h)), 1)
    return int(float(height - crop_h) / 2), int(float(width - crop_w) / 2), crop_h, crop_w


def _pad_to_aspect_ratio(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """Rows and columns added on each side to reach the target's aspect ratio (Keras's torch rule)."""
    pad_h = max(height, int(float(width * target_h) / target_w))
    pad_w = max(width, int(float(height * target_w) / target_h))
    return int(float(pad_h - height) / 2), int(float(pad_w - width) / 2)


def resize_images(ctx: LowerContext, x: str, axes: tuple[int, int], size: tuple[int, int], interpolation: str, *,
                  crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False,
                  fill_value: float = 0.0) -> str:
    """Keras's ``ops.image.resize`` (torch backend) of images with known sizes along ``axes``."""
    shape = ctx.shape(x)
    height, width = (shape[a] for a in axes)
    if crop_to_aspect_ratio:
        top, left, crop_h, crop_w = _crop_to_aspect_ratio(height, width, *size)
        for axis, start, length, full in ((axes[0], top, crop_h, height), (axes[1], left, crop_w, width)):
            if length != full:
                x = ctx.slice(x, axis=axis, start=start, stop=start + length)
    elif pad_to_aspect_ratio:
        pads = [(0, 0)] * ctx.rank(x)
        for axis, extra in zip(axes, _pad_to_aspect_ratio(height, width, *size)):
            pads[axis] = (extra, extra)
        if any(p != (0, 0) for p in pads):
            # integer images: Keras pads and resizes in float, then rounds back
            value = float(fill_value) if is_float(ctx.dtype(x)) else float(np.round(fill_value))
            x = ctx.pad(x, pads=tuple(pads), value=value)
    shape = ctx.shape(x)
    changed = [(axis, target) for axis, target in zip(axes, size) if shape[axis] != target]
    if not changed:
        return x
    return ctx.resize(x, axes=tuple(a for a, _ in changed), size=tuple(t for _, t in changed),
                      mode="nearest" if interpolation == "nearest" else "linear")


class Resizing(_ImageLayer):
    """Images resized to (height, width), optionally cropped or padded to the target's aspect ratio first
    (the image size may be free unless one of those is asked for)."""

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False, pad_to_aspect_ratio=False,
                 fill_mode="constant", fill_value=0.0, antialias=False, data_format=None, bounding_box_format=None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Resizing: `{name}` must be a positive integer, got {name}={value!r}")
        self.height, self.width = int(height), int(width)
        if interpolation not in RESIZE_INTERPOLATIONS:
            raise ValueError(f"Resizing: interpolation={interpolation!r} is not supported by graphc; it implements "
                             f"{' and '.join(repr(i) for i in RESIZE_INTERPOLATIONS)}")
        if crop_to_aspect_ratio and pad_to_aspect_ratio:
            raise ValueError("Resizing: only one of `pad_to_aspect_ratio` and `crop_to_aspect_ratio` can be True")
        if fill_mode != "constant":
            raise ValueError(f"Resizing: fill_mode={fill_mode!r} is not supported; only 'constant' is (as on Keras's "
                             "torch backend)")
        if antialias:
            raise ValueError("Resizing: antialias=True is not supported by graphc")
        if bounding_box_format is not None:
            raise ValueError(f"Resizing: bounding_box_format={bounding_box_format!r} is not supported by graphc "
                             "(graphc models transform images only)")
        self.interpolation = interpolation
        self.crop_to_aspect_ratio = bool(crop_to_aspect_ratio)
        self.pad_to_aspect_ratio = bool(pad_to_aspect_ratio)
        self.fill_mode = fill_mode
        self.fill_value = float(fill_value)
        self.antialias = False
        self.data_format = data_format_of(data_format, "Resizing")

    def _needs_known_size(self) -> str | None:
        if self.crop_to_aspect_ratio:
            return "crop_to_aspect_ratio crops a box that depends on it"
        if self.pad_to_aspect_ratio:
            return "pad_to_aspect_ratio pads by amounts that depend on it"
        return None

    def check_inputs(self, inputs) -> None:
        super().check_inputs(inputs)
        x = single(inputs)
        if self.interpolation == "bilinear" and not is_float(x.dtype):
            raise ShapeError(f"Resizing(interpolation='bilinear') needs float images in graphc, got {x.dtype}")

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        return resize_images(ctx, single(inputs), self._image_axes(), (self.height, self.width), self.interpolation,
                             crop_to_aspect_ratio=self.crop_to_aspect_ratio,
                             pad_to_aspect_ratio=self.pad_to_aspect_ratio, fill_value=self.fill_value)

    def get_config(self) -> dict:
        return {**super().get_config(), "data_format": self.data_format, "height": self.height, "width": self.width,
                "interpolation": self.interpolation, "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
                "pad_to_aspect_ratio": self.pad_to_aspect_ratio, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value, "antialias": self.antialias}


class CenterCrop(_ImageLayer):
    """The central (height, width) window of each image; an image smaller than that on either side is
    cropped to the target's aspect ratio and resized (bilinear), as Keras does. The result is float."""

    def __init__(self, height, width, data_format=None, bounding_box_format=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"CenterCrop: `{name}` must be a positive integer, got {name}={value!r}")
        if bounding_box_format is not None:
            raise ValueError(f"CenterCrop: bounding_box_format={bounding_box_format!r} is not supported by graphc "
                             "(graphc models transform images only)")
        self.height, self.width = int(height), int(width)
        self.data_format = data_format_of(data_format, "CenterCrop")

    def _needs_known_size(self) -> str | None:
        return "the crop window, or the resize for a smaller image, depends on it"

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = _compute_input(ctx, single(inputs), _float_dtype(self))
        axes = self._image_axes()
        shape = ctx.shape(x)
        if shape[axes[0]] >= self.height and shape[axes[1]] >= self.width:
            for axis, target in zip(axes, (self.height, self.width)):
                start = (shape[axis] - target) // 2
                if target != shape[axis]:
                    x = ctx.slice(x, axis=axis, start=start, stop=start + target)
            return x if x != single(inputs) else ctx.identity(x)
        return resize_images(ctx, x, axes, (self.height, self.width), "bilinear", crop_to_aspect_ratio=True)

    def get_config(self) -> dict:
        return {**super().get_config(), "data_format": self.data_format, "height": self.height, "width": self.width}
