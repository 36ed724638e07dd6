"""The C toolchain: finding a compiler, building the runtime once per machine, linking models.

The runtime's C sources ship inside the package (``graphc/c_runtime``: ``include/graphc/graphc.h``
and ``src/``, package data found through :mod:`importlib.resources`, so a wheel or a plain
``pip install .`` carries them). They are compiled once per machine and kept under the cache
directory (:mod:`graphc.backends.llvm.cache`), keyed by a hash of the sources, the
compiler's version and the flags. A model library is the model's object file,
its descriptor and weights objects, and those runtime objects, linked by the C compiler into
``libNAME.so`` and archived into ``libNAME.a``.

The compiler is ``$CC`` or the first of cc, gcc, clang on PATH; its absence is reported at
the first native build, with what to install. Libraries for another platform (cross-compiling,
``triple="aarch64-linux-gnu"``) are built by that platform's GNU toolchain
(``aarch64-linux-gnu-gcc`` and ``-ar`` from Debian's ``gcc-aarch64-linux-gnu``, or
``$CC_aarch64_linux_gnu`` / ``$AR_aarch64_linux_gnu``; for ``wasm32-wasi``, clang with wasi-libc,
lld and ``llvm-ar``); :class:`Toolchain` is the C compiler and archiver of one platform, and every
function here takes one (the host's by default). For WebAssembly the shared library is
``NAME.wasm``, a WASI reactor module exporting the C ABI (and ``malloc``/``free``, so that its host
can place tensors in its memory).

Builds are reproducible: sources are compiled from their own directory under relative names (no
temporary path reaches an object file), shared libraries carry no build id and archives are
deterministic, so the same model and platform give byte-identical files.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CrossTools:
    """How to find one platform's cross toolchain, what provides it, and how it builds."""

    compilers: tuple[str, ...]  # C compilers to look for, in order
    archivers: tuple[str, ...]
    packages: str  # Debian packages that install them
    emulator: str  # what runs its programs here: a qemu-user program, or a Python module
    emulator_install: str
    sysroot: str = ""  # its libraries, for qemu (-L)
    flags: tuple[str, ...] = ()  # given to every compile and link
    link_flags: tuple[str, ...] = ()  # given to every link (after the objects)
    pic: bool = True  # position-independent code (not for a WebAssembly module, linked whole)
    shared: str = "lib{}.so"  # the shared library's file name


WASM_STACK_BYTES = 8 << 20  # a WebAssembly module's stack is fixed at link time (the default is 64 kB)

CROSS_TOOLS = {
    "aarch64-linux-gnu": CrossTools(("aarch64-linux-gnu-gcc",), ("aarch64-linux-gnu-ar",),
                                    "gcc-aarch64-linux-gnu libc6-dev-arm64-cross", "qemu-aarch64",
                                    "apt-get install qemu-user", sysroot="/usr/aarch64-linux-gnu"),
    "wasm32-wasi": CrossTools(("clang", "clang-16", "clang-15", "clang-14"), ("llvm-ar", "llvm-ar-16", "llvm-ar-15",
                                                                              "llvm-ar-14"),
                              "clang lld wasi-libc libclang-rt-dev-wasm32", "wasmtime", "pip install wasmtime",
                              flags=("--target=wasm32-wasi",),
                              link_flags=(f"-Wl,-z,stack-size={WASM_STACK_BYTES}",),
                              pic=False, shared="{}.wasm"),
}


@dataclass(frozen=True)
class Toolchain:
    """The C compiler and archiver that build libraries for one platform; ``None``: the host's."""

    platform: str | None = None

    @property
    def cross(self) -> CrossTools | None:
        return CROSS_TOOLS.get(self.platform) if self.platform else None

    def cc(self) -> str:
        return find_cc() if self.cross is None else _find_cross_tool(self.platform, "CC", self.cross.compilers)

    def ar(self) -> str:
        if self.cross is not None:
            return _find_cross_tool(self.platform, "AR", self.cross.archivers)
        ar = shutil.which(os.environ.get("AR", "ar"))
        if ar is None:
            raise ToolchainError("the archiver 'ar' (binutils) is needed to write a static library; install binutils")
        return ar

    @property
    def flags(self) -> list[str]:
        return list(self.cross.flags) if self.cross else []

    def compile_flags(self, flags: list[str]) -> list[str]:
        """``flags`` for this platform: its own first, -fPIC dropped where code is not position-independent."""
        return self.flags + [f for f in flags if self.cross is None or self.cross.pic or f != "-fPIC"]

    @property
    def wasm(self) -> bool:
        return bool(self.platform) and self.platform.startswith("wasm")

    def shared_name(self, symbol: str) -> str:
        return (self.cross.shared if self.cross else "lib{}.so").format(symbol)


