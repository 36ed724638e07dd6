"""Saving a graph and loading it back: exact, and damaged files refused with the file named."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.ir import Graph, IRError, TensorType, load, save
from tests.ir.graphs import f32, tiny


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert str(a) == str(b)
    assert a.name == b.name and a.inputs == b.inputs and a.outputs == b.outputs
    assert list(a.constants) == list(b.constants)
    for name, array in a.constants.items():
        other = b.constants[name]
        assert array.dtype == other.dtype and array.shape == other.shape
        assert array.tobytes() == other.tobytes(), name  # bit for bit (NaN payloads, -0.0)
    for name, value in a.values.items():
        assert b.values[name] == value
    for op, other in zip(a.ops(), b.ops()):
        assert (op.id, op.type, op.inputs, op.outputs, op.attrs, op.layer) == \
            (other.id, other.type, other.inputs, other.outputs, other.attrs, other.layer)
        assert all(type(op.attrs[k]) is type(other.attrs[k]) for k in op.attrs)


def test_round_trip_is_exact(tmp_path):
    g = tiny()
    g.meta.update({"input_names": ["x", "ids"], "nested": {"pair": (1, 2), "inf": math.inf}, "n": 3})
    path = tmp_path / "tiny.npz"
    save(g, path)
    back = load(path)
    assert_same_graph(g, back)
    assert back.meta["nested"]["pair"] == (1, 2) and back.meta["nested"]["inf"] == math.inf
    assert back.values["dense/kernel"].trainable and not back.values["scale"].trainable
    assert back.values["dense/kernel"].layer == "dense"
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_constants_of_every_dtype_bit_for_bit(tmp_path, rng):
    g = Graph("consts")
    arrays = {
        "f32": np.array([np.nan, -0.0, np.inf, 1e-45, 3.4e38], np.float32),
        "f64": rng.normal(size=(2, 3)),
        "f16": np.array([65504, -1e-4], np.float16),
        "i64": np.array([np.iinfo(np.int64).min, 7]),
        "i8": np.array([-128, 127], np.int8),
        "u8": np.arange(5, dtype=np.uint8),
        "flags": np.array([[True, False]]),
        "scalar": np.float32(1.5),
        "empty": np.zeros((0, 3), np.float32),
    }
    for name, a in arrays.items():
        g.add_constant(name, a)
    x = g.add_input("x", TensorType("float32", (3,)))
    g.set_outputs([x, "f32"])
    save(g, tmp_path / "c.npz")
    assert_same_graph(g, load(tmp_path / "c.npz"))


def test_attribute_values_survive(tmp_path):
    g = Graph("attrs")
    x = g.add_input("x", f32(2))
    attrs = {"pads": ((0, 1), (1, 0)), "list": [1, [2, 3]], "inf": -math.inf, "nan": math.nan, "none": None,
             "s": "same", "b": False, "f": 0.1, "d": {"k": (1,)}}
    y = g.add_op("custom", [x], [f32(2)], attrs).outputs[0]
    g.set_outputs([y])
    save(g, tmp_path / "a.npz")
    got = load(tmp_path / "a.npz").op(g.ops()[0].id).attrs
    assert got["pads"] == ((0, 1), (1, 0)) and isinstance(got["pads"][0], tuple)
    assert got["list"] == [1, [2, 3]] and got["d"] == {"k": (1,)}
    assert got["inf"] == -math.inf and math.isnan(got["nan"])
    assert got["none"] is None and got["s"] == "same" and got["b"] is False and got["f"] == 0.1


def test_lowered_model_round_trip_runs_the_same(tmp_path, rng):
    ids = Input((None,), dtype="int32", name="ids")
    model = Model(ids, layers.Dense(3, activation="softmax")(layers.Embedding(20, 4)(ids)))
    graph = graphc.lower(model)
    save(graph, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert_same_graph(graph, back)
    graphc.verify(back)
    x = rng.integers(0, 20, size=(2, 5))
    assert np.array_equal(graphc.build(back).predict(x), model.predict(x))


# ---------------------------------------------------------------------------------------------
# Damaged files


def _archive(structure, arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, __graph__=np.frombuffer(json.dumps(structure).encode(), np.uint8), **arrays)
    return buf.getvalue()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    save(tiny(), path)
    with np.load(path) as archive:
        structure = json.loads(archive["__graph__"].tobytes())
        arrays = {k: archive[k] for k in archive.files if k != "__graph__"}
    return path.read_bytes(), structure, arrays


def _damaged(saved):
    data, structure, arrays = saved
    buf = io.BytesIO()
    np.savez(buf, a=np.ones(3))
    undefined = json.loads(json.dumps(structure))
    undefined["ops"][0]["inputs"] = ["nope"]
    bad_shape = json.loads(json.dumps(structure))
    bad_shape["values"][0]["type"]["shape"] = [1.5]
    return {
        "truncated": (data[: len(data) // 2], "not an .npz archive"),
        "cut_short": (data[:-20], "not an .npz archive|cannot read"),
        "empty": (b"", "not an .npz archive"),
        "garbage": (b"hello world" * 10, "not an .npz archive"),
        "no_graph": (buf.getvalue(), "__graph__ is not a file in the archive"),
        "bad_json": (_archive_raw(b"{not json", arrays), "cannot read graphc IR file"),
        "format": (_archive({**structure, "format": "other"}, arrays), r"not a graphc IR file \(format 'other'\)"),
        "version": (_archive({**structure, "version": 99}, arrays), "version 99 is not supported"),
        "no_ops": (_archive({k: v for k, v in structure.items() if k != "ops"}, arrays), "malformed: KeyError"),
        "not_a_dict": (_archive([1, 2], arrays), "cannot read graphc IR file|malformed"),
        "missing_constant": (_archive(structure, {k: v for k, v in arrays.items() if k != "c0"}),
                             "c0 is not a file in the archive"),
        "wrong_constant": (_archive(structure, {**arrays, "c0": np.ones((2, 2), np.float32)}),
                           r"constant 'dense/kernel' data is f32\[2, 2\], declared f32\[3, 2\]"),
        "undefined_input": (_archive(undefined, arrays), "reads undefined value 'nope'"),
        "bad_dim": (_archive(bad_shape, arrays), "malformed: TypeError"),
    }


def _archive_raw(graph_bytes: bytes, arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, __graph__=np.frombuffer(graph_bytes, np.uint8), **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("case", ["truncated", "cut_short", "empty", "garbage", "no_graph", "bad_json", "format",
                                  "version", "no_ops", "not_a_dict", "missing_constant", "wrong_constant",
                                  "undefined_input", "bad_dim"])
def test_damaged_files_raise_irerror_naming_the_file(case, saved, tmp_path):
    content, message = _damaged(saved)[case]
    path = tmp_path / f"{case}.npz"
    path.write_bytes(content)
    with pytest.raises(IRError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(IRError, match="No such file") as info:
        load(path)
    assert str(path) in str(info.value)
