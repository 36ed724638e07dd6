"""Weights files of graphc's native runtime read into a Model.

A C program that trains a model library saves its state with ``gc_instance_save_weights``
(graphc/c_runtime/src/weights_io.c describes the format): a ``GCWEIGHT`` header, a table naming
every weight (name, dtype, shape, place in the payload) and the payload, each with a CRC32C.
``Model.load_weights`` recognises such a file by its magic and assigns each of the model's
variables the entry named after its graph constant (the name lowering gives it, which the
library's weights carry too); a training library's optimizer slots and iteration count in the
file are skipped. Everything is checked before any variable is set.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"GCWEIGHT"
VERSION = 3
HEADER = struct.Struct("<8sIIQQ")  # magic, version, payload CRC32C, layout digest, payload bytes
TABLE_HEADER = struct.Struct("<IIII")  # table CRC32C, zero, entries, table bytes
DTYPES = {1: np.dtype("float32"), 2: np.dtype("float64"), 3: np.dtype("int32"), 4: np.dtype("int64"),
          5: np.dtype("int8"), 6: np.dtype("uint8"), 7: np.dtype("bool"), 8: np.dtype("float16")}


class NativeWeightsError(ValueError):
    """A native weights file that is corrupt, truncated, of another format version or of another model."""


def is_native_weights_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts with the native weights magic."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_native_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every weight of a format 3 native weights file by name (checksums, sizes and bounds checked)."""
    from graphc.backends.llvm.checksum import crc32c

    where = os.fspath(path)
    data = Path(path).read_bytes()
    if len(data) < HEADER.size + TABLE_HEADER.size:
        raise NativeWeightsError(f"{where}: truncated native weights file ({len(data)} bytes)")
    magic, version, payload_crc, _digest, nbytes = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise NativeWeightsError(f"{where}: not a graphc native weights file")
    if version != VERSION:
        raise NativeWeightsError(f"{where}: native weights format version {version}; Model.load_weights reads "
                                 f"version {VERSION} (saved by gc_instance_save_weights), whose entries are named")
    table_crc, zero, count, table_bytes = TABLE_HEADER.unpack_from(data, HEADER.size)
    start = HEADER.size + TABLE_HEADER.size + table_bytes
    if len(data) != start + nbytes:
        raise NativeWeightsError(f"{where}: {len(data)} bytes, its header describes {start + nbytes} (truncated or "
                                 "trailing bytes)")
    if zero != 0 or crc32c(data[HEADER.size + 8:start]) != table_crc:
        raise NativeWeightsError(f"{where}: corrupt native weights file (its table's checksum does not match)")
    payload = memoryview(data)[start:]
    if crc32c(payload) != payload_crc:
        raise NativeWeightsError(f"{where}: corrupt native weights file (its payload's checksum does not match)")
    table = memoryview(data)[HEADER.size + TABLE_HEADER.size:start]
    weights: dict[str, np.ndarray] = {}
    pos = 0
    try:
        for _ in range(count):
            (length,) = struct.unpack_from("<I", table, pos)
            name = bytes(table[pos + 4:pos + 4 + length]).decode("utf-8")
            pos += 4 + length
            code, rank = struct.unpack_from("<ii", table, pos)
            pos += 8
            if code not in DTYPES or not 0 <= rank <= 8:
                raise NativeWeightsError(f"{where}: weight {name!r} has dtype code {code}, rank {rank}")
            shape = struct.unpack_from(f"<{rank}q", table, pos)
            pos += 8 * rank
            offset, size = struct.unpack_from("<QQ", table, pos)
            pos += 16
            dtype = DTYPES[code]
            if any(d < 0 for d in shape) or size != dtype.itemsize * int(np.prod(shape, dtype=np.int64)) \
                    or offset + size > nbytes:
                raise NativeWeightsError(f"{where}: weight {name!r} lies outside the payload")
            weights[name] = np.frombuffer(payload[offset:offset + size], dtype=dtype).reshape(shape).copy()
    except (struct.error, UnicodeDecodeError) as exc:
        raise NativeWeightsError(f"{where}: malformed weights table ({exc})") from None
    return weights


def load_native_weights(model, path: str | os.PathLike, skip_mismatch: bool = False) -> None:
    """Assign ``model``'s variables from a native weights file (all checked before any is set)."""
    from graphc.frontend.to_ir import lower_model

    where = os.fspath(path)
    stored = read_native_weights(path)
    _, params = lower_model(model)  # constant name -> Variable: the names the library's weights carry
    assign = []
    for name, var in params.items():
        value = stored.get(name)
        if value is None:
            raise NativeWeightsError(f"{where}: no weight {name!r} (of layer {var.path.rsplit('/', 1)[0]!r}) in the "
                                     f"file; it holds {sorted(stored)[:8]}")
        if value.shape != tuple(var.shape) or value.dtype != np.dtype(var.dtype):
            if skip_mismatch:
                continue
            raise NativeWeightsError(f"{where}: weight {name!r} is {value.dtype}{list(value.shape)} in the file, the "
                                     f"model's is {np.dtype(var.dtype)}{list(var.shape)}")
        assign.append((var, value))
    for var, value in assign:
        var.assign(value)


__all__ = ["is_native_weights_file", "read_native_weights", "load_native_weights", "NativeWeightsError"]