def toolchain_for(platform: str | None) -> Toolchain:
    """The toolchain of ``platform`` (graphc's triple name); the host's for None or the host's own platform."""
    from graphc.backends.llvm.target import host_platform

    if platform is None or platform == host_platform():
        return Toolchain()
    if platform not in CROSS_TOOLS:
        raise ToolchainError(f"graphc has no C toolchain for {platform}: it cross-compiles for "
                             f"{', '.join(CROSS_TOOLS)}")
    return Toolchain(platform)


HOST = Toolchain()


def _find_cross_tool(platform: str, kind: str, names: tuple[str, ...]) -> str:
    """``$CC_<platform>`` / ``$AR_<platform>`` (dashes as underscores), else the first of ``names`` on PATH."""
    cross = CROSS_TOOLS[platform]
    env_name = f"{kind}_{platform.replace('-', '_')}"
    candidates = (os.environ[env_name],) if os.environ.get(env_name) else names
    for name in candidates:
        path = shutil.which(name)
        if path is not None:
            return path
    raise ToolchainError(
        f"building for {platform} needs its C toolchain, and {' or '.join(map(repr, candidates))} was not found on "
        f"PATH. Install it (`apt-get install {cross.packages}` on Debian or Ubuntu) or set ${env_name}.")


@dataclass(frozen=True)
class TargetStatus:
    """What this machine has for building (and running) one platform's libraries."""

    platform: str
    description: str
    cpus: tuple[str, ...]
    host: bool
    toolchain: str | None  # the C compiler found, or None
    install: str  # what provides it
    emulator: str | None  # the emulator found (cross platforms), or None
    emulator_install: str


def target_report() -> list[TargetStatus]:
    """Every platform graphc generates code for, with the tools this machine has for it."""
    from graphc.backends.llvm.target import ARCHITECTURES, host_platform

    out = []
    for platform, arch in ARCHITECTURES.items():
        host = platform == host_platform()
        cross = CROSS_TOOLS.get(platform)
        try:
            tc = toolchain_for(platform)
            cc: str | None = tc.cc()
            if cross is not None:
                tc.ar()
        except ToolchainError:
            cc = None
        install = "apt-get install gcc" if host or cross is None else f"apt-get install {cross.packages}"
        emulator = None
        if cross is not None and cross.sysroot and shutil.which(cross.emulator) and Path(cross.sysroot).is_dir():
            emulator = f"{shutil.which(cross.emulator)} -L {cross.sysroot}"
        elif cross is not None and not cross.sysroot and importlib.util.find_spec(cross.emulator) is not None:
            emulator = f"the Python module {cross.emulator}"
        cpus = (("host",) if host else ()) + tuple(arch.cpus)
        out.append(TargetStatus(platform, arch.description, cpus, host, cc, install, emulator,
                                cross.emulator_install if cross else ""))
    return out


