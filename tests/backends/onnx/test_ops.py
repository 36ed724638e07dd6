"""Every registered op exported to ONNX and run in onnxruntime against the reference interpreter.

The op list comes from the registry: an op without a ``to_onnx`` facet, or without a case
below, fails the meta-tests. Each case builds a one-op graph with a free ``batch`` (and
often a free ``seq``) dimension and random weights, exports it once, checks it with the
ONNX checker and shape inference, and compares onnxruntime with the reference at two
sizes (batch 1 and 3, sequence lengths 7 and 1 or 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from graphc.backends.onnx import OnnxRuntimeGraph, export_graph, verify_graph
from graphc.backends.reference import run
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import REGISTRY, OpBuilder
from graphc.ops.conv import keras_pads
from graphc.ops.elementwise import UNARY
from tests.backends.onnx.checks import check_model
from tests.onnxruntime_int8 import skip_where_onnxruntime_saturates

SIZES = ({"batch": 1, "seq": 7}, {"batch": 3, "seq": 1})
SIZES_NO_UNIT_SEQ = ({"batch": 1, "seq": 7}, {"batch": 3, "seq": 5})


@dataclass
class In:
    """A graph input: shape over ints and free dims, dtype, and how to draw values."""

    shape: tuple
    dtype: str = "float32"
    draw: str = "normal"  # normal | positive | ids:<n> | wide | bool


@dataclass
class Case:
    op: str
    args: list[Any]  # In (graph input) or np.ndarray (constant)
    attrs: dict = field(default_factory=dict)
    sizes: tuple = SIZES
    opset: int | None = None
    id: str = ""
    random: bool = False  # outputs are random draws: checked for shape and range only


_rng = np.random.default_rng(7)


def W(*shape, low=None):
    """A random weight (not an initializer's output): normal, or uniform in [low, 2) when low is given."""
    if low is not None:
        return _rng.uniform(low, 2.0, size=shape).astype(np.float32)
    return _rng.standard_normal(shape).astype(np.float32)


X = In(("batch", 7))
X3 = In(("batch", 3, 5))
POS = In(("batch", 7), draw="positive")
SEQ = In(("batch", "seq", 5))
IMG = In(("batch", 7, 6, 3))

CASES: list[Case] = []


def case(op, *args, id="", sizes=SIZES, opset=None, **attrs):
    CASES.append(Case(op, list(args), attrs, sizes, opset, id or op))


# ---------------------------------------------------------------- elementwise
for _op in ("sigmoid", "tanh", "exp", "neg", "abs", "square", "softplus", "softsign", "selu", "elu",
            "gelu", "hard_sigmoid", "silu", "hard_silu", "mish", "relu"):
    case(_op, In(("batch", 7), draw="wide"))
for _op in ("log", "sqrt", "reciprocal"):
    case(_op, POS)
case("relu", IMG, id="relu_rank4")
case("relu", X, max_value=6.0, id="relu6")
case("relu", X, negative_slope=0.1, id="leaky_relu")
case("relu", X, threshold=0.5, id="thresholded_relu")
case("relu", In(("batch", 7), draw="wide"), negative_slope=0.2, max_value=1.5, threshold=-0.3, id="relu_all_attrs")
case("elu", X, alpha=0.5, id="elu_alpha")
case("gelu", X, approximate=True, id="gelu_tanh")
case("gelu", X, id="gelu_opset19", opset=19)
case("gelu", X, approximate=True, id="gelu_tanh_opset19", opset=19)
case("hard_silu", In(("batch", 7), draw="wide"), id="hard_silu_opset13", opset=13)
for _op in ("add", "sub", "mul", "div", "maximum", "minimum"):
    case(_op, X3, W(5))
case("add", X3, In(("batch", 1, 5)), id="add_two_inputs")
case("mul", In(("batch", 3, 1)), W(1, 5), id="mul_broadcast_both")
case("add", In(("batch", 4), dtype="int32", draw="ids:9"), np.arange(4, dtype=np.int32), id="add_int32")
case("div", In(("batch", 4), dtype="int32", draw="ids:50"), np.array([3, -2, 7, 1], np.int32), id="div_int32")
case("pow", In(("batch", 7), draw="positive"), W(7))
case("add_n", X3, In(("batch", 3, 5)), W(5))
case("add_n", X, id="add_n_single")
case("cast", In(("batch", 7), draw="wide"), dtype="int32", id="cast_float_to_int")
case("cast", In(("batch", 7), dtype="int64", draw="ids:100"), dtype="float32", id="cast_int_to_float")
case("identity", X3)
case("dropout", X3, rate=0.3)
case("clip", In(("batch", 7), draw="wide"), min=-0.5, max=1.0)
case("clip", X, min=0.0, id="clip_min_only")
case("clip", X, id="clip_no_bounds")
case("clip", In(("batch", 4), dtype="int32", draw="ids:20"), min=3, max=11, id="clip_int32")

# ---------------------------------------------------------------- linalg
case("matmul", X, W(7, 3))
case("matmul", X3, W(5, 4), id="matmul_rank3")
case("matmul", In(("batch", 4, 7)), In(("batch", 7, 3)), id="matmul_batched")
case("matmul", In((7,)), W(7, 3), id="matmul_vector")
case("bias_add", X3, W(5))
case("bias_add", IMG, W(7), axis=1, id="bias_add_axis1")
case("bias_add", In(("batch", 6, 4)), In((6,)), axis=1, id="bias_add_input_bias")

# ---------------------------------------------------------------- shape ops
case("reshape", In(("batch", 4, 6)), shape=("batch", 24))
case("reshape", In(("batch", 4, 6)), shape=("batch", -1), id="reshape_infer")
case("reshape", In(("batch", 4, 6)), shape=("batch", 2, 3, 4), id="reshape_split")
case("reshape", In(("batch", "seq", 6)), shape=("batch*seq", 6), id="reshape_merge_free_dims")
case("reshape", In(("batch", "seq", 6)), shape=(-1, 3, 2), id="reshape_merge_infer")
case("reshape", In(("batch", "seq", 6)), shape=("seq", "batch", 2, 3), id="reshape_computed_target")
case("transpose", X3, perm=(0, 2, 1))
case("transpose", IMG, perm=(0, 3, 1, 2), id="transpose_nchw")
case("concat", X3, In(("batch", 3, 2)), axis=-1)
case("concat", SEQ, In(("batch", 2, 5)), SEQ, axis=1, id="concat_free_axis")
case("slice", X3, axis=2, start=1)
case("slice", X3, axis=-1, start=-3, stop=-1, id="slice_negative")
case("slice", X, axis=1, start=0, stop=7, step=2, id="slice_step")
case("slice", SEQ, axis=1, start=0, stop=-1, id="slice_free_axis", sizes=SIZES_NO_UNIT_SEQ)
case("expand_dims", X3, axis=-1)
case("expand_dims", X3, axis=1, id="expand_dims_middle")
case("squeeze", In(("batch", 1, 5)), axis=1)
case("gather", W(11, 4), In(("batch", "seq"), dtype="int32", draw="ids:11"))
case("gather", W(11, 4), In(("batch", 3), dtype="int64", draw="ids:11"), id="gather_int64")
case("pad", IMG, pads=((0, 0), (1, 2), (0, 1), (0, 0)))
case("pad", SEQ, pads=((0, 0), (2, 0), (1, 1)), value=0.5, id="pad_free_axis_filled")
case("resize", IMG, axes=(1, 2), size=(11, 4), mode="linear")
case("resize", SEQ, axes=(1,), size=("seq*3",), mode="nearest", id="resize_nearest_free_axis")

# ---------------------------------------------------------------- reductions
for _op in ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min"):
    case(_op, X3, axes=(1,))
    case(_op, IMG, axes=(1, 2), keepdims=True, id=f"{_op}_keepdims")
case("reduce_sum", X3, axes=(), id="reduce_sum_no_axes")
case("reduce_mean", SEQ, axes=(-1,), id="reduce_mean_opset13", opset=13)
case("softmax", X3)
case("softmax", X3, axis=1, id="softmax_axis1")
case("softmax", X3, axis=-1, id="softmax_opset11", opset=11)
case("log_softmax", X3)
case("log_softmax", X3, axis=1, id="log_softmax_axis1")
case("l2_normalize", X3)
case("l2_normalize", X3, axis=1, id="l2_normalize_axis1")
case("argmax", X3)
case("argmax", X3, axis=1, id="argmax_axis1")

# ---------------------------------------------------------------- convolution and pooling
_same = keras_pads("same", (7, 6), (3, 3), (1, 1))
case("conv", IMG, W(3, 3, 3, 4), pads=_same, id="conv2d_same")
case("conv", IMG, W(3, 3, 3, 4), strides=(2, 2), pads=((0, 1), (1, 1)), id="conv2d_stride2_asymmetric")
case("conv", IMG, W(2, 3, 3, 5), dilations=(2, 1), id="conv2d_dilated")
case("conv", In(("batch", 7, 6, 4)), W(3, 3, 2, 6), groups=2, id="conv2d_grouped")
case("conv", IMG, W(3, 3, 1, 6), groups=3, pads=_same, id="conv2d_depthwise")
case("conv", SEQ, W(3, 5, 4), pads=((2, 0),), id="conv1d_causal")
case("conv", SEQ, W(3, 5, 4), strides=(2,), pads=keras_pads("same", ("seq",), (3,), (2,)),
     id="conv1d_same_free_length", sizes=SIZES_NO_UNIT_SEQ)
case("conv", SEQ, W(3, 5, 4), strides=(2,), dilations=(2,), pads=keras_pads("same", ("seq",), (3,), (2,), (2,)),
     id="conv1d_same_dilated_free_length", sizes=SIZES_NO_UNIT_SEQ)
case("conv", SEQ, W(3, 5, 4), pads=(("max(0, 3 - seq)", 0),), id="conv1d_symbolic_pad")
case("conv", In(("batch", 5, 4, 6, 2)), W(2, 3, 3, 2, 3), strides=(1, 2, 1), pads=((0, 1), (1, 1), (1, 1)),
     id="conv3d")
case("conv_transpose", IMG, W(3, 3, 4, 3), strides=(2, 2), pads=((1, 1), (0, 1)), output_padding=(1, 0),
     id="conv_transpose2d_stride2_output_padding")
case("conv_transpose", SEQ, W(3, 4, 5), dilations=(2,), pads=((2, 1),), id="conv_transpose1d_dilated_free_length")
case("conv_transpose", In(("batch", 3, 2, 4, 2)), W(2, 3, 2, 3, 2), strides=(2, 1, 3), pads=((0, 0), (1, 1), (0, 1)),
     output_padding=(1, 0, 2), id="conv_transpose3d")
for _op in ("max_pool", "avg_pool"):
    case(_op, In(("batch", 5, 4, 6, 2)), kernel=(2, 2, 3), strides=(1, 2, 3), pads=((0, 1), (0, 0), (1, 1)),
         id=f"{_op}_3d")
    case(_op, IMG, kernel=(2, 2), strides=(2, 2), id=f"{_op}_2x2")
    case(_op, IMG, kernel=(3, 3), pads=_same, id=f"{_op}_same")
    case(_op, IMG, kernel=(2, 2), strides=(2, 2), pads=((0, 1), (0, 0)), id=f"{_op}_asymmetric")
    case(_op, SEQ, kernel=(3,), strides=(2,), pads=keras_pads("same", ("seq",), (3,), (2,)),
         id=f"{_op}_same_free_length")

# ---------------------------------------------------------------- normalization
_C = 3
case("batch_norm", IMG, W(_C), W(_C), W(_C), W(_C, low=0.1), id="batch_norm_nhwc")
case("batch_norm", In(("batch", 5)), W(5), W(5), W(5), W(5, low=0.1), id="batch_norm_2d")
case("batch_norm", In(("batch", 4, 6)), W(4), W(4), W(4), W(4, low=0.1), axis=1, epsilon=1e-5,
     id="batch_norm_axis1")
case("batch_norm", In((6,)), W(6), W(6), W(6), W(6, low=0.1), axis=0, id="batch_norm_vector")
case("layer_norm", X3, W(5), W(5), axes=(-1,))
case("layer_norm", X3, W(3, 5), W(3, 5), axes=(1, 2), id="layer_norm_trailing_axes")
case("layer_norm", X3, W(3), W(3), axes=(1,), id="layer_norm_middle_axis")
case("layer_norm", X3, W(5), W(5), axes=(-1,), id="layer_norm_opset16", opset=16)

# ---------------------------------------------------------------- recurrent
_F, _U = 5, 4
for _seq in (False, True):
    for _back in (False, True):
        _id = f"{'seq' if _seq else 'last'}{'_backwards' if _back else ''}"
        case("lstm", SEQ, W(_F, 4 * _U), W(_U, 4 * _U), W(4 * _U), return_sequences=_seq, go_backwards=_back,
             id=f"lstm_{_id}")
        case("gru", SEQ, W(_F, 3 * _U), W(_U, 3 * _U), W(2, 3 * _U), return_sequences=_seq, go_backwards=_back,
             id=f"gru_{_id}")
        case("simple_rnn", SEQ, W(_F, _U), W(_U, _U), W(_U), return_sequences=_seq, go_backwards=_back,
             id=f"simple_rnn_{_id}")
case("lstm", SEQ, W(_F, 4 * _U), W(_U, 4 * _U), W(4 * _U), In(("batch", _U)), In(("batch", _U)),
     return_sequences=True, id="lstm_initial_state")
case("lstm", SEQ, W(_F, 4 * _U), W(_U, 4 * _U), W(4 * _U), activation="relu", recurrent_activation="hard_sigmoid",
     return_sequences=True, id="lstm_relu_hard_sigmoid")
case("gru", SEQ, W(_F, 3 * _U), W(_U, 3 * _U), W(3 * _U), reset_after=False, return_sequences=True,
     id="gru_reset_before")
case("gru", SEQ, W(_F, 3 * _U), W(_U, 3 * _U), W(2, 3 * _U), In(("batch", _U)), id="gru_initial_state")
case("reverse_time", SEQ, id="reverse_time")
case("simple_rnn", SEQ, W(_F, _U), W(_U, _U), W(_U), activation="linear", return_sequences=True,
     id="simple_rnn_linear")
case("simple_rnn", SEQ, W(_F, _U), W(_U, _U), W(_U), In(("batch", _U)), activation="softsign",
     id="simple_rnn_initial_state")


# ---------------------------------------------------------------- fused ops (introduced by the optimizer)
_RELU6 = (("max_value", 6.0),)
case("fused_matmul", X3, W(5, 4))
case("fused_matmul", X3, W(5, 4), W(4), has_bias=True, activation="relu", id="fused_matmul_bias_relu")
case("fused_matmul", X3, W(5, 4), W(4), In(("batch", 3, 4)), has_bias=True, activation="relu",
     activation_attrs=_RELU6, has_residual=True, post_activation="relu", id="fused_matmul_residual")
case("fused_matmul", X3, W(5, 4), In(("batch", 3, 4)), has_residual=True, id="fused_matmul_residual_only")
case("fused_conv", IMG, W(3, 3, 3, 4), W(4), pads=_same, has_bias=True, activation="relu",
     id="fused_conv_bias_relu")
case("fused_conv", IMG, W(1, 1, 3, 4), In(("batch", 7, 6, 4)), has_residual=True, post_activation="silu",
     id="fused_conv_residual")
case("fused_conv", SEQ, W(3, 5, 4), W(4), strides=(2,), pads=keras_pads("same", ("seq",), (3,), (2,)), has_bias=True,
     activation="gelu", id="fused_conv1d_same_free_length", sizes=SIZES_NO_UNIT_SEQ)
case("fused_separable_conv", IMG, W(3, 3, 1, 6), W(6, 5), W(5), groups=3, pads=_same, has_bias=True,
     activation="relu")
case("fused_separable_conv", IMG, W(3, 3, 1, 3), W(3, 2), In(("batch", 3, 2, 2)), groups=3, strides=(2, 2),
     has_residual=True, id="fused_separable_conv_residual")
case("scale_shift", IMG, W(3), W(3))
case("scale_shift", In(("batch", 4, 6)), W(4), W(4), axis=1, id="scale_shift_axis1")
# an elementwise group with a broadcast operand, a comparison inside and two outputs
case("fused_elementwise", X, W(7), In(("batch", 1)),
     program=(("mul", (0, 1), ()), ("add", (3, 2), ()), ("tanh", (4,), ()), ("greater", (5, 2), ()),
              ("where", (6, 5, 3), ())), outputs=(7, 4))


# ---------------------------------------------------------------- training ops (autodiff)
_WIDE = In(("batch", 7), draw="wide")
for _act in ["linear", *UNARY]:
    _x = POS if _act in ("log", "sqrt", "reciprocal") else _WIDE
    case("unary_grad", _x, X, activation=_act, id=f"unary_grad_{_act}")
for _act, _pairs in (("relu", (("max_value", 6.0),)), ("relu", (("negative_slope", 0.1), ("threshold", 0.5))),
                     ("relu", (("max_value", 1.0), ("negative_slope", 0.2), ("threshold", -0.5))),
                     ("elu", (("alpha", 0.3),)), ("gelu", (("approximate", True),))):
    case("unary_grad", _WIDE, X, activation=_act, activation_attrs=_pairs,
         id=f"unary_grad_{_act}_{'_'.join(k for k, _ in _pairs)}")
case("unary_grad", _WIDE, W(7), activation="neg", id="unary_grad_broadcast_cotangent")
case("unary_grad", _WIDE, W(7), id="unary_grad_linear_broadcast_cotangent")
case("where", In(("batch", 7), dtype="bool", draw="bool"), X, W(7))
for _op in ("greater", "greater_equal", "less", "equal"):
    case(_op, X3, W(5))
    case(_op, In(("batch", 4), dtype="int32", draw="ids:3"), np.array([0, 1, 2, 1], np.int32), id=f"{_op}_int32")
case("greater_equal", In(("batch", 4), dtype="int32", draw="ids:3"), np.array([0, 1, 2, 1], np.int32),
     id="greater_equal_opset11", opset=11)
case("broadcast_like", W(5), X3)
case("broadcast_like", In(("batch", 1, 5)), X3, id="broadcast_like_input")
case("num_elements", X3)
case("num_elements", X3, axes=(1, 2), dtype="int64", id="num_elements_static")
case("num_elements", SEQ, axes=(0, 1), id="num_elements_free_dims")
case("one_hot", In(("batch", "seq"), dtype="int32", draw="ids:5"), depth=5)
case("one_hot", In(("batch", 3), dtype="int64", draw="ids:4"), depth=4, dtype="int32", id="one_hot_int64")
# linear quantization (graphc/ops/quantize.py; bit-exact checks in tests/ops/test_quantize.py)
case("quantize_linear", In(("batch", 7), draw="wide"), np.float32(0.03), np.int8(-3))
case("quantize_linear", In(("batch", 3, 5), draw="wide"), np.float32([0.02, 0.05, 0.1]), np.uint8([120, 128, 131]),
     axis=1, id="quantize_linear_per_channel_uint8")
case("dequantize_linear", In(("batch", 7), dtype="int8", draw="ids:100"), np.float32(0.03), np.int8(-3))
case("dequantize_linear", In(("batch", 3, 5), dtype="uint8", draw="ids:250"), np.float32([0.02, 0.05, 0.1, 0.2, 1.0]),
     np.uint8([120, 128, 131, 0, 255]), id="dequantize_linear_per_channel_uint8")
# integer products (graphc/ops/qlinear.py; bit-exact native checks in tests/quantize/test_native_int8.py): scales
# that are powers of two keep the QDQ export's float sums exact, so onnxruntime agrees bit for bit
_QW = _rng.integers(-127, 128, size=(7, 5)).astype(np.int8)
_QB = _rng.integers(-300, 300, size=5).astype(np.int32)
_QS = np.float32([2.0**-6, 2.0**-5, 2.0**-7, 2.0**-6, 2.0**-8])
case("qlinear_matmul", In(("batch", 7), dtype="uint8", draw="ids:250"), np.float32(2.0**-4), np.uint8(121), _QW, _QS,
     np.zeros(5, np.int8), _QB, np.float32(2.0**-3), np.uint8(100), activation="relu")
case("qlinear_conv", In(("batch", 7, 6, 3), dtype="uint8", draw="ids:250"), np.float32(2.0**-4), np.uint8(121),
     _rng.integers(-127, 128, size=(3, 3, 3, 5)).astype(np.int8), np.float32(2.0**-6), np.int8(0), _QB,
     np.float32(2.0**-2), np.int8(-3), strides=(1, 1), pads=((1, 1), (1, 1)))
case("requantize_linear", In(("batch", 7), dtype="uint8", draw="ids:250"), np.float32(2.0**-4), np.uint8(121),
     np.float32(2.0**-3), np.int8(-5))
case("qlinear_add", In(("batch", 7), dtype="uint8", draw="ids:250"), np.float32(2.0**-4), np.uint8(121),
     In(("batch", 7), dtype="uint8", draw="ids:250"), np.float32(2.0**-3), np.uint8(7), np.float32(2.0**-2),
     np.int8(-5))
CASES.append(Case("random_uniform_like", [X3], {"seed": 3}, SIZES, None, "random_uniform_like", random=True))
CASES.append(Case("random_uniform_like", [X3], {}, SIZES, None, "random_uniform_like_unseeded", random=True))
CASES.append(Case("random_normal_like", [X3], {"seed": 3}, SIZES, None, "random_normal_like", random=True))
case("slice_grad", X3, In(("batch", 3, 4)), axis=2, start=1)
case("slice_grad", X3, In(("batch", 3, 2)), axis=-1, start=-3, stop=-1, id="slice_grad_negative")
case("slice_grad", X, In(("batch", 4)), axis=1, start=0, stop=7, step=2, id="slice_grad_step")
case("slice_grad", SEQ, In(("batch", "seq - 1", 5)), axis=1, start=0, stop=-1, id="slice_grad_free_axis",
     sizes=SIZES_NO_UNIT_SEQ)
case("gather_grad", In(("batch", "seq"), dtype="int32", draw="ids:6"), In(("batch", "seq", 4)), num_rows=6)
case("gather_grad", In(("batch",), dtype="int64", draw="ids:3"), In(("batch", 2, 3)), num_rows=5,
     id="gather_grad_int64_unused_rows")


# ---------------------------------------------------------------- machinery
def build(c: Case) -> Graph:
    g = Graph(c.id)
    names = []
    for i, arg in enumerate(c.args):
        if isinstance(arg, In):
            names.append(g.add_input(f"in{i}", TensorType(arg.dtype, arg.shape)))
        else:
            names.append(g.add_constant(f"layer/w{i}", arg))
    out = OpBuilder(g, layer="layer").emit(c.op, *names, **c.attrs)
    g.set_outputs(list(out) if isinstance(out, tuple) else [out])
    return g


def draw(graph: Graph, c: Case, sizes: dict, rng) -> dict[str, np.ndarray]:
    feeds = {}
    ins = [a for a in c.args if isinstance(a, In)]
    for name, spec in zip(graph.inputs, ins):
        shape = graph.type_of(name).concrete_shape(sizes)
        if spec.draw.startswith("ids:"):
            feeds[name] = rng.integers(0, int(spec.draw[4:]), size=shape).astype(spec.dtype)
        elif spec.draw == "positive":
            feeds[name] = rng.uniform(0.5, 2.0, size=shape).astype(spec.dtype)
        elif spec.draw == "bool":
            feeds[name] = rng.random(shape) < 0.5
        elif spec.draw == "wide":
            feeds[name] = (4 * rng.standard_normal(shape)).astype(spec.dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


# Ops without an ONNX mapping, each with the reason. The training-only ops (backward kernels) are
# exported with training steps; their cases are in test_training_ops.py.
NOT_EXPORTED: dict[str, str] = {
    "cross_replica_sum": "ONNX has no collective: a sum across data-parallel replicas (tests/ops/test_collective.py)"}
EXPORTED_OPS = sorted(name for name in REGISTRY if name not in NOT_EXPORTED)


@pytest.mark.parametrize("name", EXPORTED_OPS)
def test_every_registered_op_has_an_onnx_mapping(name):
    assert REGISTRY[name].to_onnx is not None, f"op {name!r} has no to_onnx facet: it cannot be exported to ONNX"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_op_with_an_onnx_mapping_has_an_onnx_case(name):
    if REGISTRY[name].to_onnx is None:
        assert name in NOT_EXPORTED  # else the mapping test above fails
        return
    from tests.backends.onnx.test_training_ops import TRAINING_CASES

    assert any(c.op == name for c in CASES + TRAINING_CASES), \
        f"op {name!r} has no ONNX export case in {__file__} or test_training_ops.py"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_op_exports_and_matches_the_reference(c, rng):
    if c.op == "qlinear_conv":  # 3x3 windows over many channels: large enough pair sums
        skip_where_onnxruntime_saturates()
    graph = build(c)
    model = export_graph(graph, c.opset)
    if c.opset is not None:
        assert model.opset_import[0].version == c.opset
    check_model(model, graph)
    for sizes in c.sizes:
        feeds = draw(graph, c, sizes, rng)
        if c.random:
            want = run(graph, feeds)
            got = OnnxRuntimeGraph(graph, c.opset).run(feeds)
            for name, value in got.items():
                assert value.shape == want[name].shape and value.dtype == want[name].dtype
                assert np.isfinite(value).all() and np.unique(value).size > value.size // 2
                if c.op == "random_uniform_like":
                    assert value.min() >= 0 and value.max() < 1
            continue
        report = verify_graph(graph, feeds, opset=c.opset)
        assert report.ok, f"{sizes}\n{report}"
