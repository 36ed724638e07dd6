"""Nested structures (lists, tuples, dicts of leaves), as Keras's ``tree`` handles them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def flatten(structure: Any) -> list:
    """Leaves in order (dicts in insertion order; None is a leaf)."""
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in flatten(item)]
    if isinstance(structure, dict):
        return [leaf for item in structure.values() for leaf in flatten(item)]
    return [structure]


def map_structure(fn: Callable[[Any], Any], structure: Any) -> Any:
    if isinstance(structure, list):
        return [map_structure(fn, s) for s in structure]
    if isinstance(structure, tuple):
        return tuple(map_structure(fn, s) for s in structure)
    if isinstance(structure, dict):
        return {k: map_structure(fn, v) for k, v in structure.items()}
    return fn(structure)


def pack_like(structure: Any, leaves: list) -> Any:
    """Rebuild ``structure`` with ``leaves`` (in flatten order) in place of its leaves."""
    it = iter(leaves)
    out = map_structure(lambda _: next(it), structure)
    rest = list(it)
    if rest:
        raise ValueError(f"{len(rest)} leaves left over when packing")
    return out
