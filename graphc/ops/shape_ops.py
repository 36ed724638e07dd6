"""Data-movement ops: reshape, transpose, concat, slice, pad, resize, expand_dims/squeeze, gather.

``reshape`` targets may contain ``-1`` (inferred) and symbolic dims (evaluated from the
bindings of the free dimensions at run time), so a reshape can keep a batch or sequence
dimension free.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from graphc.ir import dims
from graphc.ir.types import TensorType, is_int
from graphc.ops.common import fmt_shape, norm_axis, require_float, same_dtype
from graphc.ops.registry import REQUIRED, OpDef, ShapeError, get, register


def infer_reshape(in_shape, target) -> tuple:
    """The output shape of reshaping ``in_shape`` to ``target`` (``-1`` resolved)."""
    target = tuple(target)
    if sum(1 for d in target if d == -1) > 1:
        raise ShapeError(f"reshape target {fmt_shape(target)} has more than one -1")
    for d in target:
        if isinstance(d, int) and d < -1:
            raise ShapeError(f"reshape target {fmt_shape(target)} has a negative dimension")
    known = [d for d in target if d != -1]
    in_static = int(np.prod([d for d in in_shape if isinstance(d, int)], dtype=np.int64))
    out_static = int(np.prod([d for d in known if isinstance(d, int)], dtype=np.int64))
    in_syms = Counter(d for d in in_shape if isinstance(d, str))
    out_syms = Counter(d for d in known if isinstance(d, str))
    if -1 not in target:
        if not in_syms and not out_syms and in_static != out_static:
            raise ShapeError(f"cannot reshape {fmt_shape(in_shape)} ({in_static} elements) "
                             f"to {fmt_shape(target)} ({out_static} elements)")
        return target
    if not out_syms - in_syms:
        rest = in_syms - out_syms
        if out_static == 0 or in_static % out_static:
            if not rest:
                raise ShapeError(f"cannot reshape {fmt_shape(in_shape)} to {fmt_shape(target)}")
            inferred = dims.floordiv(dims.product(list(rest.elements()) + [in_static]), out_static or 1)
        else:
            inferred = dims.product(list(rest.elements()) + [in_static // out_static])
    else:
        inferred = dims.floordiv(dims.product(in_shape), dims.product(known))  # type: ignore[arg-type]
    return tuple(inferred if d == -1 else d for d in target)


def _reshape_infer(types, *, shape):
    return TensorType(types[0].dtype, infer_reshape(types[0].shape, shape))


def _reshape(x, *, shape, bindings=None):
    target = tuple(dims.evaluate(d, bindings or {}) if isinstance(d, str) else d for d in shape)
    try:
        return x.reshape(target)
    except ValueError:
        raise ShapeError(f"cannot reshape array of shape {x.shape} to {target}") from None


register(OpDef("reshape", _reshape_infer, _reshape, attrs={"shape": REQUIRED}, num_inputs=1,
               fusion_kind="injective", uses_dims=True,
               doc="Reshape; target entries are ints, -1 (inferred) or symbolic dims."))


def _transpose_infer(types, *, perm):
    x = types[0]
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"perm {perm} is not a permutation of the {x.rank} axes")
    return TensorType(x.dtype, tuple(x.shape[p] for p in perm))


register(OpDef("transpose", _transpose_infer, lambda x, *, perm: np.transpose(x, perm),
               attrs={"perm": REQUIRED}, num_inputs=1, fusion_kind="injective",
               doc="Permute axes."))


def _concat_infer(types, *, axis):
    dtype = same_dtype(types, "concatenated tensors")
    rank = types[0].rank
    if any(t.rank != rank for t in types):
        raise ShapeError("concatenated tensors have different ranks: "
                         + ", ".join(fmt_shape(t.shape) for t in types))
    ax = norm_axis(axis, rank)
    out = list(types[0].shape)
    for t in types[1:]:
        for i, (a, b) in enumerate(zip(out, t.shape)):
            if i == ax:
                continue
            if not dims.compatible(a, b):
                raise ShapeError(f"concatenation on axis {axis} needs matching shapes except on that "
                                 "axis, got " + ", ".join(fmt_shape(t.shape) for t in types))
            out[i] = dims.unify(a, b)
    size = types[0].shape[ax]
    for t in types[1:]:
        size = dims.add(size, t.shape[ax])
    out[ax] = size
    return TensorType(dtype, tuple(out))


register(OpDef("concat", _concat_infer, lambda *xs, axis: np.concatenate(xs, axis=axis),
               attrs={"axis": -1}, num_inputs=None, fusion_kind="injective",
               doc="Concatenate along one axis."))


def _slice_infer(types, *, axis, start, stop, step):
    x = types[0]
    ax = norm_axis(axis, x.rank)
    n = x.shape[ax]
    if step < 1:
        raise ShapeError(f"slice step must be positive, got {step}")
    if isinstance(n, int):
        length = len(range(*slice(start, stop, step).indices(n)))
    elif start >= 0 and stop is not None and stop >= 0:
        length = dims.ceildiv(stop - start, step) if stop > start else 0
    else:
        stop_d = n if stop is None else (dims.add(n, stop) if stop < 0 else stop)
        start_d = dims.add(n, start) if start < 0 else start
        length = dims.ceildiv(dims.sub(stop_d, start_d), step)
    shape = list(x.shape)
    shape[ax] = length
    return TensorType(x.dtype, tuple(shape))


def _slice(x, *, axis, start, stop, step):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop, step)
    return x[tuple(index)]


register(OpDef("slice", _slice_infer, _slice, attrs={"axis": REQUIRED, "start": 0, "stop": None, "step": 1},
               num_inputs=1, fusion_kind="injective", doc="x[start:stop:step] along one axis."))


def _expand_dims_infer(types, *, axis):
    x = types[0]
    ax = norm_axis(axis, x.rank + 1)
    shape = list(x.shape)
    shape.insert(ax, 1)
    return TensorType(x.dtype, tuple(shape))


register(OpDef("expand_dims", _expand_dims_infer, lambda x, *, axis: np.expand_dims(x, axis),
               attrs={"axis": REQUIRED}, num_inputs=1, fusion_kind="injective",
               doc="Insert a unit axis."))


def _squeeze_infer(types, *, axis):
    x = types[0]
    ax = norm_axis(axis, x.rank)
    if x.shape[ax] != 1 and isinstance(x.shape[ax], int):
        raise ShapeError(f"cannot squeeze axis {axis} of size {x.shape[ax]}")
    return TensorType(x.dtype, x.shape[:ax] + x.shape[ax + 1:])


register(OpDef("squeeze", _squeeze_infer, lambda x, *, axis: np.squeeze(x, axis),
               attrs={"axis": REQUIRED}, num_inputs=1, fusion_kind="injective",
               doc="Remove a unit axis."))


def _gather_infer(types, **_):
    table, ids = types
    if not is_int(ids.dtype):
        raise ShapeError(f"gather indices must be integers, got {ids.dtype}")
    return TensorType(table.dtype, ids.shape + table.shape[1:])


def _gather(table, ids):
    n = table.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)].flat[0]
        raise IndexError(f"index {int(bad)} is out of range for a table of {n} rows")
    return np.take(table, ids, axis=0)


register(OpDef("gather", _gather_infer, _gather, num_inputs=2, fusion_kind="injective",
               doc="Rows of a table (axis 0) picked by integer ids: the embedding lookup."))


def pads_of(pads, rank: int) -> tuple[tuple[int, int], ...]:
    """``pads`` as ``rank`` validated (before, after) pairs of non-negative ints."""
    try:
        pairs = tuple(tuple(p) for p in pads)
    except TypeError:
        pairs = ()
    if len(pairs) != rank or any(len(p) != 2 for p in pairs):
        raise ShapeError(f"pad: pads must be {rank} (before, after) pair(s), one per axis, got {pads!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for p in pairs for v in p):
        raise ShapeError(f"pad: pads must be non-negative integers, got {pads!r}")
    return tuple((int(b), int(a)) for b, a in pairs)


def _pad_infer(types, *, pads, value):
    x = types[0]
    pairs = pads_of(pads, x.rank)
    return TensorType(x.dtype, tuple(dims.add(d, b + a) for d, (b, a) in zip(x.shape, pairs)))


def _pad(x, *, pads, value):
    return np.pad(x, pads_of(pads, x.ndim), mode="constant", constant_values=np.asarray(value, dtype=x.dtype))


register(OpDef("pad", _pad_infer, _pad, attrs={"pads": REQUIRED, "value": 0.0}, num_inputs=1,
               fusion_kind="injective",
               doc="Constant padding: `pads` holds one (before, after) pair of non-negative ints per axis "
                   "(free dims grow by them), filled with `value`."))


# ``resize``: PyTorch's ``interpolate`` with ``align_corners=False`` (what Keras's torch backend runs
# for ``ops.image.resize`` and ``UpSampling2D(interpolation="bilinear")``), separable over ``axes``.
# Output position o of an axis of n_in -> n_out reads, with ``scale = n_in / n_out`` in float32:
#   nearest ("nearest-exact"): index min(floor((o + 0.5) * scale), n_in - 1);
#   linear: real = max(scale * (o + 0.5) - 0.5, 0), i0 = min(floor(real), n_in - 1),
#           i1 = i0 + (i0 < n_in - 1), lam = real - i0: (1 - lam) * x[i0] + lam * x[i1].
# ``size`` entries may be free-dim expressions (``h*2``): tables are computed once dims are bound.
RESIZE_MODES = ("nearest", "linear")


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """The ``nearest-exact`` source index of each output position (float32 arithmetic, as PyTorch)."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two source indices and the weight of the second (float32)."""
    scale = np.float32(n_in) / np.float32(n_out)
    real = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5),
                      np.float32(0.0))
    first = np.minimum(real.astype(np.int64), n_in - 1)
    lam = np.clip(real - first.astype(np.float32), np.float32(0.0), np.float32(1.0))
    return first, first + (first < n_in - 1), lam.astype(np.float32)


