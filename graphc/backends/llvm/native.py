"""Building model libraries and running them from Python.

:func:`compile_library` turns an IR graph into ``libNAME.so``, ``libNAME.a`` and ``NAME.h`` (and
``NAME.weights`` for external weights) in a cache directory keyed by a hash of the graph,
its weights, the options, the target (platform and CPU) and graphc's own code generator and
runtime sources; a second build of the same model is a directory lookup. A library for another
platform (``triple="aarch64-linux-gnu"``) is built the same way by that platform's toolchain; it
can be exported, not loaded here. :class:`NativeCompiledModel` is the
``CompiledModel`` of ``graphc.build(model, target="native")``: it loads the library through
:mod:`graphc.runtime` (the C ABI) and runs ``predict`` on it.
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import struct
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from graphc.backends.llvm import cache as build_cache
from graphc.backends.llvm import switches, toolchain
from graphc.backends.llvm.checksum import crc32c
from graphc.backends.llvm.codegen import (
    Program,
    StepLink,
    constant_bytes,
    generate,
    library_symbol,
    weights_blob,
    weights_layout,
)
from graphc.backends.llvm.data_object import elf_machine, write_data_object
from graphc.backends.llvm.kernels.gemm_blocking import caches_for
from graphc.backends.llvm.parallel_emit import compile_jobs
from graphc.backends.llvm.target import (
    PrecisionFallbackWarning,
    TargetInfo,
    host_platform,
    host_target,
    resolve_target,
    same_machine,
    with_precision,
)
from graphc.ir.graph import Graph
from graphc.ir.types import is_float, is_int

WEIGHTS_MAGIC = b"GCWEIGHT"
WEIGHTS_VERSION = 2
EVAL_SUFFIX = "__eval"  # a training library's evaluation step: symbols gcm_NAME__eval_*
GRADIENT_SUFFIX = "__gradient"  # its split step: the gradient model and the apply model
APPLY_SUFFIX = "__apply"
LINKED_SUFFIXES = (EVAL_SUFFIX, GRADIENT_SUFFIX, APPLY_SUFFIX)

# A training library's split step: (gradient graph, apply graph, gradient buffer entries as
# (weight, the gradient graph's output value holding its gradient, byte offset, bytes)).
SplitGraphs = tuple[Graph, Graph, list[tuple[str, str, int, int]]]


@cache
def _codegen_digest() -> str:
    """Hash of the code that decides what a model compiles to: the backend and the op lowerings, and the
    modules they call on for it (symbolic dims, whose expressions become the code's sizes and item counts;
    the memory analysis behind in-place results; the op costs behind batch splitting)."""
    h = hashlib.blake2b(digest_size=12)
    root = Path(__file__).resolve().parents[2]
    sources = list((root / "backends" / "llvm").rglob("*.py")) + [
        *(root / "ops").glob("*.py"), *(root / "ir").glob("*.py"), *(root / "memory").glob("*.py"),
        root / "bench" / "op_cost.py"]
    for p in sorted(sources):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def structure_digest(graph: Graph) -> str:
    """Hash of everything but the weights' values (ops, types, attributes, weight layouts)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(graph).encode())
    h.update(repr(graph.meta.get("output_names")).encode())
    h.update(repr(graph.meta.get("train_step")).encode())
    h.update(repr(sorted(graph.meta.get("state_updates", {}).items())).encode())
    for name in sorted(graph.constants):
        a = graph.constants[name]
        h.update(f"{name}|{a.dtype}|{a.shape};".encode())
    return h.hexdigest()


def weights_digest(graph: Graph) -> str:
    """What the weights' bytes key in the build cache: SHA-256 (the CPU's SHA extensions hash 56 MB in
    0.03 s where BLAKE2b took 0.06 s), each constant read in place."""
    h = hashlib.sha256()
    for name in sorted(graph.constants):
        h.update(constant_bytes(graph, name))
    return h.hexdigest()[:32]


@dataclass
class LibraryFiles:
    """A built model library: its directory and files."""

    directory: Path
    name: str
    symbol: str
    shared: Path
    static: Path
    header: Path
    weights: Path | None
    objects: dict[str, Path] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    toolchain: toolchain.Toolchain = toolchain.HOST
    precision: str = "float32"  # what its products run at (bf16 asked of a target without it: float32)


