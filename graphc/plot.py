"""``plot_model`` and ``model_to_dot``: a drawing of a model's layer graph, as Keras draws it.

Keras draws with pydot and Graphviz's ``dot`` program, and so does graphc when both are installed
(``pip install pydot`` and Graphviz, e.g. ``apt-get install graphviz``): the extension of
``to_file`` picks Graphviz's output format (png, svg, pdf, dot...). Each layer is a box (``name
(Class)``, then optionally its activation, its input and output shapes, its output dtype, whether it
trains); ``expand_nested`` draws the layers of nested models inside a dashed frame named after the
model. Without pydot or Graphviz, a ``.png`` is drawn by graphc itself (with a warning saying what is
missing): boxes on the row of their depth (the longest path from an input), arrows between them,
text in a built-in 5x7 bitmap font, the image written with ``zlib``; nested models' layers are then
named ``model/layer``. Other formats need Graphviz; ``.dot`` source needs only pydot.
"""

from __future__ import annotations

import html
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np

__all__ = ["plot_model", "model_to_dot"]

RANKDIRS = ("TB", "LR", "BT", "RL")
SPLINES = ("ortho", "curved", "polyline", "spline", "line", "none", "true", "false", "compound")
_GRAPHVIZ_HINT = "install Graphviz: apt-get install graphviz, brew install graphviz or https://graphviz.org/download/"


# ---------------------------------------------------------------------------- the model's layer graph
@dataclass
class _Box:
    """One layer as drawn: its DOT id, title line, optional activation line, and detail cells."""

    key: str
    title: str
    activation: str | None
    cells: list[str]
    cluster: tuple[str, ...]  # the nested models drawn around it, outermost first

    def lines(self) -> list[str]:
        prefix = "".join(f"{name}/" for name in self.cluster)
        return ([prefix + self.title] + ([f"Activation: {self.activation}"] if self.activation else [])
                + self.cells)


@dataclass
class _LayerGraph:
    name: str
    boxes: list[_Box] = field(default_factory=list)
    edges: list[tuple[int, int]] = field(default_factory=list)


def _activation_name(activation) -> str:
    if isinstance(activation, str):
        return activation
    return getattr(activation, "name", None) or getattr(activation, "__name__", None) or str(activation)


def _structure_text(values) -> str:
    return str(values[0]) if len(values) == 1 else str(values)


def _box(layer, key: str, cluster: tuple[str, ...], show_shapes: bool, show_dtype: bool, show_layer_names: bool,
         show_layer_activations: bool, show_trainable: bool) -> _Box:
    kind = type(layer).__name__
    title = f"{layer.name} ({kind})" if show_layer_names else kind
    activation = getattr(layer, "activation", None)
    activation = _activation_name(activation) if show_layer_activations and activation is not None else None
    node = layer._inbound_nodes[0] if getattr(layer, "_inbound_nodes", None) else None
    cells = []
    if show_shapes:
        if kind != "InputLayer":
            ins = [t.shape for t in node.input_tensors] if node is not None and node.input_tensors else None
            cells.append("Input shape: " + (_structure_text(ins) if ins else "?"))
        outs = [t.shape for t in node.output_tensors] if node is not None and node.output_tensors else None
        cells.append("Output shape: " + (_structure_text(outs) if outs else "?"))
    if show_dtype:
        dtypes = [t.dtype for t in node.output_tensors] if node is not None and node.output_tensors else None
        cells.append("Output dtype: " + (_structure_text(dtypes) if dtypes else "?"))
    if show_trainable and layer.weights:
        cells.append("Trainable" if layer.trainable else "Non-trainable")
    return _Box(key, title, activation, cells, cluster)


