"""Native libraries built for another platform, run under its emulator in tests: qemu-user for
aarch64, wasmtime (its Python module) for wasm32-wasi.

With ``GRAPHC_TEST_TRIPLE=aarch64-linux-gnu`` (or ``wasm32-wasi``), :func:`tests.backends.llvm.helpers.load`
builds for that platform and returns an :class:`EmulatedLibrary`: each run is a small C program
(``emulated_runner.c``, linked with the model's static library) executed under the emulator, so the
native op suite checks the cross-compiled kernels against the reference interpreter::

    GRAPHC_TEST_TRIPLE=aarch64-linux-gnu python -m pytest tests/backends/llvm/test_ops.py

An emulated library offers what the op tests use of :class:`graphc.runtime.Library` (its inputs'
names, instances that run); times measured under emulation say nothing about the real machine.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from graphc.backends.llvm.codegen import GC_DTYPES
from graphc.backends.llvm.native import LibraryFiles, ensure_static
from graphc.backends.llvm.toolchain import CROSS_TOOLS, ToolchainError, toolchain_for
from graphc.ir.graph import Graph

TRIPLE_ENV = "GRAPHC_TEST_TRIPLE"
RUNNER = Path(__file__).with_name("emulated_runner.c")
_NUMPY_DTYPES = {code: np.dtype(name) for name, code in GC_DTYPES.items()}


def requested_triple() -> str | None:
    """The platform the native tests are asked to run for ($GRAPHC_TEST_TRIPLE), if any."""
    return os.environ.get(TRIPLE_ENV) or None


def missing_tools(platform: str) -> str | None:
    """Why this machine cannot build and run ``platform``'s programs; None when it can."""
    cross = CROSS_TOOLS.get(platform)
    if cross is None:
        return f"no emulated runs for {platform}: graphc cross-compiles for {', '.join(CROSS_TOOLS)}"
    try:
        tc = toolchain_for(platform)
        tc.cc()
        tc.ar()
    except ToolchainError as exc:
        return str(exc)
    if not cross.sysroot:  # a Python module runs its programs
        if importlib.util.find_spec(cross.emulator) is None:
            return f"running {platform} programs here needs {cross.emulator} (`{cross.emulator_install}`)"
        return None
    if shutil.which(cross.emulator) is None:
        return f"running {platform} programs here needs {cross.emulator} (`{cross.emulator_install}`)"
    if not Path(cross.sysroot).is_dir():
        return f"running {platform} programs here needs its C library in {cross.sysroot} (`apt-get install " \
               f"{cross.packages}`)"
    return None


def require_emulation(platform: str) -> None:
    """Skip the calling test, with the reason, where ``platform``'s toolchain or emulator is missing."""
    reason = missing_tools(platform)
    if reason is not None:
        pytest.skip(reason)


def emulator_command(platform: str) -> list[str]:
    """The qemu-user command line that runs ``platform``'s programs (Linux platforms)."""
    cross = CROSS_TOOLS[platform]
    return [shutil.which(cross.emulator) or cross.emulator, "-L", cross.sysroot]


def link_program(platform: str, sources: list[Path], static_library: Path, include: Path, symbol: str,
                 out: Path) -> None:
    """A C program using one model library (``-DMODEL=symbol``), for ``platform``."""
    tc = toolchain_for(platform)
    proc = subprocess.run([tc.cc(), *tc.flags, "-std=c11", "-O1", f"-I{include}", f"-DMODEL={symbol}",
                           *map(str, sources), str(static_library), "-lpthread", "-lm",
                           *CROSS_TOOLS[platform].link_flags, "-o", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building {out.name} for {platform} failed:\n{proc.stderr}")


_WASM: dict = {}  # the wasmtime engine ("engine") and each program's compiled module


def run_program(platform: str, program: Path, args: list[str], cwd: Path,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs ``program`` under ``platform``'s emulator in ``cwd`` (paths in ``args`` relative to it):
    qemu-user, or wasmtime with ``cwd`` as the module's only directory (``timeout`` is qemu's)."""
    if CROSS_TOOLS[platform].sysroot:
        return subprocess.run([*emulator_command(platform), str(program), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)
    import wasmtime

    engine = _WASM.setdefault("engine", wasmtime.Engine())
    module = _WASM.get(program)
    if module is None:
        module = _WASM[program] = wasmtime.Module.from_file(engine, str(program))
    store = wasmtime.Store(engine)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    config = wasmtime.WasiConfig()
    config.argv = [program.name, *args]
    out, err = cwd / f".{program.name}.stdout", cwd / f".{program.name}.stderr"
    config.stdout_file, config.stderr_file = str(out), str(err)
    config.preopen_dir(str(cwd), ".")
    store.set_wasi(config)
    code, trap = 0, ""
    try:
        linker.instantiate(store, module).exports(store)["_start"](store)
    except wasmtime.ExitTrap as exc:
        code = exc.code
    except wasmtime.Trap as exc:  # the program crashed (out of bounds, unreachable...)
        code, trap = 134, f"\nwasm trap: {exc}"
    return subprocess.CompletedProcess([program.name, *args], code, out.read_text(), err.read_text() + trap)


@dataclass
class _Input:
    name: str


class EmulatedLibrary:
    """A model library for ``platform``, with its runner program built once."""

    def __init__(self, files: LibraryFiles, graph: Graph, platform: str):
        self.platform = platform
        self.inputs = [_Input(name) for name in graph.inputs]
        self.workdir = Path(tempfile.mkdtemp(prefix="graphc-emulated-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.workdir, True)
        self.runner = self.workdir / "runner"
        link_program(platform, [RUNNER], ensure_static(files), files.directory, files.symbol, self.runner)

    def instance(self, threads: int | None = None) -> EmulatedInstance:
        return EmulatedInstance(self, threads or 1)


class EmulatedInstance:
    """One run per call: inputs written to a file, the runner under the emulator, outputs read back."""

    def __init__(self, library: EmulatedLibrary, threads: int):
        self.library = library
        self.threads = threads

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        lib = self.library
        inputs, outputs = lib.workdir / "inputs.bin", lib.workdir / "outputs.bin"
        with inputs.open("wb") as f:
            for a in arrays:
                a = np.ascontiguousarray(a)
                f.write(np.int32(a.ndim).tobytes() + np.asarray(a.shape, dtype="<i8").tobytes() + a.tobytes())
        proc = run_program(lib.platform, lib.runner, [inputs.name, outputs.name, str(self.threads)], lib.workdir)
        if proc.returncode != 0:
            raise RuntimeError(f"the {lib.platform} runner failed ({proc.returncode}): {proc.stderr.strip()}")
        return read_outputs(outputs.read_bytes())

    def close(self) -> None:
        pass


def read_outputs(data: bytes) -> list[np.ndarray]:
    """The arrays emulated_runner.c wrote: (dtype, rank, shape, data) each."""
    out, pos = [], 0
    while pos < len(data):
        code, rank = np.frombuffer(data, "<i4", 2, pos)
        pos += 8
        shape = tuple(int(d) for d in np.frombuffer(data, "<i8", int(rank), pos))
        pos += 8 * int(rank)
        dtype = _NUMPY_DTYPES[int(code)]
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        out.append(np.frombuffer(data[pos:pos + n], dtype).reshape(shape).copy())
        pos += n
    return out