def _files(directory: Path, sym: str, external: bool, tc: toolchain.Toolchain) -> LibraryFiles:
    """The files of a library; the shared one is ``libNAME.so``, or ``NAME.wasm`` for WebAssembly."""
    return LibraryFiles(directory=directory, name=sym, symbol=sym, shared=directory / tc.shared_name(sym),
                        static=directory / f"lib{sym}.a", header=directory / f"{sym}.h",
                        weights=directory / f"{sym}.weights" if external else None,
                        objects={"model": directory / f"{sym}.o", "descriptor": directory / f"{sym}_model.o",
                                 "weights": directory / f"{sym}_weights.o"}, toolchain=tc)


def write_weights_file(path: Path, layout_digest: int, blob: bytes | bytearray) -> None:
    """A weights file for ``gc_instance_load_weights``: header (magic, format version, CRC32C of the
    blob, layout digest, size) + blob, nothing after it (graphc/c_runtime/src/instance.c)."""
    header = WEIGHTS_MAGIC + struct.pack("<IIQQ", WEIGHTS_VERSION, crc32c(blob), layout_digest, len(blob))
    with open(path, "wb") as f:
        f.write(header)
        f.write(blob)


def compile_library(graph: Graph, name: str | None = None, *, weights: str = "embedded", cpu: str | None = None,
                    triple: str | None = None, cache: bool = True, eval_graph: Graph | None = None,
                    split: SplitGraphs | None = None, precision: str = "float32") -> LibraryFiles:
    """Compile ``graph`` into a model library (cached); returns where its files are.

    ``name`` (a C identifier) names the library, its header and ``gc_model_NAME``; without it, the
    graph's name made into one. Two cache levels: the code (LLVM object, descriptor, header) is
    keyed by the graph's structure, so a model whose weights changed only re-links; the library
    by code + weights. ``triple`` and ``cpu`` choose the target (:func:`.target.resolve_target`;
    no triple: the host). A training step's ``graph`` may come with its ``eval_graph`` (the
    evaluation step, whose constants are all among the training step's): both go into one library,
    the evaluation step reading the training step's weights (``gc_instance_eval_step``). ``split`` adds
    the split step (``gc_instance_gradient_step`` / ``gc_instance_apply_gradients``): two more graphs whose
    constants are all among the training step's, and the gradient buffer's layout. ``precision``:
    "float32", or "bf16" (:func:`.target.with_precision`: products on bf16 inputs; a target without
    AVX512-BF16 warns with :class:`.target.PrecisionFallbackWarning` and builds float32 code). The
    precision is part of the target's key, so libraries of different precisions never share a cache entry.
    """
    if weights not in ("embedded", "external"):
        raise ValueError(f"weights must be 'embedded' or 'external', got {weights!r}")
    external = weights == "external"
    target, fallback = with_precision(resolve_target(triple, cpu), precision)
    if fallback:
        warnings.warn(fallback, PrecisionFallbackWarning, stacklevel=2)
    tc = toolchain.toolchain_for(target.platform) if triple else toolchain.HOST
    sym = library_symbol(name, default=graph.name)
    split_key = "" if split is None else "|".join([structure_digest(split[0]), structure_digest(split[1]),
                                                   repr(split[2])])
    code_key = _key(structure_digest(graph), structure_digest(eval_graph) if eval_graph is not None else "", split_key,
                    sym,
                    weights, target.key(), _codegen_digest(),
                    toolchain.runtime_key(tc=tc), switches.code_key(),
                    repr(caches_for(same_machine(target, host_target()))))  # the GEMM's block sizes follow them
    code = _cached_dir("code", code_key, cache, lambda d: _build_code(d, graph, name or graph.name, sym, target,
                                                                       external, tc, eval_graph, split))
    lib_key = _key(code_key, weights_digest(graph))
    lib = _cached_dir("lib", lib_key, cache, lambda d: _build_library(d, code, graph, sym, external, tc))
    toolchain.runtime_objects(tc=tc)  # the library's static archive needs them: a use, or a rebuild if evicted
    files = _files(lib, sym, external, tc)
    files.objects["model"] = code / f"{sym}.o"
    files.objects["descriptor"] = code / f"{sym}_model.o"
    for kind, suffix in (("eval", EVAL_SUFFIX), ("gradient", GRADIENT_SUFFIX), ("apply", APPLY_SUFFIX)):
        if (code / f"{sym}{suffix}.o").exists():
            files.objects[f"{kind}_model"] = code / f"{sym}{suffix}.o"
            files.objects[f"{kind}_descriptor"] = code / f"{sym}{suffix}_model.o"
    files.stats = {**_read_stats(code), **_read_stats(lib)}
    files.precision = target.precision
    return files