def _layer_graph(model, *, expand_nested: bool = False, **label_options) -> _LayerGraph:
    """The boxes and arrows of ``model``: layers of Functional and Sequential models, Keras's edges."""
    from graphc.frontend.model import Model
    from graphc.frontend.sequential import Sequential

    if not getattr(model, "built", False):
        raise ValueError(f"model {model.name!r} is not built yet: plot_model needs its layer graph "
                         "(give it an input shape or call it on data first)")

    def structured(layer) -> bool:
        return isinstance(layer, Sequential) or (isinstance(layer, Model) and bool(getattr(layer, "_nodes", None)))

    def expands(layer) -> bool:
        return expand_nested and structured(layer)

    def entry(layer, input_index: int):
        """The box an arrow into ``layer``'s ``input_index``-th input points at (inside expanded models)."""
        while expands(layer):
            if isinstance(layer, Sequential):
                layer, input_index = layer.layers[0], 0
            else:
                layer = layer.inputs[input_index]._keras_history[0]
        return layer

    def exit_(layer, tensor_index: int):
        """The box an arrow from ``layer``'s ``tensor_index``-th output leaves (inside expanded models)."""
        while expands(layer):
            if isinstance(layer, Sequential):
                layer, tensor_index = layer.layers[-1], 0
            else:
                history = layer.outputs[tensor_index]._keras_history
                layer, tensor_index = history[0], history[2]
        return layer

    graph = _LayerGraph(model.name)
    index: dict[int, int] = {}

    def add_edge(src, dst) -> None:
        edge = (index[id(src)], index[id(dst)])
        if edge not in graph.edges:
            graph.edges.append(edge)

    def visit(m, cluster: tuple[str, ...]) -> None:
        layers = list(m.layers)
        for layer in layers:
            if expands(layer):
                visit(layer, cluster + (layer.name,))
            elif id(layer) not in index:
                index[id(layer)] = len(graph.boxes)
                graph.boxes.append(_box(layer, "/".join(cluster + (layer.name,)), cluster, **label_options))
        if isinstance(m, Sequential):
            for a, b in zip(layers, layers[1:]):
                add_edge(exit_(a, 0), entry(b, 0))
            return
        members = {id(layer) for layer in layers}
        for node in m._nodes:
            for i, tensor in enumerate(node.input_tensors):
                history = tensor._keras_history
                if history is None or id(history[0]) not in members:
                    continue
                add_edge(exit_(history[0], history[2]), entry(node.layer, i))

    if structured(model):
        visit(model, ())
    else:  # a subclassed model: one box, as Keras draws it
        graph.boxes.append(_box(model, model.name, (), **label_options))
    return graph


def _check_options(rankdir, dpi, splines, kwargs: dict) -> None:
    if kwargs.pop("layer_range", None) is not None:
        raise ValueError("plot_model: layer_range is no longer supported (Keras 3 dropped it)")
    if kwargs:
        raise ValueError(f"plot_model: unrecognized keyword arguments: {sorted(kwargs)}")
    if rankdir not in RANKDIRS:
        raise ValueError(f"plot_model: rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    if splines not in SPLINES:
        raise ValueError(f"plot_model: splines must be one of {SPLINES}, got {splines!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or dpi <= 0:
        raise ValueError(f"plot_model: dpi must be a positive number, got {dpi!r}")


# ---------------------------------------------------------------------------- pydot and Graphviz
def _html_label(box: _Box) -> str:
    """A Graphviz HTML-like label: the title across the top, the activation, then one cell per detail."""
    span = max(1, len(box.cells))
    rows = [f'<tr><td colspan="{span}" bgcolor="#3c5aa0"><font color="white" point-size="16">'
            f'{html.escape(box.title)}</font></td></tr>']
    if box.activation:
        rows.append(f'<tr><td colspan="{span}">Activation: {html.escape(box.activation)}</td></tr>')
    if box.cells:
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in box.cells) + "</tr>")
    return ('<<table border="0" cellborder="1" cellspacing="0" cellpadding="8" bgcolor="#e8f0fe">'
            + "".join(rows) + "</table>>")


def _dot_id(name: str) -> str:
    """A graph or cluster name Graphviz reads unquoted (older pydot releases do not quote them)."""
    return re.sub(r"\W", "_", name)


def _pydot_graph(graph: _LayerGraph, rankdir: str, dpi, splines: str, subgraph: bool):
    import pydot

    if subgraph:
        root = pydot.Cluster(_dot_id(graph.name), label=graph.name, style="dashed", labeljust="l", fontname="Helvetica")
    else:
        root = pydot.Dot(graph_name=_dot_id(graph.name), graph_type="digraph", rankdir=rankdir, dpi=dpi,
                         splines=splines, concentrate=True, fontname="Helvetica")
        root.set_node_defaults(shape="plain", fontname="Helvetica")
    clusters = {(): root}
    for box in graph.boxes:
        for depth in range(1, len(box.cluster) + 1):
            path = box.cluster[:depth]
            if path not in clusters:
                cluster = pydot.Cluster(_dot_id("/".join(path)), label=path[-1], style="dashed", labeljust="l",
                                        fontname="Helvetica")
                clusters[path[:-1]].add_subgraph(cluster)
                clusters[path] = cluster
        clusters[box.cluster].add_node(pydot.Node(box.key, label=_html_label(box)))
    for s, d in graph.edges:
        root.add_edge(pydot.Edge(graph.boxes[s].key, graph.boxes[d].key, penwidth=2))
    return root


