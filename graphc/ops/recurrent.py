"""Recurrent ops: ``lstm``, ``gru`` and ``simple_rnn``, each one whole sequence loop.

Each op takes a batch-major sequence ``x`` of shape (N, T, F) (``T`` may be a free
dimension), Keras's weight layout and optionally the initial state, and returns the
output (the whole sequence (N, T, U) when ``return_sequences``, else the last step
(N, U)) followed by the final state(s) (N, U). The outputs always include the states, so
a layer with ``return_state`` just uses them and one without leaves them unread.

Inputs, in order: ``x, kernel, recurrent_kernel, bias``, then the initial state (``h``
for ``gru``/``simple_rnn``; ``h, c`` for ``lstm``) or nothing (zeros), then the optional
inputs the attributes announce:

- ``masked``: the sequence mask (N, T), x's dtype, nonzero where a step is kept (Keras's
  mask). A masked step leaves every state as it was; its output is the previous step's
  output (zeros before the first kept step), or zeros with ``zero_output_for_mask``. So the
  output at step t is ``w_t * h_t``, where w_t is "some step up to t was kept" (or "step t
  was kept"), which is how the gradients and kernels compute it.
- ``recurrent_dropout``: per-sequence multipliers (N, G*U) of the state feeding each gate
  block of the recurrent kernel (G = 4, 3, 1): gate g reads ``(h * m[:, gU:(g+1)U]) @
  recurrent_kernel[:, gU:(g+1)U]`` (Keras's cells with ``recurrent_dropout``; the GRU's
  update ``z * h + (1 - z) * hh`` keeps the undropped h).

``bias`` is always present: a layer without a bias passes zeros. Weight layouts are Keras's:

- ``lstm``: kernel (F, 4U), recurrent_kernel (U, 4U), bias (4U,); gate order i, f, c, o.
- ``gru``: kernel (F, 3U), recurrent_kernel (U, 3U); gate order z, r, h. With
  ``reset_after`` (Keras's default) bias is (2, 3U): row 0 for the input projection,
  row 1 for the recurrent one, and the reset gate multiplies the recurrent projection.
  Without it bias is (3U,) and the reset gate multiplies ``h`` before the projection.
- ``simple_rnn``: kernel (F, U), recurrent_kernel (U, U), bias (U,).

``activation`` / ``recurrent_activation`` name an activation of
:data:`graphc.ops.elementwise.UNARY` or ``"linear"``. With ``go_backwards`` the sequence
(and its mask) is read from its last step to its first and the output sequence is in that
(reversed) order, as in Keras.

The references loop over time only: the input projection of all steps is one matmul and
each step is vectorized over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphc.ir import dims
from graphc.ir.types import TensorType
from graphc.ops.common import fmt_shape, require_float, require_rank, same_dtype
from graphc.ops.elementwise import UNARY, apply_activation
from graphc.ops.registry import OpDef, ShapeError, get, register

ACTIVATIONS = ("linear", *UNARY)

# attributes every recurrent op has (lstm and gru add recurrent_activation, gru reset_after)
_SEQ_ATTRS = {"activation": "tanh", "go_backwards": False, "return_sequences": False, "masked": False,
              "zero_output_for_mask": False, "recurrent_dropout": False}
_RNN_ATTRS = {**_SEQ_ATTRS, "recurrent_activation": "sigmoid"}


def check_activation(op: str, what: str, name: str) -> None:
    """Refuse an activation name that the recurrent ops cannot apply."""
    if name not in ACTIVATIONS:
        raise ShapeError(f"{op} {what} {name!r} is not one of {', '.join(ACTIVATIONS)}")


def split_inputs(values: list, masked: bool, recurrent_dropout: bool) -> tuple[list, object, object]:
    """(initial states, mask or None, recurrent dropout multipliers or None) from the inputs after bias."""
    rest = list(values)
    drop = rest.pop() if recurrent_dropout and rest else None
    mask = rest.pop() if masked and rest else None
    return rest, mask, drop


def _rnn_infer(op: str, gates: int, n_states: int, bias_shape: Callable[[int], tuple[int, ...]],
               types: list[TensorType], activations: dict[str, str], return_sequences: bool,
               masked: bool, recurrent_dropout: bool) -> list[TensorType]:
    """Shape rule shared by the recurrent ops (see the module docstring)."""
    for what, name in activations.items():
        check_activation(op, what, name)
    extra = int(masked) + int(recurrent_dropout)
    if len(types) < 4 + extra:
        raise ShapeError(f"{op} takes x, kernel, recurrent_kernel, bias and {extra} more input(s) for its "
                         f"attributes, got {len(types)}")
    x, kernel, rkernel, bias = types[:4]
    states, mask, drop = split_inputs(types[4:], masked, recurrent_dropout)
    if len(states) not in (0, n_states):
        raise ShapeError(f"{op} takes {n_states} initial state tensor(s) or none, got {len(states)}")
    require_rank(x, 3, f"{op} input (batch, timesteps, features)")
    require_float(x, f"{op} input")
    same_dtype(types, f"{op} operands")
    require_rank(kernel, 2, f"{op} kernel")
    require_rank(rkernel, 2, f"{op} recurrent_kernel")
    width = kernel.shape[1]
    if not isinstance(width, int) or width % gates or width == 0:
        raise ShapeError(f"{op} kernel of shape {fmt_shape(kernel.shape)} must have a known last "
                         f"dimension that is a positive multiple of {gates}")
    units = width // gates
    if not dims.compatible(kernel.shape[0], x.shape[2]):
        raise ShapeError(f"{op} kernel of shape {fmt_shape(kernel.shape)} does not match the "
                         f"{x.shape[2]} features of input {fmt_shape(x.shape)}")
    if rkernel.shape != (units, width):
        raise ShapeError(f"{op} recurrent_kernel must have shape {fmt_shape((units, width))} for "
                         f"{units} units, got {fmt_shape(rkernel.shape)}")
    if bias.shape != bias_shape(units):
        raise ShapeError(f"{op} bias must have shape {fmt_shape(bias_shape(units))} for {units} "
                         f"units, got {fmt_shape(bias.shape)}")
    batch = x.shape[0]
    for i, s in enumerate(states):
        if s.rank != 2 or not dims.compatible(s.shape[0], batch) or s.shape[1] != units:
            raise ShapeError(f"{op} initial state {i} must have shape {fmt_shape((batch, units))}, "
                             f"got {fmt_shape(s.shape)}")
        batch = dims.unify(batch, s.shape[0])
    if mask is not None and (mask.rank != 2 or not dims.compatible(mask.shape[0], batch)
                             or not dims.compatible(mask.shape[1], x.shape[1])):
        raise ShapeError(f"{op} mask must have shape {fmt_shape((batch, x.shape[1]))} (batch, timesteps), "
                         f"got {fmt_shape(mask.shape)}")
    if drop is not None and (drop.rank != 2 or not dims.compatible(drop.shape[0], batch)
                             or drop.shape[1] != width):
        raise ShapeError(f"{op} recurrent dropout multipliers must have shape {fmt_shape((batch, width))}, "
                         f"got {fmt_shape(drop.shape)}")
    out = (batch, x.shape[1], units) if return_sequences else (batch, units)
    return [TensorType(x.dtype, out)] + [TensorType(x.dtype, (batch, units))] * n_states


def _steps(x: np.ndarray, go_backwards: bool) -> np.ndarray:
    return x[:, ::-1] if go_backwards else x


def _initial(states, n: int, units: int, dtype, count: int) -> list[np.ndarray]:
    if states:
        return [np.asarray(s, dtype=dtype) for s in states]
    return [np.zeros((n, units), dtype=dtype) for _ in range(count)]


def output_weights(mask: np.ndarray | None, t_len: int, n: int, go_backwards: bool, zero_output: bool,
                   dtype) -> np.ndarray:
    """(N, T, 1) in processing order: 1 where the output is the state, 0 where it is zeros."""
    if mask is None:
        return np.ones((n, t_len, 1), dtype=dtype)
    kept = _steps(np.asarray(mask), go_backwards) != 0
    w = kept if zero_output else np.maximum.accumulate(kept, axis=1)
    return w.astype(dtype)[..., None]


def _kept(mask: np.ndarray | None, go_backwards: bool):
    return None if mask is None else (_steps(np.asarray(mask), go_backwards) != 0)[..., None]


def _recurrent(h: np.ndarray, rkernel: np.ndarray, drop: np.ndarray | None, gates: int) -> np.ndarray:
    """``h @ recurrent_kernel``, each gate block reading ``h`` times its dropout multipliers."""
    if drop is None:
        return h @ rkernel
    u = rkernel.shape[0]
    return np.concatenate([(h * drop[:, g * u:(g + 1) * u]) @ rkernel[:, g * u:(g + 1) * u] for g in range(gates)],
                          axis=1)


def _run(x, kernel, bias_in, state, step, go_backwards: bool, return_sequences: bool, mask=None,
         zero_output: bool = False):
    """Run ``step(projected_x_t, state) -> state`` over time; state[0] is the output."""
    n, t, _ = x.shape
    units = state[0].shape[1]
    proj = np.matmul(_steps(x, go_backwards), kernel) + bias_in
    kept = _kept(mask, go_backwards)
    weights = output_weights(mask, t, n, go_backwards, zero_output, x.dtype)
    seq = np.empty((n, t, units), dtype=x.dtype) if return_sequences else None
    for i in range(t):
        new = step(proj[:, i], state)
        state = new if kept is None else tuple(np.where(kept[:, i], a, b) for a, b in zip(new, state))
        if seq is not None:
            seq[:, i] = state[0] * weights[:, i]
    if seq is not None:
        out = seq
    else:
        out = state[0] * weights[:, -1] if t else state[0].copy()
    return (out, *(s.copy() for s in state))


# ---------------------------------------------------------------- lstm
def _lstm_infer(types, *, activation, recurrent_activation, go_backwards, return_sequences, masked,
                zero_output_for_mask, recurrent_dropout):
    return _rnn_infer("lstm", 4, 2, lambda u: (4 * u,), types,
                      {"activation": activation, "recurrent_activation": recurrent_activation},
                      return_sequences, masked, recurrent_dropout)


def _lstm(x, kernel, rkernel, bias, *rest, activation, recurrent_activation, go_backwards, return_sequences,
          masked=False, zero_output_for_mask=False, recurrent_dropout=False):
    states, mask, drop = split_inputs(rest, masked, recurrent_dropout)
    u = rkernel.shape[0]

    def step(px, state):
        h, c = state
        z = px + _recurrent(h, rkernel, drop, 4)
        i = apply_activation(recurrent_activation, z[:, :u])
        f = apply_activation(recurrent_activation, z[:, u:2 * u])
        g = apply_activation(activation, z[:, 2 * u:3 * u])
        o = apply_activation(recurrent_activation, z[:, 3 * u:])
        c = f * c + i * g
        return o * apply_activation(activation, c), c

    state = _initial(states, x.shape[0], u, x.dtype, 2)
    return _run(x, kernel, bias, state, step, go_backwards, return_sequences, mask, zero_output_for_mask)


register(OpDef("lstm", _lstm_infer, _lstm, attrs=dict(_RNN_ATTRS), num_inputs=(4, 8), num_outputs=3,
               fusion_kind="opaque",
               doc="Keras LSTM over a whole sequence: (x, kernel, recurrent_kernel, bias[, h0, c0][, mask]"
                   "[, recurrent dropout]) -> (output, h, c); gate order i, f, c, o."))


# ---------------------------------------------------------------- gru
def _gru_infer(types, *, activation, recurrent_activation, go_backwards, return_sequences, reset_after, masked,
               zero_output_for_mask, recurrent_dropout):
    return _rnn_infer("gru", 3, 1, lambda u: (2, 3 * u) if reset_after else (3 * u,), types,
                      {"activation": activation, "recurrent_activation": recurrent_activation},
                      return_sequences, masked, recurrent_dropout)


def _gru_inner(h, rkernel, drop, reset_after: bool):
    """The recurrent parts of the z, r (and, with reset_after, h) gates, before any bias."""
    u = rkernel.shape[0]
    if reset_after:
        return _recurrent(h, rkernel, drop, 3)
    return _recurrent(h, rkernel[:, :2 * u], None if drop is None else drop[:, :2 * u], 2)


def _gru(x, kernel, rkernel, bias, *rest, activation, recurrent_activation, go_backwards, return_sequences,
         reset_after, masked=False, zero_output_for_mask=False, recurrent_dropout=False):
    states, mask, drop = split_inputs(rest, masked, recurrent_dropout)
    u = rkernel.shape[0]
    bias_in, bias_rec = (bias[0], bias[1]) if reset_after else (bias, None)

    def step(px, state):
        (h,) = state
        inner = _gru_inner(h, rkernel, drop, reset_after)
        if reset_after:
            inner = inner + bias_rec
        z = apply_activation(recurrent_activation, px[:, :u] + inner[:, :u])
        r = apply_activation(recurrent_activation, px[:, u:2 * u] + inner[:, u:2 * u])
        if reset_after:
            rec_h = r * inner[:, 2 * u:]
        else:
            hd = h if drop is None else h * drop[:, 2 * u:]
            rec_h = (r * hd) @ rkernel[:, 2 * u:]
        hh = apply_activation(activation, px[:, 2 * u:] + rec_h)
        return (z * h + (1 - z) * hh,)

    state = _initial(states, x.shape[0], u, x.dtype, 1)
    return _run(x, kernel, bias_in, state, step, go_backwards, return_sequences, mask, zero_output_for_mask)


register(OpDef("gru", _gru_infer, _gru, attrs={**_RNN_ATTRS, "reset_after": True}, num_inputs=(4, 7),
               num_outputs=2, fusion_kind="opaque",
               doc="Keras GRU over a whole sequence: (x, kernel, recurrent_kernel, bias[, h0][, mask]"
                   "[, recurrent dropout]) -> (output, h); gate order z, r, h."))


# ---------------------------------------------------------------- simple_rnn
def _simple_rnn_infer(types, *, activation, go_backwards, return_sequences, masked, zero_output_for_mask,
                      recurrent_dropout):
    return _rnn_infer("simple_rnn", 1, 1, lambda u: (u,), types, {"activation": activation},
                      return_sequences, masked, recurrent_dropout)


def _simple_rnn(x, kernel, rkernel, bias, *rest, activation, go_backwards, return_sequences, masked=False,
                zero_output_for_mask=False, recurrent_dropout=False):
    states, mask, drop = split_inputs(rest, masked, recurrent_dropout)
    u = rkernel.shape[0]

    def step(px, state):
        return (apply_activation(activation, px + _recurrent(state[0], rkernel, drop, 1)),)

    state = _initial(states, x.shape[0], u, x.dtype, 1)
    return _run(x, kernel, bias, state, step, go_backwards, return_sequences, mask, zero_output_for_mask)


register(OpDef("simple_rnn", _simple_rnn_infer, _simple_rnn, attrs=dict(_SEQ_ATTRS),
               num_inputs=(4, 7), num_outputs=2, fusion_kind="opaque",
               doc="Keras SimpleRNN over a whole sequence: (x, kernel, recurrent_kernel, bias[, h0][, mask]"
                   "[, recurrent dropout]) -> (output, h) with h = activation(x_t @ kernel + bias + "
                   "h @ recurrent_kernel)."))


# ---------------------------------------------------------------- reverse_time
def _reverse_time_infer(types):
    (x,) = types
    if x.rank < 2:
        raise ShapeError(f"reverse_time needs a (batch, time, ...) input, got {x}")
    return [x]


register(OpDef("reverse_time", _reverse_time_infer, lambda x: np.ascontiguousarray(x[:, ::-1]), num_inputs=1,
               fusion_kind="opaque",
               doc="x with its time axis (axis 1) reversed: Keras's flip of a go_backwards output sequence "
                   "(Bidirectional) and of a mask read backwards."))
get("reverse_time").vjp = lambda ctx, dy: [ctx.emit("reverse_time", dy)]
get("reverse_time").to_onnx = lambda ctx, op: ctx.slice(ctx.input_name(0), [-1], [-(2 ** 63)], [1], [-1],
                                                         ctx.output_name(0))
get("reverse_time").lower = lambda kb, op, x, *, out: kb.slice(out, x, 1, -1, -1)


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext). The ONNX LSTM/GRU/RNN ops
# are time-major, with the weights of each gate stacked row-wise: the Keras kernels are
# transposed, the LSTM gates reordered from Keras's i, f, c, o to ONNX's i, o, f, c, and the
# bias laid out as [input bias, recurrent bias]. go_backwards reverses the sequence (and the
# mask) before a forward pass, so the output sequence is in Keras's (reversed) order. A mask
# becomes a reordering of the steps and ``sequence_lens`` (see _OnnxMask).

# graphc activation -> (ONNX RNN activation, alpha, beta) as onnxruntime implements them
_ONNX_RNN_ACTIVATIONS = {
    "sigmoid": ("Sigmoid", None, None), "tanh": ("Tanh", None, None), "relu": ("Relu", None, None),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5), "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None), "elu": ("Elu", 1.0, None), "linear": ("Affine", 1.0, 0.0),
}
_ONNX_RNN = {"lstm": ("LSTM", (0, 3, 1, 2)), "gru": ("GRU", (0, 1, 2)), "simple_rnn": ("RNN", (0,))}


def _onnx_gates(w: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """Keras (..., gates*U) with gate blocks reordered, as ONNX (1, gates*U, ...)."""
    blocks = np.split(w, len(order), axis=-1)
    stacked = np.concatenate([blocks[g] for g in order], axis=-1)
    return np.ascontiguousarray(np.moveaxis(stacked, -1, 0)[None])


def _onnx_gate_nodes(ctx, w: str, order: tuple[int, ...], transpose: bool = True) -> str:
    """:func:`_onnx_gates` of a weight fed at run time (a training step's input), as ONNX nodes."""
    blocks = ctx.split(w, [int(ctx.input_type(2).shape[0])] * len(order), -1)
    stacked = ctx.node("Concat", [blocks[g] for g in order], axis=-1) if len(order) > 1 else blocks[0]
    return ctx.unsqueeze(ctx.transpose(stacked, [1, 0]) if transpose else stacked, [0])


def _onnx_bias_nodes(ctx, op, order: tuple[int, ...]) -> str:
    """The ONNX bias [input bias, recurrent bias] (1, 2*gates*U) of a bias fed at run time."""
    b = ctx.input_name(3)
    if op.type == "gru" and ctx.attrs["reset_after"]:
        rows = [ctx.node("Gather", [b, ctx.scalar(i, "int64")], axis=0) for i in (0, 1)]
        parts = [_onnx_gate_nodes(ctx, v, order, transpose=False) for v in rows]
    else:
        parts = [_onnx_gate_nodes(ctx, b, order, transpose=False),
                 ctx.constant(np.zeros((1, ctx.input_type(3).shape[-1]), dtype=ctx.input_type(3).dtype), "zeros")]
    return ctx.node("Concat", parts, axis=1)


def _rnn_to_onnx(ctx, op):
    onnx_type, order = _ONNX_RNN[op.type]
    a = ctx.attrs
    if a["recurrent_dropout"]:
        raise ctx.error("recurrent dropout exists only in training graphs; ONNX exports inference graphs")
    units = int(ctx.input_type(2).shape[0])
    acts = [a["recurrent_activation"], a["activation"], a["activation"]] if op.type == "lstm" else \
        [a["recurrent_activation"], a["activation"]] if op.type == "gru" else [a["activation"]]
    names, alphas, betas = [], [], []
    for act in acts:
        if act not in _ONNX_RNN_ACTIVATIONS:
            raise ctx.error(f"activation {act!r} has no equivalent among the ONNX {onnx_type} activations "
                            f"({', '.join(sorted(_ONNX_RNN_ACTIVATIONS))})")
        name, alpha, beta = _ONNX_RNN_ACTIVATIONS[act]
        names.append(name)
        alphas += [alpha] if alpha is not None else []
        betas += [beta] if beta is not None else []

    def bias(b: np.ndarray) -> np.ndarray:
        if op.type == "gru" and a["reset_after"]:
            pair = [_onnx_gates(b[0], order), _onnx_gates(b[1], order)]
        else:
            pair = [_onnx_gates(b, order), np.zeros((1, b.shape[-1]), dtype=b.dtype)]
        return np.concatenate(pair, axis=1)

    w = ctx.derived(1, lambda k: _onnx_gates(k, order), "onnx") or _onnx_gate_nodes(ctx, ctx.input_name(1), order)
    r = ctx.derived(2, lambda k: _onnx_gates(k, order), "onnx") or _onnx_gate_nodes(ctx, ctx.input_name(2), order)
    b = ctx.derived(3, bias, "onnx") or _onnx_bias_nodes(ctx, op, order)
    n_states = 2 if op.type == "lstm" else 1
    given = list(range(4, ctx.num_inputs - int(a["masked"])))  # initial states
    x = ctx.input_name(0)
    mask = ctx.input_name(ctx.num_inputs - 1) if a["masked"] else None
    if a["go_backwards"]:
        x = ctx.slice(x, [-1], [-(2 ** 63)], [1], [-1])
        if mask is not None:
            mask = ctx.slice(mask, [-1], [-(2 ** 63)], [1], [-1])
    masked = _OnnxMask(ctx, x, mask) if mask is not None else None
    if masked is not None:
        x = masked.compact(x)
    inputs = [ctx.transpose(x, [1, 0, 2]), w, r, b]
    if masked is not None or given:
        inputs.append(masked.lengths if masked is not None else "")
    if given:
        inputs += [ctx.unsqueeze(ctx.input_name(i), [0]) for i in given]
    outs = ctx.node(onnx_type, inputs, 1 + n_states, hidden_size=units, activations=names,
                    activation_alpha=alphas or None, activation_beta=betas or None, direction="forward",
                    linear_before_reset=int(a["reset_after"]) if op.type == "gru" else None)
    seq, states = outs[0], outs[1:]
    if masked is None:
        for k, s in enumerate(states):
            ctx.squeeze(s, [0], ctx.output_name(1 + k))
        if a["return_sequences"]:
            ctx.transpose(ctx.squeeze(seq, [1]), [1, 0, 2], ctx.output_name(0))
        else:
            ctx.node("Identity", [ctx.output_name(1)], ctx.output_name(0))
        return
    # A sequence with no kept step keeps its initial state (zeros without one).
    zero = ctx.scalar(0, ctx.output_type(0).dtype)
    for k, s in enumerate(states):
        initial = ctx.input_name(given[k]) if given else zero
        ctx.node("Where", [masked.any_kept, ctx.squeeze(s, [0]), initial], ctx.output_name(1 + k))
    if a["return_sequences"]:
        compact = ctx.transpose(ctx.squeeze(seq, [1]), [1, 0, 2])
        ctx.node("Where", [masked.output_weights(a["zero_output_for_mask"]), masked.expand(compact), zero],
                 ctx.output_name(0))
    else:
        ctx.node("Where", [masked.last_weight(a["zero_output_for_mask"]), ctx.output_name(1), zero],
                 ctx.output_name(0))


class _OnnxMask:
    """Keras's masked recurrence through the ONNX ops, which only skip a tail (``sequence_lens``).

    A step skipped by the mask leaves the state unchanged, so running the kept steps alone,
    moved to the front in order, gives the same states: the kept steps are gathered first
    (a sort by "kept, then index"), the ONNX op runs with ``sequence_lens`` = the number kept,
    and the output of step t is the compacted output at (kept steps up to t) - 1, or zeros
    where Keras gives zeros (before the first kept step; at every masked step with
    ``zero_output_for_mask``).
    """

    def __init__(self, ctx, x: str, mask: str):
        self.ctx = ctx
        t_dim = ctx.input_type(0).shape[1]
        mask_dtype = ctx.input_type(ctx.num_inputs - 1).dtype
        kept = ctx.node("Not", [ctx.node("Equal", [mask, ctx.scalar(0, mask_dtype)])])
        self.kept = kept
        kept_i = ctx.cast(kept, "int64")
        self.counts = ctx.node("CumSum", [kept_i, ctx.scalar(1, "int64")])  # kept steps up to t (inclusive)
        total = ctx.reduce("ReduceSum", kept_i, [1], keepdims=False)
        self.lengths = ctx.cast(total, "int32")
        self.any_kept = ctx.unsqueeze(ctx.node("Greater", [total, ctx.scalar(0, "int64")]), [1])
        steps = ctx.node("Range", [ctx.scalar(0, "int64"), ctx.squeeze(ctx.dim(t_dim), [0]), ctx.scalar(1, "int64")])
        later = ctx.node("Add", [steps, ctx.squeeze(ctx.dim(t_dim), [0])])
        order_key = ctx.cast(ctx.node("Where", [kept, steps, later]), "float32")
        _, self.order = ctx.node("TopK", [order_key, ctx.dim(t_dim)], 2, axis=1, largest=0, sorted=1)

    def _along_time(self, indices: str, like: str) -> str:
        """(N, T) step indices broadcast over the feature axis of ``like`` (N, T, F)."""
        return self.ctx.node("Expand", [self.ctx.unsqueeze(indices, [2]), self.ctx.shape_of(like)])

    def compact(self, x: str) -> str:
        return self.ctx.node("GatherElements", [x, self._along_time(self.order, x)], axis=1)

    def expand(self, compact: str) -> str:
        ctx = self.ctx
        position = ctx.node("Max", [ctx.node("Sub", [self.counts, ctx.scalar(1, "int64")]), ctx.scalar(0, "int64")])
        return ctx.node("GatherElements", [compact, self._along_time(position, compact)], axis=1)

    def output_weights(self, zero_output: bool) -> str:
        ctx = self.ctx
        w = self.kept if zero_output else ctx.node("Greater", [self.counts, ctx.scalar(0, "int64")])
        return ctx.unsqueeze(w, [2])

    def last_weight(self, zero_output: bool) -> str:
        """(N, 1): whether the last output is the final state (else zeros)."""
        return self.ctx.slice(self.kept, [-1], [2 ** 62], [1]) if zero_output else self.any_kept


for _name in _ONNX_RNN:
    get(_name).to_onnx = _rnn_to_onnx


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext) and one backward op per
# recurrent op: ``<op>_grad(<the forward's inputs>, d_output, d_state...)`` with the forward's
# attributes returns the gradients of (x, kernel, recurrent_kernel, bias) and of the initial
# state(s) (zeros when the forward had none: those outputs go unread); the mask and the dropout
# multipliers get none. The references re-run the forward pass keeping each step's gates, then
# walk back through time (backpropagation through time); the input projection's gradients are
# one matmul each. A masked step passes the state's gradient through unchanged.

