"""Recurrent layers: LSTM, GRU, SimpleRNN, and the RNN layer over LSTMCell, GRUCell,
SimpleRNNCell or StackedRNNCells; each cell's pass over a sequence is one op.

Constructor arguments, defaults, weight names, order, shapes and initializers are Keras 3's
(weights: ``kernel``, ``recurrent_kernel``, ``bias``; LSTM gate order i, f, c, o; GRU
``reset_after=True`` with a (2, 3U) bias). A sequence lowers to the ``lstm`` / ``gru`` /
``simple_rnn`` op of :mod:`graphc.ops.recurrent`, whose state outputs serve
``return_state``. ``initial_state=`` is a call argument, as in Keras. A stack of cells runs
as one op per cell (each cell's state is its own, so the stack equals its cells one after
the other).

Masks are Keras's: a masked step leaves the states as they were, and its output repeats the
previous one (zeros before the first kept step), or is zeros with ``zero_output_for_mask``
(which Bidirectional sets on its layers when they return sequences). ``dropout`` and
``recurrent_dropout`` act in training as in Keras's cells: one mask per sequence (drawn once,
the same at every step) on the inputs, and on the state feeding the recurrent kernel; with
``recurrent_dropout`` (or ``implementation=1``) each gate gets its own masks. Regularizers and
constraints are honoured in training. ``unroll`` gives the same numbers as the loop (graphc
always runs one loop), and needs a known number of timesteps, as Keras does. Not supported:
``stateful=True`` (pass the state with ``initial_state=`` and ``return_state=True``), and
recurrent dropout on the native trainer (its kernels take no such masks; the error says so).
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import activations, initializers, masking, nest
from graphc.frontend.layer import Layer
from graphc.frontend.lowering import LowerContext
from graphc.ir import dims
from graphc.ops.elementwise import UNARY
from graphc.ops.registry import ShapeError

__all__ = ["LSTM", "GRU", "SimpleRNN", "LSTMCell", "GRUCell", "SimpleRNNCell", "StackedRNNCells", "RNN"]

# Keras activation names that the recurrent ops spell differently.
_OP_ACTIVATION = {"swish": "silu", "exponential": "exp"}


def _op_activation(layer: str, what: str, name: str) -> str:
    """The recurrent ops' name for Keras activation ``name`` (ValueError if it has none)."""
    if name == "linear" or name in UNARY:
        return name
    if name in _OP_ACTIVATION:
        return _OP_ACTIVATION[name]
    raise ValueError(f"{layer}: {what} {name!r} is not supported in a recurrent layer; use one of "
                     f"linear, {', '.join(sorted(set(UNARY) | set(_OP_ACTIVATION)))}")


def _check_sequence_shape(kind: str, shape) -> None:
    if shape is None or len(shape) != 3:
        raise ShapeError(f"{kind} expects a 3-D input (batch, timesteps, features), got shape "
                         f"{None if shape is None else tuple(shape)}")
    if shape[-1] is None:
        raise ShapeError(f"the feature dimension of the input to {kind} must be known, got shape {tuple(shape)}")


def _sequence_shape(input_shape):
    if isinstance(input_shape, list) and len(input_shape) == 1 and isinstance(input_shape[0], tuple):
        return input_shape[0]
    return input_shape


def _sequence_mask(ctx: LowerContext, kind: str, mask, x: str) -> str | None:
    """The (batch, timesteps) mask of sequence ``x`` (Keras takes the first of a nested mask)."""
    if mask is None:
        return None
    mask = nest.flatten(mask)[0]
    if mask is None:
        return None
    shape, want = ctx.shape(mask), ctx.shape(x)[:2]
    if len(shape) != 2 or not all(dims.compatible(a, b) for a, b in zip(shape, want)):
        raise ShapeError(f"{kind}: the mask must have shape (batch, timesteps) = {tuple(want)}, got {tuple(shape)}")
    return mask


