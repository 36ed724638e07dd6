"""CRC32C (Castagnoli), the checksum of weights files, in NumPy.

The C runtime checks it when loading a weights file (graphc/c_runtime/src/checksum.c); this
module computes it when writing one. The standard library has no CRC32C, so the payload is cut
into ``lanes`` equal pieces whose CRCs advance together one byte per step (vectorized across the
lanes), and the pieces' CRCs are then joined with the zero-extension operator of the CRC — the
way zlib's ``crc32_combine`` joins two CRCs. A 100 MB payload takes about a second.
"""

from __future__ import annotations

from functools import cache

import numpy as np

POLY = 0x82F63B78  # CRC32C, reflected


@cache
def _table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(POLY), table >> 1).astype(np.uint32)
    return table


def _update(crc: int, data: np.ndarray) -> int:
    """Byte-at-a-time CRC update of ``crc`` (no pre/post inversion) over ``data`` (uint8)."""
    table = _table()
    for b in data.tolist():
        crc = int(table[(crc ^ b) & 0xFF]) ^ (crc >> 8)
    return crc


def _zeros_operator(nbytes: int) -> list[int]:
    """The 32 columns of the GF(2) matrix that advances a raw CRC over ``nbytes`` zero bytes."""
    # one zero bit: shift right, xor the polynomial when the low bit falls out
    op = [POLY] + [1 << (i - 1) for i in range(1, 32)]
    result = [1 << i for i in range(32)]  # identity
    bits = nbytes * 8
    while bits:
        if bits & 1:
            result = [_apply(op, c) for c in result]
        op = [_apply(op, c) for c in op]
        bits >>= 1
    return result


def _apply(matrix: list[int], vector: int) -> int:
    out, i = 0, 0
    while vector:
        if vector & 1:
            out ^= matrix[i]
        vector >>= 1
        i += 1
    return out


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, lanes: int = 1024) -> int:
    """CRC32C of ``data`` (``crc32c(b"123456789") == 0xE3069283``)."""
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    lanes = max(1, min(lanes, n // 64))
    length = n // lanes
    crc = 0xFFFFFFFF
    if length:
        table = _table()
        pieces = buf[: lanes * length].reshape(lanes, length)
        # the first piece starts from the initial value, the others from zero (linearity)
        state = np.zeros(lanes, dtype=np.uint32)
        state[0] = crc
        for j in range(length):
            state = table[(state ^ pieces[:, j]) & 0xFF] ^ (state >> 8)
        shift = _zeros_operator(length)
        crc = int(state[0])
        for piece_crc in state[1:].tolist():
            crc = _apply(shift, crc) ^ piece_crc
    crc = _update(crc, buf[lanes * length:])
    return crc ^ 0xFFFFFFFF


__all__ = ["crc32c"]
