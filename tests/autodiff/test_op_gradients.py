"""Every differentiable op's ``vjp`` checked against central differences (float64, odd sizes).

The op list comes from the registry: an op with neither ``vjp`` nor ``not_differentiable``
fails the meta-test, and so does a differentiable op without a case below.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ops import REGISTRY
from graphc.ops.conv import keras_pads
from graphc.ops.elementwise import UNARY
from tests.autodiff.gradcheck import Arg, Case, check_case


def A(*shape, draw="normal", **kw) -> Arg:
    return Arg(tuple(shape), draw=draw, **kw)


_UNARY_DRAW = {"log": "positive", "sqrt": "positive", "reciprocal": "away", "abs": "away", "relu": "away",
               "hard_sigmoid": "normal"}

CASES: list[Case] = []
for _name in UNARY:
    CASES.append(Case(_name, [A(3, 7, draw=_UNARY_DRAW.get(_name, "normal"))], id=_name))
CASES += [
    Case("relu", [A(17, draw="away")], {"negative_slope": 0.2, "threshold": 0.1}, id="leaky_relu"),
    Case("relu", [A(3, 7, draw="away")], {"max_value": 1.0}, id="relu_max"),
    Case("elu", [A(7, draw="away")], {"alpha": 0.5}, id="elu_alpha"),
    Case("gelu", [A(7)], {"approximate": True}, id="gelu_tanh"),
    Case("add", [A(3, 7), A(7)], id="add_bcast"),
    Case("add", [A(3, 1, 5), A(1, 4, 1)], id="add_bcast_both"),
    Case("sub", [A(3, 7), A(3, 1)], id="sub"),
    Case("mul", [A(1, 7), A(3, 1)], id="mul"),
    Case("div", [A(3, 7), A(7, draw="away")], id="div"),
    Case("maximum", [A(3, 7), A(3, 7)], id="maximum"),
    Case("minimum", [A(3, 7), A(7)], id="minimum"),
    Case("pow", [A(3, 7, draw="positive"), A(7)], id="pow"),
    Case("add_n", [A(3, 7), A(7), A(3, 1)], id="add_n"),
    Case("cast", [A(3, 7)], {"dtype": "float32"}, id="cast", rtol=1e-3, atol=1e-4),
    Case("identity", [A(5)], id="identity"),
    Case("dropout", [A(5)], {"rate": 0.3}, id="dropout_inference"),
    Case("clip", [A(3, 7)], {"min": -0.5, "max": 0.5}, id="clip"),
    Case("where", [A(3, 7, draw="bool", dtype="bool"), A(3, 7), A(7)], id="where"),
    Case("broadcast_like", [A(1, 7), A(3, 7, differentiate=False)], id="broadcast_like"),
    Case("matmul", [A(3, 5), A(5, 7)], id="matmul_2d"),
    Case("matmul", [A(2, 3, 5), A(5, 7)], id="matmul_rows"),
    Case("matmul", [A(5), A(5, 7)], id="matmul_vector"),
    Case("matmul", [A(2, 3, 5), A(1, 5, 4)], id="matmul_batched"),
    Case("bias_add", [A(3, 4, 5), A(4)], {"axis": 1}, id="bias_add_axis1"),
    Case("bias_add", [A(3, 7), A(7)], id="bias_add"),
    Case("reshape", [A(3, 4, 5)], {"shape": (3, -1)}, id="reshape"),
    Case("transpose", [A(3, 4, 5)], {"perm": (2, 0, 1)}, id="transpose"),
    Case("concat", [A(3, 2), A(3, 5), A(3, 1)], {"axis": -1}, id="concat"),
    Case("concat", [A(1, 4), A(3, 4)], {"axis": 0}, id="concat_axis0"),
    Case("slice", [A(3, 11)], {"axis": 1, "start": 2, "stop": 9, "step": 3}, id="slice"),
    Case("slice_grad", [A(3, 11, differentiate=False), A(3, 3)], {"axis": 1, "start": 2, "stop": 9, "step": 3},
         id="slice_grad"),
    Case("expand_dims", [A(3, 5)], {"axis": -1}, id="expand_dims"),
    Case("squeeze", [A(3, 1, 5)], {"axis": 1}, id="squeeze"),
    Case("gather", [A(7, 3), A(4, 5, draw="ids:7", dtype="int32")], id="gather"),
    Case("pad", [A(2, 3, 5)], {"pads": ((0, 0), (1, 2), (3, 0))}, id="pad"),
    Case("resize", [A(2, 5, 4, 3)], {"axes": (1, 2), "size": (11, 3)}, id="resize"),
    Case("reduce_sum", [A(3, 4, 5)], {"axes": (0, 2)}, id="reduce_sum"),
    Case("reduce_sum", [A(3, 4, 5)], {"axes": (1,), "keepdims": True}, id="reduce_sum_keep"),
    Case("reduce_mean", [A(3, 4, 5)], {"axes": (-1,)}, id="reduce_mean"),
    Case("reduce_max", [A(3, 4, 5)], {"axes": (1,)}, id="reduce_max"),
    Case("reduce_min", [A(3, 4, 5)], {"axes": (0, 1), "keepdims": True}, id="reduce_min"),
    Case("softmax", [A(3, 7)], id="softmax"),
    Case("softmax", [A(3, 4, 5)], {"axis": 1}, id="softmax_axis1"),
    Case("log_softmax", [A(3, 7)], id="log_softmax"),
    Case("l2_normalize", [A(3, 7)], id="l2_normalize"),
    Case("conv", [A(2, 7, 5, 3), A(3, 2, 3, 4)], id="conv2d_valid"),
    Case("conv", [A(1, 7, 6, 3), A(3, 3, 3, 5)],
         {"strides": (2, 2), "pads": keras_pads("same", (7, 6), (3, 3), (2, 2))}, id="conv2d_same_stride2"),
    Case("conv", [A(2, 9, 3), A(3, 3, 2)], {"dilations": (2,), "pads": ((4, 0),)}, id="conv1d_causal_dilated"),
    Case("conv", [A(2, 5, 5, 3), A(3, 3, 1, 6)], {"groups": 3, "pads": ((1, 1), (1, 1))}, id="conv_depthwise"),
    Case("conv", [A(2, 5, 4), A(2, 2, 6)], {"groups": 2, "strides": (2,)}, id="conv_grouped"),
    Case("conv", [A(2, 3, 2), A(3, 2, 3)], {"strides": (4,), "dilations": (3,), "pads": ((5, 6),)},
         id="conv1d_pads_beyond_input"),
    Case("conv_transpose", [A(2, 3, 4, 3), A(3, 2, 5, 3)], {"strides": (2, 1), "pads": ((1, 1), (0, 1)),
         "output_padding": (1, 0)}, id="conv_transpose2d_stride2"),
    Case("conv_transpose", [A(2, 4, 3), A(3, 2, 3)], {"dilations": (2,), "pads": ((1, 2),)},
         id="conv_transpose1d_dilated"),
    Case("max_pool", [A(2, 7, 5, 3)], {"kernel": (2, 2), "strides": (2, 2), "pads": ((0, 1), (0, 1))},
         id="max_pool_same"),
    Case("max_pool", [A(2, 11, 3)], {"kernel": (3,), "strides": (2,)}, id="max_pool_1d"),
    Case("avg_pool", [A(2, 7, 5, 3)], {"kernel": (3, 3), "strides": (2, 2), "pads": ((1, 1), (1, 1))},
         id="avg_pool_same"),
    Case("avg_pool", [A(1, 9, 2)], {"kernel": (2,)}, id="avg_pool_1d"),
    Case("batch_norm", [A(3, 5, 4), A(4), A(4), A(4), A(4, draw="positive")], id="batch_norm"),
    Case("batch_norm", [A(3, 4, 5), A(4), A(4), A(4), A(4, draw="positive")], {"axis": 1, "epsilon": 0.01},
         id="batch_norm_axis1"),
    Case("layer_norm", [A(3, 7), A(7), A(7)], {"axes": (-1,)}, id="layer_norm"),
    Case("lstm", [A(2, 5, 3), A(3, 12), A(3, 12), A(12)], id="lstm"),
    Case("fused_matmul", [A(2, 3, 5), A(5, 4), A(4)], {"has_bias": True, "activation": "tanh"}, id="fused_matmul"),
    Case("fused_matmul", [A(3, 5), A(5, 4), A(4), A(3, 4)],
         {"has_bias": True, "activation": "elu", "has_residual": True, "post_activation": "sigmoid"},
         id="fused_matmul_residual"),
    Case("fused_matmul", [A(3, 5), A(5, 4), A(3, 4)], {"has_residual": True}, id="fused_matmul_residual_linear"),
    Case("fused_conv", [A(2, 5, 4, 3), A(3, 3, 3, 4), A(4)],
         {"has_bias": True, "activation": "softplus", "strides": (2, 1), "pads": ((1, 1), (1, 1))},
         id="fused_conv"),
    Case("fused_separable_conv", [A(2, 5, 5, 2), A(3, 3, 1, 4), A(4, 3), A(3), A(2, 3, 3, 3)],
         {"groups": 2, "has_bias": True, "has_residual": True, "activation": "tanh"}, id="fused_separable_conv"),
    Case("scale_shift", [A(2, 3, 4), A(3), A(3)], {"axis": 1}, id="scale_shift"),
    Case("lstm", [A(3, 4, 2), A(2, 8), A(2, 8), A(8), A(3, 2), A(3, 2)],
         {"return_sequences": True, "go_backwards": True}, id="lstm_states_sequences_backwards"),
    Case("lstm", [A(1, 3, 2), A(2, 8), A(2, 8), A(8)], {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
         id="lstm_relu"),
    Case("gru", [A(2, 5, 3), A(3, 9), A(3, 9), A(2, 9)], id="gru"),
    Case("gru", [A(2, 4, 3), A(3, 9), A(3, 9), A(9), A(2, 3)],
         {"reset_after": False, "return_sequences": True}, id="gru_reset_before_states"),
    Case("gru", [A(2, 4, 3), A(3, 6), A(2, 6), A(2, 6)], {"go_backwards": True, "return_sequences": True},
         id="gru_backwards"),
    Case("simple_rnn", [A(2, 5, 3), A(3, 4), A(4, 4), A(4)], id="simple_rnn"),
    Case("reverse_time", [A(2, 5, 3)], id="reverse_time"),
    Case("simple_rnn", [A(2, 5, 3), A(3, 4), A(4, 4), A(4), A(2, 4)],
         {"return_sequences": True, "go_backwards": True, "activation": "sigmoid"}, id="simple_rnn_states"),
    Case("layer_norm", [A(2, 3, 5), A(3, 5), A(3, 5)], {"axes": (1, 2)}, id="layer_norm_2axes"),
    Case("layer_norm", [A(2, 3, 5), A(2, 5), A(2, 5)], {"axes": (0, 2)}, id="layer_norm_outer_axes"),
    Case("l2_normalize", [A(3, 7, draw="normal", value=np.full((3, 7), 1e-4))], {"axis": -1, "epsilon": 1e-3},
         id="l2_normalize_floor"),
    Case("sum_to", [A(2, 3, 7), A(3, 1, differentiate=False)], id="sum_to"),
    Case("cross_replica_sum", [A(3, 7)], id="cross_replica_sum_one_replica"),  # replicas: tests/ops/test_collective.py
]

CASES += [  # fused ops (graphc/ops/fused.py): differentiated through their unfused form
    Case("fused_matmul", [A(3, 5), A(5, 4), A(4), A(3, 4)], {"has_bias": True, "has_residual": True,
         "activation": "tanh", "post_activation": "sigmoid"}, id="fused_matmul"),
    Case("fused_matmul", [A(2, 3, 5), A(5, 4)], {"activation": "elu"}, id="fused_matmul_pixels"),
    Case("fused_conv", [A(2, 5, 4, 3), A(3, 2, 3, 4), A(4), A(2, 3, 4, 4)], {"has_bias": True, "has_residual": True,
         "activation": "tanh", "pads": ((0, 0), (0, 1))}, id="fused_conv"),
    Case("fused_separable_conv", [A(1, 5, 5, 3), A(3, 3, 1, 6), A(6, 2), A(2)], {"groups": 3, "has_bias": True,
         "activation": "softplus", "pads": ((1, 1), (1, 1))}, id="fused_separable_conv"),
    Case("scale_shift", [A(3, 4, 5), A(4), A(4)], {"axis": 1}, id="scale_shift"),
]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_op_has_a_vjp_or_is_marked_not_differentiable(name):
    opdef = REGISTRY[name]
    assert opdef.vjp is not None or opdef.not_differentiable, (
        f"op {name!r} has neither a vjp facet nor not_differentiable=True")


@pytest.mark.parametrize("name", sorted(n for n, d in REGISTRY.items() if d.vjp is not None))
def test_every_differentiable_op_has_a_gradient_case(name):
    assert any(c.op == name for c in CASES), f"op {name!r} has a vjp but no gradient check case"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vjp_matches_central_differences(case, rng):
    check_case(case, rng)
