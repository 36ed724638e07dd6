"""``precision="bf16"``: matrix products by weights and convolutions on bf16 inputs with float32
accumulation (AMX tiles, or AVX512-BF16), float32 elsewhere; float32 with a warning on targets
without them. The product tests run each bf16 kernel this CPU has (``GRAPHC_BF16_KERNEL``).

The kernels are compared with NumPy references that round both operands to bf16 (nearest even)
and accumulate in float64. What remains is float32 accumulation: each output is a sum of K
products that are exact in float32 (8-bit by 8-bit significands), plus the bias, so it is within
``(K + 2) * 2**-24 * (|A| @ |W| + |bias|)`` of the reference (the standard bound for a float32
sum of K + 1 terms, in any order), which is what every product test checks elementwise.
"""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest

import graphc
from graphc import cli, layers
from graphc.backends.llvm import build_native, compile_library
from graphc.backends.llvm.target import PrecisionFallbackWarning, host_target
from tests.backends.onnx.checks import randomize_weights
from tests.programs.seed_models import SEED_MODELS

U32 = 2.0 ** -24  # float32 unit roundoff
needs_bf16 = pytest.mark.skipif(not host_target().has_avx512_bf16, reason="this CPU has no AVX512-BF16")
KERNELS = ["avx512", "amx"] if host_target().has_amx_bf16 else ["avx512"]
INSTRUCTION = {"avx512": "vdpbf16ps", "amx": "tdpbf16ps"}


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    """The bf16 kernel the builds of the test use: AVX512-BF16, or AMX tiles (this CPU's default)."""
    if request.param == "avx512":
        monkeypatch.setenv("GRAPHC_BF16_KERNEL", "avx512")
    else:
        monkeypatch.delenv("GRAPHC_BF16_KERNEL", raising=False)
    return request.param


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even), as float64."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).astype(np.float64)


def assert_accumulated(got, a, w, bias, what: str) -> None:
    """``got`` = bf16(a) @ bf16(w) + bias within float32 accumulation's error (see the module docstring)."""
    ab, wb = round_bf16(a), round_bf16(w)
    want = ab @ wb + bias
    bound = (a.shape[-1] + 2) * U32 * (np.abs(ab) @ np.abs(wb) + np.abs(bias))
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


def dense_model(K: int, N: int, rng, activation=None):
    inp = graphc.Input((K,))
    model = graphc.Model(inp, layers.Dense(N, activation=activation)(inp))
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    model.layers[-1].set_weights([w, b])
    return model, w, b


@needs_bf16
@pytest.mark.parametrize("M,K,N", [(1, 3, 7), (3, 17, 33), (7, 1, 5), (17, 33, 40), (13, 771, 70),
                                   (30, 1025, 97), (1, 1025, 17), (45, 131, 65)])
def test_dense_bf16_equals_rounded_reference(M, K, N, kernel, rng):
    model, w, b = dense_model(K, N, rng)
    cm = graphc.build(model, "native", precision="bf16")
    assert cm.precision == "bf16"
    x = rng.standard_normal((M, K)).astype(np.float32)
    assert_accumulated(cm.predict(x), x, w, b, f"Dense {M}x{K}x{N}")


@needs_bf16
def test_dense_bf16_epilogue_and_instructions(kernel, rng):
    """The fused activation runs on the float32 accumulators; the code issues the kernel's
    instruction; and the check above fails on float32 code (it tells the two precisions apart)."""
    model, w, b = dense_model(65, 48, rng, activation="relu")
    x = rng.standard_normal((9, 65)).astype(np.float32)
    cm = graphc.build(model, "native", precision="bf16")
    got = cm.predict(x)
    assert np.all(got >= 0)
    ab, wb = round_bf16(x), round_bf16(w)
    pre = ab @ wb + b
    bound = 67 * U32 * (np.abs(ab) @ np.abs(wb) + np.abs(b))
    assert np.all(np.abs(got - np.maximum(pre, 0)) <= bound)
    disasm = subprocess.run(["objdump", "-d", str(cm.files.shared)], capture_output=True, text=True, check=True).stdout
    assert INSTRUCTION[kernel] in disasm
    f32 = graphc.build(model, "native").predict(x)
    assert np.any(np.abs(f32 - np.maximum(pre, 0)) > bound)


