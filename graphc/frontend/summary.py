"""``Model.summary()``: the table Keras 3 prints, character for character.

Keras renders its summary with the ``rich`` library; graphc has no such dependency, so this
module re-implements the small part of that rendering a summary needs:

- the layout decision: a three-column table ("Layer (type)", "Output Shape", "Param #")
  for Sequential models and functional models that are a plain chain, and a wider one with
  a "Connected to" column otherwise (one node per depth and no layer called twice makes
  a chain, as in Keras);
- column widths: ``positions`` (fractions or absolute offsets) of ``line_length``
  (88 or 108 by default, 12 more with ``show_trainable``, at most the terminal width
  minus 4), then squeezed evenly, as rich does, so that borders and one space of padding
  on either side fit into ``line_length``;
- cells wrapped at word boundaries, words too long for their cell cut with an ellipsis,
  header cells aligned to the bottom, "Param #" right-aligned;
- the box-drawing borders (a heavy header, light lines between rows);
- the output as a console of the terminal's width would show it: the title and the
  parameter lines wrapped, table lines cropped to that width.

Colors and bold text, which Keras adds on an interactive terminal, are not reproduced.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# Text measuring and wrapping (one terminal cell per character, two for wide East Asian ones).


def cell_len(text: str) -> int:
    """Terminal cells ``text`` takes."""
    if text.isascii():
        return len(text)
    return sum(_char_cells(c) for c in text)


def _char_cells(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def _crop(text: str, width: int) -> str:
    """The longest prefix of ``text`` that fits in ``width`` cells."""
    if width <= 0:
        return ""
    if text.isascii():
        return text[:width]
    used = 0
    for i, c in enumerate(text):
        used += _char_cells(c)
        if used > width:
            return text[:i]
    return text


def _chop(text: str, width: int) -> list[str]:
    """``text`` cut into pieces of at most ``width`` cells."""
    pieces: list[str] = []
    while text:
        piece = _crop(text, width) or text[0]
        pieces.append(piece)
        text = text[len(piece):]
    return pieces


_WORD = re.compile(r"\s*\S+\s*")


def _break_offsets(text: str, width: int, fold: bool) -> list[int]:
    """Where to break ``text`` so that each piece fits ``width`` (a word keeps its trailing spaces).

    A word longer than a whole line starts a line of its own and is then either folded over
    several lines (``fold``) or left to be cut with an ellipsis.
    """
    breaks: list[int] = []
    offset = 0
    for match in _WORD.finditer(text):
        start, word = match.start(), match.group(0)
        length = cell_len(word.rstrip())
        if width - offset >= length:
            offset += cell_len(word)
        elif length > width:
            if fold:
                pieces = _chop(word, width)
                for i, piece in enumerate(pieces):
                    if start:
                        breaks.append(start)
                    if i == len(pieces) - 1:
                        offset = cell_len(piece)
                    else:
                        start += len(piece)
            else:
                if start:
                    breaks.append(start)
                offset = cell_len(word)
        elif offset and start:
            breaks.append(start)
            offset = cell_len(word)
    return breaks


def _split_at(text: str, offsets: list[int]) -> list[str]:
    bounds = [0, *offsets, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _fit(line: str, width: int) -> str:
    """Cut ``line`` to ``width`` cells, marking the cut with an ellipsis."""
    if cell_len(line) > width:
        return _crop(line, width - 1) + "…"
    return line


def wrap_cell(text: str, width: int, justify: str = "left") -> list[str]:
    """The lines of a table cell ``width`` cells wide, each padded to exactly that width."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        for line in _split_at(paragraph, _break_offsets(paragraph, width, fold=False)):
            if len(line) > width:  # drop trailing blanks that overflow the cell
                stripped = line.rstrip()
                line = line[:max(len(stripped), width)]
            if justify == "left":
                line = _fit(line, width)
                line += " " * max(0, width - cell_len(line))
            else:
                line = _fit(line.rstrip(), width)
                room = max(0, width - cell_len(line))
                left = room if justify == "right" else room // 2
                line = " " * left + line + " " * (room - left)
            lines.append(line)
    return lines


