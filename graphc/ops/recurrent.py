"""Recurrent ops: ``lstm``, ``gru`` and ``simple_rnn``, each one whole sequence loop.

Each op takes a batch-major sequence ``x`` of shape (N, T, F) (``T`` may be a free
dimension), Keras's weight layout and optionally the initial state, and returns the
output (the whole sequence (N, T, U) when ``return_sequences``, else the last step
(N, U)) followed by the final state(s) (N, U). The outputs always include the states, so
a layer with ``return_state`` just uses them and one without leaves them unread.

Inputs, in order: ``x, kernel, recurrent_kernel, bias`` and then the initial state
(``h`` for ``gru``/``simple_rnn``; ``h, c`` for ``lstm``) or nothing (zeros). ``bias`` is
always present: a layer without a bias passes zeros. Weight layouts are Keras's:

- ``lstm``: kernel (F, 4U), recurrent_kernel (U, 4U), bias (4U,); gate order i, f, c, o.
- ``gru``: kernel (F, 3U), recurrent_kernel (U, 3U); gate order z, r, h. With
  ``reset_after`` (Keras's default) bias is (2, 3U): row 0 for the input projection,
  row 1 for the recurrent one, and the reset gate multiplies the recurrent projection.
  Without it bias is (3U,) and the reset gate multiplies ``h`` before the projection.
- ``simple_rnn``: kernel (F, U), recurrent_kernel (U, U), bias (U,).

``activation`` / ``recurrent_activation`` name an activation of
:data:`graphc.ops.elementwise.UNARY` or ``"linear"``. With ``go_backwards`` the sequence
is read from its last step to its first and the output sequence is in that (reversed)
order, as in Keras.

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

_RNN_ATTRS = {"activation": "tanh", "recurrent_activation": "sigmoid", "go_backwards": False,
              "return_sequences": False}


def check_activation(op: str, what: str, name: str) -> None:
    """Refuse an activation name that the recurrent ops cannot apply."""
    if name not in ACTIVATIONS:
        raise ShapeError(f"{op} {what} {name!r} is not one of {', '.join(ACTIVATIONS)}")


def _rnn_infer(op: str, gates: int, n_states: int, bias_shape: Callable[[int], tuple[int, ...]],
               types: list[TensorType], activations: dict[str, str],
               return_sequences: bool) -> list[TensorType]:
    """Shape rule shared by the recurrent ops (see the module docstring)."""
    for what, name in activations.items():
        check_activation(op, what, name)
    x, kernel, rkernel, bias = types[:4]
    states = types[4:]
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
    out = (batch, x.shape[1], units) if return_sequences else (batch, units)
    return [TensorType(x.dtype, out)] + [TensorType(x.dtype, (batch, units))] * n_states


def _steps(x: np.ndarray, go_backwards: bool) -> np.ndarray:
    return x[:, ::-1] if go_backwards else x


def _initial(states: tuple, n: int, units: int, dtype, count: int) -> list[np.ndarray]:
    if states:
        return [np.asarray(s, dtype=dtype) for s in states]
    return [np.zeros((n, units), dtype=dtype) for _ in range(count)]


def _run(x, kernel, bias_in, state, step, go_backwards: bool, return_sequences: bool):
    """Run ``step(projected_x_t, state) -> state`` over time; state[0] is the output."""
    n, t, _ = x.shape
    units = state[0].shape[1]
    proj = np.matmul(_steps(x, go_backwards), kernel) + bias_in
    seq = np.empty((n, t, units), dtype=x.dtype) if return_sequences else None
    for i in range(t):
        state = step(proj[:, i], state)
        if seq is not None:
            seq[:, i] = state[0]
    out = seq if seq is not None else state[0].copy()
    return (out, *(s.copy() for s in state))


# ---------------------------------------------------------------- lstm
def _lstm_infer(types, *, activation, recurrent_activation, go_backwards, return_sequences):
    return _rnn_infer("lstm", 4, 2, lambda u: (4 * u,), types,
                      {"activation": activation, "recurrent_activation": recurrent_activation},
                      return_sequences)


def _lstm(x, kernel, rkernel, bias, *states, activation, recurrent_activation, go_backwards,
          return_sequences):
    u = rkernel.shape[0]

    def step(px, state):
        h, c = state
        z = px + h @ rkernel
        i = apply_activation(recurrent_activation, z[:, :u])
        f = apply_activation(recurrent_activation, z[:, u:2 * u])
        g = apply_activation(activation, z[:, 2 * u:3 * u])
        o = apply_activation(recurrent_activation, z[:, 3 * u:])
        c = f * c + i * g
        return o * apply_activation(activation, c), c

    state = _initial(states, x.shape[0], u, x.dtype, 2)
    return _run(x, kernel, bias, state, step, go_backwards, return_sequences)


register(OpDef("lstm", _lstm_infer, _lstm, attrs=dict(_RNN_ATTRS), num_inputs=(4, 6), num_outputs=3,
               fusion_kind="opaque",
               doc="Keras LSTM over a whole sequence: (x, kernel, recurrent_kernel, bias[, h0, c0]) -> "
                   "(output, h, c); gate order i, f, c, o."))


# ---------------------------------------------------------------- gru
def _gru_infer(types, *, activation, recurrent_activation, go_backwards, return_sequences, reset_after):
    return _rnn_infer("gru", 3, 1, lambda u: (2, 3 * u) if reset_after else (3 * u,), types,
                      {"activation": activation, "recurrent_activation": recurrent_activation},
                      return_sequences)


def _gru(x, kernel, rkernel, bias, *states, activation, recurrent_activation, go_backwards,
         return_sequences, reset_after):
    u = rkernel.shape[0]
    bias_in, bias_rec = (bias[0], bias[1]) if reset_after else (bias, None)

    def step(px, state):
        (h,) = state
        if reset_after:
            inner = h @ rkernel + bias_rec
        else:
            inner = h @ rkernel[:, :2 * u]
        z = apply_activation(recurrent_activation, px[:, :u] + inner[:, :u])
        r = apply_activation(recurrent_activation, px[:, u:2 * u] + inner[:, u:2 * u])
        if reset_after:
            rec_h = r * inner[:, 2 * u:]
        else:
            rec_h = (r * h) @ rkernel[:, 2 * u:]
        hh = apply_activation(activation, px[:, 2 * u:] + rec_h)
        return (z * h + (1 - z) * hh,)

    state = _initial(states, x.shape[0], u, x.dtype, 1)
    return _run(x, kernel, bias_in, state, step, go_backwards, return_sequences)


register(OpDef("gru", _gru_infer, _gru, attrs={**_RNN_ATTRS, "reset_after": True}, num_inputs=(4, 5),
               num_outputs=2, fusion_kind="opaque",
               doc="Keras GRU over a whole sequence: (x, kernel, recurrent_kernel, bias[, h0]) -> "
                   "(output, h); gate order z, r, h."))


# ---------------------------------------------------------------- simple_rnn
def _simple_rnn_infer(types, *, activation, go_backwards, return_sequences):
    return _rnn_infer("simple_rnn", 1, 1, lambda u: (u,), types, {"activation": activation},
                      return_sequences)


def _simple_rnn(x, kernel, rkernel, bias, *states, activation, go_backwards, return_sequences):
    u = rkernel.shape[0]

    def step(px, state):
        return (apply_activation(activation, px + state[0] @ rkernel),)

    state = _initial(states, x.shape[0], u, x.dtype, 1)
    return _run(x, kernel, bias, state, step, go_backwards, return_sequences)


register(OpDef("simple_rnn", _simple_rnn_infer, _simple_rnn,
               attrs={"activation": "tanh", "go_backwards": False, "return_sequences": False},
               num_inputs=(4, 5), num_outputs=2, fusion_kind="opaque",
               doc="Keras SimpleRNN over a whole sequence: (x, kernel, recurrent_kernel, bias[, h0]) -> "
                   "(output, h) with h = activation(x_t @ kernel + bias + h @ recurrent_kernel)."))


# ---------------------------------------------------------------------------- ONNX
# ``to_onnx(ctx, op)`` facets (ctx: the ONNX backend's EmitContext). The ONNX LSTM/GRU/RNN ops
# are time-major, with the weights of each gate stacked row-wise: the Keras kernels are
# transposed, the LSTM gates reordered from Keras's i, f, c, o to ONNX's i, o, f, c, and the
# bias laid out as [input bias, recurrent bias]. go_backwards reverses the sequence before
# a forward pass, so the output sequence is in Keras's (reversed) order.

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


def _rnn_to_onnx(ctx, op):
    onnx_type, order = _ONNX_RNN[op.type]
    a = ctx.attrs
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

    w = ctx.derived(1, lambda k: _onnx_gates(k, order), "onnx")
    r = ctx.derived(2, lambda k: _onnx_gates(k, order), "onnx")
    b = ctx.derived(3, bias, "onnx")
    if w is None or r is None or b is None:
        raise ctx.error(f"the ONNX {onnx_type} export needs constant weights (kernel, recurrent_kernel, bias)")
    x = ctx.input_name(0)
    if a["go_backwards"]:
        x = ctx.slice(x, [-1], [-(2 ** 63)], [1], [-1])
    inputs = [ctx.transpose(x, [1, 0, 2]), w, r, b]
    if ctx.num_inputs > 4:  # initial states, after the (absent) sequence_lens
        inputs += [""] + [ctx.unsqueeze(ctx.input_name(i), [0]) for i in range(4, ctx.num_inputs)]
    n_states = 2 if op.type == "lstm" else 1
    outs = ctx.node(onnx_type, inputs, 1 + n_states, hidden_size=units, activations=names,
                    activation_alpha=alphas or None, activation_beta=betas or None, direction="forward",
                    linear_before_reset=int(a["reset_after"]) if op.type == "gru" else None)
    seq, states = outs[0], outs[1:]
    for k, s in enumerate(states):
        ctx.squeeze(s, [0], ctx.output_name(1 + k))
    if a["return_sequences"]:
        ctx.transpose(ctx.squeeze(seq, [1]), [1, 0, 2], ctx.output_name(0))
    else:
        ctx.node("Identity", [ctx.output_name(1)], ctx.output_name(0))


for _name in _ONNX_RNN:
    get(_name).to_onnx = _rnn_to_onnx


# ---------------------------------------------------------------------------- gradients
# ``vjp(ctx, *output_cotangents)`` facets (ctx: the autodiff GradContext) and one backward op per
# recurrent op: ``<op>_grad(x, kernel, recurrent_kernel, bias[, states], d_output, d_state...)``
# with the forward's attributes returns the gradients of (x, kernel, recurrent_kernel, bias)
# and of the initial state(s) (zeros when the forward had none: those outputs go unread).
# The references re-run the forward pass keeping each step's gates, then walk back through
# time (backpropagation through time); the input projection's gradients are one matmul each.

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


def _grad_prologue(arrays, n_cot: int):
    fwd, cots = arrays[:-n_cot], arrays[-n_cot:]
    x, kernel, rkernel, bias = fwd[:4]
    return x, kernel, rkernel, bias, list(fwd[4:]), [np.asarray(c) for c in cots]


def _grad_epilogue(x, xs, kernel, dproj, go_backwards: bool):
    n, t, f = x.shape
    d2 = dproj.reshape(-1, dproj.shape[-1])
    dw = xs.reshape(-1, f).T @ d2
    dxs = (d2 @ kernel.T).reshape(n, t, f)
    return (dxs[:, ::-1] if go_backwards else dxs).astype(x.dtype, copy=False), dw


def _act_and_deriv(name: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f(z), f'(z)); sigmoid and tanh reuse f(z)."""
    a = apply_activation(name, z)
    if name == "sigmoid":
        return a, a * (1 - a)
    if name == "tanh":
        return a, 1 - a * a
    return a, _deriv(name, z)