def _missing_graphviz() -> str | None:
    """Why Graphviz cannot draw here (pydot absent, or no working ``dot`` program), or None."""
    try:
        import pydot
    except ImportError:
        return "pydot is not installed (pip install pydot)"
    try:
        pydot.Dot().create(format="dot")
    except (OSError, pydot.PydotException):
        return f"Graphviz's dot program was not found ({_GRAPHVIZ_HINT})"
    return None


def model_to_dot(model, show_shapes=False, show_dtype=False, show_layer_names=True, rankdir="TB",
                 expand_nested=False, dpi=200, subgraph=False, show_layer_activations=False, show_trainable=False,
                 splines="ortho", **kwargs):
    """The model's layer graph as a ``pydot.Dot`` (a ``pydot.Cluster`` with ``subgraph=True``), as Keras's."""
    _check_options(rankdir, dpi, splines, kwargs)
    try:
        import pydot  # noqa: F401
    except ImportError as e:
        raise ImportError("model_to_dot builds a pydot graph: pip install pydot") from e
    graph = _layer_graph(model, expand_nested=expand_nested, show_shapes=show_shapes, show_dtype=show_dtype,
                         show_layer_names=show_layer_names, show_layer_activations=show_layer_activations,
                         show_trainable=show_trainable)
    return _pydot_graph(graph, rankdir, dpi, splines, subgraph)


def plot_model(model, to_file="model.png", show_shapes=False, show_dtype=False, show_layer_names=False, rankdir="TB",
               expand_nested=False, dpi=200, show_layer_activations=False, show_trainable=False, splines="ortho",
               **kwargs) -> None:
    """Draw ``model``'s layer graph into ``to_file``; its extension picks the format (``.png`` without one)."""
    _check_options(rankdir, dpi, splines, kwargs)
    graph = _layer_graph(model, expand_nested=expand_nested, show_shapes=show_shapes, show_dtype=show_dtype,
                         show_layer_names=show_layer_names, show_layer_activations=show_layer_activations,
                         show_trainable=show_trainable)
    to_file = os.fspath(to_file)
    fmt = os.path.splitext(to_file)[1][1:].lower() or "png"
    missing = _missing_graphviz()
    if missing is None:
        _pydot_graph(graph, rankdir, dpi, splines, subgraph=False).write(to_file, format=fmt)
    elif fmt == "dot" and not missing.startswith("pydot"):
        _pydot_graph(graph, rankdir, dpi, splines, subgraph=False).write(to_file, format="raw")
    elif fmt == "png":
        warnings.warn(f"plot_model: {missing}; drawing {to_file} with graphc's built-in renderer", stacklevel=2)
        _draw_png(to_file, graph, rankdir, dpi, splines)
    else:
        raise ImportError(f"plot_model: writing {to_file!r} needs pydot and Graphviz, and {missing}; without them "
                          "plot_model draws .png files only")


# ---------------------------------------------------------------------------- the built-in PNG renderer
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

_PAD, _GAP_X, _GAP_Y = 4, 12, 18  # in font pixels (multiplied by the scale)
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


