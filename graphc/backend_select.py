"""Which backend runs a model, and why ``backend="auto"`` falls back to the reference.

A compiled model keeps the backend ``model.compile(backend=...)`` gave it (or the process default of
that moment, :mod:`graphc.config`); a model never compiled follows the process default. Under
``"auto"`` native code is used when a C compiler is found and the graphs lower natively; otherwise
the reference runs, and :func:`warn_fallback` says why, once per model and reason.
"""

from __future__ import annotations

import warnings

from graphc import config


def model_backend(model) -> str:
    """The backend setting that applies to ``model`` ("auto", "native" or "reference")."""
    setting = getattr(model, "_graphc_backend", None)
    return setting if setting is not None else config.backend()


def compiler_missing() -> str | None:
    """None when native code can be built here; else why not (no C compiler, no llvmlite)."""
    try:
        from graphc.backends.llvm import toolchain
    except ImportError as exc:  # llvmlite is the native backend's code generator
        return f"the native backend cannot be imported ({exc})"
    try:
        toolchain.find_cc()
    except toolchain.ToolchainError as exc:
        return f"no C compiler: {exc}"
    return None


def native_errors() -> tuple[type[Exception], ...]:
    """What building native code raises when it cannot be done: no toolchain, an op without a kernel."""
    from graphc.backends.llvm import NativeLoweringError, ToolchainError

    return ToolchainError, NativeLoweringError


def warn_fallback(model, what: str, reason: str) -> None:
    """Warn (once per model and reason) that ``what`` runs on the reference interpreter, and why."""
    warned = model.__dict__.setdefault("_graphc_fallbacks", set())
    if reason in warned:
        return
    warned.add(reason)
    warnings.warn(f"model {model.name!r}: {what} runs on the NumPy reference interpreter instead of native code "
                  f"(backend='auto'): {reason}. Choose it with model.compile(..., backend='reference') or "
                  "graphc.config.set_backend('reference') to silence this warning.",
                  config.BackendFallbackWarning, stacklevel=4)


__all__ = ["model_backend", "compiler_missing", "native_errors", "warn_fallback"]