def _lstm_grad(*arrays, activation, recurrent_activation, go_backwards, return_sequences):
    x, kernel, rkernel, bias, states, (d_out, d_h, d_c) = _grad_prologue(arrays, 3)
    n, t_len, _ = x.shape
    u = rkernel.shape[0]
    act, ract = activation, recurrent_activation
    xs = _steps(x, go_backwards)
    proj = (xs.reshape(n * t_len, -1) @ kernel + bias).reshape(n, t_len, 4 * u)
    h, c = _initial(tuple(states), n, u, x.dtype, 2)
    hs, cs, gates, dgates, acs = [h], [c], [], [], []
    for t in range(t_len):
        z = proj[:, t] + h @ rkernel
        gate = np.empty_like(z)
        dgate = np.empty_like(z)
        for k, name in enumerate((ract, ract, act, ract)):
            gate[:, k * u:(k + 1) * u], dgate[:, k * u:(k + 1) * u] = _act_and_deriv(name, z[:, k * u:(k + 1) * u])
        i, f, g, o = gate[:, :u], gate[:, u:2 * u], gate[:, 2 * u:3 * u], gate[:, 3 * u:]
        c = f * c + i * g
        ac, dac = _act_and_deriv(act, c)
        h = o * ac
        gates.append(gate)
        dgates.append(dgate)
        acs.append((ac, dac))
        hs.append(h)
        cs.append(c)
    dproj = np.empty_like(proj)
    d_rk = np.zeros_like(rkernel)
    dh = d_h.copy() if return_sequences else d_h + d_out
    dc = d_c.copy()
    for t in reversed(range(t_len)):
        if return_sequences:
            dh = dh + d_out[:, t]
        gate, dgate, (ac, dac) = gates[t], dgates[t], acs[t]
        dc = dc + dh * gate[:, 3 * u:] * dac
        dz = dproj[:, t]
        dz[:, :u] = dc * gate[:, 2 * u:3 * u]
        dz[:, u:2 * u] = dc * cs[t]
        dz[:, 2 * u:3 * u] = dc * gate[:, :u]
        dz[:, 3 * u:] = dh * ac
        dz *= dgate
        dc = dc * gate[:, u:2 * u]
        d_rk += hs[t].T @ dz
        dh = dz @ rkernel.T
    dx, dw = _grad_epilogue(x, xs, kernel, dproj, go_backwards)
    return dx, dw, d_rk, dproj.sum(axis=(0, 1)), dh, dc


