"""Convolution: the ``conv`` op (channels-last, N-d, grouped) and the window geometry it shares
with pooling, including Keras's 'valid'/'same'/'causal' padding rule.

Layout: ``x`` is (N, *spatial, C) and the kernel is Keras's (*k, C/groups, O); the result is
(N, *out, O). Output channel ``o`` belongs to group ``o // (O/groups)``, which reads input
channels ``[g*C/groups, (g+1)*C/groups)``. A depthwise convolution is ``groups = C`` with the
Keras depthwise kernel (*k, C, M) reshaped to (*k, 1, C*M).

Padding is explicit: ``pads`` holds one ``(before, after)`` pair per spatial axis, possibly
asymmetric. :func:`keras_pads` turns Keras's padding names into pairs (TensorFlow's 'same'
puts the odd pixel after). A pad may be a symbolic dimension expression: with a free spatial
size and stride > 1, 'same' padding depends on that size, so it is an expression over the
free dims, evaluated once they are bound (the reference takes ``bindings=``).

The reference never loops over pixels: for each kernel tap it takes one strided view of the
padded input and contracts the channels with one matmul (grouped: one batched matmul;
depthwise: one broadcast multiply), accumulating over taps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from graphc.ir import dims
from graphc.ir.dims import Dim
from graphc.ir.types import TensorType
from graphc.ops.common import fmt_shape, require_float, same_dtype
from graphc.ops.registry import OpDef, ShapeError, get, register

__all__ = ["keras_pads", "keras_transpose_pads", "window_output_dims", "per_axis", "pads_attr", "spatial_attrs",
           "resolve_pads", "pad_array", "tap_views", "tap_windows", "tap_operand", "tap_operands",
           "concrete_out"]

Pads = tuple[tuple[Dim, Dim], ...]


# ---------------------------------------------------------------------------- window geometry
def per_axis(value: Any, n: int, name: str, what: str) -> tuple[int, ...]:
    """``value`` (None = all ones, an int, or n ints) as n positive ints."""
    if value is None:
        return (1,) * n
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in value):
        raise ShapeError(f"{what}: {name} must be {n} positive integer(s) (one per spatial axis), "
                         f"got {value!r}")
    return tuple(int(v) for v in value)


def pads_attr(value: Any, n: int, what: str) -> Pads:
    """``value`` (None = no padding, or n (before, after) pairs) as validated pairs."""
    if value is None:
        return ((0, 0),) * n
    try:
        pairs = tuple(tuple(p) for p in value)
    except TypeError:
        pairs = ()
    if len(pairs) != n or any(len(p) != 2 for p in pairs):
        raise ShapeError(f"{what}: pads must be {n} (before, after) pair(s), one per spatial axis, "
                         f"got {value!r}")
    for p in pairs:
        for v in p:
            if isinstance(v, str):
                continue
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise ShapeError(f"{what}: pads must be non-negative integers or dimension "
                                 f"expressions, got {value!r}")
    return tuple((v if isinstance(v, str) else int(v), w if isinstance(w, str) else int(w))
                 for v, w in pairs)


def spatial_attrs(nsp: int, strides: Any, dilations: Any, pads: Any,
                  what: str) -> tuple[tuple[int, ...], tuple[int, ...], Pads]:
    """Validated per-axis strides, dilations and pads for ``nsp`` spatial axes."""
    return (per_axis(strides, nsp, "strides", what), per_axis(dilations, nsp, "dilations", what),
            pads_attr(pads, nsp, what))


def window_output_dims(spatial: Sequence[Dim], kernel: Sequence[int], strides: Sequence[int],
                       dilations: Sequence[int], pads: Pads, what: str) -> tuple[Dim, ...]:
    """Output sizes ``(n + before + after - ((k-1)*d + 1)) // s + 1`` per spatial axis.

    Raises ShapeError when a concrete axis is smaller than its (dilated) window.
    """
    out: list[Dim] = []
    for axis, (n, k, s, d, (pb, pa)) in enumerate(zip(spatial, kernel, strides, dilations, pads)):
        eff = (k - 1) * d + 1
        if isinstance(n, int) and isinstance(pb, int) and isinstance(pa, int):
            if n + pb + pa < eff:
                window = f"dilated window {eff} (kernel {k}, dilation {d})" if d > 1 else f"window {k}"
                raise ShapeError(f"{what}: spatial axis {axis} of size {n} with padding ({pb}, {pa}) "
                                 f"is smaller than the {window}; the output would be empty")
            out.append((n + pb + pa - eff) // s + 1)
        elif isinstance(pb, int) and isinstance(pa, int):
            out.append(dims.floordiv(dims.add(n, pb + pa - eff + s), s))
        elif (pb, pa) == _same_pair(n, eff, s):
            out.append(dims.ceildiv(n, s))  # Keras 'same': ceil(n / s), whatever the padding works out to
        else:
            out.append(dims.floordiv(dims.add(dims.add(dims.add(n, pb), pa), s - eff), s))
    return tuple(out)


def keras_pads(padding: str, spatial: Sequence[Dim], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int] | None = None) -> Pads:
    """Keras's padding as explicit (before, after) pairs for inputs of size ``spatial``.

    'valid': none. 'same': total ``max(0, (ceil(n/s) - 1)*s + (k-1)*d + 1 - n)``, half before
    and the odd pixel after (TensorFlow's rule, so the output size is ``ceil(n/s)``); for a
    free size ``n`` and stride > 1 the pair is a dimension expression in ``n``. 'causal'
    (1-D): ``(k-1)*d`` before, none after.
    """
    nsp = len(spatial)
    kernel = per_axis(kernel, nsp, "kernel", "padding")
    strides = per_axis(strides, nsp, "strides", "padding")
    dilations = per_axis(dilations, nsp, "dilations", "padding")
    padding = padding.lower() if isinstance(padding, str) else padding
    if padding == "valid":
        return ((0, 0),) * nsp
    if padding == "causal":
        return tuple(((k - 1) * d, 0) for k, d in zip(kernel, dilations))
    if padding != "same":
        raise ValueError(f"padding must be 'valid', 'same' or 'causal', got {padding!r}")
    pairs: list[tuple[Dim, Dim]] = []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        eff = (k - 1) * d + 1
        if isinstance(n, int):
            total = max(0, (-(-n // s) - 1) * s + eff - n)
            pairs.append((total // 2, total - total // 2))
        elif s == 1 or eff == 1:
            # Stride 1: the total is always k_eff - 1. k_eff = 1: the total is always 0.
            total = eff - 1
            pairs.append((total // 2, total - total // 2))
        else:
            pairs.append(_same_pair(n, eff, s))
    return tuple(pairs)


def keras_transpose_pads(padding: str, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
                         output_padding: Sequence[int] | None) -> tuple[Pads, tuple[int, ...]]:
    """Keras's transposed-convolution padding as the ``conv_transpose`` op's (pads, output_padding).

    Keras places the transposed convolution's full output ``(n-1)*s + k_eff`` and pads it by
    (left, right) relative to the ``k_eff - 1`` a full correlation would add (JAX's rule, which
    the torch backend reproduces by cropping): 'valid' keeps everything and adds
    ``output_padding`` (default ``max(k_eff, s) - k_eff``) at the end; 'same' aims at ``n*s``
    (or ``(n-1)*s + k_eff % 2 + output_padding``), the odd pixel cropped at the start. Here that
    is the adjoint of a convolution with ``pads`` (before, after) whose extra rows at the end are
    ``output_padding`` (always below the stride).
    """
    padding = padding.lower() if isinstance(padding, str) else padding
    if padding not in ("valid", "same"):
        raise ValueError(f"transposed convolution padding must be 'valid' or 'same', got {padding!r}")
    nsp = len(kernel)
    extras = (None,) * nsp if output_padding is None else tuple(output_padding)
    pairs, extra_out = [], []
    for k, s, d, extra in zip(kernel, strides, dilations, extras):
        eff = (k - 1) * d + 1
        if padding == "valid":
            left, right = eff - 1, eff - 1 + (max(eff, s) - eff if extra is None else extra)
        else:
            total = s + eff - 2 if extra is None else eff + eff % 2 - 2 + extra
            left = min(total // 2 + total % 2, eff - 1)
            right = total - left
        crop_after = eff - 1 - right  # negative: zeros added after
        pairs.append((eff - 1 - left, max(crop_after, 0)))
        extra_out.append(max(-crop_after, 0))
    return tuple(pairs), tuple(extra_out)


def _same_pair(n: Dim, eff: int, s: int) -> tuple[Dim, Dim]:
    """'same' padding of a free size ``n`` for a (dilated) window ``eff`` and stride ``s`` > 1."""
    t: Dim = dims.add(dims.sub(dims.mul(dims.floordiv(dims.sub(n, 1), s), s), n), eff)  # (ceil(n/s)-1)*s + eff - n
    if eff < s:  # the total can go negative: clamp
        t = dims.maximum(0, t)
    before = dims.floordiv(t, 2)
    return before, dims.sub(t, before)


def resolve_pads(pads: Pads, bindings: Mapping[str, int] | None, what: str) -> tuple[tuple[int, int], ...]:
    """Concrete pads: symbolic entries evaluated with the free-dim ``bindings``."""
    out = []
    for pair in pads:
        vals = []
        for p in pair:
            if isinstance(p, str):
                try:
                    p = dims.evaluate(p, bindings or {})
                except KeyError as exc:
                    raise ValueError(f"{what}: pad {p!r} depends on free dimensions that are not "
                                     f"bound ({exc.args[0]}); pass bindings=") from None
                if p < 0:
                    raise ValueError(f"{what}: pad evaluated to {p} < 0")
            vals.append(int(p))
        out.append((vals[0], vals[1]))
    return tuple(out)


def pad_array(x: np.ndarray, pads: Sequence[tuple[int, int]], value: float) -> np.ndarray:
    """``x`` (N, *spatial, C) padded on its spatial axes with ``value``."""
    if all(pb == 0 and pa == 0 for pb, pa in pads):
        return x
    shape = (x.shape[0],) + tuple(n + pb + pa for n, (pb, pa) in zip(x.shape[1:-1], pads)) + (x.shape[-1],)
    out = np.full(shape, value, dtype=x.dtype)
    inner = (slice(None),) + tuple(slice(pb, pb + n) for n, (pb, _) in zip(x.shape[1:-1], pads))
    out[inner] = x
    return out


def tap_views(xp: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
              out: Sequence[int]) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """For each kernel tap, the strided view of padded ``xp`` that the tap multiplies: (N, *out, C)."""
    for tap in np.ndindex(*kernel):
        index = (slice(None),) + tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                                       for t, d, s, o in zip(tap, dilations, strides, out))
        yield tap, xp[index]


def tap_windows(spatial: Sequence[int], pads: Sequence[tuple[int, int]], kernel: Sequence[int],
                strides: Sequence[int], dilations: Sequence[int], out: Sequence[int]
                ) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """For each kernel tap, where it reads an unpadded (N, *spatial, C) input ``x``: (tap, input slices,
    output slices) with ``y[output slices] += x[input slices] @ w[tap]``; positions reading padding
    (zeros) are left out.

    Nothing padded is built, so a dilation of 2^31 costs what its few real taps cost (a padded copy
    of the input would be 2^32 rows long).
    """
    for tap in np.ndindex(*kernel):
        src, dst = [slice(None)], [slice(None)]
        for t, d, s, o, n, (pb, _) in zip(tap, dilations, strides, out, spatial, pads):
            start = t * d - pb  # the input index output 0 reads
            lo = 0 if start >= 0 else min(o, -(start // s))  # the first output reading index >= 0
            hi = max(lo, min(o, (n - 1 - start) // s + 1)) if n - 1 - start >= 0 else lo
            first = start + lo * s
            src.append(slice(first, first + (hi - lo - 1) * s + 1, s) if hi > lo else slice(0, 0))
            dst.append(slice(lo, hi))
        yield tap, tuple(src), tuple(dst)


def tap_operand(x: np.ndarray, src: tuple[slice, ...], dst: tuple[slice, ...], out: Sequence[int]) -> np.ndarray:
    """The (N, *out, C) values one tap multiplies: a view of ``x`` when the tap reads no padding,
    else a zero-filled array with the real part copied in."""
    shape = (x.shape[0], *out, x.shape[-1])
    if all(d.start == 0 and d.stop == o for d, o in zip(dst[1:], out)):
        return x[src]
    v = np.zeros(shape, dtype=x.dtype)
    v[dst] = x[src]
    return v


def tap_operands(x: np.ndarray, pads: Sequence[tuple[int, int]], kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], out: Sequence[int]) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Each kernel tap and the (N, *out, C) values it multiplies, the same values either way: strided
    views of the input zero-padded once where that copy is at most twice the input (a padded tap
    then costs no zero-filled array of its own), else :func:`tap_operand`'s copies of what each tap
    reads (a huge dilation or padding never builds its padded input)."""
    spatial = x.shape[1:-1]
    padded = int(np.prod([n + pb + pa for n, (pb, pa) in zip(spatial, pads)], dtype=np.int64))
    if all(o > 0 for o in out) and padded <= 2 * int(np.prod(spatial, dtype=np.int64)):
        yield from tap_views(pad_array(x, pads, 0), kernel, strides, dilations, out)
        return
    for tap, src, dst in tap_windows(spatial, pads, kernel, strides, dilations, out):
        yield tap, tap_operand(x, src, dst, out)


def concrete_out(x_shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], pads: Sequence[tuple[int, int]], what: str) -> tuple[int, ...]:
    """Output spatial sizes for a concrete input (the references' check)."""
    out = window_output_dims(tuple(x_shape[1:-1]), kernel, strides, dilations, pads, what)
    return tuple(int(o) for o in out)


