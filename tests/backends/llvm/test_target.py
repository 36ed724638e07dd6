"""Object emission (target.compile_ir): the backend's loop strength reduction is off unless
``GRAPHC_LLVM_LSR=1``, the switch is honoured and validated, and the process-wide LLVM option is put
back for other users of llvmlite."""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest

from graphc.backends.llvm import target
from graphc.backends.llvm.target import compile_ir, host_target, strength_reduction_enabled

# A loop whose addresses LSR rewrites (two strided streams indexed by one counter).
LOOP_IR = """
define void @strided(ptr %a, ptr %b, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  %j = mul i64 %i, 3
  %pa = getelementptr float, ptr %a, i64 %j
  %k = mul i64 %i, 5
  %pb = getelementptr float, ptr %b, i64 %k
  %x = load float, ptr %pa
  %y = fmul float %x, 2.0
  store float %y, ptr %pb
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}
"""


def _emit_directly(text: str) -> bytes:
    """What another llvmlite user in the process gets: the module emitted without compile_ir."""
    info = host_target()
    machine = target._target_machine(target._machine_key(info), 3)
    return machine.emit_object(llvm.parse_assembly(text))


def test_switch_values(monkeypatch):
    monkeypatch.delenv("GRAPHC_LLVM_LSR", raising=False)
    assert strength_reduction_enabled() is False
    monkeypatch.setenv("GRAPHC_LLVM_LSR", "1")
    assert strength_reduction_enabled() is True
    monkeypatch.setenv("GRAPHC_LLVM_LSR", "0")
    assert strength_reduction_enabled() is False
    monkeypatch.setenv("GRAPHC_LLVM_LSR", "on")
    with pytest.raises(ValueError, match="GRAPHC_LLVM_LSR must be 0 or 1, got 'on'"):
        strength_reduction_enabled()


def test_switch_changes_the_code_and_llvm_default_is_restored(monkeypatch):
    info = host_target()
    monkeypatch.delenv("GRAPHC_LLVM_LSR", raising=False)
    without = compile_ir(LOOP_IR, info)
    monkeypatch.setenv("GRAPHC_LLVM_LSR", "1")
    with_lsr = compile_ir(LOOP_IR, info)
    assert without != with_lsr  # the switch reaches the backend
    monkeypatch.delenv("GRAPHC_LLVM_LSR")
    assert compile_ir(LOOP_IR, info) == without
    # after graphc's emission, the option is LLVM's default again for everyone else
    after = _emit_directly(LOOP_IR)
    llvm.set_option("test", "-disable-lsr=false")
    assert after == _emit_directly(LOOP_IR)


def test_models_equal_with_and_without_lsr(monkeypatch, tmp_path):
    import graphc
    from graphc import layers

    rng = np.random.default_rng(3)
    inp = graphc.Input((9, 7, 5))
    h = layers.Conv2D(17, 3, padding="same", activation="relu")(inp)
    h = layers.DepthwiseConv2D(3, strides=2, padding="same")(h)
    h = layers.Conv2D(3, 1)(h)
    out = layers.Dense(7)(layers.Flatten()(h))
    model = graphc.Model(inp, out)
    x = rng.standard_normal((3, 9, 7, 5)).astype(np.float32)
    want = graphc.build(model, "reference").predict(x)
    got = {}
    for value in ("0", "1"):
        monkeypatch.setenv("GRAPHC_LLVM_LSR", value)
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / f"cache{value}"))
        got[value] = graphc.build(model, "native").predict(x)
    assert got["0"].tobytes() == got["1"].tobytes()
    np.testing.assert_allclose(got["0"], want, rtol=1e-4, atol=1e-5)