def _key(*parts: str) -> str:
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def _cached_dir(kind: str, key: str, cache: bool, build) -> Path:
    """``cache_dir()/native/kind/key``, built by ``build(tmp_dir)`` unless present."""
    final = build_cache.cache_dir() / "native" / kind / key
    if cache and (final / "done").exists():
        build_cache.touch(final)
        return final

    def build_entry(tmp: Path) -> None:
        stats = build(tmp)
        (tmp / "stats.txt").write_text("".join(f"{k}={v}\n" for k, v in stats.items()))
        (tmp / "done").write_text("")

    # an entry without "done" (a build that died) is replaced; a finished one, perhaps published by a
    # concurrent build of the same key while this one ran, stays
    build_cache.publish(final, build_entry, complete=lambda entry: (entry / "done").exists())
    return final


def _read_stats(directory: Path) -> dict:
    p = directory / "stats.txt"
    out: dict = {}
    if p.exists():
        for line in p.read_text().splitlines():
            k, _, v = line.partition("=")
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def write_object(program: Program, path: Path, tc: toolchain.Toolchain) -> None:
    """``program``'s object at ``path``: as compiled, or its parts merged by the linker."""
    if len(program.objects) == 1:
        path.write_bytes(program.objects[0])
        return
    parts = [path.with_name(f"{path.stem}.part{i}.o") for i in range(len(program.objects))]
    for part, obj in zip(parts, program.objects):
        part.write_bytes(obj)
    toolchain.merge_objects(parts, path, tc)
    for part in parts:
        part.unlink()


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while code is generated, as it was after.

    Code generation creates millions of short-lived llvmlite objects; each allocation burst starts a
    collection that walks every object of the process, and beside a loaded Keras and PyTorch (half a
    million objects) those walks took most of the time: EfficientNetB0's code generation 2.2-2.5 s
    with the collector, 0.77-0.82 s without, for the same peak memory (815 MB either way: what the
    objects hold is freed by reference counting; what is left in cycles the collector takes later).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_code(d: Path, graph: Graph, name: str, sym: str, target: TargetInfo, external: bool,
                tc: toolchain.Toolchain, eval_graph: Graph | None = None, split: SplitGraphs | None = None) -> dict:
    with _collector_paused():
        return _generate_code(d, graph, name, sym, target, external, tc, eval_graph, split)


