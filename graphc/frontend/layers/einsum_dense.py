"""EinsumDense: a dense layer whose product is an einsum equation (``"abc,cde->abde"``).

Keras computes ``einsum(equation, inputs, kernel)``. graphc lowers the equation to the ops
its backends run fast: the input and the kernel are transposed so that the letters they
share and keep (``batch`` letters) lead, the letters only the input keeps (``rows``) come
next and the contracted letters come last; both are reshaped to matrices and multiplied
(a plain GEMM against the kernel when no letter is shared, which the native backend packs
once), then reshaped and transposed to the output's order. Letters only in the input are
summed first. Equations this scheme cannot express — a letter repeated in one operand
(a diagonal), an output letter that neither operand has, a kernel letter that neither
the input nor the output has — are refused with the equation named, as are Keras's
forms other than ``ab,bc->ac``, ``...b,bc->...c`` and ``ab...,bc->ac...``.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass

import numpy as np

from graphc.frontend import activations, initializers
from graphc.frontend.layer import Layer
from graphc.frontend.layers.core import single
from graphc.frontend.lowering import LowerContext
from graphc.ir import dims
from graphc.ops.registry import ShapeError

__all__ = ["EinsumDense"]


@dataclass(frozen=True)
class EinsumSpec:
    """An equation's letters for one input rank, ellipsis spelled out as fresh letters."""

    equation: str
    inputs: str
    kernel: str
    output: str
    left_elided: int  # leading input/output axes an ellipsis stands for
    right_elided: int  # trailing ones


_FORMS = (
    (re.compile(r"^([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$"), None),
    (re.compile(r"^\.\.\.([a-zA-Z]+),([a-zA-Z]+)->\.\.\.([a-zA-Z]+)$"), "left"),
    (re.compile(r"^([a-zA-Z]{2,})\.\.\.,([a-zA-Z]+)->([a-zA-Z]+)\.\.\.$"), "right"),
)


def split_equation(equation: str) -> tuple[str, str, str, str | None]:
    """(input, kernel, output, ellipsis side) of one of Keras's three equation forms."""
    if not isinstance(equation, str):
        raise ValueError(f"EinsumDense equation must be a string, got {equation!r}")
    compact = equation.replace(" ", "")
    for pattern, side in _FORMS:
        match = pattern.match(compact)
        if match:
            x, w, y = match.groups()
            for part, what in ((x, "input"), (w, "kernel"), (y, "output")):
                if len(set(part)) != len(part):
                    raise ValueError(f"EinsumDense equation {equation!r}: the {what} spec {part!r} repeats a letter "
                                     "(a diagonal), which graphc cannot lower to a matrix product")
            for letter in y:
                if letter not in x and letter not in w:
                    raise ValueError(f"EinsumDense equation {equation!r}: output letter {letter!r} is in neither the "
                                     "input nor the kernel")
            for letter in w:
                if letter not in x and letter not in y:
                    raise ValueError(f"EinsumDense equation {equation!r}: kernel letter {letter!r} is in neither the "
                                     "input nor the output")
            return x, w, y, side
    raise ValueError(f"EinsumDense equation {equation!r} is not supported: equations must be of the form "
                     "[X],[Y]->[Z], ...[X],[Y]->...[Z] or [X]...,[Y]->[Z]...")


def analyze(equation: str, rank: int) -> EinsumSpec:
    """The equation's letters for an input of ``rank`` axes."""
    x, w, y, side = split_equation(equation)
    elided = rank - len(x)
    if elided < 0 or (side is None and elided):
        raise ShapeError(f"EinsumDense equation {equation!r} needs an input of rank "
                         f"{len(x) if side is None else f'>= {len(x)}'}, got rank {rank}")
    fresh = [c for c in string.ascii_letters if c not in x + w + y][:elided]
    extra = "".join(fresh)
    if side == "left":
        return EinsumSpec(equation, extra + x, w, extra + y, elided, 0)
    if side == "right":
        return EinsumSpec(equation, x + extra, w, y + extra, 0, elided)
    return EinsumSpec(equation, x, w, y, 0, 0)


def full_output_shape(spec: EinsumSpec, input_shape, partial) -> list:
    """Keras's full output shape: the input's batch dim, the partial ``output_shape`` and the
    dims an ellipsis stands for (None where neither says)."""
    partial = list(partial)
    input_shape = list(input_shape)
    if spec.left_elided:
        full = input_shape[:spec.left_elided] + partial
    elif spec.right_elided:
        full = input_shape[:1] + partial + input_shape[len(input_shape) - spec.right_elided:]
    else:
        full = input_shape[:1] + partial
    if len(full) != len(spec.output):
        raise ShapeError(f"EinsumDense equation {spec.equation!r} has {len(spec.output)} output axes, but "
                         f"output_shape {tuple(partial)} gives {len(full)} with the batch dimension")
    return full


