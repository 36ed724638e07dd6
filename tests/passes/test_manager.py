"""The pass manager: pipelines, fixed points, verification, timing, printing, disabling, errors."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import graphc
from graphc.passes import (
    PASSES,
    FixedPoint,
    PassError,
    PassManager,
    Pipeline,
    optimize,
    pipeline_for_level,
    register_pass,
    run_pipeline,
    working_on,
)
from graphc.passes.manager import note
from tests.passes.util import const, new_graph


@pytest.fixture
def scratch_passes():
    """Register throw-away passes; removed again after the test."""
    added: list[str] = []

    def add(name, fn):
        register_pass(name)(fn)
        added.append(name)
        return name

    yield add
    for name in added:
        PASSES.pop(name, None)


def small_graph(rng):
    g, b, (x,) = new_graph(("x", ("batch", 3)))
    y = b.relu(b.dropout(b.matmul(x, const(b, rng, (3, 4)))))
    g.set_outputs([y])
    return g


def test_pipeline_runs_passes_in_order_and_reports(scratch_passes, rng):
    calls = []
    scratch_passes("t_first", lambda g: calls.append("first") or False)
    scratch_passes("t_second", lambda g: calls.append("second") or False)
    report = PassManager(verify=True).run(small_graph(rng), Pipeline("p", ["t_first", "t_second", "t_first"]))
    assert calls == ["first", "second", "first"]
    assert report.passes["t_first"].runs == 2 and report.passes["t_second"].runs == 1
    assert report.passes["t_first"].seconds >= 0
    assert "t_second" in report.format()


def test_fixed_point_repeats_until_nothing_changes(scratch_passes, rng):
    budget = {"n": 3}

    def shrink(g):
        budget["n"] -= 1
        return budget["n"] >= 0

    scratch_passes("t_shrink", shrink)
    fp = FixedPoint(Pipeline("inner", ["t_shrink"]))
    report = PassManager(verify=False).run(small_graph(rng), Pipeline("p", [fp]))
    assert report.passes["t_shrink"].runs == 4 and report.passes["t_shrink"].changed == 3
    assert report.fixed_point_rounds[fp.name] == 4


def test_fixed_point_limit_warns(scratch_passes, rng):
    scratch_passes("t_forever", lambda g: True)
    fp = FixedPoint(Pipeline("inner", ["t_forever"]), limit=5)
    with pytest.warns(RuntimeWarning, match="after 5 rounds"):
        report = PassManager(verify=False).run(small_graph(rng), Pipeline("p", [fp]))
    assert report.passes["t_forever"].runs == 5


def test_a_pass_must_return_a_bool(scratch_passes, rng):
    scratch_passes("t_none", lambda g: None)
    with pytest.raises(PassError, match="'t_none' returned None"):
        PassManager().run(small_graph(rng), Pipeline("p", ["t_none"]))


def test_failures_name_the_pass_and_the_op(scratch_passes, rng):
    def boom(g):
        for op in g.ops():
            working_on(op)
            if op.type == "relu":
                raise ValueError("cannot rewrite this")
        return False

    scratch_passes("t_boom", boom)
    with pytest.raises(PassError, match=r"pass 't_boom' failed on op '\w+' \(relu, layer 'l'\): "
                                        r"ValueError: cannot rewrite this") as info:
        PassManager().run(small_graph(rng), Pipeline("p", ["t_boom"]))
    assert info.value.pass_name == "t_boom" and info.value.op.type == "relu"


def test_debug_mode_verifies_after_each_pass(scratch_passes, rng):
    def corrupt(g):
        op = next(o for o in g.ops() if o.type == "matmul")
        g.values[op.outputs[0]].type = g.values[op.outputs[0]].type.with_shape(("batch", 9))
        return True

    scratch_passes("t_corrupt", corrupt)
    with pytest.raises(PassError, match="invalid IR after pass 't_corrupt'.*typed f32\\[batch, 9\\]"):
        PassManager(verify=True).run(small_graph(rng), Pipeline("p", ["t_corrupt"]))
    PassManager(verify=False).run(small_graph(rng), Pipeline("p", ["t_corrupt"]))  # not checked


def test_debug_mode_catches_a_pass_that_hides_a_change(scratch_passes, rng):
    def sneaky(g):
        op = next(o for o in g.ops() if o.type == "dropout")
        op.attrs["rate"] = 0.25
        return False

    scratch_passes("t_sneaky", sneaky)
    with pytest.raises(PassError, match="'t_sneaky' changed the graph but returned False"):
        PassManager(verify=True).run(small_graph(rng), Pipeline("p", ["t_sneaky"]))


def test_verification_env_variable(monkeypatch):
    monkeypatch.setenv("GRAPHC_VERIFY_PASSES", "0")
    assert not PassManager().verify
    monkeypatch.setenv("GRAPHC_VERIFY_PASSES", "1")
    assert PassManager().verify


def test_print_before_and_after(rng):
    out = io.StringIO()
    run_pipeline(small_graph(rng), 1, print_before=["remove_noops"], print_after=["all"], stream=out)
    text = out.getvalue()
    assert text.count("IR before pass remove_noops") == 2  # the fixed point ran it twice
    assert "IR after pass dce" in text and "IR after pass cse (unchanged)" in text
    assert "dropout(" in text.split("IR after pass remove_noops")[0]
    assert "dropout(" not in text.split("IR after pass remove_noops")[1]


def test_print_and_disable_from_the_environment(monkeypatch, rng):
    monkeypatch.setenv("GRAPHC_PRINT_AFTER", "remove_noops")
    monkeypatch.setenv("GRAPHC_DISABLE", "dce,cse")
    out = io.StringIO()
    g, report = run_pipeline(small_graph(rng), 1, stream=out)
    assert "IR after pass remove_noops" in out.getvalue() and "IR after pass dce" not in out.getvalue()
    assert report.disabled == ["cse", "dce"] and "dce" not in report.passes
    assert "dce" in report.format()


def test_disable_a_pass_by_name(rng):
    g = small_graph(rng)
    kept = optimize(g, 1, disable=["remove_noops"])
    assert "dropout" in kept.op_counts()
    assert "dropout" not in optimize(g, 1).op_counts()


def test_unknown_pass_names_are_errors(rng):
    with pytest.raises(ValueError, match="unknown pass 'no_such_pass'; known passes: .*dce"):
        optimize(small_graph(rng), 2, disable=["no_such_pass"])
    with pytest.raises(ValueError, match="unknown pass 'nope'"):
        PassManager(print_after=["nope"])
    with pytest.raises(ValueError, match="unknown pass 'missing'"):
        PassManager().run(small_graph(rng), Pipeline("p", ["missing"]))


def test_pass_registered_twice_is_an_error():
    with pytest.raises(ValueError, match="'dce' is registered twice"):
        register_pass("dce")(lambda g: False)


def test_note_counts_events(scratch_passes, rng):
    def counting(g):
        note("thing", 2)
        note("thing")
        return False

    scratch_passes("t_count", counting)
    report = PassManager().run(small_graph(rng), Pipeline("p", ["t_count"]))
    assert report.events()["t_count: thing"] == 3
    note("outside a pipeline is ignored")


def test_optimize_returns_a_copy_and_levels(rng):
    g = small_graph(rng)
    before = str(g)
    out = graphc.optimize(g, level=2)
    assert str(g) == before and out is not g
    assert str(graphc.optimize(g, level=0)) == before
    assert pipeline_for_level(0).steps == []
    assert "fuse_epilogue" not in pipeline_for_level(1).pass_names()
    assert "fuse_epilogue" in pipeline_for_level(2).pass_names()
    assert "fold_linear_chains_aggressive" in pipeline_for_level(3).pass_names()
    for bad in (-1, 4, "2"):
        with pytest.raises(ValueError, match="optimization level must be one of"):
            optimize(g, bad)


def test_optimized_graph_prints_and_round_trips(tmp_path, rng):
    g = graphc.optimize(small_graph(rng), 2)
    graphc.ir.save(g, tmp_path / "g.npz")
    back = graphc.ir.load(tmp_path / "g.npz")
    assert str(back) == str(g)
    x = rng.standard_normal((3, 3)).astype(np.float32)
    from graphc.backends.reference import run

    np.testing.assert_array_equal(run(back, {"x": x})[g.outputs[0]], run(g, {"x": x})[g.outputs[0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimize(g, 2)  # idempotent, no fixed-point warning
