"""The ``graphc`` command line, run in-process through ``graphc.cli.main``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc
from graphc import cli, examples
from graphc.ir import load


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(textwrap.dedent("""
        from graphc import Input, Model, layers

        x = Input((8,), name="x")
        model = Model(x, layers.Dense(3, activation="relu")(x), name="from_file")
        other = Model(x, layers.Dense(2)(x), name="other")


        def make():
            i = Input((4,), name="i")
            return Model(i, layers.Dense(5)(i), name="made")


        not_a_model = 3
    """))
    return str(path)


# ---------------------------------------------------------------------------------------------
# Help and dispatch.


def test_help_documents_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert set(cli.COMMANDS) >= {"demo", "summary", "ir", "examples"}
    for name, cmd in cli.COMMANDS.items():
        assert f"    {name} " in out and cmd.help.split()[0] in out


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_each_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([verb, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: graphc {verb}")
    for a in cli.COMMANDS[verb].arguments:
        assert (a.options.get("metavar") or a.flags[0]) in out


def test_no_verb_prints_help(capsys):
    rc, out, _ = run_cli(capsys)
    assert rc == 2 and "usage: graphc" in out and "demo" in out


def test_unknown_verb_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"graphc {graphc.__version__}"


def test_a_new_verb_is_one_function(capsys):
    @cli.command("hello", "say hello to MODEL's name", cli.model_argument(), cli.arg("--times", type=int, default=1))
    def hello(args):
        model = cli.load_model(args.model)
        print(" ".join([f"hello {model.name}"] * args.times))
        return 3

    try:
        rc, out, _ = run_cli(capsys, "hello", "mlp", "--times", "2")
        assert rc == 3 and out == "hello mlp hello mlp\n"
        with pytest.raises(SystemExit):
            cli.main(["--help"])
        assert "say hello to MODEL's name" in capsys.readouterr().out
        with pytest.raises(ValueError, match="'hello' is registered twice"):
            cli.command("hello", "again")(hello)
    finally:
        del cli.COMMANDS["hello"]


def test_module_entry_point_runs():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-m", "graphc", "examples"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == examples.names()[0]


# ---------------------------------------------------------------------------------------------
# demo


def test_demo_runs_end_to_end(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    rc, out, err = run_cli(capsys, "demo")
    assert rc == 0, err
    name = cli.DEMO_MODELS[0]
    assert out.startswith(f"== {name}: ")
    assert 'Model: "qa_two_inputs"' in out and " Total params: 1,000,052 (3.81 MB)" in out
    assert "graph qa_two_inputs {" in out and "input %text: i32[batch, text_len]" in out
    assert "== reference interpreter (inputs from seed 0): batch=2, text_len=12, question_len=5" in out
    assert "output dense: f32[batch, 500] -> (2, 500) checksum=" in out
    assert "== optimized at -O2:" in out and "max |difference| 0" in out
    assert "== native code (-O2): libqa_two_inputs.so" in out and "max |native - reference|" in out
    assert "== onnxruntime (opset" in out and "timing: compile" in out and "onnxruntime" in out.splitlines()[-1]

    # The same weights and inputs again: the same numbers (timings aside).
    rc, again, _ = run_cli(capsys, "demo")

    def untimed(text):
        return [line for line in text.splitlines() if not line.startswith("timing:")]

    assert untimed(again) == untimed(out)


def test_demo_checksum_is_the_reference_output(capsys):
    rc, out, _ = run_cli(capsys, "demo", "--model", "mlp", "--batch", "3", "--seed", "7")
    assert rc == 0
    model = examples.build("mlp", seed=7)
    x = examples.inputs("mlp", np.random.default_rng(7), 3)
    want = model.predict(x).astype(np.float64).ravel()
    line = next(line for line in out.splitlines() if line.startswith("output "))
    got = float(line.rsplit("checksum=", 1)[1])
    assert got == pytest.approx(float(want @ np.linspace(1.0, 2.0, want.size)), abs=1e-5)
    assert "-> (3, 10)" in line


def test_checksum_weights_positions():
    a = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    assert cli.checksum(a) == pytest.approx(1.0)
    assert cli.checksum(b) == pytest.approx(2.0)
    assert cli.checksum(np.zeros((0, 3))) == 0.0


def test_demo_skips_examples_it_cannot_build(capsys, monkeypatch):
    def needs_missing_layer():
        return graphc.layers.NoSuchLayer(3)

    monkeypatch.setitem(examples.EXAMPLES, "broken", examples.Example("broken", "needs a missing layer",
                                                                      needs_missing_layer, lambda rng, n: None))
    monkeypatch.setattr(cli, "DEMO_MODELS", ("broken", "mlp"))
    rc, out, err = run_cli(capsys, "demo")
    assert rc == 0 and out.startswith("== mlp: ")
    assert "skipped example broken" in err and "graphc.layers.NoSuchLayer" in err
    rc, _, err = run_cli(capsys, "demo", "--model", "broken")
    assert rc == 1 and "example 'broken' needs graphc.layers.NoSuchLayer" in err


def test_demo_refuses_bad_arguments(capsys):
    rc, _, err = run_cli(capsys, "demo", "--model", "nope")
    assert rc == 1 and "unknown example 'nope'" in err and "mlp" in err
    rc, _, err = run_cli(capsys, "demo", "--batch", "0")
    assert rc == 1 and "--batch must be at least 1, got 0" in err


# ---------------------------------------------------------------------------------------------
# summary, ir, examples


def test_summary_of_a_bundled_example(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    rc, out, _ = run_cli(capsys, "summary", "mlp")
    assert rc == 0
    graphc.utils.clear_session(free_memory=False)
    captured: list[str] = []
    examples.build("mlp").summary(print_fn=captured.append)
    assert out == captured[0]
    assert " Total params: 3,466 (13.54 KB)" in out


def test_summary_options(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rc, out, _ = run_cli(capsys, "summary", "mlp", "--line-length", "70", "--show-trainable")
    assert rc == 0
    lines = out.splitlines()
    assert len(lines[1]) == 70 and lines[2].endswith("┃ Tra… ┃")


def test_summary_of_files(capsys, model_file):
    rc, out, _ = run_cli(capsys, "summary", model_file)
    assert rc == 0 and 'Model: "from_file"' in out and "(None, 3)" in out
    rc, out, _ = run_cli(capsys, "summary", f"{model_file}:other")
    assert rc == 0 and 'Model: "other"' in out
    rc, out, _ = run_cli(capsys, "summary", f"{model_file}:make")
    assert rc == 0 and 'Model: "made"' in out and "(None, 5)" in out


def test_model_naming_errors(capsys, model_file, tmp_path):
    rc, _, err = run_cli(capsys, "summary", f"{model_file}:missing")
    assert rc == 1 and "defines no `missing`" in err and "model, other" in err
    rc, _, err = run_cli(capsys, "summary", f"{model_file}:not_a_model")
    assert rc == 1 and "is of type 'int', not a graphc Model" in err
    rc, _, err = run_cli(capsys, "summary", str(tmp_path / "absent.py"))
    assert rc == 1 and "no such file" in err and "absent.py" in err
    rc, _, err = run_cli(capsys, "summary", str(tmp_path / "absent.keras"))
    assert rc == 1 and "no such file" in err
    rc, _, err = run_cli(capsys, "summary", "no_such_example")
    assert rc == 1 and "cannot find model 'no_such_example'" in err and "conv1d_text" in err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    rc, _, err = run_cli(capsys, "ir", str(empty))
    assert rc == 1 and "defines no `model`" in err and "Model objects" not in err


def test_errors_inside_a_model_file_are_reported(capsys, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from graphc import layers\nlayers.Dense(-1)\n")
    rc, _, err = run_cli(capsys, "summary", str(bad))
    assert rc == 1 and "ValueError" in err and "Dense units must be a positive integer" in err
    with pytest.raises(ValueError, match="positive integer"):
        cli.main(["--traceback", "summary", str(bad)])


def test_summary_of_a_keras_archive(capsys, tmp_path, model_file):
    model = cli.load_model(model_file)
    path = str(tmp_path / "saved.keras")
    model.save(path)
    rc, out, err = run_cli(capsys, "summary", path)
    assert rc == 0, err
    assert 'Model: "from_file"' in out and " Total params: 27 (108.00 B)" in out


def test_ir_prints_the_verified_graph(capsys, model_file):
    rc, out, _ = run_cli(capsys, "ir", model_file)
    assert rc == 0
    graphc.utils.clear_session(free_memory=False)
    assert out == str(graphc.lower(cli.load_model(model_file))) + "\n"
    assert "input %x: f32[batch, 8]" in out and "# dense" in out


def test_ir_optimized_and_saved(capsys, tmp_path):
    target = str(tmp_path / "g.npz")
    rc, out, err = run_cli(capsys, "ir", "mlp", "-O", "2", "--save", target)
    assert rc == 0 and f"saved to {target}" in err
    plain = graphc.lower(examples.build("mlp"))
    assert "fused_matmul" in out and out.count("= ") < str(plain).count("= ")
    assert str(load(target)) + "\n" == out
    graphc.verify(load(target))


def test_ir_print_after_all_and_bad_level(capsys):
    rc, out, _ = run_cli(capsys, "ir", "mlp", "-O", "1", "--print-after-all")
    assert rc == 0 and "// ----- IR after pass" in out
    rc, _, err = run_cli(capsys, "ir", "mlp", "-O", "9")
    assert rc == 1 and "-O must be one of 0, 1, 2, 3, got 9" in err


def test_examples_lists_every_bundled_example(capsys):
    rc, out, _ = run_cli(capsys, "examples")
    assert rc == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == examples.names()
    assert set(examples.names()) >= {"mlp", "qa_two_inputs", "multi_output", "inception", "residual",
                                      "siamese_lstm", "stereo_xception", "separable_conv_bn", "merge",
                                      "conv1d_text"}
    assert all(examples.get(n).description in out for n in examples.names())


def test_plan_prints_the_arena_table(capsys):
    code, out, _ = run_cli(capsys, "plan", "residual", "--batch", "2")
    assert code == 0
    assert "arena" in out and "peak" in out.lower()


def test_plan_of_the_native_code(capsys, monkeypatch, tmp_path):
    """--native: the runtime's plan of a run (its scratch buffers by value), on the threads asked for."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    code, out, _ = run_cli(capsys, "plan", "residual", "--batch", "3", "--native", "--threads", "2")
    assert code == 0
    head, columns, *rows = out.splitlines()
    assert head.startswith("native memory plan of residual (2 thread(s)") and "arena" in head
    assert columns.split() == ["value", "offset", "bytes", "first", "last"] and rows
    code, _, err = run_cli(capsys, "plan", "residual", "--threads", "2")
    assert code == 1 and "--threads is for the native plan: add --native" in err
    code, _, err = run_cli(capsys, "plan", "residual", "--native", "--threads", "0")
    assert code == 1 and "--threads must be at least 1, got 0" in err


