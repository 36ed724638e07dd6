"""The build cache: where compiled runtimes and model libraries are kept, and its size limit.

Layout under :func:`cache_dir` (``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else
``~/.cache/graphc``): one directory per *entry*, ``runtime/KEY`` (the C runtime's objects),
``native/code/KEY`` (a model's object code, descriptor and header), ``native/lib/KEY`` (a
linked library) and ``fastcall/KEY`` (the CPython call path, :mod:`graphc.fastcall`). An entry is
written into a temporary directory and renamed into place whole, so a reader never sees half of
one; its modification time records its last use (every cache hit touches it).

Size: after each new entry the cache is trimmed to ``$GRAPHC_CACHE_SIZE`` (bytes, or with a
K/M/G suffix; default 2G) by removing the least recently used entries. Entries used in the last
:data:`GRACE_S` seconds are kept even above the limit: another process (or this one) may be
linking against them or about to archive their objects. ``graphc cache info`` and ``graphc
cache clear`` show and empty it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LIMIT = 2 << 30
# Entries used this recently are never evicted (they may be in use by a running build).
GRACE_S = 60.0
KINDS = ("runtime", "native/code", "native/lib", "fastcall")
_SUFFIXES = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class CacheConfigError(ValueError):
    """$GRAPHC_CACHE_SIZE is not a size."""


def cache_dir() -> Path:
    """The cache's root directory (created if missing)."""
    env = os.environ.get("GRAPHC_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "graphc"
    base.mkdir(parents=True, exist_ok=True)
    return base


def parse_size(text: str, what: str = "$GRAPHC_CACHE_SIZE") -> int:
    """``"2G"`` -> 2147483648; plain integers are bytes. ``what`` names the setting in errors."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _SUFFIXES else ""
    number = t[: len(t) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise CacheConfigError(f"{what} must be a size such as 500M or 2G, got {text!r}") from None
    if value < 0:
        raise CacheConfigError(f"{what} must not be negative, got {text!r}")
    return int(value * _SUFFIXES[unit])


def size_limit() -> int:
    env = os.environ.get("GRAPHC_CACHE_SIZE")
    return parse_size(env) if env else DEFAULT_LIMIT


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str
    nbytes: int
    last_used: float


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def entries(root: Path | None = None) -> list[Entry]:
    """Every complete entry, least recently used first (temporary build directories excluded)."""
    root = root or cache_dir()
    found = []
    for kind in KINDS:
        parent = root / kind
        if not parent.is_dir():
            continue
        for d in parent.iterdir():
            if not d.is_dir() or "." in d.name:  # KEY.xxxx: a build in progress
                continue
            try:
                used = d.stat().st_mtime
            except OSError:
                continue
            found.append(Entry(d, kind, _tree_bytes(d), used))
    found.sort(key=lambda e: e.last_used)
    return found


def publish(entry: Path, build: Callable[[Path], None], *,
            complete: Callable[[Path], bool] | None = None) -> None:
    """Make ``entry`` by ``build(tmp)`` in a temporary directory beside it, renamed into place whole
    (where a concurrent build of the same key finished first, its equal entry stays: another process
    may be loading from it), then trim the cache sparing it. ``complete``: tells a finished entry from
    an incomplete one (left by a build that died); an existing entry it calls incomplete goes first."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{entry.name}.", dir=entry.parent))
    try:
        build(tmp)
        if complete is not None and entry.exists() and not complete(entry):
            _remove(entry)
        try:
            os.replace(tmp, entry)
        except OSError:
            pass  # a concurrent build of the same key won
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    trim(keep=(entry,))


def touch(entry: Path) -> None:
    """Record a use of ``entry`` (its modification time is its last use)."""
    try:
        os.utime(entry)
    except OSError:
        pass


def _remove(path: Path) -> None:
    """Rename first so that no reader finds a half-deleted entry, then delete."""
    doomed = path.with_name(f"{path.name}.evicted-{os.getpid()}")
    try:
        os.replace(path, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def trim(limit: int | None = None, *, keep: tuple[Path, ...] = (), grace_s: float | None = None) -> list[Entry]:
    """Remove least recently used entries until the cache holds at most ``limit`` bytes (default
    :func:`size_limit`), sparing ``keep`` and entries used in the last ``grace_s`` seconds
    (default :data:`GRACE_S`); returns the removed entries."""
    limit = size_limit() if limit is None else limit
    grace_s = GRACE_S if grace_s is None else grace_s
    all_entries = entries()
    total = sum(e.nbytes for e in all_entries)
    now = time.time()
    kept = {p.resolve() for p in keep}
    removed = []
    for e in all_entries:
        if total <= limit:
            break
        if e.path.resolve() in kept or now - e.last_used < grace_s:
            continue
        _remove(e.path)
        total -= e.nbytes
        removed.append(e)
    return removed


def clear() -> tuple[int, int]:
    """Remove every entry (and stale temporary directories); returns (entries, bytes) removed."""
    root = cache_dir()
    n, nbytes = 0, 0
    for e in entries(root):
        _remove(e.path)
        n += 1
        nbytes += e.nbytes
    for kind in KINDS:
        parent = root / kind
        if parent.is_dir():
            for d in parent.iterdir():
                if d.is_dir():
                    nbytes += _tree_bytes(d)
                    shutil.rmtree(d, ignore_errors=True)
    return n, nbytes


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def info() -> dict:
    """Location, limit, total size and entry counts by kind (for ``graphc cache info``)."""
    all_entries = entries()
    by_kind = {k: [e for e in all_entries if e.kind == k] for k in KINDS}
    return {"directory": cache_dir(), "limit": size_limit(), "bytes": sum(e.nbytes for e in all_entries),
            "entries": {k: (len(v), sum(e.nbytes for e in v)) for k, v in by_kind.items()},
            "oldest": all_entries[0].last_used if all_entries else None,
            "newest": all_entries[-1].last_used if all_entries else None}


__all__ = ["cache_dir", "entries", "touch", "trim", "clear", "info", "size_limit", "parse_size", "format_bytes",
           "CacheConfigError", "Entry"]