# ---------------------------------------------------------------------------- conv
def _conv_infer(types: list[TensorType], *, strides, dilations, pads, groups) -> TensorType:
    x, w = types
    require_float(x, "conv input")
    dtype = same_dtype(types, "conv input and kernel")
    if x.rank < 3:
        raise ShapeError(f"conv needs an input of rank >= 3 (batch, *spatial, channels), got shape "
                         f"{fmt_shape(x.shape)}")
    nsp = x.rank - 2
    if w.rank != x.rank:
        raise ShapeError(f"conv kernel must have rank {x.rank} (*kernel, in_channels/groups, out) for an "
                         f"input of shape {fmt_shape(x.shape)}, got {fmt_shape(w.shape)}")
    if not all(isinstance(d, int) for d in w.shape):
        raise ShapeError(f"conv kernel shape must be concrete, got {fmt_shape(w.shape)}")
    strides, dilations, pads = spatial_attrs(nsp, strides, dilations, pads, "conv")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ShapeError(f"conv groups must be a positive integer, got {groups!r}")
    cg, out_ch = w.shape[-2], w.shape[-1]
    c = x.shape[-1]
    if isinstance(c, int) and c != cg * groups:
        raise ShapeError(f"conv input has {c} channels but the kernel {fmt_shape(w.shape)} with "
                         f"groups={groups} expects {cg * groups}")
    if out_ch % groups:
        raise ShapeError(f"conv output channels {out_ch} are not divisible by groups={groups}")
    out = window_output_dims(x.shape[1:-1], w.shape[:nsp], strides, dilations, pads, "conv")
    return TensorType(dtype, (x.shape[0],) + out + (out_ch,))


