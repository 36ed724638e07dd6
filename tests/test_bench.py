"""graphc.bench: report structure, ratios from the measured times, failures recorded (the PyTorch twins:
tests/bench/test_torch_twin.py).

Nothing here asserts on speed: timings belong to benchmarks/, not to pass/fail tests.
"""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.bench import (
    ENGINES,
    OPENVINO_PRECISIONS,
    BenchCase,
    BenchError,
    EngineResult,
    _Runner,
    benchmark_feeds,
    measure,
    profile_layers,
    run_benchmark,
    run_training_benchmark,
)
from graphc.examples import ExampleError

torch = pytest.importorskip("torch")


def _fast(**kw):
    return dict(repeat=2, warmup=1, min_sample_s=0.0, **kw)


# ------------------------------------------------------------------------------------------ run_benchmark


def test_report_structure_and_ratios_from_medians():
    report = run_benchmark("mlp", batch_sizes=(1, 3), threads=(1,), vs=("onnxruntime", "torch"), **_fast())
    assert [(c.model, c.batch, c.threads) for c in report.cases] == [("mlp", 1, 1), ("mlp", 3, 1)]
    for case in report.cases:
        assert set(case.results) == set(ENGINES) - set(OPENVINO_PRECISIONS)
        for res in case.results.values():
            assert res.error is None, res.error
            assert len(res.samples_ms) == 2 and all(s > 0 for s in res.samples_ms)
            assert res.median_ms == pytest.approx(float(np.median(res.samples_ms)))
        best = min(("onnxruntime", "onnxruntime-l0"), key=lambda e: case.results[e].median_ms)
        assert case.best_onnxruntime == best
        g = case.results["graphc"].median_ms
        assert case.ratios["ort/graphc"] == pytest.approx(case.results[best].median_ms / g)
        assert case.ratios["torch/graphc"] == pytest.approx(case.results["torch"].median_ms / g)
        assert case.ratios["unfused/fused"] == pytest.approx(case.results["graphc-unfused"].median_ms / g)
    # the outputs were checked against the reference interpreter (first batch size)
    assert all(c.load is None or c.load >= 0 for c in report.cases)
    first = report.cases[0].results
    assert all(first[e].max_rel_error is not None and first[e].max_rel_error < 1e-4 for e in first)
    text = report.to_markdown()
    assert "| model | batch | threads | graphc ms | onnxruntime ms | ort/graphc | torch ms" in text
    assert "| mlp | 3 | 1 |" in text and report.machine["cpu"] in text
    assert all(k in report.machine["versions"] for k in ("onnxruntime", "torch", "llvmlite"))
    json.dumps(report.to_dict())  # serializable


def test_openvino_at_float32_and_at_its_default_precision():
    pytest.importorskip("openvino", reason="OpenVINO is a test dependency (pip install -e '.[test]')")
    report = run_benchmark("inception", batch_sizes=(2,), threads=(1,), vs="ov", unfused=False, **_fast())
    (case,) = report.cases
    assert set(case.results) == {"graphc", "openvino", "openvino-default"}
    for engine in ("openvino", "openvino-default"):
        res = case.results[engine]
        assert res.error is None and len(res.samples_ms) == 2, res.error
    g = case.results["graphc"].median_ms
    assert case.ratios["ov/graphc"] == pytest.approx(case.results["openvino"].median_ms / g)
    assert case.ratios["ov-default/graphc"] == pytest.approx(case.results["openvino-default"].median_ms / g)
    # float32 agrees with graphc's reference; the default may run in bf16 (a note says which)
    assert case.results["openvino"].max_rel_error < 1e-4
    assert case.results["openvino-default"].max_rel_error < 5e-2
    assert any(n.startswith("openvino: OpenVINO at f32") for n in report.notes)
    assert any(n.startswith("openvino-default: OpenVINO at ") for n in report.notes)
    text = report.to_markdown()
    assert "| OpenVINO f32 ms | ov/graphc | OpenVINO default ms | ov-default/graphc |" in text
    assert "openvino" in report.machine["versions"]


def test_only_requested_engines_and_string_arguments():
    report = run_benchmark("merge", batch_sizes="2", threads="1", vs="ort", unfused=False, **_fast())
    (case,) = report.cases
    assert set(case.results) == {"graphc", "onnxruntime", "onnxruntime-l0"}
    assert case.ratios["torch/graphc"] is None and case.ratios["unfused/fused"] is None
    assert "| merge | 2 | 1 |" in report.to_markdown()


def test_user_model_with_given_inputs_and_no_twin():
    inp = Input(shape=(5, 3), name="seq")
    out = layers.GRU(4)(inp)
    model = Model(inp, out, name="gru_model")
    x = np.random.default_rng(0).random((3, 5, 3), dtype=np.float32)
    report = run_benchmark(model, threads=1, vs="torch", unfused=False, inputs=x, **_fast())
    (case,) = report.cases
    assert case.batch == 3
    assert case.results["graphc"].ok
    assert "no PyTorch twin" in case.results["torch"].error and "GRU" in case.results["torch"].error
    assert "**failed**: TwinError" in report.to_markdown()


