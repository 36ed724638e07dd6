"""examples/embed_c/main.c on hostile input files: sizes whose product overflows, values outside
the input's integer type, missing values. Built with AddressSanitizer and UndefinedBehaviorSanitizer
by its own Makefile: every bad file must give a one-line error and exit status 1, never a crash."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.backends.llvm.test_embed_c import EXAMPLE, _export_module

SANITIZE = ("-std=c11 -O1 -g -Wall -Wextra -Werror -fsanitize=address,undefined,float-cast-overflow "
            "-fno-sanitize-recover=all")


@pytest.fixture(scope="module")
def embed(tmp_path_factory):
    """The example built for the two-input, integer-id example model (ids int32 first)."""
    if shutil.which("make") is None:
        pytest.fail("make is needed to build examples/embed_c")
    root = tmp_path_factory.mktemp("embed")
    build = root / "build"
    assert _export_module().main(["--model", "qa_two_inputs", "--out", str(build), "--batch", "2"]) == 0
    exe = root / "embed"
    proc = subprocess.run(["make", "-s", "-C", str(EXAMPLE), "MODEL=qa_two_inputs", f"BUILD={build}", f"OUT={exe}",
                           f"CFLAGS={SANITIZE}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in (build / "inputs.txt").read_text().splitlines()[0::2]]
    return exe, build, names


def _run(embed, text: str):
    exe, build, _ = embed
    path = build / "hostile.txt"
    path.write_text(text)
    return subprocess.run([str(exe), str(path), "1"], capture_output=True, text=True, timeout=60,
                          env={"ASAN_OPTIONS": "detect_leaks=1", "PATH": "/usr/bin:/bin"})


def test_the_valid_file_still_runs(embed):
    exe, build, _ = embed
    proc = subprocess.run([str(exe), str(build / "inputs.txt"), "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("dims", ["1073741824 4294967296", "4611686018427387904 4", "9223372036854775807 2",
                                  "3037000500 3037000500"])
def test_element_counts_that_overflow_are_refused(embed, dims):
    """Defect: the count times the item size wrapped around: malloc(1), then a heap overflow."""
    first = embed[2][0]
    proc = _run(embed, f"{first} 2 {dims}\n1 2 3 4 5 6 7 8\n")
    assert proc.returncode == 1, proc.stderr
    assert "too large" in proc.stderr and "AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr


@pytest.mark.parametrize("value", ["1e30", "-3e12", "nan", "inf", "2147483648"])
def test_ids_outside_the_inputs_integer_type_are_refused(embed, value):
    """Converting such a double to int32_t is undefined behaviour in C: refused before."""
    first = embed[2][0]
    proc = _run(embed, f"{first} 2 1 3\n1 {value} 2\n")
    assert proc.returncode == 1 and "runtime error" not in proc.stderr, proc.stderr
    assert "out of range" in proc.stderr or "not a number" in proc.stderr, proc.stderr


@pytest.mark.parametrize("text, message", [("", "expected a header line"), ("nope 2 1 1\n1\n", "where the model"),
                                           ("{first} 9 1 1 1 1 1 1 1 1 1\n", "rank 9"),
                                           ("{first} 2 1 -3\n", "bad dimension"),
                                           ("{first} 2 2 3\n1 2\n", "has 2 values, expected 6")])
def test_malformed_files_get_one_line_errors(embed, text, message):
    proc = _run(embed, text.format(first=embed[2][0]))
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