def resize_axes(axes, size, rank: int) -> list[tuple[int, object]]:
    """(axis, output size) pairs, axes normalized, validated."""
    axes, sizes = tuple(axes), tuple(size)
    if len(axes) != len(sizes) or not axes:
        raise ShapeError(f"resize: axes {axes} and size {sizes} must be non-empty and of the same length")
    out = [(norm_axis(a, rank), d) for a, d in zip(axes, sizes)]
    if len({a for a, _ in out}) != len(out):
        raise ShapeError(f"resize: axes {axes} repeat an axis")
    for _, d in out:
        if not (isinstance(d, str) or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1)):
            raise ShapeError(f"resize: size must hold positive integers or dimension expressions, got {sizes}")
    return out


def _resize_infer(types, *, axes, size, mode):
    x = types[0]
    if mode not in RESIZE_MODES:
        raise ShapeError(f"resize: mode must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "linear":
        require_float(x, "linear resize input")
    shape = list(x.shape)
    for a, d in resize_axes(axes, size, x.rank):
        shape[a] = int(d) if not isinstance(d, str) else d
    return TensorType(x.dtype, tuple(shape))


def _resize(x, *, axes, size, mode, bindings=None):
    pairs = resize_axes(axes, size, x.ndim)
    for a, d in sorted(pairs, reverse=True):  # the innermost axis first, as PyTorch nests them
        n_in, n_out = x.shape[a], dims.evaluate(d, bindings or {})
        if n_in == n_out:
            continue
        if mode == "nearest":
            x = np.take(x, nearest_indices(n_in, n_out), axis=a)
            continue
        first, second, lam = linear_weights(n_in, n_out)
        shape = [1] * x.ndim
        shape[a] = n_out
        x = np.take(x, first, axis=a) * (1 - lam).astype(x.dtype).reshape(shape) \
            + np.take(x, second, axis=a) * lam.astype(x.dtype).reshape(shape)
    return np.ascontiguousarray(x)


register(OpDef("resize", _resize_infer, _resize, attrs={"axes": REQUIRED, "size": REQUIRED, "mode": "linear"},
               num_inputs=1, fusion_kind="injective", uses_dims=True,
               doc="PyTorch's interpolate (align_corners=False) of `axes` to `size` (ints or dimension "
                   "expressions): mode 'nearest' (nearest-exact) or 'linear' (bilinear over two axes)."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext).

def _reshape_to_onnx(ctx, op):
    """Reshape with a constant target where possible: a symbolic entry equal to the input's dim at
    the same position is copied (``0``), a single remaining one is inferred (``-1``); any others are
    computed from the graph input shapes (Shape/Gather/arithmetic)."""
    in_shape = ctx.input_type(0).shape
    target = list(ctx.attrs["shape"])
    zero = any(d == 0 for d in target if isinstance(d, int))  # ONNX reads 0 as "copy" unless allowzero
    entries = [0 if isinstance(d, str) and not zero and i < len(in_shape) and in_shape[i] == d else d
               for i, d in enumerate(target)]
    symbolic = [i for i, d in enumerate(entries) if isinstance(d, str)]
    if len(symbolic) == 1 and -1 not in entries:
        entries[symbolic[0]] = -1
    if zero:
        ctx.require_opset(14, "a reshape to a zero-sized dimension")
    ctx.node("Reshape", [ctx.input_name(0), ctx.shape(entries)], ctx.output_name(0),
             allowzero=1 if zero else None)


def _transpose_to_onnx(ctx, op):
    ctx.transpose(ctx.input_name(0), ctx.attrs["perm"], ctx.output_name(0))


def _concat_to_onnx(ctx, op):
    ctx.node("Concat", list(op.inputs), ctx.output_name(0), axis=ctx.attrs["axis"] % ctx.input_type(0).rank)


def _slice_to_onnx(ctx, op):
    a = ctx.attrs
    stop = 2 ** 63 - 1 if a["stop"] is None else a["stop"]
    axis = a["axis"] % ctx.input_type(0).rank
    ctx.slice(ctx.input_name(0), [a["start"]], [stop], [axis], [a["step"]], ctx.output_name(0))


def _expand_dims_to_onnx(ctx, op):
    ctx.unsqueeze(ctx.input_name(0), [ctx.attrs["axis"] % ctx.output_type(0).rank], ctx.output_name(0))


def _squeeze_to_onnx(ctx, op):
    ctx.squeeze(ctx.input_name(0), [ctx.attrs["axis"] % ctx.input_type(0).rank], ctx.output_name(0))


def _gather_to_onnx(ctx, op):
    ctx.node("Gather", [ctx.input_name(0), ctx.input_name(1)], ctx.output_name(0), axis=0)


def _pad_to_onnx(ctx, op):
    pairs = pads_of(ctx.attrs["pads"], ctx.input_type(0).rank)
    fill = ctx.scalar(ctx.attrs["value"], ctx.input_type(0).dtype)
    ctx.node("Pad", [ctx.input_name(0), ctx.ints([b for b, _ in pairs] + [a for _, a in pairs]), fill],
             ctx.output_name(0), mode="constant")


def _onnx_resize_node(ctx, x: str, sizes, linear: bool, out=None) -> str:
    extra = {} if linear else {"nearest_mode": "round_prefer_ceil"}
    return ctx.node("Resize", [x, "", "", ctx.shape(list(sizes))], out, mode="linear" if linear else "nearest",
                    coordinate_transformation_mode="half_pixel", **extra)


def _onnx_resizes_at_once(rank: int, axes: set[int]) -> bool:
    """Whether onnxruntime's linear Resize takes these axes in one node (it takes 2-D and 3-D inputs, 4-D
    ones with the outer two or outer and inner scales 1, 5-D ones with the outer two scales 1)."""
    if rank <= 3:
        return True
    if rank == 4:
        return axes <= {1, 2} or axes <= {2, 3}
    return rank == 5 and axes <= {2, 3, 4}


def _resize_to_onnx(ctx, op):
    """ONNX Resize with ``half_pixel`` coordinates (onnxruntime clamps like PyTorch); nearest rounds
    half up, which is PyTorch's nearest-exact. A linear resize onnxruntime cannot take in one node runs
    axis by axis, innermost first (as the reference), each on a 3-D (outer, axis, inner) view."""
    x_type, y_type = ctx.input_type(0), ctx.output_type(0)
    linear = ctx.attrs["mode"] == "linear"
    pairs = resize_axes(ctx.attrs["axes"], ctx.attrs["size"], x_type.rank)
    if not linear or _onnx_resizes_at_once(x_type.rank, {a for a, _ in pairs}):
        _onnx_resize_node(ctx, ctx.input_name(0), y_type.shape, linear, ctx.output_name(0))
        return
    x, shape = ctx.input_name(0), list(x_type.shape)
    pairs = sorted(pairs, reverse=True)
    for i, (a, size) in enumerate(pairs):
        outer, inner = dims.product(shape[:a]), dims.product(shape[a + 1:])
        flat = ctx.node("Reshape", [x, ctx.shape([outer, shape[a], inner])])
        resized = _onnx_resize_node(ctx, flat, [outer, size, inner], True)
        shape[a] = size
        x = ctx.node("Reshape", [resized, ctx.shape(shape)], ctx.output_name(0) if i == len(pairs) - 1 else None)


get("reshape").to_onnx = _reshape_to_onnx
get("transpose").to_onnx = _transpose_to_onnx
get("concat").to_onnx = _concat_to_onnx
get("slice").to_onnx = _slice_to_onnx
get("expand_dims").to_onnx = _expand_dims_to_onnx
get("squeeze").to_onnx = _squeeze_to_onnx
get("gather").to_onnx = _gather_to_onnx
get("pad").to_onnx = _pad_to_onnx
get("resize").to_onnx = _resize_to_onnx


# ---------------------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm).
# Reshapes are free (the output aliases the input's buffer); the rest are strided copies.

def _alias_lower(kb, op, x, *, out, **_):
    kb.alias(out, x)


def _transpose_lower(kb, op, x, *, out, perm):
    kb.transpose(out, x, perm)


def _concat_lower(kb, op, *xs, out, axis):
    kb.concat(out, list(xs), axis)


def _slice_lower(kb, op, x, *, out, axis, start, stop, step):
    kb.slice(out, x, axis, start, step)


def _gather_lower(kb, op, table, ids, *, out):
    kb.gather(out, table, ids)


def _pad_lower(kb, op, x, *, out, pads, value):
    from graphc.backends.llvm.kernels.movement import emit_pad

    emit_pad(kb, out, x, pads_of(pads, x.rank), value)


def _resize_lower(kb, op, x, *, out, axes, size, mode):
    from graphc.backends.llvm.kernels.movement import emit_resize

    emit_resize(kb, out, x, [a for a, _ in resize_axes(axes, size, x.rank)], mode)


for _name in ("reshape", "expand_dims", "squeeze"):
    get(_name).lower = _alias_lower
get("transpose").lower = _transpose_lower
get("concat").lower = _concat_lower
get("slice").lower = _slice_lower
get("gather").lower = _gather_lower
get("pad").lower = _pad_lower
get("resize").lower = _resize_lower


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext), and the two backward
# ops of this family: ``slice_grad`` (a slice's cotangent put back in place, zeros elsewhere)
# and ``gather_grad`` (the rows' cotangents summed into a table: the embedding gradient).

def _slice_grad_infer(types, *, axis, start, stop, step):
    x, dy = types
    want = _slice_infer([x], axis=axis, start=start, stop=stop, step=step)
    if dy.dtype != x.dtype or dy.rank != x.rank:
        raise ShapeError(f"slice_grad: cotangent {dy} does not match the slice {want} of {x}")
    return x


def _slice_grad(x, dy, *, axis, start, stop, step):
    out = np.zeros_like(x)
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop, step)
    out[tuple(index)] = dy
    return out


