"""The profiler inside the native code: kernels named by layer, exact FLOPs, traces, no cost when off."""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.bench.native_profile import profile_compiled, profile_model
from graphc.runtime import NativeError


def _dense_model():
    x = Input(shape=(7,), name="features")
    h = layers.Dense(5, activation="relu", name="hidden")(x)
    return Model(x, layers.Dense(3, name="out")(h), name="dense_chain")


def _conv_model(filters: int = 4):
    x = Input(shape=(9, 9, 3), name="image")
    y = layers.Conv2D(filters, 3, name="conv")(x)
    return Model(x, layers.Flatten(name="flat")(y), name="conv_net")


def test_every_kernel_is_named_by_its_layer():
    model = _dense_model()
    cm = graphc.build(model, target="native", threads=1)
    report = cm.profile(np.ones((4, 7), np.float32), runs=3, peak=None)
    ops = cm.graph.ops()
    assert report.rows, "no kernel was timed"
    assert report.runs == 3
    for row in report.rows:
        assert row.name == ops[row.index].layer and row.op == ops[row.index].type
        assert row.launches >= 1 and row.ms >= 0
    assert {r.name for r in report.rows} == {"hidden", "out"}
    assert sum(r.share for r in report.rows) == pytest.approx(1.0)
    text = report.to_markdown()
    assert "| hidden | fused_matmul |" in text and "| out | fused_matmul |" in text


def test_dense_flops_are_exact():
    cm = graphc.build(_dense_model(), target="native", threads=1)
    report = cm.profile(np.ones((4, 7), np.float32), runs=1, peak=None)
    b = 4
    # hidden: 2·B·K·N multiply-adds, the bias and the relu fused into the GEMM's epilogue (one each per output)
    assert report.row("hidden").flops == 2 * b * 7 * 5 + b * 5 + b * 5
    assert report.row("out").flops == 2 * b * 5 * 3 + b * 3
    # bytes: input, kernel, bias read once, output written once (float32)
    assert report.row("hidden").bytes == 4 * (b * 7 + 7 * 5 + 5 + b * 5)
    assert report.total_flops == report.row("hidden").flops + report.row("out").flops


def test_conv_flops_are_exact():
    cm = graphc.build(_conv_model(), target="native", threads=1)
    report = cm.profile(np.ones((2, 9, 9, 3), np.float32), runs=1, peak=None)
    conv = report.row("conv")
    assert conv.op == "fused_conv" and conv.output_shape == (2, 7, 7, 4)
    assert conv.flops == 2 * (2 * 7 * 7 * 4) * (3 * 3 * 3) + 2 * 7 * 7 * 4


def test_flops_follow_the_free_dims_of_the_call():
    x = Input(shape=(None, 6), name="steps")
    model = Model(x, layers.Dense(5, name="proj")(x), name="per_step")
    cm = graphc.build(model, target="native", threads=1)
    for length in (1, 11):
        report = cm.profile(np.ones((3, length, 6), np.float32), runs=1, peak=None)
        assert report.row("proj").flops == 2 * 3 * length * 6 * 5 + 3 * length * 5
        assert report.shapes == {"steps": [3, length, 6]}


def test_trace_json_has_every_launch_and_run(tmp_path):
    cm = graphc.build(_dense_model(), target="native", threads=1)
    report = cm.profile(np.ones((4, 7), np.float32), runs=4, peak=None)
    path = report.write_trace(tmp_path / "trace.json")
    data = json.loads(open(path).read())
    events = [e for e in data["traceEvents"] if e["ph"] == "X"]
    runs = [e for e in events if e["cat"] == "run"]
    kernels = [e for e in events if e["cat"] == "kernel"]
    assert len(runs) == 4
    assert len(kernels) == 4 * sum(r.launches for r in report.rows)
    assert {e["args"]["layer"] for e in kernels} == {"hidden", "out"}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in events)
    for run in runs:  # every kernel lies inside a run
        inside = [k for k in kernels if run["ts"] <= k["ts"] and k["ts"] + k["dur"] <= run["ts"] + run["dur"] + 1e-3]
        assert len(inside) == sum(r.launches for r in report.rows)


def test_profiling_changes_no_result_bit():
    cm = graphc.build(_conv_model(), target="native", threads=2)
    x = np.random.default_rng(0).standard_normal((3, 9, 9, 3)).astype(np.float32)
    plain = cm.instance.run([x])[0]
    timed = cm.library.instance(2, profile=True, profile_events=100)
    try:
        assert np.array_equal(timed.run([x])[0], plain)
        assert timed.profile().runs == 1
    finally:
        timed.close()
    assert np.array_equal(cm.predict(x), plain)


