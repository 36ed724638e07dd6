"""The table of environment switches that change the generated code (:mod:`graphc.backends.llvm.switches`):
every variable the native backend reads is in it or named as one that does not change the code, each
switch is in the build cache key, and bad values are refused with the variable's name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import layers
from graphc.backends.llvm import switches
from graphc.backends.llvm.kernels import gemm
from tests.backends.onnx.checks import randomize_weights

BACKEND = Path(graphc.__file__).parent / "backends" / "llvm"
# read by the backend without changing the code it generates (or in the key another way: the target's)
NOT_CODE = {"GRAPHC_CACHE_DIR", "GRAPHC_CACHE_SIZE", "GRAPHC_RUNTIME_DIR", "GRAPHC_COMPILE_JOBS",
            "GRAPHC_NATIVE_CPU", "GRAPHC_MODEL_"}


def test_every_variable_the_backend_reads_is_a_switch_or_changes_no_code():
    named = set()
    for path in BACKEND.rglob("*.py"):
        named |= set(re.findall(r"GRAPHC_[A-Z0-9_]+", path.read_text()))
    assert named - NOT_CODE == {s.name for s in switches.SWITCHES}


@pytest.mark.parametrize("switch", switches.SWITCHES, ids=lambda s: s.name)
def test_every_switch_is_in_the_build_key(switch, monkeypatch):
    for s in switches.SWITCHES:
        monkeypatch.delenv(s.name, raising=False)
    unset = switches.code_key()
    monkeypatch.setenv(switch.name, switch.choices[-1] if switch.choices else "7")
    assert switches.code_key() != unset


def _strided_conv() -> graphc.Model:
    """A 3x3 stride-2 convolution over 64 channels: im2col (no Winograd for a strided window) with
    K = 576, 256 output pixels (more than the smallest row block) and N = 40 (a column chunk and a rest)."""
    inp = graphc.Input((33, 33, 64))
    return graphc.Model(inp, layers.Conv2D(40, 3, strides=2, padding="same", activation="relu")(inp))


@pytest.mark.parametrize("switch, value", [
    (switches.CONV_SINGLE_K, "64"),   # K = 576 in 5 blocks of two taps instead of one block
    (switches.GEMM_KC, "128"),        # ... with SINGLE_K below K, blocks of KC
    (switches.GEMM_MC, "192"),        # more rows per block (a number of other digits than 96: the IR differs
                                      # in length on every target)
], ids=lambda v: getattr(v, "name", v))
def test_a_switch_changes_the_build_it_names(switch, value, tmp_path, monkeypatch, rng):
    """A switch set after graphc is imported acts on the next build (it is read when kernels are built):
    the code generated differs, builds that differ in it do not share a cache entry (the key once left
    ``GRAPHC_CONV_SINGLE_K`` out), and both give the reference's results."""
    from graphc.backends.llvm.kernels import conv

    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    for s in (switches.CONV_SINGLE_K, switches.GEMM_KC, switches.GEMM_MC):
        monkeypatch.delenv(s.name, raising=False)
    assert (conv.single_k(), gemm.kc_block(), gemm.mc_block()) == (conv.SINGLE_K, 256, 96)
    model = _strided_conv()
    randomize_weights(model, rng)
    x = rng.standard_normal((3, 33, 33, 64)).astype(np.float32)
    expected = graphc.build(model, target="reference").predict(x)
    if switch is switches.GEMM_KC:
        monkeypatch.setenv(switches.CONV_SINGLE_K.name, "64")
    first = graphc.build(model, target="native")
    monkeypatch.setenv(switch.name, value)
    assert switch.integer(0) == int(value)
    second = graphc.build(model, target="native")
    assert first.library.path != second.library.path
    assert first.compile_stats["ir_chars"] != second.compile_stats["ir_chars"]
    for built in (first, second):
        np.testing.assert_allclose(built.predict(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("switch, bad, message", [
    (switches.RESULT_IN_PLACE, "yes", "GRAPHC_RESULT_IN_PLACE must be 0 or 1, got 'yes'"),
    (switches.DEPTHWISE_PAD, "on", "GRAPHC_DEPTHWISE_PAD must be auto, 0 or 1, got 'on'"),
    (switches.GEMM_ITEMS, "floor", "GRAPHC_GEMM_ITEMS must be unset or ceil, got 'floor'"),
    (switches.BF16_KERNEL, "amx", "GRAPHC_BF16_KERNEL must be unset or avx512, got 'amx'"),
])
def test_values_outside_a_switchs_choices_are_refused(switch, bad, message, monkeypatch):
    monkeypatch.setenv(switch.name, bad)
    with pytest.raises(ValueError, match=re.escape(message)):
        switch.value()


def test_unset_switches_take_their_defaults(monkeypatch):
    for s in switches.SWITCHES:
        monkeypatch.delenv(s.name, raising=False)
    assert switches.RESULT_IN_PLACE.on() and not switches.LLVM_LSR.on()
    assert switches.DEPTHWISE_PAD.value() == "auto"
    assert switches.GEMM_KC.integer(256) == 256


def test_whole_number_and_tile_switches_are_checked(monkeypatch):
    monkeypatch.setenv(switches.GEMM_KC.name, "128")
    assert switches.GEMM_KC.integer(256) == 128
    monkeypatch.setenv(switches.GEMM_KC.name, "big")
    with pytest.raises(ValueError, match="GRAPHC_GEMM_KC must be a whole number, got 'big'"):
        switches.GEMM_KC.integer(256)
    monkeypatch.setenv(switches.GEMM_TILE.name, "8x3")
    assert gemm.micro_tile(16, 32) == (8, 3)
    for bad in ("8", "8x", "x3", "0x2", "8by3"):
        monkeypatch.setenv(switches.GEMM_TILE.name, bad)
        with pytest.raises(ValueError, match=f"GRAPHC_GEMM_TILE must be MRxNV .*got '{bad}'"):
            gemm.micro_tile(16, 32)
