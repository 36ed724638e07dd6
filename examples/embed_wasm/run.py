"""Run a model compiled for WebAssembly from Python with wasmtime, through graphc's C ABI.

    graphc compile mlp --target native --triple wasm32-wasi -o build   # build/mlp.wasm
    python run.py build/mlp.wasm --batch 2                               # prints the outputs

``NAME.wasm`` is a WASI reactor module: it exports the C ABI of graphc.h (``gc_model_NAME``,
``gc_instance_create``, ``gc_instance_run``...), ``malloc``/``free`` and its memory. This program
places the inputs in the module's memory, describes them with ``gc_tensor_t`` structs laid out as
on wasm32 (4-byte pointers and ``size_t``), runs the model and reads the outputs back. The same
calls work from any WebAssembly host (a browser with a WASI shim, Node, wasmtime in Rust or Go).
"""

from __future__ import annotations

import argparse
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wasmtime

GC_MAX_RANK = 8
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.int64, 5: np.int8, 6: np.uint8, 7: np.bool_, 8: np.float16}
# wasm32 layouts (graphc.h): gc_tensor_t {dtype, rank, shape[8], data, size_bytes};
# gc_tensor_desc_t {name, dtype, rank, (pad), shape[8], dim_names[8]}
TENSOR_BYTES, TENSOR_DATA = 8 + 8 * GC_MAX_RANK + 8, 8 + 8 * GC_MAX_RANK
DESC_BYTES, DESC_SHAPE = 16 + 12 * GC_MAX_RANK, 16
OPTIONS_BYTES = 256  # at least sizeof(gc_options_t), filled by gc_options_init


class WasmModelError(RuntimeError):
    """A graphc call in the module failed: its status message."""


@dataclass
class TensorDesc:
    """A model input or output: name, dtype code (gc_dtype_t) and shape (-1: a free dimension)."""

    name: str
    code: int
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(DTYPES[self.code])


class WasmModel:
    """One model module and one instance of it (single-threaded: WASI has no threads)."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.name = name or Path(path).stem
        engine = wasmtime.Engine()
        self.store = wasmtime.Store(engine)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self.store.set_wasi(wasmtime.WasiConfig())
        module = wasmtime.Module.from_file(engine, str(path))
        self.exports = linker.instantiate(self.store, module).exports(self.store)
        self.memory = self.exports["memory"]
        self.call("_initialize")
        self.model = self.call(f"gc_model_{self.name}")
        self.inputs = [self._desc("gc_model_input", i) for i in range(self.call("gc_model_num_inputs", self.model))]
        self.outputs = [self._desc("gc_model_output", i) for i in range(self.call("gc_model_num_outputs", self.model))]
        options = self.malloc(OPTIONS_BYTES)
        self.call("gc_options_init", options)
        handle = self.malloc(4)
        self.check(self.call("gc_instance_create", self.model, options, handle))
        self.instance = self.read_u32(handle)
        self.call("free", options)
        self.call("free", handle)

    # ---------------------------------------------------------------- memory and calls
    def call(self, name: str, *args):
        return self.exports[name](self.store, *args)

    def malloc(self, nbytes: int) -> int:
        p = self.call("malloc", max(nbytes, 1))
        if p == 0:
            raise MemoryError(f"the module cannot allocate {nbytes} bytes")
        return p

    def read(self, address: int, nbytes: int) -> bytes:
        return bytes(self.memory.read(self.store, address, address + nbytes))

    def read_u32(self, address: int) -> int:
        return struct.unpack("<I", self.read(address, 4))[0]

    def read_string(self, address: int) -> str:
        data = self.memory.read(self.store, address, min(address + 4096, self.memory.data_len(self.store)))
        return bytes(data[:data.index(0)]).decode()

    def check(self, status: int) -> None:
        if status:
            message = self.read_string(self.call("gc_status_message", status))
            self.call("gc_status_release", status)
            raise WasmModelError(message)

    def _desc(self, which: str, index: int) -> TensorDesc:
        p = self.malloc(DESC_BYTES)
        try:
            self.check(self.call(which, self.model, index, p))
            name_ptr, code, rank = struct.unpack("<Iii", self.read(p, 12))
            shape = struct.unpack(f"<{rank}q", self.read(p + DESC_SHAPE, 8 * rank))
        finally:
            self.call("free", p)
        return TensorDesc(self.read_string(name_ptr), code, shape)

    # ---------------------------------------------------------------- running
    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The model's outputs for ``arrays`` (one per input, converted to the input's dtype)."""
        if len(arrays) != len(self.inputs):
            raise ValueError(f"the model has {len(self.inputs)} inputs, got {len(arrays)} arrays")
        ins, outs = self.malloc(TENSOR_BYTES * len(arrays)), self.malloc(TENSOR_BYTES * len(self.outputs))
        buffers = []
        try:
            for i, (a, desc) in enumerate(zip(arrays, self.inputs)):
                a = np.ascontiguousarray(a, dtype=desc.dtype)
                data = self.malloc(a.nbytes)
                buffers.append(data)
                self.memory.write(self.store, a.tobytes(), data)
                shape = list(a.shape) + [0] * (GC_MAX_RANK - a.ndim)
                self.memory.write(self.store, struct.pack(f"<ii{GC_MAX_RANK}qII", desc.code, a.ndim, *shape, data,
                                                          a.nbytes), ins + i * TENSOR_BYTES)
            # outputs with data NULL: the instance owns their memory until its next run
            self.memory.write(self.store, bytes(TENSOR_BYTES * len(self.outputs)), outs)
            self.check(self.call("gc_instance_run", self.instance, ins, len(arrays), outs, len(self.outputs)))
            results = []
            for j, desc in enumerate(self.outputs):
                t = self.read(outs + j * TENSOR_BYTES, TENSOR_BYTES)
                rank = struct.unpack_from("<i", t, 4)[0]
                shape = struct.unpack_from(f"<{rank}q", t, 8)
                data = struct.unpack_from("<I", t, TENSOR_DATA)[0]
                count = int(np.prod(shape, dtype=np.int64))
                raw = self.read(data, count * desc.dtype.itemsize)
                results.append(np.frombuffer(raw, dtype=desc.dtype).reshape(shape).copy())
            return results
        finally:
            for p in [*buffers, ins, outs]:
                self.call("free", p)

    def close(self) -> None:
        self.call("gc_instance_release", self.instance)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("module", help="NAME.wasm written by graphc compile --triple wasm32-wasi")
    p.add_argument("--name", default=None, help="the library's name (default: the file's stem)")
    p.add_argument("--batch", type=int, default=1, help="the size of free dimensions (default 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = WasmModel(args.module, args.name)
    rng = np.random.default_rng(args.seed)
    arrays = []
    for desc in model.inputs:
        shape = [d if d >= 0 else args.batch for d in desc.shape]
        arrays.append(rng.integers(0, 2, shape).astype(desc.dtype) if np.issubdtype(desc.dtype, np.integer)
                      else rng.standard_normal(shape).astype(desc.dtype))
    for desc, out in zip(model.outputs, model.run(arrays)):
        more = " ..." if out.size > 8 else ""
        print(f"{desc.name} {out.shape}: {np.array2string(out.ravel()[:8], precision=6)}{more}")
    model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