def weight_shapes(spec: EinsumSpec, input_shape, partial, bias_axes) -> tuple[tuple, tuple | None, list, list]:
    """(kernel shape, bias shape or None, kernel input axes, kernel output axes), as Keras builds them."""
    out = full_output_shape(spec, input_shape, partial)
    in_at = {c: input_shape[i] for i, c in enumerate(spec.inputs)}
    out_at = {c: out[i] for i, c in enumerate(spec.output)}
    for c, d in in_at.items():
        if c in out_at and out_at[c] is not None and d is not None and out_at[c] != d:
            raise ShapeError(f"EinsumDense equation {spec.equation!r}: input and output_shape disagree on axis "
                             f"{c!r} ({d} != {out_at[c]})")
    kernel, input_axes, output_axes = [], [], []
    for i, c in enumerate(spec.kernel):
        d = out_at[c] if c in out_at else in_at[c]
        if c in out_at and d is None:
            d = in_at.get(c)
        if d is None:
            raise ShapeError(f"EinsumDense equation {spec.equation!r}: the size of kernel axis {c!r} is unknown; "
                             "give it in output_shape or in the input shape")
        kernel.append(int(d))
        (output_axes if c in out_at else input_axes).append(i)
    bias = None
    if bias_axes:
        for c in bias_axes:
            if c not in spec.output:
                raise ShapeError(f"EinsumDense bias axis {c!r} is not in the output spec of {spec.equation!r}")
        first = min(spec.output.index(c) for c in bias_axes)
        sizes = []
        for c in spec.output[first:]:
            d = out_at[c] if out_at[c] is not None else in_at.get(c)
            if c in bias_axes and d is None:
                raise ShapeError(f"EinsumDense equation {spec.equation!r}: the size of bias axis {c!r} is unknown")
            sizes.append(int(d) if c in bias_axes else 1)
        bias = tuple(sizes)
    return tuple(kernel), bias, input_axes, output_axes


def _fan_initializer(init, input_axes: list, output_axes: list):
    """Keras's EinsumDense gives variance-scaling initializers the kernel's input and output
    axes; the draws are independent, so drawing a (fan_in, fan_out) matrix and reshaping it
    gives the same distribution."""
    if not isinstance(init, initializers.VarianceScaling):
        return init

    def draw(shape, dtype="float32"):
        fan_in = math.prod(shape[i] for i in input_axes)
        fan_out = math.prod(shape[i] for i in output_axes)
        return init((fan_in, fan_out), dtype=dtype).reshape(shape)

    return draw


def _permute(ctx: LowerContext, x: str, order: str, want: str) -> str:
    """``x`` (axes named by ``order``) with its axes in the order ``want``."""
    if order == want:
        return x
    return ctx.transpose(x, perm=tuple(order.index(c) for c in want))


