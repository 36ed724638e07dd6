"""plot_model and model_to_dot: through pydot and Graphviz as Keras draws, and the built-in PNG fallback."""

from __future__ import annotations

import struct
import sys
import warnings
import zlib

import numpy as np
import pytest

from graphc import Input, Model, layers
from graphc.models import Sequential
from graphc.plot import _missing_graphviz
from graphc.utils import model_to_dot, plot_model

pydot = pytest.importorskip("pydot")
needs_graphviz = pytest.mark.skipif(_missing_graphviz() is not None, reason="Graphviz's dot is not installed")


def _png_chunks(path) -> dict[bytes, bytes]:
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
        chunks[tag] = chunks.get(tag, b"") + body
        pos += 12 + length
    return chunks


def _read_builtin_png(path):
    chunks = _png_chunks(path)
    w, h, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and color == 2
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(rows[:, 0] == 0)  # filter type 0 on every row
    return rows[:, 1:].reshape(h, w, 3)


def _boxes(img) -> list[tuple[int, int, int]]:
    """(y, x, width) of each box the built-in renderer drew, from its border's top-left corners."""
    border = np.all(img == (60, 90, 160), axis=-1)
    corners = border[1:-1, 1:-1] & border[1:-1, 2:] & border[2:, 1:-1] & ~border[:-2, 1:-1] & ~border[1:-1, :-2]
    out = []
    for y, x in zip(*np.nonzero(corners)):
        width = np.argmin(border[y + 1, x + 1:]) if not border[y + 1, x + 1:].all() else img.shape[1]
        out.append((int(y) + 1, int(x) + 1, int(width)))
    return out


def _branchy():
    inp = Input(shape=(None,), dtype="int32", name="posts")
    x = layers.GlobalMaxPooling1D(name="pool")(layers.Embedding(50, 4, name="embed")(inp))
    return Model(inp, [layers.Dense(1, name="age")(x), layers.Dense(1, activation="sigmoid", name="gender")(x)])


def _nested():
    inner_in = Input(shape=(3,), name="inner_in")
    inner = Model(inner_in, layers.Dense(2, name="inner_out")(layers.Dense(3, name="inner_mid")(inner_in)),
                  name="encoder")
    inp = Input(shape=(4,), name="x")
    return Model(inp, layers.Dense(1, name="head")(inner(layers.Dense(3, name="stem")(inp))))


def _edges(dot) -> set[tuple[str, str]]:
    return {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in dot.get_edges()}


def _label(dot, name) -> str:
    nodes = dot.get_node(name) or dot.get_node(f'"{name}"')
    return nodes[0].get("label")


# ---------------------------------------------------------------------------- model_to_dot (pydot)
def test_dot_has_a_node_per_layer_and_keras_edges():
    dot = model_to_dot(_branchy())
    names = {n.get_name().strip('"') for n in dot.get_nodes()} - {"node", "graph", "edge"}
    assert names == {"posts", "embed", "pool", "age", "gender"}
    assert _edges(dot) == {("posts", "embed"), ("embed", "pool"), ("pool", "age"), ("pool", "gender")}
    assert dot.get("rankdir") == "TB" and dot.get("dpi") == 200 and dot.get("splines") == "ortho"


def test_dot_labels_follow_the_options():
    model = _branchy()
    label = _label(model_to_dot(model, show_shapes=True, show_dtype=True, show_layer_activations=True,
                                show_trainable=True), "gender")
    for text in ("gender (Dense)", "Activation: sigmoid", "Input shape: (None, 4)", "Output shape: (None, 1)",
                 "Output dtype: float32", ">Trainable<"):
        assert text in label, text
    assert "Input shape" not in _label(model_to_dot(model, show_shapes=True), "posts")  # an InputLayer
    bare = _label(model_to_dot(model, show_layer_names=False), "gender")
    assert ">Dense<" in bare and "gender" not in bare and "shape" not in bare and "Activation" not in bare
    model.get_layer("age").trainable = False
    assert ">Non-trainable<" in _label(model_to_dot(model, show_trainable=True), "age")
    assert "Trainable" not in _label(model_to_dot(model, show_trainable=True), "pool")  # no weights
    dot = model_to_dot(model, rankdir="LR", dpi=96, splines="line")
    assert (dot.get("rankdir"), dot.get("dpi"), dot.get("splines")) == ("LR", 96, "line")


def test_sequential_edges_and_nested_clusters():
    seq = Sequential([layers.Dense(3, input_shape=(4,), name="d1"), layers.Dense(2, name="d2")])
    assert _edges(model_to_dot(seq)) == {("d1", "d2")}
    model = _nested()
    assert _edges(model_to_dot(model)) == {("x", "stem"), ("stem", "encoder"), ("encoder", "head")}
    dot = model_to_dot(model, expand_nested=True)
    assert _edges(dot) == {("x", "stem"), ("stem", "encoder/inner_in"), ("encoder/inner_in", "encoder/inner_mid"),
                           ("encoder/inner_mid", "encoder/inner_out"), ("encoder/inner_out", "head")}
    (cluster,) = dot.get_subgraphs()
    assert cluster.get("label") == "encoder" and cluster.get("style") == "dashed"
    assert {n.get_name().strip('"') for n in cluster.get_nodes()} == {"encoder/inner_in", "encoder/inner_mid",
                                                                      "encoder/inner_out"}
    assert isinstance(model_to_dot(model, subgraph=True), pydot.Cluster)


