"""Saving a graph to one file and loading it back, exactly.

The file is a NumPy ``.npz`` archive: the structure as JSON under ``__graph__`` and every
constant as its own array. Loading rebuilds the same values, ops (with ids and output
names), attributes and constants bit for bit.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from graphc.ir.graph import Graph, IRError
from graphc.ir.types import TensorType

FORMAT = "graphc-ir"
VERSION = 1


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[k, _to_json(v)] for k, v in value.items()]}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(_from_json(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: _from_json(v) for k, v in value["__dict__"]}
        if "__float__" in value:
            return float(value["__float__"])
    return value


def _type_json(t: TensorType) -> dict:
    return {"dtype": t.dtype, "shape": list(t.shape)}


def _type_from(d: dict) -> TensorType:
    return TensorType(d["dtype"], tuple(d["shape"]))


def to_dict(graph: Graph) -> dict:
    """The structure of ``graph`` as JSON-ready data (constants by name only)."""
    values = []
    for v in graph.values.values():
        if v.kind in ("input", "constant"):
            values.append({"name": v.name, "kind": v.kind, "type": _type_json(v.type),
                           "trainable": v.trainable, "layer": v.layer})
    ops = [{"id": op.id, "type": op.type, "inputs": op.inputs, "outputs": op.outputs,
            "output_types": [_type_json(graph.values[o].type) for o in op.outputs],
            "attrs": _to_json(op.attrs), "layer": op.layer} for op in graph.ops()]
    return {"format": FORMAT, "version": VERSION, "name": graph.name, "inputs": graph.inputs,
            "outputs": graph.outputs, "values": values, "ops": ops, "meta": _to_json(graph.meta)}


def from_dict(data: dict, constants: dict[str, np.ndarray]) -> Graph:
    if data.get("format") != FORMAT:
        raise IRError(f"not a graphc IR file (format {data.get('format')!r})")
    if data.get("version") != VERSION:
        raise IRError(f"graphc IR version {data.get('version')} is not supported (expected {VERSION})")
    g = Graph(data["name"])
    g.meta = _from_json(data["meta"])
    for v in data["values"]:
        if v["kind"] == "input":
            g.add_input(v["name"], _type_from(v["type"]))
        else:
            if v["name"] not in constants:
                raise IRError(f"IR file lacks the data of constant {v['name']!r}")
            array = constants[v["name"]]
            if TensorType.of(array) != _type_from(v["type"]):
                raise IRError(f"constant {v['name']!r} data is {TensorType.of(array)}, "
                              f"declared {_type_from(v['type'])}")
            g.add_constant(v["name"], array, trainable=v["trainable"], layer=v["layer"])
    g.inputs = list(data["inputs"])
    for op in data["ops"]:
        g.add_op(op["type"], op["inputs"], [_type_from(t) for t in op["output_types"]],
                 _from_json(op["attrs"]), layer=op["layer"], name=op["id"], output_names=op["outputs"])
    g.set_outputs(data["outputs"])
    return g


def save(graph: Graph, path: str | os.PathLike) -> None:
    """Write ``graph`` (structure and constants) to ``path`` (an .npz archive)."""
    arrays = {f"c{i}": graph.constants[name] for i, name in enumerate(graph.constants)}
    structure = to_dict(graph)
    structure["constant_keys"] = {name: f"c{i}" for i, name in enumerate(graph.constants)}
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, __graph__=np.frombuffer(json.dumps(structure).encode(), dtype=np.uint8), **arrays)
    os.replace(tmp, path)


def load(path: str | os.PathLike) -> Graph:
    """Read a graph written by :func:`save`; a missing, damaged or malformed file raises IRError naming it."""
    where = os.fspath(path)
    if os.path.exists(where) and not zipfile.is_zipfile(where):
        raise IRError(f"cannot read graphc IR file {where!r}: not an .npz archive (damaged or truncated?)")
    try:
        with np.load(where, allow_pickle=False) as archive:
            structure = json.loads(archive["__graph__"].tobytes().decode())
            keys = structure.get("constant_keys", {})
            constants = {name: archive[key] for name, key in keys.items()}
    except (OSError, ValueError, KeyError, AttributeError, zipfile.BadZipFile, EOFError,
            json.JSONDecodeError) as exc:
        raise IRError(f"cannot read graphc IR file {where!r}: {exc}") from exc
    try:
        return from_dict(structure, constants)
    except IRError as exc:
        raise IRError(f"graphc IR file {where!r}: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IRError(f"graphc IR file {where!r} is malformed: {type(exc).__name__}: {exc}") from exc
