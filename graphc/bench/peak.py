"""What this machine can do: FMA peak per vector width, on one core and on all, and memory bandwidth.

:func:`measure_peak` runs the kernels of :mod:`graphc.backends.llvm.peak_kernels` (generated with
llvmlite for the host CPU, like every graphc kernel):

- per vector width the CPU has (128, 256, 512 bits), the single-core float32 FMA peak in GFLOP/s;
- the same on every core the process may use, with the widest width (one Python thread per core:
  ctypes releases the GIL during the call);
- memory bandwidth in GB/s: a copy and a triad (``a = b + s * c``) over arrays larger than the
  last-level cache, counted as STREAM does (bytes read + bytes written, no write-allocate).

A peak is a maximum: each figure is the best of many short bursts (a few milliseconds: the FMA
loops, and each chunk of the memory tests), so a neighbour's load on a shared machine lowers the
typical burst, not the best one. Results are cached per machine (CPU
name, features, cores) for the process and, for ``max_age_s``, in the build cache directory, so the
profiles of one benchmark session all compare against one measurement; ``refresh=True`` measures
again. Measuring takes a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

DEFAULT_MAX_AGE_S = 3600.0
CHUNK_MIB = 16
MIN_WORKING_SET_MIB = 192
MAX_WORKING_SET_MIB = 1024


@dataclass
class Peak:
    """One machine's measured limits (see the module docstring)."""

    cpu: str
    features: str
    fma_gflops: dict[int, float]  # vector bits -> single-core GFLOP/s
    threads: int
    multi_gflops: float  # all `threads`, widest width
    copy_gbs: float
    triad_gbs: float
    triad_multi_gbs: float
    working_set_mib: float
    last_level_cache_mib: float | None
    measured_at: float = field(default_factory=time.time)

    @property
    def widest(self) -> int:
        return max(self.fma_gflops)

    @property
    def gflops(self) -> float:
        """Single-core peak at the widest vector width: what one-thread kernels are compared with."""
        return self.fma_gflops[self.widest]

    def compute_peak(self, threads: int = 1) -> float:
        """GFLOP/s available to ``threads`` threads (the measured all-core figure beyond one)."""
        return self.gflops if threads <= 1 else max(self.gflops, self.multi_gflops * min(threads, self.threads)
                                                   / self.threads)

    def bandwidth(self, threads: int = 1) -> float:
        """GB/s available to ``threads`` threads (triad)."""
        return self.triad_gbs if threads <= 1 else max(self.triad_gbs, self.triad_multi_gbs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fma_gflops"] = {str(k): v for k, v in self.fma_gflops.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Peak:
        d = dict(d)
        d["fma_gflops"] = {int(k): float(v) for k, v in d["fma_gflops"].items()}
        return cls(**d)

    def to_markdown(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.measured_at))
        lines = [f"### Peak of this machine: {self.cpu} ({self.features or 'no vector features listed'}), {when}", "",
                 "| measurement | value |", "|---|---:|"]
        for bits, g in sorted(self.fma_gflops.items()):
            lines.append(f"| float32 FMA, {bits}-bit vectors, 1 core | {g:.1f} GFLOP/s |")
        lines.append(f"| float32 FMA, {self.widest}-bit vectors, {self.threads} cores | {self.multi_gflops:.1f} "
                     "GFLOP/s |")
        llc = f", last-level cache {self.last_level_cache_mib:.0f} MiB" if self.last_level_cache_mib else ""
        lines.append(f"| memory copy, 1 core | {self.copy_gbs:.1f} GB/s |")
        lines.append(f"| memory triad, 1 core | {self.triad_gbs:.1f} GB/s |")
        lines.append(f"| memory triad, {self.threads} cores | {self.triad_multi_gbs:.1f} GB/s |")
        lines += ["", f"Working set of the memory tests: {self.working_set_mib:.0f} MiB{llc}. Each figure is the "
                  "best of many short bursts (llvmlite-generated kernels for this CPU)."]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def last_level_cache_mib() -> float | None:
    """The largest cache the OS lists for CPU 0, in MiB (None where it lists none)."""
    sizes = []
    for d in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (d / "size").read_text().strip()
        except OSError:
            continue
        unit = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(text[-1:].upper())
        if unit is not None and text[:-1].isdigit():
            sizes.append(int(text[:-1]) * unit)
    return max(sizes) if sizes else None


def _machine_key(cpu: str, features: str, cores: int) -> str:
    return hashlib.blake2b(f"{cpu}|{features}|{cores}|{os.uname().nodename}".encode(), digest_size=10).hexdigest()


_MEASURED: dict[str, Peak] = {}
_LOCK = threading.Lock()