def _generate_code(d: Path, graph: Graph, name: str, sym: str, target: TargetInfo, external: bool,
                   tc: toolchain.Toolchain, eval_graph: Graph | None, split: SplitGraphs | None) -> dict:
    t0 = time.perf_counter()
    graphc_h = (toolchain.runtime_dir() / "include" / "graphc" / "graphc.h").read_text()
    link = StepLink(symbol=sym)
    jobs = compile_jobs() if tc is toolchain.HOST else 1  # parts are merged by the host's linker only

    def linked_model(linked: Graph, suffix: str) -> str:
        """Compile a graph reading ``graph``'s weights blob as a hidden model; returns its struct's symbol."""
        linked_sym = f"{sym}{suffix}"
        program = generate(linked, name, target, graphc_h=graphc_h, external_weights=external,
                           link=StepLink(symbol=linked_sym, layout=weights_layout(graph),
                                         weights_symbol=f"gcm_{sym}_weights", model_symbol=f"gcm_{linked_sym}_model"),
                           jobs=jobs)
        write_object(program, d / f"{linked_sym}.o", tc)
        (d / f"{linked_sym}_model.c").write_text(program.descriptor_c)
        toolchain.compile_c(d / f"{linked_sym}_model.c", d / f"{linked_sym}_model.o", tc=tc)
        return f"gcm_{linked_sym}_model"

    if eval_graph is not None:
        link.eval_step = linked_model(eval_graph, EVAL_SUFFIX)
    if split is not None:
        gradient_graph, apply_graph, entries = split
        link.gradient_step = linked_model(gradient_graph, GRADIENT_SUFFIX)
        link.apply_step = linked_model(apply_graph, APPLY_SUFFIX)
        link.gradients = [(w, gradient_graph.outputs.index(value), offset, nbytes)
                          for w, value, offset, nbytes in entries]
    program = generate(graph, name, target, graphc_h=graphc_h, external_weights=external, link=link, jobs=jobs)
    write_object(program, d / f"{sym}.o", tc)
    desc_c = d / f"{sym}_model.c"
    desc_c.write_text(program.descriptor_c)
    toolchain.compile_c(desc_c, d / f"{sym}_model.o", tc=tc)
    (d / f"{sym}.h").write_text(program.header)
    return {"codegen_s": round(program.stats["lower_s"], 4), "llvm_s": round(program.stats["llvm_s"], 4),
            "code_s": round(time.perf_counter() - t0, 4), "kernels": program.stats["kernels"],
            "kernel_functions": program.stats["kernel_functions"], "ir_chars": program.stats["ir_chars"],
            "object_bytes": (d / f"{sym}.o").stat().st_size, "llvm_parts": program.stats["llvm_parts"],
            "layout_digest": program.layout_digest, "fused_ops": program.stats["fused_ops"]}


def _build_library(d: Path, code: Path, graph: Graph, sym: str, external: bool, tc: toolchain.Toolchain) -> dict:
    t0 = time.perf_counter()
    entries, total, digest = weights_layout(graph)
    objects = [code / f"{sym}.o", code / f"{sym}_model.o"]
    objects += [p for suffix in LINKED_SUFFIXES for p in (code / f"{sym}{suffix}.o", code / f"{sym}{suffix}_model.o")
                if p.exists()]
    files = _files(d, sym, external, tc)
    machine = elf_machine(tc.platform or host_platform())
    if external:
        write_weights_file(files.weights, digest, weights_blob(graph, entries, total))
    elif machine is not None:  # the object written from the arrays (data_object: no blob, no assembler)
        pieces = ((w.offset, constant_bytes(graph, w.name).data) for w in entries)
        write_data_object(d / f"{sym}_weights.o", f"gcm_{sym}_weights", total, pieces, machine)
        objects.append(d / f"{sym}_weights.o")
    else:
        bin_path = d / f"{sym}_weights.bin"
        bin_path.write_bytes(weights_blob(graph, entries, total))
        asm = d / f"{sym}_weights.s"
        # assembled in d, where the blob is
        asm.write_text(toolchain.weights_asm(f"gcm_{sym}_weights", Path(bin_path.name), tc.wasm))
        toolchain.assemble(asm, d / f"{sym}_weights.o", tc)
        bin_path.unlink()
        objects.append(d / f"{sym}_weights.o")
    runtime = toolchain.runtime_objects(tc=tc)
    toolchain.link_shared(objects + runtime, files.shared, tc)
    # objects of this directory by name (it is renamed into the cache), others by absolute path
    (d / "static_objects.txt").write_text("\n".join(p.name if p.parent == d else str(p) for p in objects + runtime))
    shutil.copyfile(code / f"{sym}.h", files.header)
    return {"link_s": round(time.perf_counter() - t0, 4), "weights_bytes": total,
            "so_bytes": files.shared.stat().st_size}


def _require_in_cache(files: LibraryFiles) -> None:
    """A build's files live in the cache, which evicts its least recently used entries: a
    :class:`LibraryFiles` held long enough may point at files that are gone. Said plainly, not as the
    FileNotFoundError of whichever file happened to be read first."""
    gone = [str(d) for d in (files.directory, *(p.parent for p in files.objects.values())) if not d.is_dir()]
    if gone:
        raise toolchain.ToolchainError(
            f"the build of {files.name!r} is no longer in the cache ({', '.join(sorted(set(gone)))} evicted: "
            f"the cache keeps $GRAPHC_CACHE_SIZE, default 2G, least recently used first); compile the model again")


