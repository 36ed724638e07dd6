"""A training library's evaluation step and its weights files, end to end.

- examples/train_c trains, evaluates (gc_instance_eval_step) and saves (gc_instance_save_weights); the
  file loads into the Python model (Model.load_weights), whose evaluate equals the C program's loss;
- gc_instance_eval_step equals model.evaluate on a model whose inference differs from training
  (Dropout, BatchNormalization), and changes nothing;
- tests/runtime/c/test_eval_weights.c: every bad argument of the new entry points, saved state
  resumed in a fresh instance, flipped, truncated and foreign files refused (also under ASan + UBSan);
- a file saved by a training library loads by name into an inference library; mismatched models and
  corrupt files are refused naming what differs.
"""

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
from graphc.saving.native_weights import NativeWeightsError, read_native_weights
from graphc.training.native_step import train_step_library
from tests.runtime.test_c_abi import TESTS, cc, run

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-4


def _dense_model(seed: int = 2):
    graphc.utils.set_random_seed(seed)
    x = Input(shape=(3,))
    model = Model(x, layers.Dense(2, name="dense")(x))  # named: weights files match layers by name
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    model._graphc_trainer.optimizer.learning_rate = 0.05
    return model


def _dropout_bn_model(seed: int = 4):
    """Inference differs from training: Dropout is off and BatchNormalization uses its moving statistics."""
    graphc.utils.set_random_seed(seed)
    x = Input(shape=(5,))
    h = layers.Dense(7, activation="relu", name="hidden")(x)
    h = layers.BatchNormalization(momentum=0.5, name="norm")(h)
    h = layers.Dropout(0.3, name="drop")(h)
    model = Model(x, layers.Dense(3, activation="softmax", name="probs")(h))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(rng, n: int, features: int, classes: int):
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]
    return x, y