def _check_positive(name: str, value, kind=float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if kind is int and int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")


def measure_peak(*, refresh: bool = False, repeats: int = 50, seconds: float = 0.002, passes: int = 2,
                 working_set_mib: float | None = None, max_age_s: float = DEFAULT_MAX_AGE_S) -> Peak:
    """This machine's :class:`Peak` (cached: see the module docstring).

    ``repeats`` short runs of ``seconds`` each per FMA figure and ``passes`` over the memory
    tests' arrays (the best burst counts); ``working_set_mib``: those three arrays together
    (default: twice the last-level cache, within 192 MiB .. 1 GiB).
    """
    _check_positive("repeats", repeats, int)
    _check_positive("passes", passes, int)
    _check_positive("seconds", seconds)
    if working_set_mib is not None:
        _check_positive("working_set_mib", working_set_mib)
    from graphc.backends.llvm.peak_kernels import peak_kernels

    kernels = peak_kernels()
    info = kernels.info
    cores = usable_cores()
    key = _machine_key(info.cpu, info.features, cores)
    with _LOCK:
        if not refresh:
            cached = _MEASURED.get(key) or _load_cached(key, max_age_s)
            if cached is not None:
                _MEASURED[key] = cached
                return cached
        llc = last_level_cache_mib()
        if working_set_mib is None:
            working_set_mib = min(MAX_WORKING_SET_MIB, max(MIN_WORKING_SET_MIB, 2 * (llc or 0)))
        fma = {w: _fma_gflops(kernels, w, 1, repeats, seconds) for w in kernels.widths}
        widest = kernels.widths[-1]
        multi = _fma_gflops(kernels, widest, cores, repeats, seconds) if cores > 1 else fma[widest]
        copy, triad, triad_multi = _bandwidth(kernels, working_set_mib, passes, cores)
        features = ",".join(f for f in ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bf16", "amx-tile", "neon")
                            if f"+{f}" in info.features.split(","))
        peak = Peak(cpu=info.cpu, features=features, fma_gflops=fma, threads=cores, multi_gflops=multi,
                    copy_gbs=copy, triad_gbs=triad, triad_multi_gbs=triad_multi, working_set_mib=working_set_mib,
                    last_level_cache_mib=llc)
        _MEASURED[key] = peak
        _save_cached(key, peak)
        return peak


def _fma_gflops(kernels, width: int, threads: int, repeats: int, seconds: float) -> float:
    """Best GFLOP/s of ``threads`` concurrent FMA chains of ``width`` bits."""
    from graphc.backends.llvm.peak_kernels import flops_per_iteration

    fn = kernels.fma[width]
    per_iter = flops_per_iteration(width)
    t0 = time.perf_counter()
    fn(10_000, 0.9999, 0.001)
    probe = max(time.perf_counter() - t0, 1e-7)
    iters = max(10_000, int(10_000 * seconds / probe))
    best = 0.0
    for _ in range(repeats):
        elapsed = _concurrently(threads, lambda: fn(iters, 0.9999, 0.001))
        best = max(best, per_iter * iters * threads / elapsed / 1e9)
    return best


def _time_call(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _concurrently(threads: int, work) -> float:
    """Wall time of ``work()`` run once on each of ``threads`` threads started together."""
    if threads == 1:
        t0 = time.perf_counter()
        work()
        return time.perf_counter() - t0
    return _concurrently_each([work] * threads)


def _concurrently_each(works: list) -> float:
    """Wall time of every ``works[k]()``, each on its own thread, started together."""
    barrier = threading.Barrier(len(works) + 1)

    def run(work) -> None:
        barrier.wait()
        work()

    pool = [threading.Thread(target=run, args=(w,)) for w in works]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - t0


def _bandwidth(kernels, working_set_mib: float, passes: int, cores: int) -> tuple[float, float, float]:
    """Best copy, triad and all-core triad GB/s over three arrays of ``working_set_mib`` / 3 each,
    timed chunk by chunk (``CHUNK_MIB`` per array; the arrays exceed the caches, so every chunk
    streams from memory) for ``passes`` passes: short bursts, as for the FMA peak."""
    lanes = kernels.stream_lanes
    n = max(lanes, int(working_set_mib * 2 ** 20 / 3 / 4) // lanes * lanes)
    chunk = max(lanes, min(n, int(CHUNK_MIB * 2 ** 20 / 4)) // lanes * lanes)
    a = np.zeros(n, np.float32)
    b = np.ones(n, np.float32)
    c = np.full(n, 2.0, np.float32)
    pa, pb, pc = a.ctypes.data, b.ctypes.data, c.ctypes.data
    copy = triad = multi = 0.0
    for _ in range(passes):
        for i in range(0, n - chunk + 1, chunk):
            seconds = _time_call(kernels.copy, pa + 4 * i, pb + 4 * i, chunk)
            copy = max(copy, 2 * 4 * chunk / seconds / 1e9)
        for i in range(0, n - chunk + 1, chunk):
            seconds = _time_call(kernels.triad, pa + 4 * i, pb + 4 * i, pc + 4 * i, 0.5, chunk)
            triad = max(triad, 3 * 4 * chunk / seconds / 1e9)
    if cores == 1:
        return copy, triad, triad
    part = max(lanes, chunk // cores // lanes * lanes)
    for _ in range(passes):
        for i in range(0, n - part * cores + 1, part * cores):
            works = [partial(kernels.triad, pa + 4 * j, pb + 4 * j, pc + 4 * j, 0.5, part)
                     for j in range(i, i + part * cores, part)]
            multi = max(multi, 3 * 4 * part * cores / _concurrently_each(works) / 1e9)
    return copy, triad, multi


def _cache_file(key: str) -> Path:
    from graphc.backends.llvm.cache import cache_dir

    return cache_dir() / "peak" / f"{key}.json"


def _load_cached(key: str, max_age_s: float) -> Peak | None:
    try:
        peak = Peak.from_dict(json.loads(_cache_file(key).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return peak if time.time() - peak.measured_at <= max_age_s else None


def _save_cached(key: str, peak: Peak) -> None:
    path = _cache_file(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(peak.to_dict()))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a new measurement next time


__all__ = ["Peak", "measure_peak", "usable_cores", "last_level_cache_mib"]
