"""Python binding of the graphc C ABI (graphc/c_runtime/include/graphc/graphc.h) through ctypes.

It loads a compiled model library (``libNAME.so``) and calls exactly the functions a C program
would: ``gc_model_NAME``, ``gc_instance_create``, ``gc_instance_run``... A failed call raises
:class:`NativeError` carrying the status code and message.

Per-call work is kept small: the input and output ``gc_tensor_t`` arrays are allocated once
per instance, and output shapes are remembered per input shape so that outputs are written
straight into fresh NumPy arrays. An :class:`Instance` serves one thread at a time, like the
``gc_instance_t`` it wraps: a call while another thread is inside one is refused
(``GC_FAILED_PRECONDITION``, "in use by another thread"), never run on shared state.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphc.memory.runtime_plan import RuntimeBuffer, RuntimePlan

MAX_RANK = 8

DTYPES = {1: np.dtype("float32"), 2: np.dtype("float64"), 3: np.dtype("int32"), 4: np.dtype("int64"),
          5: np.dtype("int8"), 6: np.dtype("uint8"), 7: np.dtype("bool"), 8: np.dtype("float16")}
DTYPE_CODES = {v.name: k for k, v in DTYPES.items()}

CODE_NAMES = {0: "GC_OK", 1: "GC_INVALID_ARGUMENT", 2: "GC_OUT_OF_RANGE", 3: "GC_FAILED_PRECONDITION",
              4: "GC_RESOURCE_EXHAUSTED", 5: "GC_NOT_FOUND", 6: "GC_DATA_LOSS", 7: "GC_UNIMPLEMENTED",
              8: "GC_INTERNAL"}


class NativeError(RuntimeError):
    """A failed call through the C ABI: ``code`` (int), ``code_name`` and the runtime's message."""

    def __init__(self, code: int, message: str, where: str = ""):
        self.code = code
        self.code_name = CODE_NAMES.get(code, f"code {code}")
        self.message = message
        self.where = where
        super().__init__(f"{message} [{self.code_name}]")


class GcTensor(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("rank", ctypes.c_int32), ("shape", ctypes.c_int64 * MAX_RANK),
                ("data", ctypes.c_void_p), ("size_bytes", ctypes.c_size_t)]


class GcTensorDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int32),
                ("shape", ctypes.c_int64 * MAX_RANK), ("dim_names", ctypes.c_char_p * MAX_RANK)]


class GcAllocator(ctypes.Structure):
    _fields_ = [("self", ctypes.c_void_p), ("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p)]


class GcOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("num_threads", ctypes.c_int32), ("allocator", GcAllocator),
                ("weights_path", ctypes.c_char_p), ("seed", ctypes.c_uint64), ("profile", ctypes.c_int32),
                ("profile_events", ctypes.c_uint32), ("huge_pages", ctypes.c_int32)]


class GcProfileEvent(ctypes.Structure):
    _fields_ = [("op", ctypes.c_int32), ("thread", ctypes.c_int32), ("start_ns", ctypes.c_int64),
                ("duration_ns", ctypes.c_int64)]


class GcMemoryInfo(ctypes.Structure):
    _fields_ = [("arena_bytes", ctypes.c_uint64), ("arena_copies", ctypes.c_int32),
                ("thread_scratch_bytes", ctypes.c_uint64), ("packed_bytes", ctypes.c_uint64)]


class GcScratchInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("offset", ctypes.c_uint64), ("nbytes", ctypes.c_uint64),
                ("first_op", ctypes.c_int32), ("last_op", ctypes.c_int32)]


class TensorInfo:
    """An input, output or weight of a compiled model."""

    def __init__(self, desc: GcTensorDesc):
        self.name = desc.name.decode()
        self.dtype = DTYPES[desc.dtype]
        self.rank = desc.rank
        self.shape = tuple(None if desc.shape[i] < 0 else int(desc.shape[i]) for i in range(desc.rank))
        self.dim_names = tuple((desc.dim_names[i] or b"").decode() for i in range(desc.rank))

    def __repr__(self) -> str:
        dims = ", ".join(n if s is None else str(s) for s, n in zip(self.shape, self.dim_names))
        return f"<{self.name}: {self.dtype.name}[{dims}]>"


