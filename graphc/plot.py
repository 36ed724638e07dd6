"""``plot_model``: a drawing of a model's layer graph, as a PNG (or DOT text), without Graphviz.

Keras draws with pydot and Graphviz's ``dot`` program; graphc draws the picture itself so that
it works on any machine: each layer is a box (``name (Class)``, then optionally its input and
output shapes, dtype, activation, trainable flag), placed on the row of its depth (the longest
path from an input) and joined to the layers it feeds by arrows. Text uses a built-in 5x7
bitmap font (ASCII), doubled; the PNG is written with ``zlib`` (8-bit RGB). A ``.dot`` target
gets the Graphviz source instead, for those who have Graphviz.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

__all__ = ["plot_model", "model_to_dot", "write_png"]

# The classic 5x7 font: 5 column bytes per character (bit 0 = top row), ASCII 32..126.
_FONT = bytes.fromhex(
    "0000000000" "00005f0000" "0007000700" "147f147f14" "242a7f2a12" "2313086462" "3649552250" "0005030000"
    "001c224100" "0041221c00" "2a1c7f1c2a" "08083e0808" "0050300000" "0808080808" "0060600000" "2010080402"
    "3e5149453e" "00427f4000" "4261514946" "2141454b31" "1814127f10" "2745454539" "3c4a494930" "0171090503"
    "3649494936" "064949291e" "0036360000" "0056360000" "0814224100" "1414141414" "0041221408" "0201510906"
    "324979413e" "7e1111117e" "7f49494936" "3e41414122" "7f4141221c" "7f49494941" "7f09090901" "3e4149497a"
    "7f0808087f" "00417f4100" "2040413f01" "7f08142241" "7f40404040" "7f020c027f" "7f0408107f" "3e4141413e"
    "7f09090906" "3e4151215e" "7f09192946" "4649494931" "01017f0101" "3f4040403f" "1f2040201f" "3f4038403f"
    "6314081463" "0708700807" "6151494543" "007f414100" "0204081020" "0041417f00" "0402010204" "4040404040"
    "0001020400" "2054545478" "7f48444438" "3844444420" "384444487f" "3854545418" "087e090102" "0c5252523e"
    "7f08040478" "00447d4000" "2040443d00" "7f10284400" "00417f4000" "7c04180478" "7c08040478" "3844444438"
    "7c14141408" "081414187c" "7c08040408" "4854545420" "043f444020" "3c4040207c" "1c2040201c" "3c4030403c"
    "4428102844" "0c5050503c" "4464544c44" "0008364100" "00007f0000" "0041360800" "0804081008")
_SCALE = 2
_CHAR_W, _CHAR_H = 6 * _SCALE, 8 * _SCALE
_PAD, _GAP_X, _GAP_Y, _LINE = 8, 24, 36, 2

_BG, _BOX, _BORDER, _TEXT, _EDGE = (255, 255, 255), (232, 240, 254), (60, 90, 160), (20, 20, 20), (90, 90, 90)


def _glyph_masks() -> np.ndarray:
    masks = np.zeros((95, 7, 5), dtype=bool)
    for i in range(95):
        for col in range(5):
            byte = _FONT[i * 5 + col]
            for row in range(7):
                masks[i, row, col] = bool(byte >> row & 1)
    return masks


_GLYPHS = _glyph_masks()


def _draw_text(canvas: np.ndarray, x: int, y: int, text: str, color) -> None:
    for k, ch in enumerate(text):
        code = ord(ch) - 32 if 32 <= ord(ch) < 127 else ord("?") - 32
        mask = np.kron(_GLYPHS[code], np.ones((_SCALE, _SCALE), dtype=bool))
        x0 = x + k * _CHAR_W
        region = canvas[y:y + mask.shape[0], x0:x0 + mask.shape[1]]
        region[mask[:region.shape[0], :region.shape[1]]] = color


def _draw_line(canvas: np.ndarray, p0, p1, color, width: int = _LINE) -> None:
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    xs = np.linspace(p0[0], p1[0], n).round().astype(int)
    ys = np.linspace(p0[1], p1[1], n).round().astype(int)
    h, w = canvas.shape[:2]
    for dx in range(width):
        for dy in range(width):
            cx, cy = np.clip(xs + dx - width // 2, 0, w - 1), np.clip(ys + dy - width // 2, 0, h - 1)
            canvas[cy, cx] = color


def _draw_arrow(canvas: np.ndarray, p0, p1, color) -> None:
    _draw_line(canvas, p0, p1, color)
    v = np.asarray(p1, dtype=float) - np.asarray(p0, dtype=float)
    length = float(np.hypot(*v)) or 1.0
    u = v / length
    normal = np.array([-u[1], u[0]])
    for side in (-1, 1):
        tip = np.asarray(p1) - 9 * u + side * 5 * normal
        _draw_line(canvas, tuple(tip), p1, color)


def write_png(path: str, pixels: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as a PNG file."""
    h, w, _ = pixels.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------- the model's graph