def _keep_scale(ctx: LowerContext, like: str, rate: float, seed) -> str:
    """Keras's dropout mask of ``like``'s shape: 1 / (1 - rate) where kept, 0 where dropped."""
    dtype = ctx.dtype(like)
    if rate >= 1.0:
        return ctx.mul(like, ctx.constant(np.zeros((), dtype=dtype), "zero"))
    kept = ctx.greater_equal(ctx.random_uniform_like(like, seed=seed),
                             ctx.constant(np.asarray(rate, dtype=dtype), "rate"))
    return ctx.where(kept, ctx.constant(np.asarray(1.0 / (1.0 - rate), dtype=dtype), "scale"),
                     ctx.constant(np.zeros((), dtype=dtype), "zero"))


def _later_seed(seed, k: int):
    return None if seed is None else int(seed) + k


class _Cell:
    """The weights and step of one recurrence, shared by a recurrent layer and its Keras cell.

    Subclasses give the op (``_op``), the number of gate blocks and the state names; the
    class using this mixin is also a Layer.
    """

    _op = ""
    _gates = 1
    _state_names: tuple[str, ...] = ("h",)
    _dropout_ends_at_one = True  # LSTM/GRU cells drop nothing at rate 1 (Keras's 0 < rate < 1)

    def _init_cell(self, units, *, activation, recurrent_activation, use_bias, kernel_initializer,
                   recurrent_initializer, bias_initializer, dropout, recurrent_dropout, seed, implementation,
                   weight_options: dict) -> None:
        kind = type(self).__name__
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"{kind} units must be a positive integer, got {units!r}")
        for what, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"{kind} {what} must be in [0, 1], got {rate}")
        if implementation not in (1, 2):
            raise ValueError(f"{kind} implementation must be 1 or 2, got {implementation!r}")
        self._set_weight_options(**weight_options)
        self.units = int(units)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        _op_activation(kind, "activation", self.activation)
        _op_activation(kind, "recurrent_activation", self.recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        # Keras's cells take per-gate dropout masks with implementation 1, which recurrent dropout forces
        self.implementation = 1 if self.recurrent_dropout else int(implementation)

    # ------------------------------------------------------------------ Keras's cell attributes
    @property
    def state_size(self):
        return [self.units] * len(self._state_names) if len(self._state_names) > 1 else self.units

    @property
    def output_size(self) -> int:
        return self.units

    # ------------------------------------------------------------------ weights
    def _build_cell(self, features: int) -> None:
        width = self._gates * self.units
        self.kernel = self.add_weight("kernel", (features, width), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, width),
                                                self.recurrent_initializer, regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint)
        self.bias = self.add_weight("bias", self._bias_shape(), self._bias_init(), regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def _bias_shape(self) -> tuple[int, ...]:
        return (self._gates * self.units,)

    def _bias_init(self):
        return self.bias_initializer

    def _cell_config(self) -> dict:
        return {"units": self.units, "activation": self.activation,
                "recurrent_activation": self.recurrent_activation, "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout, "seed": self.seed}

    # ------------------------------------------------------------------ lowering
    def _op_attrs(self) -> dict:
        kind = type(self).__name__
        return {"activation": _op_activation(kind, "activation", self.activation),
                "recurrent_activation": _op_activation(kind, "recurrent_activation", self.recurrent_activation)}

    def _drops(self, rate: float, training: bool) -> bool:
        return training and rate > 0.0 and (rate < 1.0 or not self._dropout_ends_at_one)

    def _sequence(self, ctx: LowerContext, x: str, states: list[str], mask: str | None, *, go_backwards: bool,
                  return_sequences: bool, zero_output_for_mask: bool, training: bool) -> list[str]:
        """Emit this cell's pass over sequence ``x``: [output, *final states]."""
        kind = type(self).__name__
        dtype = self.kernel.dtype

        def as_compute(v: str) -> str:
            return v if ctx.dtype(v) == dtype else ctx.cast(v, dtype=dtype)

        x = as_compute(x)
        states = [as_compute(s) for s in states]
        n = len(self._state_names)
        if states and len(states) != n:
            raise ShapeError(f"{kind} initial_state must be {n} tensor(s) [{', '.join(self._state_names)}], "
                             f"got {len(states)}")
        kernel = ctx.param(self.kernel)
        if self._drops(self.dropout, training):
            x, kernel = self._input_dropout(ctx, x, kernel)
        if self.use_bias:
            bias = ctx.param(self.bias)
        else:
            bias = ctx.constant(np.zeros(self._bias_shape(), dtype=dtype), f"{self.name}/no_bias")
        attrs = {**self._op_attrs(), "go_backwards": go_backwards, "return_sequences": return_sequences}
        extra = []
        if mask is not None:
            extra.append(masking.as_float(ctx, mask, dtype))
            attrs.update(masked=True, zero_output_for_mask=zero_output_for_mask)
        if self._drops(self.recurrent_dropout, training):
            extra.append(self._recurrent_multipliers(ctx, x))
            attrs["recurrent_dropout"] = True
        outs = ctx.emit(self._op, x, kernel, ctx.param(self.recurrent_kernel), bias, *states, *extra, **attrs)
        return list(outs)

    def _input_dropout(self, ctx: LowerContext, x: str, kernel: str) -> tuple[str, str]:
        """Inputs times one dropout mask per sequence; per gate with implementation 1, where the
        gates' projections are made here and the op multiplies them by an identity kernel."""
        first = ctx.slice(x, axis=1, start=0, stop=1)  # (batch, 1, features): one mask for every step
        if self.implementation != 1 or self._gates == 1:
            return ctx.mul(x, _keep_scale(ctx, first, self.dropout, self.seed)), kernel
        u = self.units
        parts = []
        for g in range(self._gates):
            dropped = ctx.mul(x, _keep_scale(ctx, first, self.dropout, _later_seed(self.seed, g)))
            parts.append(ctx.matmul(dropped, ctx.slice(kernel, axis=1, start=g * u, stop=(g + 1) * u)))
        width = self._gates * u
        identity = ctx.constant(np.eye(width, dtype=self.kernel.dtype), f"{self.name}/gate_projections")
        return ctx.concat(*parts, axis=-1), identity

    def _recurrent_multipliers(self, ctx: LowerContext, x: str) -> str:
        """(batch, gates * units): one recurrent dropout mask per gate block, drawn once per sequence."""
        corner = ctx.slice(ctx.slice(x, axis=1, start=0, stop=1), axis=2, start=0, stop=1)  # (batch, 1, 1)
        width = self._gates * self.units
        like = ctx.mul(ctx.squeeze(corner, axis=2), ctx.constant(np.zeros((1, width), dtype=ctx.dtype(x)), "zeros"))
        return _keep_scale(ctx, like, self.recurrent_dropout, _later_seed(self.seed, self._gates))


# ---------------------------------------------------------------------------- sequence layers
class _Recurrent(_Cell, Layer):
    """What LSTM, GRU and SimpleRNN share: sequence handling, call arguments, masks, checks."""

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0,
                 seed=None, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, implementation=2, **kwargs):
        super().__init__(**kwargs)
        kind = type(self).__name__
        if stateful:
            raise ValueError(f"{kind} {self.name!r}: stateful=True is not supported by graphc; "
                             "pass the state explicitly with initial_state= and return_state=True")
        self._init_cell(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
                        kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                        bias_initializer=bias_initializer, dropout=dropout, recurrent_dropout=recurrent_dropout,
                        seed=seed, implementation=implementation, weight_options=dict(
                            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                            bias_constraint=bias_constraint))
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = False
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)

    def check_inputs(self, inputs):
        flat = nest.flatten(inputs)
        if len(flat) != 1:
            raise ShapeError(f"{type(self).__name__} takes one sequence tensor (pass states with "
                             f"initial_state=), got {len(flat)} tensors")
        _check_sequence_shape(type(self).__name__, flat[0].shape)

    def build(self, input_shape, initial_state_shape=None):
        input_shape = _sequence_shape(input_shape)
        try:
            _check_sequence_shape(type(self).__name__, input_shape)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) cannot be built for input "
                             f"shape {input_shape}: {exc}") from None
        self._build_cell(int(input_shape[-1]))
        self.built = True

    def lower(self, ctx: LowerContext, inputs, initial_state=None, mask=None, training=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}.call got unexpected argument(s) {sorted(kwargs)}")
        flat = nest.flatten(inputs)
        if len(flat) != 1:
            raise ShapeError(f"{type(self).__name__} takes one sequence tensor, got {len(flat)}")
        x = flat[0]
        _check_unroll(type(self).__name__, self.unroll, ctx, x)
        states = [] if initial_state is None else nest.flatten(initial_state)
        outs = self._sequence(ctx, x, states, _sequence_mask(ctx, type(self).__name__, mask, x),
                              go_backwards=self.go_backwards, return_sequences=self.return_sequences,
                              zero_output_for_mask=self.zero_output_for_mask,
                              training=ctx.training if training is None else bool(training))
        return outs if self.return_state else outs[0]

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        return _output_mask(mask, self.return_sequences, self.return_state, len(self._state_names))

    def get_config(self):
        return {**super().get_config(), **self._cell_config(),
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "go_backwards": self.go_backwards, "stateful": self.stateful, "unroll": self.unroll,
                "zero_output_for_mask": self.zero_output_for_mask}


