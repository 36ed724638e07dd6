"""Every seed model (graphc/examples.py) built for x86-64 with AVX-512 (x86-64-v4) and with AVX2 only
(x86-64-v3), aarch64 (NEON, run under qemu-aarch64) and wasm32-wasi (SIMD128, run under wasmtime),
each equal to graphc's reference interpreter (rtol 1e-5, atol 1e-5 of the output's scale).

One library per model and target (tests/backends/llvm/cross_verify.py); the x86-64 libraries run on
this machine when its CPU has their features, the others under emulation with batches of 1 or 2.
A target whose tools are missing skips with the reason. The AVX2 libraries must not touch a 512-bit
register (objdump), so they run on CPUs without AVX-512. `python -m tests.backends.llvm.cross_verify`
prints the README's table.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from graphc import examples
from tests.backends.llvm.cross_verify import RTOL, TARGETS, relative_error, unavailable, vector_registers_used, verify

SLOW = {("stereo_xception", "aarch64")}  # about two minutes under qemu on two shared cores
# The registers each x86-64 level's kernels must use, and must not. Elementwise kernels use at most
# 8 lanes, so a model without a GEMM (merge) needs no 512-bit register even with AVX-512.
X86_REGISTERS = {"x86-64-v4": ("zmm", None), "x86-64-v3": ("ymm", "zmm")}
WITHOUT_GEMM = {"merge"}

CASES = [pytest.param(name, target, marks=[pytest.mark.slow] if (name, target) in SLOW else [],
                      id=f"{name}-{target}") for name in examples.names() for target in TARGETS]


@pytest.mark.parametrize(("name", "target"), CASES)
def test_seed_model_on_every_target_equals_the_reference(name, target):
    cross = TARGETS[target]
    reason = unavailable(cross)
    if reason:
        pytest.skip(reason)
    result = verify(name, cross)
    assert result.passed, f"{name} on {cross.label}: error {result.error:.2e} relative to the output's scale " \
                          f"exceeds {RTOL}"
    if target in X86_REGISTERS and shutil.which("objdump"):
        used = vector_registers_used(result.library)
        present, absent = X86_REGISTERS[target]
        present = "ymm" if name in WITHOUT_GEMM else present
        assert present in used, f"{name} on {cross.label} uses no {present} register: {sorted(used)}"
        assert absent is None or absent not in used, f"{name} on {cross.label} uses {absent} registers"


def test_a_wrong_result_fails_the_comparison():
    """The comparison catches an error just above the tolerance, and a wrong shape or dtype."""
    want = [np.linspace(-2, 3, 12, dtype=np.float32).reshape(3, 4)]
    assert relative_error([want[0].copy()], want) == 0
    off = want[0].copy()
    off[1, 2] += 3 * 4 * RTOL  # |want| + scale <= 6 here, so this is above RTOL
    assert relative_error([off], want) > RTOL
    assert relative_error([want[0].reshape(4, 3)], want) == float("inf")
    assert relative_error([want[0].astype(np.float64)], want) == float("inf")
    assert relative_error([], want) == float("inf")
