"""A large module compiled in parts, side by side: one in this process, the others in worker processes.

LLVM's backend (instruction selection, register allocation, scheduling) was two thirds of a large
model's build time, all of it on one core (EfficientNetB0: 2.6 of 4.7 s). Its functions compile
independently, so the module's text is cut into parts of about equal size (:func:`split_module`),
each part compiled on its own core (:func:`compile_parts`), and the objects merged by the linker
(``ld -r``) into the one object the rest of the build expects. XLA's CPU backend and TVM split their
code generation the same way; llvmlite serializes every LLVM call of a process behind one lock, so
the parallelism must come from processes, not threads. A worker runs
:mod:`graphc.backends.llvm.emission` as a script: it imports llvmlite only.

Splitting changes linkage, not code: a function or constant private to the module (``internal``)
that one part defines and another uses becomes a ``hidden`` symbol (visible to the final link, not
exported), renamed with the library's symbol in front so that two models linked into one program
never collide. Read-only globals are copied into every part that reads them; a module with any other
global is compiled whole.

``GRAPHC_COMPILE_JOBS`` caps the processes (default: the CPUs this process may run on, at most 8;
``1`` compiles every module whole, in this process). Modules under :data:`MIN_PART_CHARS` of text per
part are not split: a worker's start (Python and llvmlite, about 0.15 s) would cost what it saves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from graphc.backends.llvm import emission

JOBS_VARIABLE = "GRAPHC_COMPILE_JOBS"
MAX_DEFAULT_JOBS = 8
MIN_PART_CHARS = 400_000  # of IR text per part; below, a worker's start costs about what it saves

_NAME = re.compile(r'@"((?:[^"\\]|\\.)*)"')
_DEFINE = re.compile(r'^define\s+(?P<linkage>(?:internal|private)\s+)?(?P<rest>.*)$')
_GLOBAL = re.compile(r'^@"(?P<name>(?:[^"\\]|\\.)*)"\s*=\s*(?P<linkage>(?:internal|private)\s+)?'
                     r'(?P<unnamed>(?:local_)?unnamed_addr\s+)?(?P<kind>global|constant)\b')
_EXTERNAL = re.compile(r'^@"(?:[^"\\]|\\.)*"\s*=\s*external\b')


def compile_jobs() -> int:
    """Processes a module may be compiled in: ``GRAPHC_COMPILE_JOBS``, else this process's CPUs (at most
    :data:`MAX_DEFAULT_JOBS`)."""
    value = os.environ.get(JOBS_VARIABLE)
    if value is None or value == "":
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        return max(1, min(MAX_DEFAULT_JOBS, cpus))
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise ValueError(f"{JOBS_VARIABLE}={value!r}: expected a positive number of processes")
    return jobs


# emission.py loaded by path: neither graphc's package nor the file's directory on sys.path (whose
# modules would shadow the standard library's), and the working directory the worker's own
_RUN_EMISSION = ("import importlib.util as u, sys; s = u.spec_from_file_location('graphc_emission', sys.argv[1]); "
                 "m = u.module_from_spec(s); s.loader.exec_module(m); sys.exit(m.main(sys.argv[2:]))")


@dataclass
class _Function:
    name: str
    lines: list[str]
    internal: bool

    @property
    def size(self) -> int:
        return sum(len(line) for line in self.lines)


@dataclass
class _Module:
    """A module's text in pieces: everything at top level but function bodies (``header``), the
    read-only globals (by name), and the function definitions."""

    header: list[str] = field(default_factory=list)
    constants: dict[str, str] = field(default_factory=dict)
    functions: list[_Function] = field(default_factory=list)


def _parse(text: str) -> _Module | None:
    """``text`` cut at top level; None where it holds something splitting cannot keep single (a
    writable global, a definition spelled in a way llvmlite does not print)."""
    module = _Module()
    current: _Function | None = None
    for line in text.splitlines():
        line += "\n"  # the text's last line may have none, and need not stay last
        if current is not None:
            current.lines.append(line)
            if line.rstrip() == "}":
                current = None
            continue
        if line.startswith("define"):
            m = _DEFINE.match(line)
            names = _NAME.findall(line)
            if m is None or not names:
                return None
            current = _Function(names[0], [line], m.group("linkage") is not None)
            module.functions.append(current)
            continue
        if line.startswith("@"):
            if _EXTERNAL.match(line):
                module.header.append(line)  # a declaration: every part may keep it
                continue
            m = _GLOBAL.match(line)
            if m is None or m.group("kind") != "constant":
                return None  # a writable global must stay one definition: compile the module whole
            module.constants[m.group("name")] = line
            continue
        module.header.append(line)
    if current is not None:
        return None
    return module


def _declaration(fn: _Function, rename: Callable[[str], str]) -> str:
    """The ``declare`` line of ``fn``: its signature without body and function attributes; hidden and
    renamed if it was internal."""
    line = rename(fn.lines[0].rstrip())
    m = _DEFINE.match(line)
    rest = m.group("rest")
    # the parameter list ends at the parenthesis that closes the first one after the name
    start = rest.index("(", rest.index("@"))
    depth = 0
    for i in range(start, len(rest)):
        depth += {"(": 1, ")": -1}.get(rest[i], 0)
        if depth == 0:
            rest = rest[:i + 1]
            break
    return f"declare {'hidden ' if fn.internal else ''}{rest}\n"


def split_module(text: str, parts: int, prefix: str) -> list[str]:
    """``text`` as ``parts`` modules (fewer if it has fewer functions; ``[text]`` where it cannot be
    split) that together define what it defines: functions dealt largest first to the part with the
    least text, internal functions renamed ``prefix + name`` and made hidden, each function declared
    in the parts that use it but define it not, read-only globals copied into each part that reads them."""
    module = _parse(text) if parts > 1 else None
    if module is None or len(module.functions) < 2:
        return [text]
    parts = min(parts, len(module.functions))
    internal = {fn.name for fn in module.functions if fn.internal}

    def rename(line: str) -> str:
        return _NAME.sub(lambda m: f'@"{prefix}{m.group(1)}"' if m.group(1) in internal else m.group(0), line)

    groups: list[list[_Function]] = [[] for _ in range(parts)]
    sizes = [0] * parts
    for fn in sorted(module.functions, key=lambda f: -f.size):
        k = sizes.index(min(sizes))
        groups[k].append(fn)
        sizes[k] += fn.size
    texts = []
    for group in groups:
        defined = {fn.name for fn in group}
        body = []
        for fn in group:
            first = fn.lines[0]
            if fn.internal:
                first = _DEFINE.sub(lambda m: f"define hidden {m.group('rest')}", first.rstrip("\n")) + "\n"
            body.append(rename(first))
            body.extend(rename(line) for line in fn.lines[1:])
        body_text = "".join(body)
        used = set(_NAME.findall(body_text))
        constants = [rename(line) for name, line in module.constants.items() if name in used]
        used.update(name for line in constants for name in _NAME.findall(line))  # functions they point to
        declarations = [_declaration(fn, rename) for fn in module.functions
                        if fn.name not in defined and (prefix + fn.name if fn.internal else fn.name) in used]
        texts.append("".join(module.header) + "".join(constants) + "".join(declarations) + body_text)
    return texts


def _worker(part: str, spec: dict, directory: Path, index: int) -> tuple[subprocess.Popen | None, Path]:
    """A process compiling ``part`` (:mod:`emission` run as a script; None where none could start) and
    where its object will be."""
    src, out, spec_path = directory / f"part{index}.ll", directory / f"part{index}.o", directory / f"part{index}.json"
    src.write_text(part)
    spec_path.write_text(json.dumps(spec))
    try:
        proc = subprocess.Popen([sys.executable, "-c", _RUN_EMISSION, emission.__file__, str(spec_path), str(src),
                                 str(out)], cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None, out
    return proc, out


def compile_parts(text: str, compile_one: Callable[[str], bytes], spec: dict, *, prefix: str,
                  jobs: int | None = None) -> list[bytes]:
    """The objects of ``text``: one, from ``compile_one(text)``, unless the module is large enough for
    several parts and ``jobs`` (default :func:`compile_jobs`) allows; then part 0 through
    ``compile_one`` here while workers compile the others with ``spec`` (``emission.emit_object``'s
    keyword arguments and machine). A worker that fails has its part compiled here (so LLVM's error,
    if the part is wrong, is raised from this process)."""
    jobs = compile_jobs() if jobs is None else jobs
    parts = min(jobs, len(text) // MIN_PART_CHARS) if jobs > 1 and sys.executable else 1
    texts = split_module(text, parts, prefix) if parts > 1 else [text]
    if len(texts) == 1:
        return [compile_one(text)]
    with tempfile.TemporaryDirectory(prefix="graphc-emit-") as tmp:
        workers = [_worker(part, spec, Path(tmp), i) for i, part in enumerate(texts[1:], start=1)]
        objects = [compile_one(texts[0])]
        for (proc, out), part in zip(workers, texts[1:]):
            if proc is not None:
                proc.wait()
            if proc is not None and proc.returncode == 0 and out.exists():
                objects.append(out.read_bytes())
            else:
                objects.append(compile_one(part))
    return objects


__all__ = ["JOBS_VARIABLE", "MIN_PART_CHARS", "compile_jobs", "compile_parts", "split_module"]
