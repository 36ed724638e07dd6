"""Every registered op compiled to native code and compared with the reference interpreter.

The cases are the shared per-op table of the ONNX tests (tests/backends/onnx/test_ops.py) plus
native-specific ones (GEMM tiles and tails, large reductions). To keep compile time low, all
cases of one op family go into one graph (each case with its own inputs and outputs), compiled
once and run at two sets of free-dimension values (batch 1 and 3, sequence 7 and 5).
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.llvm import NativeLoweringError
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import REGISTRY, OpBuilder
from tests.backends.llvm.helpers import assert_matches_reference, load
from tests.backends.onnx.test_ops import CASES, Case, In, W

SIZES = ({"batch": 1, "seq": 7}, {"batch": 3, "seq": 5})

FAMILIES = {
    "elementwise": "graphc.ops.elementwise",
    "linalg": "graphc.ops.linalg",
    "shape_ops": "graphc.ops.shape_ops",
    "reduce": "graphc.ops.reduce",
    "conv": "graphc.ops.conv",
    "pool": "graphc.ops.pool",
    "normalization": "graphc.ops.normalization",
    "recurrent": "graphc.ops.recurrent",
    "fused": "graphc.ops.fused",
    "quantize": "graphc.ops.quantize",
}

NATIVE_CASES: list[Case] = []


def case(op, *args, id="", **attrs):
    NATIVE_CASES.append(Case(op, list(args), attrs, id=f"native_{id or op}"))


# GEMM: row tails (batch 1, 3), K across several blocks, N with and without a partial panel
case("matmul", In(("batch", 300)), W(300, 37), id="matmul_k300_n37")
case("matmul", In(("batch", 7, 64)), W(64, 64), id="matmul_rank3_n64")
case("matmul", In(("batch", 13, 520), draw="small"), W(520, 17), id="matmul_k520_n17")
case("matmul", In(("batch", "seq", 9)), In(("batch", 9, "seq")), id="matmul_batched_free")
case("matmul", In((5, "seq", 6)), In((1, 6, 4)), id="matmul_batched_broadcast")
case("reduce_mean", In(("batch", 9, 11, 37)), axes=(1, 2), id="global_average_pool")
case("reduce_max", In(("batch", 9, 37)), axes=(0, 2), id="reduce_max_outer_inner")
# sums over many rows into few kept rows: the reduced rows cut into parts summed apart (16, 8 parts;
# two reduced groups with a kept one between, cut along the outer one)
case("reduce_mean", In(("batch", 33, 35, 3)), axes=(1, 2), id="global_average_pool_parts16")
case("reduce_sum", In(("batch", 130, 5, 19)), axes=(1, 2), id="reduce_sum_parts8")
case("reduce_sum", In((140, 3, 70, 5)), axes=(0, 2), id="reduce_sum_parts_two_groups")
case("softmax", In(("batch", 3, 500)), id="softmax_wide")
# short kept rows (fewer elements than a vector, or not a multiple of it) after one reduced group: summed as
# a flat run of vectors whose lanes fold back onto the row, then the rows past the last whole run; 17 and
# 9 x 9 (two reduced groups) stay a row at a time
for _rows, _inner in ((7, 3), (33, 5), (1, 7), (101, 8), (257, 12), (41, 24), (9, 17), (1000, 6)):
    case("reduce_sum", In(("batch", _rows, _inner)), axes=(1,), id=f"reduce_sum_flat_{_rows}x{_inner}")
case("reduce_mean", In(("batch", 5, 41, 3)), axes=(1, 2), id="reduce_mean_flat_two_axes")
for _rows, _inner in ((7, 3), (200, 5), (1, 7), (41, 24)):
    case("reduce_max", In(("batch", _rows, _inner)), axes=(1,), id=f"reduce_max_flat_{_rows}x{_inner}")
case("reduce_min", In(("batch", 9, 9, 3)), axes=(1, 2), id="reduce_min_flat_global_pool")
case("reduce_mean", In((9, 5, 9, 3)), axes=(0, 2), id="reduce_mean_two_groups_inner3")
# rows of every length class of the row kernel: under a vector, odd vector counts (one step of two
# vectors short), a scalar tail, a free row length
for _n in (1, 3, 8, 17, 24, 41, 129):
    case("softmax", In(("batch", 2, _n), draw="wide"), id=f"softmax_rows_{_n}")
    case("log_softmax", In(("batch", 3, _n), draw="wide"), id=f"log_softmax_rows_{_n}")
case("softmax", In(("batch", "seq")), id="softmax_free_row")
# layer_norm's rows kernel: the same length classes, rows of two trailing axes, a free row length (the
# formula's four launches stay for axes that are not trailing: the ONNX cases' middle axis)
for _n in (1, 3, 8, 17, 24, 41, 129):
    case("layer_norm", In(("batch", 2, _n)), W(_n), W(_n), axes=(-1,), id=f"layer_norm_rows_{_n}")
case("layer_norm", In(("batch", 3, 7, 11)), W(7, 11), W(7, 11), axes=(2, 3), id="layer_norm_rows_two_axes")
case("layer_norm", In(("batch", "seq")), In(("seq",)), In(("seq",)), axes=(-1,), id="layer_norm_free_row")
case("concat", In(("batch", "seq", 3)), In(("batch", "seq", 5)), axis=-1, id="concat_channels_free")
# transposes that move the last axis run in vector tiles: tails along both axes, whole tiles, a free
# stride, 4-byte integers; the last axis kept (a plain strided copy)
case("transpose", In(("batch", 17, 3, 20)), perm=(0, 2, 3, 1), id="transpose_tiles_with_tails")
case("transpose", In(("batch", 16, 32)), perm=(0, 2, 1), id="transpose_whole_tiles")
case("transpose", In((33, "seq")), perm=(1, 0), id="transpose_free_stride")
case("transpose", In(("batch", 19, 40), dtype="int32", draw="ids:1000"), perm=(0, 2, 1), id="transpose_int32_tiles")
case("transpose", In(("batch", 5, 3, 64)), perm=(0, 2, 1, 3), id="transpose_last_axis_kept")
case("gather", W(50, 37), In(("batch", "seq"), dtype="int64", draw="ids:50"), id="gather_wide_rows")
# convolutions: im2col runs across taps, K split in blocks (C = 37: 6 taps a block), C above a
# block (C = 300: channel ranges of one tap), dilation, stride, free spatial size
case("conv", In(("batch", 9, 8, 37)), W(3, 3, 37, 19), pads=((1, 1), (1, 1)), id="conv_c37_k_blocks")
case("conv", In(("batch", 5, 6, 300), draw="small"), W(2, 3, 300, 17), strides=(2, 1), pads=((0, 1), (1, 1)),
     id="conv_c300_channel_blocks")
case("conv", In(("batch", 11, 10, 20)), W(3, 3, 20, 33), dilations=(2, 2), pads=((2, 2), (2, 2)),
     id="conv_dilated_c20")
case("fused_conv", In(("batch", "seq", 40)), W(5, 40, 24), W(24), In(("batch", "seq", 24)), pads=((2, 2),),
     has_bias=True, activation="relu", has_residual=True, id="fused_conv1d_residual_c40")
case("fused_separable_conv", In(("batch", 9, 9, 40)), W(3, 3, 1, 80), W(80, 29), W(29), groups=40,
     pads=((1, 1), (1, 1)), has_bias=True, activation="silu", id="separable_multiplier2_c40")
case("max_pool", In(("batch", 9, 9, 37)), kernel=(3, 3), strides=(2, 2), pads=((1, 1), (1, 1)), id="max_pool_c37")
case("avg_pool", In(("batch", 7, 9, 35)), kernel=(3, 3), strides=(1, 1), pads=((1, 1), (1, 1)), id="avg_pool_c35")
case("max_pool", In(("batch", 5, 3)), kernel=(3,), strides=(2,), pads=((1, 1),), id="max_pool1d_c3")
# windows all inside the input take the branch-free path: whole vectors and a tail of channels, an odd
# image whose last row and column no window covers, a mean over the whole window
case("max_pool", In(("batch", 7, 9, 41)), kernel=(2, 2), strides=(2, 2), id="max_pool_valid_c41")
case("avg_pool", In(("batch", 9, 7, 17)), kernel=(3, 3), strides=(2, 2), id="avg_pool_valid_c17")
for _dt in ("uint8", "int8"):  # bytes over their whole range: unsigned ones compare unsigned
    case("max_pool", In(("batch", 7, 5, 19), dtype=_dt, draw="bytes"), kernel=(3, 3), strides=(2, 2),
         pads=((1, 1), (1, 1)), id=f"max_pool_{_dt}")
# gradients of convolution and pooling: (dy, w, x) -> dx and (x, dy, w) -> dw
_P1 = ((1, 1), (1, 1))
for _op in ("conv_grad_input", "conv_grad_kernel"):
    def _args(x, dy, w, op=_op):
        return (dy, w, x) if op == "conv_grad_input" else (x, dy, w)

    case(_op, *_args(In(("batch", 7, 6, 5)), In(("batch", 7, 6, 4)), W(3, 3, 5, 4)), pads=_P1, id=f"{_op}_same")
    case(_op, *_args(In(("batch", 7, 6, 3)), In(("batch", 3, 3, 4)), W(3, 3, 3, 4)), strides=(2, 2),
         pads=((0, 1), (1, 1)), id=f"{_op}_stride2")
    case(_op, *_args(In(("batch", 9, 8, 3)), In(("batch", 7, 6, 5)), W(2, 3, 3, 5)), dilations=(2, 1),
         id=f"{_op}_dilated")
    case(_op, *_args(In(("batch", "seq", 5)), In(("batch", "seq", 4)), W(3, 5, 4)), pads=((2, 0),),
         id=f"{_op}_conv1d_causal")
    case(_op, *_args(In(("batch", 7, 6, 3)), In(("batch", 7, 6, 6)), W(3, 3, 1, 6)), groups=3, pads=_P1,
         id=f"{_op}_depthwise")
    case(_op, *_args(In(("batch", 6, 5, 40), draw="small"), In(("batch", 6, 5, 37), draw="small"), W(3, 3, 40, 37)),
         pads=_P1, id=f"{_op}_c40_o37")
for _op in ("max_pool_grad", "avg_pool_grad"):
    case(_op, In(("batch", 7, 6, 3), draw="ids:3"), In(("batch", 3, 3, 3)), kernel=(2, 2), strides=(2, 2),
         id=f"{_op}_2x2")
    case(_op, In(("batch", 7, 6, 19), draw="ids:4"), In(("batch", 7, 6, 19)), kernel=(3, 3), pads=_P1,
         id=f"{_op}_3x3_overlapping")
    case(_op, In(("batch", "seq", 5)), In(("batch", "seq", 5)), kernel=(3,), pads=((1, 1),), id=f"{_op}_1d")
# recurrences over 13 rows: one full register tile of rows plus a partial one
case("lstm", In((13, "seq", 6)), W(6, 4 * 9), W(9, 4 * 9), W(4 * 9), return_sequences=True, id="lstm_13_rows")
case("gru", In((13, "seq", 6)), W(6, 3 * 9), W(9, 3 * 9), W(3 * 9), reset_after=False, id="gru_reset_before_13_rows")
case("simple_rnn", In((13, "seq", 6)), W(6, 20), W(20, 20), W(20), go_backwards=True, id="simple_rnn_13_rows")


def build_family(cases: list[Case], name: str) -> tuple[Graph, dict]:
    """One graph holding every case (inputs and constants prefixed with the case id)."""
    g = Graph(name)
    specs = {}
    outputs = []
    for c in cases:
        names = []
        for i, arg in enumerate(c.args):
            if isinstance(arg, In):
                v = g.add_input(f"{c.id}/in{i}", TensorType(arg.dtype, arg.shape))
                specs[v] = arg
                names.append(v)
            else:
                names.append(g.add_constant(f"{c.id}/w{i}", arg))
        out = OpBuilder(g, layer=c.id).emit(c.op, *names, **c.attrs)
        outputs += list(out) if isinstance(out, tuple) else [out]
    g.set_outputs(outputs)
    return g, specs


def draw(graph: Graph, specs: dict, sizes: dict, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for name in graph.inputs:
        spec = specs[name]
        shape = graph.type_of(name).concrete_shape(sizes)
        if spec.draw == "bytes":
            info = np.iinfo(spec.dtype)
            feeds[name] = rng.integers(info.min, info.max + 1, size=shape).astype(spec.dtype)
        elif spec.draw.startswith("ids:"):
            feeds[name] = rng.integers(0, int(spec.draw[4:]), size=shape).astype(spec.dtype)
        elif spec.draw == "positive":
            feeds[name] = rng.uniform(0.5, 2.0, size=shape).astype(spec.dtype)
        elif spec.draw == "wide":
            feeds[name] = (4 * rng.standard_normal(shape)).astype(spec.dtype)
        elif spec.draw == "small":  # long reductions: keep sums near 1, where float32 rounding stays below atol
            feeds[name] = (0.1 * rng.standard_normal(shape)).astype(spec.dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def op_family(op: str) -> str:
    infer = REGISTRY[op].infer
    module = getattr(infer, "__module__", "") or ""
    return module.rsplit(".", 1)[-1]


# Gradient ops whose native lowerings are not written yet: a training step that needs them
# stops at code generation with an error naming the op (see test_unlowered_ops_are_named).
NOT_LOWERED: set[str] = set()  # ops allowed to lack a native lowering (none today)


def _plain_input_dims(c: Case) -> bool:
    """Native libraries bind free dims from inputs: an input dim must be a number or a free dim's name."""
    return all(isinstance(d, int) or d.isidentifier() for a in c.args if isinstance(a, In) for d in a.shape)