register(OpDef("slice_grad", _slice_grad_infer, _slice_grad,
               attrs={"axis": REQUIRED, "start": 0, "stop": None, "step": 1}, num_inputs=2,
               fusion_kind="injective",
               doc="(x, dy) -> zeros of x's shape with dy at x[start:stop:step] along `axis` "
                   "(x's values are not read): the gradient of `slice`."))


def _gather_grad_infer(types, *, num_rows):
    ids, dy = types
    if not is_int(ids.dtype):
        raise ShapeError(f"gather_grad indices must be integers, got {ids.dtype}")
    if not isinstance(num_rows, int) or num_rows < 1:
        raise ShapeError(f"gather_grad num_rows must be a positive integer, got {num_rows!r}")
    if dy.rank < ids.rank or not all(dims.compatible(a, b) for a, b in zip(dy.shape, ids.shape)):
        raise ShapeError(f"gather_grad: cotangent {dy} does not start with the ids' shape {fmt_shape(ids.shape)}")
    return TensorType(dy.dtype, (num_rows,) + dy.shape[ids.rank:])


def _gather_grad(ids, dy, *, num_rows):
    row = dy.shape[ids.ndim:]
    flat_ids = ids.reshape(-1).astype(np.int64)
    flat = dy.reshape((flat_ids.size,) + row)
    out = np.zeros((num_rows,) + row, dtype=dy.dtype)
    if flat_ids.size:
        order = np.argsort(flat_ids, kind="stable")
        sorted_ids = flat_ids[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        out[sorted_ids[starts]] = np.add.reduceat(flat[order], starts, axis=0)
    return out


register(OpDef("gather_grad", _gather_grad_infer, _gather_grad, attrs={"num_rows": None}, num_inputs=2,
               fusion_kind="opaque", not_differentiable=True,
               doc="(ids, dy) -> (num_rows, ...): row r is the sum of dy over the positions whose id is r "
                   "(the gradient of `gather` for its table)."))


def _reshape_vjp(ctx, dy):
    return [ctx.reshape(dy, shape=ctx.shape(ctx.x[0]))]


def _transpose_vjp(ctx, dy):
    perm = ctx.attrs["perm"]
    inverse = tuple(perm.index(i) for i in range(len(perm)))
    return [ctx.transpose(dy, perm=inverse)]


def _concat_vjp(ctx, dy):
    rank = ctx.rank(dy)
    axis = ctx.attrs["axis"] % rank
    out, start = [], 0
    for x, need in zip(ctx.x, ctx.needs):
        size = ctx.shape(x)[axis]
        if not isinstance(size, int) or not isinstance(start, int):
            raise ShapeError(f"the gradient of a concatenation along axis {axis} needs concrete sizes on that "
                             f"axis, got {fmt_shape(ctx.shape(x))}")
        out.append(ctx.slice(dy, axis=axis, start=start, stop=start + size) if need else None)
        start += size
    return out


def _slice_vjp(ctx, dy):
    a = ctx.attrs
    return [ctx.slice_grad(ctx.x[0], dy, axis=a["axis"], start=a["start"], stop=a["stop"], step=a["step"])]


def _slice_grad_vjp(ctx, ddx):
    a = ctx.attrs
    return [None, ctx.slice(ddx, axis=a["axis"], start=a["start"], stop=a["stop"], step=a["step"])]


def _pad_vjp(ctx, dy):
    """The cotangent's interior: one slice per padded axis (``stop`` counted from the end, so a
    free dim needs no value), then a free reshape back to x's exact (symbolic) shape."""
    x = ctx.x[0]
    dx = dy
    for axis, (before, after) in enumerate(pads_of(ctx.attrs["pads"], ctx.rank(x))):
        if before or after:
            dx = ctx.slice(dx, axis=axis, start=before, stop=-after if after else None)
    if ctx.shape(dx) != ctx.shape(x):
        dx = ctx.reshape(dx, shape=ctx.shape(x))
    return [dx]


def _integer_factor(n_in, n_out) -> int | None:
    """``s`` when ``n_out == n_in * s`` for every binding of the free dims (checked at probe points)."""
    names = sorted(dims.symbols(n_in) | dims.symbols(n_out))
    ratios = set()
    for seed in (7, 101, 1009):
        binding = {n: seed + 13 * i for i, n in enumerate(names)}
        i, o = dims.evaluate(n_in, binding), dims.evaluate(n_out, binding)
        if i <= 0 or o % i:
            return None
        ratios.add(o // i)
    return ratios.pop() if len(ratios) == 1 else None


def _resize_adjoint_tables(ctx, g, axis: int, n_in: int, n_out: int, mode: str) -> str:
    """The adjoint along an axis of known sizes: the cotangent scattered back through the tables."""
    rank = ctx.rank(g)
    perm = (axis,) + tuple(a for a in range(rank) if a != axis)
    front = ctx.transpose(g, perm=perm) if axis else g
    if mode == "nearest":
        back = ctx.gather_grad(ctx.constant(nearest_indices(n_in, n_out).astype(np.int32), "resize_index"), front,
                               num_rows=n_in)
    else:
        first, second, lam = linear_weights(n_in, n_out)
        column = (n_out,) + (1,) * (rank - 1)
        dtype = ctx.dtype(g)
        parts = [ctx.gather_grad(ctx.constant(ids.astype(np.int32), "resize_index"),
                                 ctx.mul(front, ctx.constant(w.astype(dtype).reshape(column), "resize_weight")),
                                 num_rows=n_in)
                 for ids, w in ((first, 1 - lam), (second, lam))]
        back = ctx.add(*parts)
    return ctx.transpose(back, perm=tuple(perm.index(a) for a in range(rank))) if axis else back


def _resize_adjoint_factor(ctx, g, axis: int, n, factor: int, mode: str) -> str:
    """The adjoint of upsampling a free axis ``factor`` times. Output ``factor*k + r`` blends x[k] with a
    neighbour at the fixed offset ``d_r = (r + 0.5)/factor - 0.5`` (previous for d_r < 0, next for
    d_r > 0, clamped at the edges); each phase's cotangent goes back to both."""
    shape = list(ctx.shape(g))
    split = ctx.reshape(g, shape=tuple(shape[:axis] + [n, factor] + shape[axis + 1:]))
    if mode == "nearest":
        return ctx.reduce_sum(split, axes=(axis + 1,))
    rank = len(shape)
    dx, to_previous, to_next = [], [], []
    for r in range(factor):
        g_r = ctx.squeeze(ctx.slice(split, axis=axis + 1, start=r, stop=r + 1), axis=axis + 1)
        d = (r + 0.5) / factor - 0.5
        if d == 0:
            dx.append(g_r)
            continue
        dx.append(ctx.mul(g_r, ctx.scalar(1.0 - abs(d))))
        (to_previous if d < 0 else to_next).append(ctx.mul(g_r, ctx.scalar(abs(d))))
    # neighbours are windows of x with its edges repeated: (x[0], x..., x[n-1]) [0:n] and [2:n+2]
    edged = []
    for parts, where in ((to_previous, (0, 2)), (to_next, (2, 0))):
        if parts:
            pads = [(0, 0)] * rank
            pads[axis] = where
            edged.append(ctx.pad(parts[0] if len(parts) == 1 else ctx.add_n(*parts), pads=tuple(pads)))
    if edged:
        e = edged[0] if len(edged) == 1 else ctx.add(*edged)
        middle = ctx.slice(e, axis=axis, start=1, stop=-1)
        dx += [middle, ctx.slice_grad(middle, ctx.slice(e, axis=axis, start=0, stop=1), axis=axis, start=0, stop=1),
               ctx.slice_grad(middle, ctx.slice(e, axis=axis, start=-1), axis=axis, start=-1)]
    return dx[0] if len(dx) == 1 else ctx.add_n(*dx)


def _resize_vjp(ctx, dy):
    x = ctx.x[0]
    mode = ctx.attrs["mode"]
    g = dy
    for axis, _ in resize_axes(ctx.attrs["axes"], ctx.attrs["size"], ctx.rank(x)):
        n_in, n_out = ctx.shape(x)[axis], ctx.shape(g)[axis]
        if n_in == n_out:
            continue
        if isinstance(n_in, int) and isinstance(n_out, int):
            g = _resize_adjoint_tables(ctx, g, axis, n_in, n_out, mode)
            continue
        factor = _integer_factor(n_in, n_out)
        if factor is None:
            raise ShapeError(f"the gradient of resize needs known sizes or an integer factor along axis {axis}, "
                             f"got {n_in} -> {n_out}")
        g = _resize_adjoint_factor(ctx, g, axis, n_in, factor, mode)
    return [ctx.match(g, x)]


def _gather_vjp(ctx, dy):
    table, ids = ctx.x
    rows = ctx.shape(table)[0]
    if not isinstance(rows, int):
        raise ShapeError(f"the gradient of gather needs a table with a concrete number of rows, got "
                         f"{fmt_shape(ctx.shape(table))}")
    return [ctx.gather_grad(ids, dy, num_rows=rows), None]


get("reshape").vjp = _reshape_vjp
get("transpose").vjp = _transpose_vjp
get("concat").vjp = _concat_vjp
get("slice").vjp = _slice_vjp
get("slice_grad").vjp = _slice_grad_vjp
get("expand_dims").vjp = lambda ctx, dy: [ctx.squeeze(dy, axis=ctx.attrs["axis"])]
get("squeeze").vjp = lambda ctx, dy: [ctx.expand_dims(dy, axis=ctx.attrs["axis"] % ctx.rank(ctx.x[0]))]
get("gather").vjp = _gather_vjp
get("pad").vjp = _pad_vjp
get("resize").vjp = _resize_vjp


# ---------------------------------------------------------------------------- ONNX (training ops)
# ``to_onnx(ctx, op)`` facets of the backward ops: both scatter the cotangent into zeros.

def _slice_grad_to_onnx(ctx, op):
    """The positions ``slice`` picked are found by slicing an arange the same way (which handles
    negative and open bounds exactly as the forward op); dy is scattered there into zeros."""
    x, dy = ctx.input_name(0), ctx.input_name(1)
    a = ctx.attrs
    rank = ctx.input_type(0).rank
    axis = a["axis"] % rank
    shape = ctx.shape_of(x)
    n = ctx.squeeze(ctx.node("Gather", [shape, ctx.ints([axis])], axis=0), [0])
    positions = ctx.node("Range", [ctx.scalar(0, "int64"), n, ctx.scalar(1, "int64")])
    stop = 2 ** 63 - 1 if a["stop"] is None else a["stop"]
    picked = ctx.slice(positions, [a["start"]], [stop], [0], [a["step"]])
    along = ctx.node("Reshape", [picked, ctx.ints([-1 if i == axis else 1 for i in range(rank)])])
    index = ctx.node("Expand", [along, ctx.shape_of(dy)])
    zeros = ctx.filled(shape, 0, ctx.input_type(0).dtype)
    ctx.node("ScatterElements", [zeros, index, dy], ctx.output_name(0), axis=axis)


def _gather_grad_to_onnx(ctx, op):
    ctx.require_opset(16, "ScatterND with reduction='add'")
    ids, dy = ctx.input_type(0), ctx.input_type(1)
    row = list(dy.shape[ids.rank:])
    zeros = ctx.filled(ctx.shape([ctx.attrs["num_rows"], *row]), 0, dy.dtype)
    flat_ids = ctx.node("Reshape", [ctx.cast(ctx.input_name(0), "int64"), ctx.ints([-1, 1])])
    updates = ctx.node("Reshape", [ctx.input_name(1), ctx.shape([-1, *row])])
    ctx.node("ScatterND", [zeros, flat_ids, updates], ctx.output_name(0), reduction="add")


get("slice_grad").to_onnx = _slice_grad_to_onnx
get("gather_grad").to_onnx = _gather_grad_to_onnx


# ---------------------------------------------------------------------------- native: training ops

def _slice_grad_lower(kb, op, x, dy, *, out, axis, start, stop, step):
    kb.slice_scatter(out, dy, axis, start, step)


def _gather_grad_lower(kb, op, ids, dy, *, out, num_rows):
    kb.scatter_add_rows(out, ids, dy)


get("slice_grad").lower = _slice_grad_lower
get("gather_grad").lower = _gather_grad_lower
