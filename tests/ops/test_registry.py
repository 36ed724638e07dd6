"""The op registry's contract: every op declares its facets and is exercised by a test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from graphc.ops import REGISTRY
from graphc.ops.registry import FUSION_KINDS, OpDef, ShapeError, register

TESTS = Path(__file__).resolve().parents[1]


def _test_text() -> str:
    return "\n".join(p.read_text() for p in TESTS.rglob("test_*.py"))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_op_has_shape_rule_reference_and_docs(name):
    opdef = REGISTRY[name]
    assert callable(opdef.infer) and callable(opdef.reference)
    assert opdef.doc, f"op {name!r} has no docstring"
    assert opdef.fusion_kind in FUSION_KINDS


def test_every_op_is_named_in_some_test():
    text = _test_text()
    untested = [n for n in REGISTRY if not re.search(rf"[\"'.]{re.escape(n)}[\"'(]", text)]
    assert not untested, f"ops never named in a test: {untested}"


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register(OpDef("relu", lambda t: t[0], lambda x: x))


def test_arity_is_checked():
    with pytest.raises(ShapeError, match="takes 2 inputs, got 1"):
        REGISTRY["add"].check_arity(1)