def _gru_grad(*arrays, activation, recurrent_activation, go_backwards, return_sequences, reset_after):
    x, kernel, rkernel, bias, states, (d_out, d_h) = _grad_prologue(arrays, 2)
    n, t_len, _ = x.shape
    u = rkernel.shape[0]
    act, ract = activation, recurrent_activation
    bias_in, bias_rec = (bias[0], bias[1]) if reset_after else (bias, None)
    xs = _steps(x, go_backwards)
    proj = np.matmul(xs, kernel) + bias_in
    (h,) = _initial(tuple(states), n, u, x.dtype, 1)
    saved = []
    for t in range(t_len):
        px = proj[:, t]
        inner = h @ rkernel + bias_rec if reset_after else h @ rkernel[:, :2 * u]
        zpre, rpre = px[:, :u] + inner[:, :u], px[:, u:2 * u] + inner[:, u:2 * u]
        z, r = apply_activation(ract, zpre), apply_activation(ract, rpre)
        hpre = px[:, 2 * u:] + (r * inner[:, 2 * u:] if reset_after else (r * h) @ rkernel[:, 2 * u:])
        hh = apply_activation(act, hpre)
        saved.append((h, inner, zpre, rpre, hpre, z, r, hh))
        h = z * h + (1 - z) * hh
    dproj = np.empty_like(proj)
    d_rk = np.zeros_like(rkernel)
    d_brec = np.zeros(3 * u, dtype=x.dtype)
    dh = d_h.copy() if return_sequences else d_h + d_out
    for t in reversed(range(t_len)):
        if return_sequences:
            dh = dh + d_out[:, t]
        h_prev, inner, zpre, rpre, hpre, z, r, hh = saved[t]
        dz = dh * (h_prev - hh)
        dh_prev = dh * z
        dhpre = dh * (1 - z) * _deriv(act, hpre)
        if reset_after:
            dr = dhpre * inner[:, 2 * u:]
            d_inner_h = dhpre * r
        else:
            d_rh = dhpre @ rkernel[:, 2 * u:].T
            d_rk[:, 2 * u:] += (r * h_prev).T @ dhpre
            dr = d_rh * h_prev
            dh_prev = dh_prev + d_rh * r
        dzpre, drpre = dz * _deriv(ract, zpre), dr * _deriv(ract, rpre)
        dproj[:, t] = np.concatenate([dzpre, drpre, dhpre], axis=1)
        if reset_after:
            d_inner = np.concatenate([dzpre, drpre, d_inner_h], axis=1)
            d_rk += h_prev.T @ d_inner
            d_brec += d_inner.sum(axis=0)
            dh_prev = dh_prev + d_inner @ rkernel.T
        else:
            d_inner = np.concatenate([dzpre, drpre], axis=1)
            d_rk[:, :2 * u] += h_prev.T @ d_inner
            dh_prev = dh_prev + d_inner @ rkernel[:, :2 * u].T
        dh = dh_prev
    dx, dw = _grad_epilogue(x, xs, kernel, dproj, go_backwards)
    d_bin = dproj.sum(axis=(0, 1))
    db = np.stack([d_bin, d_brec]) if reset_after else d_bin
    return dx, dw, d_rk, db, dh