def wrap_text(text: str, width: int) -> list[str]:
    """Free text as a console of ``width`` cells prints it (long words folded)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        for line in _split_at(paragraph, _break_offsets(paragraph, width, fold=True)):
            if len(line) > width:
                stripped = line.rstrip()
                line = line[:max(len(stripped), width)]
            lines.append(_crop(line, width))
    return lines


# ---------------------------------------------------------------------------------------------
# The table.

_TOP, _HEAD, _HEAD_RULE, _ROW_RULE, _BODY, _BOTTOM = "┏━┳┓", "┃┃┃", "┡━╇┩", "├─┼┤", "│││", "└─┴┘"


def _reduce(total: int, ratios: list[int], maximums: list[int], values: list[int]) -> list[int]:
    """Take ``total`` away from ``values`` in proportion to ``ratios`` (each at most its maximum)."""
    ratios = [r if m else 0 for r, m in zip(ratios, maximums)]
    total_ratio = sum(ratios)
    if not total_ratio:
        return list(values)
    remaining = total
    out = []
    for ratio, maximum, value in zip(ratios, maximums, values):
        if ratio and total_ratio > 0:
            taken = min(maximum, round(ratio * remaining / total_ratio))
            out.append(value - taken)
            remaining -= taken
            total_ratio -= ratio
        else:
            out.append(value)
    return out


def _distribute(total: int, ratios: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``ratios``, rounding up as it goes."""
    total_ratio = sum(ratios)
    remaining = total
    out = []
    for ratio in ratios:
        share = -(-ratio * remaining // total_ratio) if total_ratio > 0 else remaining
        out.append(share)
        total_ratio -= ratio
        remaining -= share
    return out


def column_widths(requested: Sequence[int], table_width: int) -> list[int]:
    """Each column's width in cells, padding included, borders excluded.

    Columns ask for ``requested`` cells of text plus one space either side; when that does
    not fit ``table_width`` (it usually does not: the requests already add up to it) every
    column gives up an equal share, and any room left over is shared out in proportion.
    """
    n = len(requested)
    room = table_width - (n + 1)
    if room < 1:
        return [0] * n
    widths = [min(w + 2, room) for w in requested]
    total = sum(widths)
    if total > room:
        widths = _reduce(total - room, [1] * n, widths, widths)
        total = sum(widths)
        widths = [max(0, min(w + 2, width)) if width >= 1 else 0 for w, width in zip(requested, widths)]
    if total < room:
        widths = [w + extra for w, extra in zip(widths, _distribute(room - total, widths))]
    return widths


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int],
                 justify: Sequence[str]) -> list[str]:
    """The lines of a boxed table with a rule between every two rows."""

    def render_row(cells: Sequence[str], edges: str, bottom_align: bool) -> list[str]:
        wrapped = [wrap_cell(text, max(0, w - 2), j) for text, w, j in zip(cells, widths, justify)]
        height = max(len(c) for c in wrapped)
        blank = [" " * max(0, w - 2) for w in widths]
        for i, c in enumerate(wrapped):
            pad = [blank[i]] * (height - len(c))
            wrapped[i] = pad + c if bottom_align else c + pad
        lines = []
        for k in range(height):
            parts = [(" " + wrapped[i][k] + " ")[:max(w, 0)] if w >= 2 else " " * w
                     for i, w in enumerate(widths)]
            lines.append(edges[0] + edges[1].join(parts) + edges[2])
        return lines

    def rule(chars: str) -> str:
        return chars[0] + chars[2].join(chars[1] * w for w in widths) + chars[3]

    out = [rule(_TOP)]
    out += render_row(header, _HEAD, bottom_align=True)
    out.append(rule(_HEAD_RULE))
    for i, row in enumerate(rows):
        out += render_row(row, _BODY, bottom_align=False)
        if i < len(rows) - 1:
            out.append(rule(_ROW_RULE))
    out.append(rule(_BOTTOM))
    return out


# ---------------------------------------------------------------------------------------------
# Terminal widths.


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size`` reports (Keras sizes its default table from it)."""
    return shutil.get_terminal_size().columns


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def console_width() -> int:
    """The width a console printing to this process's terminal has (COLUMNS wins; else 80)."""
    width = None
    try:
        shell = sys.modules["builtins"].__dict__.get("get_ipython")
        if shell is not None and type(shell()).__name__ == "ZMQInteractiveShell":
            cols = os.environ.get("JUPYTER_COLUMNS", "")
            width = int(cols) if cols.isdigit() else 115
    except Exception:  # noqa: BLE001 (any failure just means: not a notebook)
        width = None
    if width is None and os.environ.get("TERM", "").lower() in ("dumb", "unknown") and _stdout_is_terminal():
        width = 80
    if width is None:
        for fd in (0, 1, 2):
            try:
                width = os.get_terminal_size(fd).columns
                break
            except (AttributeError, ValueError, OSError):
                continue
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit():
            width = int(columns)
    return width or 80


# ---------------------------------------------------------------------------------------------
# The model's side: layout, rows, parameter counts.


def _class_name(layer) -> str:
    from graphc.frontend.model import Model

    return "Functional" if type(layer) is Model else type(layer).__name__


