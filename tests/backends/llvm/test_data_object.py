"""The weights object written without the assembler (data_object): a C program linked with it reads
the bytes the pieces put there (zeros between them), and its symbol and section are what the
assembler's ``.incbin`` object gives (global, hidden, an object of the data's size plus one byte,
64-byte aligned, non-executable stack)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from graphc.backends.llvm import toolchain
from graphc.backends.llvm.data_object import elf_machine, write_data_object
from graphc.backends.llvm.target import host_platform

MACHINE = elf_machine(host_platform())
pytestmark = pytest.mark.skipif(MACHINE is None, reason=f"{host_platform()} is not an ELF platform this writer serves")

READER = r"""
#include <stdio.h>
extern const unsigned char %(sym)s[] __attribute__((visibility("hidden")));
int main(void) { fwrite(%(sym)s, 1, %(size)d, stdout); return 0; }
"""


def _pieces(rng: np.random.Generator, size: int) -> tuple[list[tuple[int, memoryview]], bytes]:
    """Pieces at odd offsets with gaps between them, and the bytes they make."""
    want = bytearray(size)
    pieces, offset = [], 3
    while offset < size - 1:
        n = int(rng.integers(1, min(97, size - offset)))
        chunk = rng.integers(0, 256, n, dtype=np.uint8)
        pieces.append((offset, memoryview(chunk)))
        want[offset:offset + n] = chunk.tobytes()
        offset += n + int(rng.integers(0, 40))
    return pieces, bytes(want)


@pytest.mark.parametrize("size", [1, 7, 4099])
def test_a_program_linked_with_the_object_reads_its_bytes(tmp_path, size):
    rng = np.random.default_rng(size)
    pieces, want = _pieces(rng, size)
    obj = tmp_path / "w.o"
    write_data_object(obj, "gcm_t_weights", size, pieces, MACHINE)
    src = tmp_path / "reader.c"
    src.write_text(READER % {"sym": "gcm_t_weights", "size": size})
    exe = tmp_path / "reader"
    subprocess.run([toolchain.find_cc(), "-o", str(exe), str(src), str(obj)], check=True, capture_output=True)
    got = subprocess.run([str(exe)], check=True, capture_output=True).stdout
    assert got == want


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")
def test_symbol_and_section_are_the_assemblers(tmp_path):
    size = 1000
    pieces, blob = _pieces(np.random.default_rng(1), size)
    ours = tmp_path / "ours.o"
    write_data_object(ours, "gcm_m_weights", size, pieces, MACHINE)
    (tmp_path / "w.bin").write_bytes(blob)
    asm = tmp_path / "w.s"
    asm.write_text(toolchain.weights_asm("gcm_m_weights", tmp_path / "w.bin"))
    theirs = tmp_path / "theirs.o"
    toolchain.assemble(asm, theirs)

    def described(path):
        symbols = subprocess.run(["readelf", "-sW", str(path)], check=True, capture_output=True, text=True).stdout
        line = next(line for line in symbols.splitlines() if line.endswith(" gcm_m_weights"))
        sections = subprocess.run(["readelf", "-SW", str(path)], check=True, capture_output=True, text=True).stdout
        rodata = next(line for line in sections.splitlines() if ".rodata.gcm_m_weights" in line)
        stack = next(line for line in sections.splitlines() if ".note.GNU-stack" in line)
        return line.split()[2:6], re.sub(r"\s+", " ", rodata.split("]", 1)[1]).split()[-4:], stack.split()[-4:]

    assert described(ours) == described(theirs)  # size, OBJECT GLOBAL HIDDEN; flags, alignment 64; stack flags
    dump = subprocess.run(["objcopy", "-O", "binary", "--only-section=.rodata.gcm_m_weights", str(ours),
                           str(tmp_path / "ours.bin")], capture_output=True)
    if dump.returncode == 0:
        assert (tmp_path / "ours.bin").read_bytes() == blob + b"\0"


def test_platforms_served():
    assert elf_machine("x86_64-linux-gnu") == 62 and elf_machine("aarch64-linux-gnu") == 183
    assert elf_machine("wasm32-wasi") is None
