"""The training step through the C ABI: gc_instance_train_step and gc_instance_set_hyperparameter
from C (tests/runtime/c/test_train_step.c: NULLs, wrong counts, shapes, in-place updates) and from
Python through ctypes (equal to the reference trainer's steps), and examples/train_c: a C program
that trains a bundled model from its library and header alone, its losses equal to fit()'s."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import Input, Model, layers
from graphc.backends.llvm import export_files
from graphc.backends.llvm.toolchain import runtime_dir
from graphc.runtime import Library, NativeError
from graphc.training.native_step import train_step_library
from tests.runtime.test_c_abi import TESTS, cc, run

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-4


def _dense_model(seed: int = 2):
    graphc.utils.set_random_seed(seed)
    x = Input(shape=(3,))
    model = Model(x, layers.Dense(2)(x))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    model._graphc_trainer.optimizer.learning_rate = 0.05
    return model


@pytest.fixture(scope="module")
def train_library(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_abi")
    files = train_step_library(_dense_model(), name="train_model")
    export_files(files, out)
    return files, out


def test_c_program_checks_the_training_calls(train_library):
    _, out = train_library
    cc(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{out}", str(TESTS / "test_train_step.c"),
        str(out / "libtrain_model.a"), "-lpthread", "-lm", "-o", "test_train_step"], out)
    assert run(out / "test_train_step").startswith("ok")


def test_training_calls_under_the_sanitizers(train_library, tmp_path):
    """The runtime and test_train_step.c built with ASan + UBSan (the model's kernels linked as they are)."""
    files, _ = train_library
    rt = runtime_dir()
    code = files.objects["model"].parent
    sources = [str(p) for p in sorted((rt / "src").glob("*.c"))] + [str(code / "train_model_model.c"),
                                                                    str(code / "train_model__eval_model.c")]
    cc(["-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all", f"-I{rt / 'include'}", f"-I{rt / 'src'}", f"-I{files.directory}",
        str(TESTS / "test_train_step.c"), *sources, str(files.objects["model"]), str(files.objects["eval_model"]),
        str(files.objects["weights"]),
        "-lpthread", "-lm", "-o", "test_train_step_asan"], tmp_path)
    out = run(tmp_path / "test_train_step_asan", env={"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1",
                                                     "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"})
    assert out.startswith("ok"), out


def test_ctypes_train_step_equals_the_reference_trainer(train_library, rng):
    model = _dense_model()
    files = train_step_library(model, name="train_model_py")
    step = next(s for s in model._graphc_trainer._steps.values() if s.training)
    library = Library(files.shared, files.symbol)
    assert library.has_train_step and library.step_counts[:2] == (1, 1)
    inst = library.instance(1)
    twin = _dense_model()
    twin.set_weights(model.get_weights())
    reference = graphc.build(twin, target="reference", training=True)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = rng.standard_normal((5, 2)).astype(np.float32)
    for k in range(3):
        reference.reset_metrics()
        want = reference.train_step(x, y)
        got = inst.train_step([x], [y])
        np.testing.assert_allclose(got[0], want["loss"], rtol=RTOL, err_msg=f"loss of step {k + 1}")
    index = {id(v): i for i, v in enumerate(model.weights)}
    for const, var in step.params.items():
        np.testing.assert_allclose(inst.get_weight(const), twin.weights[index[id(var)]].value, rtol=RTOL, atol=1e-6)
    assert inst.transfers["set_calls"] == 0
    assert int(inst.get_weight(step.iterations)) == 3


def test_inference_library_refuses_the_training_calls(train_library):
    from graphc.backends.llvm import compile_library
    from tests.runtime.conftest import abi_graph

    lib = Library(compile_library(abi_graph()).shared, "abi_model")
    inst = lib.instance(1)
    assert not lib.has_train_step and lib.step_counts == (0, 0, 0)
    with pytest.raises(NativeError, match="inference only") as err:
        inst.set_hyperparameter("learning_rate", 0.1)
    assert err.value.code_name == "GC_UNIMPLEMENTED"


def test_cli_compile_training_exports_the_step(tmp_path):
    from graphc import cli

    assert cli.main(["compile", "mlp", "--target", "native", "--training", "--optimizer", "sgd", "--loss",
                     "categorical_crossentropy", "--learning-rate", "0.25", "-o", str(tmp_path)]) == 0
    header = (tmp_path / "mlp.h").read_text()
    assert "training step (gc_instance_train_step)" in header and "gc_instance_train_step(" in header
    library = Library(tmp_path / "libmlp.so", "mlp")
    assert library.has_train_step and library.step_counts[:2] == (1, 1)
    assert library.instance(1).get_hyperparameter("learning_rate") == pytest.approx(0.25)
    assert cli.main(["compile", "mlp", "--target", "onnx", "--training", "-o", str(tmp_path / "m.onnx")]) == 1


def _example_export():
    spec = importlib.util.spec_from_file_location("train_c_export", ROOT / "examples" / "train_c" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_c_example_trains_and_matches_fit(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is needed to build examples/train_c")
    export = _example_export()
    build = tmp_path / "build"
    assert export.main(["--model", "mlp", "--out", str(build), "--samples", "96", "--seed", "0"]) == 0
    exe = tmp_path / "train"
    proc = subprocess.run(["make", "-s", "-C", str(ROOT / "examples" / "train_c"), "MODEL=mlp", f"BUILD={build}",
                           f"OUT={exe}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    printed = subprocess.run([str(exe), str(build / "data.txt"), "5", "16"], capture_output=True, text=True,
                             timeout=120)
    assert printed.returncode == 0, printed.stderr
    losses = [float(line.split()[-1]) for line in printed.stdout.strip().splitlines()]
    assert len(losses) == 5 and all(b < a for a, b in zip(losses, losses[1:])), losses
    model, x, y = export.model_and_data("mlp", 96, 0)
    graphc.build(model, target="native", training=True)
    history = model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0)
    np.testing.assert_allclose(losses, history.history["loss"], rtol=RTOL)