def run_cc(args: list[str], what: str, tc: Toolchain = HOST, cwd: Path | None = None) -> None:
    cc = tc.cc()
    proc = subprocess.run([cc, *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise ToolchainError(f"{what} failed ({cc} exited with {proc.returncode}):\n{proc.stderr.strip()}")


def runtime_sources() -> list[Path]:
    src = runtime_dir() / "src"
    files = sorted(src.glob("*.c"))
    if not files:
        raise ToolchainError(f"the graphc runtime sources are missing: no *.c under {src}")
    return files


def _runtime_key(extra_flags: tuple[str, ...], tc: Toolchain = HOST) -> str:
    h = hashlib.blake2b(digest_size=12)
    rt = runtime_dir()
    for p in sorted((rt / "src").glob("*")) + sorted((rt / "include").rglob("*.h")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(f"{tc.platform}|{tc.cc()}|{cc_version(tc.cc())}".encode())
    h.update(" ".join(RUNTIME_CFLAGS + list(extra_flags)).encode())
    return h.hexdigest()


def runtime_key(extra_flags: tuple[str, ...] = (), tc: Toolchain = HOST) -> str:
    return _runtime_key(tuple(extra_flags), tc)


def runtime_objects(extra_flags: tuple[str, ...] = (), tc: Toolchain = HOST) -> list[Path]:
    """The runtime compiled for ``tc``'s platform (built on first use, then cached)."""
    key = _runtime_key(tuple(extra_flags), tc)
    out = cache_dir() / "runtime" / key
    sources = runtime_sources()
    objs = [out / (s.stem + ".o") for s in sources]
    if all(o.exists() for o in objs):
        build_cache.touch(out)
        return objs
    inc = runtime_dir() / "include"

    def build(tmp: Path) -> None:
        for s in sources:  # from the sources' directory, by name: no path of this machine in the objects
            run_cc(tc.compile_flags([*RUNTIME_CFLAGS, *extra_flags, f"-I{inc}", "-I.", "-c", s.name,
                                     "-o", str(tmp / (s.stem + ".o"))]),
                   f"compiling the graphc runtime ({s.name})", tc, cwd=s.parent)

    build_cache.publish(out, build)
    return objs


def asm_string(text: str) -> str:
    """``text`` as an assembler string literal (GNU as: backslash escapes, octal for the rest)."""
    out = []
    for b in text.encode():
        c = chr(b)
        out.append("\\" + c if c in '"\\' else c if 32 <= b < 127 else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def weights_asm(symbol: str, blob_path: Path, wasm: bool = False) -> str:
    """Assembly defining ``symbol`` (a C identifier) as the read-only contents of ``blob_path``
    (ELF, or a WebAssembly object's data segment)."""
    if wasm:
        return (f'\t.section .rodata.{symbol},"",@\n'
                f"\t.globl {symbol}\n\t.hidden {symbol}\n\t.p2align 6\n{symbol}:\n"
                f"\t.incbin {asm_string(str(blob_path))}\n\t.byte 0\n"
                f"\t.size {symbol}, . - {symbol}\n")
    return (f'\t.section .rodata.{symbol},"a",@progbits\n'
            f"\t.globl {symbol}\n\t.hidden {symbol}\n\t.p2align 6\n"
            f"\t.type {symbol}, @object\n{symbol}:\n"
            f'\t.incbin {asm_string(str(blob_path))}\n\t.byte 0\n'
            f"\t.size {symbol}, . - {symbol}\n"
            '\t.section .note.GNU-stack,"",@progbits\n')


def compile_c(source: Path, obj: Path, extra: list[str] | None = None, tc: Toolchain = HOST) -> None:
    rt = runtime_dir()
    run_cc(tc.compile_flags(["-std=c11", "-O1", "-fPIC", "-fvisibility=hidden", f"-I{rt / 'include'}",
                             f"-I{rt / 'src'}", *(extra or []), "-c", source.name, "-o", str(obj.resolve())]),
           f"compiling {source.name}", tc, cwd=source.parent)


def assemble(source: Path, obj: Path, tc: Toolchain = HOST) -> None:
    run_cc([*tc.flags, "-c", source.name, "-o", str(obj.resolve())], f"assembling {source.name}", tc,
           cwd=source.parent)


def link_shared(objects: list[Path], out: Path, tc: Toolchain = HOST) -> None:
    """The shared library: an ELF ``.so``, or for WebAssembly a WASI reactor module exporting the C ABI
    (every default-visibility symbol) and malloc/free."""
    if tc.wasm:
        run_cc([*tc.flags, "-mexec-model=reactor", "-o", str(out), *map(str, objects), "-Wl,--export-dynamic",
                "-Wl,--export=malloc", "-Wl,--export=free", "-lm", *tc.cross.link_flags], f"linking {out.name}", tc)
        return
    run_cc(["-shared", "-o", str(out), *map(str, objects), "-Wl,-Bsymbolic", "-Wl,--build-id=none",
            "-lpthread", "-lm"], f"linking {out.name}", tc)


def merge_objects(objects: list[Path], out: Path, tc: Toolchain = HOST) -> None:
    """One relocatable object of ``objects`` (``ld -r``): the parts a module was compiled in, joined
    into the single object the build and the static library list."""
    run_cc([*tc.flags, "-r", "-nostdlib", "-o", str(out), *map(str, objects)], f"merging {out.name}", tc)


def archive(objects: list[Path], out: Path, tc: Toolchain = HOST) -> None:
    ar = tc.ar()
    if out.exists():
        out.unlink()
    proc = subprocess.run([ar, "rcsD", str(out), *map(str, objects)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(f"archiving {out.name} failed: {proc.stderr.strip()}")
