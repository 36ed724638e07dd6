"""The weights of a library as an ELF relocatable object, written directly from the arrays.

A library embeds its weights as one read-only, hidden, 64-byte aligned symbol. The assembler can make
that object from a blob file (``.incbin``, :func:`toolchain.weights_asm`), but it passes every byte
through itself: VGG16's 528 MB took 1.45 s to assemble, after 0.5 s to gather the blob in memory and
0.3 s to write it. The object for one data section is small and fixed (ELF header, the section, an
empty ``.note.GNU-stack``, a symbol table of one symbol, string tables; the System V gABI's layout),
so it is written here, each constant straight from its array to its offset in the file. Only for
ELF platforms whose relocatable objects this layout fits (x86-64, AArch64 Linux); others (WebAssembly)
keep the assembler.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

ELF_MACHINES = {"x86_64": 62, "aarch64": 183}  # EM_X86_64, EM_AARCH64
ALIGN = 64

_SHT_PROGBITS, _SHT_SYMTAB, _SHT_STRTAB = 1, 2, 3
_SHF_ALLOC = 2
_STB_GLOBAL, _STT_OBJECT, _STV_HIDDEN = 1, 1, 2


def elf_machine(platform: str) -> int | None:
    """The ELF machine number of a Linux ``platform`` (``x86_64-linux-gnu``) this writer serves, else None."""
    arch, _, system = platform.partition("-")
    return ELF_MACHINES.get(arch) if system.startswith("linux") else None


def _section(name: int, kind: int, flags: int, offset: int, size: int, link: int = 0, info: int = 0,
             align: int = 1, entsize: int = 0) -> bytes:
    return struct.pack("<IIQQQQIIQQ", name, kind, flags, 0, offset, size, link, info, align, entsize)


def write_data_object(path: Path, symbol: str, size: int, pieces: Iterable[tuple[int, memoryview]],
                      machine: int) -> None:
    """An ELF64 little-endian relocatable object at ``path`` defining ``symbol`` as ``size`` bytes of
    read-only data (hidden, 64-byte aligned) in section ``.rodata.SYMBOL``, followed by one zero byte
    as the assembler's version has: ``pieces`` are (offset, bytes) within the data, the rest zeros."""
    section = f".rodata.{symbol}".encode()
    shstrtab = b"\0" + section + b"\0.note.GNU-stack\0.symtab\0.strtab\0.shstrtab\0"
    names = {n: shstrtab.index(b"\0" + n + b"\0") + 1 for n in
             (section, b".note.GNU-stack", b".symtab", b".strtab", b".shstrtab")}
    strtab = b"\0" + symbol.encode() + b"\0"
    data_offset = ALIGN  # the 64-byte header, then the data on its alignment
    data_size = size + 1
    symtab_offset = -(-(data_offset + data_size) // 8) * 8
    symtab = bytes(24) + struct.pack("<IBBHQQ", 1, (_STB_GLOBAL << 4) | _STT_OBJECT, _STV_HIDDEN, 1, 0, data_size)
    strtab_offset = symtab_offset + len(symtab)
    shstrtab_offset = strtab_offset + len(strtab)
    headers_offset = -(-(shstrtab_offset + len(shstrtab)) // 8) * 8
    headers = b"".join([
        bytes(64),
        _section(names[section], _SHT_PROGBITS, _SHF_ALLOC, data_offset, data_size, align=ALIGN),
        _section(names[b".note.GNU-stack"], _SHT_PROGBITS, 0, data_offset + data_size, 0),
        _section(names[b".symtab"], _SHT_SYMTAB, 0, symtab_offset, len(symtab), link=4, info=1, align=8, entsize=24),
        _section(names[b".strtab"], _SHT_STRTAB, 0, strtab_offset, len(strtab)),
        _section(names[b".shstrtab"], _SHT_STRTAB, 0, shstrtab_offset, len(shstrtab)),
    ])
    elf_header = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
                  + struct.pack("<HHIQQQIHHHHHH", 1, machine, 1, 0, 0, headers_offset, 0, 64, 0, 0, 64, 6, 5))
    with open(path, "wb") as f:
        f.write(elf_header)
        f.truncate(data_offset + data_size)  # the data's zeros, where no piece writes
        for offset, piece in pieces:
            f.seek(data_offset + offset)
            f.write(piece)
        f.seek(symtab_offset)
        f.write(symtab + strtab + shstrtab)
        f.seek(headers_offset)
        f.write(headers)


__all__ = ["ALIGN", "ELF_MACHINES", "elf_machine", "write_data_object"]
