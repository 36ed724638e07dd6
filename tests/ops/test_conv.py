"""The conv op: shape rule (static and symbolic), NumPy reference against a direct loop, errors,
and Keras's padding rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from graphc.backends.reference import run
from graphc.ir import dims
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder, ShapeError, get
from graphc.ops.conv import keras_pads, window_output_dims
from tests.helpers import assert_close

conv_ref = get("conv").reference


def conv_loop(x, w, strides, dilations, pads, groups):
    """Convolution the slow, obvious way: one output position at a time."""
    nsp = x.ndim - 2
    xp = np.pad(x, [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)])
    k = w.shape[:nsp]
    cg, o = w.shape[-2:]
    og = o // groups
    out = [(xp.shape[1 + i] - (k[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nsp)]
    y = np.zeros((x.shape[0], *out, o))
    for pos in itertools.product(*[range(n) for n in out]):
        window = (slice(None),) + tuple(
            slice(p * s, p * s + (kk - 1) * d + 1, d) for p, s, d, kk in zip(pos, strides, dilations, k))
        patch = xp[window]  # (N, *k, C)
        for g in range(groups):
            a = patch[..., g * cg:(g + 1) * cg].reshape(x.shape[0], -1)
            b = w[..., g * og:(g + 1) * og].reshape(-1, og)
            y[(slice(None),) + pos + (slice(g * og, (g + 1) * og),)] = a @ b
    return y


CASES = [
    # x shape, kernel (spatial), groups, out channels, strides, dilations, pads
    ((2, 7, 3), (3,), 1, 4, (1,), (1,), ((0, 0),)),
    ((1, 17, 2), (4,), 1, 3, (3,), (1,), ((2, 1),)),
    ((2, 9, 4), (3,), 2, 6, (1,), (3,), ((0, 4),)),
    ((1, 1, 1), (1,), 1, 1, (1,), (1,), ((0, 0),)),
    ((2, 7, 7, 3), (3, 3), 1, 5, (1, 1), (1, 1), ((1, 1), (1, 1))),
    ((1, 7, 9, 3), (3, 2), 1, 2, (2, 3), (1, 1), ((0, 1), (2, 0))),
    ((2, 8, 7, 1), (2, 3), 1, 3, (1, 1), (2, 3), ((1, 2), (0, 3))),
    ((1, 7, 7, 6), (3, 3), 3, 9, (2, 1), (1, 1), ((1, 0), (0, 1))),
    ((2, 7, 5, 4), (3, 3), 4, 4, (1, 2), (1, 1), ((1, 1), (1, 1))),   # depthwise
    ((1, 9, 7, 3), (3, 3), 3, 6, (1, 1), (2, 1), ((2, 2), (1, 1))),   # depthwise, multiplier 2
    ((1, 17, 3, 2), (5, 1), 1, 3, (4, 1), (1, 1), ((0, 0), (0, 0))),
    ((1, 5, 4, 3, 2), (2, 3, 2), 1, 3, (2, 1, 1), (1, 1, 2), ((0, 1), (1, 1), (1, 0))),
    ((1, 5, 2), (3,), 1, 2, (4,), (3,), ((7, 6),)),                    # pads wider than the input
    ((2, 3, 4, 2), (2, 3), 2, 4, (5, 1), (4, 2), ((6, 5), (2, 2))),   # taps reading padding only
]


@pytest.mark.parametrize("shape,k,groups,o,strides,dil,pads", CASES)
def test_conv_matches_loop(rng, shape, k, groups, o, strides, dil, pads):
    x = rng.standard_normal(shape)
    w = rng.standard_normal(k + (shape[-1] // groups, o))
    want = conv_loop(x, w, strides, dil, pads, groups)
    got = conv_ref(x, w, strides=strides, dilations=dil, pads=pads, groups=groups)
    assert_close(got, want, rtol=1e-10, atol=1e-10)
    t = get("conv").infer_types([TensorType.of(x), TensorType.of(w)],
                                {"strides": strides, "dilations": dil, "pads": pads, "groups": groups})[0]
    assert t.shape == want.shape and t.dtype == "float64"


def test_conv_float32_and_defaults(rng):
    x = rng.standard_normal((2, 7, 7, 3)).astype("float32")
    w = rng.standard_normal((3, 3, 3, 4)).astype("float32")
    got = conv_ref(x, w, strides=None, dilations=None, pads=None, groups=1)
    assert got.dtype == np.float32
    assert_close(got, conv_loop(x.astype("f8"), w.astype("f8"), (1, 1), (1, 1), ((0, 0), (0, 0)), 1),
                 rtol=1e-4, atol=1e-4)


def _infer(x_shape, w_shape, dtype="float32", **attrs):
    opdef = get("conv")
    return opdef.infer_types([TensorType(dtype, x_shape), TensorType(dtype, w_shape)],
                             opdef.resolve_attrs(attrs))[0]


def test_conv_shapes_keep_free_dims_symbolic():
    assert _infer(("batch", "T", 128), (7, 128, 32)).shape == ("batch", "T - 6", 32)
    assert _infer(("batch", "T", 8), (7, 8, 32), strides=(2,)).shape == ("batch", "(T + 1) // 2 - 3", 32)
    assert _infer(("b", "h", "w", 3), (3, 3, 3, 8), pads=((1, 1), (1, 1))).shape == ("b", "h", "w", 8)
    assert _infer(("b", 28, "w", 4), (3, 3, 2, 8), groups=2, strides=(2, 1)).shape == ("b", 13, "w - 2", 8)
    d = _infer(("b", "T", 3), (3, 3, 4), dilations=(2,)).shape[1]
    assert [dims.evaluate(d, {"T": n}) for n in (5, 9)] == [1, 5]


@pytest.mark.parametrize("x_shape,w_shape,attrs,words", [
    ((1, 7, 7, 3), (3, 3, 4, 8), {}, ["3 channels", "expects 4"]),
    ((1, 7, 7, 4), (3, 3, 2, 8), {"groups": 3}, ["4 channels", "groups=3"]),
    ((1, 7, 7, 4), (3, 3, 2, 9), {"groups": 2}, ["output channels 9", "groups=2"]),
    ((1, 7, 7, 3), (3, 3, 3), {}, ["rank 4", "(3, 3, 3)"]),
    ((1, 3), (3, 3), {}, ["rank >= 3", "(1, 3)"]),
    ((1, 2, 7, 3), (3, 3, 3, 8), {}, ["axis 0 of size 2", "window 3"]),
    ((1, 5, 7, 3), (3, 3, 3, 8), {"dilations": (3, 1)}, ["axis 0 of size 5", "dilated window 7"]),
    ((1, 7, 7, 3), (3, 3, 3, 8), {"strides": (1,)}, ["strides", "2 positive"]),
    ((1, 7, 7, 3), (3, 3, 3, 8), {"strides": (1, 0)}, ["strides", "(1, 0)"]),
    ((1, 7, 7, 3), (3, 3, 3, 8), {"pads": ((1, 1),)}, ["pads", "2 (before, after)"]),
    ((1, 7, 7, 3), (3, 3, 3, 8), {"pads": ((1, -1), (0, 0))}, ["pads", "non-negative"]),
    ((1, 7, 7, 3), (3, 3, 3, 8), {"groups": 0}, ["groups", "positive"]),
])
def test_conv_shape_errors(x_shape, w_shape, attrs, words):
    with pytest.raises(ShapeError) as info:
        _infer(x_shape, w_shape, **attrs)
    for word in words:
        assert word in str(info.value)


def test_conv_dtype_errors():
    with pytest.raises(ShapeError, match="float"):
        _infer((1, 7, 3), (3, 3, 4), dtype="int32")
    opdef = get("conv")
    with pytest.raises(ShapeError, match="different dtypes"):
        opdef.infer_types([TensorType("float32", (1, 7, 3)), TensorType("float64", (3, 3, 4))],
                          opdef.resolve_attrs({}))


# ---------------------------------------------------------------------------- Keras padding
def _tf_same(n, k, s, d):
    """TensorFlow's documented 'same' rule."""
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return out, (total // 2, total - total // 2)


def test_keras_pads_same_static():
    for n, k, s, d in itertools.product(range(1, 12), range(1, 6), range(1, 4), range(1, 3)):
        out, pair = _tf_same(n, k, s, d)
        pads = keras_pads("same", (n,), (k,), (s,), (d,))
        assert pads == (pair,)
        assert window_output_dims((n,), (k,), (s,), (d,), pads, "t") == (out,)


def test_keras_pads_same_symbolic_evaluates_to_static():
    for k, s, d in itertools.product(range(1, 6), range(1, 4), range(1, 3)):
        (pb, pa), = keras_pads("same", ("n",), (k,), (s,), (d,))
        out, = window_output_dims(("n",), (k,), (s,), (d,), ((pb, pa),), "t")
        for n in range(1, 14):
            want_out, want_pair = _tf_same(n, k, s, d)
            got_pair = tuple(dims.evaluate(p, {"n": n}) for p in (pb, pa))
            assert got_pair == want_pair, (n, k, s, d)
            assert dims.evaluate(out, {"n": n}) == want_out


def test_keras_pads_same_symbolic_output_is_ceil():
    pads = keras_pads("same", ("b", "h"), (3, 3), (2, 2))
    assert isinstance(pads[0][0], str)
    assert window_output_dims(("b", "h"), (3, 3), (2, 2), (1, 1), pads, "t") == ("(b + 1) // 2", "(h + 1) // 2")
    assert keras_pads("same", ("h",), (3,), (1,)) == ((1, 1),)
    assert keras_pads("same", ("h",), (1,), (2,)) == ((0, 0),)


def test_keras_pads_valid_causal_and_errors():
    assert keras_pads("valid", (7, "w"), (3, 3), (2, 2)) == ((0, 0), (0, 0))
    assert keras_pads("causal", ("T",), (4,), (1,), (2,)) == ((6, 0),)
    assert keras_pads("SAME", (4,), (2,), (2,)) == ((0, 0),)
    with pytest.raises(ValueError, match="'valid', 'same' or 'causal'"):
        keras_pads("full", (7,), (3,), (1,))
    with pytest.raises(ShapeError, match="kernel"):
        keras_pads("same", (7, 7), (3,), (1, 1))


def test_symbolic_pads_in_a_graph(rng):
    g = Graph("t")
    x = g.add_input("x", TensorType("float32", ("batch", "T", 3)))
    w = rng.standard_normal((4, 3, 2)).astype("float32")
    b = OpBuilder(g)
    pads = keras_pads("same", ("T",), (4,), (3,))
    y = b.conv(x, b.constant(w, "w"), strides=(3,), pads=pads)
    assert g.type_of(y).shape == ("batch", "(T + 2) // 3", 2)
    g.set_outputs([y])
    for n in (1, 5, 9, 10):
        xs = rng.standard_normal((2, n, 3)).astype("float32")
        got = run(g, {"x": xs})[y]
        _, pair = _tf_same(n, 4, 3, 1)
        want = conv_loop(xs.astype("f8"), w.astype("f8"), (3,), (1,), (pair,), 1)
        assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_symbolic_pads_need_bindings(rng):
    pads = keras_pads("same", ("T",), (3,), (2,))
    x = rng.standard_normal((1, 6, 2))
    w = rng.standard_normal((3, 2, 2))
    with pytest.raises(ValueError, match="not bound"):
        conv_ref(x, w, strides=(2,), dilations=None, pads=pads, groups=1)
    got = conv_ref(x, w, strides=(2,), dilations=None, pads=pads, groups=1, bindings={"T": 6})
    assert_close(got, conv_loop(x, w, (2,), (1,), ((0, 1),), 1), rtol=1e-10, atol=1e-10)


def test_conv_reference_rejects_channel_mismatch(rng):
    with pytest.raises(ValueError, match="3 channels"):
        conv_ref(rng.standard_normal((1, 5, 3)), rng.standard_normal((3, 2, 4)), strides=None, dilations=None,
                 pads=None, groups=1)


def test_huge_dilation_reads_only_the_real_taps(rng):
    """A 'same' dilation of 2^31 pads a 9-pixel axis by 2^32: every tap but the centre one reads
    padding only, so the result is the centre row's convolution, computed without padding anything."""
    x = rng.standard_normal((2, 9, 5, 2))
    w = rng.standard_normal((3, 3, 2, 4))
    dil = (2**31, 1)
    pads = keras_pads("same", (9, 5), (3, 3), (1, 1), dil)
    assert pads[0] == (2**31, 2**31)
    got = conv_ref(x, w, strides=(1, 1), dilations=dil, pads=pads, groups=1)
    want = conv_ref(x, w[1:2], strides=(1, 1), dilations=(1, 1), pads=((0, 0), (1, 1)), groups=1)
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(got.shape)
    attrs = {"strides": (1, 1), "dilations": dil, "pads": pads, "groups": 1}
    small = {"strides": (1, 1), "dilations": (1, 1), "pads": ((0, 0), (1, 1)), "groups": 1}
    assert_close(get("conv_grad_input").reference(dy, w, x, **attrs),
                 get("conv_grad_input").reference(dy, w[1:2], x, **small), rtol=1e-12, atol=1e-12)
    dw = get("conv_grad_kernel").reference(x, dy, w, **attrs)
    assert_close(dw[1:2], get("conv_grad_kernel").reference(x, dy, w[1:2], **small), rtol=1e-12, atol=1e-12)
    assert not dw[0].any() and not dw[2].any()