@needs_bf16
def test_dense_bf16_on_two_threads(kernel, rng):
    """Work items split over the pool's threads: each loads its own tile configuration (AMX)."""
    model, w, b = dense_model(97, 70, rng)
    cm = graphc.build(model, "native", precision="bf16", threads=2)
    for m in (1, 100, 257):
        x = rng.standard_normal((m, 97)).astype(np.float32)
        assert_accumulated(cm.predict(x, batch_size=m), x, w, b, f"Dense {m}x97x70 on 2 threads")


def conv_reference(x, w, b, strides, pad):
    """bf16(x) conv bf16(w) + b (channels last, kernel (kh, kw, C, O)), accumulated in float64,
    and the bound's |x| conv |w| + |b|."""
    kh, kw, C, filters = w.shape
    (pt, pb), (pl, pr) = pad
    xb = np.pad(round_bf16(x), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    n, H, W, _ = xb.shape
    oh, ow = (H - kh) // strides[0] + 1, (W - kw) // strides[1] + 1
    cols = np.empty((n, oh, ow, kh, kw, C))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = xb[:, i:i + strides[0] * oh:strides[0], j:j + strides[1] * ow:strides[1]]
    cols = cols.reshape(n * oh * ow, kh * kw * C)
    wm = round_bf16(w).reshape(kh * kw * C, filters)
    shape = (n, oh, ow, filters)
    return (cols @ wm + b).reshape(shape), (np.abs(cols) @ np.abs(wm) + np.abs(b)).reshape(shape)


@needs_bf16
@pytest.mark.parametrize("shape,C,filters,size,strides,padding", [
    ((7, 9), 3, 17, 3, (1, 2), "same"),     # im2col, few channels (one K block of 27)
    ((5, 6), 7, 5, 1, (1, 1), "valid"),      # 1x1: the input read as a matrix
    ((5, 6), 143, 19, 3, (1, 1), "valid"),   # K = 1287 > one block, odd channels: blocks straddle taps
    ((6, 5), 17, 33, 3, (2, 1), "same"),     # odd K = 153, strided
])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_bf16_equals_rounded_reference(shape, C, filters, size, strides, padding, batch, kernel, rng,
                                            monkeypatch):
    # the GEMM's kernels (im2col, 1x1), which round x and w; a stride-1 3x3 would run by Winograd on bf16
    # products where the CPU has no AMX, rounding the transformed operands instead (its own bound:
    # tests/backends/llvm/test_conv_winograd.py)
    monkeypatch.setenv("GRAPHC_CONV_WINOGRAD", "0")
    inp = graphc.Input((*shape, C))
    model = graphc.Model(inp, layers.Conv2D(filters, size, strides=strides, padding=padding)(inp))
    w = rng.standard_normal((size, size, C, filters)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    model.layers[-1].set_weights([w, b])
    x = rng.standard_normal((batch, *shape, C)).astype(np.float32)
    got = graphc.build(model, "native", precision="bf16").predict(x)
    pads = []
    for extent, s in zip(shape, strides):
        if padding == "valid":
            pads.append((0, 0))
            continue
        total = max((-(-extent // s) - 1) * s + size - extent, 0)
        pads.append((total // 2, total - total // 2))
    want, scale = conv_reference(x, w, b, strides, pads)
    assert got.shape == want.shape
    bound = (size * size * C + 2) * U32 * scale
    err = np.abs(got - want)
    assert np.all(err <= bound), f"max error {err.max():.3g}, bound there {bound.flat[np.argmax(err)]:.3g}"


def _outputs(y) -> list[np.ndarray]:
    if isinstance(y, dict):
        return [y[k] for k in sorted(y)]
    return list(y) if isinstance(y, (list, tuple)) else [y]


@needs_bf16
@pytest.mark.parametrize("name", ["mlp", "inception", "residual_projection", "separable_conv", "conv1d_text"])
def test_seed_model_bf16_agrees_with_float32(name, rng):
    """Each product rounds its two operands to bf16 (relative error 2**-9 each), so it is off by at
    most 2**-8 of the sum of its terms' magnitudes; errors of successive products add up. The
    outputs stay within n * 2**-8 of their scale for n products in the graph: the scale of the
    outputs, or where the model ends in a linear Dense, of its terms (``|h| @ |W| + |b|``: its
    output may cancel to far less than they are)."""
    build, _, lengths = SEED_MODELS[name]
    model, data = build(graphc)
    randomize_weights(model, rng)
    f32 = graphc.build(model, "native")
    bf16 = graphc.build(model, "native", precision="bf16")
    assert bf16.precision == "bf16"
    products = sum(1 for op in bf16.graph.ops() if "matmul" in op.type or "conv" in op.type)
    assert products > 0
    last = model.layers[-1]
    linear_head = isinstance(last, layers.Dense) and last.activation in (None, "linear") and len(model.outputs) == 1
    head_input = graphc.build(graphc.Model(model.inputs, last.input), "native") if linear_head else None
    for batch in (1, 3):
        x = data(rng, batch) if lengths is None else data(rng, batch, lengths[0])
        for got, want in zip(_outputs(bf16.predict(x)), _outputs(f32.predict(x))):
            scale = np.abs(want).max()
            if head_input is not None:
                kernel, bias = last.get_weights()
                terms = np.abs(head_input.predict(x)) @ np.abs(kernel) + np.abs(bias)
                scale = max(scale, terms.max())
            err = np.abs(got - want).max()
            assert err <= products * 2.0 ** -8 * scale, f"{name} batch {batch}: {err:.3g} vs scale {scale:.3g}"
            assert err > 0  # the bf16 kernels ran


@needs_bf16
def test_bf16_and_float32_libraries_never_share_a_cache_entry(rng):
    model, w, b = dense_model(33, 20, rng)
    graph = graphc.optimize(graphc.lower(model), 2)
    x = rng.standard_normal((5, 33)).astype(np.float32)
    first = build_native(graph).predict(x)
    bf16 = build_native(graph, precision="bf16")
    again = build_native(graph)
    assert bf16.files.directory != again.files.directory
    assert compile_library(graph).directory == again.files.directory
    np.testing.assert_array_equal(again.predict(x), first)
    assert not np.array_equal(bf16.predict(x), first)


def test_bf16_falls_back_to_float32_with_a_warning_without_the_feature(rng):
    """x86-64-v4 (AVX-512 without BF16; x86-64-v3, AVX2, on a host that could not run it): a warning
    naming the target and the feature, then the float32 library itself (same cache entry, same outputs)."""
    cpu = "x86-64-v4" if host_target().vector_bits == 512 else "x86-64-v3"
    model, w, b = dense_model(17, 9, rng)
    graph = graphc.optimize(graphc.lower(model), 2)
    with pytest.warns(PrecisionFallbackWarning, match=rf"AVX512-BF16.*'{cpu}'.*float32"):
        fallback = build_native(graph, cpu=cpu, precision="bf16")
    assert fallback.precision == "float32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = build_native(graph, cpu=cpu)
    assert fallback.files.directory == plain.files.directory
    x = rng.standard_normal((4, 17)).astype(np.float32)
    np.testing.assert_array_equal(fallback.predict(x), plain.predict(x))
    np.testing.assert_allclose(plain.predict(x), x @ w + b, rtol=1e-5, atol=1e-5)


def test_precision_is_checked(rng):
    model, _, _ = dense_model(3, 2, rng)
    with pytest.raises(ValueError, match="precision must be one of 'float32', 'bf16', got 'fp16'"):
        graphc.build(model, "native", precision="fp16")
    with pytest.raises(ValueError, match="native inference option.*'onnx'"):
        graphc.build(model, "onnx", precision="bf16")
    with pytest.raises(ValueError, match="native inference option.*'reference'"):
        graphc.build(model, precision="bf16")


def test_cli_compile_precision(tmp_path, capsys):
    rc = cli.main(["compile", "mlp", "--target", "native", "-o", str(tmp_path), "--precision", "bf16"])
    out = capsys.readouterr().out
    assert rc == 0, out
    expected = "precision: bf16" if host_target().has_avx512_bf16 else "(bf16 unavailable on this target)"
    assert expected in out
    assert cli.main(["compile", "mlp", "--target", "onnx", "-o", str(tmp_path / "m.onnx"),
                     "--precision", "bf16"]) == 1
    assert "--precision bf16: native inference libraries only" in capsys.readouterr().err
