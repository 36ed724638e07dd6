"""The user's seed programs, run unchanged as separate processes.

``tests/programs/spec`` holds byte-identical copies of ``../shared/spec/programs`` (checked
below whenever the shared folder sits beside the checkout), so CI runs them anywhere.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

SPEC = Path(__file__).parent / "spec"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "spec" / "programs"
ROOT = Path(__file__).resolve().parents[2]

# Programs whose every line runs today (the others need training: compile/fit).
RUN_TO_END = ["01_functional_basics.py", "02_qa_two_inputs.py", "03_multi_output.py", "04_inception_module.py",
              "05_residual.py", "06_siamese_lstm.py", "07_model_as_layer.py", "08_auxiliary_output.py",
              "09_mlp_classifier.py", "10_callbacks.py", "11_separable_conv_bn.py", "12_merge_layers.py",
              "13_conv1d_text_classifier.py", "14_tensorboard_and_plot.py"]


def run_program(name: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(SPEC / name)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("name", RUN_TO_END)
def test_program_runs_to_the_end(name):
    result = run_program(name)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared spec folder is not beside this checkout")
def test_vendored_programs_are_identical_to_the_spec():
    names = sorted(p.name for p in SHARED.glob("*.py"))
    assert names == sorted(p.name for p in SPEC.glob("*.py"))
    match, mismatch, errors = filecmp.cmpfiles(SHARED, SPEC, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