def _check_unroll(kind: str, unroll: bool, ctx: LowerContext, x: str) -> None:
    if unroll and not isinstance(ctx.shape(x)[1], int):
        raise ShapeError(f"{kind}: cannot unroll a RNN if the time dimension is undefined; give the Input a "
                         "fixed number of timesteps, or use unroll=False")


def _output_mask(mask, return_sequences: bool, return_state: bool, n_states: int):
    """Keras's RNN.compute_mask: the input mask on a returned sequence, none on states."""
    mask = nest.flatten(mask)[0] if mask is not None else None
    out = mask if return_sequences else None
    return [out] + [None] * n_states if return_state else out


class LSTM(_Recurrent):
    """Long short-term memory over a (batch, timesteps, features) sequence (Keras's LSTM).

    Returns the last output (batch, units), or the whole sequence with
    ``return_sequences``; with ``return_state`` also the final ``h`` and ``c``.
    """

    _op = "lstm"
    _gates = 4
    _state_names = ("h", "c")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", unit_forget_bias=True, kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, use_cudnn="auto", **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                         bias_constraint=bias_constraint, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, seed=seed, return_sequences=return_sequences,
                         return_state=return_state, go_backwards=go_backwards, stateful=stateful,
                         unroll=unroll, **kwargs)
        self.use_cudnn = _check_use_cudnn("LSTM", use_cudnn)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_init(self):
        return _lstm_bias_init(self)

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