def _shape_text(shapes) -> str:
    def one(s):
        return "(" + ", ".join("None" if d is None else str(d) for d in s) + ("," if len(s) == 1 else "") + ")"

    if isinstance(shapes, tuple) and (not shapes or not isinstance(shapes[0], (tuple, list))):
        return one(shapes)
    if isinstance(shapes, dict):
        return "{" + ", ".join(f"{k}: {one(v)}" for k, v in shapes.items()) + "}"
    return "[" + ", ".join(one(s) for s in shapes) + "]"


def _layer_graph(model):
    """(layers in execution order, edges between them as (src index, dst index), depth of each)."""
    if not getattr(model, "_nodes", None):
        raise ValueError(f"model {model.name!r} is not built yet: plot_model needs its layer graph "
                         "(give it an input shape first)")
    layers: list = []
    index: dict[int, int] = {}
    edges: list[tuple[int, int]] = []
    order = {id(layer): k for k, layer in enumerate(getattr(model, "layers", []))}
    for node in sorted(model._nodes, key=lambda n: order.get(id(n.layer), -1)):
        if id(node.layer) not in index:
            index[id(node.layer)] = len(layers)
            layers.append(node.layer)
    for node in model._nodes:
        dst = index[id(node.layer)]
        for parent in node.parent_nodes:
            src = index.get(id(parent.layer))
            if src is not None and (src, dst) not in edges:
                edges.append((src, dst))
    depth = [0] * len(layers)
    for _ in range(len(layers)):
        changed = False
        for s, d in edges:
            if depth[d] < depth[s] + 1:
                depth[d] = depth[s] + 1
                changed = True
        if not changed:
            break
    return layers, edges, depth


def _labels(layer, show_shapes, show_dtype, show_layer_names, show_layer_activations, show_trainable) -> list[str]:
    kind = type(layer).__name__
    lines = [f"{layer.name} ({kind})" if show_layer_names else kind]
    node = layer._inbound_nodes[0] if layer._inbound_nodes else None
    if show_shapes and node is not None:
        ins = [t.shape for t in node.input_tensors]
        outs = [t.shape for t in node.output_tensors]
        if ins:
            lines.append("Input shape: " + _shape_text(ins[0] if len(ins) == 1 else ins))
        lines.append("Output shape: " + _shape_text(outs[0] if len(outs) == 1 else outs))
    if show_dtype and node is not None and node.output_tensors:
        lines.append(f"Output dtype: {node.output_tensors[0].dtype}")
    if show_layer_activations and isinstance(getattr(layer, "activation", None), str):
        lines.append(f"Activation: {layer.activation}")
    if show_trainable:
        lines.append(f"Trainable: {layer.trainable}")
    return lines