def test_benchmark_feeds_are_an_examples_own_inputs_or_random_ones():
    """A bundled example's inputs as the example makes them (named, in the graph's dtypes, its free
    lengths at their design sizes); a user's model gets random ones of its shapes; same seed, same data."""
    from graphc import examples

    feeds = benchmark_feeds("multi_output", 3)
    graph = graphc.lower(examples.build("multi_output", seed=0))
    assert list(feeds) == list(graph.inputs)
    own = examples.inputs("multi_output", np.random.default_rng(0), 3)
    own = own if isinstance(own, dict) else {graph.inputs[0]: own}
    for name, value in feeds.items():
        np.testing.assert_array_equal(value, np.asarray(own[name]).astype(graph.type_of(name).dtype))
    inp = Input(shape=(5, 3), name="seq")
    model = Model(inp, layers.Dense(2)(inp), name="dense_model")
    x = benchmark_feeds(model, 4, seed=2)
    assert list(x) == ["seq"] and x["seq"].shape == (4, 5, 3) and x["seq"].dtype == np.float32
    np.testing.assert_array_equal(x["seq"], benchmark_feeds(model, 4, seed=2)["seq"])
    assert not np.array_equal(x["seq"], benchmark_feeds(model, 4, seed=3)["seq"])


def test_native_failure_is_recorded_with_its_first_line(monkeypatch):
    real = graphc.build

    def build(model, target="reference", **kw):
        if target == "native":
            raise RuntimeError("no kernel for op 'frobnicate'\nsecond line")
        return real(model, target, **kw)

    monkeypatch.setattr(graphc, "build", build)
    report = run_benchmark("mlp", batch_sizes=(1,), threads=(1,), vs="onnxruntime", **_fast())
    (case,) = report.cases
    for engine in ("graphc", "graphc-unfused"):
        assert case.results[engine].error == "RuntimeError: no kernel for op 'frobnicate'"
    assert case.results["onnxruntime"].ok and case.ratios["ort/graphc"] is None
    row = next(line for line in report.to_markdown().splitlines() if line.startswith("| mlp | 1 | 1 |"))
    assert "**failed**: RuntimeError: no kernel for op 'frobnicate'" in row and "second line" not in row


