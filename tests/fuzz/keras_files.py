"""A mutation fuzzer for graphc's readers of Keras files and for the ONNX export of what they load.

    python -m tests.fuzz.keras_files TARGET --seconds 60 [--seed N] [--findings DIR] [FILE...]

TARGET is ``keras`` (``load_model`` of mutated ``.keras`` archives and ``load_weights`` of mutated
``.weights.h5`` files) or ``onnx`` (models loaded from mutated archives, exported to ONNX, checked
by the ONNX checker and run in onnxruntime against the reference interpreter). Inputs start from
the committed seed corpus (``tests/fuzz/corpus/keras``); each mutation is structural (a value,
key or layer of ``config.json`` changed, removed or duplicated; an HDF5 dataset replaced) or on
bytes (flips, splices, truncations of the whole file or of a member, re-zipped so the archive
stays readable).

Every input must give a result or a *clean* error: :class:`KerasFormatError` or
:class:`UnsupportedKerasError` naming the file (load), a ``ValueError`` or ``NotImplementedError``
(export). Anything else — another exception type, an exported model the checker refuses,
onnxruntime disagreeing with the reference, a hang — is a finding: the input is written to
``--findings`` with the traceback, and the exit status is 1. Listing FILEs replays them instead
of fuzzing (how a finding becomes a regression test). A crash of the process itself leaves the
input being tried in ``--findings/current``.
"""

from __future__ import annotations

import argparse
import copy
import faulthandler
import hashlib
import io
import json
import os
import random
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus" / "keras"
# One input taking longer than this is a finding (a hang): the process dumps its stack and exits.
INPUT_TIMEOUT_S = 30

# Values a mutated config field may take: wrong types, edge numbers, other layers' names.
ODD_VALUES = [None, True, False, 0, -1, 1, 2, 3, 7, 2**31, -(2**31), 2**63, 1e308, -1e-308, float("nan"),
              float("inf"), 0.5, "", "same", "valid", "causal", "relu", "linear", "softmax", "float16", "int32",
              "bfloat16", "channels_first", "x" * 300, [], [None], [1], [0, 0], [3, 3], [-1, 4], [[1, 2], [3]],
              {}, {"class_name": "Dense", "config": {"units": 3}}, {"module": "keras.layers"}]
LAYER_NAMES = ["Dense", "Conv2D", "Conv1D", "LSTM", "GRU", "Embedding", "Flatten", "Reshape", "Concatenate", "Add",
               "BatchNormalization", "LayerNormalization", "MaxPooling2D", "Dropout", "Activation", "Lambda",
               "InputLayer", "Functional", "Sequential", "Bidirectional", "TimeDistributed", "NoSuchLayer"]


class FindingError(Exception):
    """An input that broke a contract (the message says which)."""


# --------------------------------------------------------------------------- mutations

def _nodes(obj, path=()):
    """Every (path, container) of a JSON tree, containers only."""
    if isinstance(obj, (dict, list)):
        yield path, obj
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for k, v in items:
            yield from _nodes(v, (*path, k))