def _nodes_by_depth(model) -> dict[int, list]:
    """The model's layer calls grouped by depth (0 = outputs), as Keras's ``map_graph`` groups them."""
    from graphc.frontend.model import _build_map

    ordered, _ = _build_map(model.outputs, model.inputs)
    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    nodes = {id(n): n for n in ordered}
    for node in reversed(ordered):
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = depth
        node_depth[id(node)] = depth
        for parent in node.parent_nodes:
            nodes.setdefault(id(parent), parent)
            node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
    for t in model.inputs:
        layer, node_index, _ = t._keras_history
        if id(layer) not in layer_depth:
            node = layer._inbound_nodes[node_index]
            nodes[id(node)] = node
            node_depth[id(node)] = 0
    by_depth: dict[int, list] = {}
    for nid, depth in node_depth.items():
        by_depth.setdefault(depth, []).append(nodes[nid])
    return by_depth


def _is_sequential_like(by_depth: dict[int, list], layers) -> bool:
    """One call per depth, no call with several inputs, no layer called twice."""
    nodes = []
    for group in by_depth.values():
        if len(group) > 1 or (len(group) == 1 and len(group[0].input_tensors) > 1):
            return False
        nodes += group
    ids = {id(n) for n in nodes}
    for layer in layers:
        if sum(1 for n in layer._inbound_nodes if id(n) in ids) > 1:
            return False
    return True


def _format_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def format_layer_shape(layer) -> str:
    """The output shape of the layer's last call: ``(None, 14, 14, 448)``, or a list of them.

    A layer never called but built by hand shows the shape it would give for the shape it
    was built with; otherwise ``?``.
    """
    if layer._inbound_nodes:
        shapes = [_format_shape(t.shape) for t in layer._inbound_nodes[-1].output_tensors]
    else:
        build_shape = getattr(layer, "_build_input_shape", None)
        if not layer.built or build_shape is None:
            return "?"
        try:
            out = layer.compute_output_shape(build_shape)
        except (NotImplementedError, ValueError, TypeError):
            return "?"
        shapes = [_format_shape(s) for s in (out if out and isinstance(out[0], tuple) else [out])]
    if len(shapes) == 1:
        return shapes[0]
    return "[" + ", ".join(shapes) + "]"


def _connections(layer, relevant: set[int]) -> str:
    parts = []
    for node in layer._inbound_nodes:
        if relevant and id(node) not in relevant:
            continue
        for t in node.input_tensors:
            source, node_index, tensor_index = t._keras_history
            parts.append(f"{source.name}[{node_index}][{tensor_index}]")
    return ", ".join(parts) or "-"


# Layers Keras marks built as soon as they are constructed (its ``_build_at_init``): an
# unbuilt Sequential lists them with 0 parameters rather than "0 (unbuilt)".
_BUILT_AT_INIT = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Dropout", "AlphaDropout", "GaussianDropout",
    "GaussianNoise", "ActivityRegularization", "Reshape", "Identity", "Masking", "UnitNormalization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D",
}


def _params(layer) -> str:
    built = getattr(layer, "built", True) or any(k.__name__ in _BUILT_AT_INIT for k in type(layer).__mro__)
    if not built:
        return "0 (unbuilt)"
    return f"{count_params(layer.weights):,}"


def count_params(weights) -> int:
    return int(sum(int(np.prod(w.shape)) for w in weights))


def weight_memory_size(weights) -> float:
    """Bytes the weights take (each distinct weight once; booleans count one bit)."""
    unique = {id(w): w for w in weights}.values()
    bits = 0
    for w in unique:
        dtype = np.dtype(w.dtype)
        bits += int(np.prod(w.shape)) * (1 if dtype == np.bool_ else dtype.itemsize * 8)
    return bits / 8


def readable_memory_size(size: float) -> str:
    """``215.04 KB``: bytes in the largest unit (of 1024) that keeps the number >= 1."""
    units = ["B", "KB", "MB", "GB", "TB", "PB"]
    for unit in units:
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} {units[-1]}"


def layer_index_bounds(layers, layer_range=None) -> tuple[int, int]:
    """``[first, last + 1)`` of the layers whose names match ``layer_range = (start, end)`` (regexes)."""
    if layer_range is None:
        return 0, len(layers)
    if len(layer_range) != 2:
        raise ValueError(f"layer_range must be a list or tuple of length 2, got {layer_range!r}")
    if not all(isinstance(s, str) for s in layer_range):
        raise ValueError(f"layer_range should contain layer names (strings) only, got {layer_range!r}")
    lower = [i for i, lay in enumerate(layers) if re.match(layer_range[0], lay.name)]
    upper = [i for i, lay in enumerate(layers) if re.match(layer_range[1], lay.name)]
    if not lower or not upper:
        raise ValueError(f"layer_range {list(layer_range)} matches no layer name of the model; layers are "
                         f"{[lay.name for lay in layers]}")
    if min(lower) > max(upper):
        return min(upper), max(lower) + 1
    return min(lower), max(upper) + 1