from graphc.ops.elementwise import activation_derivative as _deriv  # noqa: E402


def _rnn_grad_infer(forward, n_cot: int, n_states: int, op: str):
    def infer(types, **attrs):
        fwd, cots = types[:-n_cot], types[-n_cot:]
        outs = forward(fwd, **attrs)
        for k, (c, o) in enumerate(zip(cots, outs)):
            if c.dtype != o.dtype or c.rank != o.rank:
                raise ShapeError(f"{op}_grad: cotangent {k} {c} does not match the {op} output {o}")
        state = outs[1]
        return list(fwd[:4]) + [state] * n_states

    return infer


class _Backward:
    """What the three backward references share: inputs, masks, output weights, the epilogue."""

    def __init__(self, arrays, n_cot: int, attrs: dict):
        fwd, cots = arrays[:-n_cot], arrays[-n_cot:]
        self.x, self.kernel, self.rkernel, self.bias = fwd[:4]
        self.states, mask, self.drop = split_inputs(fwd[4:], attrs.get("masked", False),
                                                    attrs.get("recurrent_dropout", False))
        self.cots = [np.asarray(c) for c in cots]
        self.go_backwards = attrs["go_backwards"]
        self.return_sequences = attrs["return_sequences"]
        n, self.t_len, _ = self.x.shape
        self.n, self.u = n, self.rkernel.shape[0]
        self.xs = _steps(self.x, self.go_backwards)
        self.kept = _kept(mask, self.go_backwards)
        self.weights = output_weights(mask, self.t_len, n, self.go_backwards,
                                      attrs.get("zero_output_for_mask", False), self.x.dtype)

    def keep(self, t: int, new: np.ndarray, old: np.ndarray) -> np.ndarray:
        return new if self.kept is None else np.where(self.kept[:, t], new, old)

    def dh_final(self, d_out: np.ndarray, d_h: np.ndarray) -> np.ndarray:
        if self.return_sequences or not self.t_len:
            return d_h.copy()
        return d_h + d_out * self.weights[:, -1]

    def dh_step(self, dh: np.ndarray, d_out: np.ndarray, t: int) -> np.ndarray:
        return dh + d_out[:, t] * self.weights[:, t] if self.return_sequences else dh

    def block(self, a: np.ndarray, g: int) -> np.ndarray:
        return a[:, g * self.u:(g + 1) * self.u]

    def dropped(self, h: np.ndarray, g: int) -> np.ndarray:
        return h if self.drop is None else h * self.block(self.drop, g)

    def recurrent_back(self, h_prev: np.ndarray, dz: np.ndarray, d_rk: np.ndarray, gates: range) -> np.ndarray:
        """Accumulate ``d_recurrent_kernel`` for the gate blocks ``gates`` of ``dz`` (one block per
        gate, in order) and return their contribution to the previous state's gradient."""
        dh = np.zeros_like(h_prev)
        for k, g in enumerate(gates):
            dzg = dz[:, k * self.u:(k + 1) * self.u]
            rk = self.rkernel[:, g * self.u:(g + 1) * self.u]
            d_rk[:, g * self.u:(g + 1) * self.u] += self.dropped(h_prev, g).T @ dzg
            back = dzg @ rk.T
            dh += back if self.drop is None else back * self.block(self.drop, g)
        return dh

    def epilogue(self, dproj: np.ndarray):
        n, t, f = self.x.shape
        d2 = dproj.reshape(-1, dproj.shape[-1])
        dw = self.xs.reshape(-1, f).T @ d2
        dxs = (d2 @ self.kernel.T).reshape(n, t, f)
        return (dxs[:, ::-1] if self.go_backwards else dxs).astype(self.x.dtype, copy=False), dw


