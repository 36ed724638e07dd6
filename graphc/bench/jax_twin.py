"""A jitted JAX training step of a graphc model, run in its own process, for the training benchmark.

The model travels as the ``.keras`` file graphc writes (same architecture, same weights); the
child process loads it with Keras 3 on the jax backend (``KERAS_BACKEND=jax`` must be set before
Keras is imported, hence the separate process) and compiles one training step with ``jax.jit``:
``model.stateless_call`` in training mode, the mean squared error of every output summed,
``jax.value_and_grad``, ``RMSprop.stateless_apply`` (learning rate 1e-3, rho 0.9, epsilon 1e-7);
the weights, non-trainable state and optimizer slots are donated to the step, so they are
updated in place as PyTorch's are.

Threads: XLA has no run-time thread setting. For fewer threads than the process may use, the
child restricts its CPU affinity to that many CPUs while XLA starts (XLA sizes its thread pools
from the affinity mask) and sets ``--xla_cpu_multi_thread_eigen=false`` for one thread; once the
step is compiled, every thread of the process may run on any CPU again, as PyTorch's and graphc's
threads do.

The parent drives the child over a pipe, one JSON line per request: :class:`JaxStep` ``.sample(n)``
asks for one untimed step and ``n`` timed ones and gets the child's own wall time back, so the pipe
costs nothing in the measurement and the child can take its turn in the parent's timing rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ONE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


class JaxStepError(RuntimeError):
    """The JAX child could not start, load the model or run its step (the child's message)."""


def jax_python() -> str:
    """The interpreter that runs the JAX child: ``$GRAPHC_BENCH_JAX_PYTHON`` or this one."""
    return os.environ.get("GRAPHC_BENCH_JAX_PYTHON") or sys.executable


class JaxStep:
    """A child process holding one jitted training step of a ``.keras`` model on fixed inputs.

    ``start()`` compiles the step and runs it once; it returns the first step's loss, the
    compile time (first call, compilation included) and the versions used."""

    def __init__(self, keras_path: str | Path, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                 threads: int, *, python: str | None = None):
        self._dir = tempfile.TemporaryDirectory(prefix="graphc-jax-")
        data = Path(self._dir.name) / "batch.npz"
        np.savez(data, **{f"x{i}": a for i, a in enumerate(inputs)}, **{f"y{i}": a for i, a in enumerate(targets)})
        # PYTHONSAFEPATH: the script's folder (graphc/bench, which has a profile.py) stays off sys.path
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONSAFEPATH="1")
        if threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + ONE_THREAD_XLA_FLAGS).strip()
        self._stderr = open(Path(self._dir.name) / "stderr.txt", "w+")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [python or jax_python(), __file__, str(keras_path), str(data), str(len(inputs)), str(len(targets)),
             str(int(threads))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, text=True, bufsize=1)
        self.info: dict = {}

    def _request(self, message: dict) -> dict:
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        line = self._proc.stdout.readline()
        if not line:
            raise JaxStepError(self._child_failure())
        reply = json.loads(line)
        if "error" in reply:
            hint = (" (pip install jax, or set GRAPHC_BENCH_JAX_PYTHON to an interpreter that has it)"
                    if reply["error"].startswith("ModuleNotFoundError") else "")
            raise JaxStepError(reply["error"] + hint)
        return reply

    def _child_failure(self) -> str:
        self._proc.wait(timeout=30)
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().splitlines() if ln.strip()]
        return f"the JAX process exited ({self._proc.returncode}): {lines[-1] if lines else 'no message'}"

    def start(self) -> dict:
        self.info = self._request({"op": "start"})
        return self.info

    def sample(self, n: int) -> float:
        """Seconds for ``n`` back-to-back steps (after one untimed step), timed in the child."""
        return float(self._request({"op": "sample", "n": int(n)})["seconds"])

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()
        self._dir.cleanup()

    def __enter__(self) -> JaxStep:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ the child


def _limit_threads(threads: int) -> list[int] | None:
    """Restrict this process to ``threads`` CPUs while XLA starts; returns the full set to restore."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads >= len(cpus):
        return None
    os.sched_setaffinity(0, cpus[:threads])
    return cpus


def _release_threads(cpus: list[int] | None) -> None:
    if cpus is None:
        return
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # a thread that ended meanwhile
            pass


def _compiled_step(keras_path: str, inputs: list[np.ndarray], targets: list[np.ndarray]):
    """(step, state, x, ys): ``step(state, x, ys) -> (loss, state)`` jitted, state donated."""
    import jax
    import jax.numpy as jnp
    import keras

    model = keras.saving.load_model(keras_path, compile=False)
    optimizer = keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, epsilon=1e-7)
    optimizer.build(model.trainable_variables)

    def loss_fn(trainable, non_trainable, x, ys):
        outs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        loss = sum(jnp.mean(jnp.square(jnp.reshape(o, y.shape) - y)) for o, y in zip(outs, ys))
        return loss, non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, x, ys):
        trainable, non_trainable, slots = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, ys)
        trainable, slots = optimizer.stateless_apply(slots, grads, trainable)
        return loss, (trainable, non_trainable, slots)

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    x = [jnp.asarray(a) for a in inputs]
    return jax.jit(step, donate_argnums=(0,)), state, (x[0] if len(x) == 1 else x), [jnp.asarray(y) for y in targets]


def _serve(argv: list[str]) -> None:
    import time

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to stderr, never into the protocol
    keras_path, data_path, n_in, n_out, threads = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    try:
        cpus = _limit_threads(threads)
        data = np.load(data_path)
        inputs = [data[f"x{i}"] for i in range(n_in)]
        targets = [data[f"y{i}"] for i in range(n_out)]
        import jax
        import keras

        step, state, x, ys = _compiled_step(keras_path, inputs, targets)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        reply({"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"})
        return
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "start":
                t0 = time.perf_counter()
                loss, state = step(state, x, ys)
                first = float(loss.block_until_ready())
                compile_s = time.perf_counter() - t0
                _release_threads(cpus)
                reply({"first_loss": first, "compile_s": compile_s, "threads_limited": cpus is not None,
                       "versions": {"jax": jax.__version__, "keras": keras.__version__}})
            elif request["op"] == "sample":
                loss, state = step(state, x, ys)
                loss.block_until_ready()
                t0 = time.perf_counter()
                for _ in range(int(request["n"])):
                    loss, state = step(state, x, ys)
                loss.block_until_ready()
                reply({"seconds": time.perf_counter() - t0})
            else:
                return
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            reply({"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"})
            return


if __name__ == "__main__":
    _serve(sys.argv[1:])


__all__ = ["JaxStep", "JaxStepError", "jax_python", "ONE_THREAD_XLA_FLAGS"]
