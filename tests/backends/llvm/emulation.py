"""Native libraries built for another platform, run under its emulator (qemu-user) in tests.

With ``GRAPHC_TEST_TRIPLE=aarch64-linux-gnu``, :func:`tests.backends.llvm.helpers.load` builds for
that platform and returns an :class:`EmulatedLibrary`: each run is a small C program
(``emulated_runner.c``, linked with the model's static library) executed under qemu-user, so the
native op suite checks the cross-compiled kernels against the reference interpreter::

    GRAPHC_TEST_TRIPLE=aarch64-linux-gnu python -m pytest tests/backends/llvm/test_ops.py

An emulated library offers what the op tests use of :class:`graphc.runtime.Library` (its inputs'
names, instances that run); times measured under emulation say nothing about the real machine.
"""

from __future__ import annotations

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
    if shutil.which(cross.emulator) is None:
        return f"running {platform} programs here needs {cross.emulator} (`apt-get install qemu-user`)"
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
    cross = CROSS_TOOLS[platform]
    return [shutil.which(cross.emulator) or cross.emulator, "-L", cross.sysroot]


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
        static = ensure_static(files)
        self.runner = self.workdir / "runner"
        proc = subprocess.run([toolchain_for(platform).cc(), "-std=c11", "-O1", f"-I{files.directory}",
                               f"-DMODEL={files.symbol}", str(RUNNER), str(static), "-lpthread", "-lm",
                               "-o", str(self.runner)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building the {platform} runner failed:\n{proc.stderr}")

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
        proc = subprocess.run([*emulator_command(lib.platform), str(lib.runner), str(inputs), str(outputs),
                               str(self.threads)], capture_output=True, text=True, timeout=600)
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