_DEPTHWISE_CHUNK_BYTES = 1 << 20


def _depthwise(x, w, pads, kernel, strides, dilations, out, groups: int, og: int) -> np.ndarray:
    """A depthwise convolution (each input channel g feeds output channels [g*og, (g+1)*og)): every tap's
    products through one buffer (a fresh array per tap costs its page faults again)."""
    acc = term = None
    for tap, v in tap_operands(x, pads, kernel, strides, dilations, out):
        wt = w[tap].reshape(groups, og)
        operand, factor = (v[..., None], wt) if og > 1 else (v, wt[:, 0])
        if acc is None:
            acc = np.multiply(operand, factor)
            term = np.empty_like(acc)
        else:
            np.add(acc, np.multiply(operand, factor, out=term), out=acc)
    return acc


def _conv(x: np.ndarray, w: np.ndarray, *, strides, dilations, pads, groups,
          bindings: Mapping[str, int] | None = None) -> np.ndarray:
    nsp = x.ndim - 2
    strides, dilations, pads = spatial_attrs(nsp, strides, dilations, pads, "conv")
    pads_i = resolve_pads(pads, bindings, "conv")
    kernel = w.shape[:nsp]
    cg, out_ch = w.shape[-2], w.shape[-1]
    if x.shape[-1] != cg * groups:
        raise ValueError(f"conv: input has {x.shape[-1]} channels, the kernel {w.shape} with "
                         f"groups={groups} expects {cg * groups}")
    out = concrete_out(x.shape, kernel, strides, dilations, pads_i, "conv")
    dtype = np.result_type(x.dtype, w.dtype)
    x = x.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    n, c, og = x.shape[0], x.shape[-1], out_ch // groups
    rows = n * int(np.prod(out, dtype=np.int64))
    acc: np.ndarray | None = None
    taps = tap_operands(x, pads_i, kernel, strides, dilations, out)
    if groups == 1:
        # (rows, C) @ (C, O) per tap.
        for tap, v in taps:
            term = np.ascontiguousarray(v).reshape(rows, c) @ w[tap]
            acc = term if acc is None else np.add(acc, term, out=acc)
        result = acc
    elif cg == 1:
        # Depthwise, a few samples at a time: their taps' sums stay in cache where the whole batch's
        # arrays would stream from memory once per tap
        per_sample = max(1, rows // max(n, 1) * out_ch * x.itemsize)
        step = max(1, _DEPTHWISE_CHUNK_BYTES // per_sample)
        parts = [_depthwise(x[b0:b0 + step], w, pads_i, kernel, strides, dilations, out, groups, og)
                 for b0 in range(0, n, step)]
        result = (parts[0] if len(parts) == 1 else np.concatenate(parts)).reshape(rows, out_ch)
    else:
        # Grouped: one batched matmul (groups, rows, cg) @ (groups, cg, og) per tap.
        for tap, v in taps:
            a = np.ascontiguousarray(v).reshape(rows, groups, cg).transpose(1, 0, 2)
            wt = w[tap].reshape(cg, groups, og).transpose(1, 0, 2)
            term = np.matmul(a, wt)
            acc = term if acc is None else np.add(acc, term, out=acc)
        result = acc.transpose(1, 0, 2).reshape(rows, out_ch)  # type: ignore[union-attr]
    return result.reshape((n,) + out + (out_ch,))  # type: ignore[union-attr]


register(OpDef(
    "conv", _conv_infer, _conv,
    attrs={"strides": None, "dilations": None, "pads": None, "groups": 1},
    num_inputs=2, fusion_kind="opaque", uses_dims=True,
    doc="N-d channels-last convolution: x (N, *spatial, C), kernel (*k, C/groups, O) -> (N, *out, O). "
        "strides/dilations: one int per spatial axis (None = ones); pads: (before, after) per axis "
        "(ints or dimension expressions; None = none); groups splits C and O into equal groups."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext). graphc is channels-last;
# ONNX Conv and pooling are channels-first, so the input is transposed to NCHW and the result
# back to NHWC. The exporter cancels the back-and-forth pairs between consecutive convolutions.

def onnx_channels_first(ctx, x: str, rank: int) -> str:
    """(N, *spatial, C) -> (N, C, *spatial)."""
    return ctx.transpose(x, [0, rank - 1, *range(1, rank - 1)])


def onnx_channels_last(ctx, y: str, rank: int, out=None) -> str:
    """(N, C, *spatial) -> (N, *spatial, C)."""
    return ctx.transpose(y, [0, *range(2, rank), 1], out)


def onnx_window(ctx, x_nchw: str, spatial, kernel, strides, dilations, pads: Pads,
                pad_value: float | None = 0.0) -> tuple[str, dict[str, Any]]:
    """The ONNX padding of a window op: (input, attributes).

    Concrete pads become ``pads``; symbolic pads that are Keras's 'same' become
    ``auto_pad="SAME_UPPER"`` (the same rule: the odd pixel after) without dilations and where
    no stride exceeds its window; other symbolic pads are applied by an explicit Pad node filled
    with ``pad_value`` (None: not expressible).

    A stride beyond the window makes the 'same' total ``(ceil(n/s)-1)*s + k - n`` negative for
    some sizes; Keras clamps it at 0, onnxruntime's SAME_UPPER does not (it shifts the window
    into the input), so those pads stay explicit.
    """
    if all(isinstance(p, int) for pair in pads for p in pair):
        return x_nchw, {"pads": [b for b, _ in pads] + [a for _, a in pads]}
    if (all(d == 1 for d in dilations) and all(k >= s for k, s in zip(kernel, strides))
            and tuple(pads) == keras_pads("same", spatial, kernel, strides, dilations)):
        return x_nchw, {"auto_pad": "SAME_UPPER"}  # onnxruntime refuses SAME_UPPER with dilations
    if pad_value is None:
        raise ctx.error(f"symbolic padding {pads} other than Keras 'same' cannot be expressed in ONNX")
    before = [0, 0, *[b for b, _ in pads]]
    after = [0, 0, *[a for _, a in pads]]
    fill = ctx.scalar(pad_value, ctx.input_type(0).dtype)
    return ctx.node("Pad", [x_nchw, ctx.shape(before + after), fill], mode="constant"), {}


def onnx_conv(ctx, x: str, w_index: int, attrs, bias: str | None = None, out=None, nchw_out: bool = False) -> str:
    """Emit a channels-last convolution of ``x`` by kernel input ``w_index`` (NHWC in; NHWC out
    unless ``nchw_out``, for callers that continue in ONNX's layout)."""
    rank = ctx.input_type(0).rank
    nsp = rank - 2
    strides, dilations, pads = spatial_attrs(nsp, attrs["strides"], attrs["dilations"], attrs["pads"], "conv")
    kernel = ctx.input_type(w_index).shape[:nsp]
    perm = [nsp + 1, nsp, *range(nsp)]  # (*k, C/g, O) -> (O, C/g, *k)
    w = ctx.derived(w_index, lambda k: np.ascontiguousarray(np.transpose(k, perm)), "oihw") \
        or ctx.transpose(ctx.input_name(w_index), perm)
    xc, pad_attrs = onnx_window(ctx, onnx_channels_first(ctx, x, rank), ctx.input_type(0).shape[1:-1],
                                kernel, strides, dilations, pads)
    inputs = [xc, w] + ([bias] if bias is not None else [])
    y = ctx.node("Conv", inputs, kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                 group=int(attrs["groups"]), **pad_attrs)
    return y if nchw_out else onnx_channels_last(ctx, y, rank, out)


def _conv_to_onnx(ctx, op):
    onnx_conv(ctx, ctx.input_name(0), 1, ctx.attrs, out=ctx.output_name(0))


get("conv").to_onnx = _conv_to_onnx


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext) and the convolution's
# two backward ops, with the forward's attributes:
#   conv_grad_input(dy, w, x) -> dx: each kernel tap's dy @ w[tap]^T added back into the strided
#       window positions of a zero padded input, then cropped (x gives the shape; not read);
#   conv_grad_kernel(x, dy, w) -> dw: each tap's window view of x contracted with dy over the
#       batch and output pixels (w gives the shape; not read).
# Both loop over taps only, like the forward reference.

def _conv_grad_input_infer(types, *, strides, dilations, pads, groups):
    dy, w, x = types
    y = _conv_infer([x, w], strides=strides, dilations=dilations, pads=pads, groups=groups)
    if dy.dtype != y.dtype or dy.rank != y.rank:
        raise ShapeError(f"conv_grad_input: cotangent {dy} does not match the convolution's output {y}")
    return x


def _conv_grad_kernel_infer(types, *, strides, dilations, pads, groups):
    x, dy, w = types
    y = _conv_infer([x, w], strides=strides, dilations=dilations, pads=pads, groups=groups)
    if dy.dtype != y.dtype or dy.rank != y.rank:
        raise ShapeError(f"conv_grad_kernel: cotangent {dy} does not match the convolution's output {y}")
    return w


def _conv_grad_geometry(x_shape, w_shape, strides, dilations, pads, bindings):
    nsp = len(x_shape) - 2
    strides, dilations, pads = spatial_attrs(nsp, strides, dilations, pads, "conv")
    pads_i = resolve_pads(pads, bindings, "conv")
    kernel = tuple(w_shape[:nsp])
    out = concrete_out(x_shape, kernel, strides, dilations, pads_i, "conv")
    return kernel, strides, dilations, pads_i, out


def _conv_grad_input(dy, w, x, *, strides, dilations, pads, groups, bindings=None):
    return _scatter_taps(dy, w, x.shape, strides, dilations, pads, groups, bindings)


def _scatter_taps(dy, w, x_shape, strides, dilations, pads, groups, bindings):
    """The adjoint of ``conv`` applied to ``dy``: each tap's ``dy @ w[tap]^T`` added into the
    window positions of a zero padded (N, *spatial, C) array of ``x_shape``, then cropped."""
    kernel, strides, dilations, pads_i, out = _conv_grad_geometry(x_shape, w.shape, strides, dilations, pads,
                                                                  bindings)
    n, c = x_shape[0], x_shape[-1]
    cg, out_ch = w.shape[-2], w.shape[-1]
    og = out_ch // groups
    rows = n * int(np.prod(out, dtype=np.int64))
    dx = np.zeros(tuple(x_shape), dtype=dy.dtype)
    d2 = dy.reshape(rows, out_ch)
    for tap, src, dst in tap_windows(x_shape[1:-1], pads_i, kernel, strides, dilations, out):
        if any(d.stop == d.start for d in dst[1:]):
            continue  # the tap reads padding only
        wt = w[tap].astype(dy.dtype, copy=False)
        if groups == 1:
            contrib = d2 @ wt.T
        elif cg == 1:
            contrib = np.einsum("rgj,gj->rg", d2.reshape(rows, groups, og), wt.reshape(groups, og))
        else:
            wg = wt.reshape(cg, groups, og).transpose(1, 0, 2)
            contrib = np.matmul(d2.reshape(rows, groups, og).transpose(1, 0, 2), wg.transpose(0, 2, 1))
            contrib = contrib.transpose(1, 0, 2).reshape(rows, c)
        dx[src] += contrib.reshape((n,) + out + (c,))[dst]
    return dx


def _conv_grad_kernel(x, dy, w, *, strides, dilations, pads, groups, bindings=None):
    kernel, strides, dilations, pads_i, out = _conv_grad_geometry(x.shape, w.shape, strides, dilations, pads,
                                                                  bindings)
    n, c = x.shape[0], x.shape[-1]
    cg, out_ch = w.shape[-2], w.shape[-1]
    og = out_ch // groups
    rows = n * int(np.prod(out, dtype=np.int64))
    x = x.astype(dy.dtype, copy=False)
    d2 = dy.reshape(rows, out_ch)
    dw = np.empty(w.shape, dtype=dy.dtype)
    for tap, v in tap_operands(x, pads_i, kernel, strides, dilations, out):
        a = np.ascontiguousarray(v).reshape(rows, c)
        if groups == 1:
            dw[tap] = a.T @ d2
        elif cg == 1:
            dw[tap] = np.einsum("rg,rgj->gj", a, d2.reshape(rows, groups, og)).reshape(1, out_ch)
        else:
            ag = a.reshape(rows, groups, cg).transpose(1, 2, 0)
            dg = np.matmul(ag, d2.reshape(rows, groups, og).transpose(1, 0, 2))  # (groups, cg, og)
            dw[tap] = dg.transpose(1, 0, 2).reshape(cg, out_ch)
    return dw


_CONV_GRAD_ATTRS = {"strides": None, "dilations": None, "pads": None, "groups": 1}
register(OpDef("conv_grad_input", _conv_grad_input_infer, _conv_grad_input, attrs=dict(_CONV_GRAD_ATTRS),
               num_inputs=3, fusion_kind="opaque", uses_dims=True, not_differentiable=True, training_only=True,
               doc="(dy, w, x) -> dx, the gradient of `conv` (same attributes) for its input; x only gives "
                   "the shape."))
register(OpDef("conv_grad_kernel", _conv_grad_kernel_infer, _conv_grad_kernel, attrs=dict(_CONV_GRAD_ATTRS),
               num_inputs=3, fusion_kind="opaque", uses_dims=True, not_differentiable=True, training_only=True,
               doc="(x, dy, w) -> dw, the gradient of `conv` (same attributes) for its kernel; w only gives "
                   "the shape."))


def _conv_vjp(ctx, dy):
    x, w = ctx.x
    a = ctx.attrs
    return [ctx.conv_grad_input(dy, w, x, **a) if ctx.needs[0] else None,
            ctx.conv_grad_kernel(x, dy, w, **a) if ctx.needs[1] else None]


get("conv").vjp = _conv_vjp


# ---------------------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facet for the native backend (graphc.backends.llvm):
# im2col GEMM for ordinary convolutions, a direct kernel for depthwise and grouped ones.

def _conv_lower(kb, op, x, w, *, out, strides, dilations, pads, groups):
    nsp = x.rank - 2
    s, d, p = spatial_attrs(nsp, strides, dilations, pads, "conv")
    kb.conv(x, w, out, strides=s, dilations=d, pads=p, groups=groups)


get("conv").lower = _conv_lower


# ---------------------------------------------------------------------------- native: gradients

def _plainly_grouped(w, groups) -> bool:
    """Grouped, but neither ordinary nor depthwise (those have their own gradient kernels)."""
    return groups != 1 and w.shape[-2] != 1


def _conv_grad_input_lower(kb, op, dy, w, x, *, out, strides, dilations, pads, groups):
    _emit_conv_adjoint(kb, dy, w, out, *spatial_attrs(x.rank - 2, strides, dilations, pads, "conv"), groups)


def _emit_conv_adjoint(kb, dy, w, out, s, d, p, groups) -> None:
    """The convolution's input gradient (also the transposed convolution) into ``out``."""
    if _plainly_grouped(w, groups):
        from graphc.backends.llvm.kernels.conv_grad_grouped import emit_grouped_conv_grad_input

        emit_grouped_conv_grad_input(kb, dy, w, out, strides=s, dilations=d, pads=p, groups=groups)
        return
    kb.conv_grad_input(dy, w, out, strides=s, dilations=d, pads=p, groups=groups)


def _conv_grad_kernel_lower(kb, op, x, dy, w, *, out, strides, dilations, pads, groups):
    s, d, p = spatial_attrs(x.rank - 2, strides, dilations, pads, "conv")
    if _plainly_grouped(w, groups):
        from graphc.backends.llvm.kernels.conv_grad_grouped import emit_grouped_conv_grad_kernel

        emit_grouped_conv_grad_kernel(kb, x, dy, out, strides=s, dilations=d, pads=p, groups=groups)
        return
    kb.conv_grad_kernel(x, dy, out, strides=s, dilations=d, pads=p, groups=groups)


get("conv_grad_input").lower = _conv_grad_input_lower
get("conv_grad_kernel").lower = _conv_grad_kernel_lower


# ---------------------------------------------------------------------------- transposed convolution
# ``conv_transpose(x, w)`` is the adjoint of ``conv`` with the same kernel and attributes: x has
# the convolution's output shape and the result its input shape, (N, *spatial, C) with
# ``spatial = (o-1)*s + (k-1)*d + 1 - before - after + output_padding`` (output_padding < stride
# picks among the input sizes that convolve to ``o``). The kernel is the convolution's,
# (*k, C/groups, O): for Keras's transposed layers that is the stored (*k, filters, in) as it is.
# Its gradients are a convolution (for x) and ``conv_grad_kernel`` (for w); natively it runs the
# convolution's input-gradient GEMM.

def _transpose_attrs(nsp: int, strides, dilations, pads, output_padding, what: str):
    strides, dilations, pads = spatial_attrs(nsp, strides, dilations, pads, what)
    if any(isinstance(p, str) for pair in pads for p in pair):
        raise ShapeError(f"{what}: pads must be integers, got {pads!r}")
    extra = (0,) * nsp if output_padding is None else tuple(output_padding)
    if len(extra) != nsp or not all(isinstance(e, (int, np.integer)) and 0 <= e < s
                                    for e, s in zip(extra, strides)):
        raise ShapeError(f"{what}: output_padding must be {nsp} non-negative integer(s), each below its stride, "
                         f"got {output_padding!r} with strides {strides}")
    return strides, dilations, pads, tuple(int(e) for e in extra)


def _conv_transpose_infer(types: list[TensorType], *, strides, dilations, pads, output_padding,
                          groups) -> TensorType:
    x, w = types
    require_float(x, "conv_transpose input")
    dtype = same_dtype(types, "conv_transpose input and kernel")
    if x.rank < 3:
        raise ShapeError(f"conv_transpose needs an input of rank >= 3 (batch, *spatial, channels), got shape "
                         f"{fmt_shape(x.shape)}")
    nsp = x.rank - 2
    if w.rank != x.rank or not all(isinstance(d, int) for d in w.shape):
        raise ShapeError(f"conv_transpose kernel must be concrete of rank {x.rank} (*kernel, out_channels/groups, "
                         f"in_channels) for an input of shape {fmt_shape(x.shape)}, got {fmt_shape(w.shape)}")
    strides, dilations, pads, extra = _transpose_attrs(nsp, strides, dilations, pads, output_padding,
                                                       "conv_transpose")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ShapeError(f"conv_transpose groups must be a positive integer, got {groups!r}")
    c = x.shape[-1]
    if isinstance(c, int) and c != w.shape[-1]:
        raise ShapeError(f"conv_transpose input has {c} channels but the kernel {fmt_shape(w.shape)} expects "
                         f"{w.shape[-1]} (its last axis)")
    if w.shape[-1] % groups:
        raise ShapeError(f"conv_transpose input channels {w.shape[-1]} are not divisible by groups={groups}")
    out: list[Dim] = []
    for axis, (o, k, s, d, (pb, pa), e) in enumerate(zip(x.shape[1:-1], w.shape[:nsp], strides, dilations, pads,
                                                          extra)):
        size = dims.add(dims.mul(dims.sub(o, 1), s), (k - 1) * d + 1 - pb - pa + e)
        if isinstance(size, int) and size < 1:
            raise ShapeError(f"conv_transpose: spatial axis {axis} of size {o} gives an empty output "
                             f"({size}) with kernel {k}, padding ({pb}, {pa})")
        out.append(size)
    return TensorType(dtype, (x.shape[0],) + tuple(out) + (w.shape[-2] * groups,))


def _conv_transpose(x: np.ndarray, w: np.ndarray, *, strides, dilations, pads, output_padding, groups,
                    bindings: Mapping[str, int] | None = None) -> np.ndarray:
    t = _conv_transpose_infer([TensorType(x.dtype.name, x.shape), TensorType(w.dtype.name, w.shape)],
                              strides=strides, dilations=dilations, pads=pads, output_padding=output_padding,
                              groups=groups)
    dtype = np.result_type(x.dtype, w.dtype)
    return _scatter_taps(x.astype(dtype, copy=False), w, t.shape, strides, dilations, pads, groups, bindings)


register(OpDef(
    "conv_transpose", _conv_transpose_infer, _conv_transpose,
    attrs={"strides": None, "dilations": None, "pads": None, "output_padding": None, "groups": 1},
    num_inputs=2, fusion_kind="opaque", uses_dims=True,
    doc="Transposed convolution, the adjoint of `conv` with the same kernel (*k, C/groups, O) and attributes: "
        "x (N, *o, O) -> (N, *spatial, C), spatial = (o-1)*strides + (k-1)*dilations + 1 - pads + "
        "output_padding (per axis, each below its stride; None = zeros)."))


def _conv_transpose_to_onnx(ctx, op):
    rank = ctx.input_type(0).rank
    nsp = rank - 2
    strides, dilations, pads, extra = _transpose_attrs(nsp, ctx.attrs["strides"], ctx.attrs["dilations"],
                                                       ctx.attrs["pads"], ctx.attrs["output_padding"],
                                                       "conv_transpose")
    kernel = ctx.input_type(1).shape[:nsp]
    perm = [nsp + 1, nsp, *range(nsp)]  # (*k, C/g, O) -> ONNX's (O, C/g, *k)
    w = ctx.derived(1, lambda k: np.ascontiguousarray(np.transpose(k, perm)), "iohw") \
        or ctx.transpose(ctx.input_name(1), perm)
    y = ctx.node("ConvTranspose", [onnx_channels_first(ctx, ctx.input_name(0), rank), w],
                 kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                 pads=[b for b, _ in pads] + [a for _, a in pads], output_padding=list(extra),
                 group=int(ctx.attrs["groups"]))
    onnx_channels_last(ctx, y, rank, ctx.output_name(0))


def _conv_transpose_vjp(ctx, dz):
    x, w = ctx.x
    a = {k: v for k, v in ctx.attrs.items() if k != "output_padding"}
    return [ctx.conv(dz, w, **a) if ctx.needs[0] else None,
            ctx.conv_grad_kernel(dz, x, w, **a) if ctx.needs[1] else None]


def _conv_transpose_lower(kb, op, x, w, *, out, strides, dilations, pads, output_padding, groups):
    s, d, p, _ = _transpose_attrs(x.rank - 2, strides, dilations, pads, output_padding, "conv_transpose")
    _emit_conv_adjoint(kb, x, w, out, s, d, p, groups)


get("conv_transpose").to_onnx = _conv_transpose_to_onnx
get("conv_transpose").vjp = _conv_transpose_vjp
get("conv_transpose").lower = _conv_transpose_lower


# ---------------------------------------------------------------------------- ONNX: gradients
# ``to_onnx`` facets of the convolution's backward ops (training-step exports). Both are plain
# ONNX convolutions, so onnxruntime runs them with its own kernels:
#   conv_grad_input: ConvTranspose (the adjoint of Conv with the same kernel) without padding,
#       which yields every position a window touches, cropped to the input's (see onnx_window_adjoint);
#   conv_grad_kernel: Conv with the batch and channel axes swapped, the cotangent as the kernel,
#       stride and dilation exchanged: tap t of the result correlates x at t*d + o*s with dy at o.

def onnx_window_adjoint(ctx, dy_nchw: str, w: str, kernel, strides, dilations, pads, groups: int,
                        like_shape, out=None) -> str:
    """The adjoint of a padded window op (Conv, pooling) applied to ``dy_nchw``, channels-last.

    ConvTranspose without padding gives the ``(o-1)*s + (k-1)*d + 1`` positions of the padded
    input the windows cover; the input's own positions are ``[before, before + n)`` of those. A
    stride can leave up to ``s - 1`` rows at the end that no window reads: zeros are appended
    there before the crop. ``like_shape`` is the input's (N, *spatial, C) shape, ints or free dims.
    """
    rank = len(like_shape)
    nsp = rank - 2
    full = ctx.node("ConvTranspose", [dy_nchw, w], kernel_shape=list(kernel), strides=list(strides),
                    dilations=list(dilations), group=int(groups))
    if any(s > 1 for s in strides):
        widen = ctx.ints([0] * rank + [0, 0, *[s - 1 for s in strides]])
        full = ctx.node("Pad", [full, widen, ctx.scalar(0.0, ctx.output_type(0).dtype)], mode="constant")
    starts = [b for b, _ in pads]
    ends = [dims.add(b, n) for b, n in zip(starts, like_shape[1:-1])]
    cropped = ctx.node("Slice", [full, ctx.shape(starts), ctx.shape(ends), ctx.ints(range(2, 2 + nsp))])
    return onnx_channels_last(ctx, cropped, rank, out)


def _conv_grad_input_to_onnx(ctx, op):
    rank = ctx.input_type(0).rank
    nsp = rank - 2
    strides, dilations, pads = spatial_attrs(nsp, ctx.attrs["strides"], ctx.attrs["dilations"], ctx.attrs["pads"],
                                             "conv")
    kernel = ctx.input_type(1).shape[:nsp]
    perm = [nsp + 1, nsp, *range(nsp)]  # (*k, C/g, O) -> ConvTranspose's (O, C/g, *k)
    w = ctx.derived(1, lambda k: np.ascontiguousarray(np.transpose(k, perm)), "iohw") \
        or ctx.transpose(ctx.input_name(1), perm)
    onnx_window_adjoint(ctx, onnx_channels_first(ctx, ctx.input_name(0), rank), w, kernel, strides, dilations, pads,
                        ctx.attrs["groups"], ctx.input_type(2).shape, ctx.output_name(0))


def _conv_grad_kernel_to_onnx(ctx, op):
    x_t, w_t = ctx.input_type(0), ctx.input_type(2)
    rank = x_t.rank
    nsp = rank - 2
    strides, dilations, pads = spatial_attrs(nsp, ctx.attrs["strides"], ctx.attrs["dilations"], ctx.attrs["pads"],
                                             "conv")
    groups = int(ctx.attrs["groups"])
    kernel, cg = w_t.shape[:nsp], w_t.shape[-2]
    n, spatial = x_t.shape[0], list(x_t.shape[1:-1])
    # x (N, *sp, C) -> (C/g, g*N, *sp): batch rows are a group's input channels, channels its samples
    xs = ctx.transpose(ctx.input_name(0), [rank - 1, 0, *range(1, rank - 1)])
    if groups > 1:
        xs = ctx.node("Reshape", [xs, ctx.shape([groups, cg, n, *spatial])])
        xs = ctx.transpose(xs, [1, 0, *range(2, rank + 1)])
        xs = ctx.node("Reshape", [xs, ctx.shape([cg, -1, *spatial])])
    if all(isinstance(p, int) for pair in pads for p in pair):
        pad_attrs = {"pads": [b for b, _ in pads] + [a for _, a in pads]}
    else:
        widen = ctx.shape([0, 0, *[b for b, _ in pads], 0, 0, *[a for _, a in pads]])
        xs = ctx.node("Pad", [xs, widen, ctx.scalar(0.0, x_t.dtype)], mode="constant")
        pad_attrs = {}
    dy = ctx.transpose(ctx.input_name(1), [rank - 1, 0, *range(1, rank - 1)])  # (O, N, *out): the kernel
    taps = ctx.node("Conv", [xs, dy], strides=list(dilations), dilations=list(strides), group=groups, **pad_attrs)
    # (C/g, O, *k') with k' >= k taps (the padded input may fit more): keep the kernel's
    taps = ctx.slice(taps, [0] * nsp, list(kernel), list(range(2, rank)))
    ctx.transpose(taps, [*range(2, rank), 0, 1], ctx.output_name(0))


get("conv_grad_input").to_onnx = _conv_grad_input_to_onnx
get("conv_grad_kernel").to_onnx = _conv_grad_kernel_to_onnx
