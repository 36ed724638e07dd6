"""Lowering a whole Model into an IR graph (the front end's side of the boundary).

Inputs keep their Keras names; ``None`` dims become named free dimensions (``batch`` for
the leading one, ``<input>_len`` for a sequence axis, ``<input>_d<k>`` otherwise);
outputs are renamed after the layers (or dict keys) that produce them. Outputs that carry a
Keras mask have it recorded in ``graph.meta["output_masks"]`` (output name -> mask value, as
lowered): training weights their losses and metrics by it, as Keras does.
"""

from __future__ import annotations

import re

from graphc.frontend import nest
from graphc.frontend.lowering import LowerContext
from graphc.frontend.model import Model
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType


def _ident(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    return s if s and not s[0].isdigit() else f"_{s}"


def free_dim_name(input_name: str, axis: int, rank: int) -> str:
    if axis == 0:
        return "batch"
    base = _ident(input_name)
    if axis == 1 and rank in (2, 3):
        return f"{base}_len"
    return f"{base}_d{axis}"


def lower_model(model: Model, *, training: bool = False, losses: bool = False) -> tuple[Graph, dict]:
    """The IR of ``model`` and a map from constant names to the model's Variables.

    With ``losses``, ``graph.meta["losses"]`` lists the layers' activity penalties (float32
    scalars, in call order): the training and evaluation steps add them to the loss."""
    if not model.built or not getattr(model, "_nodes", None):
        raise ValueError(f"model {model.name!r} is not built: it has no input shape yet")
    graph = Graph(model.name)
    if losses:
        graph.meta["losses"] = []
    ctx = LowerContext(graph, None, training=training)
    values = []
    for t in model.inputs:
        name = t._keras_history[0].name
        shape = tuple(free_dim_name(name, i, len(t.shape)) if d is None else d for i, d in enumerate(t.shape))
        values.append(graph.add_input(name, TensorType(t.dtype, shape)))
    struct_in = nest.pack_like(model._inputs_struct, values)
    out, out_masks = model._lower_call(ctx, struct_in, {}, None)
    flat = nest.flatten(out)
    masks = [m for _, m in zip(flat, nest.flatten(out_masks) + [None] * len(flat))]
    names = model.output_names
    final = []
    for i, name in enumerate(names):
        v = flat[i]
        value = graph.values[v]
        if value.kind != "op" or v in final:
            v = ctx.for_layer(name).emit("identity", v)
        if v != name and graph.values.get(name, value).kind != "input":
            if name in graph.values:  # an internal value (op ids are internal) holds the name: move it
                moved = graph.unique_name(f"{name}_value")
                _rename(graph, name, moved)
                masks = [moved if m == name else m for m in masks]
                flat = [moved if f == name else f for f in flat]  # a later output may be the moved value
            _rename(graph, v, name)
            masks = [name if m == v else m for m in masks]
            flat = [name if f == v else f for f in flat]
            v = name
        final.append(v)
    graph.set_outputs(final)
    graph.meta.update({
        "input_names": [t._keras_history[0].name for t in model.inputs],
        "output_names": names,
        "output_structure": _structure_kind(model._outputs_struct),
        "input_structure": _structure_kind(model._inputs_struct),
        "training": training,
    })
    if any(m is not None for m in masks):
        graph.meta["output_masks"] = {n: m for n, m in zip(names, masks) if m is not None}
    params = {name: var for var, name in ctx.params.values()}
    return graph, params


def _rename(graph: Graph, old: str, new: str) -> None:
    """Rename a value and the lowering's records of it: the moving-average updates and the activity
    losses name values too, and must keep naming the same ones when an output takes a name."""
    graph.rename_value(old, new)
    if "state_updates" in graph.meta:
        graph.meta["state_updates"] = {c: new if v == old else v for c, v in graph.meta["state_updates"].items()}
    if "losses" in graph.meta:
        graph.meta["losses"] = [new if v == old else v for v in graph.meta["losses"]]


def _structure_kind(struct) -> str:
    if isinstance(struct, dict):
        return "dict"
    if isinstance(struct, (list, tuple)):
        return "list"
    return "single"
