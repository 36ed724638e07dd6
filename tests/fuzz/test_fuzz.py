"""Fuzz targets for every reader of untrusted bytes, and the inputs they found, kept as regressions.

- the native weights loader (tests/fuzz/fuzz_weights.c): libFuzzer with AddressSanitizer and
  UndefinedBehaviorSanitizer when clang provides it, else the target's own mutation loop under the
  same sanitizers (any C compiler);
- ``.keras`` and ``.weights.h5`` loading, and the ONNX export of what loads (tests/fuzz/keras_files.py).

Each fuzz run lasts ``$GRAPHC_FUZZ_SECONDS`` (default 5; CI gives each a minute) from the committed
seed corpora, with seed ``$GRAPHC_FUZZ_SEED`` (default: a new one, printed). The regression tests
replay ``tests/fuzz/corpus/regressions`` (every input a fuzzer ever broke graphc with) and the seeds
on every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphc.backends.llvm.toolchain import find_cc, runtime_dir
from tests.fuzz.keras_files import CORPUS
from tests.fuzz.seeds import WEIGHTS_CORPUS, abi_weights_file

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "corpus" / "regressions"
ROOT = HERE.parents[1]
SANITIZE = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=1",
           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}


def fuzz_seconds() -> float:
    return float(os.environ.get("GRAPHC_FUZZ_SECONDS", "5"))


def fuzz_seed() -> int:
    seed = int(os.environ.get("GRAPHC_FUZZ_SEED") or time.time_ns() % 2**31)
    print(f"fuzz seed {seed} (GRAPHC_FUZZ_SEED={seed} repeats this run)")
    return seed


# ------------------------------------------------------------------ the native weights loader

def _libfuzzer_clang() -> str | None:
    """A clang whose libFuzzer links (Debian: clang-14 and libclang-rt-14-dev)."""
    for name in ("clang", "clang-14", "clang-15", "clang-16"):
        path = shutil.which(name)
        if path:
            probe = subprocess.run([path, "-fsanitize=fuzzer", "-x", "c", "-", "-o", os.devnull],
                                   input="#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput("
                                         "const uint8_t* d, size_t n) { (void)d; (void)n; return 0; }\n",
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return path
    return None


@pytest.fixture(scope="module")
def weights_target(abi_library, tmp_path_factory) -> tuple[Path, bool]:
    """(the fuzz binary, whether it is libFuzzer) built with the runtime from source under the sanitizers."""
    out = tmp_path_factory.mktemp("fuzz_weights")
    rt = runtime_dir()
    code = abi_library.objects["model"].parent
    sources = [str(p) for p in sorted((rt / "src").glob("*.c"))] + [str(code / "abi_model_model.c")]
    clang = _libfuzzer_clang()
    cc, mode = (clang, ["-fsanitize=fuzzer"]) if clang else (find_cc(), ["-DGC_FUZZ_STANDALONE"])
    exe = out / "fuzz_weights"
    proc = subprocess.run([cc, "-std=c11", "-D_GNU_SOURCE", *SANITIZE, *mode, f"-I{rt / 'include'}",
                           f"-I{rt / 'src'}", f"-I{abi_library.directory}", str(HERE / "fuzz_weights.c"), *sources,
                           str(abi_library.objects["model"]), str(abi_library.objects["weights"]), "-lpthread",
                           "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe, clang is not None


def _weights_inputs() -> list[Path]:
    return sorted(WEIGHTS_CORPUS.iterdir()) + sorted(REGRESSIONS.glob("weights-native-*"))


def test_the_weights_seed_corpus_is_current():
    """The committed seeds are this graphc's weights file of abi_model (else regenerate them:
    python -m tests.fuzz.seeds)."""
    assert (WEIGHTS_CORPUS / "valid").read_bytes()[1:] == abi_weights_file()


def test_weights_loader_regressions(weights_target):
    exe, is_libfuzzer = weights_target
    args = [str(p) for p in _weights_inputs()] if is_libfuzzer else ["0", *map(str, _weights_inputs())]
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **SAN_ENV})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.mark.fuzz
def test_fuzz_the_native_weights_loader(weights_target, tmp_path):
    exe, is_libfuzzer = weights_target
    seconds, seed = fuzz_seconds(), fuzz_seed()
    env = {**os.environ, **SAN_ENV, "GRAPHC_FUZZ_SEED": str(seed), "GRAPHC_FUZZ_CURRENT": str(tmp_path / "current")}
    if is_libfuzzer:
        work = tmp_path / "corpus"
        work.mkdir()
        # Any single allocation above 2 GB is a finding (the loader must refuse sizes before allocating);
        # the process's whole RSS is not the loader's property: in the full suite it sat at 4.5 GB from the
        # first input on (31 MB when run alone), which an RSS limit reported as an out-of-memory input.
        cmd = [str(exe), f"-max_total_time={int(max(1, seconds))}", f"-seed={seed}", "-timeout=10",
               "-rss_limit_mb=0", "-malloc_limit_mb=2048", "-max_len=8192", "-print_final_stats=1",
               f"-artifact_prefix={tmp_path}/",
               str(work), str(WEIGHTS_CORPUS)]
    else:
        cmd = [str(exe), str(seconds), *map(str, sorted(WEIGHTS_CORPUS.iterdir()))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300, env=env, cwd=tmp_path)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-")))
    assert proc.returncode == 0 and not crashes, (
        f"the weights loader broke (inputs in {tmp_path}: {crashes or 'current'}; add them to "
        f"{REGRESSIONS} as weights-native-NAME):\n{proc.stderr[-6000:]}")
    print(proc.stderr[-600:] if is_libfuzzer else proc.stdout)


# ------------------------------------------------------------------ Keras files and ONNX export

def _driver(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.fuzz.keras_files", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "torch"})


@pytest.mark.parametrize("target", ["keras", "onnx"])
def test_keras_file_regressions(target):
    """Every input the Keras-file fuzzer found, through both targets (in a process of its own: one
    of them once hung the HDF5 library)."""
    files = sorted(p for p in REGRESSIONS.iterdir() if p.suffix in (".keras", ".h5"))
    assert files
    proc = _driver(target, *map(str, files), timeout=600)
    assert proc.returncode == 0 and " 0 finding(s)" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_every_seed_loads_and_exports():
    """The seeds are good files: what the fuzzer mutates starts from models that load and export."""
    import graphc
    import graphc.onnx
    from graphc.frontend import state

    seeds = sorted(CORPUS.glob("*.keras"))
    assert len(seeds) >= 10
    for path in seeds:
        state.clear_session()
        model = graphc.models.load_model(str(path), compile=False)
        graphc.onnx.verify(model, graphc.onnx.random_inputs(model)).ok or pytest.fail(f"{path.name} disagrees")


@pytest.mark.fuzz
@pytest.mark.parametrize("target", ["keras", "onnx"])
def test_fuzz_keras_files(target, tmp_path):
    seconds, seed = fuzz_seconds(), fuzz_seed()
    findings = tmp_path / "findings"
    proc = _driver(target, "--seconds", str(seconds), "--seed", str(seed), "--findings", str(findings),
                   timeout=seconds + 300)
    found = sorted(p.name for p in findings.glob("*") if not p.name.endswith(".txt")) if findings.exists() else []
    assert proc.returncode == 0, (f"the {target} fuzzer found {found} (inputs and tracebacks in {findings}; "
                                  f"add them to {REGRESSIONS}):\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}")
    print(proc.stdout.strip().splitlines()[-1])