def _check_use_cudnn(kind: str, value):
    """``use_cudnn`` picks an implementation of the same numbers: 'auto' and False are graphc's
    loop; True demands cuDNN, which graphc (like Keras on a machine without it) cannot give."""
    if value not in ("auto", True, False):
        raise ValueError(f"{kind} use_cudnn must be 'auto', True or False, got {value!r}")
    if value is True:
        raise ValueError(f"{kind}: use_cudnn=True demands cuDNN, which graphc does not use; pass use_cudnn='auto' "
                         "(the same numbers)")
    return value


def _lstm_bias_init(cell):
    """Keras's LSTM bias initializer: with ``unit_forget_bias`` the forget gate's bias starts at
    one, the others from ``bias_initializer``."""
    if not cell.unit_forget_bias:
        return cell.bias_initializer
    base, units = cell.bias_initializer, cell.units

    def init(shape, dtype="float32"):
        return np.concatenate([base((units,), dtype=dtype), np.ones((units,), dtype=dtype),
                               base((2 * units,), dtype=dtype)])

    return init


class _ResetAfter:
    """What a GRU and its cell add to their base: ``reset_after``, which sets the bias's layout (Keras 3's
    (2, 3U): the recurrent bias apart, added before the reset gate multiplies) and the op's attribute."""

    reset_after: bool
    units: int

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _op_attrs(self):
        return {**super()._op_attrs(), "reset_after": self.reset_after}

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