class _Canvas:
    """An RGB image with the few drawing operations the layer graph needs, at an integer scale."""

    def __init__(self, width: int, height: int, scale: int):
        self.pixels = np.empty((height, width, 3), dtype=np.uint8)
        self.pixels[:] = _BG
        self.scale = scale

    def text(self, x: int, y: int, text: str, color) -> None:
        s = self.scale
        for k, ch in enumerate(text):
            code = ord(ch) - 32 if 32 <= ord(ch) < 127 else ord("?") - 32
            mask = np.kron(_GLYPHS[code], np.ones((s, s), dtype=bool))
            x0 = x + k * 6 * s
            region = self.pixels[y:y + mask.shape[0], x0:x0 + mask.shape[1]]
            region[mask[:region.shape[0], :region.shape[1]]] = color

    def line(self, p0, p1, color) -> None:
        width = self.scale
        n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
        xs = np.linspace(p0[0], p1[0], n).round().astype(int)
        ys = np.linspace(p0[1], p1[1], n).round().astype(int)
        h, w = self.pixels.shape[:2]
        for dx in range(width):
            for dy in range(width):
                cx = np.clip(xs + dx - width // 2, 0, w - 1)
                cy = np.clip(ys + dy - width // 2, 0, h - 1)
                self.pixels[cy, cx] = color

    def arrow(self, points: list, color) -> None:
        for p0, p1 in zip(points, points[1:]):
            self.line(p0, p1, color)
        v = np.asarray(points[-1], dtype=float) - np.asarray(points[-2], dtype=float)
        u = v / (float(np.hypot(*v)) or 1.0)
        normal = np.array([-u[1], u[0]])
        for side in (-1, 1):
            tip = np.asarray(points[-1]) - 5 * self.scale * u + side * 3 * self.scale * normal
            self.line(tuple(tip), points[-1], color)

    def box(self, x: int, y: int, w: int, h: int) -> None:
        self.pixels[y:y + h, x:x + w] = _BOX
        for p0, p1 in (((x, y), (x + w - 1, y)), ((x, y + h - 1), (x + w - 1, y + h - 1)),
                       ((x, y), (x, y + h - 1)), ((x + w - 1, y), (x + w - 1, y + h - 1))):
            self.line(p0, p1, _BORDER)


def _write_png(path: str, pixels: np.ndarray, dpi) -> None:
    """An (H, W, 3) uint8 image as an 8-bit RGB PNG, with its resolution (pHYs) set to ``dpi``."""
    h, w, _ = pixels.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    per_metre = round(dpi / 0.0254)
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)


def _draw_png(path: str, graph: _LayerGraph, rankdir: str, dpi, splines: str) -> None:
    """Lay the boxes out by depth along ``rankdir`` and draw them, the arrows straight or (ortho) at right angles.

    ``dpi`` scales the drawing (2 font pixels per glyph pixel at Keras's default of 200) and is recorded in
    the file.
    """
    scale = max(1, round(dpi / 100))
    char_w, line_h = 6 * scale, 9 * scale
    pad, gap_x, gap_y = _PAD * scale, _GAP_X * scale, _GAP_Y * scale
    texts = [box.lines() for box in graph.boxes]
    sizes = [(max(len(t) for t in lines) * char_w + 2 * pad, len(lines) * line_h + 2 * pad) for lines in texts]
    depth = [0] * len(graph.boxes)
    for _ in range(len(graph.boxes)):
        changed = False
        for s, d in graph.edges:
            if depth[d] < depth[s] + 1:
                depth[d], changed = depth[s] + 1, True
        if not changed:
            break
    rows: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
        rows.setdefault(d, []).append(i)
    horizontal = rankdir in ("LR", "RL")
    rank_axis, cross_axis = (0, 1) if horizontal else (1, 0)
    # Along the rank axis each row takes its largest box; across it the boxes of a row sit side by side.
    rank_extent = {d: max(sizes[i][rank_axis] for i in idx) for d, idx in rows.items()}
    cross_extent = {d: sum(sizes[i][cross_axis] for i in idx) + gap_x * (len(idx) - 1) for d, idx in rows.items()}
    total_cross = max(cross_extent.values()) + 2 * gap_x
    total_rank = sum(rank_extent.values()) + gap_y * (len(rows) + 1)
    canvas = _Canvas(*((total_rank, total_cross) if horizontal else (total_cross, total_rank)), scale)
    boxes: dict[int, tuple[int, int, int, int]] = {}
    pos = gap_y
    for d in sorted(rows, reverse=rankdir in ("BT", "RL")):
        cross = (total_cross - cross_extent[d]) // 2
        for i in rows[d]:
            w, h = sizes[i]
            boxes[i] = (pos, cross, w, h) if horizontal else (cross, pos, w, h)
            cross += (h if horizontal else w) + gap_x
        pos += rank_extent[d] + gap_y

    def anchors(s: int, d: int):
        (xs, ys, ws, hs), (xd, yd, wd, hd) = boxes[s], boxes[d]
        return {"TB": ((xs + ws // 2, ys + hs), (xd + wd // 2, yd - 1)),
                "BT": ((xs + ws // 2, ys - 1), (xd + wd // 2, yd + hd)),
                "LR": ((xs + ws, ys + hs // 2), (xd - 1, yd + hd // 2)),
                "RL": ((xs - 1, ys + hs // 2), (xd + wd, yd + hd // 2))}[rankdir]

    for s, d in graph.edges:
        p0, p1 = anchors(s, d)
        points = [p0, p1]
        if splines == "ortho" and p0[cross_axis] != p1[cross_axis]:
            # along the rank axis, across in the gap just before the target, then into it
            step = (gap_y // 2) * (1 if p1[rank_axis] > p0[rank_axis] else -1)
            turn = p1[rank_axis] - step
            bend0, bend1 = ((turn, p0[1]), (turn, p1[1])) if horizontal else ((p0[0], turn), (p1[0], turn))
            points = [p0, bend0, bend1, p1]
        canvas.arrow(points, _EDGE)
    for i, (x, y, w, h) in boxes.items():
        canvas.box(x, y, w, h)
        for k, line in enumerate(texts[i]):
            canvas.text(x + pad, y + pad + k * line_h, line, _TEXT)
    _write_png(path, canvas.pixels, dpi)