def mutate_config(config: dict, rng: random.Random) -> dict:
    config = copy.deepcopy(config)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        containers = [c for _, c in _nodes(config) if c]
        if not containers:
            break
        node = rng.choice(containers)
        key = rng.choice(list(node.keys()) if isinstance(node, dict) else range(len(node)))
        action = rng.random()
        if action < 0.45:
            node[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.55 and isinstance(node[key], str):
            node[key] = rng.choice(LAYER_NAMES)
        elif action < 0.65 and isinstance(node[key], (int, float)) and not isinstance(node[key], bool):
            node[key] = rng.choice((node[key] + 1, node[key] - 1, -node[key], node[key] * 1000, 0))
        elif action < 0.8:
            if isinstance(node, dict):
                del node[key]
            else:
                node.pop(key)
        elif action < 0.9 and isinstance(node, list):
            node.insert(rng.randrange(len(node) + 1), copy.deepcopy(node[key]))
        else:  # graft a subtree from elsewhere in the same config
            donor = rng.choice([c for _, c in _nodes(config)])
            node[key] = copy.deepcopy(donor) if donor is not node else None
    return config


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 2, 4, 8))):
        if not b:
            b = bytearray(rng.randbytes(8))
        action = rng.random()
        i = rng.randrange(len(b))
        if action < 0.4:
            b[i] ^= 1 << rng.randrange(8)
        elif action < 0.6:
            b[i] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif action < 0.7:
            del b[i:i + rng.randrange(1, 64)]
        elif action < 0.8:
            b[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif action < 0.9:
            j = rng.randrange(len(b))
            n = rng.randrange(1, 32)
            b[i:i + n] = b[j:j + n]
        else:
            del b[rng.randrange(len(b)):]
    return bytes(b)


def _members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def mutate_archive(archive: bytes, rng: random.Random) -> bytes:
    members = _members(archive)
    r = rng.random()
    if r < 0.55:
        config = json.loads(members["config.json"])
        members["config.json"] = json.dumps(mutate_config(config, rng)).encode()
    elif r < 0.75:
        members["model.weights.h5"] = mutate_bytes(members["model.weights.h5"], rng)
    elif r < 0.85:
        members["config.json"] = mutate_bytes(members["config.json"], rng)
    elif r < 0.9:
        victim = rng.choice(list(members))
        if rng.random() < 0.5:
            del members[victim]
        else:
            members[victim + rng.choice(("", "/x", "../x"))] = rng.randbytes(rng.randrange(64))
    else:
        return mutate_bytes(archive, rng)
    return _zip(members)


# --------------------------------------------------------------------------- what each target runs

def _clean_load_error(exc: BaseException, path: str) -> bool:
    from graphc.saving.errors import KerasFormatError, UnsupportedKerasError

    return isinstance(exc, (KerasFormatError, UnsupportedKerasError)) and path in str(exc)


def load_archive(data: bytes, workdir: Path):
    """``load_model`` of ``data`` as a .keras file: the model, or None after a clean error."""
    import graphc

    path = workdir / "input.keras"
    path.write_bytes(data)
    try:
        return graphc.models.load_model(str(path), compile=False)
    except Exception as exc:
        if _clean_load_error(exc, str(path)):
            return None
        raise FindingError(f"load_model raised {type(exc).__name__}: {exc}") from exc


def load_weights_file(data: bytes, seed_archive: bytes, workdir: Path) -> None:
    """``load_weights`` of ``data`` as a .weights.h5 file into the seed archive's model."""
    import graphc

    base = workdir / "base.keras"
    base.write_bytes(seed_archive)
    model = graphc.models.load_model(str(base), compile=False)
    path = workdir / "input.weights.h5"
    path.write_bytes(data)
    try:
        model.load_weights(str(path))
    except Exception as exc:
        if not _clean_load_error(exc, str(path)):
            raise FindingError(f"load_weights raised {type(exc).__name__}: {exc}") from exc


def export_and_run(model) -> None:
    """ONNX export of a loaded model: valid ONNX that onnxruntime runs as the reference does."""
    import onnx

    import graphc
    import graphc.onnx
    from graphc.backends.onnx.context import OnnxExportError

    try:
        proto = graphc.onnx.export(model)
    except (ValueError, NotImplementedError) as exc:  # includes OnnxExportError and shape errors
        if isinstance(exc, OnnxExportError) or str(exc):
            return
        raise FindingError(f"export raised {type(exc).__name__} without a message") from exc
    except Exception as exc:
        raise FindingError(f"export raised {type(exc).__name__}: {exc}") from exc
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise FindingError(f"the exported model fails the ONNX checker: {exc}") from exc
    try:
        graph = graphc.lower(model)
        sizes = [np.prod([d if isinstance(d, int) else 7 for d in graph.type_of(n).shape], dtype=float)
                 for n in graph.inputs]
        if sum(sizes) > 1 << 20:
            return  # a mutation that made the inputs huge: not worth the time
        if any(op.type.startswith("random_") for op in graph.ops()):
            return  # random draws (dropout called in training mode): no two engines agree on them
        report = graphc.onnx.verify(model, graphc.onnx.random_inputs(graph, batch_size=2))
    except (ValueError, NotImplementedError):
        return  # inputs the model refuses (a clean error naming them)
    except Exception as exc:
        raise FindingError(f"verify raised {type(exc).__name__}: {exc}") from exc
    if not report.ok and all(np.isfinite(v).all() and np.abs(v).max(initial=0) < 1e6
                             for v in report.reference.values() if np.issubdtype(np.asarray(v).dtype, np.floating)):
        raise FindingError(f"onnxruntime disagrees with the reference:\n{report.table()}")


def seeds() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(CORPUS.glob("*.keras"))]


def one_input(target: str, kind: str, data: bytes, seed_archive: bytes, workdir: Path) -> None:
    """Run one input through ``target``; raises FindingError when a contract breaks."""
    from graphc.frontend import state

    state.clear_session()
    if kind == "weights":
        load_weights_file(data, seed_archive, workdir)
        return
    model = load_archive(data, workdir)
    if model is not None and target == "onnx":
        export_and_run(model)