class GRU(_ResetAfter, _Recurrent):
    """Gated recurrent unit (Keras's GRU; ``reset_after=True`` is Keras 3's layout).

    Returns the last output (batch, units), or the whole sequence with
    ``return_sequences``; with ``return_state`` also the final state.
    """

    _op = "gru"
    _gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0,
                 seed=None, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, reset_after=True, use_cudnn="auto", **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                         bias_constraint=bias_constraint, dropout=dropout,
                         recurrent_dropout=recurrent_dropout, seed=seed, return_sequences=return_sequences,
                         return_state=return_state, go_backwards=go_backwards, stateful=stateful,
                         unroll=unroll, **kwargs)
        self.use_cudnn = _check_use_cudnn("GRU", use_cudnn)
        self.reset_after = bool(reset_after)


class SimpleRNN(_Recurrent):
    """Fully connected RNN: ``h_t = activation(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel)``."""

    _op = "simple_rnn"
    _gates = 1
    _dropout_ends_at_one = False  # Keras's SimpleRNNCell drops everything at rate 1

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, seed=None, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation="sigmoid", use_bias=use_bias,
                         kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                         recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
                         dropout=dropout, recurrent_dropout=recurrent_dropout, seed=seed,
                         return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll, **kwargs)

    def _op_attrs(self):
        attrs = super()._op_attrs()
        del attrs["recurrent_activation"]
        return attrs

    def get_config(self):
        config = super().get_config()
        del config["recurrent_activation"], config["seed"]  # Keras's SimpleRNN config has neither
        return config


# ---------------------------------------------------------------------------- cells
class _CellLayer(_Cell, Layer):
    """A Keras RNN cell: the weights and step of one recurrence, run over a sequence by ``RNN``.

    Called on its own, ``cell(inputs, states)`` computes one step: ``(output, new_states)``.
    """

    def __init__(self, units, *, activation, recurrent_activation, use_bias, kernel_initializer,
                 recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
                 bias_regularizer, kernel_constraint, recurrent_constraint, bias_constraint, dropout,
                 recurrent_dropout, seed, **kwargs):
        implementation = kwargs.pop("implementation", 2)
        super().__init__(**kwargs)
        self._init_cell(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
                        kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                        bias_initializer=bias_initializer, dropout=dropout, recurrent_dropout=recurrent_dropout,
                        seed=seed, implementation=implementation, weight_options=dict(
                            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                            bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
                            recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint))

    def build(self, input_shape):
        if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], tuple):
            input_shape = input_shape[0]  # cell(inputs, states): the inputs' shape
        if input_shape is None or len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} {self.name!r} is built for a step input (batch, features) "
                             f"with known features, got shape {input_shape}")
        self._build_cell(int(input_shape[-1]))
        self.built = True

    def lower(self, ctx: LowerContext, inputs, states=None, training=None, **kwargs):
        """One step: ``inputs`` (batch, features) and the states -> [output, [new states]]."""
        if kwargs:
            raise TypeError(f"{type(self).__name__}.call got unexpected argument(s) {sorted(kwargs)}")
        if states is None and isinstance(inputs, (list, tuple)) and len(inputs) == 2:
            inputs, states = inputs
        x = ctx.expand_dims(nest.flatten(inputs)[0], axis=1)
        outs = self._sequence(ctx, x, nest.flatten(states) if states is not None else [], None, go_backwards=False,
                              return_sequences=False, zero_output_for_mask=False,
                              training=ctx.training if training is None else bool(training))
        return [outs[0], list(outs[1:])]

    def get_config(self):
        return {**super().get_config(), **self._cell_config()}


