"""Process-wide settings: which backend runs ``fit``, ``evaluate``, ``predict`` and ``train_on_batch``.

One setting decides it. ``model.compile(..., backend=...)`` fixes a compiled model's backend (graphc's
own argument: Keras has none); without it, and for ``predict`` of a model never compiled, the process
default applies: :func:`set_backend`, else ``$GRAPHC_BACKEND``, else ``"auto"``.

- ``"auto"``: native code when a C compiler is found and the model's graphs lower natively; otherwise
  the NumPy reference, with one :class:`BackendFallbackWarning` per model and reason saying why (no
  compiler, or the op and layer that has no native kernel).
- ``"native"``: native code; no compiler or an op without a native kernel is an error.
- ``"reference"``: the NumPy reference interpreter.
"""

from __future__ import annotations

import os

BACKENDS = ("auto", "native", "reference")
ENV_VAR = "GRAPHC_BACKEND"

_backend: str | None = None


class BackendFallbackWarning(UserWarning):
    """``backend="auto"`` runs a model on the reference interpreter instead of native code."""


def check_backend(value, where: str) -> str:
    """``value`` if it names a backend; a ValueError naming ``where`` (who was given it) and the choices
    otherwise."""
    if not isinstance(value, str) or value not in BACKENDS:
        raise ValueError(f"{where} got backend={value!r}; graphc's backends are 'auto', 'native' and 'reference'")
    return value


def set_backend(value: str | None) -> None:
    """Set the process default backend (``None``: back to ``$GRAPHC_BACKEND`` or ``"auto"``)."""
    global _backend
    _backend = None if value is None else check_backend(value, "graphc.config.set_backend()")


def backend() -> str:
    """The process default backend: :func:`set_backend`'s, else ``$GRAPHC_BACKEND``'s, else ``"auto"``."""
    if _backend is not None:
        return _backend
    env = os.environ.get(ENV_VAR)
    return check_backend(env, f"${ENV_VAR}") if env else "auto"


__all__ = ["BACKENDS", "BackendFallbackWarning", "backend", "check_backend", "set_backend"]