def lower_einsum(ctx: LowerContext, spec: EinsumSpec, x: str, kernel: str, bias: str | None = None) -> str:
    """``einsum(spec, x, kernel) + bias`` as transposes, reshapes, one (batched) matmul and an add.

    ``bias`` has Keras's bias shape (it broadcasts against the output's trailing axes). When
    it spans exactly the kernel's output letters, in the output's order, it is added to the
    product's columns before the final reshape, where the optimizer fuses it into the GEMM.
    """
    x_spec = spec.inputs
    summed = [c for c in x_spec if c not in spec.kernel and c not in spec.output]
    if summed:
        x = ctx.reduce_sum(x, axes=tuple(x_spec.index(c) for c in summed), keepdims=False)
        x_spec = "".join(c for c in x_spec if c not in summed)
    batch = "".join(c for c in spec.output if c in x_spec and c in spec.kernel)
    rows = "".join(c for c in x_spec if c in spec.output and c not in spec.kernel)
    contracted = "".join(c for c in spec.kernel if c in x_spec and c not in spec.output)
    cols = "".join(c for c in spec.kernel if c in spec.output and c not in x_spec)
    x_shape = dict(zip(x_spec, ctx.shape(x)))
    w_shape = dict(zip(spec.kernel, ctx.shape(kernel)))
    k = int(np.prod([w_shape[c] for c in contracted], dtype=np.int64))
    n = int(np.prod([w_shape[c] for c in cols], dtype=np.int64))
    batch_dims = tuple(w_shape[c] for c in batch)
    row_dims = tuple(x_shape[c] for c in rows)

    a = _permute(ctx, x, x_spec, batch + rows + contracted)
    b = _permute(ctx, kernel, spec.kernel, batch + contracted + cols)
    if batch:
        # one matrix per batch letter: (*batch, rows, K) @ (*batch, K, N)
        a_shape = batch_dims + (dims.product(list(row_dims)),) + (k,)
    else:
        # the rows stay separate axes: (*rows, K) @ (K, N), a product with a weight matrix
        a_shape = row_dims + (k,)
    if tuple(ctx.shape(a)) != a_shape:
        a = ctx.reshape(a, shape=a_shape)
    if tuple(ctx.shape(b)) != batch_dims + (k, n):
        b = ctx.reshape(b, shape=batch_dims + (k, n))
    y = ctx.matmul(a, b)
    bias_shape = tuple(ctx.shape(bias)) if bias is not None else ()
    on_columns = bias is not None and batch + rows + cols == spec.output and cols \
        and bias_shape == tuple(w_shape[c] for c in cols)
    if on_columns:
        y = ctx.bias_add(y, bias if len(bias_shape) == 1 else ctx.reshape(bias, shape=(n,)))
    y_shape = batch_dims + row_dims + tuple(w_shape[c] for c in cols)
    if tuple(ctx.shape(y)) != y_shape:
        y = ctx.reshape(y, shape=y_shape)
    y = _permute(ctx, y, batch + rows + cols, spec.output)
    if bias is not None and not on_columns:
        y = ctx.bias_add(y, bias) if len(bias_shape) == 1 else ctx.add(y, bias)
    return y


class EinsumDense(Layer):
    """``activation(einsum(equation, inputs, kernel) + bias)`` with Keras's weights and shapes."""

    def __init__(self, equation, output_shape, activation=None, bias_axes=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, lora_rank=None, lora_alpha=None, gptq_unpacked_column_size=None,
                 quantization_config=None, **kwargs):
        super().__init__(**kwargs)
        for option, value in (("lora_rank", lora_rank), ("lora_alpha", lora_alpha),
                              ("gptq_unpacked_column_size", gptq_unpacked_column_size),
                              ("quantization_config", quantization_config)):
            if value is not None:
                raise ValueError(f"EinsumDense {self.name!r}: {option}={value!r} is not supported by graphc")
        _, _, out_letters, _ = split_equation(equation)
        self.equation = equation
        self.partial_output_shape = (output_shape,) if isinstance(output_shape, (int, np.integer)) \
            else tuple(output_shape)
        self.partial_output_shape = tuple(None if d is None else int(d) for d in self.partial_output_shape)
        if bias_axes is not None:
            if not isinstance(bias_axes, str) or any(c not in out_letters for c in bias_axes):
                raise ValueError(f"EinsumDense {self.name!r}: bias_axes={bias_axes!r} must be letters of the "
                                 f"output spec {out_letters!r} of {equation!r}")
        self.bias_axes = bias_axes
        self.activation = activations.get(activation)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self._set_weight_options(kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                                 kernel_constraint=kernel_constraint, bias_constraint=bias_constraint)

    def check_inputs(self, inputs):
        x = single(inputs)
        if not x.dtype.startswith("float"):
            raise ShapeError(f"EinsumDense needs a float input, got {x.dtype}")
        spec = analyze(self.equation, len(x.shape))
        for i, c in enumerate(spec.inputs):
            if c in spec.kernel and x.shape[i] is None:
                raise ShapeError(f"EinsumDense equation {self.equation!r}: input axis {i} ({c!r}) meets the kernel "
                                 f"and must have a known size, got shape {x.shape}")

    def build(self, input_shape):
        spec = analyze(self.equation, len(input_shape))
        kernel_shape, bias_shape, input_axes, output_axes = weight_shapes(
            spec, input_shape, self.partial_output_shape, self.bias_axes)
        self.kernel = self.add_weight("kernel", kernel_shape,
                                      _fan_initializer(self.kernel_initializer, input_axes, output_axes),
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        self.bias = self.add_weight("bias", bias_shape, self.bias_initializer, regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if bias_shape is not None else None

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        x = single(inputs)
        spec = analyze(self.equation, ctx.rank(x))
        bias = ctx.param(self.bias) if self.bias is not None else None
        y = lower_einsum(ctx, spec, x, ctx.param(self.kernel), bias)
        return activations.lower(ctx, self.activation, y)

    def get_config(self):
        return {**super().get_config(), "output_shape": list(self.partial_output_shape), "equation": self.equation,
                "activation": self.activation, "bias_axes": self.bias_axes,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer)}
