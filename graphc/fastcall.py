"""The CPython call path into a native instance (``c_runtime/python/fastcall.c``), built on first use.

Through ctypes, one ``gc_instance_run`` of a small model costs several microseconds in Python
(argument conversion, struct filling, output allocation) against well under one in its kernels. The
extension does the repeated part of a call in C: for the input signature the Python binding ran
last it checks the arrays, allocates the outputs and calls the runtime with the GIL released. It is
compiled once per machine, Python and NumPy version with the same C compiler the native backend
uses, and kept in the build cache (``fastcall/KEY``). Where it cannot be built (no compiler, no
Python headers) :func:`runner_type` returns None and the ctypes path serves every call;
``$GRAPHC_FASTCALL=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np

_MODULE = "_graphc_fastcall"
_state: dict[str, object] = {}


def unavailable_reason() -> str | None:
    """Why the call path is not in use (None when it is, or before the first attempt)."""
    return _state.get("reason")  # type: ignore[return-value]


def _source() -> Path:
    from graphc.backends.llvm.toolchain import runtime_dir

    return runtime_dir() / "python" / "fastcall.c"


def _build() -> Path:
    from graphc.backends.llvm import cache as build_cache
    from graphc.backends.llvm.toolchain import cc_version, find_cc, run_cc, runtime_dir

    cc = find_cc()
    source = _source()
    header = runtime_dir() / "include" / "graphc" / "graphc.h"
    python_include = sysconfig.get_paths()["include"]
    if not (Path(python_include) / "Python.h").is_file():
        raise FileNotFoundError(f"no Python.h under {python_include} (the Python development headers)")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    h = hashlib.blake2b(digest_size=12)
    for part in (source.read_bytes(), header.read_bytes(), sys.version.encode(), np.__version__.encode(),
                 cc_version(cc).encode(), suffix.encode()):
        h.update(part)
    out = build_cache.cache_dir() / "fastcall" / h.hexdigest()
    target = out / f"{_MODULE}{suffix}"
    if target.is_file():
        build_cache.touch(out)
        return target
    build_cache.publish(out, lambda tmp: run_cc(
        ["-O2", "-shared", "-fPIC", "-fvisibility=hidden", f"-I{python_include}", f"-I{np.get_include()}",
         f"-I{runtime_dir() / 'include'}", str(source), "-o", str(tmp / target.name)],
        "compiling graphc's CPython call path"))
    return target


def runner_type():
    """The extension's ``Runner`` class, or None where it cannot be had (see :func:`unavailable_reason`)."""
    if "runner" in _state:
        return _state["runner"]
    runner = None
    if os.environ.get("GRAPHC_FASTCALL", "1") == "0":
        _state["reason"] = "$GRAPHC_FASTCALL=0"
    else:
        try:
            path = _build()
            spec = importlib.util.spec_from_file_location(_MODULE, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            runner = module.Runner
        except Exception as exc:  # a missing compiler or header: the ctypes path serves every call
            _state["reason"] = f"{type(exc).__name__}: {exc}"
    _state["runner"] = runner
    return runner