# random draws cannot equal the reference's: tests/backends/llvm/test_training_native.py checks them
ALL_CASES = [c for c in CASES if c.opset is None and not c.random and c.op not in NOT_LOWERED
             and _plain_input_dims(c)] + NATIVE_CASES


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - NOT_LOWERED))
def test_every_op_has_a_native_lowering(name):
    assert REGISTRY[name].lower is not None, f"op {name!r} has no lower facet: the native backend cannot compile it"


def test_unlowered_ops_are_named(monkeypatch):
    """The exemption list names real ops without a lowering, and compiling one names op and layer."""
    assert NOT_LOWERED <= set(REGISTRY), sorted(NOT_LOWERED - set(REGISTRY))
    assert all(REGISTRY[n].lower is None for n in NOT_LOWERED)
    monkeypatch.setattr(REGISTRY["random_uniform_like"], "lower", None)
    g = Graph("unlowered")
    x = g.add_input("x", TensorType("float32", ("batch", 4)))
    g.set_outputs([OpBuilder(g, layer="dropout_mask").random_uniform_like(x)])
    with pytest.raises(NativeLoweringError, match="layer 'dropout_mask'.*no lowering for 'random_uniform_like'"):
        load(g)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_compiles_and_matches_the_reference(family, rng):
    cases = [c for c in ALL_CASES if op_family(c.op) == family]
    assert cases, f"no cases for the {family} family"
    graph, specs = build_family(cases, f"ops_{family}")
    lib = load(graph)
    for threads, sizes in zip((1, 2), SIZES):
        feeds = draw(graph, specs, sizes, rng)
        assert_matches_reference(graph, lib, feeds, threads=threads, label=f"{family} {sizes}")