# ---------------------------------------------------------------------------- plot_model through Graphviz
@needs_graphviz
@pytest.mark.parametrize("ext", ["png", "svg", "dot", "pdf"])
def test_graphviz_formats(tmp_path, ext):
    path = tmp_path / f"model.{ext}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_model(_branchy(), to_file=path, show_shapes=True, show_layer_names=True)
    data = path.read_bytes()
    if ext == "png":
        assert b"IDAT" in data and _png_chunks(path)[b"IHDR"]
    elif ext == "svg":
        text = data.decode()
        assert "<svg" in text and "gender (Dense)" in text and "Output shape: (None, 1)" in text
    elif ext == "dot":
        (graph,) = pydot.graph_from_dot_data(data.decode())
        assert _edges(graph) == {("posts", "embed"), ("embed", "pool"), ("pool", "age"), ("pool", "gender")}
        assert "bb=" in data.decode()  # laid out by Graphviz
    else:
        assert data[:5] == b"%PDF-"


@needs_graphviz
def test_graphviz_no_extension_is_png(tmp_path):
    path = tmp_path / "model"
    plot_model(_nested(), to_file=path, expand_nested=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- the built-in fallback
@pytest.fixture(params=["no dot program", "no pydot"])
def without_graphviz(request, monkeypatch):
    if request.param == "no dot program":
        monkeypatch.setenv("PATH", "")
        return "Graphviz's dot program was not found"
    monkeypatch.setitem(sys.modules, "pydot", None)
    return "pydot is not installed"


def test_fallback_draws_png_with_a_warning(tmp_path, without_graphviz):
    model = _branchy()
    path = tmp_path / "m.png"
    with pytest.warns(UserWarning, match=without_graphviz) as record:
        plot_model(model, to_file=path, show_shapes=True, show_dtype=True, show_layer_activations=True,
                   show_trainable=True)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    img = _read_builtin_png(path)
    assert len(_boxes(img)) == len(model.layers)
    assert np.all(img == (20, 20, 20), axis=-1).any()  # text


@pytest.mark.parametrize("rankdir", ["TB", "BT", "LR", "RL"])
def test_fallback_rankdir(tmp_path, rankdir, monkeypatch):
    monkeypatch.setenv("PATH", "")
    inp = Input(shape=(4,), name="x")
    model = Model(inp, layers.Dense(2, name="a_much_longer_layer_name")(inp))
    path = tmp_path / "m.png"
    with pytest.warns(UserWarning):
        plot_model(model, to_file=path, rankdir=rankdir, show_layer_names=True)
    (y0, x0, w0), (y1, x1, w1) = sorted(_boxes(_read_builtin_png(path)), key=lambda b: b[2])  # input box first
    axis = {"TB": y1 - y0, "BT": y0 - y1, "LR": x1 - x0, "RL": x0 - x1}[rankdir]
    assert axis > 0, (rankdir, (y0, x0), (y1, x1))


def test_fallback_dpi_and_splines(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    model = _branchy()
    images = {}
    for dpi, splines in ((200, "ortho"), (100, "ortho"), (200, "line")):
        path = tmp_path / f"m{dpi}{splines}.png"
        with pytest.warns(UserWarning):
            plot_model(model, to_file=path, dpi=dpi, splines=splines)
        per_metre, _, unit = struct.unpack(">IIB", _png_chunks(path)[b"pHYs"])
        assert unit == 1 and per_metre == round(dpi / 0.0254)
        images[dpi, splines] = _read_builtin_png(path)
    assert images[200, "ortho"].shape[0] == 2 * images[100, "ortho"].shape[0]
    assert images[200, "ortho"].shape == images[200, "line"].shape
    assert not np.array_equal(images[200, "ortho"], images[200, "line"])  # the branches bend at right angles


def test_fallback_expand_nested_names_inner_layers(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.warns(UserWarning):
        plot_model(_nested(), to_file=tmp_path / "flat.png")
        plot_model(_nested(), to_file=tmp_path / "expanded.png", expand_nested=True)
    assert len(_boxes(_read_builtin_png(tmp_path / "flat.png"))) == 4
    assert len(_boxes(_read_builtin_png(tmp_path / "expanded.png"))) == 6


def test_fallback_other_formats(tmp_path, without_graphviz):
    with pytest.raises(ImportError, match="needs pydot and Graphviz"):
        plot_model(_branchy(), to_file=tmp_path / "m.svg")
    if without_graphviz.startswith("pydot"):
        with pytest.raises(ImportError, match="pip install pydot"):
            plot_model(_branchy(), to_file=tmp_path / "m.dot")
        with pytest.raises(ImportError, match="pip install pydot"):
            model_to_dot(_branchy())
    else:  # DOT source needs pydot only
        plot_model(_branchy(), to_file=tmp_path / "m.dot")
        (graph,) = pydot.graph_from_dot_file(str(tmp_path / "m.dot"))
        assert ("pool", "gender") in _edges(graph)


def test_errors(tmp_path):
    model = _branchy()
    with pytest.raises(ValueError, match="unrecognized keyword arguments: \\['colour'\\]"):
        plot_model(model, to_file=tmp_path / "m.png", colour="red")
    with pytest.raises(ValueError, match="layer_range"):
        plot_model(model, to_file=tmp_path / "m.png", layer_range=["a", "b"])
    with pytest.raises(ValueError, match="rankdir"):
        plot_model(model, to_file=tmp_path / "m.png", rankdir="XY")
    with pytest.raises(ValueError, match="splines"):
        model_to_dot(model, splines="wavy")
    with pytest.raises(ValueError, match="dpi"):
        plot_model(model, to_file=tmp_path / "m.png", dpi=0)
    with pytest.raises(ValueError, match="not built"):
        plot_model(Sequential([layers.Dense(2)]), to_file=tmp_path / "m.png")
