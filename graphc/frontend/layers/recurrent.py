"""Recurrent layers: LSTM, GRU and SimpleRNN, each lowered to one sequence op.

Constructor arguments, defaults, weight names, order, shapes and initializers are Keras 3's
(weights: ``kernel``, ``recurrent_kernel``, ``bias``; LSTM gate order i, f, c, o; GRU
``reset_after=True`` with a (2, 3U) bias). A layer lowers to the ``lstm`` / ``gru`` /
``simple_rnn`` op of :mod:`graphc.ops.recurrent`, whose state outputs serve
``return_state``. ``initial_state=`` is a call argument, as in Keras.

Regularizers and constraints are honoured in training. Not supported: ``stateful=True``,
masks (each raises a ValueError saying so). ``dropout`` and ``recurrent_dropout`` are kept in the config; they
have no effect at inference, and the graph always computes the inference form. ``unroll``
is accepted and ignored: the op is one loop either way.
"""

from __future__ import annotations

import numpy as np

from graphc.frontend import activations, initializers, nest
from graphc.frontend.layer import Layer
from graphc.frontend.lowering import LowerContext
from graphc.ops.elementwise import UNARY
from graphc.ops.registry import ShapeError

__all__ = ["LSTM", "GRU", "SimpleRNN"]

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


class _Recurrent(Layer):
    """What LSTM, GRU and SimpleRNN share: sequence handling, call arguments, checks."""

    _op = ""
    _gates = 1
    _state_names: tuple[str, ...] = ("h",)

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0,
                 seed=None, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, **kwargs):
        super().__init__(**kwargs)
        kind = type(self).__name__
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"{kind} units must be a positive integer, got {units!r}")
        if stateful:
            raise ValueError(f"{kind} {self.name!r}: stateful=True is not supported by graphc; "
                             "pass the state explicitly with initial_state= and return_state=True")
        self._set_weight_options(
            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint)
        for what, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"{kind} {what} must be in [0, 1], got {rate}")
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
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = False
        self.unroll = bool(unroll)

    # ------------------------------------------------------------------ checks and weights
    def _check_sequence_shape(self, shape) -> None:
        kind = type(self).__name__
        if shape is None or len(shape) != 3:
            raise ShapeError(f"{kind} expects a 3-D input (batch, timesteps, features), got shape "
                             f"{None if shape is None else tuple(shape)}")
        if shape[-1] is None:
            raise ShapeError(f"the feature dimension of the input to {kind} must be known, got shape "
                             f"{tuple(shape)}")

    def check_inputs(self, inputs):
        flat = nest.flatten(inputs)
        if len(flat) != 1:
            raise ShapeError(f"{type(self).__name__} takes one sequence tensor (pass states with "
                             f"initial_state=), got {len(flat)} tensors")
        self._check_sequence_shape(flat[0].shape)

    def build(self, input_shape, initial_state_shape=None):
        if isinstance(input_shape, list) and len(input_shape) == 1 and isinstance(input_shape[0], tuple):
            input_shape = input_shape[0]
        try:
            self._check_sequence_shape(input_shape)
        except ShapeError as exc:
            raise ValueError(f"Layer {self.name!r} ({type(self).__name__}) cannot be built for input "
                             f"shape {input_shape}: {exc}") from None
        features = int(input_shape[-1])
        width = self._gates * self.units
        self.kernel = self.add_weight("kernel", (features, width), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, width),
                                                self.recurrent_initializer, regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint)
        self.bias = self.add_weight("bias", self._bias_shape(), self._bias_init(), regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None
        self.built = True

    def _bias_shape(self) -> tuple[int, ...]:
        return (self._gates * self.units,)

    def _bias_init(self):
        return self.bias_initializer

    # ------------------------------------------------------------------ lowering
    def _op_attrs(self) -> dict:
        kind = type(self).__name__
        return {"activation": _op_activation(kind, "activation", self.activation),
                "recurrent_activation": _op_activation(kind, "recurrent_activation",
                                                       self.recurrent_activation),
                "go_backwards": self.go_backwards, "return_sequences": self.return_sequences}

    def lower(self, ctx: LowerContext, inputs, initial_state=None, mask=None, training=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}.call got unexpected argument(s) {sorted(kwargs)}")
        if mask is not None:
            raise ShapeError(f"{type(self).__name__} does not support masks in graphc")
        flat = nest.flatten(inputs)
        if len(flat) != 1:
            raise ShapeError(f"{type(self).__name__} takes one sequence tensor, got {len(flat)}")
        dtype = self.kernel.dtype

        def as_compute(v: str) -> str:
            return v if ctx.dtype(v) == dtype else ctx.cast(v, dtype=dtype)

        x = as_compute(flat[0])
        states = [] if initial_state is None else [as_compute(s) for s in nest.flatten(initial_state)]
        n = len(self._state_names)
        if states and len(states) != n:
            names = ", ".join(self._state_names)
            raise ShapeError(f"{type(self).__name__} initial_state must be {n} tensor(s) [{names}], "
                             f"got {len(states)}")
        if self.use_bias:
            bias = ctx.param(self.bias)
        else:
            bias = ctx.constant(np.zeros(self._bias_shape(), dtype=dtype), f"{self.name}/no_bias")
        outs = ctx.emit(self._op, x, ctx.param(self.kernel), ctx.param(self.recurrent_kernel), bias,
                        *states, **self._op_attrs())
        if self.return_state:
            return list(outs)
        return outs[0]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "recurrent_activation": self.recurrent_activation, "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "dropout": self.dropout, "recurrent_dropout": self.recurrent_dropout, "seed": self.seed,
                "return_sequences": self.return_sequences, "return_state": self.return_state,
                "go_backwards": self.go_backwards, "stateful": self.stateful, "unroll": self.unroll}


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
        kwargs.pop("implementation", None)
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
        if use_cudnn not in ("auto", True, False):
            raise ValueError(f"LSTM use_cudnn must be 'auto', True or False, got {use_cudnn!r}")
        self.unit_forget_bias = bool(unit_forget_bias)
        self.use_cudnn = use_cudnn

    def _bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        base, units = self.bias_initializer, self.units

        def init(shape, dtype="float32"):
            # Keras: the forget gate's bias starts at one, the others from bias_initializer.
            return np.concatenate([base((units,), dtype=dtype), np.ones((units,), dtype=dtype),
                                   base((2 * units,), dtype=dtype)])

        return init

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class GRU(_Recurrent):
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
        kwargs.pop("implementation", None)
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
        if use_cudnn not in ("auto", True, False):
            raise ValueError(f"GRU use_cudnn must be 'auto', True or False, got {use_cudnn!r}")
        self.reset_after = bool(reset_after)
        self.use_cudnn = use_cudnn

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _op_attrs(self):
        return {**super()._op_attrs(), "reset_after": self.reset_after}

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


class SimpleRNN(_Recurrent):
    """Fully connected RNN: ``h_t = activation(x_t @ kernel + bias + h_{t-1} @ recurrent_kernel)``."""

    _op = "simple_rnn"
    _gates = 1

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