def model_to_dot(model, show_shapes=False, show_dtype=False, show_layer_names=True, rankdir="TB",
                 expand_nested=False, dpi=200, show_layer_activations=False, show_trainable=False, **kwargs) -> str:
    """The Graphviz (DOT) source of the model's layer graph."""
    layers, edges, _ = _layer_graph(model)
    lines = [f'digraph "{model.name}" {{', f"  rankdir={rankdir};", f"  dpi={dpi};", "  node [shape=record];"]
    for i, layer in enumerate(layers):
        label = "\\n".join(_labels(layer, show_shapes, show_dtype, show_layer_names, show_layer_activations,
                                   show_trainable)).replace('"', '\\"')
        lines.append(f'  n{i} [label="{label}"];')
    lines += [f"  n{s} -> n{d};" for s, d in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def plot_model(model, to_file="model.png", show_shapes=False, show_dtype=False, show_layer_names=True, rankdir="TB",
               expand_nested=False, dpi=200, show_layer_activations=False, show_trainable=False, **kwargs):
    """Draw ``model``'s layer graph into ``to_file`` (``.png``, or ``.dot`` for Graphviz source)."""
    to_file = os.fspath(to_file)
    ext = os.path.splitext(to_file)[1].lower()
    if ext == ".dot":
        with open(to_file, "w") as f:
            f.write(model_to_dot(model, show_shapes, show_dtype, show_layer_names, rankdir, expand_nested, dpi,
                                 show_layer_activations, show_trainable))
        return None
    if ext != ".png":
        raise ValueError(f"plot_model writes .png or .dot files, got {to_file!r}")
    if rankdir not in ("TB", "LR"):
        raise ValueError(f"rankdir must be 'TB' or 'LR', got {rankdir!r}")
    layers, edges, depth = _layer_graph(model)
    texts = [_labels(layer, show_shapes, show_dtype, show_layer_names, show_layer_activations, show_trainable)
             for layer in layers]
    sizes = [(max(len(t) for t in lines) * _CHAR_W + 2 * _PAD, len(lines) * (_CHAR_H + 2) + 2 * _PAD)
             for lines in texts]
    rows: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
        rows.setdefault(d, []).append(i)
    horizontal = rankdir == "LR"
    # Along the rank axis each row takes its largest box; across it the boxes of a row sit side by side.
    rank_extent = {d: max(sizes[i][0 if horizontal else 1] for i in idx) for d, idx in rows.items()}
    cross_extent = {d: sum(sizes[i][1 if horizontal else 0] for i in idx) + _GAP_X * (len(idx) - 1)
                    for d, idx in rows.items()}
    total_cross = max(cross_extent.values()) + 2 * _GAP_X
    total_rank = sum(rank_extent.values()) + _GAP_Y * (len(rows) + 1)
    width, height = (total_rank, total_cross) if horizontal else (total_cross, total_rank)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:] = _BG
    boxes: dict[int, tuple[int, int, int, int]] = {}
    pos = _GAP_Y
    for d in sorted(rows):
        cross = (total_cross - cross_extent[d]) // 2
        for i in rows[d]:
            w, h = sizes[i]
            if horizontal:
                x, y = pos, cross
                cross += h + _GAP_X
            else:
                x, y = cross, pos
                cross += w + _GAP_X
            boxes[i] = (x, y, w, h)
        pos += rank_extent[d] + _GAP_Y
    for s, d in edges:
        xs, ys, ws, hs = boxes[s]
        xd, yd, wd, hd = boxes[d]
        if horizontal:
            _draw_arrow(canvas, (xs + ws, ys + hs // 2), (xd - 1, yd + hd // 2), _EDGE)
        else:
            _draw_arrow(canvas, (xs + ws // 2, ys + hs), (xd + wd // 2, yd - 1), _EDGE)
    for i, (x, y, w, h) in boxes.items():
        canvas[y:y + h, x:x + w] = _BOX
        for edge in ((x, y, x + w - 1, y), (x, y + h - 1, x + w - 1, y + h - 1), (x, y, x, y + h - 1),
                     (x + w - 1, y, x + w - 1, y + h - 1)):
            _draw_line(canvas, edge[:2], edge[2:], _BORDER)
        for k, line in enumerate(texts[i]):
            _draw_text(canvas, x + _PAD, y + _PAD + k * (_CHAR_H + 2), line, _TEXT)
    write_png(to_file, canvas)
    return None