def _simple_rnn_grad(*arrays, activation, go_backwards, return_sequences):
    x, kernel, rkernel, bias, states, (d_out, d_h) = _grad_prologue(arrays, 2)
    n, t_len, _ = x.shape
    u = rkernel.shape[0]
    xs = _steps(x, go_backwards)
    proj = np.matmul(xs, kernel) + bias
    (h,) = _initial(tuple(states), n, u, x.dtype, 1)
    hs, pres = [h], []
    for t in range(t_len):
        pre = proj[:, t] + h @ rkernel
        h = apply_activation(activation, pre)
        pres.append(pre)
        hs.append(h)
    dproj = np.empty_like(proj)
    d_rk = np.zeros_like(rkernel)
    dh = d_h.copy() if return_sequences else d_h + d_out
    for t in reversed(range(t_len)):
        if return_sequences:
            dh = dh + d_out[:, t]
        dpre = dh * _deriv(activation, pres[t])
        d_rk += hs[t].T @ dpre
        dh = dpre @ rkernel.T
        dproj[:, t] = dpre
    dx, dw = _grad_epilogue(x, xs, kernel, dproj, go_backwards)
    return dx, dw, d_rk, dproj.sum(axis=(0, 1)), dh


for _op, _fwd, _ref, _n_cot, _n_states, _attrs in (
        ("lstm", _lstm_infer, _lstm_grad, 3, 2, dict(_RNN_ATTRS)),
        ("gru", _gru_infer, _gru_grad, 2, 1, {**_RNN_ATTRS, "reset_after": True}),
        ("simple_rnn", _simple_rnn_infer, _simple_rnn_grad, 2, 1,
         {"activation": "tanh", "go_backwards": False, "return_sequences": False})):
    register(OpDef(f"{_op}_grad", _rnn_grad_infer(_fwd, _n_cot, _n_states, _op), _ref, attrs=_attrs,
                   num_inputs=(4 + _n_cot, 4 + _n_states + _n_cot), num_outputs=4 + _n_states,
                   fusion_kind="opaque", not_differentiable=True, training_only=True,
                   doc=f"Backpropagation through time for `{_op}` (same attributes): (x, kernel, "
                       f"recurrent_kernel, bias[, initial states], d_output, d_state...) -> gradients of "
                       f"(x, kernel, recurrent_kernel, bias, initial state(s))."))


