"""The int8 GEMM on AMX tiles (``tdpbusd``) and its VNNI fallback (``GRAPHC_INT8_KERNEL=vnni``): both equal
the integer reference bit for bit on odd shapes (K across the 64-byte steps AMX pads to, M across the
32-row blocks and a last block of a few rows, N across the 32-column panels),
convolutions with padding, strides and dilations, with and without a residual, uint8 and int8 inputs,
on one and two threads. The AMX kernel's tests skip where the CPU lacks ``amx-int8``; the fallback's run
everywhere (``vpdpbusd`` where the CPU has AVX512-VNNI, else its own dot product)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import numpy as np
import pytest

from graphc.backends.llvm.kernels.gemm_int8 import AMX_MIN_K, ENV_KERNEL, dot_path, uses_amx
from graphc.backends.llvm.target import host_target, resolve_target
from graphc.backends.reference import run
from tests.backends.llvm.helpers import load, run_native
from tests.quantize.test_native_int8 import CONVS, EPILOGUES, RESIDUALS, qlinear_graph

HOST = host_target()
HAS_VNNI512 = dot_path(HOST).name == "vnni512"
# "vnni": GRAPHC_INT8_KERNEL=vnni, the kernel of a CPU without AMX (vpdpbusd here; on a CPU without
# AVX512-VNNI the dot product it has)
KERNELS = [pytest.param("amx", marks=pytest.mark.skipif(not HOST.has_amx_int8, reason="this CPU has no amx-int8")),
           "vnni"]
INSTRUCTION = {"amx": "tdpbusd", "vnni": "vpdpbusd"}
# rows at run time: within one 32-row block, whole blocks, blocks plus a few rows (a mostly empty last
# block), and several work items
BATCHES = (1, 3, 7, 17, 32, 33, 36, 63, 65, 130, 300)


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    """The int8 kernel the builds of the test use: AMX tiles (the default where the CPU has them) or the
    fallback."""
    if request.param == "vnni":
        monkeypatch.setenv(ENV_KERNEL, "vnni")
    else:
        monkeypatch.delenv(ENV_KERNEL, raising=False)
    assert uses_amx(HOST) == (request.param == "amx")
    return request.param


def _input(rng, dtype: str, shape: tuple) -> np.ndarray:
    lo, hi = (-128, 128) if dtype == "int8" else (0, 256)
    return rng.integers(lo, hi, size=shape).astype(dtype)


def _check(rng, g, x_dtype: str, shapes: list[tuple], threads=(1,), label: str = "") -> None:
    """Native output equals the reference for inputs of each shape (a residual input drawn to match)."""
    lib = load(g)
    for shape in shapes:
        feeds = {"x": _input(rng, x_dtype, shape)}
        if "r" in g.inputs:
            r_type = g.values["r"].type
            feeds["r"] = _input(rng, r_type.dtype, (shape[0], *r_type.shape[1:]))
        want = run(g, feeds)[g.outputs[0]]
        for t in threads:
            got = run_native(lib, feeds, t)[0]
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want, err_msg=f"{label} input {shape} threads {t}")


def test_the_kernel_follows_the_target_and_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_KERNEL, raising=False)
    v4 = resolve_target("x86_64-linux-gnu", "x86-64-v4")
    vnni = dataclasses.replace(v4, features=v4.features + ",+avx512vnni")
    spr = dataclasses.replace(vnni, features=vnni.features + ",+amx-tile,+amx-int8")
    assert spr.has_amx_int8 and uses_amx(spr)
    assert not vnni.has_amx_int8 and not uses_amx(vnni) and not uses_amx(v4)
    assert not dataclasses.replace(spr, features=spr.features.replace(",+amx-tile", "")).has_amx_int8
    narrow = dataclasses.replace(spr, vector_bits=256)  # amx-int8 without the 512-bit VNNI fallback: none
    assert narrow.has_amx_int8 and not uses_amx(narrow)
    monkeypatch.setenv(ENV_KERNEL, "vnni")
    assert not uses_amx(spr)


@pytest.mark.parametrize("K,N", [(1, 1), (3, 17), (7, 33), (17, 64), (63, 65), (64, 32), (65, 3), (128, 65), (130, 40)])
def test_matmul_equals_the_reference_bit_for_bit(rng, kernel, K, N):
    for epilogue in EPILOGUES:
        g = qlinear_graph(rng, K, N, *epilogue)
        _check(rng, g, epilogue[0], [(m, K) for m in BATCHES], label=f"{kernel} K={K} N={N} {epilogue}")


@pytest.mark.parametrize("conv", CONVS, ids=["3x3-same", "1d-stride2", "dilated-uneven", "1x1"])
def test_conv_equals_the_reference_bit_for_bit(rng, kernel, conv):
    for C, out_ch in [(3, 5), (7, 33), (17, 64), (65, 7)]:  # K = taps x C on both sides of 64-byte steps
        for epilogue in EPILOGUES:
            g = qlinear_graph(rng, C, out_ch, *epilogue, conv=conv)
            _check(rng, g, epilogue[0], [(n, *conv["spatial"], C) for n in (1, 2, 7)],
                   label=f"{kernel} {conv} {C}->{out_ch} {epilogue}")


def test_residual_epilogue_equals_the_reference_bit_for_bit(rng, kernel):
    cases = [(None, (7, 17)), (None, (65, 40)), (CONVS[0], (3, 5)), (CONVS[2], (17, 33)), (CONVS[3], (71, 65))]
    for conv, (K, N) in cases:
        for epilogue, residual in zip(EPILOGUES, RESIDUALS + RESIDUALS[:1]):
            g = qlinear_graph(rng, K, N, *epilogue, conv=conv, residual=residual)
            spatial = conv["spatial"] if conv else ()
            _check(rng, g, epilogue[0], [(n, *spatial, K) for n in (1, 5, 40)],
                   label=f"{kernel} {conv} {K}->{N} {epilogue} {residual}")


def test_two_threads_and_blocks_across_images(rng, kernel):
    """Each thread loads the tile configuration; a work item's rows run across images."""
    conv = {"spatial": (5, 7), "kernel": (3, 3), "strides": (1, 2), "pads": ((1, 1), (0, 1)), "out": (5, 3)}
    for C, out_ch in [(71, 33), (130, 7)]:
        g = qlinear_graph(rng, C, out_ch, *EPILOGUES[1], conv=conv)
        _check(rng, g, "int8", [(n, *conv["spatial"], C) for n in (1, 5, 29)], threads=(1, 2),
               label=f"{kernel} {C}->{out_ch}")
    g = qlinear_graph(rng, 200, 70, *EPILOGUES[0])
    _check(rng, g, "uint8", [(m, 200) for m in (1, 33, 300, 1000)], threads=(1, 2), label=f"{kernel} dense")


@pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump")
def test_the_library_runs_the_chosen_instruction(rng, kernel):
    g = qlinear_graph(rng, 65, 33, "uint8", "uint8", True, "relu", None)
    disasm = subprocess.run(["objdump", "-d", str(load(g).path)], capture_output=True, text=True, check=True).stdout
    if kernel == "amx" or HAS_VNNI512:
        assert INSTRUCTION[kernel] in disasm
    if kernel == "vnni":
        assert "tdpbusd" not in disasm and "ldtilecfg" not in disasm


@pytest.mark.skipif(shutil.which("objdump") is None, reason="no objdump")
def test_a_product_over_few_k_stays_on_the_dot_product(rng, kernel):
    """Fewer than AMX_MIN_K k would leave a tile row mostly padding: such products run vpdpbusd."""
    g = qlinear_graph(rng, AMX_MIN_K - 1, 33, "uint8", "uint8", True, "relu", None)
    disasm = subprocess.run(["objdump", "-d", str(load(g).path)], capture_output=True, text=True, check=True).stdout
    assert "tdpbusd" not in disasm and "ldtilecfg" not in disasm
    if HAS_VNNI512:
        assert "vpdpbusd" in disasm