class LSTMCell(_CellLayer):
    """The cell of an LSTM (Keras's LSTMCell): states [h, c]."""

    _op = "lstm"
    _gates = 4
    _state_names = ("h", "c")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
                         kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                         bias_constraint=bias_constraint, dropout=dropout, recurrent_dropout=recurrent_dropout,
                         seed=seed, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_init(self):
        return _lstm_bias_init(self)

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class GRUCell(_ResetAfter, _CellLayer):
    """The cell of a GRU (Keras's GRUCell): state h."""

    _op = "gru"
    _gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0,
                 reset_after=True, seed=None, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
                         kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                         bias_constraint=bias_constraint, dropout=dropout, recurrent_dropout=recurrent_dropout,
                         seed=seed, **kwargs)
        self.reset_after = bool(reset_after)


class SimpleRNNCell(_CellLayer):
    """The cell of a SimpleRNN (Keras's SimpleRNNCell): state h."""

    _op = "simple_rnn"
    _gates = 1
    _dropout_ends_at_one = False

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None, **kwargs):
        super().__init__(units, activation=activation, recurrent_activation="sigmoid", use_bias=use_bias,
                         kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
                         kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                         bias_constraint=bias_constraint, dropout=dropout, recurrent_dropout=recurrent_dropout,
                         seed=seed, **kwargs)

    def _op_attrs(self):
        attrs = super()._op_attrs()
        del attrs["recurrent_activation"]
        return attrs

    def get_config(self):
        config = super().get_config()
        del config["recurrent_activation"]
        return config


class StackedRNNCells(Layer):
    """Cells applied one after the other at each step (Keras's StackedRNNCells): each cell reads
    the previous one's output and keeps its own states; the last cell's output is the stack's."""

    def __init__(self, cells, **kwargs):
        super().__init__(**kwargs)
        cells = list(cells) if isinstance(cells, (list, tuple)) else [cells]
        for cell in cells:
            if not isinstance(cell, _CellLayer):
                raise ValueError(f"StackedRNNCells {self.name!r}: graphc runs LSTMCell, GRUCell and SimpleRNNCell "
                                 f"cells, got {type(cell).__name__}: {cell!r}")
        if not cells:
            raise ValueError(f"StackedRNNCells {self.name!r} needs at least one cell")
        self.cells = cells

    def _sublayers(self) -> list[Layer]:
        return list(self.cells)

    @property
    def state_size(self) -> list:
        return [c.state_size for c in self.cells]

    @property
    def output_size(self) -> int:
        return self.cells[-1].output_size

    def build(self, input_shape):
        if isinstance(input_shape, list) and input_shape and isinstance(input_shape[0], tuple):
            input_shape = input_shape[0]
        for cell in self.cells:
            if not cell.built:
                cell.build(input_shape)
            input_shape = (input_shape[0], cell.output_size)
        self.built = True

    def lower(self, ctx: LowerContext, inputs, **kwargs):
        raise ShapeError(f"StackedRNNCells {self.name!r} runs inside an RNN layer: RNN(StackedRNNCells([...]))")

    def get_config(self):
        return {**super().get_config(),
                "cells": [{"class_name": type(c).__name__, "config": c.get_config()} for c in self.cells]}