def ensure_static(files: LibraryFiles) -> Path:
    """The static library, archived on first request from the objects the shared one was linked from."""
    _require_in_cache(files)
    if not files.static.exists():
        listed = (files.directory / "static_objects.txt").read_text().splitlines()
        objects = [files.directory / p if "/" not in p else Path(p) for p in listed]
        missing = [str(p) for p in objects if not p.exists()]
        if missing:
            raise toolchain.ToolchainError(f"cannot archive {files.static.name}: missing objects {missing}")
        tmp = files.static.with_suffix(f".a.{os.getpid()}")
        toolchain.archive(objects, tmp, files.toolchain)
        os.replace(tmp, files.static)
    return files.static


def export_files(files: LibraryFiles, directory: str | os.PathLike) -> dict[str, Path]:
    """Copy a built library's public files (.so, .a, .h, weights) to ``directory``."""
    ensure_static(files)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for kind, src in (("shared", files.shared), ("static", files.static), ("header", files.header),
                      ("weights", files.weights)):
        if src is None:
            continue
        dst = out / src.name
        shutil.copyfile(src, dst)
        result[kind] = dst
    return result


# ---------------------------------------------------------------------------- CompiledModel

def _check_int_range(name: str, a: np.ndarray, dtype: np.dtype) -> None:
    """Integer inputs given in a wider type must fit the model's: a cast would wrap 2**32 + 5 to 5.
    Refused as the runtime refuses an id beyond its table (GC_OUT_OF_RANGE)."""
    from graphc.runtime import NativeError

    if a.size == 0 or dtype == np.bool_:
        return
    info = np.iinfo(dtype)
    lo, hi = a.min(), a.max()
    # compare exactly: float64 and uint64 values beyond int64 must not wrap in the comparison
    low = int(lo) if np.issubdtype(a.dtype, np.integer) else float(lo)
    high = int(hi) if np.issubdtype(a.dtype, np.integer) else float(hi)
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise NativeError(2, f"input {name!r}: id {bad} is out of range for {dtype.name} (the model's dtype: "
                             f"{info.min} to {info.max})", "graphc.build(target='native')")


def _compiled_model_base():
    from graphc.api import CompiledModel

    return CompiledModel


def build_native(graph: Graph, *, model=None, params=None, level: int = 0, threads: int | None = None,
                 cpu: str | None = None, precision: str = "float32"):
    """A CompiledModel running ``graph`` as native code (see :class:`NativeCompiledModel`)."""
    return _native_class()(graph, model=model, params=params, level=level, threads=threads, cpu=cpu,
                           precision=precision)


