"""A module compiled in parts (parallel_emit): the parts define every function once, parse and verify
on their own, keep internal symbols out of the library's exports under the model's own prefix; models
built in parts equal the whole build bit for bit; a worker that cannot run costs time, not results."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import llvmlite.binding as llvm
import numpy as np
import pytest

import graphc
from graphc import layers
from graphc.backends.llvm import codegen, parallel_emit
from graphc.backends.llvm.parallel_emit import compile_jobs, compile_parts, split_module
from graphc.backends.llvm.target import compile_ir, emission_spec, host_target


def _model():
    inp = graphc.Input((11, 9, 6))
    h = layers.Conv2D(13, 3, padding="same", activation="relu")(inp)
    h = layers.SeparableConv2D(19, 3, padding="same", activation="swish")(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.DepthwiseConv2D(3, padding="same")(h)
    h = layers.Dense(7, activation="sigmoid")(layers.Flatten()(h))
    return graphc.Model(inp, layers.Dense(5, activation="softmax")(h), name="split_me")


def _module_text(monkeypatch) -> str:
    """The IR text of :func:`_model`'s native build, taken where codegen compiles it."""
    texts = []

    def record(text, compile_one, spec, *, prefix, jobs=None):
        texts.append((text, prefix))
        return [compile_one(text)]

    monkeypatch.setattr(codegen, "compile_parts", record)
    graphc.build(_model(), "native")
    monkeypatch.undo()
    return texts[0]


def _defined(text: str) -> list[str]:
    return re.findall(r'^define [^@]*@"([^"]+)"', text, re.M)


def test_parts_define_every_function_once_and_verify(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    text, prefix = _module_text(monkeypatch)
    whole = _defined(text)
    internal = set(re.findall(r'^define internal [^@]*@"([^"]+)"', text, re.M))
    assert internal and len(whole) > 6
    for parts in (2, 3, 5):
        texts = split_module(text, parts, prefix)
        assert len(texts) == parts
        defined = [name for part in texts for name in _defined(part)]
        assert sorted(defined) == sorted(prefix + n if n in internal else n for n in whole)  # each once
        for part in texts:
            llvm.parse_assembly(part).verify()  # declarations cover every use
            assert "define internal" not in part
            for name in internal:
                assert f'@"{name}"' not in part  # renamed everywhere, definitions and uses
    assert split_module(text, 1, prefix) == [text]


def test_modules_that_cannot_be_split_stay_whole():
    writable = ('@"counter" = internal global i64 0\n'
                'define void @"a"() {\n  ret void\n}\ndefine void @"b"() {\n  ret void\n}\n')
    assert split_module(writable, 2, "p.") == [writable]  # a writable global stays one definition
    single = 'define void @"a"() {\n  ret void\n}\n'
    assert split_module(single, 4, "p.") == [single]
    pointed = ('@"table" = internal constant [1 x ptr] [ptr @"k"]\n'
               'define internal void @"k"() {\n  ret void\n}\n'
               'define ptr @"get"() {\n  %x = load ptr, ptr @"table"\n  ret ptr %x\n}\n')
    parts = split_module(pointed, 2, "p.")
    assert len(parts) == 2
    for part in parts:  # the constant copied with the function it points to declared
        llvm.parse_assembly(part).verify()


def test_models_built_in_parts_equal_the_whole_build(monkeypatch, tmp_path):
    x = np.random.default_rng(5).standard_normal((3, 11, 9, 6)).astype(np.float32)
    model = _model()
    want = graphc.build(model, "reference").predict(x)
    got, stats = {}, {}
    monkeypatch.setattr(parallel_emit, "MIN_PART_CHARS", 1)
    for jobs in ("1", "3"):
        monkeypatch.setenv("GRAPHC_COMPILE_JOBS", jobs)
        monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / f"cache{jobs}"))
        cm = graphc.build(model, "native")
        got[jobs], stats[jobs] = cm.predict(x), cm.compile_stats
    assert stats["1"]["llvm_parts"] == 1 and stats["3"]["llvm_parts"] == 3
    assert got["1"].tobytes() == got["3"].tobytes()
    np.testing.assert_allclose(got["3"], want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_internal_symbols_are_hidden_under_the_model_prefix(monkeypatch, tmp_path):
    monkeypatch.setattr(parallel_emit, "MIN_PART_CHARS", 1)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    cm = graphc.build(_model(), "native")
    obj = cm.files.objects["model"]
    listing = subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True, text=True, check=True).stdout
    split_symbols = [line.split()[-1] for line in listing.splitlines() if ".k_" in line]
    assert split_symbols and all(s.startswith("gcm_split_me.") for s in split_symbols)
    exported = subprocess.run(["nm", "-D", "--defined-only", str(cm.files.shared)], capture_output=True,
                              text=True, check=True).stdout
    assert ".k_" not in exported  # hidden: linked, never exported


def test_a_worker_that_cannot_run_leaves_its_part_to_this_process(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    text, prefix = _module_text(monkeypatch)
    info = host_target()
    monkeypatch.setattr(parallel_emit, "MIN_PART_CHARS", 1)
    calls = []

    def one(part):
        calls.append(part)
        return compile_ir(part, info)

    objects = compile_parts(text, one, emission_spec(info), prefix=prefix, jobs=3)
    assert len(objects) == 3 and len(calls) == 1  # the workers compiled two parts
    monkeypatch.setattr(sys, "executable", "/bin/false")
    calls.clear()
    again = compile_parts(text, one, emission_spec(info), prefix=prefix, jobs=3)
    assert len(calls) == 3 and again == objects  # the same objects, all compiled here


def test_jobs_switch(monkeypatch):
    monkeypatch.delenv("GRAPHC_COMPILE_JOBS", raising=False)
    assert 1 <= compile_jobs() <= parallel_emit.MAX_DEFAULT_JOBS
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "5")
    assert compile_jobs() == 5
    for bad in ("0", "-2", "two"):
        monkeypatch.setenv("GRAPHC_COMPILE_JOBS", bad)
        with pytest.raises(ValueError, match=f"GRAPHC_COMPILE_JOBS='{bad}': expected a positive number"):
            compile_jobs()