class RNN(Layer):
    """A recurrent layer over a cell (Keras's RNN): ``RNN(LSTMCell(8))``, or a list of cells
    (a StackedRNNCells). Returns the last output or the sequence, and the states with
    ``return_state`` (for a stack of several cells, one entry per cell: a list for an
    LSTMCell's [h, c], the state itself for the others)."""

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, zero_output_for_mask=False, **kwargs):
        if isinstance(cell, (list, tuple)):
            cell = StackedRNNCells(list(cell))
        super().__init__(**kwargs)
        if not isinstance(cell, (_CellLayer, StackedRNNCells)):
            raise ValueError(f"RNN {self.name!r}: graphc runs the cells LSTMCell, GRUCell, SimpleRNNCell and "
                             f"StackedRNNCells of them, got {type(cell).__name__}: {cell!r}")
        if stateful:
            raise ValueError(f"RNN {self.name!r}: stateful=True is not supported by graphc; pass the state "
                             "explicitly with initial_state= and return_state=True")
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = False
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)

    def _sublayers(self) -> list[Layer]:
        return [self.cell]

    def _cells(self) -> list[_CellLayer]:
        return list(self.cell.cells) if isinstance(self.cell, StackedRNNCells) else [self.cell]

    @property
    def state_size(self) -> list:
        size = self.cell.state_size
        return list(size) if isinstance(size, list) else [size]

    def check_inputs(self, inputs):
        flat = nest.flatten(inputs)
        if len(flat) != 1:
            raise ShapeError(f"RNN takes one sequence tensor (pass states with initial_state=), got "
                             f"{len(flat)} tensors")
        _check_sequence_shape("RNN", flat[0].shape)

    def build(self, sequences_shape, initial_state_shape=None):
        sequences_shape = _sequence_shape(sequences_shape)
        try:
            _check_sequence_shape("RNN", sequences_shape)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} (RNN) cannot be built for input shape {sequences_shape}: "
                             f"{exc}") from None
        if not self.cell.built:
            self.cell.build((sequences_shape[0],) + tuple(sequences_shape[2:]))
        self.built = True

    def _initial_states(self, initial_state, cells: list[_CellLayer]) -> list[list[str]]:
        if initial_state is None:
            return [[] for _ in cells]
        counts = [len(c._state_names) for c in cells]
        given = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(cells) > 1 and len(given) == len(cells) and all(
                len(nest.flatten(g)) == n for g, n in zip(given, counts)):
            return [nest.flatten(g) for g in given]  # one entry per cell, as Keras's stack takes them
        flat = nest.flatten(given)
        if len(flat) != sum(counts):
            raise ShapeError(f"RNN {self.name!r}: initial_state must hold {sum(counts)} tensor(s) "
                             f"({', '.join(f'{type(c).__name__}: {n}' for c, n in zip(cells, counts))}), "
                             f"got {len(flat)}")
        out, start = [], 0
        for n in counts:
            out.append(flat[start:start + n])
            start += n
        return out

    def lower(self, ctx: LowerContext, inputs, initial_state=None, mask=None, training=None, **kwargs):
        if kwargs:
            raise TypeError(f"RNN.call got unexpected argument(s) {sorted(kwargs)}")
        flat = nest.flatten(inputs)
        if len(flat) != 1:
            raise ShapeError(f"RNN takes one sequence tensor, got {len(flat)}")
        seq = flat[0]
        _check_unroll("RNN", self.unroll, ctx, seq)
        cells = self._cells()
        mask = _sequence_mask(ctx, "RNN", mask, seq)
        training = ctx.training if training is None else bool(training)
        finals = []
        for k, (cell, states) in enumerate(zip(cells, self._initial_states(initial_state, cells))):
            last = k == len(cells) - 1
            if k == 1 and self.go_backwards and mask is not None:
                mask = ctx.emit("reverse_time", mask)  # later cells read the sequence in processing order
            outs = cell._sequence(ctx, seq, states, mask, go_backwards=self.go_backwards and k == 0,
                                  return_sequences=self.return_sequences or not last,
                                  zero_output_for_mask=self.zero_output_for_mask and last, training=training)
            seq = outs[0]
            finals.append(list(outs[1:]))
        if not self.return_state:
            return seq
        if isinstance(self.cell, StackedRNNCells) and len(cells) > 1:
            # Keras's structure: a list of states for a cell of several (LSTMCell), else the state
            return [seq, *(states if len(states) > 1 else states[0] for states in finals)]
        return [seq, *finals[0]]

    def lower_mask(self, ctx: LowerContext, inputs, mask=None):
        return _output_mask(mask, self.return_sequences, self.return_state, len(self.state_size))

    def get_config(self):
        return {**super().get_config(), "return_sequences": self.return_sequences,
                "return_state": self.return_state, "go_backwards": self.go_backwards, "stateful": self.stateful,
                "unroll": self.unroll, "zero_output_for_mask": self.zero_output_for_mask,
                "cell": {"class_name": type(self.cell).__name__, "config": self.cell.get_config()}}
