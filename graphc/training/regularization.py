"""Regularization penalties and weight constraints in a step graph, as Keras 3 applies them.

Keras's training loss is the compiled loss plus ``sum(model.losses)``: the activity penalties
of the layers' outputs in this call (each divided by its batch size), then one penalty per
trainable weight that has a regularizer, in ``model.trainable_weights`` order. Evaluation
reports the same sum. After each optimizer update Keras projects every updated weight that
has a constraint; here the projection follows the update inside the step graph, so the
reference interpreter and native code both honour it.
"""

from __future__ import annotations

from graphc.ir.graph import Graph
from graphc.ops.builder import OpBuilder


def regularization_losses(graph: Graph, model, params: dict) -> list[str]:
    """Keras's ``model.losses`` as float32 scalar values of ``graph`` (lowered with ``losses=True``).

    A regularized trainable weight that the graph does not read yet becomes a constant of it
    (and of ``params``): Keras counts its penalty, and trains it by the penalty's gradient.
    """
    terms = list(graph.meta.pop("losses", []))
    constant_of = {id(var): name for name, var in params.items()}
    for var in model.trainable_weights:
        if var.regularizer is None:
            continue
        name = constant_of.get(id(var))
        if name is None:
            name = graph.add_constant(graph.unique_name(var.path), var.value, trainable=True,
                                      layer=var.path.rsplit("/", 1)[0])
            params[name] = var
            constant_of[id(var)] = name
        b = OpBuilder(graph, layer=var.path.rsplit("/", 1)[0])
        penalty = var.regularizer.emit(b, name)
        terms.append(penalty if graph.type_of(penalty).dtype == "float32" else b.cast(penalty, dtype="float32"))
    return terms


def add_losses(b: OpBuilder, total: str, terms: list[str]) -> str:
    """``total`` plus the regularization terms (Keras sums them with the compiled loss)."""
    return b.add_n(total, *terms) if terms else total


def apply_constraints(b: OpBuilder, params: dict, updates: dict[str, str]) -> dict[str, str]:
    """The optimizer's ``{constant: new value}`` with each constrained weight's new value projected."""
    out = dict(updates)
    for const, value in updates.items():
        var = params.get(const)
        if var is not None and var.constraint is not None:
            out[const] = var.constraint.emit(OpBuilder(b.graph, layer=var.path.rsplit("/", 1)[0]), value)
    return out