@cache
def _native_class():
    from graphc.backends.reference.interpreter import InputError
    from graphc.frontend.layer import Variable as _Variable
    from graphc.runtime import Library, NativeError

    base = _compiled_model_base()

    class NativeCompiledModel(base):
        """``graphc.build(model, target="native")``: the model as a shared library, called through the C ABI.

        One C instance serves the object; calls from several Python threads are serialized (for
        parallel inference, give each thread its own ``library.instance()``). ``precision`` is what
        the products run at: the one asked for, or "float32" where the target lacks bf16."""

        def __init__(self, graph: Graph, *, model=None, params=None, level: int = 0, threads: int | None = None,
                     cpu: str | None = None, precision: str = "float32"):
            super().__init__(graph, "native", model=model, params=params, level=level)
            self.threads = threads
            self.cpu = cpu
            self.files = compile_library(graph, cpu=cpu, precision=precision)
            self.precision = self.files.precision
            self.library = Library(self.files.shared, self.files.symbol)
            self.instance = self.library.instance(threads)
            self._lock = threading.Lock()
            self._in_dtypes = [(name, info.dtype) for name, info in zip(graph.inputs, self.library.inputs)]
            self._input_order = list(graph.inputs)

        @property
        def compile_stats(self) -> dict:
            return dict(self.files.stats)

        def _sync_changed_weights(self) -> None:
            if self.level and self._model is not None and self._current_versions() != self._versions:
                # Optimized graphs fold weights together: lower and optimize again, then relink
                # (the code cache is keyed by structure, so only the weights blob changes).
                base._sync_changed_weights(self)
                return
            for name, var in self._params.items():
                if self._versions.get(name) != var.version and name in self.graph.constants:
                    self.graph.set_constant(name, var.value)
                    self.instance.set_weight(name, var.value)
                    self._versions[name] = var.version

        def _graph_changed(self) -> None:
            self.files = compile_library(self.graph, cpu=self.cpu, precision=self.precision)
            self.library = Library(self.files.shared, self.files.symbol)
            self.instance = self.library.instance(self.threads)

        def _convert(self, name: str, x, dtype: np.dtype) -> np.ndarray:
            a = np.asarray(x)
            if a.dtype != dtype:
                if a.dtype == object:
                    raise InputError(f"input {name!r}: cannot use an array of Python objects")
                if is_float(dtype.name):
                    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
                        raise InputError(f"input {name!r} expects {dtype.name}, got {a.dtype}")
                elif is_int(dtype.name):
                    if not np.issubdtype(a.dtype, np.integer) and not (
                            np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a))
                            and np.all(a == np.round(a))):
                        raise InputError(f"input {name!r} expects integer ids ({dtype.name}), got {a.dtype}")
                    _check_int_range(name, a, dtype)
                a = a.astype(dtype)
            return a if a.flags.c_contiguous else np.asarray(a, order="C")

        def run(self, feeds, out=None):
            """Run one batch; returns every output by name. ``out``: arrays (in output order) the outputs
            are written into, of their shapes and dtypes, C-contiguous - no allocation per call."""
            fast = self.instance._fast
            if fast is not None and _Variable.generation == self._generation and self._lock.acquire(False):
                try:
                    result = fast.run([feeds.get(name) for name in self._input_order], 0, out)
                finally:
                    self._lock.release()
                if result.__class__ is list:
                    return dict(zip(self.graph.outputs, result))
                if result is not None:
                    self.library.lib.gc_status_release(result)
            arrays = [self._convert(name, feeds[name], dt) for name, dt in self._in_dtypes]
            try:
                with self._lock:
                    self._sync_weights()
                    outs = self.instance.run(arrays, out)
            except NativeError as exc:
                if exc.code == 1:
                    raise InputError(exc.message) from None
                raise
            return dict(zip(self.graph.outputs, outs))

        def predict(self, x, batch_size: int | None = None, *, whole: bool = False):
            # The call path: arrays of the last input signature, no weight changed anywhere since the
            # last call, and no other thread inside: straight into the C runner (graphc.fastcall).
            # Anything else (and any failure, for its message) takes the general path.
            fast = self.instance._fast
            if fast is not None and _Variable.generation == self._generation and self._lock.acquire(False):
                try:
                    result = fast.run(x, 0 if whole else (batch_size or 32))
                finally:
                    self._lock.release()
                if result.__class__ is list:
                    return self._pack(result)
                if result is not None:
                    self.library.lib.gc_status_release(result)
            return base.predict(self, x, batch_size, whole=whole)

        def memory_plan(self, x=None):
            """The memory plan the native code ran with (:class:`graphc.memory.runtime_plan.RuntimePlan`): of
            the last call, or of a run on inputs ``x`` when given. The runtime plans whenever the shapes
            change, so a plan belongs to the shapes it ran at (a large batch: its sub-batches)."""
            if x is not None:
                self.run(self.feeds(x))
            with self._lock:
                return self.instance.memory_plan()

        def export_library(self, directory, name: str | None = None, *, weights: str = "embedded",
                           triple: str | None = None, cpu: str | None = None) -> dict:
            """Write libNAME.so, libNAME.a and NAME.h (and NAME.weights when ``weights="external"``),
            for this machine or, with ``triple`` (and ``cpu``), for another (``aarch64-linux-gnu``)."""
            library_symbol(name)  # refuse a bad name before any work
            self._sync_weights()
            files = compile_library(self.graph, name, weights=weights, cpu=cpu or (None if triple else self.cpu),
                                    triple=triple, precision=self.precision)
            return export_files(files, directory)

    return NativeCompiledModel
