"""Smoke tests of the training-step benchmark: tiny sizes, one round, no timing thresholds.

What they prove: every engine that exists here trains the same model on the same batch (its
first-step loss agrees with graphc's), the timing rounds record samples or errors, and the
report (markdown and JSON) carries the table, the ratios and the load.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

pytest.importorskip("torch")

from graphc.bench import BenchError  # noqa: E402
from graphc.bench.jax_twin import jax_python  # noqa: E402
from graphc.bench.training import (  # noqa: E402
    LOSS_RTOL,
    TrainCase,
    _Engine,
    format_training,
    measure_steps,
    run_training_benchmark,
)


def _has_jax() -> bool:
    probe = subprocess.run([jax_python(), "-c", "import jax, keras"], capture_output=True,
                           env=dict(os.environ, KERAS_BACKEND="jax"))
    return probe.returncode == 0


def _losses_agree(case: TrainCase, engines) -> None:
    base = case.first_loss["graphc-native-step"]
    for e in engines:
        assert case.results[e].ok, (e, case.results[e].error)
        assert case.first_loss[e] == pytest.approx(base, rel=LOSS_RTOL), (e, case.first_loss)
    assert case.losses_agree


def test_native_and_torch_steps_do_the_same_work():
    engines = ("graphc-native-step", "graphc-native-raw", "torch")
    report = run_training_benchmark("multi_output", batch_sizes=3, threads=1, repeat=1, engines=engines)
    (case,) = report.training
    _losses_agree(case, engines)
    assert set(case.compile_s) == set(engines) and all(s >= 0 for s in case.compile_s.values())
    assert case.best_other == "torch"
    assert case.vs_best() == pytest.approx(case.results["graphc-native-step"].median_ms
                                           / case.results["torch"].median_ms)
    text = format_training(report.training)
    assert "| multi_output | 3 | 1 |" in text and "graphc Instance.train_step ms" in text
    assert "yes (" in text
    data = report.to_dict()["training"][0]
    json.dumps(data)
    assert data["ratios"]["graphc-native-step/best"] == pytest.approx(case.vs_best())
    assert data["load"] == case.load


def test_torch_compile_step_does_the_same_work():
    engines = ("graphc-native-step", "torch-compile")
    report = run_training_benchmark("mlp", batch_sizes=2, threads=1, repeat=1, engines=engines)
    _losses_agree(report.training[0], engines)


@pytest.mark.skipif(not _has_jax(), reason="jax and keras are not importable by the JAX child's interpreter "
                                           "(pip install jax, or set GRAPHC_BENCH_JAX_PYTHON)")
def test_jax_step_does_the_same_work():
    engines = ("graphc-native-step", "jax")
    report = run_training_benchmark("siamese_lstm", batch_sizes=3, threads=(1, 2), repeat=1, engines=engines)
    for case in report.training:
        _losses_agree(case, engines)
        assert set(case.versions) == {"jax", "keras"}
    assert any("jax.jit" in note for note in report.notes)


def test_a_failing_engine_is_recorded_not_dropped():
    calls = []

    def broken(n: int) -> float:
        raise RuntimeError("no kernel for this\nsecond line")

    def fine(n: int) -> float:
        calls.append(n)
        return 0.001 * n

    results = measure_steps([_Engine("graphc-native-step", fine), _Engine("torch", broken)], repeat=3,
                            min_sample_s=0.004)
    assert results["torch"].error == "RuntimeError: no kernel for this" and not results["torch"].samples_ms
    assert results["graphc-native-step"].calls_per_sample == 4
    assert results["graphc-native-step"].samples_ms == pytest.approx([1.0] * 3)
    assert calls == [1, 4, 4, 4]
    case = TrainCase("m", 2, 1, results={**results})
    assert "**failed**: RuntimeError: no kernel for this" in format_training([case])


def test_bad_engine_names_and_repeat_are_refused():
    with pytest.raises(BenchError, match="unknown training engine"):
        run_training_benchmark("mlp", engines="torch,tensorflow")
    with pytest.raises(BenchError, match="repeat must be at least 1"):
        measure_steps([], repeat=0)


def test_losses_that_disagree_are_flagged():
    case = TrainCase("m", 2, 1, first_loss={"graphc-native-step": 1.0, "torch": 1.01})
    assert case.losses_agree is False and case.loss_spread == pytest.approx(0.01 / 1.01)
    assert "**no** (" in format_training([case])


def test_cli_writes_markdown_and_json(tmp_path, capsys):
    from benchmarks.training import main

    out = tmp_path / "t.md"
    assert main(["--models", "mlp", "--batch", "2", "--threads", "1", "--repeat", "1", "--min-sample-ms", "0",
                 "--engines", "graphc-native-step,graphc-native-raw,torch", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| mlp | 2 | 1 |" in printed and "load average at the start" in printed
    assert out.read_text() == printed.rstrip("\n") + "\n"
    data = json.loads(out.with_suffix(".json").read_text())
    (case,) = data["training"]
    assert case["model"] == "mlp" and case["results"]["torch"]["samples_ms"]
    assert np.isfinite(case["ratios"]["graphc-native-raw/best"])
    assert main(["--models", "nope", "--no-write", "--quiet"]) == 2