def _optimizer_variables(model) -> list:
    """The optimizer's state once it exists (Keras counts it from the first training step on)."""
    optimizer = getattr(model, "optimizer", None)
    if not getattr(model, "compiled", False) or optimizer is None:
        return []
    built = getattr(optimizer, "built", None)
    if built is None:  # no flag: built once it has stepped or holds slots
        built = getattr(optimizer, "iterations", 0) > 0 or bool(getattr(optimizer, "slots", None))
    return list(getattr(optimizer, "variables", [])) if built else []


def format_summary(model, line_length: int | None = None, positions: Sequence[float] | None = None,
                   expand_nested: bool = False, show_trainable: bool = False,
                   layer_range: Sequence[str] | None = None, width: int | None = None) -> str:
    """The summary text (every line ending in a newline) for a console ``width`` cells wide."""
    from graphc.frontend.sequential import Sequential

    if isinstance(model, Sequential):
        layers = model.layers
        sequential_like, relevant = True, set()
    else:
        layers = model.layers
        by_depth = _nodes_by_depth(model)
        sequential_like = _is_sequential_like(by_depth, layers)
        relevant = {id(n) for group in by_depth.values() for n in group}

    if sequential_like:
        default_length = 88
        positions = list(positions or [0.45, 0.80, 1.0])
        header = ["Layer (type)", "Output Shape", "Param #"]
        justify = ["left", "left", "right"]
    else:
        default_length = 108
        positions = list(positions or [0.3, 0.56, 0.74, 1.0])
        header = ["Layer (type)", "Output Shape", "Param #", "Connected to"]
        justify = ["left", "left", "right", "left"]
    if show_trainable:
        default_length += 12
        positions = [p * 0.90 for p in positions] + [1.0]
        header.append("Trainable")
        justify.append("center")
    if len(positions) < len(header):
        raise ValueError(f"positions must give {len(header)} column ends (one per column: "
                         f"{', '.join(header)}), got {len(positions)}: {positions}")

    default_length = min(default_length, _terminal_columns() - 4)
    line_length = line_length or default_length
    requested, current = [], 0
    for pos in positions:
        w = int(pos * line_length) - current
        if w < 4:
            raise ValueError("Insufficient console width to print summary.")
        requested.append(w)
        current += w

    def fields(layer, prefix: str) -> list[str]:
        row = [f"{prefix}{layer.name} ({_class_name(layer)})", format_layer_shape(layer), _params(layer)]
        if not sequential_like:
            row.append(_connections(layer, relevant))
        if show_trainable:
            row.append(("Y" if layer.trainable else "N") if layer.weights else "-")
        return row

    def rows_of(layer, level: int = 0) -> list[list[str]]:
        rows = [fields(layer, "   " * level + "└ " if level else "")]
        nested = getattr(layer, "layers", None) if expand_nested else None
        if nested:
            for inner in nested:
                rows += rows_of(inner, level + 1)
        return rows

    start, stop = layer_index_bounds(layers, layer_range)
    rows: list[list[str]] = []
    for layer in layers[start:stop]:
        rows += rows_of(layer)

    trainable = model.trainable_weights
    non_trainable = model.non_trainable_weights
    optimizer_vars = _optimizer_variables(model)
    t_count, t_size = count_params(trainable), weight_memory_size(trainable)
    n_count, n_size = count_params(non_trainable), weight_memory_size(non_trainable)
    o_count, o_size = count_params(optimizer_vars), weight_memory_size(optimizer_vars)

    width = width or console_width()
    widths = column_widths(requested[:len(header)], line_length)
    lines = wrap_text(f'Model: "{model.name}"', width)
    lines += [_crop(line, width) for line in render_table(header, rows, widths, justify)]
    footer = [f" Total params: {t_count + n_count + o_count:,} ({readable_memory_size(t_size + n_size + o_size)})",
              f" Trainable params: {t_count:,} ({readable_memory_size(t_size)})",
              f" Non-trainable params: {n_count:,} ({readable_memory_size(n_size)})"]
    if optimizer_vars:
        footer.append(f" Optimizer params: {o_count:,} ({readable_memory_size(o_size)})")
    for text in footer:
        lines += wrap_text(text, width)
    return "".join(line + "\n" for line in lines)


def print_summary(model, line_length: int | None = None, positions: Sequence[float] | None = None,
                  print_fn: Callable[[str], Any] | None = None, expand_nested: bool = False,
                  show_trainable: bool = False, layer_range: Sequence[str] | None = None) -> None:
    """Print the summary (``print_fn``, if given, gets the whole text in one call, as in Keras)."""
    text = format_summary(model, line_length=line_length, positions=positions, expand_nested=expand_nested,
                          show_trainable=show_trainable, layer_range=layer_range)
    if print_fn is not None:
        print_fn(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