def _act_and_deriv(name: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f(z), f'(z)); sigmoid and tanh reuse f(z)."""
    a = apply_activation(name, z)
    if name == "sigmoid":
        return a, a * (1 - a)
    if name == "tanh":
        return a, 1 - a * a
    return a, _deriv(name, z)


def _lstm_grad(*arrays, activation, recurrent_activation, **attrs):
    bw = _Backward(arrays, 3, attrs)
    d_out, d_h, d_c = bw.cots
    n, t_len, u = bw.n, bw.t_len, bw.u
    act, ract = activation, recurrent_activation
    proj = (bw.xs.reshape(n * t_len, -1) @ bw.kernel + bw.bias).reshape(n, t_len, 4 * u)
    h, c = _initial(tuple(bw.states), n, u, bw.x.dtype, 2)
    hs, cs, gates, dgates, acs = [], [], [], [], []
    for t in range(t_len):
        hs.append(h)
        cs.append(c)
        z = proj[:, t] + _recurrent(h, bw.rkernel, bw.drop, 4)
        gate = np.empty_like(z)
        dgate = np.empty_like(z)
        for k, name in enumerate((ract, ract, act, ract)):
            gate[:, k * u:(k + 1) * u], dgate[:, k * u:(k + 1) * u] = _act_and_deriv(name, z[:, k * u:(k + 1) * u])
        i, f, g, o = gate[:, :u], gate[:, u:2 * u], gate[:, 2 * u:3 * u], gate[:, 3 * u:]
        c_new = f * c + i * g
        ac, dac = _act_and_deriv(act, c_new)
        h, c = bw.keep(t, o * ac, h), bw.keep(t, c_new, c)
        gates.append(gate)
        dgates.append(dgate)
        acs.append((ac, dac))
    dproj = np.zeros_like(proj)
    d_rk = np.zeros_like(bw.rkernel)
    dh = bw.dh_final(d_out, d_h)
    dc = d_c.copy()
    for t in reversed(range(t_len)):
        dh = bw.dh_step(dh, d_out, t)
        gate, dgate, (ac, dac) = gates[t], dgates[t], acs[t]
        dc_t = dc + dh * gate[:, 3 * u:] * dac
        dz = np.empty_like(gate)
        dz[:, :u] = dc_t * gate[:, 2 * u:3 * u]
        dz[:, u:2 * u] = dc_t * cs[t]
        dz[:, 2 * u:3 * u] = dc_t * gate[:, :u]
        dz[:, 3 * u:] = dh * ac
        dz *= dgate
        if bw.kept is not None:
            dz *= bw.kept[:, t]
        dproj[:, t] = dz
        dh = bw.keep(t, bw.recurrent_back(hs[t], dz, d_rk, range(4)), dh)
        dc = bw.keep(t, dc_t * gate[:, u:2 * u], dc)
    dx, dw = bw.epilogue(dproj)
    return dx, dw, d_rk, dproj.sum(axis=(0, 1)), dh, dc


def _gru_grad(*arrays, activation, recurrent_activation, reset_after, **attrs):
    bw = _Backward(arrays, 2, attrs)
    d_out, d_h = bw.cots
    n, t_len, u = bw.n, bw.t_len, bw.u
    act, ract, rkernel, drop = activation, recurrent_activation, bw.rkernel, bw.drop
    bias_in, bias_rec = (bw.bias[0], bw.bias[1]) if reset_after else (bw.bias, None)
    proj = np.matmul(bw.xs, bw.kernel) + bias_in
    (h,) = _initial(tuple(bw.states), n, u, bw.x.dtype, 1)
    saved = []
    for t in range(t_len):
        px = proj[:, t]
        inner = _gru_inner(h, rkernel, drop, reset_after)
        if reset_after:
            inner = inner + bias_rec
        zpre, rpre = px[:, :u] + inner[:, :u], px[:, u:2 * u] + inner[:, u:2 * u]
        z, r = apply_activation(ract, zpre), apply_activation(ract, rpre)
        hd = bw.dropped(h, 2)
        hpre = px[:, 2 * u:] + (r * inner[:, 2 * u:] if reset_after else (r * hd) @ rkernel[:, 2 * u:])
        hh = apply_activation(act, hpre)
        saved.append((h, inner, zpre, rpre, hpre, z, r, hh))
        h = bw.keep(t, z * h + (1 - z) * hh, h)
    dproj = np.zeros_like(proj)
    d_rk = np.zeros_like(rkernel)
    d_brec = np.zeros(3 * u, dtype=bw.x.dtype)
    dh = bw.dh_final(d_out, d_h)
    for t in reversed(range(t_len)):
        dh = bw.dh_step(dh, d_out, t)
        kept = 1 if bw.kept is None else bw.kept[:, t]
        h_prev, inner, zpre, rpre, hpre, z, r, hh = saved[t]
        dhk = dh * kept
        dz = dhk * (h_prev - hh)
        dh_prev = dhk * z
        dhpre = dhk * (1 - z) * _deriv(act, hpre)
        if reset_after:
            dr = dhpre * inner[:, 2 * u:]
            d_inner_h = dhpre * r
        else:
            hd = bw.dropped(h_prev, 2)
            d_rh = dhpre @ rkernel[:, 2 * u:].T
            d_rk[:, 2 * u:] += (r * hd).T @ dhpre
            dr = d_rh * hd
            back = d_rh * r
            dh_prev = dh_prev + (back if drop is None else back * bw.block(drop, 2))
        dzpre, drpre = dz * _deriv(ract, zpre), dr * _deriv(ract, rpre)
        dproj[:, t] = np.concatenate([dzpre, drpre, dhpre], axis=1)
        if reset_after:
            d_inner = np.concatenate([dzpre, drpre, d_inner_h], axis=1)
            d_brec += d_inner.sum(axis=0)
            dh_prev = dh_prev + bw.recurrent_back(h_prev, d_inner, d_rk, range(3))
        else:
            dh_prev = dh_prev + bw.recurrent_back(h_prev, np.concatenate([dzpre, drpre], axis=1), d_rk, range(2))
        dh = bw.keep(t, dh_prev, dh)
    dx, dw = bw.epilogue(dproj)
    d_bin = dproj.sum(axis=(0, 1))
    db = np.stack([d_bin, d_brec]) if reset_after else d_bin
    return dx, dw, d_rk, db, dh


def _simple_rnn_grad(*arrays, activation, **attrs):
    bw = _Backward(arrays, 2, attrs)
    d_out, d_h = bw.cots
    n, t_len, u = bw.n, bw.t_len, bw.u
    proj = np.matmul(bw.xs, bw.kernel) + bw.bias
    (h,) = _initial(tuple(bw.states), n, u, bw.x.dtype, 1)
    hs, pres = [], []
    for t in range(t_len):
        hs.append(h)
        pre = proj[:, t] + _recurrent(h, bw.rkernel, bw.drop, 1)
        h = bw.keep(t, apply_activation(activation, pre), h)
        pres.append(pre)
    dproj = np.zeros_like(proj)
    d_rk = np.zeros_like(bw.rkernel)
    dh = bw.dh_final(d_out, d_h)
    for t in reversed(range(t_len)):
        dh = bw.dh_step(dh, d_out, t)
        dpre = dh * _deriv(activation, pres[t])
        if bw.kept is not None:
            dpre = dpre * bw.kept[:, t]
        dproj[:, t] = dpre
        dh = bw.keep(t, bw.recurrent_back(hs[t], dpre, d_rk, range(1)), dh)
    dx, dw = bw.epilogue(dproj)
    return dx, dw, d_rk, dproj.sum(axis=(0, 1)), dh


for _op, _fwd, _ref, _n_cot, _n_states, _attrs in (
        ("lstm", _lstm_infer, _lstm_grad, 3, 2, dict(_RNN_ATTRS)),
        ("gru", _gru_infer, _gru_grad, 2, 1, {**_RNN_ATTRS, "reset_after": True}),
        ("simple_rnn", _simple_rnn_infer, _simple_rnn_grad, 2, 1, dict(_SEQ_ATTRS))):
    register(OpDef(f"{_op}_grad", _rnn_grad_infer(_fwd, _n_cot, _n_states, _op), _ref, attrs=_attrs,
                   num_inputs=(4 + _n_cot, 4 + _n_states + 2 + _n_cot), num_outputs=4 + _n_states,
                   fusion_kind="opaque", not_differentiable=True, training_only=True,
                   doc=f"Backpropagation through time for `{_op}` (same attributes): (x, kernel, "
                       f"recurrent_kernel, bias[, initial states][, mask][, recurrent dropout], d_output, "
                       f"d_state...) -> gradients of (x, kernel, recurrent_kernel, bias, initial state(s))."))


def _rnn_vjp(ctx, *douts):
    cots = [d if d is not None else ctx.zeros_like(y) for d, y in zip(douts, ctx.y)]
    grads = ctx.emit(f"{ctx.op.type}_grad", *ctx.x, *cots, **ctx.attrs)
    extra = int(ctx.attrs["masked"]) + int(ctx.attrs["recurrent_dropout"])
    given = len(ctx.x) - extra  # x, weights and the initial states given
    return list(grads[:given]) + [None] * extra


for _op in ("lstm", "gru", "simple_rnn"):
    get(_op).vjp = _rnn_vjp


# ---------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm):
# one GEMM for the input projection of all steps, then one kernel running the steps, batch
# rows in parallel (see graphc/backends/llvm/kernels/recurrent.py).

def _refuse_recurrent_dropout(kind: str) -> None:
    from graphc.backends.llvm.builder import NativeLoweringError

    raise NativeLoweringError(f"{kind} with recurrent_dropout: the native kernels take no recurrent dropout "
                              "masks; train this model on the reference target, or set recurrent_dropout=0")


def _rnn_lower(kind: str):
    def lower(kb, op, x, kernel, rkernel, bias, *rest, out, activation, go_backwards, return_sequences, masked,
              zero_output_for_mask, recurrent_dropout, recurrent_activation="linear", reset_after=True):
        from graphc.backends.llvm.kernels.recurrent import emit_rnn
        from graphc.ops.elementwise import native_activation

        if recurrent_dropout:
            _refuse_recurrent_dropout(kind)
        states, mask, _ = split_inputs(rest, masked, False)
        emit_rnn(kb, kind, x, kernel, rkernel, bias, list(states), tuple(out),
                 activation=lambda m, v: native_activation(m, activation, v),
                 recurrent_activation=lambda m, v: native_activation(m, recurrent_activation, v),
                 go_backwards=go_backwards, return_sequences=return_sequences, reset_after=reset_after,
                 mask=mask, zero_output_for_mask=zero_output_for_mask)

    return lower


for _op in ("lstm", "gru", "simple_rnn"):
    get(_op).lower = _rnn_lower(_op)


def _native_deriv(name: str):
    """f'(v) over VMath for activation ``name`` (the native backward passes)."""
    from graphc.backends.llvm.builder import NativeLoweringError
    from graphc.ops.elementwise import NATIVE_UNARY_DERIV

    if name in (None, "linear"):
        return lambda m, v: m.const(1.0, v)
    if name not in NATIVE_UNARY_DERIV:
        raise NativeLoweringError(f"recurrent gradient through activation {name!r}")
    return NATIVE_UNARY_DERIV[name]


def _rnn_grad_lower(kind: str, n_cot: int):
    def lower(kb, op, *inputs, out, activation, go_backwards, return_sequences, masked, zero_output_for_mask,
              recurrent_dropout, recurrent_activation="linear", reset_after=True):
        from graphc.backends.llvm.kernels.recurrent_grad import emit_rnn_grad
        from graphc.ops.elementwise import native_activation

        if recurrent_dropout:
            _refuse_recurrent_dropout(f"{kind}_grad")
        fwd, cots = inputs[:-n_cot], inputs[-n_cot:]
        x, kernel, rkernel, bias = fwd[:4]
        states, mask, _ = split_inputs(fwd[4:], masked, False)
        emit_rnn_grad(kb, kind, x, kernel, rkernel, bias, list(states), list(cots), tuple(out),
                      activation=lambda m, v: native_activation(m, activation, v),
                      activation_deriv=_native_deriv(activation),
                      recurrent_activation=lambda m, v: native_activation(m, recurrent_activation, v),
                      recurrent_deriv=_native_deriv(recurrent_activation),
                      go_backwards=go_backwards, return_sequences=return_sequences, reset_after=reset_after,
                      mask=mask, zero_output_for_mask=zero_output_for_mask)

    return lower


for _op, _n_cot in (("lstm", 3), ("gru", 2), ("simple_rnn", 2)):
    get(f"{_op}_grad").lower = _rnn_grad_lower(_op, _n_cot)


# ---------------------------------------------------------------------------- ONNX: gradients
# ``to_onnx`` facets of the backward ops (training-step exports): backpropagation through time
# unrolled over the (fixed) number of steps, in the references' formulas: the forward steps are
# recomputed keeping each step's gates, then walked back; the input projection's and the
# recurrent kernel's gradients are one MatMul each over all steps. Unrolled rather than a Loop or
# Scan: every step is plain ONNX arithmetic that onnxruntime runs and ONNX shape inference
# follows, and the graph reads like the reference. A free sequence length has no fixed number
# of steps to unroll and is refused, naming the layer.

class _OnnxBackward:
    """The unrolled backward pass of one recurrent op: the steps' inputs and the shared pieces."""

    def __init__(self, ctx, op, gates: int, n_cot: int):
        from graphc.ops.elementwise import onnx_activation, onnx_activation_derivative

        self.ctx, self.a = ctx, ctx.attrs
        self._act, self._deriv = onnx_activation, onnx_activation_derivative
        x_t = ctx.input_type(0)
        steps = x_t.shape[1]
        if not isinstance(steps, int) or steps < 1:
            raise ctx.error(f"the ONNX {op.type} unrolls backpropagation through time over a fixed number of steps; "
                            f"this sequence has {steps} steps (give the layer's input a fixed length to export "
                            "its training step)")
        self.steps, self.gates = steps, gates
        self.dtype = x_t.dtype
        self.u = int(ctx.input_type(2).shape[0])
        self.n_features = x_t.shape[2]
        names = list(op.inputs)
        fwd, self.cots = names[:-n_cot], names[-n_cot:]
        self.kernel, self.rkernel, self.bias = fwd[1:4]
        self.states, mask, self.drop = split_inputs(fwd[4:], self.a["masked"], self.a["recurrent_dropout"])
        self.x = self._in_order(fwd[0])
        self.zeros = ctx.filled(ctx.shape([x_t.shape[0], self.u]), 0.0, self.dtype)
        self.kept: list[str] | None = None
        self.weights: list[str | None] = [None] * steps  # output weights (None: 1)
        if mask is not None:
            m = self._in_order(mask)
            zero = ctx.scalar(0, ctx.input_type(len(fwd) - 1 - int(self.a["recurrent_dropout"])).dtype)
            self.kept = [ctx.unsqueeze(ctx.node("Not", [ctx.node("Equal", [self.at(m, t), zero])]), [1])
                         for t in range(steps)]
            seen = None
            for t, k in enumerate(self.kept):
                seen = k if seen is None else ctx.node("Or", [seen, k])
                self.weights[t] = ctx.cast(k if self.a["zero_output_for_mask"] else seen, self.dtype)

    # ------------------------------------------------------------------ pieces
    def _in_order(self, v: str) -> str:
        """``v`` (N, T, ...) in processing order (reversed with go_backwards)."""
        return self.ctx.slice(v, [-1], [-(2 ** 63)], [1], [-1]) if self.a["go_backwards"] else v

    def at(self, v: str, t: int) -> str:
        return self.ctx.node("Gather", [v, self.ctx.scalar(t, "int64")], axis=1)

    def block(self, v: str, g: int, count: int = 1) -> str:
        return self.ctx.slice(v, [g * self.u], [(g + count) * self.u], [-1])

    def op(self, kind: str, *inputs: str) -> str:
        return self.ctx.node(kind, list(inputs))

    def c(self, value: float) -> str:
        return self.ctx.scalar(value, self.dtype)

    def act(self, name: str, v: str) -> str:
        return self._act(self.ctx, name, v)

    def times_deriv(self, d: str, name: str, pre: str, post: str | None = None) -> str:
        """``d * f'(pre)``; sigmoid and tanh from their output ``post`` as the references do."""
        if name in (None, "linear"):
            return d
        if post is not None and name == "sigmoid":
            return self.op("Mul", d, self.op("Mul", post, self.op("Sub", self.c(1.0), post)))
        if post is not None and name == "tanh":
            return self.op("Mul", d, self.op("Sub", self.c(1.0), self.op("Mul", post, post)))
        return self.op("Mul", d, self._deriv(self.ctx, name, pre))

    def keep(self, t: int, new: str, old: str) -> str:
        return new if self.kept is None else self.ctx.node("Where", [self.kept[t], new, old])

    def masked(self, t: int, v: str) -> str:
        return v if self.kept is None else self.op("Mul", v, self.ctx.cast(self.kept[t], self.dtype))

    def dropped(self, h: str, g: int, count: int = 1) -> str:
        return h if self.drop is None else self.op("Mul", h, self.block(self.drop, g, count))

    def initial(self, k: int) -> str:
        return self.ctx.input_name(4 + k) if self.states else self.zeros

    def projection(self, bias: str) -> str:
        """All steps' input projections (N, T, G*U) in processing order."""
        return self.op("Add", self.op("MatMul", self.x, self.kernel), bias)

    def recurrent(self, h: str, first: int, count: int) -> str:
        """``h @ recurrent_kernel`` over gate blocks [first, first + count), each reading h times its multipliers."""
        if self.drop is None:
            return self.op("MatMul", h, self.block(self.rkernel, first, count))
        parts = [self.op("MatMul", self.dropped(h, g), self.block(self.rkernel, g))
                 for g in range(first, first + count)]
        return parts[0] if count == 1 else self.ctx.node("Concat", parts, axis=1)

    def recurrent_back(self, dz: str, first: int, count: int) -> str:
        """The previous state's gradient from gate blocks [first, first + count) of ``dz``."""
        rk = self.block(self.rkernel, first, count)
        if self.drop is None:
            return self.op("MatMul", dz, self.ctx.transpose(rk, [1, 0]))
        total = None
        for k, g in enumerate(range(first, first + count)):
            back = self.op("MatMul", self.block(dz, k), self.ctx.transpose(self.block(self.rkernel, g), [1, 0]))
            back = self.op("Mul", back, self.block(self.drop, g))
            total = back if total is None else self.op("Add", total, back)
        return total

    def stack(self, per_step: list[str]) -> str:
        """(N, X) per step -> (N, T, X)."""
        parts = [self.ctx.unsqueeze(v, [1]) for v in per_step]
        return parts[0] if len(parts) == 1 else self.ctx.node("Concat", parts, axis=1)

    def rows(self, v: str, width) -> str:
        return self.ctx.node("Reshape", [v, self.ctx.ints([-1, width])])

    def kernel_grad(self, lhs: str, lhs_width, d: str, d_width: int) -> str:
        """sum over batch and steps of lhs^T @ d: lhs (N, T, lhs_width), d (N, T, d_width)."""
        return self.op("MatMul", self.ctx.transpose(self.rows(lhs, lhs_width), [1, 0]), self.rows(d, d_width))

    def rk_grad(self, h_prev: str, d: str, first: int, count: int) -> str:
        """The recurrent kernel's gradient for gate blocks [first, first + count)."""
        if self.drop is None:
            return self.kernel_grad(h_prev, self.u, d, count * self.u)
        parts = []
        for k, g in enumerate(range(first, first + count)):
            hd = self.op("Mul", h_prev, self.ctx.unsqueeze(self.block(self.drop, g), [1]))
            parts.append(self.kernel_grad(hd, self.u, self.block(d, k), self.u))
        return parts[0] if count == 1 else self.ctx.node("Concat", parts, axis=1)

    def dh_final(self) -> str:
        d_out, d_h = self.cots[0], self.cots[1]
        if self.a["return_sequences"]:
            return d_h
        last = d_out if self.weights[-1] is None else self.op("Mul", d_out, self.weights[-1])
        return self.op("Add", d_h, last)

    def dh_step(self, dh: str, t: int) -> str:
        if not self.a["return_sequences"]:
            return dh
        d = self.at(self.cots[0], t)
        return self.op("Add", dh, d if self.weights[t] is None else self.op("Mul", d, self.weights[t]))

    def inputs_grads(self, dproj: str) -> tuple[str, str]:
        """(dx, d_kernel) from the projections' gradient (N, T, G*U)."""
        ctx = self.ctx
        dxs = self.op("MatMul", dproj, ctx.transpose(self.kernel, [1, 0]))
        dx = self._in_order(dxs)
        width = self.gates * self.u
        return dx, self.kernel_grad(self.x, self.n_features, dproj, width)

    def outputs(self, *values: str) -> None:
        for k, v in enumerate(values):
            self.ctx.node("Identity", [v], self.ctx.output_name(k))


def _lstm_grad_to_onnx(ctx, op):
    bw = _OnnxBackward(ctx, op, 4, 3)
    act, ract = bw.a["activation"], bw.a["recurrent_activation"]
    proj = bw.projection(bw.bias)
    h, c = bw.initial(0), bw.initial(1)
    saved = []
    for t in range(bw.steps):
        z = bw.op("Add", bw.at(proj, t), bw.recurrent(h, 0, 4))
        pre = [bw.block(z, g) for g in range(4)]
        i, f, g, o = (bw.act(name, p) for name, p in zip((ract, ract, act, ract), pre))
        c_new = bw.op("Add", bw.op("Mul", f, c), bw.op("Mul", i, g))
        ac = bw.act(act, c_new)
        saved.append((h, c, pre, (i, f, g, o), c_new, ac))
        h, c = bw.keep(t, bw.op("Mul", o, ac), h), bw.keep(t, c_new, c)
    dh, dc = bw.dh_final(), bw.cots[2]
    dzs: list[str] = [""] * bw.steps
    for t in reversed(range(bw.steps)):
        dh = bw.dh_step(dh, t)
        h_prev, c_prev, pre, (i, f, g, o), c_new, ac = saved[t]
        dc_t = bw.op("Add", dc, bw.times_deriv(bw.op("Mul", dh, o), act, c_new, ac))
        parts = [bw.times_deriv(bw.op("Mul", dc_t, g), ract, pre[0], i),
                 bw.times_deriv(bw.op("Mul", dc_t, c_prev), ract, pre[1], f),
                 bw.times_deriv(bw.op("Mul", dc_t, i), act, pre[2], g),
                 bw.times_deriv(bw.op("Mul", dh, ac), ract, pre[3], o)]
        dz = bw.masked(t, ctx.node("Concat", parts, axis=1))
        dzs[t] = dz
        dh = bw.keep(t, bw.recurrent_back(dz, 0, 4), dh)
        dc = bw.keep(t, bw.op("Mul", dc_t, f), dc)
    dproj = bw.stack(dzs)
    dx, dw = bw.inputs_grads(dproj)
    d_rk = bw.rk_grad(bw.stack([s[0] for s in saved]), dproj, 0, 4)
    bw.outputs(dx, dw, d_rk, ctx.reduce("ReduceSum", dproj, [0, 1], False), dh, dc)


def _gru_grad_to_onnx(ctx, op):
    bw = _OnnxBackward(ctx, op, 3, 2)
    act, ract, after = bw.a["activation"], bw.a["recurrent_activation"], bw.a["reset_after"]
    bias_in = bw.ctx.node("Gather", [bw.bias, ctx.scalar(0, "int64")], axis=0) if after else bw.bias
    bias_rec = bw.ctx.node("Gather", [bw.bias, ctx.scalar(1, "int64")], axis=0) if after else None
    proj = bw.projection(bias_in)
    h = bw.initial(0)
    saved = []
    for t in range(bw.steps):
        px = bw.at(proj, t)
        inner = bw.op("Add", bw.recurrent(h, 0, 3), bias_rec) if after else bw.recurrent(h, 0, 2)
        zpre = bw.op("Add", bw.block(px, 0), bw.block(inner, 0))
        rpre = bw.op("Add", bw.block(px, 1), bw.block(inner, 1))
        z, r = bw.act(ract, zpre), bw.act(ract, rpre)
        hd = bw.dropped(h, 2)
        rh = bw.op("Mul", r, hd) if not after else None
        rec_h = bw.op("Mul", r, bw.block(inner, 2)) if after else bw.op("MatMul", rh, bw.block(bw.rkernel, 2))
        hpre = bw.op("Add", bw.block(px, 2), rec_h)
        hh = bw.act(act, hpre)
        saved.append((h, inner, zpre, rpre, hpre, z, r, hh, rh))
        new = bw.op("Add", bw.op("Mul", z, h), bw.op("Mul", bw.op("Sub", bw.c(1.0), z), hh))
        h = bw.keep(t, new, h)
    dh = bw.dh_final()
    dprojs, dinners, dhpres = [""] * bw.steps, [""] * bw.steps, [""] * bw.steps
    for t in reversed(range(bw.steps)):
        dh = bw.dh_step(dh, t)
        h_prev, inner, zpre, rpre, hpre, z, r, hh, rh = saved[t]
        dhk = bw.masked(t, dh)
        dz = bw.op("Mul", dhk, bw.op("Sub", h_prev, hh))
        dh_prev = bw.op("Mul", dhk, z)
        dhpre = bw.times_deriv(bw.op("Mul", dhk, bw.op("Sub", bw.c(1.0), z)), act, hpre, hh)
        if after:
            dr = bw.op("Mul", dhpre, bw.block(inner, 2))
        else:
            d_rh = bw.op("MatMul", dhpre, ctx.transpose(bw.block(bw.rkernel, 2), [1, 0]))
            dr = bw.op("Mul", d_rh, bw.dropped(h_prev, 2))
            dh_prev = bw.op("Add", dh_prev, bw.dropped(bw.op("Mul", d_rh, r), 2))
        dzpre, drpre = bw.times_deriv(dz, ract, zpre, z), bw.times_deriv(dr, ract, rpre, r)
        dprojs[t] = ctx.node("Concat", [dzpre, drpre, dhpre], axis=1)
        dhpres[t] = dhpre
        if after:
            dinners[t] = ctx.node("Concat", [dzpre, drpre, bw.op("Mul", dhpre, r)], axis=1)
            dh_prev = bw.op("Add", dh_prev, bw.recurrent_back(dinners[t], 0, 3))
        else:
            dinners[t] = ctx.node("Concat", [dzpre, drpre], axis=1)
            dh_prev = bw.op("Add", dh_prev, bw.recurrent_back(dinners[t], 0, 2))
        dh = bw.keep(t, dh_prev, dh)
    dproj = bw.stack(dprojs)
    dinner = bw.stack(dinners)
    dx, dw = bw.inputs_grads(dproj)
    h_prevs = bw.stack([s[0] for s in saved])
    if after:
        d_rk = bw.rk_grad(h_prevs, dinner, 0, 3)
        d_bin = ctx.reduce("ReduceSum", dproj, [0, 1], False)
        d_brec = ctx.reduce("ReduceSum", dinner, [0, 1], False)
        db = ctx.node("Concat", [ctx.unsqueeze(d_bin, [0]), ctx.unsqueeze(d_brec, [0])], axis=0)
    else:
        d_rk_h = bw.kernel_grad(bw.stack([s[8] for s in saved]), bw.u, bw.stack(dhpres), bw.u)
        d_rk = ctx.node("Concat", [bw.rk_grad(h_prevs, dinner, 0, 2), d_rk_h], axis=1)
        db = ctx.reduce("ReduceSum", dproj, [0, 1], False)
    bw.outputs(dx, dw, d_rk, db, dh)


def _simple_rnn_grad_to_onnx(ctx, op):
    bw = _OnnxBackward(ctx, op, 1, 2)
    act = bw.a["activation"]
    proj = bw.projection(bw.bias)
    h = bw.initial(0)
    saved = []
    for t in range(bw.steps):
        pre = bw.op("Add", bw.at(proj, t), bw.recurrent(h, 0, 1))
        post = bw.act(act, pre)
        saved.append((h, pre, post))
        h = bw.keep(t, post, h)
    dh = bw.dh_final()
    dpres = [""] * bw.steps
    for t in reversed(range(bw.steps)):
        dh = bw.dh_step(dh, t)
        h_prev, pre, post = saved[t]
        dpre = bw.masked(t, bw.times_deriv(dh, act, pre, post))
        dpres[t] = dpre
        dh = bw.keep(t, bw.recurrent_back(dpre, 0, 1), dh)
    dproj = bw.stack(dpres)
    dx, dw = bw.inputs_grads(dproj)
    d_rk = bw.rk_grad(bw.stack([s[0] for s in saved]), dproj, 0, 1)
    bw.outputs(dx, dw, d_rk, ctx.reduce("ReduceSum", dproj, [0, 1], False), dh)


get("lstm_grad").to_onnx = _lstm_grad_to_onnx
get("gru_grad").to_onnx = _gru_grad_to_onnx
get("simple_rnn_grad").to_onnx = _simple_rnn_grad_to_onnx
