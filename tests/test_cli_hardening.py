"""The command line off the well-behaved path: every expected error is one line (never a
traceback), the build cache verb, and the smaller defects of plan, compile and verify."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc
from graphc import cli
from graphc.backends.llvm import toolchain
from graphc.frontend import state


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def no_compiler(tmp_path, monkeypatch):
    """A machine without a C compiler, and a cache where nothing is built yet."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "empty-cache"))

    def missing():
        raise toolchain.ToolchainError("graphc's native target needs a C compiler to link model libraries, and "
                                       "none was found (looked for cc, gcc, clang on PATH).\nInstall gcc.")

    monkeypatch.setattr(toolchain, "find_cc", missing)


@pytest.mark.parametrize("argv", [("compile", "mlp", "--target", "native", "-o", "OUT"),
                                  ("verify", "mlp", "--vs", "native")])
def test_a_missing_c_compiler_is_one_line(capsys, no_compiler, tmp_path, argv):
    argv = tuple(str(tmp_path / "out") if a == "OUT" else a for a in argv)
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"graphc {argv[0]}: error: ToolchainError: graphc's native target needs a C compiler")
    assert "--traceback" in err


def test_traceback_on_request(capsys, no_compiler, tmp_path):
    with pytest.raises(toolchain.ToolchainError):
        cli.main(["--traceback", "compile", "mlp", "--target", "native", "-o", str(tmp_path / "out")])


def test_an_unexpected_error_is_one_line_too(capsys, monkeypatch):
    def broken(args):
        raise KeyError("something graphc did not expect")

    monkeypatch.setattr(cli.COMMANDS["examples"], "run", broken)
    code, _, err = run_cli(capsys, "examples")
    assert code == 1 and err.count("\n") == 1
    assert "internal error (please report it): KeyError" in err


def test_a_library_name_that_is_not_a_c_identifier_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "compile", "mlp", "--target", "native", "-o", str(tmp_path),
                           "--name", "x*/ int injected = 42; /*")
    assert code == 1 and "not a C identifier" in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ plan

def test_plan_suggests_the_dim_flag_for_free_dimensions(capsys):
    code, _, err = run_cli(capsys, "plan", "qa_two_inputs")
    assert code == 1 and err.count("\n") == 1
    assert "--dim question_len=100 --dim text_len=100" in err and "pass" not in err
    code, out, _ = run_cli(capsys, "plan", "qa_two_inputs", "--dim", "question_len=5", "--dim", "text_len=9")
    assert code == 0 and "arena" in out


# ------------------------------------------------------------------ compile --target onnx

@pytest.mark.parametrize("trailing_slash", [True, False])
def test_compile_onnx_into_a_directory_writes_name_onnx(capsys, tmp_path, trailing_slash):
    out_dir = tmp_path / "artifacts"
    if not trailing_slash:
        out_dir.mkdir()
    code, out, _ = run_cli(capsys, "compile", "mlp", "--target", "onnx", "-o", str(out_dir) + ("/" if trailing_slash
                                                                                                else ""))
    model_name = graphc.examples.build("mlp", seed=0).name
    written = out_dir / f"{model_name}.onnx"
    assert code == 0 and written.is_file() and f"wrote {written}" in out
    assert [p.name for p in out_dir.iterdir()] == [written.name]


def test_compile_onnx_to_a_file_path(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "compile", "mlp", "--target", "onnx", "-o", str(tmp_path / "m.onnx"),
                           "--name", "ignored_for_a_file")
    assert code == 0 and (tmp_path / "m.onnx").is_file()


# ------------------------------------------------------------------ verify --vs native|keras

def _rows(out: str, first_header: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    rows = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if not cells or cells[-1] not in ("yes", "NO"):
            break
        rows[cells[0]] = cells
    return rows


def test_verify_native_prints_a_verdict(capsys):
    code, out, _ = run_cli(capsys, "verify", "mlp", "--vs", "native")
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("PASS: native code agrees with the reference")


def test_verify_native_per_layer(capsys):
    code, out, _ = run_cli(capsys, "verify", "residual", "--vs", "native", "--per-layer")
    assert code == 0, out
    layers = _rows(out, "layer ")
    state.clear_session()  # the names the command's model had
    model = graphc.examples.build("residual", seed=0)
    named = {layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"}
    assert named <= set(layers), (named, layers)
    assert all(row[-1] == "yes" for row in layers.values())
    assert "every layer agrees" in out and out.strip().endswith(")") and "PASS" in out


def test_verify_relative_error_is_relative_to_the_outputs_scale(capsys, monkeypatch):
    """Outputs that are exactly 0 (relu) and off by 1e-9 must not give a relative error of 1e21."""
    build = graphc.build

    def nudged(model, target="reference", **kwargs):
        compiled = build(model, target=target, **kwargs)
        if target == "native":
            run = compiled.run
            compiled.run = lambda feeds: {k: v + np.float32(1e-9) for k, v in run(feeds).items()}
        return compiled

    monkeypatch.setattr(graphc, "build", nudged)
    code, out, _ = run_cli(capsys, "verify", "mlp", "--vs", "native")
    assert code == 0
    (row,) = _rows(out, "output ").values()
    assert float(row[-2]) < 1e-4, out
    assert "PASS" in out


def test_verify_native_failure_names_the_worst_output(capsys):
    code, out, _ = run_cli(capsys, "verify", "merge", "--vs", "native", "--rtol", "0", "--atol", "0", "--batch", "5")
    last = out.strip().splitlines()[-1]
    assert (code == 1) == last.startswith("FAIL"), out
    if code == 1:
        assert re.search(r"largest error \S+ absolute", last)


@pytest.mark.keras
def test_verify_keras_per_layer(capsys, keras):
    code, out, _ = run_cli(capsys, "verify", "residual", "--vs", "keras", "--per-layer")
    assert code == 0, out
    layers = _rows(out, "layer ")
    assert len(layers) >= 3 and all(row[-1] == "yes" for row in layers.values())
    assert out.strip().splitlines()[-1].startswith("PASS: Keras agrees with the reference")


# ------------------------------------------------------------------ cache

def test_cache_info_and_clear(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GRAPHC_CACHE_SIZE", "300M")
    code, out, _ = run_cli(capsys, "cache", "info")
    assert code == 0 and str(tmp_path / "cache") in out and "0 B of 300.0 MB" in out
    graphc.build(graphc.examples.build("mlp", seed=0), target="native")
    code, out, _ = run_cli(capsys, "cache", "info")
    assert re.search(r"native/lib\s+1 entries", out) and "last used" in out
    code, out, _ = run_cli(capsys, "cache", "clear")
    assert code == 0 and re.match(r"removed 3 entries \(\d", out)
    code, out, _ = run_cli(capsys, "cache", "info")
    assert "0 B of" in out


def test_a_bad_cache_size_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_SIZE", "lots")
    code, _, err = run_cli(capsys, "cache", "info")
    assert code == 1 and err.count("\n") == 1 and "GRAPHC_CACHE_SIZE" in err