def _rnn_vjp(ctx, *douts):
    cots = [d if d is not None else ctx.zeros_like(y) for d, y in zip(douts, ctx.y)]
    grads = ctx.emit(f"{ctx.op.type}_grad", *ctx.x, *cots, **ctx.attrs)
    return list(grads[:len(ctx.x)])


for _op in ("lstm", "gru", "simple_rnn"):
    get(_op).vjp = _rnn_vjp


# ---------------------------------------------------------------- native
# ``lower(kb, op, *inputs, out, **attrs)`` facets for the native backend (graphc.backends.llvm):
# one GEMM for the input projection of all steps, then one kernel running the steps, batch
# rows in parallel (see graphc/backends/llvm/kernels/recurrent.py).

def _rnn_lower(kind: str):
    def lower(kb, op, x, kernel, rkernel, bias, *states, out, activation, go_backwards, return_sequences,
              recurrent_activation="linear", reset_after=True):
        from graphc.ops.elementwise import native_activation

        kb.recurrence(kind, x, kernel, rkernel, bias, states, out,
                      activation=lambda m, v: native_activation(m, activation, v),
                      recurrent_activation=lambda m, v: native_activation(m, recurrent_activation, v),
                      go_backwards=go_backwards, return_sequences=return_sequences, reset_after=reset_after)

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
    def lower(kb, op, *inputs, out, activation, go_backwards, return_sequences, recurrent_activation="linear",
              reset_after=True):
        from graphc.backends.llvm.kernels.recurrent_grad import emit_rnn_grad
        from graphc.ops.elementwise import native_activation

        fwd, cots = inputs[:-n_cot], inputs[-n_cot:]
        x, kernel, rkernel, bias = fwd[:4]
        emit_rnn_grad(kb, kind, x, kernel, rkernel, bias, list(fwd[4:]), list(cots), tuple(out),
                      activation=lambda m, v: native_activation(m, activation, v),
                      activation_deriv=_native_deriv(activation),
                      recurrent_activation=lambda m, v: native_activation(m, recurrent_activation, v),
                      recurrent_deriv=_native_deriv(recurrent_activation),
                      go_backwards=go_backwards, return_sequences=return_sequences, reset_after=reset_after)

    return lower


for _op, _n_cot in (("lstm", 3), ("gru", 2), ("simple_rnn", 2)):
    get(f"{_op}_grad").lower = _rnn_grad_lower(_op, _n_cot)