def test_plan_refuses_a_bad_dim(capsys):
    code, _, err = run_cli(capsys, "plan", "qa_two_inputs", "--dim", "text_len")
    assert code == 1 and "NAME=SIZE" in err


def test_verify_against_onnxruntime_and_native(capsys):
    code, out, _ = run_cli(capsys, "verify", "merge")
    assert code == 0 and "PASS" in out and "cosine" not in out
    code, out, _ = run_cli(capsys, "verify", "siamese_lstm", "--vs", "native", "--batch", "3")
    assert code == 0 and "yes" in out and "NO" not in out


def test_verify_fails_loudly_when_tolerances_cannot_be_met(capsys):
    code, out, _ = run_cli(capsys, "verify", "mlp", "--vs", "native", "--rtol", "0", "--atol", "0",
                           "-O", "2", "--batch", "17")
    assert code in (0, 1)
    assert ("NO" in out) == (code == 1)


def test_ir_disable_and_list_passes(capsys):
    code, out, _ = run_cli(capsys, "ir", "--list-passes", "mlp")
    assert code == 0 and "dce" in out
    code, fused, _ = run_cli(capsys, "ir", "mlp", "-O2")
    assert "fused_matmul" in fused
    disabled = [line.split()[0] for line in out.splitlines() if "fus" in line.split()[0]]
    code, out, _ = run_cli(capsys, "ir", "mlp", "-O2", "--disable", ",".join(disabled))
    assert code == 0 and "fused_matmul" not in out
    code, _, err = run_cli(capsys, "ir", "mlp", "-O2", "--disable", "no_such_pass")
    assert code == 1 and "no_such_pass" in err


def test_bench_prints_a_table_with_ratios(capsys):
    code, out, _ = run_cli(capsys, "bench", "merge", "--batch", "1", "--threads", "1", "--vs", "onnxruntime",
                           "--repeat", "2")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert "ort/graphc" in header
    assert any(line.startswith("| merge | 1 | 1 |") for line in out.splitlines())


def test_bench_refuses_bad_arguments(capsys):
    code, _, err = run_cli(capsys, "bench", "mlp", "--vs", "tensorflow")
    assert code == 1 and "tensorflow" in err
    code, _, err = run_cli(capsys, "bench", "mlp", "--batch", "0")
    assert code == 1 and "--batch" in err
