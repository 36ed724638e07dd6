"""A stable, diffable text form of a graph.

One line per input, constant and op, in topological order; constants are summarised by
type (their data is not printed). Two graphs that print the same have the same structure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphc.ir.graph import Graph


def format_attr(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if value.isidentifier() else repr(value)
    return str(value)


def format_graph(graph: Graph, *, show_constants: bool = True) -> str:
    lines = [f"graph {graph.name} {{"]
    for name in graph.inputs:
        lines.append(f"  input %{name}: {graph.values[name].type}")
    if show_constants:
        for name, value in graph.values.items():
            if value.kind == "constant":
                flag = " trainable" if value.trainable else ""
                lines.append(f"  const %{name}: {value.type}{flag}")
    for op in graph.ops():
        outs = ", ".join(f"%{o}: {graph.values[o].type}" for o in op.outputs)
        args = ", ".join(f"%{v}" for v in op.inputs)
        attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(op.attrs.items()))
        attrs = f" {{{attrs}}}" if attrs else ""
        where = f"  # {op.layer}" if op.layer else ""
        lines.append(f"  {outs} = {op.type}({args}){attrs}{where}")
    lines.append("  return " + ", ".join(f"%{o}" for o in graph.outputs))
    lines.append("}")
    return "\n".join(lines)