@pytest.mark.parametrize("kwargs, message", [
    ({"vs": "tensorflow"}, "unknown engine 'tensorflow'"),
    ({"batch_sizes": (0,)}, "batch sizes must be positive"),
    ({"threads": "one"}, "thread counts must be positive"),
    ({"repeat": 0}, "repeat must be at least 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(BenchError, match=message):
        run_benchmark("mlp", **{"batch_sizes": (1,), "threads": (1,), "vs": (), "unfused": False, **kwargs})


def test_bad_model():
    with pytest.raises(ExampleError, match="unknown example 'nope'"):
        run_benchmark("nope")
    with pytest.raises(BenchError, match="expects a Model or the name of a bundled example, got int"):
        run_benchmark(3)


# ------------------------------------------------------------------------------------------ measure


def test_measure_interleaves_rotates_and_records_errors():
    order = []
    calls = {"flaky": 0}

    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] > 3:
            raise ValueError("went wrong\nmore")

    def broken():
        raise KeyError("x")

    runners = [_Runner("a", lambda: order.append("a")), _Runner("b", lambda: order.append("b")),
               _Runner("flaky", flaky), _Runner("broken", broken)]
    results = measure(runners, 3, warmup=1, min_sample_s=0.0, pause_s=0.0)
    assert results["broken"].error == "KeyError: 'x'" and results["broken"].samples_ms == []
    assert results["flaky"].error == "ValueError: went wrong" and results["flaky"].samples_ms == []
    assert len(results["a"].samples_ms) == len(results["b"].samples_ms) == 3
    # warm-up a, b; then per round: one untimed + one timed call each, in rotated order
    rounds = order[2:]
    assert rounds[:4] == ["a", "a", "b", "b"] and rounds[4:8] == ["b", "b", "a", "a"]


def test_measure_settles_each_engine_before_its_sample():
    """With ``settle_s``, each round runs an engine untimed for that long before its timed block: the
    previous engine's spinning workers have gone to sleep by then."""
    stamps: dict[str, list[float]] = {"a": [], "b": []}

    def runner(name):
        def call():
            stamps[name].append(time.perf_counter())
            time.sleep(0.001)
        return _Runner(name, call)

    results = measure([runner("a"), runner("b")], 2, warmup=1, min_sample_s=0.0, pause_s=0.0, settle_s=0.03)
    assert len(results["a"].samples_ms) == len(results["b"].samples_ms) == 2
    for name, times in stamps.items():
        # warm-up, then per round >= 0.03 s of untimed calls (about 1.1 ms each) and the timed one
        assert len(times) >= 1 + 2 * 10, (name, len(times))
        assert times[-1] - times[1] >= 0.03


def test_ratios_and_spread_of_hand_made_results():
    case = BenchCase("m", 1, 1, {"graphc": EngineResult("graphc", [2.0, 4.0, 3.0]),
                                 "onnxruntime": EngineResult("onnxruntime", [6.0, 6.0, 9.0]),
                                 "onnxruntime-l0": EngineResult("onnxruntime-l0", error="boom"),
                                 "torch": EngineResult("torch", [1.5])})
    assert case.best_onnxruntime == "onnxruntime"
    assert case.ratios == {"ort/graphc": 2.0, "torch/graphc": 0.5, "unfused/fused": None, "ov/graphc": None,
                           "ov-default/graphc": None}
    assert case.results["graphc"].spread == pytest.approx(1.0 / 3.0)
    assert case.results["onnxruntime-l0"].median_ms is None


# ------------------------------------------------------------------------------------------ profile, training, CLI


def test_profile_layers_times_every_layer():
    profile = profile_layers("mlp", batch=2, threads=1, vs="onnxruntime,torch", repeat=1)
    assert [r.kind for r in profile.rows] == ["Dense", "Dense", "Dense"]
    assert all(r.case is not None and r.case.results["graphc"].ok for r in profile.rows)
    assert profile.total("graphc") == pytest.approx(sum(r.case.median("graphc") for r in profile.rows))
    assert profile.by_class() == {"Dense": pytest.approx(profile.total("graphc"))}
    assert profile.ort_ops_error is None
    assert any(op in ("MatMul", "Gemm", "FusedGemm") for op in profile.ort_ops), profile.ort_ops
    assert all(v > 0 for v in profile.ort_ops.values())
    text = profile.to_markdown()
    assert "| **sum** |" in text and "| onnxruntime op (whole model) |" in text


def test_training_comparison_same_first_loss():
    report = run_training_benchmark("mlp", batch_sizes=(4,), threads=(1,), repeat=1)
    (case,) = report.training
    assert case.results["graphc"].ok and case.results["torch"].ok
    assert "graphc-native-step" in case.results  # timed, or its error recorded
    assert case.first_loss["graphc"] == pytest.approx(case.first_loss["torch"], rel=1e-5)
    assert case.ratio("torch") == pytest.approx(case.results["torch"].median_ms / case.results["graphc"].median_ms)
    assert "## Training step" in report.to_markdown()


def test_runner_cli_writes_markdown_and_json(tmp_path, capsys):
    from benchmarks.run import main

    out = tmp_path / "r.md"
    assert main(["--models", "mlp", "--batch", "1", "--threads", "1", "--repeat", "1", "--vs", "onnxruntime",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| mlp | 1 | 1 |" in printed and out.read_text() == printed.rstrip("\n") + "\n"
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["cases"][0]["model"] == "mlp" and data["cases"][0]["results"]["graphc"]["samples_ms"]
    if importlib.util.find_spec("matplotlib") is not None:  # the chart of the ratios (a test dependency)
        assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--models", "merge", "--threads", "1", "--no-inference", "--train", "--train-batch", "2",
                 "--train-repeat", "1", "--no-write", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "## Training step" in printed and "| merge | 2 | 1 |" in printed and "| graphc ms |" not in printed
    assert main(["--models", "nope", "--no-write", "--quiet"]) == 2
    assert "unknown model(s) ['nope']" in capsys.readouterr().err


@pytest.mark.keras
def test_benchmark_runner_takes_keras_models_as_users_bring_them(keras, tmp_path, capsys):
    from benchmarks.run import main

    out = tmp_path / "apps.md"
    assert main(["--models", "merge", "--apps", "TransformerEncoder", "--batch", "1", "--threads", "1",
                 "--repeat", "1", "--vs", "onnxruntime", "--no-unfused", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| transformer_encoder | 1 | 1 |" in printed and "| merge | 1 | 1 |" in printed
    data = json.loads(out.with_suffix(".json").read_text())
    encoder = next(c for c in data["cases"] if c["model"] == "transformer_encoder")
    assert encoder["results"]["graphc"]["max_rel_error"] < 1e-4  # graphc's native code against its reference
    with pytest.raises(SystemExit, match="unknown --apps model 'ResNet51'"):
        main(["--models", "merge", "--apps", "ResNet51", "--no-write", "--quiet"])
    # the applications alone, at their own batch size
    assert main(["--models", "none", "--apps", "TransformerEncoder", "--apps-batch", "3", "--threads", "1",
                 "--repeat", "1", "--vs", "onnxruntime", "--no-unfused", "--no-write"]) == 0
    printed = capsys.readouterr().out
    assert "| transformer_encoder | 3 | 1 |" in printed and "| merge |" not in printed
