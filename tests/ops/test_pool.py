"""The max_pool and avg_pool ops: references against a direct loop and onnxruntime, shape rules
with free dims, and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from graphc.ir import dims
from graphc.ir.types import TensorType
from graphc.ops import ShapeError, get
from graphc.ops.conv import keras_pads
from tests.helpers import assert_close


def pool_loop(x, kernel, strides, pads, mode):
    """Pooling the obvious way: each output window over its real (unpadded) elements only."""
    nsp = x.ndim - 2
    sizes = x.shape[1:-1]
    out = [(sizes[i] + pads[i][0] + pads[i][1] - kernel[i]) // strides[i] + 1 for i in range(nsp)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]), dtype=x.dtype)
    for pos in itertools.product(*[range(n) for n in out]):
        window = (slice(None),)
        for p, s, k, (pb, _), n in zip(pos, strides, kernel, pads, sizes):
            start = p * s - pb
            window += (slice(max(start, 0), min(start + k, n)),)
        patch = x[window].reshape(x.shape[0], -1, x.shape[-1])
        y[(slice(None),) + pos] = patch.max(axis=1) if mode == "max" else patch.mean(axis=1)
    return y


CASES = [
    ((2, 7, 3), (2,), (2,), ((0, 0),)),
    ((1, 17, 2), (3,), (2,), ((1, 1),)),
    ((2, 8, 1), (3,), (2,), ((0, 1),)),
    ((1, 6, 2), (4,), (1,), ((1, 2),)),
    ((1, 1, 3), (1,), (1,), ((0, 0),)),
    ((2, 7, 7, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((1, 8, 9, 2), (3, 2), (2, 3), ((0, 1), (1, 0))),
    ((1, 17, 7, 3), (5, 3), (4, 1), ((2, 2), (1, 1))),
    ((1, 5, 4, 6, 2), (2, 3, 2), (2, 1, 2), ((0, 1), (1, 1), (0, 0))),
]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("shape,kernel,strides,pads", CASES)
def test_pool_matches_loop(rng, mode, shape, kernel, strides, pads):
    x = rng.standard_normal(shape)
    want = pool_loop(x, kernel, strides, pads, mode)
    got = get(f"{mode}_pool").reference(x, kernel=kernel, strides=strides, pads=pads)
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    t = get(f"{mode}_pool").infer_types([TensorType.of(x)], {"kernel": kernel, "strides": strides, "pads": pads})
    assert t[0].shape == want.shape


def test_max_pool_pads_with_minus_infinity(rng):
    x = -1 - rng.random((1, 4, 4, 2)).astype("float32")
    y = get("max_pool").reference(x, kernel=(3, 3), strides=(2, 2), pads=((0, 1), (0, 1)))
    assert (y < -1).all()
    xi = rng.integers(-9, -1, size=(1, 5, 3)).astype("int32")
    yi = get("max_pool").reference(xi, kernel=(2,), strides=(2,), pads=((0, 1),))
    assert yi.dtype == np.int32
    assert_close(yi, pool_loop(xi, (2,), (2,), ((0, 1),), "max"))


def test_avg_pool_leaves_padding_out_of_the_count():
    x = np.arange(1, 7, dtype="float32").reshape(1, 6, 1)
    y = get("avg_pool").reference(x, kernel=(3,), strides=(2,), pads=((0, 1),))
    assert_close(y.ravel(), [2.0, 4.0, 5.5])
    y = get("avg_pool").reference(x, kernel=(4,), strides=(1,), pads=((1, 2),))
    assert_close(y.ravel(), [2.0, 2.5, 3.5, 4.5, 5.0, 5.5])


def _onnx_pool(op_type, x, kernel, strides, pads):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    nsp = x.ndim - 2
    attrs = {"kernel_shape": list(kernel), "strides": list(strides),
             "pads": [p[0] for p in pads] + [p[1] for p in pads]}
    if op_type == "AveragePool":
        attrs["count_include_pad"] = 0
    node = helper.make_node(op_type, ["x"], ["y"], **attrs)
    x_t = np.ascontiguousarray(x.transpose((0, nsp + 1) + tuple(range(1, nsp + 1))))
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_t.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * x.ndim)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x_t})[0]
    return y.transpose((0,) + tuple(range(2, nsp + 2)) + (1,))


@pytest.mark.parametrize("op,onnx_op", [("avg_pool", "AveragePool"), ("max_pool", "MaxPool")])
@pytest.mark.parametrize("shape,kernel,strides,pads", [c for c in CASES if c[0][1] > 1])
def test_pool_matches_onnxruntime(rng, op, onnx_op, shape, kernel, strides, pads):
    x = rng.standard_normal(shape).astype("float32")
    want = _onnx_pool(onnx_op, x, kernel, strides, pads)
    got = get(op).reference(x, kernel=kernel, strides=strides, pads=pads)
    assert_close(got, want, rtol=1e-5, atol=1e-6)


def _infer(op, shape, dtype="float32", **attrs):
    opdef = get(op)
    return opdef.infer_types([TensorType(dtype, shape)], opdef.resolve_attrs(attrs))[0]


def test_pool_shapes_with_free_dims():
    assert _infer("max_pool", ("b", "T", 32), kernel=(5,), strides=(5,)).shape == ("b", "T // 5", 32)
    assert _infer("avg_pool", ("b", "h", 9, 4), kernel=(2, 3)).shape == ("b", "h - 1", 7, 4)
    pads = keras_pads("same", ("h", "w"), (3, 3), (2, 2))
    t = _infer("avg_pool", ("b", "h", "w", 4), kernel=(3, 3), strides=(2, 2), pads=pads)
    assert t.shape == ("b", "(h + 1) // 2", "(w + 1) // 2", 4)


def test_pool_symbolic_pads_at_run_time(rng):
    pads = keras_pads("same", ("n",), (3,), (2,))
    for n in (4, 5, 8):
        x = rng.standard_normal((1, n, 2))
        (pb, pa), = pads
        concrete = ((dims.evaluate(pb, {"n": n}), dims.evaluate(pa, {"n": n})),)
        for mode in ("max", "avg"):
            got = get(f"{mode}_pool").reference(x, kernel=(3,), strides=(2,), pads=pads, bindings={"n": n})
            assert_close(got, pool_loop(x, (3,), (2,), concrete, mode))


@pytest.mark.parametrize("op,shape,dtype,attrs,words", [
    ("max_pool", (1, 7, 3), "float32", {"kernel": (2,), "pads": ((2, 0),)}, ["padding (2, 0)", "window 2"]),
    ("avg_pool", (1, 7, 7, 3), "float32", {"kernel": (2,)}, ["kernel", "2 positive"]),
    ("avg_pool", (1, 7, 7, 3), "float32", {"kernel": (2, 2), "strides": (0, 1)}, ["strides", "(0, 1)"]),
    ("avg_pool", (7, 3), "float32", {"kernel": (2,)}, ["rank >= 3", "(7, 3)"]),
    ("avg_pool", (1, 7, 3), "int32", {"kernel": (2,)}, ["float"]),
    ("max_pool", (1, 7, 3), "bool", {"kernel": (2,)}, ["numeric"]),
    ("max_pool", (1, 2, 3), "float32", {"kernel": (3,)}, ["size 2", "window 3"]),
    ("max_pool", (1, 4, 3), "float32", {"kernel": None}, ["kernel"]),
])
def test_pool_errors(op, shape, dtype, attrs, words):
    with pytest.raises(ShapeError) as info:
        _infer(op, shape, dtype, **attrs)
    for word in words:
        assert word in str(info.value)


def test_pool_reference_checks_symbolic_pads_against_window(rng):
    with pytest.raises(ValueError, match="smaller than the window"):
        get("avg_pool").reference(rng.standard_normal((1, 5, 2)), kernel=(2,), strides=(1,),
                                  pads=(("n", 0),), bindings={"n": 2})
