"""plot_model: a valid PNG with one box per layer, DOT source, errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from graphc import Input, Model, layers
from graphc.models import Sequential
from graphc.utils import model_to_dot, plot_model


def _read_png(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
        chunks.setdefault(tag, b"")
        chunks[tag] += body
        pos += 12 + length
    w, h, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and color == 2
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(rows[:, 0] == 0)  # filter type 0 on every row
    return rows[:, 1:].reshape(h, w, 3)


def _branchy():
    inp = Input(shape=(None,), dtype="int32", name="posts")
    x = layers.GlobalMaxPooling1D()(layers.Embedding(50, 4)(inp))
    return Model(inp, [layers.Dense(1, name="age")(x), layers.Dense(1, name="gender")(x)])


@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_png_has_a_box_per_layer(tmp_path, rankdir):
    model = _branchy()
    path = tmp_path / "m.png"
    plot_model(model, to_file=str(path), show_shapes=True, show_dtype=True, rankdir=rankdir,
               show_layer_activations=True, show_trainable=True)
    img = _read_png(path)
    box = np.all(img == (232, 240, 254), axis=-1)
    text = np.all(img == (20, 20, 20), axis=-1)
    assert box.any() and text.any() and img.shape[0] > 50 and img.shape[1] > 100
    tall = img.shape[0] > img.shape[1]
    assert tall or rankdir == "LR" or img.shape[0] > 200


def test_png_box_count(tmp_path):
    model = _branchy()
    path = tmp_path / "m.png"
    plot_model(model, to_file=str(path))
    img = _read_png(path)
    border = np.all(img == (60, 90, 160), axis=-1)
    # top-left corners of boxes: border pixels with border to the right and below, none above or left
    corners = border[1:-1, 1:-1] & border[1:-1, 2:] & border[2:, 1:-1] & ~border[:-2, 1:-1] & ~border[1:-1, :-2]
    assert corners.sum() == len(model.layers)


def test_dot_source_lists_layers_and_edges(tmp_path):
    model = Sequential([layers.Dense(3, input_shape=(4,), name="d1"), layers.Dense(2, name="d2")])
    dot = model_to_dot(model, show_shapes=True)
    assert '"d1 (Dense)\\nInput shape: (None, 4)\\nOutput shape: (None, 3)"' in dot
    assert "n0 -> n1;" in dot and "n1 -> n2;" in dot
    plot_model(model, to_file=str(tmp_path / "m.dot"))
    assert (tmp_path / "m.dot").read_text() == model_to_dot(model)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match=".png or .dot"):
        plot_model(_branchy(), to_file=str(tmp_path / "m.svg"))
    with pytest.raises(ValueError, match="not built"):
        plot_model(Sequential([layers.Dense(2)]), to_file=str(tmp_path / "m.png"))
