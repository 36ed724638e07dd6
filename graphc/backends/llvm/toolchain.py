"""The C toolchain: finding a compiler, building the runtime once per machine, linking models.

The runtime's C sources ship inside the package (``graphc/c_runtime``: ``include/graphc/graphc.h``
and ``src/``, package data found through :mod:`importlib.resources`, so a wheel or a plain
``pip install .`` carries them). They are compiled once per machine and kept under the cache
directory (:mod:`graphc.backends.llvm.cache`), keyed by a hash of the sources, the
compiler's version and the flags. A model library is the model's object file,
its descriptor and weights objects, and those runtime objects, linked by the C compiler into
``libNAME.so`` and archived into ``libNAME.a``.

The compiler is ``$CC`` or the first of cc, gcc, clang on PATH; its absence is reported at
the first native build, with what to install.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from graphc.backends.llvm import cache as build_cache
from graphc.backends.llvm.cache import cache_dir

RUNTIME_CFLAGS = ["-std=c11", "-D_GNU_SOURCE", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra"]


class ToolchainError(RuntimeError):
    """No usable C compiler, or it failed."""


def runtime_dir() -> Path:
    """Where the C runtime (include/graphc/graphc.h and src/) lives: ``$GRAPHC_RUNTIME_DIR``, else
    the package data ``graphc/c_runtime``."""
    env = os.environ.get("GRAPHC_RUNTIME_DIR")
    if env:
        return Path(env)
    root = Path(str(importlib.resources.files("graphc") / "c_runtime"))
    if not (root / "include" / "graphc" / "graphc.h").is_file():
        raise ToolchainError(f"the graphc C runtime is missing from the installed package (no {root}/include/graphc/"
                             "graphc.h): reinstall graphc")
    return root


@cache
def find_cc() -> str:
    """The C compiler to use (raises ToolchainError naming what to install)."""
    env = os.environ.get("CC")
    candidates = [env] if env else ["cc", "gcc", "clang"]
    for c in candidates:
        path = shutil.which(c) if c else None
        if path:
            return path
    raise ToolchainError(
        "graphc's native target needs a C compiler to link model libraries, and none was found "
        f"(looked for {', '.join(c for c in candidates if c)} on PATH). Install gcc or clang "
        "(e.g. `apt-get install gcc`) or set $CC to a compiler.")


@cache
def cc_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise ToolchainError(f"cannot run the C compiler {cc!r}: {exc}") from None
    return out.stdout.splitlines()[0] if out.stdout else cc


def run_cc(args: list[str], what: str) -> None:
    cc = find_cc()
    proc = subprocess.run([cc, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(f"{what} failed ({cc} exited with {proc.returncode}):\n{proc.stderr.strip()}")


def runtime_sources() -> list[Path]:
    src = runtime_dir() / "src"
    files = sorted(src.glob("*.c"))
    if not files:
        raise ToolchainError(f"the graphc runtime sources are missing: no *.c under {src}")
    return files


def _runtime_key(extra_flags: tuple[str, ...]) -> str:
    h = hashlib.blake2b(digest_size=12)
    rt = runtime_dir()
    for p in sorted((rt / "src").glob("*")) + sorted((rt / "include").rglob("*.h")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(cc_version(find_cc()).encode())
    h.update(" ".join(RUNTIME_CFLAGS + list(extra_flags)).encode())
    return h.hexdigest()


def runtime_key(extra_flags: tuple[str, ...] = ()) -> str:
    return _runtime_key(tuple(extra_flags))


def runtime_objects(extra_flags: tuple[str, ...] = ()) -> list[Path]:
    """The runtime compiled for this machine (built on first use, then cached)."""
    key = _runtime_key(tuple(extra_flags))
    out = cache_dir() / "runtime" / key
    sources = runtime_sources()
    objs = [out / (s.stem + ".o") for s in sources]
    if all(o.exists() for o in objs):
        build_cache.touch(out)
        return objs
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=out.parent))
    try:
        inc = runtime_dir() / "include"
        for s in sources:
            run_cc([*RUNTIME_CFLAGS, *extra_flags, f"-I{inc}", f"-I{s.parent}", "-c", str(s),
                    "-o", str(tmp / (s.stem + ".o"))], f"compiling the graphc runtime ({s.name})")
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    build_cache.trim(keep=(out,))
    return objs


def asm_string(text: str) -> str:
    """``text`` as an assembler string literal (GNU as: backslash escapes, octal for the rest)."""
    out = []
    for b in text.encode():
        c = chr(b)
        out.append("\\" + c if c in '"\\' else c if 32 <= b < 127 else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def weights_asm(symbol: str, blob_path: Path) -> str:
    """Assembly defining ``symbol`` (a C identifier) as the read-only contents of ``blob_path``."""
    return (f'\t.section .rodata.{symbol},"a",@progbits\n'
            f"\t.globl {symbol}\n\t.hidden {symbol}\n\t.p2align 6\n"
            f"\t.type {symbol}, @object\n{symbol}:\n"
            f'\t.incbin {asm_string(str(blob_path))}\n\t.byte 0\n'
            f"\t.size {symbol}, . - {symbol}\n"
            '\t.section .note.GNU-stack,"",@progbits\n')


def compile_c(source: Path, obj: Path, extra: list[str] | None = None) -> None:
    rt = runtime_dir()
    run_cc(["-std=c11", "-O1", "-fPIC", "-fvisibility=hidden", f"-I{rt / 'include'}", f"-I{rt / 'src'}",
            *(extra or []), "-c", str(source), "-o", str(obj)], f"compiling {source.name}")


def assemble(source: Path, obj: Path) -> None:
    run_cc(["-c", str(source), "-o", str(obj)], f"assembling {source.name}")


def link_shared(objects: list[Path], out: Path) -> None:
    run_cc(["-shared", "-o", str(out), *map(str, objects), "-Wl,-Bsymbolic", "-Wl,--build-id=none",
            "-lpthread", "-lm"], f"linking {out.name}")


def archive(objects: list[Path], out: Path) -> None:
    ar = shutil.which(os.environ.get("AR", "ar"))
    if ar is None:
        raise ToolchainError("the archiver 'ar' (binutils) is needed to write a static library; install binutils")
    if out.exists():
        out.unlink()
    proc = subprocess.run([ar, "rcsD", str(out), *map(str, objects)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(f"archiving {out.name} failed: {proc.stderr.strip()}")