def _bind(lib: ctypes.CDLL) -> None:
    vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    sigs = {
        "gc_status_code": (ctypes.c_int, [vp]),
        "gc_status_message": (cp, [vp]),
        "gc_status_release": (None, [vp]),
        "gc_api_version": (ctypes.c_uint32, []),
        "gc_model_name": (cp, [vp]),
        "gc_model_num_inputs": (sz, [vp]),
        "gc_model_num_outputs": (sz, [vp]),
        "gc_model_num_weights": (sz, [vp]),
        "gc_model_input": (vp, [vp, sz, ctypes.POINTER(GcTensorDesc)]),
        "gc_model_output": (vp, [vp, sz, ctypes.POINTER(GcTensorDesc)]),
        "gc_model_weight": (vp, [vp, sz, ctypes.POINTER(GcTensorDesc)]),
        "gc_model_has_embedded_weights": (ctypes.c_int, [vp]),
        "gc_model_target_cpu": (cp, [vp]),
        "gc_model_target_features": (cp, [vp]),
        "gc_options_init": (None, [ctypes.POINTER(GcOptions)]),
        "gc_max_threads": (ctypes.c_int32, []),
        "gc_instance_create": (vp, [vp, ctypes.POINTER(GcOptions), ctypes.POINTER(vp)]),
        "gc_instance_release": (None, [vp]),
        "gc_instance_num_threads": (ctypes.c_int32, [vp]),
        "gc_instance_sub_batch": (ctypes.c_int64, [vp]),
        "gc_instance_sub_batch_threads": (ctypes.c_int32, [vp]),
        "gc_model_batch_tail_op": (ctypes.c_int32, [vp]),
        "gc_instance_batch_tail_op": (ctypes.c_int32, [vp]),
        "gc_instance_sub_batch_count": (ctypes.c_int64, [vp]),
        "gc_instance_sub_batch_start": (ctypes.c_int64, [vp, ctypes.c_int64]),
        "gc_model_num_scratch": (sz, [vp]),
        "gc_instance_memory": (vp, [vp, ctypes.POINTER(GcMemoryInfo)]),
        "gc_instance_scratch": (vp, [vp, sz, ctypes.POINTER(GcScratchInfo)]),
        "gc_instance_run": (vp, [vp, ctypes.POINTER(GcTensor), sz, ctypes.POINTER(GcTensor), sz]),
        "gc_instance_output": (vp, [vp, sz, ctypes.POINTER(GcTensor)]),
        "gc_instance_set_weight": (vp, [vp, cp, ctypes.POINTER(GcTensor)]),
        "gc_instance_get_weight": (vp, [vp, cp, ctypes.POINTER(GcTensor)]),
        "gc_instance_load_weights": (vp, [vp, cp]),
        "gc_model_has_train_step": (ctypes.c_int, [vp]),
        "gc_model_num_step_inputs": (sz, [vp]),
        "gc_model_num_step_targets": (sz, [vp]),
        "gc_model_num_step_outputs": (sz, [vp]),
        "gc_instance_train_step": (vp, [vp, ctypes.POINTER(GcTensor), sz, ctypes.POINTER(GcTensor), sz,
                                        ctypes.POINTER(GcTensor), sz]),
        "gc_instance_eval_step": (vp, [vp, ctypes.POINTER(GcTensor), sz, ctypes.POINTER(GcTensor), sz,
                                       ctypes.POINTER(GcTensor), sz]),
        "gc_model_has_eval_step": (ctypes.c_int, [vp]),
        "gc_model_has_gradient_step": (ctypes.c_int, [vp]),
        "gc_model_num_gradients": (sz, [vp]),
        "gc_model_gradient": (vp, [vp, sz, ctypes.POINTER(GcTensorDesc), ctypes.POINTER(sz)]),
        "gc_instance_gradient_step": (vp, [vp, ctypes.POINTER(GcTensor), sz, ctypes.POINTER(GcTensor), sz,
                                           ctypes.POINTER(GcTensor), sz]),
        "gc_instance_apply_gradients": (vp, [vp]),
        "gc_instance_gradient_buffer": (vp, [vp, ctypes.POINTER(vp), ctypes.POINTER(sz)]),
        "gc_instance_save_weights": (vp, [vp, cp]),
        "gc_instance_set_hyperparameter": (vp, [vp, cp, ctypes.c_double]),
        "gc_instance_get_hyperparameter": (vp, [vp, cp, ctypes.POINTER(ctypes.c_double)]),
        "gc_instance_profile": (vp, [vp]),
        "gc_profile_num_ops": (sz, [vp]),
        "gc_profile_runs": (ctypes.c_uint64, [vp]),
        "gc_profile_run_ns": (ctypes.c_uint64, [vp]),
        "gc_profile_op_times": (vp, [vp, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64), sz]),
        "gc_profile_num_events": (sz, [vp]),
        "gc_profile_dropped_events": (ctypes.c_uint64, [vp]),
        "gc_profile_events": (vp, [vp, ctypes.POINTER(GcProfileEvent), sz]),
        "gc_profile_reset": (None, [vp]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args


class Library:
    """A loaded model library and its model handle (immutable, shareable across threads)."""

    def __init__(self, path: str | Path, symbol: str):
        self.path = Path(path)
        self.lib = ctypes.CDLL(str(self.path))
        _bind(self.lib)
        getter = getattr(self.lib, f"gc_model_{symbol}")
        getter.restype = ctypes.c_void_p
        getter.argtypes = []
        self.model = getter()
        self.name = self.lib.gc_model_name(self.model).decode()
        self.inputs = [self._desc("input", i) for i in range(self.lib.gc_model_num_inputs(self.model))]
        self.outputs = [self._desc("output", i) for i in range(self.lib.gc_model_num_outputs(self.model))]
        self.weights = [self._desc("weight", i) for i in range(self.lib.gc_model_num_weights(self.model))]
        self.api_version = int(self.lib.gc_api_version())
        # the CPU the code was generated for and the features it may use (instances are refused without them)
        self.target_cpu = self.lib.gc_model_target_cpu(self.model).decode()
        self.target_features = self.lib.gc_model_target_features(self.model).decode()
        self.has_train_step = bool(self.lib.gc_model_has_train_step(self.model))
        self.has_eval_step = bool(self.lib.gc_model_has_eval_step(self.model))
        self.has_gradient_step = bool(self.lib.gc_model_has_gradient_step(self.model))
        # the first op of the batch's tail, run once over a batch that ran in sub-batches (-1: none)
        self.batch_tail_op = int(self.lib.gc_model_batch_tail_op(self.model))
        # the split step's gradient buffer: (the weight it is the gradient of, byte offset) per entry
        self.gradients = [self._gradient(i) for i in range(self.lib.gc_model_num_gradients(self.model))]
        # a training step's model inputs, targets and reported outputs (loss, metrics) by position
        self.step_counts = (int(self.lib.gc_model_num_step_inputs(self.model)),
                            int(self.lib.gc_model_num_step_targets(self.model)),
                            int(self.lib.gc_model_num_step_outputs(self.model)))

    def check(self, status, where: str = "") -> None:
        if status:
            code = self.lib.gc_status_code(status)
            message = self.lib.gc_status_message(status).decode(errors="replace")
            self.lib.gc_status_release(status)
            raise NativeError(code, message, where)

    def _gradient(self, index: int) -> tuple[TensorInfo, int]:
        d, offset = GcTensorDesc(), ctypes.c_size_t()
        self.check(self.lib.gc_model_gradient(self.model, index, ctypes.byref(d), ctypes.byref(offset)),
                   "gc_model_gradient")
        return TensorInfo(d), int(offset.value)

    def _desc(self, kind: str, index: int) -> TensorInfo:
        d = GcTensorDesc()
        self.check(getattr(self.lib, f"gc_model_{kind}")(self.model, index, ctypes.byref(d)), f"gc_model_{kind}")
        return TensorInfo(d)

    @property
    def has_embedded_weights(self) -> bool:
        return bool(self.lib.gc_model_has_embedded_weights(self.model))

    @property
    def max_threads(self) -> int:
        """The most intra-op threads an instance uses on this machine (larger requests are clamped)."""
        return int(self.lib.gc_max_threads())

    def describe(self) -> dict:
        """Everything a caller needs: name, ABI version, the CPU the code is for (name and features),
        inputs/outputs/weights (name, dtype, shape with free dims by name), whether weights are
        embedded, and the thread limit."""
        def tensors(infos: list[TensorInfo]) -> list[dict]:
            return [{"name": t.name, "dtype": t.dtype.name,
                     "shape": [n if s is None else s for s, n in zip(t.shape, t.dim_names)]} for t in infos]

        return {"name": self.name, "api_version": self.api_version,
                "target": {"cpu": self.target_cpu, "features": self.target_features}, "inputs": tensors(self.inputs),
                "outputs": tensors(self.outputs), "weights": tensors(self.weights),
                "embedded_weights": self.has_embedded_weights, "max_threads": self.max_threads}

    def instance(self, threads: int | None = None, weights_path: str | None = None, seed: int = 0, *,
                 profile: bool = False, profile_events: int = 0, huge_pages: bool = True) -> Instance:
        """A new instance; ``profile=True`` times every kernel launch (:meth:`Instance.profile`),
        keeping up to ``profile_events`` launch events for a trace; ``huge_pages=False`` keeps its large
        blocks in 4 KiB pages (``gc_options_t.huge_pages``: by default they are advised as transparent
        huge pages)."""
        return Instance(self, threads, weights_path, seed, profile=profile, profile_events=profile_events,
                        huge_pages=huge_pages)


_char_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def _address(a: np.ndarray) -> int:
    """The address of ``a``'s data (from_buffer is twice as fast as __array_interface__, for
    writable non-empty arrays)."""
    try:
        return _addressof(_char_from_buffer(a))
    except (TypeError, ValueError):
        return a.__array_interface__["data"][0]


def _tensors(arrays: Sequence[np.ndarray]):
    """``gc_tensor_t`` structs over C-contiguous arrays (kept alive by the caller)."""
    ts = (GcTensor * max(len(arrays), 1))()
    for t, a in zip(ts, arrays):
        if not a.flags.c_contiguous:
            raise NativeError(1, "inputs must be C-contiguous arrays (np.ascontiguousarray)")
        if a.ndim > MAX_RANK:
            raise NativeError(1, f"an input has rank {a.ndim}, more than {MAX_RANK}")
        t.dtype = DTYPE_CODES.get(a.dtype.name, 0)
        t.rank = a.ndim
        for i, d in enumerate(a.shape):
            t.shape[i] = d
        t.data = _address(a)
        t.size_bytes = a.nbytes
    return ts


def _fast_runner(library: Library, handle: int):
    """The C call path's runner for one instance (None where the extension is unavailable)."""
    from graphc.fastcall import runner_type

    runner = runner_type()
    if runner is None:
        return None
    run = ctypes.cast(library.lib.gc_instance_run, ctypes.c_void_p).value
    return runner(handle, run, tuple(DTYPE_CODES[i.dtype.name] for i in library.inputs),
                  tuple(i.dtype.num for i in library.inputs), tuple(o.dtype.num for o in library.outputs),
                  library.lib)


class Instance:
    """One ``gc_instance_t``: use from one thread at a time (create one per thread; a concurrent
    call raises :class:`NativeError` ``GC_FAILED_PRECONDITION``).

    ``transfers`` counts the weight bytes that crossed the ABI through ``set_weight`` and
    ``get_weight`` (calls and bytes each way): a training step moves none."""

    def __init__(self, library: Library, threads: int | None = None, weights_path: str | None = None,
                 seed: int = 0, *, profile: bool = False, profile_events: int = 0, huge_pages: bool = True):
        self._busy = threading.Lock()
        self.transfers = {"set_calls": 0, "set_bytes": 0, "get_calls": 0, "get_bytes": 0}
        self._handle = None
        self.library = library
        lib = library.lib
        opts = GcOptions()
        lib.gc_options_init(ctypes.byref(opts))
        opts.num_threads = 0 if threads is None else int(threads)
        opts.seed = int(seed) & (2 ** 64 - 1)
        if profile_events and not profile:
            raise ValueError("profile_events needs profile=True")
        if not 0 <= int(profile_events) < 2 ** 32:
            raise ValueError(f"profile_events must be in [0, 2**32), got {profile_events}")
        opts.profile = 1 if profile else 0
        opts.profile_events = int(profile_events)
        opts.huge_pages = 1 if huge_pages else 0
        if weights_path is not None:
            opts.weights_path = str(weights_path).encode()
        handle = ctypes.c_void_p()
        library.check(lib.gc_instance_create(library.model, ctypes.byref(opts), ctypes.byref(handle)),
                      "gc_instance_create")
        self._handle = handle.value
        self._run = lib.gc_instance_run
        n_in, n_out = len(library.inputs), len(library.outputs)
        self._ins = (GcTensor * max(n_in, 1))()
        self._outs = (GcTensor * max(n_out, 1))()
        for t, info in zip(self._ins, library.inputs):
            t.dtype = DTYPE_CODES[info.dtype.name]
            t.rank = info.rank
        self._in_ptr = ctypes.cast(self._ins, ctypes.POINTER(GcTensor))
        self._out_ptr = ctypes.cast(self._outs, ctypes.POINTER(GcTensor))
        self._n_in, self._n_out = n_in, n_out
        self._out_dtypes = [info.dtype for info in library.outputs]
        self._shapes: dict[tuple, list[tuple[int, ...]]] = {}
        self._key: tuple | None = None
        self._fast = _fast_runner(library, self._handle)
        self._fast_steps: dict[str, object] = {}  # step function -> its C call path (graphc.fastcall)
        self._fast_step_types: dict[str, tuple] = {}

    @property
    def threads(self) -> int:
        return int(self.library.lib.gc_instance_num_threads(self._handle))

    @property
    def sub_batch(self) -> int:
        """Samples in the largest sub-batch of the last run, 0 where it ran its batch whole (see
        :mod:`graphc.backends.llvm.batch_split`)."""
        self._require_open()
        return int(self.library.lib.gc_instance_sub_batch(self._handle))

    @property
    def batch_tail_op(self) -> int:
        """The first op of the batch's tail the last run used after its sub-batches, -1 where it used none."""
        self._require_open()
        return int(self.library.lib.gc_instance_batch_tail_op(self._handle))

    @property
    def sub_batch_count(self) -> int:
        """How many sub-batches the last run went in (0: the batch whole), each of ``batch // n`` or
        ``batch // n + 1`` samples (:attr:`sub_batch_starts` says which)."""
        self._require_open()
        return int(self.library.lib.gc_instance_sub_batch_count(self._handle))

    @property
    def sub_batch_starts(self) -> list[int]:
        """The first sample of each sub-batch of the last run, then the batch ([] where it ran whole). One
        after another, the first ``batch % n`` hold a sample more; run at once by T threads, each thread's
        run of ``n / T`` consecutive sub-batches holds ``batch // T`` or ``batch // T + 1`` samples."""
        self._require_open()
        count = self.sub_batch_count
        return [int(self.library.lib.gc_instance_sub_batch_start(self._handle, b)) for b in range(count + 1)] \
            if count else []

    @property
    def sub_batch_threads(self) -> int:
        """How many sub-batches of the last run ran at once, one per thread (1: one after another, each op
        split over the threads; 0: the batch ran whole)."""
        self._require_open()
        return int(self.library.lib.gc_instance_sub_batch_threads(self._handle))

    def memory_plan(self) -> RuntimePlan:
        """The memory plan the last successful run used, as the runtime made it: the scratch arena (its
        buffers by the values they hold, offsets, sizes, lifetimes), its copies, the threads' scratch and
        the packed weights (:mod:`graphc.memory.runtime_plan`). NativeError before a run has succeeded."""
        lib = self.library.lib
        self._enter()
        try:
            info = GcMemoryInfo()
            self.library.check(lib.gc_instance_memory(self._handle, ctypes.byref(info)), "gc_instance_memory")
            buffers = []
            for i in range(lib.gc_model_num_scratch(self.library.model)):
                b = GcScratchInfo()
                self.library.check(lib.gc_instance_scratch(self._handle, i, ctypes.byref(b)), "gc_instance_scratch")
                buffers.append(RuntimeBuffer(b.name.decode(errors="replace"), int(b.offset), int(b.nbytes),
                                             int(b.first_op), int(b.last_op)))
            return RuntimePlan(self.library.name, int(lib.gc_instance_num_threads(self._handle)),
                               int(info.arena_bytes), int(info.arena_copies), int(info.thread_scratch_bytes),
                               int(info.packed_bytes), int(lib.gc_instance_sub_batch(self._handle)),
                               int(lib.gc_instance_sub_batch_count(self._handle)), tuple(buffers),
                               int(lib.gc_instance_batch_tail_op(self._handle)))
        finally:
            self._busy.release()

    def close(self) -> None:
        """Release the instance (after a call another thread is making on it has returned)."""
        with self._busy:
            if self._handle:
                self._fast = None
                self._fast_steps.clear()
                self.library.lib.gc_instance_release(self._handle)
                self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def _require_open(self) -> None:
        if not self._handle:
            raise NativeError(3, "the instance was closed", "Instance")

    def _enter(self) -> None:
        """Claim the instance for this call (the tensor structs are per instance, not per call)."""
        self._require_open()
        if not self._busy.acquire(blocking=False):
            raise NativeError(3, "instance is in use by another thread: an instance serves one thread at a time "
                                 "(create one instance per thread)", "Instance")

    def run(self, arrays: Sequence[np.ndarray], out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Run on NumPy arrays (C-contiguous, any dtype: the runtime checks it); returns the outputs,
        written into ``out`` (arrays of the outputs' shapes and dtypes, C-contiguous) when given.
        A call of the last input signature goes through the C call path (:mod:`graphc.fastcall`)."""
        if isinstance(arrays, np.ndarray):
            raise TypeError("Instance.run takes a sequence of input arrays (a list or tuple), not one array")
        fast = self._fast
        if fast is not None and self._busy.acquire(False):
            try:
                result = fast.run(arrays, 0, out)
            finally:
                self._busy.release()
            if result.__class__ is list:
                return result
            if result is not None:
                self.library.check(result, "gc_instance_run")
        self._enter()
        try:
            return self._run_claimed(arrays, out)
        finally:
            self._busy.release()

    def _run_claimed(self, arrays: Sequence[np.ndarray], out: Sequence[np.ndarray] | None = None
                     ) -> list[np.ndarray]:
        """Shapes, dtypes and output shapes are written to the tensor structs only when they differ
        from the previous call; a repeated call only sets the data pointers. Any failure before the
        structs match ``arrays`` again forgets the remembered key, so the next call rewrites them.
        A successful call teaches the C call path its signature."""
        outs = self._run_ctypes(arrays)
        if self._fast is not None:
            self._fast.remember(tuple(arrays), tuple(o.shape for o in outs))
        if out is None:
            return outs
        if len(out) != self._n_out:
            raise NativeError(1, f"model '{self.library.name}' has {self._n_out} output(s), got {len(out)} "
                                 "buffers in out", "Instance.run")
        for j, (given, o) in enumerate(zip(out, outs)):
            if not isinstance(given, np.ndarray) or given.shape != o.shape or given.dtype != o.dtype \
                    or not given.flags.c_contiguous or not given.flags.writeable:
                got = (f"{given.dtype} {given.shape}" if isinstance(given, np.ndarray) else type(given).__name__)
                raise NativeError(1, f"out[{j}] must be a writable C-contiguous {o.dtype} array of shape "
                                     f"{o.shape}, got {got}", "Instance.run")
            np.copyto(given, o)
        return list(out)

    def _run_ctypes(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(arrays) != self._n_in:
            raise NativeError(1, f"model '{self.library.name}' takes {self._n_in} input(s), got {len(arrays)}")
        key = tuple((a.shape, a.dtype) for a in arrays)
        if key != self._key:
            self._key = None
            self._set_inputs(arrays)
            self._key = key
        for t, a in zip(self._ins, arrays):
            if not a.flags.c_contiguous:
                raise NativeError(1, "inputs must be C-contiguous arrays (np.ascontiguousarray)")
            t.data = _address(a)
        shapes = self._shapes.get(key)
        if shapes is None:
            return self._first_run(key)
        outs = [np.empty(s, dtype=dt) for s, dt in zip(shapes, self._out_dtypes)]
        for t, out in zip(self._outs, outs):
            t.data = _address(out)
            t.size_bytes = out.nbytes
        status = self._run(self._handle, self._in_ptr, self._n_in, self._out_ptr, self._n_out)
        if status:
            self.library.check(status, "gc_instance_run")
        return outs

    def _set_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        for t, a in zip(self._ins, arrays):
            if a.ndim > MAX_RANK:
                raise NativeError(1, f"an input has rank {a.ndim}, more than {MAX_RANK}")
            t.dtype = DTYPE_CODES.get(a.dtype.name, 0)
            t.rank = a.ndim
            for i, d in enumerate(a.shape):
                t.shape[i] = d
            t.size_bytes = a.nbytes

    def _first_run(self, key) -> list[np.ndarray]:
        """A call with new input shapes: outputs land in instance memory, their shapes are remembered."""
        for t in self._outs:
            t.data = None
            t.size_bytes = 0
        status = self._run(self._handle, self._in_ptr, self._n_in, self._out_ptr, self._n_out)
        if status:
            self._key = None
            self.library.check(status, "gc_instance_run")
        outs, shapes = [], []
        for t, dt in zip(self._outs, self._out_dtypes):
            shape = tuple(t.shape[i] for i in range(t.rank))
            out = np.empty(shape, dtype=dt)
            if out.nbytes:
                ctypes.memmove(out.__array_interface__["data"][0], t.data, out.nbytes)
            outs.append(out)
            shapes.append(shape)
        if len(self._shapes) > 64:
            self._shapes.clear()
        self._shapes[key] = shapes
        return outs

    def set_weight(self, name: str, value: np.ndarray) -> None:
        self._enter()
        try:
            self._set_weight_claimed(name, value)
        finally:
            self._busy.release()

    def _set_weight_claimed(self, name: str, value: np.ndarray) -> None:
        info = next((w for w in self.library.weights if w.name == name), None)
        a = np.asarray(value, dtype=info.dtype if info is not None else None, order="C")
        t = GcTensor()
        t.dtype = DTYPE_CODES.get(a.dtype.name, 0)
        t.rank = a.ndim
        for i, d in enumerate(a.shape[:MAX_RANK]):
            t.shape[i] = d
        t.data = _address(a)
        t.size_bytes = a.nbytes
        self.library.check(self.library.lib.gc_instance_set_weight(self._handle, name.encode(), ctypes.byref(t)),
                           "gc_instance_set_weight")
        self.transfers["set_calls"] += 1
        self.transfers["set_bytes"] += a.nbytes

    def get_weight(self, name: str) -> np.ndarray:
        self._require_open()
        info = next((w for w in self.library.weights if w.name == name), None)
        if info is None:
            raise NativeError(5, f"model '{self.library.name}' has no weight named '{name}'")
        out = np.empty(info.shape, dtype=info.dtype)
        t = GcTensor()
        t.data = _address(out)
        t.size_bytes = out.nbytes
        self.library.check(self.library.lib.gc_instance_get_weight(self._handle, name.encode(), ctypes.byref(t)),
                           "gc_instance_get_weight")
        self.transfers["get_calls"] += 1
        self.transfers["get_bytes"] += out.nbytes
        return out

    def train_step(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One training step of a training library (state updated inside the instance); returns the
        reported outputs (loss, output losses, metric sums and counts)."""
        return self._step("gc_instance_train_step", inputs, targets)

    def eval_step(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One evaluation step of a training library on the instance's current state (inference mode,
        nothing updated); returns the reported outputs as :meth:`train_step` does."""
        return self._step("gc_instance_eval_step", inputs, targets)

    def gradient_step(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The first half of a split training step: gradients into :meth:`gradient_buffer`, layer state
        (moving statistics) updated; returns the reported outputs as :meth:`train_step` does."""
        return self._step("gc_instance_gradient_step", inputs, targets)

    def apply_gradients(self) -> None:
        """The second half: the optimizer's update from the gradient buffer as it is now."""
        self._enter()
        try:
            self.library.check(self.library.lib.gc_instance_apply_gradients(self._handle),
                               "gc_instance_apply_gradients")
        finally:
            self._busy.release()

    def gradient_buffer(self) -> np.ndarray:
        """The instance's gradient buffer as a writable 1-D NumPy array over its memory (no copy): float32
        when every gradient is float32, else uint8 bytes. It stays valid while the instance is open (the
        array keeps the instance alive); write into it in place, e.g. an all-reduce between the steps."""
        self._require_open()
        ptr, size = ctypes.c_void_p(), ctypes.c_size_t()
        self.library.check(self.library.lib.gc_instance_gradient_buffer(self._handle, ctypes.byref(ptr),
                                                                         ctypes.byref(size)),
                           "gc_instance_gradient_buffer")
        raw = (ctypes.c_uint8 * max(int(size.value), 1)).from_address(ptr.value) if size.value else None
        if raw is None:
            return np.zeros(0, np.float32)
        raw._owner = self  # the memory belongs to the instance
        array = np.ctypeslib.as_array(raw)[:int(size.value)]
        if all(info.dtype == np.float32 for info, _ in self.library.gradients):
            return array.view(np.float32)
        return array

    def _step(self, function: str, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> list[np.ndarray]:
        """A step through the C call path when its inputs and targets have the last signature it ran with,
        else through ctypes (which then teaches the call path the new signature)."""
        fast = self._fast_steps.get(function)
        if fast is not None and self._busy.acquire(False):
            try:
                result = fast.run((*inputs, *targets))
            finally:
                self._busy.release()
            if result.__class__ is list:
                return result
            if result is not None:
                self.library.check(result, function)
        self._enter()
        try:
            outs = self._step_ctypes(function, inputs, targets)
            self._remember_step(function, inputs, targets, outs)
            return outs
        finally:
            self._busy.release()

    def _remember_step(self, function: str, inputs, targets, outs: list[np.ndarray]) -> None:
        """The C call path of ``function`` learns the signature of a step that just ran (a runner per
        function and dtypes; none where the extension is unavailable)."""
        from graphc.fastcall import runner_type

        runner = runner_type()
        arrays = (*inputs, *targets)
        if runner is None or not all(isinstance(a, np.ndarray) for a in arrays):
            return
        types = tuple(a.dtype.num for a in arrays)
        fast = self._fast_steps.get(function)
        if fast is None or self._fast_step_types.get(function) != types:
            address = ctypes.cast(getattr(self.library.lib, function), ctypes.c_void_p).value
            fast = runner(self._handle, address, tuple(DTYPE_CODES.get(a.dtype.name, 0) for a in arrays), types,
                          tuple(o.dtype.num for o in outs), self.library.lib, len(targets))
            self._fast_steps[function] = fast
            self._fast_step_types[function] = types
        fast.remember(arrays, tuple(o.shape for o in outs))

    def _step_ctypes(self, function: str, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]
                     ) -> list[np.ndarray]:
        n_in, n_t, n_out = self.library.step_counts
        ins = _tensors(inputs)
        tgs = _tensors(targets)
        outs = (GcTensor * max(n_out, 1))()
        status = getattr(self.library.lib, function)(
            self._handle, ctypes.cast(ins, ctypes.POINTER(GcTensor)), len(inputs),
            ctypes.cast(tgs, ctypes.POINTER(GcTensor)), len(targets),
            ctypes.cast(outs, ctypes.POINTER(GcTensor)), n_out if self.library.has_train_step else 0)
        self.library.check(status, function)
        result = []
        for t, info in zip(outs[:n_out], self.library.outputs):
            shape = tuple(t.shape[i] for i in range(t.rank))
            out = np.empty(shape, dtype=info.dtype)
            if out.nbytes:
                ctypes.memmove(out.__array_interface__["data"][0], t.data, out.nbytes)
            result.append(out)
        return result

    def set_hyperparameter(self, name: str, value: float) -> None:
        """Set a training step's hyperparameter (``"learning_rate"``) for the following steps."""
        self._require_open()
        self.library.check(self.library.lib.gc_instance_set_hyperparameter(self._handle, name.encode(), float(value)),
                           "gc_instance_set_hyperparameter")

    def get_hyperparameter(self, name: str) -> float:
        self._require_open()
        out = ctypes.c_double()
        self.library.check(self.library.lib.gc_instance_get_hyperparameter(self._handle, name.encode(),
                                                                           ctypes.byref(out)),
                           "gc_instance_get_hyperparameter")
        return float(out.value)

    def profile(self) -> NativeProfile:
        """The kernel times recorded since the instance was created or :meth:`reset_profile` (an
        instance created with ``profile=True``)."""
        self._require_open()
        lib = self.library.lib
        handle = lib.gc_instance_profile(self._handle)
        if not handle:
            raise NativeError(3, "the instance was created without profile=True: it records no kernel times",
                              "Instance.profile")
        n = int(lib.gc_profile_num_ops(handle))
        op_ns = (ctypes.c_uint64 * max(n, 1))()
        launches = (ctypes.c_uint64 * max(n, 1))()
        self.library.check(lib.gc_profile_op_times(handle, op_ns, launches, n), "gc_profile_op_times")
        m = int(lib.gc_profile_num_events(handle))
        events = (GcProfileEvent * max(m, 1))()
        self.library.check(lib.gc_profile_events(handle, events, m), "gc_profile_events")
        return NativeProfile(runs=int(lib.gc_profile_runs(handle)), run_ns=int(lib.gc_profile_run_ns(handle)),
                             op_ns=[int(x) for x in op_ns[:n]], op_launches=[int(x) for x in launches[:n]],
                             events=[(e.op, e.start_ns, e.duration_ns, e.thread) for e in events[:m]],
                             dropped_events=int(lib.gc_profile_dropped_events(handle)))

    def reset_profile(self) -> None:
        """Forget the recorded kernel times and events (the clock restarts at 0)."""
        self._require_open()
        handle = self.library.lib.gc_instance_profile(self._handle)
        if not handle:
            raise NativeError(3, "the instance was created without profile=True: it records no kernel times",
                              "Instance.reset_profile")
        self.library.lib.gc_profile_reset(handle)

    def load_weights(self, path: str | Path) -> None:
        self._require_open()
        self.library.check(self.library.lib.gc_instance_load_weights(self._handle, str(path).encode()),
                           "gc_instance_load_weights")

    def save_weights(self, path: str | Path) -> None:
        """Write every weight of the instance (a training library's whole state: weights, optimizer
        slots, iterations) to a weights file, atomically; ``Model.load_weights`` reads it."""
        self._require_open()
        self.library.check(self.library.lib.gc_instance_save_weights(self._handle, str(path).encode()),
                           "gc_instance_save_weights")


@dataclass
class NativeProfile:
    """What a profiling instance recorded: ``runs`` and their total ``run_ns``; per op of the
    compiled graph (topological order, then the output copy) the nanoseconds and launch count of
    its kernels; ``events`` as (op, start_ns, duration_ns, thread), op -1 for a whole run, thread the
    one that ran the launch (0 the caller; others where sub-batches ran at once, one per thread)."""

    runs: int
    run_ns: int
    op_ns: list[int]
    op_launches: list[int]
    events: list[tuple[int, int, int, int]]
    dropped_events: int


__all__ = ["Library", "Instance", "NativeError", "NativeProfile", "TensorInfo", "GcTensor", "GcTensorDesc", "GcOptions"]