def test_an_instance_without_profile_records_nothing():
    cm = graphc.build(_dense_model(), target="native", threads=1)
    cm.predict(np.ones((2, 7), np.float32))
    with pytest.raises(NativeError, match="without profile=True"):
        cm.instance.profile()
    assert not cm.library.lib.gc_instance_profile(cm.instance._handle)


def test_kernel_sum_is_consistent_with_the_whole_run():
    x = Input(shape=(16, 16, 8), name="image")
    y = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_a")(x)
    y = layers.Conv2D(16, 3, padding="same", name="conv_b")(y)
    cm = graphc.build(Model(x, layers.Flatten(name="flat")(y), name="convs"), target="native",
                      threads=1)
    report = cm.profile(np.ones((32, 16, 16, 8), np.float32), runs=5, peak=None)
    assert report.kernel_ms <= report.run_ms * 1.001 + 1e-4
    assert report.kernel_ms <= report.call_ms
    assert abs(report.call_ms - report.kernel_ms) <= 0.2 * report.call_ms + 0.1  # ms


def test_percent_of_peak_uses_the_given_peak():
    from graphc.bench.peak import Peak

    peak = Peak(cpu="test", features="", fma_gflops={128: 1.0, 256: 2.0}, threads=1, multi_gflops=2.0, copy_gbs=1.0,
                triad_gbs=1.0, triad_multi_gbs=1.0, working_set_mib=1.0, last_level_cache_mib=None)
    cm = graphc.build(_conv_model(), target="native", threads=1)
    report = cm.profile(np.ones((2, 9, 9, 3), np.float32), runs=1, peak=peak)
    conv = report.row("conv")
    assert conv.bound == "compute"  # 2 FLOP per byte is the ridge point: a 3x3 conv is well above it
    assert conv.peak_pct == pytest.approx(100 * conv.gflops / 2.0)
    assert "2.0 GFLOP/s (256-bit FMA" in report.to_markdown()


def test_bad_input_gets_clear_errors():
    cm = graphc.build(_dense_model(), target="native", threads=1)
    x = np.ones((2, 7), np.float32)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="runs must be an integer >= 1"):
            cm.profile(x, runs=bad)
    with pytest.raises(ValueError, match="target='native'"):
        graphc.build(_dense_model(), target="reference").profile(x)
    with pytest.raises(ValueError, match="warmup"):
        profile_compiled(cm, x, 1, warmup=-1)
    with pytest.raises(Exception, match="expects shape|7"):
        cm.profile(np.ones((2, 8), np.float32), runs=1, peak=None)
    with pytest.raises(Exception, match="nosuchmodel"):
        profile_model("nosuchmodel", batch=1, peak=None)
    with pytest.raises(ValueError, match="profile_events needs profile=True"):
        cm.library.instance(1, profile_events=10)


def test_cli_profile_and_trace(tmp_path, capsys):
    from graphc.cli import main

    out = tmp_path / "mlp.json"
    assert main(["bench", "mlp", "--profile", "--batch", "2", "--threads", "1", "--runs", "2",
                 "--trace", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Native profile: mlp" in text and "| dense | fused_matmul |" in text
    assert json.loads(out.read_text())["traceEvents"]
    assert main(["bench", "mlp", "--profile", "--runs", "0"]) == 1
    assert "--runs must be at least 1" in capsys.readouterr().err
    assert main(["bench", "nosuchmodel", "--profile"]) == 1
    assert "nosuchmodel" in capsys.readouterr().err
    assert main(["bench", "mlp", "--trace", str(out)]) == 1
    assert "add --profile" in capsys.readouterr().err


def test_options_of_the_previous_layout_are_accepted_without_profiling():
    import ctypes

    from graphc.runtime import GcOptions

    cm = graphc.build(_dense_model(), target="native", threads=1)
    lib = cm.library.lib
    opts = GcOptions()
    lib.gc_options_init(ctypes.byref(opts))
    assert opts.struct_size == ctypes.sizeof(GcOptions) and opts.profile == 0 and opts.profile_events == 0
    opts.struct_size = GcOptions.profile.offset  # an options struct that ends with `seed`
    opts.profile = 1  # beyond the struct the caller declared: not read
    handle = ctypes.c_void_p()
    cm.library.check(lib.gc_instance_create(cm.library.model, ctypes.byref(opts), ctypes.byref(handle)))
    try:
        assert not lib.gc_instance_profile(handle)
    finally:
        lib.gc_instance_release(handle)
