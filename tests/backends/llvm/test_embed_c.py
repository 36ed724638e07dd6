"""examples/embed_c: export a seed model, build the C program with its Makefile, run it on an
inputs file, and compare what it prints with Python (the reference interpreter)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import examples

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "embed_c"


def _export_module():
    spec = importlib.util.spec_from_file_location("embed_export", EXAMPLE / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_tensors(text: str) -> list[tuple[str, np.ndarray]]:
    lines = text.strip().splitlines()
    out = []
    for header, values in zip(lines[0::2], lines[1::2]):
        name, rank, *shape = header.split()
        assert int(rank) == len(shape)
        out.append((name, np.array(values.split(), dtype=np.float64).reshape([int(d) for d in shape])))
    return out


@pytest.mark.parametrize("name", ["mlp", "qa_two_inputs"])
def test_c_example_prints_what_python_computes(name, tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is needed to build examples/embed_c")
    build = tmp_path / "build"
    assert _export_module().main(["--model", name, "--out", str(build), "--batch", "3", "--seed", "1"]) == 0
    exe = tmp_path / "embed"
    proc = subprocess.run(["make", "-s", "-C", str(EXAMPLE), f"MODEL={name}", f"BUILD={build}", f"OUT={exe}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(exe), str(build / "inputs.txt"), "2"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    printed = read_tensors(run.stdout)
    # the reference interpreter on the same inputs (the same weights: same seed)
    model = examples.build(name, seed=1)
    inputs = read_tensors((build / "inputs.txt").read_text())
    reference = graphc.build(model, level=0)
    feeds = {k: a.astype(reference.graph.type_of(k).dtype) for k, (_, a) in zip(reference.graph.inputs, inputs)}
    want = reference.run(feeds)
    assert len(printed) == len(reference.graph.outputs)
    for (n, got), key in zip(printed, reference.graph.outputs):
        np.testing.assert_allclose(got, want[key], rtol=1e-4, atol=1e-5, err_msg=n)


def test_c_example_reports_a_bad_inputs_file(tmp_path):
    build = tmp_path / "build"
    assert _export_module().main(["--model", "mlp", "--out", str(build)]) == 0
    exe = tmp_path / "embed"
    proc = subprocess.run(["cc", "-std=c11", "-O1", f"-I{build}", "-DMODEL=mlp", str(EXAMPLE / "main.c"),
                           str(build / "libmlp.a"), "-lpthread", "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    input_name = (build / "inputs.txt").read_text().split()[0]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{input_name} 2 3 63\n" + " ".join(["0.5"] * 189) + "\n")
    run = subprocess.run([str(exe), str(bad)], capture_output=True, text=True)
    assert run.returncode == 1
    assert f"gc_instance_run failed: input '{input_name}' expects shape (batch, 64)" in run.stderr
    assert "GC_INVALID_ARGUMENT" in run.stderr