def _save_finding(findings: Path, kind: str, seed_name: str, data: bytes, message: str) -> Path:
    findings.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    suffix = ".weights.h5" if kind == "weights" else ".keras"
    path = findings / f"{kind}-{Path(seed_name).stem}-{digest}{suffix}"
    path.write_bytes(data)
    path.with_suffix(path.suffix + ".txt").write_text(message)
    return path


def fuzz(target: str, seconds: float, seed: int, findings: Path) -> int:
    rng = random.Random(seed)
    corpus = seeds()
    if not corpus:
        raise SystemExit(f"no seed archives in {CORPUS}")
    deadline = time.monotonic() + seconds
    runs, found = 0, 0
    with tempfile.TemporaryDirectory(prefix="graphc-fuzz-") as tmp:
        workdir = Path(tmp)
        while time.monotonic() < deadline:
            seed_name, archive = rng.choice(corpus)
            if target == "keras" and rng.random() < 0.3:
                kind, data = "weights", mutate_bytes(_members(archive)["model.weights.h5"], rng) \
                    if rng.random() < 0.7 else _mutated_h5(_members(archive)["model.weights.h5"], rng)
            else:
                kind, data = "archive", mutate_archive(archive, rng)
            findings.mkdir(parents=True, exist_ok=True)
            (findings / "current").write_bytes(data)  # survives a crash or a hang of the process
            (findings / "current.seed").write_text(f"{kind} {seed_name}\n")
            faulthandler.dump_traceback_later(INPUT_TIMEOUT_S, exit=True)  # a hang: stack, exit status 1
            try:
                one_input(target, kind, data, archive, workdir)
            except FindingError as exc:
                found += 1
                detail = "".join(traceback.format_exception(exc.__cause__ or exc))
                path = _save_finding(findings, kind, seed_name, data, f"{exc}\n\n{detail}")
                print(f"FINDING {path.name}: {str(exc).splitlines()[0][:300]}", flush=True)
            finally:
                faulthandler.cancel_dump_traceback_later()
            runs += 1
    (findings / "current").unlink(missing_ok=True)
    (findings / "current.seed").unlink(missing_ok=True)
    print(f"{target}: {runs} inputs in {seconds:.0f} s, {found} finding(s)", flush=True)
    return 1 if found else 0


def _mutated_h5(weights: bytes, rng: random.Random) -> bytes:
    """A weights file with one dataset replaced by one of another shape or dtype, or removed."""
    import h5py

    src = h5py.File(io.BytesIO(weights), "r")
    names: list[str] = []
    src.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    out = io.BytesIO()
    with h5py.File(out, "w") as dst:
        for key in src:
            src.copy(src[key], dst, name=key)
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        if names:
            victim = rng.choice(names)
            old = np.asarray(dst[victim])
            del dst[victim]
            r = rng.random()
            if r < 0.3:
                pass  # removed
            elif r < 0.6:
                shape = tuple(max(0, d + rng.choice((-1, 1))) for d in old.shape) or (2,)
                dst[victim] = np.zeros(shape, old.dtype)
            elif r < 0.8:
                dst[victim] = old.astype(rng.choice(("float16", "float64", "int32", "bool")))
            else:
                dst[victim] = np.full(old.shape, rng.choice((np.nan, np.inf, 1e30)), dtype=np.float32)
    src.close()
    return out.getvalue()


def replay(target: str, files: list[Path]) -> int:
    """Each FILE through ``target`` (the seed archive for a .weights.h5 file: its name's seed)."""
    corpus = dict(seeds())
    failed = 0
    with tempfile.TemporaryDirectory(prefix="graphc-fuzz-") as tmp:
        for f in files:
            kind = "weights" if f.name.endswith(".weights.h5") else "archive"
            seed_archive = next((a for n, a in corpus.items() if Path(n).stem in f.name), next(iter(corpus.values())))
            try:
                one_input(target, kind, f.read_bytes(), seed_archive, Path(tmp))
            except FindingError as exc:
                failed += 1
                print(f"FINDING {f.name}: {exc}", flush=True)
    print(f"{target}: replayed {len(files)} file(s), {failed} finding(s)", flush=True)
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", choices=("keras", "onnx"))
    p.add_argument("files", nargs="*", type=Path, help="replay these inputs instead of fuzzing")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--findings", type=Path, default=Path("fuzz-findings"))
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.files:
        return replay(args.target, args.files)
    return fuzz(args.target, args.seconds, args.seed, args.findings)


if __name__ == "__main__":
    sys.exit(main())
