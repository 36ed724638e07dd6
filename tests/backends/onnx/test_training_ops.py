"""The training-only ops (backward kernels) exported to ONNX and run in onnxruntime against the reference.

These ops appear in training-step graphs (``graphc.onnx.export_training_step``). Each case builds
a one-op graph with a free ``batch`` (sizes 1, 3 and 7) and, where it matters, a free length, and
compares onnxruntime with the reference interpreter. Weights are graph inputs here, as in an
exported training step (the weights are fed in), and constants in the ``_const`` cases. Pooling
gradients also run on inputs drawn from three values, so that windows hold tied maxima.
``TRAINING_CASES`` is read by the registry meta-test in ``test_ops.py``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphc.backends.onnx import export_graph, verify_graph
from graphc.ops.conv import keras_pads
from tests.backends.onnx.test_ops import Case, In, W, build

SIZES = ({"batch": 1, "seq": 7}, {"batch": 3, "seq": 3}, {"batch": 7, "seq": 1})
TRAINING_CASES: list[Case] = []


def case(op: str, *args, sizes=SIZES, id: str = "", **attrs) -> None:
    TRAINING_CASES.append(Case(op, list(args), attrs, sizes, None, id or op))


def _conv_cases(op: str) -> None:
    """conv_grad_input (dy, w, x) and conv_grad_kernel (x, dy, w) for one set of convolutions."""
    geometries = [  # x, kernel shape, dy, attrs, id
        (("batch", 7, 7, 3), (3, 3, 3, 4), ("batch", 4, 4, 4),
         {"strides": (2, 2), "pads": keras_pads("same", (7, 7), (3, 3), (2, 2))}, "2d_same_stride2"),
        (("batch", 7, 7, 3), (2, 2, 3, 1), ("batch", 3, 3, 1), {"strides": (2, 2)}, "2d_valid_stride2_unread_row"),
        (("batch", 7, 1), (2, 1, 3), ("batch", 4, 3), {"dilations": (3,)}, "1d_dilated"),
        (("batch", 5, 5, 3), (3, 3, 1, 6), ("batch", 5, 5, 6), {"pads": ((1, 1), (1, 1)), "groups": 3},
         "depthwise"),
        (("batch", 7, 4), (3, 2, 6), ("batch", 3, 6), {"strides": (2,), "groups": 2}, "grouped_stride2"),
        (("batch", "seq", 3), (3, 3, 2), ("batch", "(seq + 1) // 2", 2),
         {"strides": (2,), "pads": keras_pads("same", ("seq",), (3,), (2,))}, "1d_same_free_length"),
    ]
    for x, k, dy, attrs, name in geometries:
        args = [In(dy), In(k), In(x)] if op == "conv_grad_input" else [In(x), In(dy), In(k)]
        case(op, *args, id=f"{op}_{name}", **attrs)
    const = [In(("batch", 7, 7, 4)), W(3, 3, 3, 4), In(("batch", 7, 7, 3))] if op == "conv_grad_input" else \
        [In(("batch", 7, 7, 3)), In(("batch", 7, 7, 4)), W(3, 3, 3, 4)]
    case(op, *const, id=f"{op}_const", pads=((1, 1), (1, 1)))


_conv_cases("conv_grad_input")
_conv_cases("conv_grad_kernel")

for _op in ("max_pool_grad", "avg_pool_grad"):
    for _draw in ("normal", "ties"):
        case(_op, In(("batch", 7, 7, 3), draw=_draw), In(("batch", 3, 3, 3)), kernel=(2, 2), strides=(2, 2),
             id=f"{_op}_2x2_stride2_unread_row_{_draw}")
        case(_op, In(("batch", 7, 7, 3), draw=_draw), In(("batch", 4, 4, 3)), kernel=(3, 3), strides=(2, 2),
             pads=keras_pads("same", (7, 7), (3, 3), (2, 2)), id=f"{_op}_3x3_same_stride2_{_draw}")
    case(_op, In(("batch", "seq", 2), draw="ties"), In(("batch", "(seq + 1) // 2", 2)), kernel=(3,), strides=(2,),
         pads=keras_pads("same", ("seq",), (3,), (2,)), id=f"{_op}_1d_same_free_length")
    case(_op, In(("batch", 7, 1), draw="ties"), In(("batch", 7, 1)), kernel=(3,), strides=(1,), pads=((1, 1),),
         id=f"{_op}_1d_overlapping")

case("sum_to", In(("batch", 3, 7)), In((1, 7)), id="sum_to_fixed")
case("sum_to", In((3, "seq", 7)), In(("batch", 1)), id="sum_to_free_dim",
     sizes=({"batch": 1, "seq": 7}, {"batch": 7, "seq": 7}, {"batch": 3, "seq": 3}, {"batch": 1, "seq": 1}))
case("sum_to", In(("batch", 7)), In(("batch", 7)), id="sum_to_same_shape")


_U, _F = 3, 2


def _rnn_case(op: str, steps: int, gates: int, n_states: int, id: str, *, weights_const: bool = False,
              bias_shape: tuple = (), initial: bool = False, masked: bool = False, dropout: bool = False,
              return_sequences: bool = False, **attrs) -> None:
    """``<op>_grad`` over (x, kernel, recurrent_kernel, bias[, states][, mask][, dropout], cotangents)."""
    weights = [W(_F, gates * _U), W(_U, gates * _U), W(*(bias_shape or (gates * _U,)))]
    args = [In(("batch", steps, _F)), *(weights if weights_const else [In(w.shape) for w in weights])]
    args += [In(("batch", _U))] * (n_states if initial else 0)
    args += [In(("batch", steps), draw="mask")] if masked else []
    args += [In(("batch", gates * _U), draw="positive")] if dropout else []
    args += [In(("batch", steps, _U) if return_sequences else ("batch", _U))] + [In(("batch", _U))] * n_states
    case(f"{op}_grad", *args, id=f"{op}_grad_{id}", masked=masked, recurrent_dropout=dropout,
         return_sequences=return_sequences, **attrs)


_rnn_case("lstm", 7, 4, 2, "last_output")
_rnn_case("lstm", 7, 4, 2, "sequences_backwards_masked_initial", return_sequences=True, go_backwards=True,
          masked=True, initial=True)
_rnn_case("lstm", 3, 4, 2, "relu_hard_sigmoid_dropout", activation="relu", recurrent_activation="hard_sigmoid",
          dropout=True)
_rnn_case("lstm", 1, 4, 2, "one_step_const", weights_const=True, return_sequences=True)
_rnn_case("gru", 7, 3, 1, "reset_after", bias_shape=(2, 3 * _U))
_rnn_case("gru", 7, 3, 1, "reset_after_sequences_masked_zero_output_dropout", bias_shape=(2, 3 * _U),
          return_sequences=True, masked=True, zero_output_for_mask=True, dropout=True, initial=True)
_rnn_case("gru", 3, 3, 1, "reset_before_masked", reset_after=False, masked=True)
_rnn_case("gru", 7, 3, 1, "reset_before_backwards_dropout_sequences", reset_after=False, go_backwards=True,
          dropout=True, return_sequences=True)
_rnn_case("simple_rnn", 7, 1, 1, "tanh")
_rnn_case("simple_rnn", 7, 1, 1, "relu_sequences_masked_initial", activation="relu", return_sequences=True,
          masked=True, initial=True)
_rnn_case("simple_rnn", 1, 1, 1, "linear_one_step_dropout", activation="linear", dropout=True)


# the forward recurrent ops with their weights fed at run time, as in a training step
case("lstm", In(("batch", 7, _F)), In((_F, 4 * _U)), In((_U, 4 * _U)), In((4 * _U,)), return_sequences=True,
     id="lstm_weights_as_inputs")
case("gru", In(("batch", 7, _F)), In((_F, 3 * _U)), In((_U, 3 * _U)), In((2, 3 * _U)), In(("batch", 7), draw="mask"),
     masked=True, id="gru_reset_after_masked_weights_as_inputs")
case("gru", In(("batch", 3, _F)), In((_F, 3 * _U)), In((_U, 3 * _U)), In((3 * _U,)), reset_after=False,
     id="gru_reset_before_weights_as_inputs")
case("simple_rnn", In(("batch", 7, _F)), In((_F, _U)), In((_U, _U)), In((_U,)), id="simple_rnn_weights_as_inputs")


def draw(graph, c: Case, sizes: dict, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for name, spec in zip(graph.inputs, [a for a in c.args if isinstance(a, In)]):
        shape = graph.type_of(name).concrete_shape(sizes)
        if spec.draw == "ties":
            feeds[name] = rng.integers(0, 3, size=shape).astype(spec.dtype)
        elif spec.draw == "mask":
            feeds[name] = (rng.random(shape) < 0.6).astype(spec.dtype)
        elif spec.draw == "positive":
            feeds[name] = rng.uniform(0.5, 2.0, size=shape).astype(spec.dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


@pytest.mark.parametrize("c", TRAINING_CASES, ids=[c.id for c in TRAINING_CASES])
def test_training_op_exports_and_matches_the_reference(c, rng):
    graph = build(c)
    model = export_graph(graph)
    onnx.checker.check_model(model, full_check=True)
    for sizes in c.sizes:
        feeds = draw(graph, c, sizes, rng)
        report = verify_graph(graph, feeds)
        assert report.ok, f"{sizes}\n{report}"