@pytest.fixture(scope="module")
def eval_library(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_abi")
    files = train_step_library(_dense_model(), name="eval_model")
    export_files(files, out)
    return files, out


# ---------------------------------------------------------------------------- the C example

def _example_export():
    spec = importlib.util.spec_from_file_location("train_c_export", ROOT / "examples" / "train_c" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_c_example_saves_weights_that_python_evaluates_to_its_loss(tmp_path):
    if shutil.which("make") is None:
        pytest.fail("make is needed to build examples/train_c")
    export = _example_export()
    build = tmp_path / "build"
    # export.main's steps, keeping the model: the file names its layers' weights as this model does
    model, x, y = export.model_and_data("mlp", 96, 0)
    export_files(train_step_library(model, name="mlp"), build)
    export.write_tensors(build / "data.txt", [("x", x), ("y", y)])
    exe = tmp_path / "train"
    proc = subprocess.run(["make", "-s", "-C", str(ROOT / "examples" / "train_c"), "MODEL=mlp", f"BUILD={build}",
                           f"OUT={exe}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    saved = tmp_path / "mlp.weights"
    printed = subprocess.run([str(exe), str(build / "data.txt"), "4", "16", "-", str(saved)], capture_output=True,
                             text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["epoch"] * 4 + ["evaluate", "saved"], lines
    c_loss = float(lines[-2].split()[-1])
    assert saved.exists() and not list(tmp_path.glob("*.tmp"))  # renamed into place, no temporary left

    untrained = model.evaluate(x, y, batch_size=16, verbose=0)
    model.load_weights(saved)
    loss = model.evaluate(x, y, batch_size=16, verbose=0)
    np.testing.assert_allclose(loss, c_loss, rtol=RTOL)
    assert loss < untrained
    # the file holds the optimizer's state too: 4 epochs of 6 batches
    assert int(read_native_weights(saved)["SGD/iterations"]) == 24


# ---------------------------------------------------------------------------- eval_step from Python

def test_eval_step_equals_evaluate_with_dropout_and_batchnorm(tmp_path, rng):
    model = _dropout_bn_model()
    files = train_step_library(model, name="eval_bn")
    library = Library(files.shared, files.symbol)
    assert library.has_train_step and library.has_eval_step
    inst = library.instance(1, seed=3)
    x, y = _data(rng, 9, 5, 3)
    for _ in range(3):  # moves the weights, the Adam slots and the BatchNorm moving statistics
        inst.train_step([x], [y])
    state = {w.name: inst.get_weight(w.name) for w in library.weights}
    first = inst.eval_step([x], [y])
    again = inst.eval_step([x], [y])
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for name, value in state.items():
        np.testing.assert_array_equal(inst.get_weight(name), value, err_msg=f"{name} changed by eval_step")

    inst.save_weights(tmp_path / "bn.weights")
    twin = _dropout_bn_model()
    twin.load_weights(tmp_path / "bn.weights")
    moving = next(w for w in twin.weights if w.path.endswith("moving_mean"))
    assert not np.allclose(moving.value, 0.0)  # the moving statistics came from the instance
    want = twin.evaluate(x, y, batch_size=9, verbose=0, return_dict=True)
    np.testing.assert_allclose(first[0], want["loss"], rtol=RTOL)
    np.testing.assert_allclose(first[1] / first[2], want["accuracy"], rtol=RTOL)
    # a training step's loss (Dropout on, batch statistics) is another number
    assert not np.isclose(inst.train_step([x], [y])[0], first[0], rtol=1e-3)


def test_c_program_checks_eval_and_weights_calls(eval_library, tmp_path):
    _, out = eval_library
    cc(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{out}", str(TESTS / "test_eval_weights.c"),
        str(out / "libeval_model.a"), "-lpthread", "-lm", "-o", "test_eval_weights"], tmp_path)
    assert run(tmp_path / "test_eval_weights", str(tmp_path), "released").startswith("ok")


def test_eval_and_weights_calls_under_the_sanitizers(eval_library, tmp_path):
    files, _ = eval_library
    rt = runtime_dir()
    code = files.objects["model"].parent
    sources = [str(p) for p in sorted((rt / "src").glob("*.c"))] + [str(code / "eval_model_model.c"),
                                                                    str(code / "eval_model__eval_model.c")]
    cc(["-std=c11", "-D_GNU_SOURCE", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all", f"-I{rt / 'include'}", f"-I{rt / 'src'}", f"-I{files.directory}",
        str(TESTS / "test_eval_weights.c"), *sources, str(files.objects["model"]), str(files.objects["eval_model"]),
        str(files.objects["weights"]), "-lpthread", "-lm", "-o", "test_eval_weights_asan"], tmp_path)
    out = run(tmp_path / "test_eval_weights_asan", str(tmp_path),
              env={"ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1"})
    assert out.startswith("ok"), out


def test_inference_library_refuses_eval_step(eval_library):
    from graphc.backends.llvm import compile_library
    from tests.runtime.conftest import abi_graph

    lib = Library(compile_library(abi_graph()).shared, "abi_model")
    assert not lib.has_eval_step
    with pytest.raises(NativeError, match="inference only: it has no evaluation step") as err:
        lib.instance(1).eval_step([], [])
    assert err.value.code_name == "GC_UNIMPLEMENTED"


# ---------------------------------------------------------------------------- weights files across libraries

def test_training_state_loads_by_name_into_the_inference_library(eval_library, tmp_path, rng):
    files, _ = eval_library
    inst = Library(files.shared, files.symbol).instance(1)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = rng.standard_normal((6, 2)).astype(np.float32)
    inst.train_step([x], [y])
    inst.save_weights(tmp_path / "trained.weights")
    native = graphc.build(_dense_model(), target="native")
    inference = Library(native.files.shared, native.files.symbol).instance(1)
    inference.load_weights(tmp_path / "trained.weights")  # another layout: the model's weights by name
    kernel, bias = inst.get_weight("dense/kernel"), inst.get_weight("dense/bias")
    np.testing.assert_allclose(inference.run([x])[0], x @ kernel + bias, rtol=RTOL, atol=1e-6)


def test_mismatched_and_corrupt_files_are_refused(eval_library, tmp_path):
    files, _ = eval_library
    inst = Library(files.shared, files.symbol).instance(1)
    path = tmp_path / "state.weights"
    inst.save_weights(path)
    other = _bn_free_wider_model()
    with pytest.raises(NativeWeightsError, match=r"weight 'dense/kernel' is float32\[3, 2\] in the file, the "
                                                 r"model's is float32\[3, 5\]"):
        other.load_weights(path)
    other_files = train_step_library(other, name="eval_wider")
    with pytest.raises(NativeError, match=r"weight 'dense/kernel' is float32 \(3, 2\) in weights file .* needs "
                                          r"float32 \(3, 5\)") as err:
        Library(other_files.shared, other_files.symbol).instance(1).load_weights(path)
    assert err.value.code_name == "GC_INVALID_ARGUMENT"
    data = path.read_bytes()
    for cut in (10, 47, len(data) - 1):
        (tmp_path / "cut.weights").write_bytes(data[:cut])
        with pytest.raises(NativeWeightsError, match="truncated"):
            _dense_model().load_weights(tmp_path / "cut.weights")
    flipped = bytearray(data)
    flipped[-1] ^= 1
    (tmp_path / "flip.weights").write_bytes(bytes(flipped))
    with pytest.raises(NativeWeightsError, match="payload's checksum"):
        _dense_model().load_weights(tmp_path / "flip.weights")


def _bn_free_wider_model():
    graphc.utils.set_random_seed(1)
    x = Input(shape=(3,))
    model = Model(x, layers.Dense(5, name="dense")(x))
    model.compile(optimizer="sgd", loss="mse")
    return model
